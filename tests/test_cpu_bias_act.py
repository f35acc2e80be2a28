"""The frozen MLP's first bias and activation (and in training its
derivative) in one C++ pass (models/cpu_bias_act.py, csrc/cpu_bias_act.cpp;
the CPU speed-up ``cpu_mlp``): the functions and derivatives against
float64 and aten, every row tail, in place or apart, the same numbers on
every thread count, clear errors; the frozen MLP's forward and backward
against the float64 reference, the product left intact for a selective
checkpoint; a backbone's outputs and gradients the reference's to fp32
rounding; an opt-in checked against the CPU and the frozen MLP."""
import pytest
import torch
import torch.nn.functional as F

from cast_mmaction.models import cpu_bias_act as cba
from cast_mmaction.models import speedups

from _attention_checks import ops_dispatched

INTEL512 = dict(cpu_vendor='GenuineIntel', cpu_model='Intel Xeon',
                cpu_isa=['avx2', 'avx512f'])
needs_pass = pytest.mark.skipif(cba.unavailable() is not None,
                                reason=str(cba.unavailable()))
ACT_FN = {'gelu': F.gelu, 'silu': F.silu, 'none': lambda t: t,
          'quick_gelu': lambda t: t * torch.sigmoid(1.702 * t)}


@pytest.fixture
def passes(monkeypatch):
    """The act codes of every call of the pass (a direct extension call,
    which a dispatch mode does not see)."""
    seen = []
    real = cba.bias_act

    def spy(pre, bias, h, d, act):
        seen.append(act)
        return real(pre, bias, h, d, act)

    monkeypatch.setattr(cba, 'bias_act', spy)
    return seen


def _truth(act, v):
    """act(v) and act'(v) in float64."""
    v = v.double().requires_grad_()
    h = ACT_FN[act](v) if act != 'none' else v * 1.0
    (d, ) = torch.autograd.grad(h.sum(), v)
    return h.detach(), d


@needs_pass
@pytest.mark.parametrize('act', ['gelu', 'silu', 'quick_gelu', 'none'])
@pytest.mark.parametrize('m', [3072, 3000, 37, 5])  # rows of 16-lane vectors
@pytest.mark.parametrize('apart', [False, True])    # + a tail, a tail alone
def test_the_pass_against_float64_and_aten(act, m, apart):
    g = torch.Generator().manual_seed(m)
    pre = torch.randn(70, m, generator=g) * 4
    pre[0, :min(m, 9)] = torch.tensor([-30., -12., -5., -1e-3, 0., 1e-3, 5.,
                                       12., 30.])[:min(m, 9)]
    bias = torch.randn(m, generator=g)
    v = pre + bias
    want_h, want_d = _truth(act, v)
    got_pre = pre.clone()
    h = torch.empty_like(pre) if apart else got_pre
    d = torch.empty_like(pre) if apart else pre.new_empty(0)
    cba.extension().bias_act(got_pre, bias, h, d, cba.ACTS[act])
    if apart:
        assert torch.equal(got_pre, pre)  # the product is only read
        err = (d.double() - want_d).abs()
        assert (err <= 2e-6 + 1e-6 * want_d.abs()).all(), err.max()
        # aten's derivative (gelu_backward / silu_backward; QuickGELU's
        # autograd of mul and sigmoid): fp32 rounding
        vt = v.clone().requires_grad_()
        (aten_d, ) = torch.autograd.grad(ACT_FN[act](vt).sum(), vt)
        torch.testing.assert_close(d, aten_d, rtol=1e-5, atol=2e-6)
    err = (h.double() - want_h).abs()
    assert (err <= 1e-6 + 4e-7 * want_h.abs()).all(), err.max()
    # aten's GELU runs oneDNN's erf on the CPU: fp32 rounding apart
    torch.testing.assert_close(h, ACT_FN[act](v), rtol=1e-6, atol=2e-6)


@needs_pass
def test_the_same_numbers_on_every_thread_count():
    pre = torch.randn(333, 3072, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(3072)
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            h, d = torch.empty_like(pre), torch.empty_like(pre)
            cba.extension().bias_act(pre, bias, h, d, cba.ACTS['gelu'])
            outs.append((h, d))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0][0], h) and torch.equal(outs[0][1], d)
               for h, d in outs[1:])


@needs_pass
def test_bad_inputs_get_a_clear_error():
    ext = cba.extension()
    pre, bias, none = torch.randn(4, 32), torch.randn(32), torch.empty(0)
    with pytest.raises(RuntimeError, match='float32 CPU'):
        ext.bias_act(pre.double(), bias.double(), pre.double(), none, 1)
    with pytest.raises(RuntimeError, match='bias 1-D contiguous of its width'):
        ext.bias_act(pre, torch.randn(31), pre, none, 1)
    with pytest.raises(RuntimeError, match='dense rows'):
        t = torch.randn(32, 4).t()
        ext.bias_act(t, bias, t, none, 1)
    with pytest.raises(RuntimeError, match='act must be'):
        ext.bias_act(pre, bias, pre, none, 7)
    with pytest.raises(RuntimeError, match='h must be pre itself or a tensor '
                                           'apart'):
        big = torch.randn(8, 32)
        ext.bias_act(big[:4], bias, big[4:], none, 1)
    with pytest.raises(RuntimeError, match='d must be a tensor apart'):
        ext.bias_act(pre, bias, torch.empty_like(pre), pre, 1)
    with pytest.raises(RuntimeError, match=r'd must be \[4, 32\]'):
        ext.bias_act(pre, bias, torch.empty_like(pre), torch.empty(4, 31), 1)
    x = torch.randn(4, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match='records no gradient'):
        cba.mm_bias_act(x, torch.randn(16, 8), torch.randn(16), 'gelu',
                        derivative=False)


class _FC:
    def __init__(self, w, b):
        self.weight, self.bias = w, b


def _mlp_ref(x, w1, b1, w2, b2, act):
    h = F.linear(x, w1, b1)
    h = h * torch.sigmoid(1.702 * h) if act == 'quick_gelu' else F.gelu(h)
    return F.linear(h, w2, b2)


@needs_pass
@pytest.mark.parametrize('act', ['gelu', 'quick_gelu'])
def test_the_frozen_mlp_forward_and_backward_against_float64(act, passes):
    """Training: the first product an ``mm``, no ``addmm`` for it and no
    ``gelu_backward`` / ``silu_backward`` (the kept derivative multiplies
    the gradient), for QuickGELU no pass scaling the input or output by
    1.702; inference: the activation written over the product; both
    against float64 autograd of the plain MLP."""
    g = torch.Generator().manual_seed(3)
    x64 = torch.randn(3, 50, 64, generator=g, dtype=torch.float64)
    w1 = torch.randn(256, 64, generator=g, dtype=torch.float64) * 0.2
    b1 = torch.randn(256, generator=g, dtype=torch.float64)
    w2 = torch.randn(64, 256, generator=g, dtype=torch.float64) * 0.1
    b2 = torch.randn(64, generator=g, dtype=torch.float64)
    gy = torch.randn(3, 50, 64, generator=g, dtype=torch.float64)
    x64.requires_grad_()
    ref_y = _mlp_ref(x64, w1, b1, w2, b2, act)
    (ref_g, ) = torch.autograd.grad(ref_y, x64, gy)
    fc1, fc2 = _FC(w1.float(), b1.float()), _FC(w2.float(), b2.float())
    x = x64.detach().float().requires_grad_()

    def train():
        y = speedups.frozen_mlp(x, fc1, fc2, act, cpu_mlp=True)
        return y, torch.autograd.grad(y, x, gy.float())[0]

    (y, gx), ops = ops_dispatched(train)
    assert ops.count('aten.mm.default') == 3, ops  # first product, 2 grads
    assert ops.count('aten.addmm.default') == 1, ops  # fc2's
    assert passes == [cba.ACTS[act]]
    assert not any('gelu' in o or 'silu' in o for o in ops), ops
    # backward's one multiply by the kept derivative, nothing else scales
    assert [o for o in ops if o.startswith(('aten.mul', 'aten.div'))] == [
        'aten.mul_.Tensor'], ops
    torch.testing.assert_close(y.double(), ref_y.detach(), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(gx.double(), ref_g, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        y_inf, ops = ops_dispatched(
            lambda: speedups.frozen_mlp(x, fc1, fc2, act, cpu_mlp=True))
    assert ops.count('aten.mm.default') == 1, ops
    assert y_inf.grad_fn is None
    torch.testing.assert_close(y_inf, y.detach(), rtol=0, atol=0)


@needs_pass
@pytest.mark.parametrize('act', ['gelu', 'quick_gelu'])
def test_the_frozen_mlp_added_into_the_residual_against_float64(act):
    """``residual=`` with the pass: the second product is one ``addmm_``
    into ``residual + b2`` (no ``addmm`` writing the bias, no add of the
    output to the residual), forward and backward against float64; the
    residual's gradient is the output's."""
    g = torch.Generator().manual_seed(5)
    x64 = torch.randn(2, 40, 64, generator=g, dtype=torch.float64)
    r64 = torch.randn(2, 40, 64, generator=g, dtype=torch.float64)
    w1 = torch.randn(256, 64, generator=g, dtype=torch.float64) * 0.2
    b1 = torch.randn(256, generator=g, dtype=torch.float64)
    w2 = torch.randn(64, 256, generator=g, dtype=torch.float64) * 0.1
    b2 = torch.randn(64, generator=g, dtype=torch.float64)
    gy = torch.randn(2, 40, 64, generator=g, dtype=torch.float64)
    x64.requires_grad_()
    ref_y = r64 + _mlp_ref(x64, w1, b1, w2, b2, act)
    (ref_g, ) = torch.autograd.grad(ref_y, x64, gy)
    fc1, fc2 = _FC(w1.float(), b1.float()), _FC(w2.float(), b2.float())
    x = x64.detach().float().requires_grad_()
    r = r64.float().requires_grad_()

    def train():
        y = speedups.frozen_mlp(x, fc1, fc2, act, cpu_mlp=True, residual=r)
        return y, torch.autograd.grad(y, (x, r), gy.float())

    (y, (gx, gr)), ops = ops_dispatched(train)
    assert ops.count('aten.addmm_.default') == 1, ops
    assert 'aten.addmm.default' not in ops, ops
    assert ops.count('aten.add.Tensor') == 1, ops  # residual + b2
    torch.testing.assert_close(y.double(), ref_y.detach(), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(gx.double(), ref_g, rtol=1e-5, atol=1e-5)
    assert torch.equal(gr, gy.float())

    def residual_only():  # an input that needs no gradient: no backward GEMM
        y = speedups.frozen_mlp(x.detach(), fc1, fc2, act, cpu_mlp=True,
                                residual=r)
        return torch.autograd.grad(y, r, gy.float())[0]

    g_only, ops = ops_dispatched(residual_only)
    assert ops.count('aten.mm.default') == 1, ops  # the forward's first
    assert torch.equal(g_only, gy.float())
    with torch.no_grad():
        y_inf = speedups.frozen_mlp(x, fc1, fc2, act, cpu_mlp=True,
                                    residual=r)
    torch.testing.assert_close(y_inf, y.detach(), rtol=0, atol=0)


@needs_pass
def test_a_selective_checkpoint_keeping_the_product_replays_it_unchanged():
    """Training only reads the product: a checkpoint that keeps every
    ``mm`` output (as ``SavePolicy(widen=(3, 4))`` keeps the MLP's first)
    gives the gradient of the run without a checkpoint."""
    from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,
                                        create_selective_checkpoint_contexts)

    def keep_mm(ctx, op, *args, **kwargs):
        return (CheckpointPolicy.MUST_SAVE if op == torch.ops.aten.mm.default
                else CheckpointPolicy.PREFER_RECOMPUTE)

    g = torch.Generator().manual_seed(4)
    fc1 = _FC(torch.randn(128, 32, generator=g) * 0.3, torch.randn(128))
    fc2 = _FC(torch.randn(32, 128, generator=g) * 0.1, torch.randn(32))
    x = torch.randn(2, 20, 32, generator=g, requires_grad=True)

    def f(t):
        return speedups.frozen_mlp(t, fc1, fc2, 'gelu', cpu_mlp=True)

    (want, ) = torch.autograd.grad(f(x).square().sum(), x)
    y = checkpoint(f, x, use_reentrant=False,
                   context_fn=lambda: create_selective_checkpoint_contexts(
                       keep_mm))
    (got, ) = torch.autograd.grad(y.square().sum(), x)
    assert torch.equal(got, want)


@pytest.mark.parametrize('cpu_mlp', [False, True])
def test_a_kept_product_is_unchanged_where_the_mlp_needs_no_gradient(
        cpu_mlp):
    """A frozen MLP on an input that needs no gradient, in a selective
    checkpoint that keeps its first product (``addmm``, or ``mm`` with the
    pass), before a trainable layer: the activation is not written over the
    kept product (autograd is on), so the recompute gives the trainable
    layer the forward's input and the gradient of the run without a
    checkpoint."""
    if cpu_mlp and cba.unavailable():
        pytest.skip(cba.unavailable())
    from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,
                                        create_selective_checkpoint_contexts)
    kept = torch.ops.aten.mm.default if cpu_mlp else \
        torch.ops.aten.addmm.default

    def keep_products(ctx, op, *args, **kwargs):
        return (CheckpointPolicy.MUST_SAVE if op == kept
                else CheckpointPolicy.PREFER_RECOMPUTE)

    g = torch.Generator().manual_seed(6)
    fc1 = _FC(torch.randn(128, 32, generator=g) * 0.3, torch.randn(128))
    fc2 = _FC(torch.randn(32, 128, generator=g) * 0.1, torch.randn(32))
    head = torch.nn.Linear(32, 4)
    x = torch.randn(2, 20, 32, generator=g)  # needs no gradient

    def f(t):
        return head(speedups.frozen_mlp(t, fc1, fc2, 'gelu',
                                        cpu_mlp=cpu_mlp))

    want = torch.autograd.grad(f(x).square().sum(), head.weight)[0]
    y = checkpoint(f, x, use_reentrant=False,
                   context_fn=lambda: create_selective_checkpoint_contexts(
                       keep_products))
    got = torch.autograd.grad(y.square().sum(), head.weight)[0]
    assert torch.equal(got, want)


@needs_pass
@pytest.mark.parametrize('kind', ['cast', 'cava'])
def test_in_a_backbone_the_reference_outputs_and_gradients(kind, passes):
    import test_speedups as ts
    ref, fast = ts._pair(kind, dict(preset='cpu', cpu_mlp=True))
    mlps = [m for m in fast.modules()
            if isinstance(m, (speedups.FrozenCLIPMlp,
                              speedups.FrozenVideoMAEMlp))]
    assert mlps and all(m.speedup_cpu_mlp for m in mlps)
    x = ts._inputs(kind)
    out_ref, want = ts._step(ref, x)
    (out, grads), ops = ops_dispatched(lambda: ts._step(fast, x))
    assert len(passes) == len(mlps)
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert grads.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(grads[k], want[k], rtol=1e-4, atol=1e-4,
                                   msg=k)
    fast.eval(), ref.eval()
    with torch.no_grad():
        for a, b in zip(fast(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_asked_for_with_the_frozen_mlp_checked_against_the_cpu():
    sp = speedups.resolve(dict(preset='cpu', cpu_mlp=True), facts=INTEL512)
    assert sp['cpu_mlp'] is True and sp['frozen_mlp'] is True
    assert 'cpu_mlp' in sp.enabled
    on, why = sp.decide('cuda')['cpu_mlp']
    assert not on and 'fp32 CPU' in why
    with pytest.raises(ValueError, match='cpu_mlp=True.*frozen_mlp=True'):
        speedups.resolve(dict(cpu_mlp=True), facts=INTEL512)
    with pytest.raises(ValueError, match='cpu_mlp=True.*AVX-512'):
        speedups.resolve(dict(frozen_mlp=True, cpu_mlp=True),
                         facts=dict(INTEL512, cpu_isa=['avx2']))
    with pytest.raises(ValueError, match="cpu_mlp='yes'.*'auto'"):
        speedups.resolve(dict(frozen_mlp=True, cpu_mlp='yes'),
                         facts=INTEL512)


def test_no_build_on_a_cpu_without_avx512(monkeypatch):
    """A clear error naming the setting, not an illegal instruction."""
    import cast_mmaction.utils as utils
    monkeypatch.setattr(utils, 'cpu_facts', lambda: dict(
        INTEL512, cpu_isa=['avx2'], cpu_model='Old CPU'))
    cba.extension.cache_clear()
    try:
        with pytest.raises(RuntimeError, match='cpu_mlp.*AVX-512F.*Old CPU'):
            cba.extension()
        assert 'AVX-512F' in cba.unavailable()
    finally:
        cba.extension.cache_clear()


@needs_pass
def test_a_profiler_sees_the_pass_as_elementwise():
    """Outside a profiler the extension is called bare; under one, it runs
    under its own label, which tools/benchmark.py's profile counts as an
    element-wise pass."""
    from torch.profiler import ProfilerActivity, profile

    from _tools import load_tool
    benchmark = load_tool('benchmark')
    x, w, b = torch.randn(64, 96), torch.randn(128, 96), torch.randn(128)
    cba.extension()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.no_grad():
            cba.mm_bias_act(x, w, b, 'gelu', derivative=False)
    names = [ev.name for ev in prof.events()]
    assert 'cast_mmaction::cpu_bias_act' in names, names
    assert benchmark.op_category('cast_mmaction::cpu_bias_act') == \
        'elementwise'
