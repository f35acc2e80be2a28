"""Parity family of the ablation dumps (``cast_abl_*``): the authors'
extended CAST model with its ablation switches (``joohyun7u/CA2ST``,
``models/bidir_modeling_crossattn.py``), whose ``meta.json`` holds the
``constructor_args`` of their ``STCrossTransformer``.

:func:`ablation_model_cfg` maps every switch to our configuration (the
same fields the ``configs/ablations/`` recipes set):

=================  =======================================================
``CA=k``           links only in layers ``max(k, late_fusion)..depth-1``
``late_fusion=f``  layers ``< f``: adapters only with ``use_Adapter``;
                   layers ``>= f``: adapters, and self-attention / MLP
                   branches only with ``use_SA`` / ``use_MLP``
                   (``backbone.attn_layers`` / ``mlp_layers``)
``use_Adapter``    ``backbone.adapter_layers``
``clip_only`` /    the head reads that stream alone, without adapter
``vmae_only``      (``CASTHead(fusion='none', streams=[i])``, or both verb
                   and noun from it); :func:`single_expert_cfg` is the
                   model without the other expert
single-label head  ``CASTHead(fusion='mean')``: ``fc((A_s(s) + A_t(t)) / 2)``
                   with skip-connected adapters
composition        ``CASTVerbNounHead`` 97 verbs (temporal) / 300 nouns
                   (spatial); the stored last adapters are unused
=================  =======================================================

Fixed in that code: CLIP sees frames 1, 3, ... (``[:, :, 1::2]``), its MLP
is 4 x wide (``mlp_ratio`` sizes VideoMAE's only), CLIP LayerNorms eps 1e-5, VideoMAE / link LayerNorms eps 1e-6, MLP adapters
scaled by 0.5.
"""
import copy
import os

from ..checkpoints import load_official
from .cast import authors_experts

#: a checkpoint with the uniform CAST layout (every switch at its default but
#: the head) is a 'cast' one, the others 'cast_ablation'
KINDS = ['cast', 'cast_ablation']
#: the constructor defaults of the authors' STCrossTransformer we read
DEFAULTS = dict(img_size=224, patch_size=16, vmae_patch_size=None,
                embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                down_ratio=2, qkv_bias=False, num_classes=1000,
                all_frames=16, tubelet_size=2, composition=False,
                late_fusion=0, CA=0, use_Adapter=True, use_SA=True,
                use_MLP=True, clip_only=False, vmae_only=False,
                audio_enabled=False, drop_path_rate=0.0)
#: arguments without effect on the eval forward (initialisation, dropout,
#: unused by that code)
INERT = ('init_scale', 'drop_rate', 'attn_drop_rate', 'head_drop_rate',
         'init_values', 'use_mean_pooling', 'fusion_method', 'audio_patch',
         'pretrained_cfg', 'pretrained_cfg_overlay')
#: arguments mapped only at the value the released models use
FIXED = dict(in_chans=3, qk_scale=None, use_learnable_pos_emb=False)


def ablation_model_cfg(args, model_cfg=None):
    """The authors' ``constructor_args`` -> our recognizer config (the CAST
    preset, or ``model_cfg``, with the sizes and switches set)."""
    from ..models.presets import cast_recognizer_cfg, set_sizes
    unknown = set(args) - set(DEFAULTS) - set(INERT) - set(FIXED)
    if unknown:
        raise ValueError(f'constructor_args: unknown switches '
                         f'{sorted(unknown)}; known: {sorted(DEFAULTS)}')
    for k, v in FIXED.items():
        if args.get(k, v) != v:
            raise ValueError(f'constructor_args.{k}={args[k]!r} is not '
                             f'mapped (only {v!r})')
    a = dict(DEFAULTS, **args)
    if a['audio_enabled']:
        raise ValueError('constructor_args.audio_enabled: the audio variant '
                         'of this code is not mapped (use the CA2ST family)')
    other_patch = a['vmae_patch_size'] not in (None, a['patch_size'])
    if other_patch and max(a['CA'], a['late_fusion']) < a['depth']:
        # the links join token grids; the authors' B-CAST tables assume
        # one 14 x 14 grid for both too
        raise ValueError('constructor_args.vmae_patch_size differs from '
                         'patch_size with B-CAST layers: the experts need '
                         'the same patch grid where they are linked')
    if a['clip_only'] and a['vmae_only']:
        raise ValueError('constructor_args: clip_only and vmae_only are both '
                         'set')
    comp = bool(a['composition'])
    cfg = copy.deepcopy(model_cfg) if model_cfg is not None else (
        cast_recognizer_cfg(composition=comp))
    depth, lf = a['depth'], a['late_fusion']
    set_sizes(cfg, a['embed_dim'], depth, a['num_heads'], a['all_frames'],
              a['img_size'], a['patch_size'], a['tubelet_size'],
              a['down_ratio'], float(a['mlp_ratio']), a['drop_path_rate'])
    bb = cfg['backbone']
    bb.pop('init_cfg', None)
    clip, vmae = bb['experts']['clip'], bb['experts']['vmae']
    clip.update(frame_start=1, frame_step=2, eps=1e-5, post_norm_eps=1e-5,
                pretrained=None)
    vmae.update(eps=1e-6, pretrained=None)
    authors_experts(bb['experts'], a['qkv_bias'])
    if other_patch:  # the ViT-L entry points: CLIP 14, VideoMAE 16
        vmae['patch_size'] = a['vmae_patch_size']
    bb.update(link_eps=1e-6, mlp_adapter_scale=0.5)
    fusion = list(range(lf, depth))
    link_layers = list(range(max(a['CA'], lf), depth))
    if link_layers:
        bb['links'][0]['layers'] = link_layers
    else:
        bb['links'] = []
    bb['adapter_layers'] = None if a['use_Adapter'] else fusion
    bb['attn_layers'] = None if a['use_SA'] else list(range(min(lf, depth)))
    bb['mlp_layers'] = None if a['use_MLP'] else list(range(min(lf, depth)))
    only = 0 if a['clip_only'] else 1 if a['vmae_only'] else None
    head = cfg['cls_head']
    head['in_channels'] = a['embed_dim']
    if comp:
        if head['type'] != 'CASTVerbNounHead':
            raise ValueError(f'a verb/noun model needs a CASTVerbNounHead, '
                             f'the config has {head["type"]}')
        head.update(num_verbs=97, num_nouns=300,
                    noun_stream=0 if only is None else only,
                    verb_stream=1 if only is None else only)
    else:
        if head['type'] != 'CASTHead':
            raise ValueError(f'a single-label model needs a CASTHead, the '
                             f'config has {head["type"]}')
        head.update(num_classes=a['num_classes'])
        if only is None:
            head.update(fusion='mean', streams=None)
        else:
            head.update(fusion='none', streams=[only])
    return cfg


def single_expert_cfg(cfg, name):
    """A two-expert config with the head on one stream and no link -> the
    model with expert ``name`` alone (the single-expert baselines)."""
    cfg = copy.deepcopy(cfg)
    bb = cfg['backbone']
    if bb.get('links'):
        raise ValueError('the head reads one stream of a model with links: '
                         'that stream depends on the other expert')
    bb['experts'] = {name: bb['experts'][name]}
    head = cfg['cls_head']
    if head['type'] == 'CASTHead':
        head.update(num_streams=1, streams=[0])
    else:
        head.update(verb_stream=0, noun_stream=0)
    return cfg


def build_cast_ablation(meta, dump_dir, model_cfg=None):
    from ..utils import build_model

    args = meta['constructor_args']
    ckpt = os.path.join(dump_dir, 'official_checkpoint.pth')
    cfg = ablation_model_cfg(args, model_cfg)
    model = build_model(cfg).eval()
    load_official(model, ckpt, KINDS)
    only = 'clip' if args.get('clip_only') else (
        'vmae' if args.get('vmae_only') else None)
    single = None
    if only and not cfg['backbone']['links']:
        # what the single-expert recipes build, from the same checkpoint
        single = build_model(single_expert_cfg(cfg, only)).eval()
        load_official(single, ckpt, KINDS)
    comp = bool(args.get('composition'))

    def run(inputs):
        feats = model.backbone(inputs)
        out = dict(spatial_feature=feats[0], temporal_feature=feats[1])
        scores = model.cls_head(feats)
        if single is not None:
            feat = single.backbone(inputs)
            out['spatial_feature' if only == 'clip' else
                'temporal_feature'] = feat[0]
            scores = single.cls_head(feat)
        if comp:
            out['verb'], out['noun'] = scores
        else:
            out['cls_score'] = scores
        return out

    run.models = tuple(m for m in (model, single) if m is not None)
    return run


__all__ = ['ablation_model_cfg', 'single_expert_cfg', 'build_cast_ablation']
