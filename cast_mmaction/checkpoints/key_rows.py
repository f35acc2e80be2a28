"""Key rows shared by the official converters.

A key table is a list of ``(official regex, our key template)`` rows; the
regex is anchored at both ends and ``\\1``.. in the template are its groups.
The authors' CAST, CAVA and CA2ST code share the expert towers and the
module shapes of the B-CA (down / norm / up projections, window
cross-attention, adapters), so those rows are written once here and each
converter's table (``cast_official``, ``av_official``) only says how they
are named in its file. :func:`map_keys` applies a table.
"""
import re

CLIP = 'backbone.experts.clip.'
VMAE = 'backbone.experts.vmae.'
AUDIO = 'backbone.experts.audio.'


def clip_rows(ours=CLIP):
    """The CLIP image tower as the authors store it (``clip_*`` names next
    to VideoMAE's, per-block ``blocks.N.clip_*``)."""
    rb = ours + r'transformer.resblocks.\1.'
    return [
        (r'clip_conv1\.weight', ours + 'conv1.weight'),
        (r'clip_class_embedding', ours + 'class_embedding'),
        (r'clip_positional_embedding', ours + 'positional_embedding'),
        (r'clip_ln_pre\.(weight|bias)', ours + r'ln_pre.\1'),
        (r'clip_ln_post\.(weight|bias)', ours + r'ln_post.\1'),
        (r'blocks\.(\d+)\.clip_ln_1\.(weight|bias)', rb + r'ln_1.\2'),
        (r'blocks\.(\d+)\.clip_ln_2\.(weight|bias)', rb + r'ln_2.\2'),
        (r'blocks\.(\d+)\.clip_attn\.(in_proj_weight|in_proj_bias)',
         rb + r'attn.\2'),
        (r'blocks\.(\d+)\.clip_attn\.out_proj\.(weight|bias)',
         rb + r'attn.out_proj.\2'),
        (r'blocks\.(\d+)\.clip_mlp\.(c_fc|c_proj)\.(weight|bias)',
         rb + r'mlp.\2.\3'),
    ]


def videomae_rows(ours=VMAE):
    """The VideoMAE tower (plain timm-like names, ``vmae_fc_norm``)."""
    return [
        (r'patch_embed\.proj\.(weight|bias)', ours + r'patch_embed.proj.\1'),
        (r'vmae_fc_norm\.(weight|bias)', ours + r'fc_norm.\1'),
        (r'blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)',
         ours + r'blocks.\1.\2.\3'),
        (r'blocks\.(\d+)\.attn\.(qkv\.weight|q_bias|v_bias|proj\.weight|'
         r'proj\.bias)', ours + r'blocks.\1.attn.\2'),
        (r'blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)',
         ours + r'blocks.\1.mlp.\2.\3'),
    ]


def ast_rows(ours=AUDIO):
    """The AST (DeiT) audio tower, ``ast_*`` names."""
    return [
        (r'ast_cls_token', ours + 'cls_token'),
        (r'ast_dist_token', ours + 'dist_token'),
        (r'ast_pos_embed', ours + 'pos_embed'),
        (r'ast_patch_embed\.proj\.(weight|bias)',
         ours + r'patch_embed.proj.\1'),
        (r'ast_norm\.(weight|bias)', ours + r'norm.\1'),
        (r'blocks\.(\d+)\.ast_(norm1|norm2)\.(weight|bias)',
         ours + r'blocks.\1.\2.\3'),
        (r'blocks\.(\d+)\.ast_attn\.(qkv|proj)\.(weight|bias)',
         ours + r'blocks.\1.attn.\2.\3'),
        (r'blocks\.(\d+)\.ast_mlp\.(fc1|fc2)\.(weight|bias)',
         ours + r'blocks.\1.mlp.\2.\3'),
    ]


def adapter_rows(pairs):
    """Per-block bottleneck adapters: ``(official name, our table.expert)``
    e.g. ``('S_Adapter', 'attn_adapters.clip')``."""
    return [(rf'blocks\.(\d+)\.{off}\.D_(fc1|fc2)\.(weight|bias)',
             rf'backbone.{ours}.\1.\2.\3') for off, ours in pairs]


def head_adapter_rows(pairs):
    """Head adapters: ``(official name, our cls_head entry)``, e.g.
    ``('noun_last_Adapter', 'adapters.0')``."""
    return [(rf'{off}\.D_(fc1|fc2)\.(weight|bias)', rf'cls_head.{ours}.\1.\2')
            for off, ours in pairs]


def bca_rows(prefix, link, names):
    """down / norm / up projections of one B-CA block. ``prefix``: the
    official module path inside a block (regex, '' or ``r's_t_b_cast\\.'``);
    ``names`` maps the official side tag (``s``/``t`` or ``l``/``r``) to
    our expert."""
    rows = []
    for tag, expert in names.items():
        for off, part in ((f'cross_{tag}_down', 'down'),
                          (f'ln_{tag}_cross', 'norm'),
                          (f'cross_{tag}_up', 'up')):
            rows.append((rf'blocks\.(\d+)\.{prefix}{off}\.(weight|bias)',
                         rf'backbone.links.{link}.\1.{part}.{expert}.\2'))
    return rows


def window_attn_rows(official, link, query, pos, q='q', kv='kv',
                     proj='proj'):
    """One window cross-attention module (``official``: its path inside a
    block, regex) where ``query`` is our querying expert. ``pos``:
    {official position table: ours (q_pos, kv_pos, q_pos_t, kv_pos_t)}."""
    base = rf'blocks\.(\d+)\.{official}\.'
    ours = rf'backbone.links.{link}.\1.attn.{query}.'
    rows = [(base + rf'{q}\.weight', ours + 'q.weight'),
            (base + rf'{q}_bias', ours + 'q.bias'),
            (base + rf'{kv}\.weight', ours + 'kv.weight'),
            (base + rf'{kv}_bias', ours + 'kv.bias'),
            (base + rf'{proj}\.(weight|bias)', ours + r'proj.\2')]
    rows += [(base + off, ours + our) for off, our in pos.items()]
    return rows


def global_pos(q_tag, kv_tag):
    """Official space / temporal tables of a global window (q side
    first)."""
    return {f'{q_tag}_space_pos': 'q_pos', f'{q_tag}_temporal_pos': 'q_pos_t',
            f'{kv_tag}_space_pos': 'kv_pos',
            f'{kv_tag}_temporal_pos': 'kv_pos_t'}


def compile_rows(rows):
    return [(re.compile(p + r'$'), t) for p, t in rows]


def map_keys(state, compiled, ignored=()):
    """Apply a compiled table: returns ``(ours, unmapped, ignored)``; keys
    matching an ``ignored`` regex are dropped on purpose."""
    out, unmapped, dropped = {}, [], []
    for k, v in state.items():
        for pat, tmpl in compiled:
            m = pat.match(k)
            if m:
                out[m.expand(tmpl)] = v
                break
        else:
            if any(p.match(k) for p in ignored):
                dropped.append(k)
            else:
                unmapped.append(k)
    return out, unmapped, dropped
