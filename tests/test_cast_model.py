"""The CAST model: shapes, windows, zero-init equivalence, freezing, sizes."""
import copy

import pytest
import torch

from cast_mmaction.models.presets import cast_backbone_cfg, cast_recognizer_cfg
from cast_mmaction.utils import build_model, param_counts

TINY = dict(embed_dim=64, depth=2, num_heads=4, num_frames=8, img_size=32,
            patch_size=16)


def tiny_backbone(**kw):
    cfg = cast_backbone_cfg(**{**TINY, **kw})
    return build_model(cfg)


def test_shapes_and_head():
    torch.manual_seed(0)
    model = build_model(cast_recognizer_cfg(num_classes=5, **TINY)).eval()
    x = torch.randn(3, 3, 8, 32, 32)
    feats = model.backbone(x)
    assert [f.shape for f in feats] == [(3, 64), (3, 64)]
    assert model.cls_head(feats).shape == (3, 5)
    comp = build_model(cast_recognizer_cfg(composition=True, verb_classes=7,
                                           noun_classes=11, **TINY)).eval()
    verb, noun = comp.cls_head(comp.backbone(x))
    assert verb.shape == (3, 7) and noun.shape == (3, 11)


def test_token_grids():
    bb = tiny_backbone()
    clip, vmae = bb.experts['clip'], bb.experts['vmae']
    # CLIP sees frames 1, 3, 5, 7 of 8; VideoMAE 4 tubelets of 2 frames
    assert clip.token_grid == (4, 4) and vmae.token_grid == (4, 4)
    x = torch.randn(2, 3, 8, 32, 32)
    assert clip.embed(x).shape == (2 * 4, 1 + 4, 64)
    assert vmae.embed(x).shape == (2, 4 * 4, 64)


def test_clip_sees_odd_frames_only():
    bb = tiny_backbone().eval()
    clip = bb.experts['clip']
    x = torch.randn(1, 3, 8, 32, 32)
    y = x.clone()
    y[:, :, 0::2] += 5.0  # change only the even frames
    assert torch.equal(clip.forward_plain(x), clip.forward_plain(y))
    y = x.clone()
    y[:, :, 3] += 5.0
    assert not torch.allclose(clip.forward_plain(x), clip.forward_plain(y))


def _link_and_inputs(seed=0):
    bb = tiny_backbone()
    link = bb.links['clip_vmae']['0']
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in link.up.values():  # make the updates non-zero
            m.weight.normal_(0, 0.5)
    B, T, N, C = 2, 4, 4, 64
    tokens = dict(clip=torch.randn(B * T, 1 + N, C),
                  vmae=torch.randn(B, T * N, C))
    return bb, link, tokens


def test_t2s_mixes_only_along_time():
    """Perturbing one VideoMAE token (t0, n0) changes CLIP updates only at
    patch position n0 (every CLIP frame), never the class token."""
    bb, link, tokens = _link_and_inputs()
    experts = bb.experts
    base = link(tokens, experts, 2)['clip']
    t0, n0, b0 = 2, 1, 1
    pert = {k: v.clone() for k, v in tokens.items()}
    pert['vmae'][b0, t0 * 4 + n0] += 3.0
    new = link(pert, experts, 2)['clip']
    changed = (new - base).abs().amax(-1) > 1e-6  # (B*T, 1+N)
    changed = changed.reshape(2, 4, 5)
    assert changed[b0, :, 1 + n0].all(), 'every frame at n0 must change'
    mask = torch.zeros_like(changed)
    mask[b0, :, 1 + n0] = True
    assert not changed[~mask].any(), 'T2S leaked outside the time window'


def test_s2t_mixes_only_within_a_frame():
    """Perturbing one CLIP patch (t0, n0) changes VideoMAE updates only at
    time step t0 (every patch of that frame)."""
    bb, link, tokens = _link_and_inputs()
    experts = bb.experts
    base = link(tokens, experts, 2)['vmae']
    t0, n0, b0 = 1, 3, 0
    pert = {k: v.clone() for k, v in tokens.items()}
    pert['clip'][b0 * 4 + t0, 1 + n0] += 3.0
    new = link(pert, experts, 2)['vmae']
    changed = ((new - base).abs().amax(-1) > 1e-6).reshape(2, 4, 4)
    assert changed[b0, t0].all()
    mask = torch.zeros_like(changed)
    mask[b0, t0] = True
    assert not changed[~mask].any(), 'S2T leaked outside the frame'


def test_clip_class_token_does_not_attend():
    bb, link, tokens = _link_and_inputs()
    base = link(tokens, bb.experts, 2)['clip']
    pert = {k: v.clone() for k, v in tokens.items()}
    pert['vmae'] += torch.randn_like(pert['vmae'])
    new = link(pert, bb.experts, 2)['clip']
    assert torch.allclose(new[:, 0], base[:, 0])
    assert not torch.allclose(new[:, 1:], base[:, 1:])


def test_zero_init_streams_equal_plain_experts():
    """At the published init (adapter fc2 and B-CA up-projections zero) each
    stream is exactly its plain expert."""
    torch.manual_seed(0)
    bb = tiny_backbone().eval()
    x = torch.randn(2, 3, 8, 32, 32)
    s, t = bb(x)
    torch.testing.assert_close(s, bb.experts['clip'].forward_plain(x),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(t, bb.experts['vmae'].forward_plain(x),
                               rtol=0, atol=1e-6)
    # and the fusion really acts once its zero-initialised parts move
    with torch.no_grad():
        bb.links['clip_vmae']['1'].up['vmae'].weight.normal_()
    assert not torch.allclose(bb(x)[1], t)


def test_frozen_parameters_get_no_gradient():
    torch.manual_seed(0)
    model = build_model(cast_recognizer_cfg(num_classes=3, **TINY)).train()
    x = torch.randn(2, 3, 8, 32, 32)
    # move zero-init parts so that gradients reach every trainable tensor
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and p.abs().sum() == 0 and p.ndim == 2:
                p.normal_(0, 0.02)
    model.cls_head(model.backbone(x)).logsumexp(-1).sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    # the published trainable set: B-CA, adapters, ln_post, fc_norm, heads
    for n in trainable:
        assert (n.startswith(('backbone.links.', 'backbone.attn_adapters.',
                              'backbone.mlp_adapters.', 'cls_head.'))
                or n.startswith(('backbone.experts.clip.ln_post.',
                                 'backbone.experts.vmae.fc_norm.'))), n
    assert any('transformer.resblocks' in n for n, p in
               model.named_parameters() if not p.requires_grad)


@pytest.fixture(scope='module')
def vit_b_backbone():
    return build_model(cast_backbone_cfg())  # the full ViT-B/16, built once


@pytest.mark.parametrize('num_classes,composition,trainable,total', [
    (174, False, 45.21, 217.23),   # SSv2
    (400, False, 45.38, 217.40),   # K400
    (None, True, 44.78, 216.81),   # EK100 (97 verbs, 300 nouns)
])
def test_vit_b_parameter_counts(vit_b_backbone, num_classes, composition,
                                trainable, total):
    """Published counts of the ViT-B/16 models (REFERENCE.md)."""
    cfg = cast_recognizer_cfg(num_classes=num_classes or 1,
                              composition=composition)
    head = build_model(cfg['cls_head'])
    n_train, n_total = [a + b for a, b in zip(param_counts(vit_b_backbone),
                                              param_counts(head))]
    assert round(n_train / 1e6, 2) == trainable
    assert round(n_total / 1e6, 2) == total


def test_other_frame_counts_and_sizes():
    torch.manual_seed(0)
    for frames, size in [(4, 48), (12, 32), (16, 64)]:
        bb = tiny_backbone(num_frames=frames, img_size=size).eval()
        out = bb(torch.randn(1, 3, frames, size, size))
        assert [o.shape for o in out] == [(1, 64), (1, 64)]
    # non-square inputs
    bb = tiny_backbone(img_size=(32, 48)).eval()
    assert bb(torch.randn(1, 3, 8, 32, 48))[0].shape == (1, 64)


@pytest.mark.parametrize('kw,field', [
    (dict(num_frames=7), 'num_frames'),
    (dict(img_size=40), 'img_size'),
    (dict(num_heads=5), 'heads'),
])
def test_impossible_shapes_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        tiny_backbone(**kw)


def test_mismatched_patch_grids_are_refused():
    cfg = cast_backbone_cfg(**TINY)
    cfg['experts']['clip']['patch_size'] = 8  # 4x4 vs VideoMAE's 2x2
    with pytest.raises(ValueError, match='patches per frame'):
        build_model(cfg)


def test_mismatched_depths_are_refused():
    cfg = cast_backbone_cfg(**TINY)
    cfg['experts']['clip']['depth'] = 3
    with pytest.raises(ValueError, match='same depth'):
        build_model(cfg)


@pytest.mark.parametrize('old,new', [('width', 'embed_dim'),
                                     ('layers', 'depth'),
                                     ('heads', 'num_heads')])
def test_retired_clip_size_names_say_the_new_field(old, new):
    """One size vocabulary for every expert: the CLIP expert's former
    ``width`` / ``layers`` / ``heads`` are refused, naming the new field."""
    cfg = cast_backbone_cfg(**TINY)
    clip = cfg['experts']['clip']
    value = clip.pop(new)
    clip[old] = value
    with pytest.raises(TypeError, match=rf'backbone.experts.clip: .*'
                       rf'{old} renamed.* write {new}={value}'):
        build_model(cfg)


def test_wrong_input_size_is_a_clear_error():
    bb = tiny_backbone().eval()
    with pytest.raises(ValueError, match='num_frames'):
        bb(torch.randn(1, 3, 6, 32, 32))


def test_link_layers_configurable():
    bb = tiny_backbone(link_layers=[1])
    assert list(bb.links['clip_vmae']) == ['1']
    cfg = cast_backbone_cfg(**TINY)
    cfg['links'][0]['layers'] = [5]
    with pytest.raises(ValueError, match='layers'):
        build_model(cfg)


def test_drop_path_schedule_and_train_mode_randomness():
    bb = tiny_backbone(drop_path_rate=0.3)
    rates = [m.p for m in bb.drop_path]
    assert rates == pytest.approx([0.0, 0.3])


@pytest.mark.parametrize('with_cp,layers', [(True, [0, 1]), (1, [1]),
                                            ([0], [0])])
def test_activation_checkpointing_matches(monkeypatch, with_cp, layers):
    """A backbone built with ``with_cp`` checkpoints exactly the chosen
    layers (each recomputed in backward) and gives the outputs and gradients
    of the same weights without checkpointing."""
    import cast_mmaction.models.backbones.cast as cast_mod
    torch.manual_seed(0)
    bb = tiny_backbone()
    with torch.no_grad():
        for p in bb.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    bb_cp = tiny_backbone(with_cp=with_cp)
    bb_cp.load_state_dict(bb.state_dict())
    assert bb_cp.cp_layers == set(layers) and not bb.cp_layers

    checkpointed, layer_runs = [], []
    real_checkpoint, real_layer = cast_mod.cp.checkpoint, bb_cp._layer

    def counting_checkpoint(fn, i, *args, **kwargs):
        checkpointed.append(i)
        return real_checkpoint(fn, i, *args, **kwargs)

    def counting_layer(i, *args, **kwargs):
        layer_runs.append((i, kwargs.get('fuse', True)))
        return real_layer(i, *args, **kwargs)

    monkeypatch.setattr(cast_mod.cp, 'checkpoint', counting_checkpoint)
    monkeypatch.setattr(bb_cp, '_layer', counting_layer)
    x = torch.randn(1, 3, 8, 32, 32)
    out, out_cp = bb.train()(x), bb_cp.train()(x)
    assert checkpointed == layers
    for o, o_cp in zip(out, out_cp):
        torch.testing.assert_close(o, o_cp, rtol=0, atol=0)
    sum(o.sum() for o in out).backward()
    sum(o.sum() for o in out_cp).backward()
    # every layer ran once forward, the checkpointed ones again in backward,
    # those without the MLP's accumulation into the residual (selective
    # policies keep addmm outputs): fuse=False
    assert sorted(i for i, _ in layer_runs) == sorted([0, 1] + layers)
    assert all(fuse is (i not in layers) for i, fuse in layer_runs), \
        layer_runs
    grads = 0
    for (n, p), (_, q) in zip(bb.named_parameters(), bb_cp.named_parameters()):
        if p.grad is not None:
            grads += 1
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    assert grads > 0
    # no checkpointing at inference
    checkpointed.clear()
    with torch.no_grad():
        bb_cp.eval()(x)
    assert checkpointed == []


def test_window_tables_are_described_for_converters():
    """``position_table_layout``: every learned window table with the expert
    whose grid it spans and the axis, from the policy table (what a
    checkpoint converter needs to resize it)."""
    from cast_mmaction.models.fusion import position_table_layout
    bb = tiny_backbone()
    layout = position_table_layout(bb)
    tables = {k for k in bb.state_dict() if k.rsplit('.', 1)[-1] in (
        'q_pos', 'kv_pos', 'q_pos_t', 'kv_pos_t')}
    assert set(layout) == tables and len(tables) == 2 * 4
    # T2S: clip queries over time; S2T: vmae queries over the patches
    assert layout['links.clip_vmae.0.attn.clip.q_pos'] == ('clip', 't')
    assert layout['links.clip_vmae.0.attn.clip.kv_pos'] == ('vmae', 't')
    assert layout['links.clip_vmae.1.attn.vmae.q_pos'] == ('vmae', 'n')
    assert layout['links.clip_vmae.1.attn.vmae.kv_pos'] == ('clip', 'n')
    for key, (name, axis) in layout.items():
        expert = bb.experts[name]
        size = expert.grid_t if axis == 't' else expert.grid_n
        assert bb.state_dict()[key].shape[0] == size, key
