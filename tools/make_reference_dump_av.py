#!/usr/bin/env python
"""Make one audio-visual reference dump (CAVA / CA2ST) with the authors' code
(joohyun7u/CA2ST @479a06d, models/ast_clip_cast.py and models/ast_Bsquare.py,
imported at run time from the checkout --ca2st-repo names; nothing of it is
copied here), in the format of the shipped ../shared/fixtures/{cava,ca2st}_*
dumps, whose meta.json serve as templates (--fixtures).

    python tools/make_reference_dump_av.py SPEC_JSON OUT_DIR --ca2st-repo CA2ST
    python tools/make_reference_dump_av.py --verify SHIPPED_DUMP_DIR --ca2st-repo CA2ST

SPEC: {"family": "cava"|"ca2st", "seed": int, "batch": int,
       "entry_point": str (text only), "args": {constructor overrides}}
The constructor args are the template's constructor_args_all (shipped meta of
the same family / switch set) updated with "args"; everything is passed to
STCrossTransformer explicitly (norm_layer = LayerNorm eps 1e-6).

Recipe (same as tools/make_reference_dump.py and the shipped AV dumps):
torch.manual_seed(seed); build; every float param (named_parameters order,
tied tensors once) <- LayerNorm weight 1+0.1N, else 0.05N, float64 draws from
Generator(seed), stored fp32; eval; float64 on an fp16-rounded input.
Input: Generator(seed+1): video randn(B,3,F,224,224), spec randn(B,3,T,Fmel),
then per item f0=randint(0,60), u=rand(): idx=[f0/30-u/2, +4 s, (f0+4i)/30].
"""
import copy
import importlib.util
import json
import os
import sys
from functools import partial

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference_dump import randomise as _randomise  # noqa: E402

SRC = None  # the CA2ST checkout (--ca2st-repo)
FILES = {'cava': 'models/ast_clip_cast.py', 'ca2st': 'models/ast_Bsquare.py'}
FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'shared', 'fixtures')  # --fixtures
RAND_DTYPE = torch.float32


def load(family):
    sys.path.insert(0, SRC)
    import timm.layers.drop
    # timm >= 1.0 moved timm.models.layers.drop to timm.layers.drop
    sys.modules.setdefault('timm.models.layers.drop', timm.layers.drop)
    name = f'authors_{family}'
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(SRC, FILES[family]))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    import io, contextlib
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(mod)
    # their LayerNorm subclass has no float64 branch
    mod.LayerNorm.forward = lambda self, x: nn.LayerNorm.forward(self, x)
    return mod


def randomise(model, seed):
    # the shipped AV dumps draw float32 (the CAST family's float64)
    _randomise(model, seed, RAND_DTYPE)


def make_inputs(seed, batch, frames, tdim, fdim, img=224):
    g = torch.Generator().manual_seed(seed + 1)
    video = torch.randn(batch, 3, frames, img, img, generator=g).to(
        torch.float16)
    spec = torch.randn(batch, 3, tdim, fdim, generator=g).to(torch.float16)
    rows = []
    for _ in range(batch):
        f0 = torch.randint(0, 60, (1, ), generator=g).item()
        u = torch.rand(1, generator=g).item()
        start = f0 / 30 - u / 2
        rows.append([start, start + 4.0] +
                    [(f0 + 4 * i) / 30 for i in range(frames)])
    idx = torch.tensor(rows, dtype=torch.float64).to(torch.float16)
    return dict(video=video, spec=spec, idx=idx)


def template(family, a):
    if family == 'cava':
        name = 'cava_single_rev' if a.get('time_encoding') else 'cava_single'
    elif a.get('composition'):
        name = 'ca2st_composition'
    else:
        name = 'ca2st_single_rev' if a.get('time_encoding') else \
            'ca2st_single'
    with open(os.path.join(FIX, name, 'meta.json')) as f:
        return json.load(f)


def build(family, ctor, seed):
    mod = load(family)
    kw = {k: v for k, v in ctor.items()
          if k not in ('pretrained_cfg', 'pretrained_cfg_overlay')}
    kw['norm_layer'] = partial(nn.LayerNorm, eps=1e-6)
    torch.manual_seed(seed)
    import io, contextlib
    with contextlib.redirect_stdout(io.StringIO()):
        model = mod.STCrossTransformer(**kw)
    randomise(model, seed)
    return model.eval()


def run(model, family, ctor, inp, dtype):
    """One forward; returns the named outputs of the shipped dumps."""
    m = model.to(dtype)
    video, spec = inp['video'].to(dtype), inp['spec'].to(dtype)
    rec = {}
    orig = m.forward_features

    def ff(*a, **k):
        r = orig(*a, **k)
        rec['ff'] = r
        return r

    m.forward_features = ff
    hooks = []
    te = bool(ctor.get('time_encoding')) and not ctor.get(
        'pre_time_encoding')
    if te or ctor.get('pre_time_encoding'):
        for name in ('time_mlp', 'audio_time_mlp'):
            if hasattr(m, name):
                hooks.append(getattr(m, name).register_forward_hook(
                    lambda mod, i, o, name=name: rec.__setitem__(name, o)))
    kw = dict(spec=spec)
    if te or ctor.get('pre_time_encoding'):
        kw['idx'] = inp['idx'].to(dtype)
    try:
        with torch.no_grad():
            out = m(video, **kw)
    finally:
        for h in hooks:
            h.remove()
        del m.forward_features
    res = {}
    if ctor.get('composition'):
        res['noun'], res['verb'] = out[0], out[1]
    else:
        res['cls_score'] = out
    f = rec['ff']
    if family == 'cava':
        res['audio_feature'], res['spatial_feature'] = f[0], f[1]
    else:
        res['spatial_feature'], res['temporal_feature'], \
            res['audio_feature'] = f[0], f[1], f[2]
    if 'time_mlp' in rec:
        if 'audio_time_mlp' in rec:
            res['audio_time_mlp_out'] = rec['audio_time_mlp']
            res['video_time_mlp_out'] = rec['time_mlp']
        else:  # one shared MLP on [segments per column; frame pairs]
            tdim = model.spec_shape[1]
            res['audio_time_mlp_out'] = rec['time_mlp'][:, :tdim]
            res['video_time_mlp_out'] = rec['time_mlp'][:, tdim:]
    return res


def tied(model):
    groups = {}
    for k, v in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(v), []).append(k)
    return [g for g in groups.values() if len(g) > 1]


def make_meta(family, spec, ctor, model, expected, fp32_err, batch, seed):
    meta = copy.deepcopy(template(family, ctor))
    meta['entry_point'] = spec.get('entry_point', meta['entry_point'])
    meta['constructor_args_all'] = ctor
    base = template(family, ctor)['constructor_args_all']
    meta['size_overrides_vs_entry_point'] = {
        k: v for k, v in ctor.items()
        if k in ('embed_dim', 'audio_dim', 'output_audio_dim', 'depth',
                 'num_heads', 'audio_num_heads', 'CA')}
    meta['changed_vs_shipped_template'] = {
        k: v for k, v in ctor.items() if base.get(k) != v}
    meta['run_script_model_args'].update(
        {k: ctor[k] for k in meta['run_script_model_args'] if k in ctor})
    fdim, tdim = model.spec_shape
    depth, ca = ctor['depth'], ctor['CA']
    d = meta['derived']
    d.update(spec_shape_fdim_tdim=[fdim, tdim], audio_patch=fdim * tdim,
             audio_tokens=fdim * tdim + 2,
             video_patch=(ctor['img_size'] // ctor['patch_size']) ** 2,
             clip_frames_used=f'x[:, :, 1::2] ({ctor["all_frames"] // 2} of '
                              f'{ctor["all_frames"]} frames)',
             cross_attn_dim=ctor['embed_dim'] // ctor['down_ratio'],
             cross_attn_heads=ctor['num_heads'])
    late = ctor.get('late_fusion', 0)
    if family == 'cava':
        d['bca_layers'] = [i for i in range(depth) if i >= ca and i >= late]
    else:
        d['cross_attn_heads'] = ctor['audio_num_heads']
        d['st_cross_attn_heads'] = ctor['num_heads']
        cal = [i for i in range(ca, depth) if i >= late]
        d['audio_bca_layers'] = cal
        d['st_bca_layers'] = [i for i in range(depth) if i >= late and (
            not ctor.get('CA_eq') or i in cal)]
        d['bcast_method'] = ctor.get('bcast_method') or 'seq'
    ties = tied(model)
    if ties:
        meta['tied_parameters'] = ties
        meta['tied_parameters_note'] = (
            'bcast_share=True: the A-S / A-T B-CA reuse the down/up Linear '
            'modules of the S-T B-CA (and A-S reuses A-T audio down/up). The '
            'state dict lists each under every name with identical values; '
            'they are ONE tensor.')
    else:
        meta.pop('tied_parameters', None)
        meta.pop('tied_parameters_note', None)
    comp = bool(ctor.get('composition'))
    meta['num_classes'] = None if comp else ctor['num_classes']
    if comp:
        meta['verb_classes'], meta['noun_classes'] = 97, 300
    else:
        meta.pop('verb_classes', None)
        meta.pop('noun_classes', None)
    meta['batch'], meta['seed'] = batch, seed
    meta['input']['spec'] = (
        f'(B, 3, T={ctor["input_tdim"]}, F={ctor["input_fdim"]}) synthetic '
        f'N(0,1); the model uses channel 0 only, transposed to (B,1,F,T), '
        f'Conv2d(1,D,16x16,stride ({ctor["fstride"]},{ctor["tstride"]}))')
    meta['input']['video'] = (
        f'(B, 3, {ctor["all_frames"]}, {ctor["img_size"]}, '
        f'{ctor["img_size"]}) synthetic N(0,1); CLIP uses frames 1::2')
    te = bool(ctor.get('time_encoding')) or bool(
        ctor.get('pre_time_encoding'))
    if te:
        meta['input']['forward_call'] = 'model(video, spec=spec, idx=idx)'
        meta['input']['idx'] = (
            f'(B, {2 + ctor["all_frames"]}) seconds: [audio_start, '
            f'audio_end, t_0 .. t_{ctor["all_frames"] - 1}] (see the shipped '
            f'_rev dumps)')
    else:
        meta['input'].pop('idx', None)
        meta['input']['forward_call'] = 'model(video, spec=spec)'
    outs = dict(meta['outputs'])
    for k in list(outs):
        if k not in expected:
            outs.pop(k)
    for k in expected:
        outs.setdefault(k, {
            'noun': '(B, 300) head_noun(...)', 'verb': '(B, 97) head_verb(...)',
            'cls_score': '(B, num_classes)',
            'audio_time_mlp_out': '(B, t_dim, D/down_ratio)',
            'video_time_mlp_out': '(B, frames/2, D/down_ratio)'}.get(k, k))
    meta['outputs'] = outs
    meta['fp32_vs_fp64_max_abs_diff'] = fp32_err
    meta['sanity'] = {'input_dependence_max_abs_diff_between_batch_items': {
        k: float((v[0] - v[-1]).abs().max()) for k, v in expected.items()}}
    meta['generated_by'] = ('tools/make_reference_dump_av.py (the authors\' '
                            'modules at run time; not a shipped dump)')
    return meta


def make(spec, out_dir):
    family, seed, batch = spec['family'], spec['seed'], spec['batch']
    base = None
    ctor = dict(template(family, spec['args'])['constructor_args_all'])
    ctor.update(spec['args'])
    model = build(family, ctor, seed)
    inp = make_inputs(seed, batch, ctor['all_frames'], ctor['input_tdim'],
                      ctor['input_fdim'], ctor['img_size'])
    if not (ctor.get('time_encoding') or ctor.get('pre_time_encoding')):
        inp.pop('idx')
    state = {k: v.detach().clone().float()
             for k, v in model.state_dict().items()}
    ref = run(model, family, ctor, inp, torch.float64)
    got = run(model, family, ctor, inp, torch.float32)
    fp32_err = {k: float((got[k].double() - ref[k]).abs().max())
                for k in ref}
    expected = {k: v.float() for k, v in ref.items()}
    meta = make_meta(family, spec, ctor, model, expected, fp32_err, batch,
                     seed)
    os.makedirs(out_dir, exist_ok=True)
    torch.save({'module': state}, os.path.join(out_dir,
                                               'official_checkpoint.pth'))
    torch.save(inp, os.path.join(out_dir, 'input.pt'))
    torch.save(expected, os.path.join(out_dir, 'expected.pt'))
    with open(os.path.join(out_dir, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    json.dump(spec, open(os.path.join(out_dir, 'spec.json'), 'w'), indent=1)
    print(json.dumps({'dump': out_dir, 'fp32_err': max(fp32_err.values()),
                      'outputs': {k: [list(v.shape), float(v.abs().max())]
                                  for k, v in expected.items()}}))


def verify(dump):
    meta = json.load(open(os.path.join(dump, 'meta.json')))
    family = 'cava' if 'CAVA' in meta['model'] else 'ca2st'
    ctor = meta['constructor_args_all']
    seed, batch = meta['seed'], meta['batch']
    model = build(family, ctor, seed)
    ship = torch.load(os.path.join(dump, 'official_checkpoint.pth'))['module']
    state = model.state_dict()
    assert list(ship) == list(state), 'key order / set differs'
    ck = max(float((ship[k].float() - state[k].float()).abs().max())
             for k in ship if ship[k].is_floating_point())
    inp_ship = torch.load(os.path.join(dump, 'input.pt'))
    inp = make_inputs(seed, batch, ctor['all_frames'], ctor['input_tdim'],
                      ctor['input_fdim'], ctor['img_size'])
    same_in = {k: torch.equal(inp[k], inp_ship[k]) for k in inp_ship}
    exp = torch.load(os.path.join(dump, 'expected.pt'))
    ref = run(model, family, ctor, inp_ship, torch.float64)
    diff = {k: float((ref[k].float() - exp[k]).abs().max()) for k in exp}
    missing = sorted(set(exp) ^ set(ref))
    print(json.dumps({'dump': dump, 'checkpoint_max_abs_diff': ck,
                      'inputs_identical': same_in,
                      'expected_max_abs_diff': diff,
                      'output_name_mismatch': missing}))


def main(argv=None):
    import argparse
    global SRC, FIX
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('paths', nargs='+', help='SPEC_JSON OUT_DIR, or with '
                    '--verify the shipped dump folders')
    ap.add_argument('--verify', action='store_true')
    ap.add_argument('--ca2st-repo', required=True,
                    help='checkout of joohyun7u/CA2ST (479a06d)')
    ap.add_argument('--fixtures', default=FIX,
                    help='the shipped dumps (templates of meta.json)')
    args = ap.parse_args(argv)
    SRC, FIX = args.ca2st_repo, args.fixtures
    for f in FILES.values():
        if not os.path.isfile(os.path.join(SRC, f)):
            ap.error(f'{os.path.join(SRC, f)} not found: give the CA2ST '
                     f'checkout')
    if args.verify:
        for d in args.paths:
            verify(d)
    elif len(args.paths) != 2:
        ap.error('give SPEC_JSON OUT_DIR')
    else:
        with open(args.paths[0]) as f:
            make(json.load(f), args.paths[1])
    return 0


if __name__ == '__main__':
    sys.exit(main())
