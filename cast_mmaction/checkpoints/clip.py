"""Load a CLIP image tower into :class:`CLIPViTExpert`.

Accepted sources (a file, a saved folder, or ``hf:ORG/NAME``; see
:mod:`.expert_formats`):

* the OpenAI TorchScript archive (``ViT-B-16.pt``, ``ViT-L-14.pt``),
* an OpenAI / open_clip state dict (``.pt``, ``.bin``, ``.safetensors``),
  full CLIP (``visual.*`` keys) or the image tower alone,
* ``transformers`` ``CLIPModel`` / ``CLIPVisionModel`` (e.g.
  ``openai/clip-vit-base-patch16``): q / k / v packed into ``in_proj``,
  the text tower and projections ignored; a config whose ``hidden_act``
  is not ``quick_gelu`` is refused (the expert computes QuickGELU);
* timm CLIP image towers (``vit_base_patch16_clip_224.openai`` and the
  like: ``norm_pre``, ``blocks.*``; the ``head`` projection ignored);
* ``open_clip:MODEL:TAG`` (e.g. ``open_clip:ViT-B-16:openai``), resolved by
  open_clip from its local cache (no download happens here).
"""
import math

from ..models.layers import resize_grid_embed
from .common import unwrap
from .expert_formats import (ExpertFormat, check_activation, convert,
                             detect_format, eps_note, ndim, read_source,
                             squeeze_leading, wrong_kind)
from .key_rows import hf_clip_vision_rows, timm_clip_rows
from .state_dict import (EXPERT_HINT, load_fitted, select_prefix,
                         strip_prefixes)

# OpenAI's output projection to the joint embedding is not used by CAST.
UNUSED = ('proj', 'attnpool', 'text_projection')
_WHAT = 'CLIP expert weights'
_FIELD = 'model.backbone.experts.clip.pretrained'

FORMATS = (
    ExpertFormat(
        'transformers', 'transformers CLIP checkpoint',
        detect=lambda s: 'embeddings.patch_embedding.weight' in s,
        rows=hf_clip_vision_rows(), prefix=('vision_model.', ),
        ignored=(r'embeddings\.position_ids', )),
    ExpertFormat(
        'timm', 'timm CLIP image tower',
        detect=lambda s: (ndim(s, 'patch_embed.proj.weight') == 4
                          and 'norm_pre.weight' in s),
        rows=timm_clip_rows(),
        ignored=(r'head\..*', r'fc_norm\..*'),
        refuse=((r'patch_embed\.proj\.bias',
                 'a patch-embedding bias, which CLIP towers do not have'),
                (r'blocks\.\d+\.ls[12]\.gamma',
                 'layer scale, which CLIP towers do not have')),
        finish=lambda s: squeeze_leading(s, 'class_embedding',
                                         'positional_embedding')),
)


def _read(source):
    if isinstance(source, str) and source.startswith('open_clip:'):
        state, src = _from_open_clip_tag(source), None
        raw, config, where = state, None, source
    else:
        # OpenAI's TorchScript archives too: read_state_dict takes their
        # tensors without running their code (safe_load.read_torchscript_state)
        src = read_source(source, _WHAT, _FIELD)
        state, raw, config, where = src.state, src.state, src.config, src.where
    state = strip_prefixes(state, ('module.', ))
    arch = src.architecture if src is not None else None
    if arch and arch.startswith('CLIPText'):
        raise wrong_kind(_WHAT, where, 'a CLIP image tower', raw, config,
                         'CLIP', _FIELD)
    fmt, sub = detect_format(state, FORMATS)
    if fmt is not None:
        if config is not None:
            check_activation(config, 'quick_gelu', _WHAT, where,
                             sub='vision_config')
        return convert(fmt, sub, f'{_WHAT} ({where})'), src
    if any(k.startswith('visual.') for k in state):
        state = select_prefix(state, 'visual.')
    state = strip_prefixes(state, ('module.', 'backbone.'))
    if 'conv1.weight' not in state or not any(
            k.startswith('transformer.resblocks.') for k in state):
        raise wrong_kind(_WHAT, source, 'a CLIP image tower in a known '
                         'layout (OpenAI / open_clip: conv1, transformer.'
                         'resblocks; transformers; timm)', raw, config,
                         'CLIP', _FIELD)
    return state, src


def read_clip_visual(source):
    """Return the image-tower state dict in the expert's (OpenAI) names,
    float32."""
    return {k: v.float() for k, v in _read(source)[0].items()}


def _from_open_clip_tag(source):
    parts = source.split(':')
    if len(parts) != 3:
        raise ValueError(f'open_clip source must read open_clip:MODEL:TAG, '
                         f'got {source!r}')
    try:
        import open_clip
    except ImportError as e:
        raise ImportError(f'{source}: open_clip is not importable ({e}); '
                          f'pass a weight file instead') from e
    try:
        model = open_clip.create_model(parts[1], pretrained=parts[2],
                                       device='cpu')
    except Exception as e:  # noqa: BLE001 - network / cache errors
        raise RuntimeError(
            f'{source}: open_clip could not provide these weights ({e}). '
            f'Without network access the weights must be in open_clip\'s '
            f'cache, or pass a local file') from e
    return unwrap(model.state_dict(), source)


def load_clip_expert(expert, source):
    """Load ``source`` into ``expert`` (a :class:`CLIPViTExpert`), resizing
    the position table when the expert's grid differs. Returns
    (missing, unexpected) key lists."""
    state, src = _read(source)
    state = {k: v.float() for k, v in state.items()}
    if src is not None and src.config is not None:
        eps_note(src.config, expert.ln_pre.eps, f'CLIP expert <- {source}',
                 sub='vision_config')
    ckpt_patch = state['conv1.weight'].shape[-1]
    if ckpt_patch != expert.patch_size:
        raise ValueError(f'CLIP weights {source} have patch size '
                         f'{ckpt_patch}, the expert {expert.patch_size}: set '
                         f'backbone.experts.clip.patch_size={ckpt_patch}')
    width = state['conv1.weight'].shape[0]
    if width != expert.embed_dim:
        raise ValueError(f'CLIP weights {source} have width {width}, the '
                         f'expert {expert.embed_dim}: set backbone.experts.'
                         f'clip.embed_dim={width} (ViT-B 768, ViT-L 1024)')
    pos = state.get('positional_embedding')
    if pos is not None and pos.shape[0] != expert.grid_n + 1:
        side = int(math.isqrt(pos.shape[0] - 1))
        state['positional_embedding'] = resize_grid_embed(
            pos, (side, side), expert.grid_hw, num_prefix=1)
    rep = load_fitted(expert, state, f'CLIP expert <- {source}', hint=EXPERT_HINT,
                      allow_missing=True, allow_unexpected=True,
                      ignore_unexpected=UNUSED)
    return rep.missing, rep.unexpected
