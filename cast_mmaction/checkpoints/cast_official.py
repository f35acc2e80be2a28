"""The authors' CAST checkpoints (KHU-VLL/CAST): key table, detection and
the position-table rules shared by every converter.

The released fine-tuned checkpoints are DeepSpeed dumps ``{'module': sd}``
with the key names of ``models/bidir_modeling_crossattn.py``. The table
``CAST_KEY_MAP`` maps every official key pattern to ours; the expert and link
names are those of the shipped configs (``clip``, ``vmae``, link
``clip_vmae``). The converter record is ``registry.CAST``.
"""
import math

from ..models.layers import (resize_1d_embed, resize_audio_grid,
                             resize_grid_embed)
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


def _resize_patch_table(table, expert):
    """A window table over ``expert``'s patches (axis 'n') -> its grid. The
    checkpoint's grid is the square one of its length (the authors' 224 px
    frames), an AST's the frequency-major (f, t) grid with the expert's
    frequency bins."""
    old = table.shape[0]
    if getattr(expert, 'role', None) == 'audio':
        fdim = expert.f_dim
        return resize_audio_grid(table, (fdim, old // fdim),
                                 (fdim, expert.t_dim))
    side = math.isqrt(old)
    grid = getattr(expert, 'grid_hw', None)
    if side * side != old or grid is None:
        return resize_1d_embed(table, expert.grid_n)
    return resize_grid_embed(table, (side, side), tuple(grid))


def adapt_to_model(state, model):
    """Resize position tables whose size differs from ``model``'s (other
    input sizes, frame counts or spectrogram lengths). The B-CA window tables
    are found through the window-policy table
    (:func:`~cast_mmaction.models.fusion.position_table_layout`: each table's
    expert and axis), so a new window policy needs no rule here. Returns
    (state, notes)."""
    from ..models.fusion import position_table_layout
    own = model.state_dict()
    layout = position_table_layout(model)
    experts = getattr(getattr(model, 'backbone', None), 'experts', {})
    notes = []
    for k, v in list(state.items()):
        if k not in own or own[k].shape == v.shape:
            continue
        target = own[k].shape
        if k.endswith('positional_embedding'):  # CLIP: class token + grid
            old, new = v.shape[0] - 1, target[0] - 1
            state[k] = resize_grid_embed(v, (math.isqrt(old), ) * 2,
                                         (math.isqrt(new), ) * 2, 1)
        elif k in layout:
            expert_name, axis = layout[k]
            if axis == 't':
                state[k] = resize_1d_embed(v, target[0])
            else:
                state[k] = _resize_patch_table(v, experts[expert_name])
        else:
            continue
        notes.append(f'resized {k} {tuple(v.shape)} -> '
                     f'{tuple(state[k].shape)}')
    return state, notes


__all__ = ['CAST_KEY_MAP', 'is_cast', 'adapt_to_model']
