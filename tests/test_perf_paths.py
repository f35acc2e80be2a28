"""The memory / speed paths of the model compute what the plain modules do."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cast_mmaction.models.speedups import frozen_mlp
from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model


def _plain_mlp(x, fc1, fc2, act):
    h = fc1(x)
    h = h * torch.sigmoid(1.702 * h) if act == 'quick_gelu' else F.gelu(h)
    return fc2(h)


def _frozen_pair(dtype=torch.float64):
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(12, 40).to(dtype), nn.Linear(40, 12).to(dtype)
    for p in list(fc1.parameters()) + list(fc2.parameters()):
        nn.init.normal_(p, std=0.3)
        p.requires_grad_(False)
    return fc1, fc2


@pytest.mark.parametrize('act', ['gelu', 'quick_gelu'])
def test_frozen_mlp_matches_plain_mlp_and_its_gradient(act):
    fc1, fc2 = _frozen_pair()
    x = torch.randn(2, 7, 12, dtype=torch.float64, requires_grad=True)
    y, ref = frozen_mlp(x, fc1, fc2, act), _plain_mlp(x, fc1, fc2, act)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    gx, = torch.autograd.grad(y, x, g)
    gr, = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gr, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: frozen_mlp(t, fc1, fc2, act),
                                    (x, ))
    with torch.no_grad():  # the in-place inference path
        torch.testing.assert_close(frozen_mlp(x, fc1, fc2, act), ref,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act', ['gelu', 'quick_gelu'])
def test_frozen_mlp_keeps_only_the_pre_activation(act):
    fc1, fc2 = _frozen_pair(torch.float32)
    x = torch.randn(3, 5, 12, requires_grad=True)
    saved = []

    def pack(t):
        if not isinstance(t, nn.Parameter):
            saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        frozen_mlp(x, fc1, fc2, act)
    hidden = 3 * 5 * 40
    # the pre-activation only (the weights are kept by reference)
    assert saved == [hidden]
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _plain_mlp(x, fc1, fc2, act)
    # plain autograd: QuickGELU keeps its input and its sigmoid
    plain = sum(n for n in saved if n == hidden)
    assert plain >= (2 * hidden if act == 'quick_gelu' else hidden)


def test_trainable_mlp_takes_the_module_path():
    fc1, fc2 = _frozen_pair()
    fc2.weight.requires_grad_(True)
    x = torch.randn(4, 12, dtype=torch.float64)
    frozen_mlp(x, fc1, fc2, 'quick_gelu').sum().backward()
    assert fc2.weight.grad is not None and fc2.weight.grad.abs().sum() > 0


def test_frozen_mlp_under_autocast_matches_linear_under_autocast():
    fc1, fc2 = _frozen_pair(torch.float32)
    x = torch.randn(6, 12, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = frozen_mlp(x, fc1, fc2, 'gelu')
        ref = _plain_mlp(x, fc1, fc2, 'gelu')
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    g = torch.randn(6, 12).to(torch.bfloat16)
    gx, = torch.autograd.grad(y, x, g)
    gr, = torch.autograd.grad(ref, x, g)
    assert gx.dtype == torch.float32
    torch.testing.assert_close(gx, gr, rtol=2e-2, atol=2e-2)


def _tiny(**backbone):
    cfg = cast_recognizer_cfg(num_classes=5, embed_dim=64, depth=3,
                              num_heads=4, num_frames=8, img_size=32)
    cfg['backbone'].update(backbone)
    return build_model(cfg)


def _randomise_trainable(model):
    torch.manual_seed(1)
    for p in model.parameters():
        if p.requires_grad and p.ndim > 1:
            nn.init.normal_(p, std=0.05)


def test_frozen_dtype_equals_autocast_and_halves_frozen_weights():
    ref = _tiny()
    _randomise_trainable(ref)
    low = _tiny(frozen_dtype='bfloat16')
    low.load_state_dict(ref.state_dict())
    frozen = [(n, p) for n, p in low.backbone.experts.named_parameters()
              if not p.requires_grad]
    assert {p.dtype for n, p in frozen if 'ln' not in n
            and 'norm' not in n} == {torch.bfloat16}
    assert {p.dtype for n, p in frozen if 'ln_' in n
            or 'norm' in n} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in low.parameters()
               if p.requires_grad)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        a, b = ref.backbone(x), low.backbone(x)
    for u, v in zip(a, b):  # global autocast: the same numbers
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    with torch.no_grad():  # no global autocast: experts in bf16, rest fp32
        c, d = low.backbone(x), ref.backbone(x)
    for u, v in zip(c, d):
        assert u.dtype == torch.float32
        assert (u - v).abs().max() < 0.1 * v.abs().max()
        assert (u - v).abs().max() > 0
    low.train()
    sum(f.sum() for f in low.backbone(x)).backward()
    grads = [p.grad for n, p in low.backbone.named_parameters()
             if p.requires_grad and 'attn_adapters' in n]
    assert grads and all(g is not None and g.dtype == torch.float32
                         for g in grads)


def test_bad_frozen_dtype_names_the_field():
    with pytest.raises(ValueError, match='frozen_dtype'):
        _tiny(frozen_dtype='int8')


@pytest.mark.parametrize('with_cp, layers', [(True, {0, 1, 2}), (1, {2}),
                                             ([0, 2], {0, 2}),
                                             (False, set())])
def test_partial_activation_checkpointing_is_exact(with_cp, layers):
    ref = _tiny()
    _randomise_trainable(ref)
    cp = _tiny(with_cp=with_cp)
    cp.load_state_dict(ref.state_dict())
    assert cp.backbone.cp_layers == layers
    x = torch.randn(2, 3, 8, 32, 32)
    for m in (ref, cp):
        m.train()
        for mod in m.modules():  # no drop path randomness
            if hasattr(mod, 'p'):
                mod.p = 0.0
        sum(f.pow(2).sum() for f in m.backbone(x)).backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), cp.named_parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6,
                                       msg=n)


def test_bad_checkpoint_layers_name_the_field():
    with pytest.raises(ValueError, match='with_cp'):
        _tiny(with_cp=[5])
    with pytest.raises(ValueError, match='with_cp'):
        _tiny(with_cp=4)


def test_onednn_linear_matches_f_linear_in_values_and_gradients():
    from cast_mmaction.models.speedups import onednn_linear as linear
    torch.manual_seed(0)
    x = torch.randn(4, 70, 96, requires_grad=True)
    w = torch.randn(160, 96, requires_grad=True)
    b = torch.randn(160, requires_grad=True)
    y = linear(x, w, b)
    assert y.grad_fn is not None and 'Linear' in type(y.grad_fn).__name__
    ref = F.linear(x.double(), w.double(), b.double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-4)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), g)
    refs = torch.autograd.grad(ref, (x, w, b), g.double())
    for a, r in zip(grads, refs):
        torch.testing.assert_close(a.double(), r.double(), rtol=1e-5,
                                   atol=1e-3)
    # frozen weight: no weight gradient, the input is not kept
    w.requires_grad_(False)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.shape) or t, lambda t: t):
        y = linear(x, w, b)
    assert tuple(x.shape) not in [tuple(s) for s in saved]
    assert tuple(x.reshape(-1, 96).shape) not in [tuple(s) for s in saved]
    assert type(linear(x, w, b).grad_fn).__name__ == '_LinearBackward'
    # other dtypes and autocast take F.linear
    xd = x.detach().double()
    torch.testing.assert_close(linear(xd, w.double(), b.double()),
                               F.linear(xd, w.double(), b.double()),
                               rtol=0, atol=0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = linear(x, w, b)
        assert y.dtype == torch.bfloat16
        assert type(y.grad_fn).__name__ != '_LinearBackward'


@pytest.mark.parametrize('onednn', [False, True])
def test_frozen_mlp_fp32_fast_path_matches_the_plain_mlp(onednn):
    for act in ('gelu', 'quick_gelu'):
        fc1, fc2 = _frozen_pair(torch.float32)
        x = torch.randn(3, 50, 12, requires_grad=True)
        y = frozen_mlp(x, fc1, fc2, act, onednn)
        ref = _plain_mlp(x, fc1, fc2, act)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(y)
        gx, = torch.autograd.grad(y, x, g)
        gr, = torch.autograd.grad(ref, x, g)
        torch.testing.assert_close(gx, gr, rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # fused activation in the first matmul
            torch.testing.assert_close(frozen_mlp(x, fc1, fc2, act, onednn),
                                       ref, rtol=1e-5, atol=1e-5)


def test_torch_compile_matches_eager_in_values_and_gradients():
    """``torch.compile`` of a CAST recognizer (as ``tools/benchmark.py
    --compile`` uses it; inductor on CPU) gives the eager model's logits and
    gradients of the trainable parameters."""
    torch.manual_seed(0)
    model = build_model(cast_recognizer_cfg(
        num_classes=5, embed_dim=32, depth=1, num_heads=2, num_frames=4,
        img_size=32, patch_size=16))
    model.train()
    for p in model.parameters():  # zero-initialised up-projections
        if p.requires_grad:
            nn.init.normal_(p, std=0.05)
    x = torch.randn(2, 3, 4, 32, 32)

    def step(fn):
        model.zero_grad(set_to_none=True)
        out = fn(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone()
                              for n, p in model.named_parameters()
                              if p.grad is not None}

    def eager(inp):
        return model.cls_head(model.backbone(inp))

    ref_out, ref_grads = step(eager)
    out, grads = step(torch.compile(eager))
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for n, g in grads.items():
        torch.testing.assert_close(g, ref_grads[n], rtol=1e-3, atol=1e-5,
                                   msg=n)


def test_onednn_linear_is_decided_from_cpu_facts_never_from_a_timing():
    """``onednn_linear='auto'``: on for AMD with AVX-512 (where it measured
    ~2x), off on Intel and AVX2-only AMD; the same facts give the same
    answer every time, and nothing in the package times a path."""
    import pathlib
    from cast_mmaction.models import speedups
    amd512 = dict(cpu_vendor='AuthenticAMD', cpu_model='AMD EPYC',
                  cpu_isa=['avx2', 'avx512f'])
    amd2 = dict(cpu_vendor='AuthenticAMD', cpu_model='AMD EPYC 7B12',
                cpu_isa=['avx2', 'fma'])
    intel = dict(cpu_vendor='GenuineIntel', cpu_model='Intel Xeon',
                 cpu_isa=['avx2', 'avx512f'])
    has = speedups._LP is not None
    assert speedups.onednn_linear_rule(amd512)[0] is has
    assert speedups.onednn_linear_rule(amd2)[0] is False
    assert speedups.onednn_linear_rule(intel)[0] is False
    assert speedups.onednn_linear_rule({})[0] is False
    for facts in (amd512, amd2, intel):
        got = {speedups.resolve('cpu', facts)['onednn_linear']
               for _ in range(3)}
        assert len(got) == 1
    # no timing decides a numeric path: the model code reads no clock
    root = pathlib.Path(speedups.__file__).parent  # cast_mmaction/models
    for f in root.rglob('*.py'):
        text = f.read_text()
        for clock in ('perf_counter', 'process_time', 'time.time(',
                      'monotonic', 'onednn_linear_faster'):
            assert clock not in text, (f, clock)


@pytest.mark.parametrize('batch,p', [(1, 0.5), (6, 0.5), (6, 0.01)])
def test_drop_path_is_timms_mask_over_keep_in_one_pass(batch, p):
    """``DropPath`` computes timm's ``x * (mask / keep)`` bit for bit (a NaN
    carried the same way), gradient included, and draws the same random
    numbers (the next draw after it is the same)."""
    from cast_mmaction.models.layers import DropPath
    drop = DropPath(p).train()
    keep = 1.0 - p
    seen = set()
    for seed in range(12):
        x = torch.randn(batch, 5, 7, requires_grad=True)
        x.data[0, 0, 0] = float('nan')
        torch.manual_seed(seed)
        y = drop(x)
        after = torch.rand(3)
        torch.manual_seed(seed)
        mask = x.new_empty((batch, 1, 1)).bernoulli_(keep)
        ref = x * mask.div(keep)
        assert torch.equal(torch.rand(3), after)
        assert torch.equal(y.isnan(), ref.isnan())
        assert torch.equal(y.nan_to_num(), ref.nan_to_num())
        g = torch.randn_like(y)
        gy, = torch.autograd.grad(y, x, g)
        gr, = torch.autograd.grad(ref, x, g)
        assert torch.equal(gy, gr)
        seen.add(bool(mask.all()))
    if batch == 1:  # samples kept and dropped
        assert seen == {True, False}


@pytest.mark.parametrize('p', [1.0, -0.1, 1.5])
def test_drop_path_refuses_a_rate_outside_0_to_1(p):
    """p = 1 divides by a keep probability of 0: NaN outputs; refused
    when the model is built, naming the field."""
    from cast_mmaction.models.layers import DropPath
    with pytest.raises(ValueError, match='drop_path_rate'):
        DropPath(p)


@pytest.mark.parametrize('scale', [1.0, 0.5])
@pytest.mark.parametrize('batch,p', [(1, 0.5), (6, 0.3), (6, 0.0)])
def test_drop_path_add_is_the_residual_update(batch, p, scale):
    """``DropPath.add(x, y, scale)`` is ``x + drop(scale * y)``: the same
    draw as ``drop(y)`` (a dropped sample's ``x`` unchanged, bit for bit),
    the kept samples' sum to the rounding of its fused multiply-add, the
    same gradients bit for bit, one autograd node that keeps only the
    factor (at most B numbers) for backward; in eval ``x + scale * y`` bit for bit."""
    from cast_mmaction.models.layers import DropPath
    drop = DropPath(p).train()
    seen = set()
    for seed in range(8):
        x = torch.randn(batch, 5, 7, requires_grad=True)
        y = torch.randn(batch, 5, 7, requires_grad=True)
        torch.manual_seed(seed)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: saved.append(t) or t, lambda t: t):
            out = drop.add(x, y, scale)
        after = torch.rand(3)
        torch.manual_seed(seed)
        ref = x + drop(scale * y if scale != 1.0 else y)
        assert torch.equal(torch.rand(3), after)
        assert all(t.numel() <= batch for t in saved), [
            tuple(t.shape) for t in saved]
        torch.testing.assert_close(out, ref, rtol=2e-7, atol=1e-7)
        kept = (ref != x).flatten(1).any(1)
        for b in range(batch):
            if not kept[b]:
                assert torch.equal(out[b], x[b])
        seen.update(kept.tolist())
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, (x, y), g)
        want = torch.autograd.grad(ref, (x, y), g)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    if p > 0:
        assert seen == {True, False}
    drop.eval()
    x, y = torch.randn(batch, 5, 7), torch.randn(batch, 5, 7)
    assert torch.equal(drop.add(x, y, scale), x + scale * y)


def test_videomae_tokens_are_contiguous():
    """The VideoMAE expert's tokens leave the embedding contiguous, so the
    residual stream of every layer is (a transposed view of the conv output
    made every LayerNorm copy it)."""
    from cast_mmaction.models.experts.videomae_vit import VideoMAEExpert
    e = VideoMAEExpert(embed_dim=32, depth=1, num_heads=2, patch_size=16,
                       tubelet_size=2, num_frames=4, img_size=32)
    x = e.embed(torch.randn(2, 3, 4, 32, 32))
    assert x.shape == (2, 2 * 4, 32) and x.is_contiguous()
