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
import re

import torch
import torch.nn.functional as F

from .common import read_state_dict, unwrap

_C, _V, _A = ('backbone.experts.clip.', 'backbone.experts.vmae.',
              'backbone.experts.audio.')
_RB = _C + r'transformer.resblocks.\1.'

# Experts (shared by CAVA and CA2ST)
_CLIP = [
    (r'clip_conv1\.weight', _C + 'conv1.weight'),
    (r'clip_class_embedding', _C + 'class_embedding'),
    (r'clip_positional_embedding', _C + 'positional_embedding'),
    (r'clip_ln_pre\.(weight|bias)', _C + r'ln_pre.\1'),
    (r'clip_ln_post\.(weight|bias)', _C + r'ln_post.\1'),
    (r'blocks\.(\d+)\.clip_ln_1\.(weight|bias)', _RB + r'ln_1.\2'),
    (r'blocks\.(\d+)\.clip_ln_2\.(weight|bias)', _RB + r'ln_2.\2'),
    (r'blocks\.(\d+)\.clip_attn\.(in_proj_weight|in_proj_bias)',
     _RB + r'attn.\2'),
    (r'blocks\.(\d+)\.clip_attn\.out_proj\.(weight|bias)',
     _RB + r'attn.out_proj.\2'),
    (r'blocks\.(\d+)\.clip_mlp\.(c_fc|c_proj)\.(weight|bias)',
     _RB + r'mlp.\2.\3'),
]
_AST = [
    (r'ast_cls_token', _A + 'cls_token'),
    (r'ast_dist_token', _A + 'dist_token'),
    (r'ast_pos_embed', _A + 'pos_embed'),
    (r'ast_patch_embed\.proj\.(weight|bias)', _A + r'patch_embed.proj.\1'),
    (r'ast_norm\.(weight|bias)', _A + r'norm.\1'),
    (r'blocks\.(\d+)\.ast_(norm1|norm2)\.(weight|bias)',
     _A + r'blocks.\1.\2.\3'),
    (r'blocks\.(\d+)\.ast_attn\.(qkv|proj)\.(weight|bias)',
     _A + r'blocks.\1.attn.\2.\3'),
    (r'blocks\.(\d+)\.ast_mlp\.(fc1|fc2)\.(weight|bias)',
     _A + r'blocks.\1.mlp.\2.\3'),
]
_VMAE = [
    (r'patch_embed\.proj\.(weight|bias)', _V + r'patch_embed.proj.\1'),
    (r'vmae_fc_norm\.(weight|bias)', _V + r'fc_norm.\1'),
    (r'blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)', _V + r'blocks.\1.\2.\3'),
    (r'blocks\.(\d+)\.attn\.(qkv\.weight|q_bias|v_bias|proj\.weight|'
     r'proj\.bias)', _V + r'blocks.\1.attn.\2'),
    (r'blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)',
     _V + r'blocks.\1.mlp.\2.\3'),
]


def _adapters(pairs):
    """(official adapter name, our table.expert) -> regex rows."""
    rows = []
    for off, ours in pairs:
        rows.append((rf'blocks\.(\d+)\.{off}\.D_(fc1|fc2)\.(weight|bias)',
                     rf'backbone.{ours}.\1.\2.\3'))
    return rows


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


def _window_attn(official, link, query, pos, q='q', kv='kv', proj='proj'):
    """One cross-attention module. ``pos``: {official table: our table}."""
    base = rf'blocks\.(\d+)\.{official}\.'
    ours = rf'backbone.links.{link}.\1.attn.{query}.'
    rows = [(base + rf'{q}\.weight', ours + 'q.weight'),
            (base + rf'{q}_bias', ours + 'q.bias'),
            (base + rf'{kv}\.weight', ours + 'kv.weight'),
            (base + rf'{kv}_bias', ours + 'kv.bias'),
            (base + rf'{proj}\.(weight|bias)', ours + r'proj.\2')]
    rows += [(base + off, ours + our) for off, our in pos.items()]
    return rows


def _bca(prefix, link, names):
    """down / norm / up of one official B-CA block: ``names`` maps the
    official side tag (``s``/``t`` or ``l``/``r``) to our expert."""
    rows = []
    for tag, expert in names.items():
        for off, part in ((f'cross_{tag}_down', 'down'),
                          (f'ln_{tag}_cross', 'norm'),
                          (f'cross_{tag}_up', 'up')):
            rows.append((rf'blocks\.(\d+)\.{prefix}{off}\.(weight|bias)',
                         rf'backbone.links.{link}.\1.{part}.{expert}.\2'))
    return rows


def _global_pos(q_tag, kv_tag):
    """Official space / temporal tables of a global window (q side first)."""
    return {f'{q_tag}_space_pos': 'q_pos', f'{q_tag}_temporal_pos': 'q_pos_t',
            f'{kv_tag}_space_pos': 'kv_pos',
            f'{kv_tag}_temporal_pos': 'kv_pos_t'}


CAVA_KEY_MAP = _CLIP + _AST + _adapters([
    ('S_Adapter', 'attn_adapters.audio'), ('T_Adapter', 'attn_adapters.clip'),
    ('S_MLP_Adapter', 'mlp_adapters.audio'),
    ('T_MLP_Adapter', 'mlp_adapters.clip'),
]) + _bca('', 'clip_audio', dict(s='audio', t='clip')) + _window_attn(
    't2s_cross', 'clip_audio', 'audio', _global_pos('clip', 'vmae'),
    q='t2s_q', kv='t2s_kv', proj='t2s_proj') + _window_attn(
    's2t_cross', 'clip_audio', 'clip', _global_pos('vmae', 'clip'),
    q='s2t_q', kv='s2t_kv', proj='t2s_proj') + _time_mlp(
    'time_mlp', 'video', 'cava') + _time_mlp(
    'audio_time_mlp', 'audio', 'cava') + [
    (r'noun_last_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'cls_head.adapters.1.\1.\2'),
    (r'verb_last_Adapter\.D_(fc1|fc2)\.(weight|bias)',
     r'cls_head.adapters.0.\1.\2'),
    (r'head\.(weight|bias)', r'cls_head.fc_cls.\1'),
]

CA2ST_KEY_MAP = _CLIP + _VMAE + _AST + _adapters([
    ('S_Adapter', 'attn_adapters.clip'), ('T_Adapter', 'attn_adapters.vmae'),
    ('Audio_Adapter', 'attn_adapters.audio'),
    ('S_MLP_Adapter', 'mlp_adapters.clip'),
    ('T_MLP_Adapter', 'mlp_adapters.vmae'),
    ('Audio_MLP_Adapter', 'mlp_adapters.audio'),
]) + (
    # S&T B-CAST (every layer): l = CLIP, r = VideoMAE
    _bca(r's_t_b_cast\.', 'clip_vmae', dict(l='clip', r='vmae')) +
    _window_attn(r's_t_b_cast\.l2r_cross', 'clip_vmae', 'vmae',
                 dict(vmae_space_pos='q_pos', clip_space_pos='kv_pos'),
                 q='s2t_q', kv='s2t_kv', proj='t2s_proj') +
    _window_attn(r's_t_b_cast\.r2l_cross', 'clip_vmae', 'clip',
                 dict(clip_time_pos='q_pos', vmae_time_pos='kv_pos'),
                 q='t2s_q', kv='t2s_kv', proj='t2s_proj') +
    # A&S: l = CLIP, r = audio
    _bca(r's_audio_b_cast\.', 'clip_audio', dict(l='clip', r='audio')) +
    _window_attn(r's_audio_b_cast\.l2r_cross', 'clip_audio', 'audio',
                 _global_pos('audio', 'clip')) +
    _window_attn(r's_audio_b_cast\.r2l_cross', 'clip_audio', 'clip',
                 _global_pos('clip', 'audio')) +
    # A&T: l = VideoMAE, r = audio
    _bca(r't_audio_b_cast\.', 'vmae_audio', dict(l='vmae', r='audio')) +
    _window_attn(r't_audio_b_cast\.l2r_cross', 'vmae_audio', 'audio',
                 _global_pos('audio', 'vmae')) +
    _window_attn(r't_audio_b_cast\.r2l_cross', 'vmae_audio', 'vmae',
                 _global_pos('vmae', 'audio'))
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


def _compile(table):
    return [(re.compile(p + r'$'), t) for p, t in table]


_TABLES = {
    'cava': _compile(CAVA_KEY_MAP),
    'ca2st_single': _compile(CA2ST_KEY_MAP + CA2ST_SINGLE_HEAD_MAP),
    'ca2st_verbnoun': _compile(CA2ST_KEY_MAP + CA2ST_VERBNOUN_HEAD_MAP),
}
_IGNORED = [re.compile(p + r'$') for p in IGNORED]


def _strip_module(state):
    if any(k.startswith('module.') for k in state):
        state = {k[len('module.'):] if k.startswith('module.') else k: v
                 for k, v in state.items()}
    return state


def _keys(state):
    return {k[len('module.'):] if k.startswith('module.') else k
            for k in state}


def is_cava(state):
    keys = _keys(state)
    return ('ast_patch_embed.proj.weight' in keys and 'clip_conv1.weight' in
            keys and 'patch_embed.proj.weight' not in keys and any(
                '.t2s_cross.' in k for k in keys))


def is_ca2st(state):
    keys = _keys(state)
    return ('ast_patch_embed.proj.weight' in keys and 'clip_conv1.weight' in
            keys and 'patch_embed.proj.weight' in keys and any(
                '.s_t_b_cast.' in k for k in keys))


def official_av_kind(state):
    """'cava', 'ca2st_single' or 'ca2st_verbnoun' (or a clear error)."""
    if is_cava(state):
        if any(k.endswith('head_noun.weight') for k in state):
            raise ValueError('CAVA verb/noun checkpoints are not supported: '
                             'the published CAVA models are single-label')
        return 'cava'
    if is_ca2st(state):
        return ('ca2st_verbnoun' if any(
            k.endswith('head_noun.weight') for k in state) else
            'ca2st_single')
    sample = ', '.join(list(state)[:6])
    raise ValueError(
        'not an official CAVA / CA2ST checkpoint (expected ast_patch_embed.*, '
        'clip_conv1.weight and blocks.*.t2s_cross.* (CAVA) or '
        f'blocks.*.s_t_b_cast.* (CA2ST); found {sample}, ...). For a CAST '
        'checkpoint use the cast converter; for an AST / CLIP / VideoMAE '
        'file set the expert\'s `pretrained` field instead.')


def _convert(state, kind):
    state = _strip_module(state)
    table = _TABLES[kind]
    out, unmapped, ignored = {}, [], []
    for k, v in state.items():
        for pat, tmpl in table:
            m = pat.match(k)
            if m:
                out[m.expand(tmpl)] = v
                break
        else:
            if any(p.match(k) for p in _IGNORED):
                ignored.append(k)
            else:
                unmapped.append(k)
    return out, unmapped


def convert_cava_state_dict(state):
    """Official CAVA state dict -> ours: (converted, unmapped keys)."""
    if not is_cava(state):
        official_av_kind(state)  # raises the explanatory error
        raise ValueError('a CA2ST checkpoint was given to the CAVA converter;'
                         ' use --kind ca2st')
    return _convert(state, 'cava')


def convert_ca2st_state_dict(state):
    """Official CA2ST state dict (single-label or verb/noun) -> ours."""
    kind = official_av_kind(state)
    if kind == 'cava':
        raise ValueError('a CAVA checkpoint was given to the CA2ST converter;'
                         ' use --kind cava')
    return _convert(state, kind)


# ---------------------------------------------------------------------------
# adapting to a model with other sizes
def _resize_axis(grid, size, axis):
    """Centre-crop (shorter) or bilinearly resize (longer) one axis of a
    (1, C, F, T) grid, as AST does for its position table."""
    old = grid.shape[axis]
    if size == old:
        return grid
    if size < old:
        start = old // 2 - size // 2
        return grid.narrow(axis, start, size)
    shape = list(grid.shape[-2:])
    shape[axis - 2] = size
    return F.interpolate(grid, size=tuple(shape), mode='bilinear',
                         align_corners=False)


def resize_audio_grid(table, old_grid, new_grid, num_prefix=0):
    """(.., P + f*t, C) table over a frequency-major (f, t) patch grid ->
    the ``new_grid`` (time axis first, then frequency: crop or resize)."""
    squeeze = table.ndim == 2
    x = table[None] if squeeze else table
    prefix, grid = x[:, :num_prefix], x[:, num_prefix:]
    c = grid.shape[-1]
    (fo, to), (fn, tn) = old_grid, new_grid
    if grid.shape[1] != fo * to:
        raise ValueError(f'audio position table has {grid.shape[1]} patches, '
                         f'not {fo}x{to}')
    dtype = grid.dtype
    g = grid.float().transpose(1, 2).reshape(1, c, fo, to)
    g = _resize_axis(g, tn, 3)
    g = _resize_axis(g, fn, 2)
    g = g.reshape(1, c, fn * tn).transpose(1, 2).to(dtype)
    out = torch.cat([prefix, g], dim=1)
    return out[0] if squeeze else out


def adapt_av_to_model(state, model):
    """Resize the AST position table and the audio tables of the B-CA when
    the model's spectrogram length differs from the checkpoint's. Other
    tables go through the CAST rules. Returns (state, notes)."""
    from .cast_official import adapt_to_model
    own = model.state_dict()
    notes = []
    audio = None
    bb = getattr(model, 'backbone', None)
    if bb is not None and 'audio' in getattr(bb, 'experts', {}):
        audio = bb.experts['audio']
    for k, v in list(state.items()):
        if k not in own or own[k].shape == v.shape or audio is None:
            continue
        fdim = audio.f_dim
        if k == _A + 'pos_embed':
            state[k] = resize_audio_grid(v, (fdim, (v.shape[1] - 2) // fdim),
                                         (fdim, audio.t_dim), 2)
        elif re.search(r'\.attn\.\w+\.(q_pos|kv_pos)$', k) and (
                own[k].shape[0] == audio.grid_n):
            state[k] = resize_audio_grid(v, (fdim, v.shape[0] // fdim),
                                         (fdim, audio.t_dim))
        else:
            continue
        notes.append(f'resized {k} {tuple(v.shape)} -> '
                     f'{tuple(state[k].shape)}')
    state, more = adapt_to_model(state, own)
    return state, notes + more


def tied_groups(model):
    """Names of model state-dict entries that are one tensor."""
    groups = {}
    for k, v in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(v), []).append(k)
    return [g for g in groups.values() if len(g) > 1]


def convert_official_av(path_or_state, model=None):
    """Read (if a path) and convert a CAVA / CA2ST checkpoint. With
    ``model``: adapt position tables, check coverage and tied parameters.
    Returns (state, report)."""
    what = 'official CAVA / CA2ST checkpoint'
    if isinstance(path_or_state, dict):
        state = unwrap(path_or_state, what)
    else:
        state = read_state_dict(path_or_state, what)
    kind = official_av_kind(state)
    out, unmapped = _convert(state, kind)
    report = dict(kind=kind, unmapped=unmapped, notes=[], missing=[],
                  unexpected=[])
    if model is None:
        return out, report
    out, report['notes'] = adapt_av_to_model(out, model)
    own = model.state_dict()
    report['missing'] = [k for k in own if k not in out]
    report['unexpected'] = [k for k in out if k not in own]
    bad = [k for k in out if k in own and own[k].shape != out[k].shape]
    if bad:
        raise ValueError(
            'the official checkpoint does not fit the configured model: ' +
            '; '.join(f'{k}: file {tuple(out[k].shape)} vs model '
                      f'{tuple(own[k].shape)}' for k in bad[:6]) +
            ' (check embed_dim / depth / num_classes / composition / the '
            'spectrogram length input_tdim)')
    for group in tied_groups(model):
        vals = [out[k] for k in group if k in out]
        if len(vals) > 1 and any(not torch.equal(vals[0], v)
                                 for v in vals[1:]):
            raise ValueError(
                f'the model ties {group} (share_projections=True) but the '
                f'checkpoint has different values for them: it was trained '
                f'without bcast_share; build the model with '
                f'share_projections=False')
    return out, report


def load_official_av(model, path_or_state, strict=True):
    """Convert and load into ``model``; with ``strict`` a missing or
    unexpected key is an error naming the keys."""
    state, rep = convert_official_av(path_or_state, model)
    if strict and (rep['missing'] or rep['unexpected'] or rep['unmapped']):
        raise ValueError(
            f'official {rep["kind"]} checkpoint vs model: missing '
            f'{rep["missing"][:8]} unexpected {rep["unexpected"][:8]} '
            f'unmapped {rep["unmapped"][:8]} (is the config the same '
            f'architecture: link layers, revision (time encodings), '
            f'single-label vs verb/noun head?)')
    model.load_state_dict(state, strict=False)
    return rep


__all__ = ['CAVA_KEY_MAP', 'CA2ST_KEY_MAP', 'CA2ST_SINGLE_HEAD_MAP',
           'CA2ST_VERBNOUN_HEAD_MAP', 'convert_cava_state_dict',
           'convert_ca2st_state_dict', 'convert_official_av',
           'load_official_av', 'official_av_kind', 'resize_audio_grid',
           'adapt_av_to_model']


def _register():
    from .converters import register_converter
    register_converter('cava', is_cava, convert_cava_state_dict,
                       adapt_av_to_model)
    register_converter('ca2st', is_ca2st, convert_ca2st_state_dict,
                       adapt_av_to_model)


_register()
