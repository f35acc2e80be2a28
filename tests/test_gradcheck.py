"""Every custom ``torch.autograd.Function`` of the package passes
``torch.autograd.gradcheck`` in float64 in each of its branches (issue 13,
part 2).

The Functions run their fast kernels (oneDNN) on fp32 CPU tensors only; in
float64 the same Function code runs with ``torch.addmm`` / ``mm`` for its
matmuls, which is what gradcheck verifies (the math of forward and
backward, the saved-tensor logic, the needs_input_grad branches, shapes and
strides). The fp32 oneDNN path of each Function is then compared with the
float64 gradients of a plain autograd reference."""
import importlib
import inspect
import pkgutil

import pytest
import torch
import torch.nn.functional as F

import cast_mmaction
from cast_mmaction.models import speedups
from cast_mmaction.models.speedups import _FrozenMLP, _Linear, frozen_mlp
from cast_mmaction.models.speedups import onednn_linear as linear

# only the opt-in CPU speed-ups (models/speedups.py, models/cpu_attention.py)
# have Functions; the reference model has none
COVERED = {'cast_mmaction.models.speedups._Linear',
           'cast_mmaction.models.speedups._FrozenMLP',
           'cast_mmaction.models.cpu_attention._SplitParts'}
ONEDNN = speedups._LP is not None


def _package_functions():
    found = set()
    for info in pkgutil.walk_packages(cast_mmaction.__path__,
                                      'cast_mmaction.'):
        try:
            mod = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - optional extras (audio, ...)
            continue
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if (issubclass(obj, torch.autograd.Function)
                    and obj.__module__.startswith('cast_mmaction')):
                found.add(f'{obj.__module__}.{obj.__qualname__}')
    return found


def test_every_autograd_function_is_covered():
    """A Function added to the package must get a gradcheck here."""
    assert _package_functions() == COVERED


def _t(shape, seed, requires_grad=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_(
        requires_grad)


def _noncontig(t):
    """The same values as a non-contiguous view (a transposed copy)."""
    v = t.detach().transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not v.is_contiguous() or v.ndim < 2
    return v.requires_grad_(t.requires_grad)


# -- _Linear ----------------------------------------------------------------
# which of (x, weight, bias) need a gradient: training an adapter (all), a
# frozen expert's projection inside a trainable stream (x only), a layer
# on a constant input (weight and bias only)
LINEAR_GRADS = [(True, True, True), (True, False, False),
                (False, True, True), (True, True, False)]


@pytest.mark.parametrize('needs', LINEAR_GRADS)
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('layout', ['contiguous', 'noncontig_x',
                                    'transposed_w', '2d'])
def test_linear_gradcheck(needs, bias, layout):
    nx, nw, nb = needs
    if not bias and nb:
        nb = False
    shape = (7, 5) if layout == '2d' else (2, 3, 5)
    x = _t(shape, 0, nx)
    w = _t((4, 5), 1, nw)
    b = _t((4, ), 2, nb) if bias else None
    if layout == 'noncontig_x':
        x = _noncontig(_t((2, 3, 5), 0, nx))
    if layout == 'transposed_w':  # a (4, 5) view of a (5, 4) tensor
        w = _t((5, 4), 1, False).t().requires_grad_(nw)
    if not (nx or nw or nb):
        pytest.skip('nothing needs a gradient')
    assert torch.autograd.gradcheck(_Linear.apply, (x, w, b), eps=1e-6,
                                    atol=1e-8, rtol=1e-6)


@pytest.mark.skipif(not ONEDNN, reason='torch has no oneDNN _linear_pointwise')
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('noncontig', [False, True])
def test_linear_fp32_fast_path_gradients(bias, noncontig):
    """onednn_linear() on fp32 CPU tensors with grad takes _Linear on
    oneDNN; its gradients equal float64 autograd of F.linear to fp32
    precision."""
    x64, w64 = _t((3, 6, 16), 3), _t((8, 16), 4)
    b64 = _t((8, ), 5) if bias else None
    gy = _t((3, 6, 8), 6, False)
    ref = torch.autograd.grad(F.linear(x64, w64, b64), [
        t for t in (x64, w64, b64) if t is not None], gy)
    x = x64.detach().float()
    if noncontig:
        x = _noncontig(x)
    x.requires_grad_()
    w = w64.detach().float().requires_grad_()
    b = b64.detach().float().requires_grad_() if bias else None
    y = linear(x, w, b)
    assert type(y.grad_fn).__name__ == '_LinearBackward'
    got = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None],
                              gy.float())
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-5)


def test_linear_frozen_weight_keeps_no_input():
    """A frozen weight: only the weight (by reference) is saved."""
    x = _t((4, 5), 0)
    w = _t((3, 5), 1, False)
    y = _Linear.apply(x, w, None)
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 2 and saved[0] is None
    assert saved[1].data_ptr() == w.data_ptr()


def test_linear_no_grad_path_equals_f_linear():
    """The inference branch of linear() (no autograd node) in fp32 and its
    float64 fallback."""
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x, w, b = (_t((2, 3, 16), 0, False, dtype),
                   _t((8, 16), 1, False, dtype), _t((8, ), 2, False, dtype))
        with torch.no_grad():
            y = linear(x, w, b)
        assert y.grad_fn is None
        torch.testing.assert_close(y, F.linear(x, w, b), rtol=tol, atol=tol)


# -- _FrozenMLP --------------------------------------------------------------
class _FC:
    def __init__(self, w, b):
        self.weight, self.bias = w, b


def _mlp_args(act, bias, seed=0, dtype=torch.float64, noncontig=False,
              shape=(2, 3, 6)):
    x = _t(shape, seed, True, dtype)
    if noncontig:
        x = _noncontig(x)
    # scaled so the activation's curved part is exercised
    w1 = _t((10, shape[-1]), seed + 1, False, dtype) * 0.7
    w2 = _t((shape[-1], 10), seed + 2, False, dtype) * 0.5
    b1 = _t((10, ), seed + 3, False, dtype) if bias else None
    b2 = _t((shape[-1], ), seed + 4, False, dtype) if bias else None
    return x, w1, b1, w2, b2


def _mlp_ref(x, w1, b1, w2, b2, act):
    h = F.linear(x, w1, b1)
    h = h * torch.sigmoid(1.702 * h) if act == 'quick_gelu' else F.gelu(h)
    return F.linear(h, w2, b2)


@pytest.mark.parametrize('act', ['gelu', 'quick_gelu'])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('noncontig', [False, True])
def test_frozen_mlp_gradcheck(act, bias, noncontig):
    x, w1, b1, w2, b2 = _mlp_args(act, bias, noncontig=noncontig)
    assert torch.autograd.gradcheck(
        lambda x: _FrozenMLP.apply(x, w1, b1, w2, b2, act), (x, ), eps=1e-6,
        atol=1e-8, rtol=1e-6)
    # and through the public entry point (frozen fc1 / fc2 -> _FrozenMLP)
    fc1, fc2 = _FC(w1, b1), _FC(w2, b2)
    y = frozen_mlp(x, fc1, fc2, act)
    assert type(y.grad_fn).__name__ == '_FrozenMLPBackward'
    torch.testing.assert_close(y, _mlp_ref(x, w1, b1, w2, b2, act),
                               rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: frozen_mlp(x, fc1, fc2, act),
                                    (x, ), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize('act', ['gelu', 'quick_gelu'])
@pytest.mark.parametrize('bias', [True, False])
def test_frozen_mlp_added_into_a_residual_gradcheck(act, bias):
    """``residual=``: ``residual + fc2(act(fc1 x))`` with the second product
    accumulated into the residual (the backbones' MLP residual add):
    gradcheck over ``x`` and ``residual`` (its gradient is the output's),
    values against the plain sum, with and without autograd, and a
    residual that alone needs a gradient (an input that does not, e.g. the
    frozen embedding's tokens)."""
    x, w1, b1, w2, b2 = _mlp_args(act, bias)
    r = _t(x.shape, 7)
    assert torch.autograd.gradcheck(
        lambda x, r: _FrozenMLP.apply(x, w1, b1, w2, b2, act, False, False,
                                      r), (x, r), eps=1e-6, atol=1e-8,
        rtol=1e-6)
    fc1, fc2 = _FC(w1, b1), _FC(w2, b2)
    want = r + _mlp_ref(x, w1, b1, w2, b2, act)
    y = frozen_mlp(x, fc1, fc2, act, residual=r)
    assert type(y.grad_fn).__name__ == '_FrozenMLPBackward'
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        y_inf = frozen_mlp(x, fc1, fc2, act, residual=r)
    assert y_inf.grad_fn is None
    torch.testing.assert_close(y_inf, want, rtol=1e-12, atol=1e-12)
    y = frozen_mlp(x.detach(), fc1, fc2, act, residual=r)
    (g, ) = torch.autograd.grad(y, r, torch.ones_like(y))
    assert torch.equal(g, torch.ones_like(r))
    # trainable weights: plain autograd, the same sum
    ws = [None if t is None else t.detach().clone().requires_grad_()
          for t in (w1, b1, w2, b2)]
    y = frozen_mlp(x, _FC(ws[0], ws[1]), _FC(ws[2], ws[3]), act,
                   residual=r)
    assert type(y.grad_fn).__name__ != '_FrozenMLPBackward'
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act', ['gelu', 'quick_gelu'])
@pytest.mark.parametrize('bias', [True, False])
def test_frozen_mlp_fp32_fast_path(act, bias):
    """fp32 CPU: training branch (_FrozenMLP on oneDNN) and the fused
    inference branch (activation inside the first matmul, no node) against
    float64 autograd of the plain MLP."""
    x64, w1, b1, w2, b2 = _mlp_args(act, bias, shape=(3, 5, 16))
    gy = _t(x64.shape, 9, False)
    ref_y = _mlp_ref(x64, w1, b1, w2, b2, act)
    (ref_g, ) = torch.autograd.grad(ref_y, x64, gy)
    f = [None if t is None else t.float() for t in (w1, b1, w2, b2)]
    fc1, fc2 = _FC(f[0], f[1]), _FC(f[2], f[3])
    x = x64.detach().float().requires_grad_()
    y = frozen_mlp(x, fc1, fc2, act, onednn=True)
    assert type(y.grad_fn).__name__ == '_FrozenMLPBackward'
    (g, ) = torch.autograd.grad(y, x, gy.float())
    torch.testing.assert_close(y.double(), ref_y.detach(), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(g.double(), ref_g, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # inference-fused branch
        y_inf = frozen_mlp(x, fc1, fc2, act, onednn=True)
    assert y_inf.grad_fn is None
    torch.testing.assert_close(y_inf.double(), ref_y.detach(), rtol=1e-5,
                               atol=1e-5)


def test_frozen_mlp_trainable_weights_take_the_module_path():
    """A trainable fc1 / fc2 is not frozen: plain autograd, correct
    weight gradients (gradcheck over x and all weights)."""
    x, w1, b1, w2, b2 = _mlp_args('quick_gelu', True)
    ws = [t.detach().clone().requires_grad_() for t in (w1, b1, w2, b2)]

    def fn(x, w1, b1, w2, b2):
        return frozen_mlp(x, _FC(w1, b1), _FC(w2, b2), 'quick_gelu')

    y = fn(x, *ws)
    assert type(y.grad_fn).__name__ != '_FrozenMLPBackward'
    assert torch.autograd.gradcheck(fn, (x, *ws), eps=1e-6, atol=1e-8,
                                    rtol=1e-6)


@pytest.mark.parametrize('packed_grads', [False, True])
@pytest.mark.parametrize('parts, transposed', [(3, False), (2, False),
                                               (2, True)])
def test_split_parts_gradcheck(parts, transposed, packed_grads):
    """``cpu_attention._SplitParts`` (``chunk(n, -1)``: the experts' q / k /
    v thirds, B-CAST's k / v halves, also of a transposed view as a 'time'
    window's sequences are): gradcheck with the gradients apart (its
    concatenating branch) and with them the parts of one tensor laid out
    as the input (its pass-on branch, the kernel's packed gradients)."""
    from cast_mmaction.models.cpu_attention import _SplitParts
    x = _t((5, 2, 12), 0).transpose(0, 1) if transposed else _t((2, 5, 12),
                                                                  0)

    def fn(x):
        chunks = _SplitParts.apply(x, parts)
        if packed_grads:
            # one op over the whole makes the gradients the parts of one
            # tensor laid out as x (for a transposed x: the gradient of
            # a contiguous copy of x's transpose)
            whole = torch.cat(chunks, -1)
            if transposed:
                whole = whole.transpose(0, 1).contiguous()
            return (whole * 1.5).sin()
        return sum((i + 1) * c.sin() for i, c in enumerate(chunks))

    assert torch.autograd.gradcheck(fn, (x, ))
    # the branch taken: a concatenation in backward only with gradients apart
    from _attention_checks import ops_dispatched
    y = fn(x).sum()
    _, seen = ops_dispatched(y.backward)
    assert ('aten.cat.default' in seen) == (not packed_grads)
