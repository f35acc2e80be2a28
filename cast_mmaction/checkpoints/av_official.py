"""Convert the authors' CAVA / CA2ST checkpoints (joohyun7u/CA2ST) to this
package.

The released checkpoints are DeepSpeed dumps ``{'module': sd}`` (or
``{'model': sd}``) with the key names of ``models/ast_clip_cast.py`` (CAVA)
and ``models/ast_Bsquare.py`` (CA2ST). The tables below map every official
key pattern to ours; expert and link names are those of the shipped configs
(``clip``, ``vmae``, ``audio``; links ``clip_audio``, ``clip_vmae``,
``vmae_audio``) and stream order is CAVA ``(clip, audio)``, CA2ST
``(clip, vmae, audio)``.

Naming traps of the official code, resolved in the tables:

* CAVA calls the AUDIO stream ``s`` and CLIP ``t``: ``S_Adapter``,
  ``cross_s_*``, ``ln_s_cross`` belong to the audio expert, ``t2s_cross`` is
  audio querying CLIP and ``s2t_cross`` CLIP querying audio; inside both,
  ``clip_*_pos`` are the AUDIO tables and ``vmae_*_pos`` the CLIP tables;
  ``noun_last_Adapter`` is the audio head adapter.
* The S->T attention's output projection is called ``t2s_proj``.
* CA2ST B-CAST modules: ``l`` is CLIP (``s_t``, ``s_audio``) or VideoMAE
  (``t_audio``), ``r`` the other expert; ``l2r_cross`` updates ``r`` (``r``
  queries ``l``) and ``r2l_cross`` updates ``l``.
* ``bcast_share=True`` checkpoints hold each tied projection under every
  link's name (one tensor): they load into a model built with
  ``share_projections=True``.
* ``audio_ln_post`` exists in every checkpoint but is unused (ignored).
"""

import torch

from ..models.layers import resize_audio_grid
from .cast_official import adapt_to_model
from .key_rows import (AUDIO, adapter_rows, ast_rows, bca_rows, clip_rows,
                       global_pos, head_adapter_rows, videomae_rows,
                       window_attn_rows)
from .state_dict import strip_prefixes


def _time_mlp(official, group, layout):
    """The time MLP: CAVA nests its hidden layers (``.2.0``, ``.3.0``),
    CA2ST does not (``.2``, ``.4``); LayerNorm last."""
    ours = f'backbone.time_mlps.{group}.'
    idx = {'cava': ('0', r'2\.0', r'3\.0', '4'),
           'ca2st': ('0', '2', '4', '6')}[layout]
    rows = [(rf'{official}\.{i}\.(weight|bias)', ours + rf'layers.{k}.\1')
            for k, i in enumerate(idx[:3])]
    rows.append((rf'{official}\.{idx[3]}\.(weight|bias)', ours + r'norm.\1'))
    return rows


CAVA_KEY_MAP = clip_rows() + ast_rows() + adapter_rows([
    ('S_Adapter', 'attn_adapters.audio'), ('T_Adapter', 'attn_adapters.clip'),
    ('S_MLP_Adapter', 'mlp_adapters.audio'),
    ('T_MLP_Adapter', 'mlp_adapters.clip'),
]) + bca_rows('', 'clip_audio', dict(s='audio', t='clip')) + window_attn_rows(
    't2s_cross', 'clip_audio', 'audio', global_pos('clip', 'vmae'),
    q='t2s_q', kv='t2s_kv', proj='t2s_proj') + window_attn_rows(
    's2t_cross', 'clip_audio', 'clip', global_pos('vmae', 'clip'),
    q='s2t_q', kv='s2t_kv', proj='t2s_proj') + _time_mlp(
    'time_mlp', 'video', 'cava') + _time_mlp(
    'audio_time_mlp', 'audio', 'cava') + head_adapter_rows([
        ('noun_last_Adapter', 'adapters.1'),
        ('verb_last_Adapter', 'adapters.0')]) + [
    (r'head\.(weight|bias)', r'cls_head.fc_cls.\1'),
]

CA2ST_KEY_MAP = clip_rows() + videomae_rows() + ast_rows() + adapter_rows([
    ('S_Adapter', 'attn_adapters.clip'), ('T_Adapter', 'attn_adapters.vmae'),
    ('Audio_Adapter', 'attn_adapters.audio'),
    ('S_MLP_Adapter', 'mlp_adapters.clip'),
    ('T_MLP_Adapter', 'mlp_adapters.vmae'),
    ('Audio_MLP_Adapter', 'mlp_adapters.audio'),
]) + (
    # S&T B-CAST (every layer): l = CLIP, r = VideoMAE
    bca_rows(r's_t_b_cast\.', 'clip_vmae', dict(l='clip', r='vmae')) +
    window_attn_rows(r's_t_b_cast\.l2r_cross', 'clip_vmae', 'vmae',
                 dict(vmae_space_pos='q_pos', clip_space_pos='kv_pos'),
                 q='s2t_q', kv='s2t_kv', proj='t2s_proj') +
    window_attn_rows(r's_t_b_cast\.r2l_cross', 'clip_vmae', 'clip',
                 dict(clip_time_pos='q_pos', vmae_time_pos='kv_pos'),
                 q='t2s_q', kv='t2s_kv', proj='t2s_proj') +
    # A&S: l = CLIP, r = audio
    bca_rows(r's_audio_b_cast\.', 'clip_audio', dict(l='clip', r='audio')) +
    window_attn_rows(r's_audio_b_cast\.l2r_cross', 'clip_audio', 'audio',
                 global_pos('audio', 'clip')) +
    window_attn_rows(r's_audio_b_cast\.r2l_cross', 'clip_audio', 'clip',
                 global_pos('clip', 'audio')) +
    # A&T: l = VideoMAE, r = audio
    bca_rows(r't_audio_b_cast\.', 'vmae_audio', dict(l='vmae', r='audio')) +
    window_attn_rows(r't_audio_b_cast\.l2r_cross', 'vmae_audio', 'audio',
                 global_pos('audio', 'vmae')) +
    window_attn_rows(r't_audio_b_cast\.r2l_cross', 'vmae_audio', 'vmae',
                 global_pos('vmae', 'audio'))
) + _time_mlp('time_mlp', 'video', 'ca2st') + _time_mlp(
    'audio_time_mlp', 'audio', 'ca2st')

# the heads differ between the single-label and the verb/noun model
CA2ST_SINGLE_HEAD_MAP = [
    (r'noun_last_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'cls_head.adapters.0.\1.\2'),
    (r'verb_last_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'cls_head.adapters.1.\1.\2'),
    (r'audio_verb_last_Adapter\.c_fc\.(weight|bias)',
     r'cls_head.adapters.2.fc1.\1'),
    (r'audio_verb_last_Adapter\.c_proj\.(weight|bias)',
     r'cls_head.adapters.2.fc2.\1'),
    (r'head\.(weight|bias)', r'cls_head.fc_cls.\1'),
]
CA2ST_VERBNOUN_HEAD_MAP = [
    (r'noun_last_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'cls_head.noun_adapters.0.\1.\2'),
    (r'audio_noun_last_Adapter\.c_fc\.(weight|bias)',
     r'cls_head.noun_adapters.1.fc1.\1'),
    (r'audio_noun_last_Adapter\.c_proj\.(weight|bias)',
     r'cls_head.noun_adapters.1.fc2.\1'),
    (r'verb_last_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'cls_head.verb_adapters.0.\1.\2'),
    (r'audio_verb_last_Adapter\.c_fc\.(weight|bias)',
     r'cls_head.verb_adapters.1.fc1.\1'),
    (r'audio_verb_last_Adapter\.c_proj\.(weight|bias)',
     r'cls_head.verb_adapters.1.fc2.\1'),
    (r'head_noun\.(weight|bias)', r'cls_head.fc_noun.\1'),
    (r'head_verb\.(weight|bias)', r'cls_head.fc_verb.\1'),
]

# present in the official checkpoints, unused by the official forward
IGNORED = (r'audio_ln_post\.(weight|bias)', )

CAVA_EXPECTS = ('ast_patch_embed.*, clip_conv1.weight and blocks.*.t2s_cross.*'
                ' without patch_embed.* (CAVA)')
CA2ST_EXPECTS = ('ast_patch_embed.*, clip_conv1.weight, patch_embed.* and '
                 'blocks.*.s_t_b_cast.* (CA2ST)')


def _has_noun_head(state):
    return any(k.endswith('head_noun.weight') for k in state)


def is_cava(state):
    # CLIP + AST without VideoMAE: CAVA, with B-CA layers or (CA at the
    # depth, their CA12 entry point) without any
    keys = strip_prefixes(state)
    return ('ast_patch_embed.proj.weight' in keys and 'clip_conv1.weight' in
            keys and 'patch_embed.proj.weight' not in keys)


def is_ca2st(state):
    keys = strip_prefixes(state)
    return ('ast_patch_embed.proj.weight' in keys and 'clip_conv1.weight' in
            keys and 'patch_embed.proj.weight' in keys and any(
                '.s_t_b_cast.' in k for k in keys))


def _time_mlp_of(rows, state):
    """One time MLP for both streams (``split_time_mlp=False``, their run
    scripts' default: no ``audio_time_mlp`` in the file) is the model's
    ``time_mlps.shared``; with two, ``time_mlps.video`` / ``.audio``."""
    keys = strip_prefixes(state)
    if any(k.startswith('audio_time_mlp.') for k in keys) or not any(
            k.startswith('time_mlp.') for k in keys):
        return rows
    return [(p, r.replace('backbone.time_mlps.video.',
                          'backbone.time_mlps.shared.')) for p, r in rows]


def cava_key_map(state):
    if _has_noun_head(state):
        raise ValueError('CAVA verb/noun checkpoints are not supported: '
                         'the published CAVA models are single-label')
    return _time_mlp_of(CAVA_KEY_MAP, state)


def ca2st_key_map(state):
    """The CA2ST table with the head of the file (single-label or
    verb/noun)."""
    return _time_mlp_of(CA2ST_KEY_MAP, state) + (
        CA2ST_VERBNOUN_HEAD_MAP if _has_noun_head(state)
        else CA2ST_SINGLE_HEAD_MAP)


# ---------------------------------------------------------------------------
# adapting to a model with other sizes
def adapt_av_to_model(state, model):
    """Resize the AST position table when the model's spectrogram length
    differs from the checkpoint's; the B-CA window tables (audio ones
    included) and CLIP's table go through :func:`adapt_to_model`. Returns
    (state, notes)."""
    own = model.state_dict()
    notes = []
    experts = getattr(getattr(model, 'backbone', None), 'experts', {})
    audio = experts['audio'] if 'audio' in experts else None
    k = AUDIO + 'pos_embed'
    if audio is not None and k in state and k in own and (
            own[k].shape != state[k].shape):
        v, fdim = state[k], audio.f_dim
        state[k] = resize_audio_grid(v, (fdim, (v.shape[1] - 2) // fdim),
                                     (fdim, audio.t_dim), 2)
        notes.append(f'resized {k} {tuple(v.shape)} -> '
                     f'{tuple(state[k].shape)}')
    state, more = adapt_to_model(state, model)
    return state, notes + more


def tied_groups(model):
    """Names of model state-dict entries that are one tensor."""
    groups = {}
    for k, v in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(v), []).append(k)
    return [g for g in groups.values() if len(g) > 1]


def check_tied(state, model):
    """A model built with ``share_projections=True`` ties projections of
    several links (one tensor): the checkpoint must hold equal values."""
    for group in tied_groups(model):
        vals = [state[k] for k in group if k in state]
        if len(vals) > 1 and any(not torch.equal(vals[0], v)
                                 for v in vals[1:]):
            raise ValueError(
                f'the model ties {group} (share_projections=True) but the '
                f'checkpoint has different values for them: it was trained '
                f'without bcast_share; build the model with '
                f'share_projections=False')


__all__ = ['CAVA_KEY_MAP', 'CA2ST_KEY_MAP', 'CA2ST_SINGLE_HEAD_MAP',
           'CA2ST_VERBNOUN_HEAD_MAP', 'is_cava', 'is_ca2st', 'cava_key_map',
           'ca2st_key_map', 'resize_audio_grid', 'adapt_av_to_model',
           'check_tied']
