"""The authors' CAST checkpoints (KHU-VLL/CAST): key table, detection and
the position-table rules shared by every converter.

The released fine-tuned checkpoints are DeepSpeed dumps ``{'module': sd}``
with the key names of ``models/bidir_modeling_crossattn.py``. The table
``CAST_KEY_MAP`` maps every official key pattern to ours; the expert and link
names are those of the shipped configs (``clip``, ``vmae``, link
``clip_vmae``). The converter record is ``registry.CAST``.
"""
import math

from ..models.layers import resize_1d_embed, resize_grid_embed
from .ablation_layout import ablation_layout  # non-uniform: cast_ablation
from .key_rows import (adapter_rows, bca_rows, clip_rows, head_adapter_rows,
                       videomae_rows, window_attn_rows)
from .state_dict import strip_prefixes

_LINK = 'clip_vmae'

# (official regex, our key template). Order does not matter: patterns are
# anchored and disjoint.
CAST_KEY_MAP = clip_rows() + videomae_rows() + adapter_rows([
    ('S_Adapter', 'attn_adapters.clip'), ('T_Adapter', 'attn_adapters.vmae'),
    ('S_MLP_Adapter', 'mlp_adapters.clip'),
    ('T_MLP_Adapter', 'mlp_adapters.vmae'),
]) + bca_rows('', _LINK, dict(s='clip', t='vmae')) + window_attn_rows(
    # T2S: CLIP queries VideoMAE along time
    't2s_cross', _LINK, 'clip',
    dict(clip_time_pos='q_pos', vmae_time_pos='kv_pos'),
    q='t2s_q', kv='t2s_kv', proj='t2s_proj') + window_attn_rows(
    # S2T: VideoMAE queries CLIP within a frame (its output projection is
    # also called t2s_proj in the official code)
    's2t_cross', _LINK, 'vmae',
    dict(vmae_space_pos='q_pos', clip_space_pos='kv_pos'),
    q='s2t_q', kv='s2t_kv', proj='t2s_proj') + head_adapter_rows([
        ('noun_last_Adapter', 'adapters.0'),
        ('verb_last_Adapter', 'adapters.1')]) + [
    (r'head\.(weight|bias)', r'cls_head.fc_cls.\1'),
    (r'head_noun\.(weight|bias)', r'cls_head.fc_noun.\1'),
    (r'head_verb\.(weight|bias)', r'cls_head.fc_verb.\1'),
]

CAST_EXPECTS = 'blocks.*.t2s_cross.* and clip_conv1.weight (B-CAST / CLIP)'


def is_cast(state):
    keys = strip_prefixes(state)
    return ('clip_conv1.weight' in keys and 'patch_embed.proj.weight' in keys
            and any('.t2s_cross.' in k for k in keys)
            and not any(k.startswith(('ast_', 'audio_')) for k in keys)
            and not ablation_layout(keys))


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


def adapt_cast(state, model):
    """The converter-record form of :func:`adapt_to_model`."""
    return adapt_to_model(state, model.state_dict())


__all__ = ['CAST_KEY_MAP', 'is_cast', 'adapt_to_model', 'adapt_cast']
