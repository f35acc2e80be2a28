"""Ablation switches (issue 14): the authors' extended CAST model
(joohyun7u/CA2ST, models/bidir_modeling_crossattn.py) as configurations of
ours, link directions / order / bottleneck, the CASTHead options and the
configs/ablations recipes.

The authors' model is rebuilt here as a small functional reference from a
state dict with their key names (written out below from their module
layout, not taken from our converter), so every switch combination is
checked end to end: constructor switches -> our config
(``ablation_model_cfg``) -> their checkpoint through the converter users run
-> the same outputs.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from cast_mmaction.checkpoints import convert_official, detect_kind, load_official
from cast_mmaction.models.layers import sincos_table
from cast_mmaction.parity import check_dump
from cast_mmaction.parity.cast_ablation import (ablation_model_cfg,
                                                single_expert_cfg)
from cast_mmaction.utils import build_model
from conftest import shared_fixture

TINY = dict(img_size=32, patch_size=16, embed_dim=32, depth=3, num_heads=2,
            mlp_ratio=4, qkv_bias=True, all_frames=4, tubelet_size=2,
            num_classes=5)


# -- the authors' layout and forward, as a reference ------------------------
def _switches(a):
    a = dict(dict(CA=0, late_fusion=0, use_Adapter=True, use_SA=True,
                  use_MLP=True, clip_only=False, vmae_only=False,
                  composition=False, down_ratio=2), **a)
    layers = []
    for i in range(a['depth']):
        fusion = i >= a['late_fusion']
        layers.append(dict(
            sa=a['use_SA'] if fusion else True,
            mlp=a['use_MLP'] if fusion else True,
            adapter=True if fusion else a['use_Adapter'],
            link=fusion and i >= a['CA']))
    return a, layers


def authors_state(args, seed=0):
    """A random state dict with the key names and shapes of the authors'
    STCrossTransformer for ``args`` (their Block: SA modules only with
    use_SA, their adapters only with use_Adapter, B-CAST only in CA layers
    at or after late_fusion, MLP modules only with use_MLP)."""
    a, layers = _switches(args)
    D, p, tub = a['embed_dim'], a['patch_size'], a['tubelet_size']
    g = a['img_size'] // p
    N, T = g * g, a['all_frames'] // 2
    d, H = D // a['down_ratio'], int(D * a['mlp_ratio'])
    shapes = {'clip_class_embedding': (D, ),
              'clip_positional_embedding': (N + 1, D),
              'patch_embed.proj.weight': (D, 3, tub, p, p),
              'patch_embed.proj.bias': (D, ), 'clip_conv1.weight': (D, 3, p, p)}

    def lin(name, o, i):
        shapes[name + '.weight'], shapes[name + '.bias'] = (o, i), (o, )

    def norm(name, n=D):
        shapes[name + '.weight'], shapes[name + '.bias'] = (n, ), (n, )

    def adapter(name):
        lin(name + '.D_fc1', D // 4, D)
        lin(name + '.D_fc2', D, D // 4)

    norm('clip_ln_pre')
    for i, lyr in enumerate(layers):
        b = f'blocks.{i}.'
        if lyr['sa']:
            norm(b + 'clip_ln_1')
            shapes[b + 'clip_attn.in_proj_weight'] = (3 * D, D)
            shapes[b + 'clip_attn.in_proj_bias'] = (3 * D, )
            lin(b + 'clip_attn.out_proj', D, D)
            norm(b + 'norm1')
            shapes[b + 'attn.qkv.weight'] = (3 * D, D)
            shapes[b + 'attn.q_bias'] = shapes[b + 'attn.v_bias'] = (D, )
            lin(b + 'attn.proj', D, D)
            if lyr['adapter']:
                adapter(b + 'S_Adapter')
                adapter(b + 'T_Adapter')
        if lyr['link']:
            for s in 'st':
                lin(b + f'cross_{s}_down', d, D)
                norm(b + f'ln_{s}_cross', d)
                lin(b + f'cross_{s}_up', D, d)
            for att, pos, n in (('t2s', 'time', T), ('s2t', 'space', N)):
                c = b + f'{att}_cross.'
                shapes[c + f'clip_{pos}_pos'] = (n, d)
                shapes[c + f'vmae_{pos}_pos'] = (n, d)
                shapes[c + f'{att}_q.weight'] = (d, d)
                shapes[c + f'{att}_q_bias'] = (d, )
                shapes[c + f'{att}_kv.weight'] = (2 * d, d)
                shapes[c + f'{att}_kv_bias'] = (2 * d, )
                lin(c + 't2s_proj', d, d)
        if lyr['mlp']:
            norm(b + 'clip_ln_2')
            lin(b + 'clip_mlp.c_fc', H, D)
            lin(b + 'clip_mlp.c_proj', D, H)
            norm(b + 'norm2')
            lin(b + 'mlp.fc1', H, D)
            lin(b + 'mlp.fc2', D, H)
            if lyr['adapter']:
                adapter(b + 'S_MLP_Adapter')
                adapter(b + 'T_MLP_Adapter')
    norm('clip_ln_post')
    norm('vmae_fc_norm')
    adapter('noun_last_Adapter')
    adapter('verb_last_Adapter')
    if a['composition']:
        lin('head_verb', 97, D)
        lin('head_noun', 300, D)
    else:
        lin('head', a['num_classes'], D)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in shapes.items():
        x = torch.randn(shape, generator=gen)
        is_norm = any(n in k for n in ('ln_', 'norm')) and len(shape) == 1
        state[k] = 1 + 0.1 * x if is_norm and k.endswith('weight') else (
            0.2 * x)
    return state


def _heads(x, h):
    b, n, c = x.shape
    return x.reshape(b, n, h, c // h).transpose(1, 2)


def _attend(q, k, v, h):
    q, k, v = _heads(q, h), _heads(k, h), _heads(v, h)
    w = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    out = w.softmax(-1) @ v
    return out.transpose(1, 2).flatten(2)


def authors_forward(sd, args, x):
    """Their forward in eval mode, written from their module semantics."""
    a, layers = _switches(args)
    h = a['num_heads']
    B = x.shape[0]
    p, tub = a['patch_size'], a['tubelet_size']

    def ln(t, k, eps):
        return F.layer_norm(t, t.shape[-1:], sd[k + '.weight'],
                            sd[k + '.bias'], eps)

    def lin(t, k):
        return F.linear(t, sd[k + '.weight'], sd.get(k + '.bias'))

    def adapter(t, k, skip):
        y = lin(F.gelu(lin(t, k + '.D_fc1')), k + '.D_fc2')
        return t + y if skip else y

    frames = x[:, :, 1::2]
    T = frames.shape[2]
    s = F.conv2d(frames.transpose(1, 2).flatten(0, 1), sd['clip_conv1.weight'],
                 stride=p).flatten(2).transpose(1, 2)
    cls = sd['clip_class_embedding'].expand(s.shape[0], 1, -1)
    s = ln(torch.cat([cls, s], 1) + sd['clip_positional_embedding'],
           'clip_ln_pre', 1e-5)  # (B*T, 1+N, D)
    N = s.shape[1] - 1
    v = F.conv3d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                 stride=(tub, p, p)).flatten(2).transpose(1, 2)
    v = v + sincos_table(v.shape[1], v.shape[2])  # (B, T*N, D)
    for i, lyr in enumerate(layers):
        b = f'blocks.{i}.'
        if lyr['sa']:
            q, k, vv = F.linear(ln(s, b + 'clip_ln_1', 1e-5),
                                sd[b + 'clip_attn.in_proj_weight'],
                                sd[b + 'clip_attn.in_proj_bias']).chunk(3, -1)
            ys = lin(_attend(q, k, vv, h), b + 'clip_attn.out_proj')
            bias = torch.cat([sd[b + 'attn.q_bias'],
                              torch.zeros_like(sd[b + 'attn.q_bias']),
                              sd[b + 'attn.v_bias']])
            q, k, vv = F.linear(ln(v, b + 'norm1', 1e-6),
                                sd[b + 'attn.qkv.weight'], bias).chunk(3, -1)
            yt = lin(_attend(q, k, vv, h), b + 'attn.proj')
            if lyr['adapter']:
                ys = adapter(ys, b + 'S_Adapter', True)
                yt = adapter(yt, b + 'T_Adapter', True)
            s, v = s + ys, v + yt
        if lyr['link']:
            ns = ln(lin(s, b + 'cross_s_down'), b + 'ln_s_cross', 1e-6)
            nt = ln(lin(v, b + 'cross_t_down'), b + 'ln_t_cross', 1e-6)
            d = ns.shape[-1]
            grid_s = ns[:, 1:].reshape(B, T, N, d)
            grid_t = nt.reshape(B, T, N, d)

            def xattn(c, qi, kvi, att):
                q = F.linear(qi, sd[c + f'{att}_q.weight'], sd[c + f'{att}_q_bias'])
                k, vv = F.linear(kvi, sd[c + f'{att}_kv.weight'],
                                 sd[c + f'{att}_kv_bias']).chunk(2, -1)
                return lin(_attend(q, k, vv, h), c + 't2s_proj')

            # T2S: a CLIP patch attends over time at its position
            c = b + 't2s_cross.'
            qs = grid_s.transpose(1, 2).reshape(B * N, T, d) + sd[c + 'clip_time_pos']
            kt = grid_t.transpose(1, 2).reshape(B * N, T, d) + sd[c + 'vmae_time_pos']
            o = xattn(c, qs, kt, 't2s').reshape(B, N, T, d).transpose(1, 2)
            o = torch.cat([ns[:, :1], o.reshape(B * T, N, d)], 1)
            cs = lin(F.gelu(o), b + 'cross_s_up')
            # S2T: a VideoMAE token attends over the patches of its frame
            c = b + 's2t_cross.'
            qt = grid_t.reshape(B * T, N, d) + sd[c + 'vmae_space_pos']
            ks = grid_s.reshape(B * T, N, d) + sd[c + 'clip_space_pos']
            o = xattn(c, qt, ks, 's2t').reshape(B, T * N, d)
            ct = lin(F.gelu(o), b + 'cross_t_up')
            s, v = s + cs, v + ct
        if lyr['mlp']:
            sn = ln(s, b + 'clip_ln_2', 1e-5)
            u = lin(sn, b + 'clip_mlp.c_fc')
            ys = lin(u * torch.sigmoid(1.702 * u), b + 'clip_mlp.c_proj')
            tn = ln(v, b + 'norm2', 1e-6)
            yt = lin(F.gelu(lin(tn, b + 'mlp.fc1')), b + 'mlp.fc2')
            if lyr['adapter']:
                ys = ys + 0.5 * adapter(sn, b + 'S_MLP_Adapter', False)
                yt = yt + 0.5 * adapter(tn, b + 'T_MLP_Adapter', False)
            s, v = s + ys, v + yt
    fs = ln(s[:, 0].reshape(B, T, -1).mean(1), 'clip_ln_post', 1e-5)
    ft = ln(v.mean(1), 'vmae_fc_norm', 1e-6)
    out = dict(spatial_feature=fs, temporal_feature=ft)
    only = fs if a['clip_only'] else ft if a['vmae_only'] else None
    if a['composition']:
        out['noun'] = lin(fs if only is None else only, 'head_noun')
        out['verb'] = lin(ft if only is None else only, 'head_verb')
    elif only is not None:
        out['cls_score'] = lin(only, 'head')
    else:
        out['cls_score'] = lin((adapter(fs, 'noun_last_Adapter', True) +
                                adapter(ft, 'verb_last_Adapter', True)) / 2,
                               'head')
    return out


def _ours(model, x, args):
    feats = model.backbone(x)
    scores = model.cls_head(feats)
    if args.get('composition'):
        return dict(feats=feats, verb=scores[0], noun=scores[1])
    return dict(feats=feats, cls_score=scores)


# every switch, including the combinations the hidden dumps test
CASES = {
    'all_defaults': {},
    'bcast_from_1': dict(CA=1),
    'bcast_from_2_ek100': dict(CA=2, composition=True),
    'clip_only': dict(CA=3, clip_only=True),
    'vmae_only_ek100': dict(CA=3, vmae_only=True, composition=True),
    'vmae_only_with_links': dict(vmae_only=True),
    'late_fusion': dict(CA=2, late_fusion=2, use_Adapter=False,
                        composition=True),
    'late_fusion_no_sa': dict(late_fusion=1, use_Adapter=False, use_SA=False),
    'late_fusion_no_mlp': dict(late_fusion=1, use_MLP=False, composition=True),
    'fusion_link_only': dict(late_fusion=2, use_SA=False, use_MLP=False),
    'late_fusion_adapters_ca': dict(late_fusion=1, CA=2),
    'other_size': dict(embed_dim=48, num_heads=4, depth=2, down_ratio=4,
                       num_classes=7),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_switches_match_the_authors_semantics(case):
    args = dict(TINY, **CASES[case])
    sd = authors_state(args)
    torch.manual_seed(0)
    x = torch.randn(2, 3, args['all_frames'], args['img_size'],
                    args['img_size'])
    ref = authors_forward(sd, args, x)
    cfg = ablation_model_cfg(args)
    model = build_model(cfg).eval()
    state = {'module': sd}
    assert detect_kind(sd) in ('cast', 'cast_ablation')
    rep = load_official(model, state, [detect_kind(sd)])  # strict
    with torch.no_grad():
        got = _ours(model, x, args)
    for k in ('cls_score', 'verb', 'noun'):
        if k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)
    only = args.get('clip_only') or args.get('vmae_only')
    torch.testing.assert_close(got['feats'][0], ref['spatial_feature'],
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got['feats'][1], ref['temporal_feature'],
                               rtol=1e-4, atol=1e-4)
    if args.get('composition') or only:
        # the stored last adapters are unused and reported
        notes = ' '.join(rep['notes'])
        assert 'cls_head.adapters.0.fc1.weight' in notes, rep['notes']
    # the converter's copy of one tensor of each kind lands in its place
    own = model.state_dict()
    assert torch.equal(own['backbone.experts.clip.conv1.weight'],
                       sd['clip_conv1.weight'])
    for i, lyr in enumerate(_switches(args)[1]):
        has = f'backbone.links.clip_vmae.{i}.down.clip.weight' in own
        assert has == lyr['link'], (i, lyr)
        if lyr['link']:
            assert torch.equal(own[f'backbone.links.clip_vmae.{i}.down.clip.'
                                   f'weight'], sd[f'blocks.{i}.cross_s_down.'
                                                  f'weight'])
        has = (f'backbone.experts.vmae.blocks.{i}.attn.qkv.weight' in own)
        assert has == lyr['sa']


@pytest.mark.parametrize('case', ['clip_only', 'vmae_only_ek100'])
def test_single_expert_model_loads_and_matches(case):
    """What the single-expert recipes build: the other expert is not there,
    the converter drops (and reports) its tower, the outputs are the
    authors'."""
    args = dict(TINY, **CASES[case])
    sd = authors_state(args, seed=3)
    x = torch.randn(1, 3, 4, 32, 32)
    ref = authors_forward(sd, args, x)
    name = 'clip' if args.get('clip_only') else 'vmae'
    model = build_model(single_expert_cfg(ablation_model_cfg(args),
                                          name)).eval()
    assert list(model.backbone.experts) == [name]
    rep = load_official(model, {'module': sd}, ['cast_ablation'])
    other = 'vmae' if name == 'clip' else 'clip'
    assert f'backbone.experts.{other}.' in ' '.join(rep['notes'])
    with torch.no_grad():
        got = _ours(model, x, args)
    feat = ref['spatial_feature' if name == 'clip' else 'temporal_feature']
    torch.testing.assert_close(got['feats'][0], feat, rtol=1e-4, atol=1e-4)
    for k in ('cls_score', 'verb', 'noun'):
        if k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)


def test_converter_detection_and_refusals():
    plain = authors_state(dict(TINY))
    del plain['head.weight']  # whatever head: a uniform layout is 'cast'
    assert detect_kind(plain) == 'cast'
    for case in ('bcast_from_1', 'clip_only', 'late_fusion_no_sa'):
        assert detect_kind(authors_state(dict(TINY, **CASES[case]))) == (
            'cast_ablation')
    # a model with other switches than the checkpoint: a clear error
    sd = authors_state(dict(TINY, **CASES['bcast_from_1']))
    model = build_model(ablation_model_cfg(dict(TINY))).eval()
    with pytest.raises(Exception, match='link layers'):
        load_official(model, sd, ['cast_ablation'])
    with pytest.raises(ValueError, match='unknown switches'):
        ablation_model_cfg(dict(TINY, use_SAA=False))


@pytest.mark.parametrize('name', ['cast_abl_clip_only', 'cast_abl_bcast_from',
                                  'cast_abl_late_fusion'])
def test_ablation_dumps_match(name):
    rows = check_dump(shared_fixture(name))
    assert rows and all(ok for *_, ok in rows), rows
