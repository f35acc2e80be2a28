"""Convert the authors' CAST checkpoints (KHU-VLL/CAST) to this package.

The released fine-tuned checkpoints are DeepSpeed dumps ``{'module': sd}``
with the key names of ``models/bidir_modeling_crossattn.py``. The table
``CAST_KEY_MAP`` maps every official key pattern to ours; the expert and link
names are those of the shipped configs (``clip``, ``vmae``, link
``clip_vmae``).
"""
import math
import re

import torch

from ..models.layers import resize_1d_embed, resize_grid_embed
from .common import read_state_dict, unwrap

_C = 'backbone.experts.clip.'
_V = 'backbone.experts.vmae.'
_L = r'backbone.links.clip_vmae.\1.'
_RB = _C + r'transformer.resblocks.\1.'

# (official regex, our key template). Order does not matter: patterns are
# anchored and disjoint.
CAST_KEY_MAP = [
    # CLIP image expert (spatial stream)
    (r'clip_conv1\.weight', _C + 'conv1.weight'),
    (r'clip_class_embedding', _C + 'class_embedding'),
    (r'clip_positional_embedding', _C + 'positional_embedding'),
    (r'clip_ln_pre\.(weight|bias)', _C + r'ln_pre.\1'),
    (r'clip_ln_post\.(weight|bias)', _C + r'ln_post.\1'),
    (r'blocks\.(\d+)\.clip_ln_1\.(weight|bias)', _RB + r'ln_1.\2'),
    (r'blocks\.(\d+)\.clip_ln_2\.(weight|bias)', _RB + r'ln_2.\2'),
    (r'blocks\.(\d+)\.clip_attn\.(in_proj_weight|in_proj_bias)', _RB + r'attn.\2'),
    (r'blocks\.(\d+)\.clip_attn\.out_proj\.(weight|bias)', _RB + r'attn.out_proj.\2'),
    (r'blocks\.(\d+)\.clip_mlp\.(c_fc|c_proj)\.(weight|bias)', _RB + r'mlp.\2.\3'),
    # VideoMAE expert (temporal stream)
    (r'patch_embed\.proj\.(weight|bias)', _V + r'patch_embed.proj.\1'),
    (r'vmae_fc_norm\.(weight|bias)', _V + r'fc_norm.\1'),
    (r'blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)', _V + r'blocks.\1.\2.\3'),
    (r'blocks\.(\d+)\.attn\.(qkv\.weight|q_bias|v_bias|proj\.weight|proj\.bias)',
     _V + r'blocks.\1.attn.\2'),
    (r'blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)', _V + r'blocks.\1.mlp.\2.\3'),
    # adapters
    (r'blocks\.(\d+)\.S_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'backbone.attn_adapters.clip.\1.\2.\3'),
    (r'blocks\.(\d+)\.T_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'backbone.attn_adapters.vmae.\1.\2.\3'),
    (r'blocks\.(\d+)\.S_MLP_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'backbone.mlp_adapters.clip.\1.\2.\3'),
    (r'blocks\.(\d+)\.T_MLP_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'backbone.mlp_adapters.vmae.\1.\2.\3'),
    # B-CAST: bottleneck projections and norms
    (r'blocks\.(\d+)\.cross_s_down\.(weight|bias)', _L + r'down.clip.\2'),
    (r'blocks\.(\d+)\.cross_t_down\.(weight|bias)', _L + r'down.vmae.\2'),
    (r'blocks\.(\d+)\.ln_s_cross\.(weight|bias)', _L + r'norm.clip.\2'),
    (r'blocks\.(\d+)\.ln_t_cross\.(weight|bias)', _L + r'norm.vmae.\2'),
    (r'blocks\.(\d+)\.cross_s_up\.(weight|bias)', _L + r'up.clip.\2'),
    (r'blocks\.(\d+)\.cross_t_up\.(weight|bias)', _L + r'up.vmae.\2'),
    # T2S: CLIP queries VideoMAE along time
    (r'blocks\.(\d+)\.t2s_cross\.clip_time_pos', _L + 'attn.clip.q_pos'),
    (r'blocks\.(\d+)\.t2s_cross\.vmae_time_pos', _L + 'attn.clip.kv_pos'),
    (r'blocks\.(\d+)\.t2s_cross\.t2s_q\.weight', _L + 'attn.clip.q.weight'),
    (r'blocks\.(\d+)\.t2s_cross\.t2s_q_bias', _L + 'attn.clip.q.bias'),
    (r'blocks\.(\d+)\.t2s_cross\.t2s_kv\.weight', _L + 'attn.clip.kv.weight'),
    (r'blocks\.(\d+)\.t2s_cross\.t2s_kv_bias', _L + 'attn.clip.kv.bias'),
    (r'blocks\.(\d+)\.t2s_cross\.t2s_proj\.(weight|bias)', _L + r'attn.clip.proj.\2'),
    # S2T: VideoMAE queries CLIP within a frame (its output projection is
    # also called t2s_proj in the official code)
    (r'blocks\.(\d+)\.s2t_cross\.vmae_space_pos', _L + 'attn.vmae.q_pos'),
    (r'blocks\.(\d+)\.s2t_cross\.clip_space_pos', _L + 'attn.vmae.kv_pos'),
    (r'blocks\.(\d+)\.s2t_cross\.s2t_q\.weight', _L + 'attn.vmae.q.weight'),
    (r'blocks\.(\d+)\.s2t_cross\.s2t_q_bias', _L + 'attn.vmae.q.bias'),
    (r'blocks\.(\d+)\.s2t_cross\.s2t_kv\.weight', _L + 'attn.vmae.kv.weight'),
    (r'blocks\.(\d+)\.s2t_cross\.s2t_kv_bias', _L + 'attn.vmae.kv.bias'),
    (r'blocks\.(\d+)\.s2t_cross\.t2s_proj\.(weight|bias)', _L + r'attn.vmae.proj.\2'),
    # heads
    (r'noun_last_Adapter\.D_(fc1|fc2)\.(weight|bias)', r'cls_head.adapters.0.\1.\2'),
    (r'verb_last_Adapter\.D_(fc1|fc2)\.(weight|bias)', r'cls_head.adapters.1.\1.\2'),
    (r'head\.(weight|bias)', r'cls_head.fc_cls.\1'),
    (r'head_noun\.(weight|bias)', r'cls_head.fc_noun.\1'),
    (r'head_verb\.(weight|bias)', r'cls_head.fc_verb.\1'),
]
_COMPILED = [(re.compile(p + r'$'), t) for p, t in CAST_KEY_MAP]


def map_key(key):
    for pat, tmpl in _COMPILED:
        m = pat.match(key)
        if m:
            return m.expand(tmpl)
    return None


def convert_cast_state_dict(state):
    """Official CAST state dict -> ours. Returns (converted, unmapped_keys).
    Raises when the state dict is not a CAST model at all."""
    if any(k.startswith('module.') for k in state):
        state = {k[len('module.'):] if k.startswith('module.') else k: v
                 for k, v in state.items()}
    out, unmapped = {}, []
    for k, v in state.items():
        new = map_key(k)
        if new is None:
            unmapped.append(k)
        else:
            out[new] = v
    if not any('links.' in k for k in out) or not any(
            '.experts.clip.' in k for k in out):
        sample = ', '.join(list(state)[:6])
        raise ValueError(
            'not an official CAST checkpoint (no B-CAST / CLIP keys such as '
            f'blocks.0.t2s_cross.* or clip_conv1.weight; found {sample}, '
            '...). For a VideoMAE or CLIP file set the expert\'s '
            '`pretrained` field instead; for a checkpoint of this package '
            'use it directly with tools/test.py.')
    return out, unmapped


def read_official_cast(path):
    return read_state_dict(path, 'official CAST checkpoint')


def adapt_to_model(state, model_state):
    """Resize position tables whose size differs from the model's (other
    input sizes or frame counts). Returns (state, notes)."""
    notes = []
    for k, v in list(state.items()):
        if k not in model_state or model_state[k].shape == v.shape:
            continue
        target = model_state[k].shape
        if k.endswith('positional_embedding'):
            old, new = v.shape[0] - 1, target[0] - 1
            state[k] = resize_grid_embed(v, (math.isqrt(old), ) * 2,
                                         (math.isqrt(new), ) * 2, 1)
        elif k.endswith(('q_pos', 'kv_pos', 'q_pos_t', 'kv_pos_t')):
            old, new = v.shape[0], target[0]
            if '_t' not in k and math.isqrt(old)**2 == old and math.isqrt(
                    new)**2 == new and k.split('.')[-2] == 'vmae':
                # space tables of the S2T attention: a patch grid
                state[k] = resize_grid_embed(v, (math.isqrt(old), ) * 2,
                                             (math.isqrt(new), ) * 2)
            else:
                state[k] = resize_1d_embed(v, new)
        else:
            continue
        notes.append(f'resized {k} {tuple(v.shape)} -> {tuple(target)}')
    return state, notes


def convert_official_cast(path_or_state, model=None):
    """Read (if a path) and convert an official checkpoint. With ``model``,
    resize position tables to it and check the result covers the model:
    returns (state, report dict)."""
    if isinstance(path_or_state, dict):
        state = unwrap(path_or_state, 'official CAST checkpoint')
    else:
        state = read_official_cast(path_or_state)
    state, unmapped = convert_cast_state_dict(state)
    report = dict(unmapped=unmapped, notes=[], missing=[], unexpected=[])
    if model is not None:
        own = model.state_dict()
        state, report['notes'] = adapt_to_model(state, own)
        report['missing'] = [k for k in own if k not in state]
        report['unexpected'] = [k for k in state if k not in own]
        bad = [k for k in state if k in own and own[k].shape != state[k].shape]
        if bad:
            raise ValueError(
                'the official checkpoint does not fit the configured model: '
                + '; '.join(f'{k}: file {tuple(state[k].shape)} vs model '
                            f'{tuple(own[k].shape)}' for k in bad[:6]) +
                ' (check embed_dim/depth/num_classes/composition)')
    return state, report


def load_official_cast(model, path_or_state, strict=True):
    """Convert and load into ``model``; with ``strict`` a missing or
    unexpected key is an error naming the keys."""
    state, rep = convert_official_cast(path_or_state, model)
    if strict and (rep['missing'] or rep['unexpected']):
        raise ValueError(
            f'official checkpoint vs model: missing {rep["missing"][:8]} '
            f'unexpected {rep["unexpected"][:8]} (is the config the same '
            f'architecture: single-label vs verb/noun head, depth, links?)')
    model.load_state_dict(state, strict=False)
    return rep


__all__ = ['CAST_KEY_MAP', 'map_key', 'convert_cast_state_dict',
           'convert_official_cast', 'load_official_cast', 'torch']
