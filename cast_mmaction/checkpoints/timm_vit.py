"""Weights for the frame-wise ViT family (:class:`MSCAViT`).

ImageNet initialisation (``model.backbone.pretrained``), one of:

* a timm ``VisionTransformer`` state dict, e.g. ``vit_base_patch16_224.
  orig_in21k`` (``model.safetensors`` or ``pytorch_model.bin`` from its hub
  page), also wrapped (``{'state_dict': ...}``, ``{'model': ...}``) or
  prefixed (``module.``, ``backbone.``);
* the original JAX ``.npz`` of google-research/vision_transformer (e.g.
  ``imagenet21k/ViT-B_16.npz``, the ``ViT-B_16_Img21.npz`` of the TokenShift
  and MSCA READMEs); old (``MultiHeadDotProductAttention_1``, ``MlpBlock_3``,
  ``LayerNorm_2``) and big_vision (``..._0``, ``LayerNorm_1``) block names.

The classifier (``head``, ``pre_logits``) is dropped; the position table is
resized bicubically when the model's patch grid differs (other input sizes).
A missing backbone tensor or a foreign one (layer scale, distillation token,
...) is an error naming the keys.

The authors' fine-tuned TokenShift / MSCA / ViT checkpoints (``{'state_dict':
sd}`` with ``module.base_model.`` keys of ``vit_models/modeling*.py``, the
same names for all three nets) convert to a whole recognizer with
the converter record ``registry.MSCA`` (kind ``msca`` of
``tools/convert/convert_checkpoint.py``); the variant is not stored in the file, so
the config must name the right ``mode`` / ``shift_div``.
"""
import math
import os
import re

import numpy as np
import torch

from ..models.layers import resize_grid_embed
from .common import read_state_dict, unwrap
from .state_dict import check_fit, fit_report, strip_prefixes

CLASSIFIER_KEYS = ('head.', 'head_drop.', 'pre_logits.')
WHAT = 'ImageNet ViT weights (model.backbone.pretrained)'


# -- the original JAX .npz ---------------------------------------------------
def _jax_block_names(arrays, root):
    """Sub-module names of one encoder block (old vs big_vision npz)."""
    def first(*names):
        for n in names:
            if any(k.startswith(f'{root}/{n}/') for k in arrays):
                return n
        raise KeyError(f'{root}/{names[0]}')

    return (first('MultiHeadDotProductAttention_1',
                  'MultiHeadDotProductAttention_0'),
            first('MlpBlock_3', 'MlpBlock_0', 'MlpBlock_1'),
            first('LayerNorm_0'), first('LayerNorm_2', 'LayerNorm_1'))


def jax_to_timm(arrays, source='npz'):
    """Original ViT ``.npz`` arrays (JAX names) -> timm state dict."""
    arrays = {k[len('opt/target/'):] if k.startswith('opt/target/') else k: v
              for k, v in arrays.items()}
    if 'embedding/kernel' not in arrays or not any(
            k.startswith('Transformer/encoderblock_') for k in arrays):
        sample = ', '.join(list(arrays)[:5])
        raise ValueError(f'{WHAT}: {source} is not an original ViT .npz (no '
                         f'embedding/kernel or Transformer/encoderblock_* '
                         f'arrays; found {sample}, ...)')
    if 'cls' not in arrays:
        raise ValueError(f'{WHAT}: {source} has no class token (a '
                         f'global-average-pool ViT); MSCAViT needs the '
                         f'class-token models (e.g. ViT-B_16 imagenet21k)')

    def t(name):
        return torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))

    sd = {
        'patch_embed.proj.weight': t('embedding/kernel').permute(3, 2, 0, 1),
        'patch_embed.proj.bias': t('embedding/bias'),
        'cls_token': t('cls').reshape(1, 1, -1),
        'pos_embed': t('Transformer/posembed_input/pos_embedding'),
        'norm.weight': t('Transformer/encoder_norm/scale'),
        'norm.bias': t('Transformer/encoder_norm/bias'),
    }
    depth = 1 + max(int(m.group(1)) for m in (
        re.match(r'Transformer/encoderblock_(\d+)/', k) for k in arrays) if m)
    for i in range(depth):
        root = f'Transformer/encoderblock_{i}'
        try:
            mha, mlp, ln1, ln2 = _jax_block_names(arrays, root)
        except KeyError as e:
            raise ValueError(f'{WHAT}: {source} lacks {e.args[0]}/*') from e
        p = f'blocks.{i}.'
        sd[p + 'norm1.weight'] = t(f'{root}/{ln1}/scale')
        sd[p + 'norm1.bias'] = t(f'{root}/{ln1}/bias')
        sd[p + 'norm2.weight'] = t(f'{root}/{ln2}/scale')
        sd[p + 'norm2.bias'] = t(f'{root}/{ln2}/bias')
        # q/k/v kernels (D, H, d) -> Linear weights (H*d, D), packed q;k;v
        w = [t(f'{root}/{mha}/{n}/kernel').flatten(1).t()
             for n in ('query', 'key', 'value')]
        b = [t(f'{root}/{mha}/{n}/bias').flatten()
             for n in ('query', 'key', 'value')]
        sd[p + 'attn.qkv.weight'] = torch.cat(w, 0)
        sd[p + 'attn.qkv.bias'] = torch.cat(b, 0)
        out = t(f'{root}/{mha}/out/kernel')  # (H, d, D)
        sd[p + 'attn.proj.weight'] = out.flatten(0, 1).t()
        sd[p + 'attn.proj.bias'] = t(f'{root}/{mha}/out/bias')
        for j, fc in enumerate(('fc1', 'fc2')):
            dense = f'{root}/{mlp}/Dense_{j}/'
            sd[p + f'mlp.{fc}.weight'] = t(dense + 'kernel').t()
            sd[p + f'mlp.{fc}.bias'] = t(dense + 'bias')
    for k in ('head/kernel', 'head/bias', 'pre_logits/kernel',
              'pre_logits/bias'):
        if k in arrays:  # kept so that the load report counts them
            sd[k.replace('/kernel', '.weight').replace('/bias', '.bias')
               .replace('pre_logits.', 'pre_logits.fc.')] = t(k)
    return {k: v.contiguous() for k, v in sd.items()}


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f'{WHAT}: cannot read {path} as a .npz archive '
                         f'({type(e).__name__}: {e})') from e
    return jax_to_timm(arrays, path)


# -- timm state dicts ---------------------------------------------------------
def read_timm_vit(source):
    """Return the timm-named ViT state dict of ``source`` (a path or a state
    dict): float32, prefixes and wrappers removed."""
    if isinstance(source, dict):
        state = unwrap(source, WHAT)
        name = 'state dict'
    else:
        name = os.path.expanduser(str(source))
        if not os.path.isfile(name):
            raise FileNotFoundError(
                f'{WHAT}: file not found: {name} (download timm\'s '
                f'vit_base_patch16_224.orig_in21k model.safetensors or the '
                f'original ViT-B_16.npz, or set pretrained=None)')
        if name.endswith('.npz'):
            return _read_npz(name)
        state = read_state_dict(name, WHAT)
    state = strip_prefixes(state, ('module.', 'backbone.', 'model.'))
    if 'patch_embed.proj.weight' not in state or not any(
            k.startswith('blocks.') for k in state):
        sample = ', '.join(list(state)[:5])
        hint = ''
        if any(k.startswith(('base_model.', 'transformer.encoder.'))
               for k in state):
            hint = (' It is an authors\' TokenShift/MSCA checkpoint: convert '
                    'it with tools/convert/convert_checkpoint.py (kind msca) and use '
                    'it as load_from.')
        elif 'conv1.weight' in state or any(k.startswith('visual.')
                                            for k in state):
            hint = ' It looks like a CLIP checkpoint.'
        elif any(k.startswith(('vit.', 'embeddings.')) for k in state):
            hint = (' It looks like a HuggingFace transformers ViT; use the '
                    'timm weights (timm/vit_base_patch16_224.orig_in21k).')
        raise ValueError(f'{WHAT}: {name} is not a timm VisionTransformer '
                         f'state dict (no patch_embed.proj.weight / blocks.* '
                         f'keys; found {sample}, ...).{hint}')
    w = state['patch_embed.proj.weight']
    if w.ndim != 4:
        raise ValueError(f'{WHAT}: {name} has a {w.ndim}-D patch embedding '
                         f'(a video model such as VideoMAE?); a 2-D image ViT '
                         f'is needed')
    return {k: v.float() for k, v in state.items()}


def resize_pos_embed(pos, grid_hw, name='pos_embed'):
    """(1, 1 + g*g, D) with a square grid -> (1, 1 + h*w, D)."""
    n = pos.shape[1] - 1
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f'{name}: {n} grid tokens are not a square grid; '
                         f'cannot resize to {grid_hw}')
    return resize_grid_embed(pos, (side, side), grid_hw, num_prefix=1)


def load_timm_vit(backbone, source):
    """Load ImageNet ViT weights into an :class:`MSCAViT` (or any module with
    timm ViT names and ``patch_size``/``grid_hw``/``embed_dim``/``depth``).
    Returns the list of dropped classifier keys."""
    from mmengine.logging import print_log
    state = read_timm_vit(source)
    name = source if isinstance(source, str) else 'state dict'
    w = state['patch_embed.proj.weight']
    if tuple(w.shape[-2:]) != tuple(backbone.patch_size):
        raise ValueError(f'{WHAT}: {name} has patch size {tuple(w.shape[-2:])}'
                         f', the model {tuple(backbone.patch_size)}: set '
                         f'model.backbone.patch_size={w.shape[-1]}')
    if w.shape[0] != backbone.embed_dim:
        raise ValueError(f'{WHAT}: {name} has width {w.shape[0]}, the model '
                         f'{backbone.embed_dim}: set model.backbone.arch '
                         f'(tiny 192, small 384, base 768, large 1024)')
    depth = 1 + max(int(k.split('.')[1]) for k in state
                    if k.startswith('blocks.'))
    if depth != backbone.depth:
        raise ValueError(f'{WHAT}: {name} has {depth} blocks, the model '
                         f'{backbone.depth}: set model.backbone.arch or depth')
    dropped = [k for k in state if k.startswith(CLASSIFIER_KEYS)]
    state = {k: v for k, v in state.items() if k not in dropped}
    notes = []
    pos = state.get('pos_embed')
    if pos is not None and pos.shape != backbone.pos_embed.shape:
        state['pos_embed'] = resize_pos_embed(pos, backbone.grid_hw)
        notes.append(f'pos_embed resized {tuple(pos.shape)} -> '
                     f'{tuple(state["pos_embed"].shape)}')
    check_fit(fit_report(backbone, state), f'{WHAT}: {name}',
              'the backbone', hint='(keys not in the model: layer scale, '
              'extra tokens or another ViT variant?)')
    backbone.load_state_dict(state, strict=True)
    print_log(f'MSCAViT <- {name}: loaded {len(state)} tensors; dropped '
              f'classifier {dropped}' + ('; ' + '; '.join(notes)
                                         if notes else ''), logger='current')
    return dropped


# -- the authors' fine-tuned checkpoints --------------------------------------
_B = 'backbone.'
_L = r'transformer\.encoder\.layer\.(\d+)\.'
# (authors' regex, our key template); q/k/v are packed separately.
MSCA_KEY_MAP = [
    (r'transformer\.embeddings\.position_embeddings', _B + 'pos_embed'),
    (r'transformer\.embeddings\.cls_token', _B + 'cls_token'),
    (r'transformer\.embeddings\.patch_embeddings\.(weight|bias)',
     _B + r'patch_embed.proj.\1'),
    (_L + r'attention_norm\.(weight|bias)', _B + r'blocks.\1.norm1.\2'),
    (_L + r'ffn_norm\.(weight|bias)', _B + r'blocks.\1.norm2.\2'),
    (_L + r'ffn\.(fc1|fc2)\.(weight|bias)', _B + r'blocks.\1.mlp.\2.\3'),
    (_L + r'attn\.out\.(weight|bias)', _B + r'blocks.\1.attn.proj.\2'),
    (r'transformer\.encoder\.encoder_norm\.(weight|bias)', _B + r'norm.\1'),
    (r'head\.(weight|bias)', r'cls_head.fc_cls.\1'),
]
_QKV = re.compile(_L + r'attn\.(query|key|value)\.(weight|bias)$')


MSCA_EXPECTS = ('transformer.embeddings.patch_embeddings.* and transformer.'
                'encoder.layer.0.attn.query.* under module.base_model.')
MSCA_PREFIXES = ('module.', 'base_model.')


def _strip_official(state):
    return strip_prefixes(strip_prefixes(state), 'base_model.')


def is_official_msca(state):
    keys = _strip_official(state)
    return ('transformer.embeddings.patch_embeddings.weight' in keys
            and 'transformer.encoder.layer.0.attn.query.weight' in keys)


def pack_qkv(out, unmapped, state):
    """The authors keep query / key / value as three Linear layers; ours is
    one packed ``qkv``. Packs the unmapped q/k/v rows of ``state`` into
    ``out``; returns (out, still unmapped)."""
    qkv, rest = {}, []
    for k in unmapped:
        m = _QKV.match(k)
        if m:
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = \
                state[k]
        else:
            rest.append(k)
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {'query', 'key', 'value'}:
            raise ValueError(f'official checkpoint: block {i} has attn.'
                             f'{sorted(parts)} .{kind} but needs query, key '
                             f'and value')
        out[f'{_B}blocks.{i}.attn.qkv.{kind}'] = torch.cat(
            [parts['query'], parts['key'], parts['value']], 0)
    return out, rest


def adapt_msca(state, model):
    """Resize the position table for other input sizes: (state, notes)."""
    own = model.state_dict()
    notes = []
    key = _B + 'pos_embed'
    if key in state and key in own and state[key].shape != own[key].shape:
        old = state[key]
        state[key] = resize_pos_embed(old, model.backbone.grid_hw, key)
        notes.append(f'resized {key} {tuple(old.shape)} -> '
                     f'{tuple(state[key].shape)}')
    return state, notes


__all__ = ['read_timm_vit', 'jax_to_timm', 'load_timm_vit',
           'resize_pos_embed', 'MSCA_KEY_MAP', 'is_official_msca',
           'pack_qkv', 'adapt_msca']
