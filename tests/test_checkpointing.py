"""Selective activation checkpointing: the gradients of the plain model, with
only the policy's operator outputs kept."""
import pytest
import torch
import torch.nn as nn
import torch.utils.checkpoint as tcp

from cast_mmaction.models import checkpointing, speedups
from cast_mmaction.models.checkpointing import SavePolicy, make_policy
from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model


def _tiny(**backbone):
    cfg = cast_recognizer_cfg(num_classes=5, embed_dim=64, depth=2,
                              num_heads=4, num_frames=8, img_size=32)
    cfg['backbone'].update(drop_path_rate=0.2, **backbone)
    return build_model(cfg)


def _grads(model, x):
    model.train()
    torch.manual_seed(3)  # the same drop-path masks on every model
    sum(f.pow(2).sum() for f in model.backbone(x)).backward()
    return {n: p.grad for n, p in model.named_parameters()
            if p.grad is not None}


@pytest.mark.parametrize('policy, with_cp, layers', [
    ('selective', False, {0, 1}), ('attention', False, {0, 1}),
    ('full', True, {0, 1}), ('full', False, {0, 1}), ('selective', 1, {1}),
    ('narrow', False, {0, 1}),
    (SavePolicy(widen=(3, 4), min_k=16), False, {0, 1}),
    (SavePolicy(widen=(), narrow=True, min_k=16), False, {0, 1})])
def test_selective_checkpointing_gives_the_plain_gradients(policy, with_cp,
                                                           layers):
    ref = _tiny()
    torch.manual_seed(1)
    for p in ref.parameters():
        if p.requires_grad and p.ndim > 1:
            nn.init.normal_(p, std=0.05)
    model = _tiny(checkpoint_policy=policy, with_cp=with_cp)
    model.load_state_dict(ref.state_dict())
    assert model.backbone.cp_layers == layers
    x = torch.randn(2, 3, 8, 32, 32)
    want, got = _grads(ref, x), _grads(model, x)
    assert want.keys() == got.keys() and len(want) > 10
    for n in want:
        # the recompute runs the same operators on the same inputs
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6,
                                   msg=n)


@pytest.mark.parametrize('path', ['reference', 'onednn'])
def test_the_policy_keeps_attention_and_qkv_and_recomputes_the_rest(path):
    """Record the policy's decision per operator over one checkpointed layer
    of a ViT-B-width model (k = 768), on the reference matmuls (F.linear)
    and on the oneDNN speed-up's."""
    decisions = []
    policy = make_policy('selective')

    def recording(ctx, op, *args, **kwargs):
        d = policy(ctx, op, *args, **kwargs)
        if not ctx.is_recompute:
            decisions.append((str(op), tuple(args[0].shape) if args and
                              hasattr(args[0], 'shape') else None, d))
        return d

    dim, heads, n = 768, 12, 20
    ln = nn.LayerNorm(dim)
    qkv, proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
    fc1, fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
    down = nn.Linear(dim, dim // 4)

    def layer(x):
        from cast_mmaction.models.layers import sdpa_heads
        linear = (speedups.onednn_linear if path == 'onednn' else
                  torch.nn.functional.linear)
        q, k, v = linear(ln(x), qkv.weight, qkv.bias).chunk(3, -1)
        x = x + linear(sdpa_heads(q, k, v, heads), proj.weight, proj.bias)
        h = torch.nn.functional.gelu(linear(ln(x), fc1.weight, fc1.bias))
        return x + linear(h, fc2.weight, fc2.bias) + down(x).sum()

    import functools
    x = torch.randn(1, n, dim, requires_grad=True)
    y = tcp.checkpoint(layer, x, use_reentrant=False, context_fn=functools
                       .partial(tcp.create_selective_checkpoint_contexts,
                                recording))
    y.sum().backward()
    kept = [op for op, _, d in decisions
            if d == tcp.CheckpointPolicy.MUST_SAVE]
    assert any('scaled_dot_product' in op for op in kept), decisions
    # one matmul kept: q/k/v; proj, fc1 (4x), fc2, the adapter-like down
    # projection are recomputed
    mm_kept = [op for op in kept if 'scaled_dot_product' not in op]
    assert len(mm_kept) == 1, decisions
    recomputed = [op for op, _, d in decisions
                  if d != tcp.CheckpointPolicy.MUST_SAVE]
    assert any('layer_norm' in op for op in recomputed)
    assert any('gelu' in op for op in recomputed)
    assert sum(('mm' in op or 'linear' in op) for op in recomputed) >= 4


def test_bad_policy_names_the_field():
    with pytest.raises(ValueError, match='checkpoint_policy'):
        _tiny(checkpoint_policy='cheap')
    assert make_policy('full') is None and make_policy(None) is None
    assert checkpointing.POLICIES == ('full', 'attention', 'selective',
                                      'narrow')
    assert checkpointing.FUSION_POLICIES == ('fusion', 'fusion_qkv')
    # the fusion regions are a CPU speed-up: the error names the new field
    for name in checkpointing.FUSION_POLICIES:
        with pytest.raises(ValueError, match=r'speedups=dict\(checkpoint='):
            _tiny(checkpoint_policy=name)
    with pytest.raises(ValueError, match='speedups.checkpoint'):
        _tiny(speedups=dict(checkpoint='cheap'))
    with pytest.raises(TypeError, match='FusionPolicy'):
        checkpointing.checkpoint(lambda x: x, torch.ones(1),
                                 policy=checkpointing.FusionPolicy())


# -- 'fusion' / 'fusion_qkv': regions inside the layer ------------------------
def _tiny_backbone(kind, **backbone):
    """Tiny backbones with every link type and direction: CAST (time /
    space windows; both, one-way, sequential), CAVA (global windows) and
    CA2ST (a sequential and a one-way audio link; revision: time encodings
    and shared projections; else the one-way link without bottleneck)."""
    from cast_mmaction.models.presets import cast_backbone_cfg
    from cast_mmaction.models.presets_av import (ca2st_backbone_cfg,
                                                 cava_backbone_cfg)
    sizes = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4,
                 img_size=32)
    if kind.startswith('cast'):
        cfg = cast_backbone_cfg(**sizes)
        cfg['links'][0].update({
            'cast': {},
            'cast_one_way': dict(directions=['vmae->clip']),
            'cast_sequential': dict(directions=['clip->vmae', 'vmae->clip'],
                                    order='sequential'),
        }[kind])
    elif kind == 'cava':
        cfg = cava_backbone_cfg(input_tdim=60, **sizes)
    else:  # revision: time encodings and shared projections
        revision = kind == 'ca2st'
        cfg = ca2st_backbone_cfg(input_tdim=60, revision=revision,
                                 audio_link_layers=[1], **sizes)
        audio = [lk for lk in cfg['links'] if 'audio' in lk['experts']]
        audio[0].update(directions=['audio->clip', 'clip->audio'],
                        order='sequential')
        audio[1].update(directions='audio->vmae')
        if not revision:
            audio[1].update(down_ratio=1)
    cfg.update(drop_path_rate=0.2, **backbone)
    return build_model(cfg)


def _inputs(kind):
    g = torch.Generator().manual_seed(5)
    video = torch.randn(2, 3, 4, 32, 32, generator=g)
    if kind.startswith('cast'):
        return video
    out = dict(video=video, audio=torch.randn(2, 60, 128, generator=g))
    if kind == 'ca2st':
        out['times'] = torch.tensor([[0.0, 2.0, 0.1, 0.6, 1.1, 1.6],
                                     [0.5, 2.5, 0.6, 1.1, 1.6, 2.1]])
    return out


def _run(bb, x):
    """Outputs, gradients and the matmuls run in backward, by the name of
    the parameter they multiply with (None: none, e.g. weight gradients),
    of one training step."""
    from collections import Counter
    from torch.utils._python_dispatch import TorchDispatchMode
    params = {p.data_ptr(): n for n, p in bb.named_parameters()}
    matmuls = (torch.ops.aten.mm, torch.ops.aten.addmm,
               *checkpointing._ONEDNN_MM)

    class Matmuls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if getattr(func, 'overloadpacket', func) in matmuls:
                names = [params.get(a.data_ptr()) for a in args
                         if isinstance(a, torch.Tensor) and a.ndim == 2]
                self.seen[next((n for n in names if n), None)] += 1
            return func(*args, **(kwargs or {}))

    bb.train()
    torch.manual_seed(3)  # the same drop-path masks on every model
    out = bb(x)
    mode = Matmuls()
    with mode:
        sum(f.pow(2).sum() for f in out).backward()
    grads = {n: p.grad for n, p in bb.named_parameters()
             if p.grad is not None}
    return out, grads, mode.seen


KINDS = ('cast', 'cast_one_way', 'cast_sequential', 'cava', 'ca2st',
         'ca2st_plain')


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('policy, with_cp, layers', [
    ('fusion', False, {0, 1}), ('fusion_qkv', False, {0, 1}),
    ('fusion', [1], {1}), ('fusion_qkv', 1, {1})])
def test_fusion_policies_give_the_plain_gradients_and_rerun_no_expert_matmul(
        kind, policy, with_cp, layers):
    ref = _tiny_backbone(kind)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():  # zero-initialised ups / adapters too
            if p.requires_grad:
                p.normal_(0, 0.1)
    model = _tiny_backbone(kind, speedups=dict(checkpoint=policy),
                           with_cp=with_cp)
    model.load_state_dict(ref.state_dict())
    assert model.layer_runner.layers == layers
    x = _inputs(kind)
    out_ref, want, mm_ref = _run(ref, x)
    out, got, mm = _run(model, x)
    for a, b in zip(out, out_ref):  # the same operators in the forward
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert want.keys() == got.keys() and len(want) > 10
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6,
                                   msg=n)
    # what backward ran on top of the plain model's backward: the recompute
    rerun = mm - mm_ref
    assert not mm_ref - mm  # nothing of the plain backward is skipped
    assert rerun, 'nothing was recomputed'
    qkv = ('in_proj_weight', 'attn.qkv.weight')
    for name in rerun:
        # no expert matmul but q / k / v ('fusion_qkv'); no down projection
        assert name is not None and '.down.' not in name, name
        if name.startswith('experts.'):
            assert policy == 'fusion_qkv' and name.endswith(qkv), name
    n_qkv = sum(c for n, c in rerun.items() if n.startswith('experts.'))
    streams = len(model.stream_names)
    # layer 0's streams (the frozen embedding's output) need no gradient:
    # its frozen attention keeps nothing and gets no region
    assert n_qkv == (streams * len(layers - {0}) if policy == 'fusion_qkv'
                     else 0)
    # the links' other matmuls (q / kv / proj; the last up projection of a
    # region may be skipped by checkpointing's early stop, as on the
    # F.linear path of a one-way link) and the adapters are recomputed
    assert any(n.startswith('links.') and '.attn.' in n for n in rerun)
    assert any('adapters.' in n for n in rerun)


def test_fusion_policy_under_frozen_dtype_and_autocast(monkeypatch):
    """bf16 frozen experts (autocast inside the backbone): the fusion
    regions recompute the same bf16 values. A global bf16 autocast: the
    speed-up does not apply, the reference layer runs (no region)."""
    for kw, amp in ((dict(frozen_dtype='bfloat16'), False),
                    (dict(), True)):
        ref = _tiny_backbone('cast', **kw)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in ref.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.1)
        model = _tiny_backbone('cast', speedups=dict(checkpoint='fusion_qkv'),
                               **kw)
        model.load_state_dict(ref.state_dict())
        x = _inputs('cast')
        calls = []
        real = checkpointing.cp.checkpoint
        monkeypatch.setattr(checkpointing.cp, 'checkpoint',
                            lambda *a, **k: calls.append(1) or real(*a, **k))
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            out_ref, want, _ = _run(ref, x)
            assert not calls
            out, got, _ = _run(model, x)
        assert bool(calls) is not amp  # regions only outside autocast
        monkeypatch.undo()
        for a, b in zip(out, out_ref):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for n in want:
            torch.testing.assert_close(got[n], want[n], rtol=0,
                                       atol=0 if amp else 1e-6, msg=n)


def test_fusion_policy_parts_and_inference():
    pol = checkpointing.make_fusion_policy('fusion')
    assert isinstance(pol, checkpointing.FusionPolicy)
    assert (pol.links, pol.adapters, pol.qkv) == (True, True, False)
    assert checkpointing.make_fusion_policy('fusion_qkv').qkv
    only_links = checkpointing.FusionPolicy(adapters=False)
    ref = _tiny_backbone('cast')
    model = _tiny_backbone('cast', speedups=dict(checkpoint=only_links))
    model.load_state_dict(ref.state_dict())
    _, want, mm_ref = _run(ref, _inputs('cast'))
    _, got, mm = _run(model, _inputs('cast'))
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6)
    rerun = mm - mm_ref
    assert rerun and all(n.startswith('links.') for n in rerun), rerun
    # no region without autograd
    calls = []
    real = checkpointing.cp.checkpoint
    checkpointing.cp.checkpoint = lambda *a, **k: calls.append(1) or real(
        *a, **k)
    try:
        with torch.no_grad():
            model.train()(_inputs('cast'))
        model.eval()(_inputs('cast'))
    finally:
        checkpointing.cp.checkpoint = real
    assert not calls


def test_malloc_mmap_threshold_is_an_explicit_opt_in(monkeypatch):
    calls = []  # (the real one would change this test process's malloc)
    monkeypatch.setattr(speedups, 'set_malloc_mmap_threshold',
                        lambda n: calls.append(n))
    with torch.no_grad():
        _tiny_backbone('cast')(_inputs('cast'))
        assert calls == []  # never without the field
        bb = _tiny_backbone('cast', speedups=dict(
            malloc_mmap_threshold=1 << 20))
        assert calls == []  # not when built: at the first fp32 CPU forward
        bb.double()(_inputs('cast').double())
        assert calls == []  # fp64: does not apply
        bb.float()(_inputs('cast'))
        bb(_inputs('cast'))
    assert calls == [1 << 20]  # once
    # the retired backbone field names the new one
    with pytest.raises(ValueError, match=r'speedups=dict\(malloc_mmap'):
        _tiny_backbone('cast', malloc_mmap_threshold=1 << 20)


@pytest.mark.parametrize('bad', [0, -1, 64 << 20, 1.5, '1M', True])
def test_malloc_mmap_threshold_bad_values_name_the_field(bad):
    with pytest.raises(ValueError, match='malloc_mmap_threshold'):
        speedups.set_malloc_mmap_threshold(bad)
    with pytest.raises(ValueError, match='speedups.malloc_mmap_threshold'):
        speedups.resolve(dict(malloc_mmap_threshold=bad))


@pytest.mark.parametrize('policy', [None, 'fusion'])
def test_malloc_trim_at_layer_boundaries_changes_no_number(policy,
                                                           monkeypatch):
    """``speedups=dict(malloc_trim=True)``: malloc_trim(0) after layers'
    forward and when their output gradients arrive, in fp32 CPU
    training only, around the layer runner it is given (e.g. the fusion
    regions); outputs and gradients are the same bit for bit."""
    calls = []
    monkeypatch.setattr(speedups, 'malloc_trim', lambda: calls.append(1))

    def build(**sp):
        torch.manual_seed(0)
        spec = dict(sp, checkpoint=policy) if policy else sp
        return _tiny_backbone('cast', speedups=spec or None)

    def step(bb):
        bb.train().zero_grad(set_to_none=True)
        torch.manual_seed(1)
        out = bb(_inputs('cast'))
        sum(o.pow(2).sum() for o in out).backward()
        return out, {n: p.grad for n, p in bb.named_parameters()
                     if p.grad is not None}

    ref, trim = build(), build(malloc_trim=True)
    trim.load_state_dict(ref.state_dict())
    assert isinstance(trim.layer_runner, speedups.TrimmingRunner)
    out_ref, g_ref = step(ref)
    calls.clear()
    out, g = step(trim)
    # after the last two thirds' forward (both of 2 layers), and the last
    # third's backward (none of 2)
    assert len(calls) == trim.depth + trim.depth // 3
    trim.layer_runner.backward_layers = trim.depth
    calls.clear()
    step(trim)
    assert len(calls) == 2 * trim.depth
    trim.layer_runner.forward_layers = 1
    calls.clear()
    step(trim)
    assert len(calls) == 1 + trim.depth
    forward = build(malloc_trim='forward')
    assert forward.layer_runner.backward_layers == 0
    assert forward.layer_runner.forward_layers == forward.depth
    calls.clear()
    step(forward)
    assert len(calls) == forward.depth
    for a, b in zip(out, out_ref):
        assert torch.equal(a, b)
    assert g.keys() == g_ref.keys()
    for n in g:
        assert torch.equal(g[n], g_ref[n]), n
    calls.clear()
    with torch.no_grad():
        trim(_inputs('cast'))
    trim.eval()(_inputs('cast'))
    trim.double().train()(_inputs('cast').double())
    assert not calls  # not without autograd, in eval or in fp64
    with pytest.raises(ValueError, match='speedups.malloc_trim'):
        speedups.resolve(dict(malloc_trim=1))


def test_malloc_trim_layers_of_a_12_layer_backbone(monkeypatch):
    """``malloc_trim=True`` at ViT-B depth: after the forward of layers
    4-11 (the last two thirds) and when the output gradients of layers 8-11
    (the last third) arrive; ``'forward'``: after every layer's forward."""
    calls = []
    monkeypatch.setattr(speedups, 'malloc_trim', lambda: calls.append(1))

    class Backbone:
        depth, training = 12, True

    x = torch.ones(3, requires_grad=True)

    def run(trim):
        fwd, outs = [], []
        for i in range(12):
            calls.clear()
            outs.append(trim(Backbone(), i, 1, None, (x * (i + 1),))[0])
            fwd.append(bool(calls))
        calls.clear()
        sum(o.sum() for o in outs).backward()
        return fwd, len(calls)

    runner = speedups.TrimmingRunner(lambda bb, i, b, t, xs: xs)
    assert runner.trimmed_layers(12) == (range(4, 12), range(8, 12))
    assert run(runner) == ([False] * 4 + [True] * 8, 4)
    forward = speedups.TrimmingRunner(lambda bb, i, b, t, xs: xs,
                                      backward_layers=0, forward_layers=12)
    assert run(forward) == ([True] * 12, 0)


def test_malloc_trim_runs_glibc(monkeypatch):
    assert speedups.malloc_trim() in (True, False)  # 1 / 0 from glibc
    # without glibc a config asking for it is an error naming the field
    monkeypatch.setattr(speedups, '_glibc', lambda: None)
    with pytest.raises(RuntimeError, match='speedups.malloc_trim needs glibc'):
        _tiny_backbone('cast', speedups=dict(malloc_trim=True))


@pytest.mark.parametrize('kind', ['cast', 'cava'])
def test_fusion_link_attention_is_kept_not_recomputed(kind, monkeypatch):
    """``FusionPolicy(link_attention=True)``: the links' regions keep the
    window attention's outputs, so backward runs attention no more often
    than the plain model's backward does; gradients are the plain ones."""
    from torch.utils._python_dispatch import TorchDispatchMode
    ref = _tiny_backbone(kind)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    counts = {}
    for name, pol in (('plain', None),
                      ('recompute', checkpointing.FusionPolicy()),
                      ('keep', checkpointing.FusionPolicy(
                          link_attention=True))):
        model = _tiny_backbone(kind, speedups=pol and dict(checkpoint=pol))
        model.load_state_dict(ref.state_dict())
        model.train()
        torch.manual_seed(3)
        out = model(_inputs(kind))
        calls = []

        class Attention(TorchDispatchMode):
            # the attention kernels backward really runs (a kept output
            # comes from the checkpoint's cache and never reaches here)
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if getattr(func, 'overloadpacket', func) in (
                        checkpointing._ATTENTION):
                    calls.append(func)
                return func(*args, **(kwargs or {}))

        with Attention():
            sum(f.pow(2).sum() for f in out).backward()
        counts[name] = len(calls)
        grads = {n: p.grad for n, p in model.named_parameters()
                 if p.grad is not None}
        if name == 'plain':
            want = grads
        else:
            for n in want:
                torch.testing.assert_close(grads[n], want[n], rtol=0,
                                           atol=1e-6, msg=n)
    assert counts['plain'] == 0 and counts['keep'] == 0
    assert counts['recompute'] > 0  # the default recomputes it
