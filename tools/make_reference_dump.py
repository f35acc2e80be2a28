#!/usr/bin/env python
"""Make a reference dump with the authors' own code, in the format of
``../shared/fixtures`` (``meta.json``, ``official_checkpoint.pth``,
``input.pt``, ``expected.pt``), for sizes and switches the shipped dumps do
not cover; then check it with ``tools/check_parity.py``.

    python tools/make_reference_dump.py tools/parity_specs/cast_w96h3d3_mlp2_single.json \\
        /tmp/dumps/cast_w96h3d3_mlp2_single --cast-repo /path/to/CAST
    python tools/check_parity.py /tmp/dumps/*

A SPEC is JSON: ``family`` (``cast``: ``STCrossTransformer`` of
KHU-VLL/CAST, given by ``--cast-repo``; ``abl``: the one with the ablation
switches of joohyun7u/CA2ST, ``--ca2st-repo``), ``seed``, ``batch``,
``args`` (the constructor's keyword arguments) and, for ``abl``, an
``ablation`` text. The model is the authors' module imported from the
checkout at run time (nothing of it is copied here), every floating-point
parameter drawn at random (LayerNorm weights 1 + 0.1 N(0, 1), the rest
0.05 N(0, 1), stored in fp32: zero-initialised adapters and
cross-attention act), run in eval mode in float64 on an fp16-rounded input;
``meta.json`` is written as the shipped dumps of the family write it.
``tools/parity_specs/`` holds the specs checked so far (docs/cast.md).
"""
import argparse
import importlib.util
import json
import os
import sys
from functools import partial

import torch
import torch.nn as nn

#: the module of each family, relative to its checkout
MODULE = 'models/bidir_modeling_crossattn.py'
#: the ablation family's meta.json describes the switches as the shipped
#: cast_abl_* dumps do
ABL_SEMANTICS = {
    'CA': 'B-CAST in layers CA..depth-1 that are also >= late_fusion',
    'late_fusion': 'layers < late_fusion: both experts without B-CAST, '
                   'adapters only if use_Adapter; layers >= late_fusion: '
                   'adapters always, self-attention branches only if '
                   'use_SA, MLP branches only if use_MLP (branches absent '
                   'from the checkpoint when off)',
    'clip_only / vmae_only': 'the head(s) read that pooled stream alone (no '
                             'adapters before the head)',
}


def load_module(repo, family):
    path = os.path.join(repo, MODULE)
    if not os.path.isfile(path):
        sys.exit(f'error: {path} not found: give the checkout of the '
                 f'{family} family\'s repository')
    sys.path.insert(0, repo)
    spec = importlib.util.spec_from_file_location(f'authors_{family}', path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    # their LayerNorm subclass has no float64 branch (its result unbound);
    # in fp16 / fp32 it is nn.LayerNorm's forward, so use that for float64
    mod.LayerNorm.forward = lambda self, x: nn.LayerNorm.forward(self, x)
    return mod


def randomise(model, seed, draw_dtype=torch.float64):
    """Every floating-point parameter in ``named_parameters`` order:
    LayerNorm weights 1 + 0.1 N(0, 1), the rest 0.05 N(0, 1), drawn in
    ``draw_dtype`` from one generator seeded with ``seed`` (the shipped
    CAST-family dumps draw float64, the audio-visual ones float32) and
    stored in fp32."""
    gen = torch.Generator().manual_seed(seed)
    norms = {f'{n}.weight' for n, m in model.named_modules()
             if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point():
                r = torch.randn(p.shape, generator=gen, dtype=draw_dtype)
                p.copy_((1 + 0.1 * r if name in norms else 0.05 * r).float())


def outputs(model, x, composition):
    spatial, temporal = model.forward_features(x)
    scores = model(x)
    out = dict(noun=scores[0], verb=scores[1]) if composition else dict(
        cls_score=scores)
    return dict(out, spatial_feature=spatial, temporal_feature=temporal)


def cast_meta(args, comp, batch, seed):
    meta = dict(
        model='official CAST STCrossTransformer (KHU-VLL/CAST '
              'models/bidir_modeling_crossattn.py)',
        composition=comp, embed_dim=args['embed_dim'], depth=args['depth'],
        num_heads=args['num_heads'], num_frames=args.get('all_frames', 16),
        img_size=args.get('img_size', 224),
        patch_size=args.get('patch_size', 16),
        tubelet_size=args.get('tubelet_size', 2),
        down_ratio=args.get('down_ratio', 2),
        mlp_ratio=args.get('mlp_ratio', 4),
        num_classes=None if comp else args['num_classes'],
        verb_classes=97 if comp else None, noun_classes=300 if comp else None,
        batch=batch, seed=seed, reference_dtype='float64', eval_mode=True)
    if 'qkv_bias' in args:  # only where it is not the entry points' True
        meta['qkv_bias'] = args['qkv_bias']
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('spec', help='the dump\'s JSON spec')
    ap.add_argument('out_dir', help='folder to write the dump into')
    ap.add_argument('--cast-repo', help='checkout of KHU-VLL/CAST (cast '
                    'family; the shipped dumps: 51eb871)')
    ap.add_argument('--ca2st-repo', help='checkout of joohyun7u/CA2ST (abl '
                    'family; the shipped dumps: 479a06d)')
    args = ap.parse_args(argv)
    with open(args.spec) as f:
        spec = json.load(f)
    family = spec.get('family')
    repo = {'cast': args.cast_repo, 'abl': args.ca2st_repo}.get(family, '')
    if family not in ('cast', 'abl'):
        ap.error(f'{args.spec}: family must be cast or abl, got {family!r}')
    if not repo:
        ap.error(f'{args.spec} is of the {family} family: give '
                 f'--{"cast" if family == "cast" else "ca2st"}-repo')
    mod = load_module(repo, family)
    ctor, seed, batch = dict(spec['args']), spec['seed'], spec['batch']
    kw = dict(ctor, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    if family == 'cast':
        kw.setdefault('qkv_bias', True)  # as the bidir_* entry points
    torch.manual_seed(seed)
    model = mod.STCrossTransformer(**kw)
    randomise(model, seed)
    model.eval()
    comp = bool(ctor.get('composition', False))
    frames, size = ctor.get('all_frames', 16), ctor.get('img_size', 224)
    gen = torch.Generator().manual_seed(seed + 1000)
    x16 = torch.randn(batch, 3, frames, size, size,
                      generator=gen).to(torch.float16)
    state = {k: v.detach().clone().float()
             for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = outputs(model.double(), x16.double(), comp)
        fp32 = outputs(model.float(), x16.float(), comp)
    fp32_err = max((fp32[k].double() - ref[k]).abs().max().item()
                   for k in ref)
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save({'module': state},
               os.path.join(args.out_dir, 'official_checkpoint.pth'))
    torch.save(x16, os.path.join(args.out_dir, 'input.pt'))
    torch.save({k: v.float() for k, v in ref.items()},
               os.path.join(args.out_dir, 'expected.pt'))
    if family == 'cast':
        meta = cast_meta(ctor, comp, batch, seed)
    else:
        meta = dict(
            model='authors\' extended CAST STCrossTransformer with ablation '
                  'switches (joohyun7u/CA2ST models/'
                  'bidir_modeling_crossattn.py)',
            ablation=spec.get('ablation', ''), constructor_args=ctor,
            norm_layer='LayerNorm(eps=1e-6)', semantics=ABL_SEMANTICS,
            batch=batch, seed=seed, reference_dtype='float64',
            eval_mode=True, fp32_authors_max_abs_err=fp32_err)
    with open(os.path.join(args.out_dir, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    print(f'{args.out_dir}: {", ".join(sorted(ref))}; the authors\' fp32 '
          f'within {fp32_err:.1e} of their float64')
    return 0


if __name__ == '__main__':
    sys.exit(main())
