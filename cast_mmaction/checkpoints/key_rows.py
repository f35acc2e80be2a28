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

import torch

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


# ---------------------------------------------------------------------------
# Expert towers as other libraries save them, mapped to the expert's own
# names (relative to the expert, as its ``pretrained`` loader fits them).
# A template ending in ``:q`` / ``:k`` / ``:v`` (or ``:query`` ...) is one
# third of a fused q;k;v tensor: :func:`fuse_parts` joins the three.
# ---------------------------------------------------------------------------
def _hf_layer_rows(layer, qkv_bias):
    """One BERT-style ``transformers`` ViT layer (VideoMAE, AST in
    transformers 4): ``attention.attention.{query,key,value}``,
    ``attention.output.dense``, ``intermediate.dense``, ``output.dense``,
    ``layernorm_before`` / ``_after``. ``qkv_bias``: the q/k/v biases are
    fused too (AST); otherwise only the weights are (VideoMAE)."""
    b = r'blocks.\1.'
    parts = r'(weight|bias)' if qkv_bias else r'(weight)'
    return [
        (layer + r'attention\.attention\.(query|key|value)\.' + parts,
         b + r'attn.qkv.\3:\2'),
        (layer + r'attention\.output\.dense\.(weight|bias)',
         b + r'attn.proj.\2'),
        (layer + r'intermediate\.dense\.(weight|bias)', b + r'mlp.fc1.\2'),
        (layer + r'output\.dense\.(weight|bias)', b + r'mlp.fc2.\2'),
        (layer + r'layernorm_before\.(weight|bias)', b + r'norm1.\2'),
        (layer + r'layernorm_after\.(weight|bias)', b + r'norm2.\2'),
    ]


def hf_videomae_rows():
    """``transformers`` VideoMAE (``VideoMAEModel``; the ``videomae.`` part
    of ``VideoMAEForPreTraining`` / ``ForVideoClassification``) ->
    ``VideoMAEExpert``. k has no bias; q / v biases are ``q_bias`` /
    ``v_bias`` (transformers 4) or ``query.bias`` / ``value.bias``
    (transformers 5)."""
    layer = r'encoder\.layer\.(\d+)\.'
    return _hf_layer_rows(layer, qkv_bias=False) + [
        (r'embeddings\.patch_embeddings\.projection\.(weight|bias)',
         r'patch_embed.proj.\1'),
        (layer + r'attention\.attention\.(q|v)_bias',
         r'blocks.\1.attn.\2_bias'),
        (layer + r'attention\.attention\.query\.bias',
         r'blocks.\1.attn.q_bias'),
        (layer + r'attention\.attention\.value\.bias',
         r'blocks.\1.attn.v_bias'),
        (r'fc_norm\.(weight|bias)', r'fc_norm.\1'),
    ]


def hf_ast_rows():
    """``transformers`` AST (``ASTModel``; the
    ``audio_spectrogram_transformer.`` part of ``ASTForAudioClassification``)
    -> ``ASTExpert``, in the layer names of transformers 4
    (``encoder.layer.N.attention.attention.query``) and 5
    (``layers.N.attention.q_proj``)."""
    v5 = r'layers\.(\d+)\.'
    return _hf_layer_rows(r'encoder\.layer\.(\d+)\.', qkv_bias=True) + [
        (r'embeddings\.cls_token', 'cls_token'),
        (r'embeddings\.distillation_token', 'dist_token'),
        (r'embeddings\.position_embeddings', 'pos_embed'),
        (r'embeddings\.patch_embeddings\.projection\.(weight|bias)',
         r'patch_embed.proj.\1'),
        (v5 + r'attention\.(q|k|v)_proj\.(weight|bias)',
         r'blocks.\1.attn.qkv.\3:\2'),
        (v5 + r'attention\.o_proj\.(weight|bias)', r'blocks.\1.attn.proj.\2'),
        (v5 + r'mlp\.(fc1|fc2)\.(weight|bias)', r'blocks.\1.mlp.\2.\3'),
        (v5 + r'layernorm_before\.(weight|bias)', r'blocks.\1.norm1.\2'),
        (v5 + r'layernorm_after\.(weight|bias)', r'blocks.\1.norm2.\2'),
        (r'layernorm\.(weight|bias)', r'norm.\1'),
    ]


def hf_clip_vision_rows():
    """``transformers`` CLIP image tower (``CLIPVisionModel``; the
    ``vision_model.`` part of ``CLIPModel``) -> ``CLIPViTExpert`` (the OpenAI
    names). q / k / v are separate there, packed in ``in_proj_*`` here;
    ``pre_layrnorm`` is transformers' spelling."""
    layer = r'encoder\.layers\.(\d+)\.'
    rb = r'transformer.resblocks.\1.'
    return [
        (r'embeddings\.class_embedding', 'class_embedding'),
        (r'embeddings\.patch_embedding\.weight', 'conv1.weight'),
        (r'embeddings\.position_embedding\.weight', 'positional_embedding'),
        (r'pre_lay(?:r|er)norm\.(weight|bias)', r'ln_pre.\1'),
        (layer + r'self_attn\.(q|k|v)_proj\.(weight|bias)',
         rb + r'attn.in_proj_\3:\2'),
        (layer + r'self_attn\.out_proj\.(weight|bias)',
         rb + r'attn.out_proj.\2'),
        (layer + r'layer_norm([12])\.(weight|bias)', rb + r'ln_\2.\3'),
        (layer + r'mlp\.fc1\.(weight|bias)', rb + r'mlp.c_fc.\2'),
        (layer + r'mlp\.fc2\.(weight|bias)', rb + r'mlp.c_proj.\2'),
        (r'post_layernorm\.(weight|bias)', r'ln_post.\1'),
    ]


def timm_clip_rows():
    """timm CLIP image towers (``vit_base_patch16_clip_224.openai`` ...:
    a pre-norm ViT with ``norm_pre``) -> ``CLIPViTExpert``. The fused
    ``qkv`` is OpenAI's ``in_proj`` as it is; ``cls_token`` (1, 1, D) and
    ``pos_embed`` (1, 1+N, D) lose their leading singleton axes."""
    blk = r'blocks\.(\d+)\.'
    rb = r'transformer.resblocks.\1.'
    return [
        (r'cls_token', 'class_embedding'),
        (r'pos_embed', 'positional_embedding'),
        (r'patch_embed\.proj\.weight', 'conv1.weight'),
        (r'norm_pre\.(weight|bias)', r'ln_pre.\1'),
        (blk + r'norm([12])\.(weight|bias)', rb + r'ln_\2.\3'),
        (blk + r'attn\.qkv\.(weight|bias)', rb + r'attn.in_proj_\2'),
        (blk + r'attn\.proj\.(weight|bias)', rb + r'attn.out_proj.\2'),
        (blk + r'mlp\.fc1\.(weight|bias)', rb + r'mlp.c_fc.\2'),
        (blk + r'mlp\.fc2\.(weight|bias)', rb + r'mlp.c_proj.\2'),
        (r'norm\.(weight|bias)', r'ln_post.\1'),
    ]


def mmaction_vit_rows():
    """MMAction2's ``VisionTransformer`` backbone (``vit_mae.py``, its
    VideoMAE models; ``backbone.`` stripped) -> ``VideoMAEExpert``: the
    patch embedding is ``projection`` and the MLP an mmcv ``FFN``."""
    blk = r'blocks\.(\d+)\.'
    return [
        (r'patch_embed\.projection\.(weight|bias)', r'patch_embed.proj.\1'),
        (blk + r'(norm1|norm2)\.(weight|bias)', r'blocks.\1.\2.\3'),
        (blk + r'attn\.(qkv\.weight|q_bias|v_bias|proj\.weight|proj\.bias)',
         r'blocks.\1.attn.\2'),
        (blk + r'mlp\.layers\.0\.0\.(weight|bias)', r'blocks.\1.mlp.fc1.\2'),
        (blk + r'mlp\.layers\.1\.(weight|bias)', r'blocks.\1.mlp.fc2.\2'),
        (r'fc_norm\.(weight|bias)', r'fc_norm.\1'),
    ]


_PART_ORDER = {'q': 0, 'query': 0, 'k': 1, 'key': 1, 'v': 2, 'value': 2}


def fuse_parts(state, what='checkpoint'):
    """Join the ``KEY:q`` / ``KEY:k`` / ``KEY:v`` entries a table produced
    into one ``KEY`` tensor (q;k;v along dim 0, nn.MultiheadAttention's and
    timm's packing). A missing third is an error naming the key."""
    out, groups = {}, {}
    for k, v in state.items():
        base, sep, part = k.rpartition(':')
        if sep and part in _PART_ORDER:
            groups.setdefault(base, {})[_PART_ORDER[part]] = v
        else:
            out[k] = v
    for base, parts in groups.items():
        if sorted(parts) != [0, 1, 2]:
            have = ''.join('qkv'[i] for i in sorted(parts))
            raise ValueError(f'{what}: {base} needs query, key and value '
                             f'tensors; the file has only {have}')
        out[base] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


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
