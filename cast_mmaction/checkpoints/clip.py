"""Load a CLIP image tower into :class:`CLIPViTExpert`.

Accepted sources:

* the OpenAI TorchScript archive (``ViT-B-16.pt``, ``ViT-L-14.pt``),
* an OpenAI / open_clip state dict (``.pt``, ``.bin``, ``.safetensors``),
  full CLIP (``visual.*`` keys) or the image tower alone,
* ``open_clip:MODEL:TAG`` (e.g. ``open_clip:ViT-B-16:openai``), resolved by
  open_clip from its local cache (no download happens here).
"""
import math
import os

from ..models.layers import resize_grid_embed
from .common import read_state_dict, unwrap
from .state_dict import (EXPERT_HINT, load_fitted, select_prefix,
                         strip_prefixes)

# OpenAI's output projection to the joint embedding is not used by CAST.
UNUSED = ('proj', 'attnpool', 'text_projection')


def read_clip_visual(source):
    """Return the image-tower state dict (keys without ``visual.``)."""
    what = 'CLIP expert weights'
    if isinstance(source, str) and source.startswith('open_clip:'):
        state = _from_open_clip_tag(source)
    else:
        state = _read_file(source, what)
    if any(k.startswith('visual.') for k in state):
        state = select_prefix(state, 'visual.')
    state = strip_prefixes(state, ('module.', 'backbone.'))
    if 'conv1.weight' not in state or not any(
            k.startswith('transformer.resblocks.') for k in state):
        sample = ', '.join(list(state)[:5])
        hint = ''
        if 'patch_embed.proj.weight' in state or any(
                k.startswith('encoder.') for k in state):
            hint = ' It looks like a VideoMAE checkpoint: pass it as the ' \
                   'VideoMAE expert\'s pretrained file.'
        raise ValueError(f'{what}: {source} is not a CLIP image tower in '
                         f'the OpenAI layout (no conv1 / transformer.'
                         f'resblocks keys; found {sample}, ...).{hint}'
                         f' (config field: model.backbone.experts.clip.'
                         f'pretrained)')
    return {k: v.float() for k, v in state.items()}


def _read_file(path, what):
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what}: file not found: {path} (set '
                                f'model.backbone.experts.clip.pretrained)')
    # OpenAI's TorchScript archives too: read_state_dict takes their tensors
    # without running their code (safe_load.read_torchscript_state)
    return read_state_dict(path, what)


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
    state = read_clip_visual(source)
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
