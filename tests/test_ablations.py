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
            if a['qkv_bias']:
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
            # heads of d // num_heads channels (their all_head_dim): fewer
            # than d when the heads do not divide the bottleneck
            inner = d // a['num_heads'] * a['num_heads']
            for att, pos, n in (('t2s', 'time', T), ('s2t', 'space', N)):
                c = b + f'{att}_cross.'
                shapes[c + f'clip_{pos}_pos'] = (n, d)
                shapes[c + f'vmae_{pos}_pos'] = (n, d)
                shapes[c + f'{att}_q.weight'] = (inner, d)
                shapes[c + f'{att}_q_bias'] = (inner, )
                shapes[c + f'{att}_kv.weight'] = (2 * inner, d)
                shapes[c + f'{att}_kv_bias'] = (2 * inner, )
                lin(c + 't2s_proj', d, inner)
        if lyr['mlp']:
            norm(b + 'clip_ln_2')
            lin(b + 'clip_mlp.c_fc', 4 * D, D)  # 4 x whatever mlp_ratio
            lin(b + 'clip_mlp.c_proj', D, 4 * D)
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
                              sd[b + 'attn.v_bias']]) if (
                                  b + 'attn.q_bias') in sd else None
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
    # a bottleneck of 16 at 3 heads: heads of 5, projections 16 -> 15 -> 16
    'heads_do_not_divide_the_bottleneck': dict(embed_dim=48, num_heads=3,
                                               down_ratio=3),
    'other_size_vmae_only_from_1': dict(embed_dim=64, num_heads=4, depth=3,
                                        mlp_ratio=2, qkv_bias=False,
                                        all_frames=8, CA=1, vmae_only=True,
                                        composition=True),
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
    with pytest.raises(ValueError, match='use_learnable_pos_emb'):
        ablation_model_cfg(dict(TINY, use_learnable_pos_emb=True))


@pytest.mark.parametrize('name', ['cast_abl_clip_only', 'cast_abl_bcast_from',
                                  'cast_abl_late_fusion'])
def test_ablation_dumps_match(name):
    rows = check_dump(shared_fixture(name))
    assert rows and all(ok for *_, ok in rows), rows


# -- link directions, order, bottleneck --------------------------------------
def _randomise(model, seed=1, only=None):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only is None or only in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def _cast_backbone(depth=2, links=None, **link_kw):
    from cast_mmaction.models.presets import cast_backbone_cfg
    cfg = cast_backbone_cfg(embed_dim=32, depth=depth, num_heads=2,
                            num_frames=4, img_size=32)
    cfg['links'][0].update(link_kw)
    if links is not None:
        cfg['links'] = links
    return build_model(cfg).eval()


def _with_link(no_link, with_link):
    """``with_link`` gets every weight of ``no_link`` and random links."""
    missing = with_link.load_state_dict(no_link.state_dict(), strict=False)
    assert not missing.unexpected_keys
    assert all('links.' in k for k in missing.missing_keys)
    _randomise(with_link, seed=5, only='links.')
    return with_link


@pytest.mark.parametrize('direction,receiver,silent',
                         [('vmae->clip', 0, 1), ('clip->vmae', 1, 0)])
def test_one_way_link_leaves_the_other_stream_as_without_link(
        direction, receiver, silent):
    torch.manual_seed(0)
    plain = _cast_backbone(links=[])
    _randomise(plain, only='adapters')
    linked = _with_link(plain, _cast_backbone(directions=[direction]))
    link = linked.links['clip_vmae']['0']
    assert list(link.up) == [('clip', 'vmae')[receiver]]  # no unused modules
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        a, b = plain(x), linked(x)
    assert torch.equal(a[silent], b[silent])
    assert not torch.allclose(a[receiver], b[receiver])


def test_one_way_audio_link_cava():
    from cast_mmaction.models.presets_av import cava_backbone_cfg
    sizes = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4,
                 img_size=32, input_tdim=60)
    cfg = cava_backbone_cfg(**sizes)
    cfg_plain = copy.deepcopy(cfg)
    cfg_plain['links'] = []
    cfg['links'][0]['directions'] = ['clip->audio']
    torch.manual_seed(0)
    plain = build_model(cfg_plain).eval()
    _randomise(plain, only='adapters')
    linked = _with_link(plain, build_model(cfg).eval())
    inputs = dict(video=torch.randn(1, 3, 4, 32, 32),
                  audio=torch.randn(1, 60, 128))
    with torch.no_grad():
        a, b = plain(inputs), linked(inputs)
    names = list(linked.experts)
    clip, audio = names.index('clip'), names.index('audio')
    assert torch.equal(a[clip], b[clip])
    assert not torch.allclose(a[audio], b[audio])


def test_link_switches_on_ca2st_audio_links():
    """Direction, order and bottleneck on the CA2ST audio links: the links
    build with their own widths and receivers and the model runs."""
    from cast_mmaction.models.presets_av import ca2st_backbone_cfg
    cfg = ca2st_backbone_cfg(embed_dim=32, depth=2, num_heads=2,
                             num_frames=4, img_size=32, input_tdim=60,
                             audio_link_layers=[1])
    audio = [lk for lk in cfg['links'] if 'audio' in lk['experts']]
    audio[0].update(directions=['audio->clip', 'clip->audio'],
                    order='sequential', down_ratio=4)
    audio[1].update(directions='audio->vmae', down_ratio=1)
    bb = build_model(cfg).eval()
    a0 = bb.links['_'.join(audio[0]['experts'])]['1']
    a1 = bb.links['_'.join(audio[1]['experts'])]['1']
    assert (a0.dim, a1.dim) == (8, 32)
    assert a0.receivers == ['clip', 'audio'] and list(a1.up) == ['vmae']
    out = bb(dict(video=torch.randn(1, 3, 4, 32, 32),
                  audio=torch.randn(1, 60, 128)))
    assert len(out) == 3 and all(torch.isfinite(o).all() for o in out)


def test_order_sequential_second_reads_first_update():
    torch.manual_seed(0)
    base = _cast_backbone(depth=1)
    _randomise(base, seed=2, only='adapters')
    _randomise(base, seed=3, only='links.')
    outs = {}
    for name, kw in (('parallel', {}),
                     ('t2s_first', dict(directions=['vmae->clip',
                                                    'clip->vmae'],
                                        order='sequential')),
                     ('s2t_first', dict(directions=['clip->vmae',
                                                    'vmae->clip'],
                                        order='sequential'))):
        m = _cast_backbone(depth=1, **kw)
        m.load_state_dict(base.state_dict())
        x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator()
                        .manual_seed(7))
        with torch.no_grad():  # the token streams after the layer
            xs = [m.experts[n].embed(x) for n in m.stream_names]
            outs[name] = m._layer(0, 2, None, *xs)
    par, t2s, s2t = outs['parallel'], outs['t2s_first'], outs['s2t_first']
    # the first direction reads what parallel reads; the second reads the
    # stream the first updated
    assert torch.equal(t2s[0], par[0]) and not torch.allclose(t2s[1], par[1])
    assert torch.equal(s2t[1], par[1]) and not torch.allclose(s2t[0], par[0])
    # the default is parallel: 'both' spelled out gives the same
    m = _cast_backbone(depth=1, directions='both', order='parallel')
    m.load_state_dict(base.state_dict())
    with torch.no_grad():
        same = m._layer(0, 2, None, *[m.experts[n].embed(x)
                                      for n in m.stream_names])
    assert all(torch.equal(p, q) for p, q in zip(par, same))


def test_link_switch_errors():
    with pytest.raises(ValueError, match="list them"):
        _cast_backbone(order='sequential')
    with pytest.raises(ValueError, match="'vmae->clip'"):
        _cast_backbone(directions=['clip->clip'])
    with pytest.raises(ValueError, match='order'):
        _cast_backbone(order='t2s_first')
    with pytest.raises(ValueError, match='down_ratio'):
        _cast_backbone(down_ratio=0)


@pytest.mark.parametrize('ratio,width', [(1, 32), (2, 16), (4, 8)])
def test_bottleneck_ratio_per_link(ratio, width):
    bb = _cast_backbone(down_ratio=ratio)
    link = bb.links['clip_vmae']['0']
    assert link.dim == width and link.down['clip'].weight.shape == (width, 32)
    # per link parameters: 2 x (down, norm, up) + 2 x (q, kv, proj, tables)
    T, N = 2, 4
    expect = 2 * (32 * width + width + 2 * width + width * 32 + 32) + 2 * (
        4 * width * width + 4 * width) + width * 2 * T + width * 2 * N
    assert sum(p.numel() for p in link.parameters()) == expect


# -- fresh layers and branch switches -----------------------------------------
def test_backbone_deeper_than_experts_adds_fresh_trainable_layers():
    from cast_mmaction.models.presets import cast_backbone_cfg
    cfg = cast_backbone_cfg(embed_dim=32, depth=2, num_heads=2, num_frames=4,
                            img_size=32)
    cfg.update(depth=4, adapter_layers=[2, 3], attn_layers=[0, 1, 2],
               mlp_layers=[0, 1, 3])
    cfg['links'][0]['layers'] = [2, 3]
    bb = build_model(cfg)
    clip = bb.experts['clip']
    assert clip.depth == 4 and bb.depth == 4
    for i in range(4):
        trainable = {p.requires_grad for p in
                     clip.layer_module(i).parameters()}
        assert trainable == ({False} if i < 2 else {True}), i
    keys = bb.state_dict()
    assert 'experts.clip.transformer.resblocks.3.attn.in_proj_weight' not in keys
    assert 'experts.vmae.blocks.2.mlp.fc1.weight' not in keys
    assert 'experts.vmae.blocks.2.norm1.weight' in keys
    assert sorted(bb.attn_adapters['clip']) == ['2']  # layer 3 has no attention
    assert sorted(bb.mlp_adapters['vmae']) == ['3']
    out = bb(torch.randn(1, 3, 4, 32, 32))
    sum((o * torch.randn_like(o)).sum() for o in out).backward()
    grad = clip.layer_module(2).attn.in_proj_weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with pytest.raises(ValueError, match='less than the depth'):
        build_model(dict(cfg, depth=1))


# -- CASTHead options ---------------------------------------------------------
def test_cast_head_fusion_options():
    from mmaction.registry import MODELS
    f = (torch.randn(3, 16), torch.randn(3, 16))
    mean = MODELS.build(dict(type='CASTHead', num_classes=4, in_channels=16,
                             fusion='mean'))
    _randomise(mean, seed=4, only='adapters')
    a0, a1 = mean.adapters
    manual = mean.fc_cls(((f[0] + a0.fc2(a0.act(a0.fc1(f[0])))) +
                          (f[1] + a1.fc2(a1.act(a1.fc1(f[1]))))) / 2)
    torch.testing.assert_close(mean(f), manual)
    none = MODELS.build(dict(type='CASTHead', num_classes=4, in_channels=16,
                             fusion='none', streams=[1]))
    assert len(none.adapters) == 0
    torch.testing.assert_close(none(f), none.fc_cls(f[1]))
    with pytest.raises(ValueError, match='reads one stream'):
        MODELS.build(dict(type='CASTHead', num_classes=4, in_channels=16,
                          fusion='none'))
    with pytest.raises(ValueError, match='streams'):
        MODELS.build(dict(type='CASTHead', num_classes=4, in_channels=16,
                          streams=[2]))


# -- configs/ablations ---------------------------------------------------------
import glob  # noqa: E402
import os.path as osp  # noqa: E402

from conftest import ROOT  # noqa: E402

ABLATION_CONFIGS = sorted(
    osp.basename(p)[:-3]
    for p in glob.glob(osp.join(ROOT, 'configs', 'ablations', '*.py')))
_MISSING = object()


def _flat(d, prefix=''):
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + '.'))
        else:
            out[key] = v
    return out


def _load(path):
    from mmengine.config import Config
    return Config.fromfile(path)


def test_every_ablation_row_has_a_config():
    assert len(ABLATION_CONFIGS) >= 15
    for needed in ('cast_ssv2_t2s_only', 'cast_ssv2_s2t_only',
                   'cast_ssv2_t2s_then_s2t', 'cast_ssv2_s2t_then_t2s',
                   'cast_ssv2_bottleneck_1', 'cast_ssv2_windows_swapped',
                   'cast_ssv2_bcast_from_6', 'cast_ek100_bcast_from_6',
                   'cast_ek100_late_fusion_3', 'clip_adapters_ssv2',
                   'vmae_adapters_ssv2', 'cast_ssv2_no_link'):
        assert needed in ABLATION_CONFIGS


@pytest.mark.parametrize('name', ABLATION_CONFIGS)
def test_ablation_config_differs_from_its_recipe_only_where_named(name):
    cfg = _load(osp.join(ROOT, 'configs', 'ablations', name + '.py'))
    abl = cfg.ablation
    recipe = _load(osp.join(ROOT, abl['recipe']))
    a, b = _flat(cfg.to_dict()), _flat(recipe.to_dict())
    diff = {k for k in set(a) | set(b) if not k.startswith('ablation.')
            and a.get(k, _MISSING) != b.get(k, _MISSING)}
    varies = abl['varies']

    def named(k):
        return any(k == v or k.startswith(v + '.') for v in varies)

    assert diff and all(named(k) for k in diff), sorted(diff)
    for v in varies:  # and each named field does differ
        assert any(k == v or k.startswith(v + '.') for k in diff), v
    assert abl['claim']


def _expected_trainable(model):
    """Trainable parameters counted from the config (a second count, from
    the sizes, of what the build holds)."""
    bb, head = model['backbone'], model['cls_head']
    experts = bb['experts']
    D = {n: e['embed_dim'] for n, e in experts.items()}
    L = bb.get('depth') or next(iter(experts.values()))['depth']

    def layers(x):
        return set(range(L)) if x is None else set(x)

    attn, mlp = layers(bb.get('attn_layers')), layers(bb.get('mlp_layers'))
    adapt = layers(bb.get('adapter_layers'))

    def adapter(d):
        return 2 * d * (d // 4) + d // 4 + d

    frames = bb['num_frames']
    grid = {}
    count = 0
    for n, e in experts.items():
        d = D[n]
        count += 2 * d  # ln_post / fc_norm
        count += adapter(d) * (len(adapt & attn) + len(adapt & mlp))
        clip = e['type'] == 'CLIPViTExpert'
        for i in range(e['depth'], L):  # fresh layers train
            if i in attn:
                count += 4 * d * d + (6 if clip else 5) * d
            if i in mlp:
                count += 8 * d * d + 7 * d
        t = len(range(1, frames, 2)) if clip else frames // 2
        grid[n] = dict(time=t, space=(224 // 16)**2)
    for link in bb.get('links') or []:
        a, b = link['experts']
        d = min(D[a], D[b]) // link.get('down_ratio', bb.get('down_ratio', 2))
        dirs = link.get('directions', 'both')
        receivers = [a, b] if dirs == 'both' else [
            s.split('->')[1] for s in dirs]
        per = sum(D[n] * d + d + 2 * d for n in (a, b))  # down + norm
        for q in receivers:
            kv = b if q == a else a
            w = link['windows'][q]
            per += 4 * d * d + 4 * d + d * (grid[q][w] + grid[kv][w])
            per += d * D[q] + D[q]  # up
        n_layers = L if link.get('layers') is None else len(link['layers'])
        count += per * n_layers
    d = head['in_channels']
    if head['type'] == 'CASTHead':
        streams = head.get('streams') or range(head['num_streams'])
        if head.get('fusion', 'sum') != 'none':
            count += adapter(d) * len(streams)
        count += d * head['num_classes'] + head['num_classes']
    else:
        count += d * (head['num_verbs'] + head['num_nouns'])
        count += head['num_verbs'] + head['num_nouns']
    return count


@pytest.mark.parametrize('name', ABLATION_CONFIGS + ['../cast_ssv2',
                                                     '../cast_ek100'])
def test_ablation_config_builds_with_its_trainable_parameters(name):
    """Every config builds at its ViT-B size (on the meta device: shapes
    only) with the trainable parameters its fields imply."""
    cfg = _load(osp.join(ROOT, 'configs', 'ablations', name + '.py'))
    with torch.device('meta'):  # (the preprocessor's mixup needs data)
        parts = [build_model(cfg.model[k]) for k in ('backbone', 'cls_head')]
    trainable = sum(p.numel() for m in parts for p in m.parameters()
                    if p.requires_grad)
    assert trainable == _expected_trainable(cfg.model.to_dict()), name


def test_late_fusion_config_real_build():
    """One real ViT-B build: the late-fusion recipe (15 layers, 3 fresh)."""
    cfg = _load(osp.join(ROOT, 'configs', 'ablations',
                         'cast_ek100_late_fusion_3.py'))
    model = build_model(cfg.model)
    bb = model.backbone
    assert bb.depth == 15 and sorted(map(int, bb.links['clip_vmae'])) == [
        12, 13, 14]
    fresh = bb.experts['vmae'].layer_module(13)
    assert all(p.requires_grad for p in fresh.parameters())
    assert not any(p.requires_grad for p in
                   bb.experts['vmae'].layer_module(11).parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == _expected_trainable(cfg.model.to_dict())


def test_docs_table_names_every_ablation_config():
    text = open(osp.join(ROOT, 'docs', 'ablations.md')).read()
    missing = [n for n in ABLATION_CONFIGS
               if f'`configs/ablations/{n}.py`' not in text]
    assert not missing, f'docs/ablations.md does not list {missing}'


@pytest.mark.parametrize('name', ['cast_abl_clip_only', 'cast_abl_bcast_from',
                                  'cast_abl_late_fusion'])
def test_ablation_files_are_one_kind_and_fully_mapped(name):
    import os
    from cast_mmaction.checkpoints import CONVERTERS, convert_state
    from cast_mmaction.safe_load import load_checkpoint
    raw = load_checkpoint(os.path.join(shared_fixture(name),
                                       'official_checkpoint.pth'))
    state = raw['module']
    assert detect_kind(state) == 'cast_ablation'
    out, unmapped = convert_state('cast_ablation', state)
    assert unmapped == [] and len(out) == len(state)
    for other in set(CONVERTERS) - {'cast_ablation'}:
        with pytest.raises(ValueError, match='not an '):
            convert_state(other, state)


def test_fresh_layers_get_their_layer_lr():
    """Late fusion: the fresh layers train, with the layer-wise lr decay of
    their depth (the backbone's, 3 here, not the experts' pretrained 2)."""
    from mmengine.optim import build_optim_wrapper
    from cast_mmaction.models.presets import cast_recognizer_cfg
    cfg = cast_recognizer_cfg(num_classes=5, embed_dim=32, depth=2,
                              num_heads=2, num_frames=4, img_size=32)
    cfg['backbone'].update(depth=3, adapter_layers=[2])
    cfg['backbone']['links'][0]['layers'] = [2]
    model = build_model(cfg)
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0),
        constructor='CASTLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.5)))
    names = {id(p): n for n, p in model.named_parameters()}
    lr = {names[id(p)]: g['lr'] for g in wrapper.optimizer.param_groups
          for p in g['params']}
    fresh = 'backbone.experts.vmae.blocks.2.attn.qkv.weight'
    assert lr[fresh] == pytest.approx(0.5**(4 - 3))  # layer id 3 of 0..4
    assert lr['backbone.links.clip_vmae.2.down.clip.weight'] == lr[fresh]
    assert 'backbone.experts.vmae.blocks.1.attn.qkv.weight' not in lr  # frozen


def test_other_vmae_patch_size_without_links_is_mapped():
    """The authors' ViT-L entry points pair CLIP patch 14 with VideoMAE
    patch 16; without B-CAST layers (CA or late_fusion at the depth) the
    grids never meet and the dump maps (it was refused); with B-CAST layers
    it is refused, naming why."""
    args = dict(TINY, patch_size=8, vmae_patch_size=16, CA=TINY['depth'],
                clip_only=True)
    cfg = ablation_model_cfg(args)
    bb = cfg['backbone']
    assert bb['experts']['clip']['patch_size'] == 8
    assert bb['experts']['vmae']['patch_size'] == 16 and bb['links'] == []
    model = build_model(cfg).eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 4, 32, 32))
    assert [f.shape for f in feats] == [(1, 32), (1, 32)]
    with pytest.raises(ValueError, match='same patch grid where they are '
                       'linked'):
        ablation_model_cfg(dict(args, CA=1))
