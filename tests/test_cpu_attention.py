"""Attention in one C++ kernel for AVX-512 CPUs (models/cpu_attention.py,
csrc/cpu_attention.cpp; the CPU speed-up ``cpu_attention``): the numbers of
torch's fused attention, forward and backward, on every tail of its blocks;
the same numbers on every run and thread count; the same FLOP count; kept by
selective checkpointing; in a backbone (experts and B-CAST links) it changes
nothing but the summation order; an opt-in checked against the CPU."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cast_mmaction.models import cpu_attention as ca
from cast_mmaction.models import speedups

from _attention_checks import check_kept_log_sum_exp, check_token_major
from _attention_checks import forward_runs_per_checkpointed_step
from _attention_checks import ops_dispatched
from _attention_checks import qkv as _qkv

INTEL512 = dict(cpu_vendor='GenuineIntel', cpu_model='Intel Xeon',
                cpu_isa=['avx2', 'avx512f'])


needs_kernel = pytest.mark.skipif(ca.unavailable() is not None,
                                  reason=str(ca.unavailable()))


def _reference(q, k, v, g):
    """Forward and gradients in fp64: the truth both kernels round."""
    q2, k2, v2 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q2, k2, v2)
    return out, torch.autograd.grad(out, (q2, k2, v2), g.double())


@needs_kernel
@pytest.mark.parametrize('shape, strided', [
    ((2, 3, 40, 40, 32), False),    # rows 3 x 12 + 4 (backward: + 6), keys 2 panels + 8
    ((1, 2, 97, 301, 64), False),   # Lq != Lk; rows 2 x 48 + 6; keys in one block, 18 panels + 13
    ((1, 2, 30, 845, 64), False),   # keys in 3 blocks of 288, the last of 269
    ((2, 2, 5, 1, 32), False),      # one key, fewer rows than a block
    ((3, 2, 8, 8, 32), False),      # B-CAST's temporal link: 8 frames
    ((1, 2, 197, 197, 64), True),   # CLIP's heads, from packed q / k / v
    ((1, 1, 520, 520, 32), True),   # keys in 2 blocks: 272 + 248
    ((2, 2, 33, 29, 16), False),    # the other compiled widths
    ((1, 3, 45, 45, 48), True),
    ((1, 4, 50, 50, 24), True),     # padded to 32 (a reference dump's heads)
    ((2, 4, 7, 9, 12), False),      # padded to 16
])
def test_forward_and_backward_are_the_fused_kernels(shape, strided):
    b, h, lq, lk, d = shape
    q, k, v = _qkv(b, h, lq, lk, d, strided=strided)
    g = torch.randn(b, h, lq, d, generator=torch.Generator().manual_seed(9))
    want, want_grads = _reference(q, k, v, g)
    fused = F.scaled_dot_product_attention(q, k, v)
    fused_grads = torch.autograd.grad(fused, (q, k, v), g)
    got = ca.cpu_sdpa(q, k, v)
    got_grads = torch.autograd.grad(got, (q, k, v), g)
    # as close to the fp64 truth as the fused kernel is (fp32 rounding)
    err = (got.double() - want).abs().max().item()
    fused_err = (fused.double() - want).abs().max().item()
    assert err <= max(4 * fused_err, 2e-6), (err, fused_err)
    for a, f, e in zip(got_grads, fused_grads, want_grads):
        err = (a.double() - e).abs().max().item()
        fused_err = (f.double() - e).abs().max().item()
        assert err <= max(4 * fused_err, 4e-6), (err, fused_err)
    # without autograd: no log-sum-exp kept, the same output bit for bit
    with torch.no_grad():
        assert torch.equal(ca.cpu_sdpa(q, k, v), got)


@needs_kernel
def test_kept_log_sum_exp_is_the_natural_log_of_the_scores():
    """The kernel's scores are in base 2 (exp2); what it keeps for backward
    is the natural log-sum-exp of ``scale q k^T``, as the fused kernel's."""
    check_kept_log_sum_exp(ca.cpu_sdpa_op, 32)


@needs_kernel
def test_large_scores_do_not_overflow():
    """Scores far beyond exp's fp32 range (|s| ~ 1e3): the row maximum is
    subtracted before exp2 forward, the kept log-sum-exp in backward."""
    q, k, v = _qkv(1, 2, 40, 40, 32)
    with torch.no_grad():
        q.mul_(40)
        k.mul_(40)
    g = torch.randn(1, 2, 40, 32, generator=torch.Generator().manual_seed(3))
    want, want_grads = _reference(q, k, v, g)
    fused = F.scaled_dot_product_attention(q, k, v)
    got = ca.cpu_sdpa(q, k, v)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    # near one-hot rows: the gradients are ill-conditioned in fp32; as close
    # to the fp64 truth as the fused kernel's
    for a, f, e in zip(torch.autograd.grad(got, (q, k, v), g),
                       torch.autograd.grad(fused, (q, k, v), g), want_grads):
        assert torch.isfinite(a).all()
        err = (a.double() - e).abs().max().item()
        fused_err = (f.double() - e).abs().max().item()
        assert err <= max(4 * fused_err, 1e-4), (err, fused_err)


@needs_kernel
def test_the_same_numbers_on_every_run_and_thread_count():
    """Each output element is summed in one order, whatever the threads:
    1 and 2 threads, twice each, give the same bits."""
    q, k, v = _qkv(2, 3, 301, 301, 64, seed=4)
    g = torch.randn(2, 3, 301, 64, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            out = ca.cpu_sdpa(q, k, v)
            runs.append([out, *torch.autograd.grad(out, (q, k, v), g)])
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


@needs_kernel
def test_output_and_gradients_keep_the_inputs_layouts():
    """The output is laid out as q and each gradient as its input where
    that is dense (the heads of a (B, L, H d) tensor, or (B, H, L, d)
    itself): merging the heads back is a view and the producer's backward
    gets its own layout; for the heads of one packed projection, the
    gradients are the thirds of one contiguous (B, L, 3 H d) tensor."""
    b, h, n, d = 2, 3, 40, 32
    g = torch.Generator().manual_seed(0)
    token_major = [torch.randn(b, n, h * d, generator=g)
                   .reshape(b, n, h, d).transpose(1, 2).requires_grad_()
                   for _ in range(3)]
    # heads of a sequence that is a transposed view of its grid (B-CAST's
    # 'time' window): (B, T, N, H d) read as N sequences over T
    grid = [torch.randn(1, n, b, h * d, generator=g).transpose(1, 2)
            .reshape(b, n, h, d).transpose(1, 2).requires_grad_()
            for _ in range(3)]
    plain = _qkv(b, h, n, n, d)
    for q, k, v in (token_major, grid, plain):
        out = ca.cpu_sdpa(q, k, v)
        assert out.stride() == q.stride()
        grads = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
        for t, gt in zip((q, k, v), grads):
            assert gt.stride() == t.stride()
    grads = check_token_major(ca.cpu_sdpa, *_qkv(b, h, n, n, d, strided=True))
    assert ca.thirds_of_one(*grads)
    third = grads[0].transpose(1, 2).reshape(b, n, h * d)  # a view
    assert third.stride() == (n * 3 * h * d, 3 * h * d, 1)


def test_thirds_of_one_reads_the_layout():
    packed = torch.randn(2, 10, 3 * 4 * 16)
    heads = [t.reshape(2, 10, 4, 16).transpose(1, 2)
             for t in packed.chunk(3, dim=-1)]
    assert ca.thirds_of_one(*heads)
    assert not ca.thirds_of_one(heads[0], heads[2], heads[1])  # order
    assert not ca.thirds_of_one(*(t.clone() for t in heads))   # apart
    # the thirds of a wider tensor's slice: not one contiguous projection
    wide = torch.randn(2, 10, 4 * 4 * 16)[..., :3 * 64]
    assert not ca.thirds_of_one(*(t.reshape(2, 10, 4, 16).transpose(1, 2)
                                  for t in wide.chunk(3, dim=-1)))
    # a view whose packed extent would pass its storage's end: no error
    last = packed[:, :, 2 * 64:].reshape(2, 10, 4, 16).transpose(1, 2)
    assert not ca.thirds_of_one(last, last, last)


@needs_kernel
@pytest.mark.parametrize('shape', [(2, 3, 40, 32), (1, 2, 197, 64),
                                   (2, 1, 61, 48), (3, 2, 8, 16)])
def test_packed_gradient_is_the_unpacked_one_bit_for_bit(shape):
    """The kernel's packed backward writes dq, dk and dv as the thirds of
    one (B, L, 3, H, d) tensor: the same numbers as three tensors."""
    b, h, n, d = shape
    q, k, v = (t.detach() for t in _qkv(b, h, n, n, d, strided=True))
    g = torch.randn(b, h, n, d, generator=torch.Generator().manual_seed(3))
    out, lse = ca.cpu_sdpa_op(q, k, v, d ** -0.5, True)
    apart = ca.cpu_sdpa_backward_op(g, q, k, v, out, lse, d ** -0.5)
    packed = ca.cpu_sdpa_backward_packed_op(g, q, k, v, out, lse, d ** -0.5)
    assert packed.shape == (b, n, 3, h, d) and packed.is_contiguous()
    for i, t in enumerate(apart):
        assert torch.equal(packed[:, :, i].transpose(1, 2), t)


def _packed_heads(x, h, d):
    """The (B, H, L, d) heads of the thirds of a packed (B, L, 3 H d)
    projection ``x`` (or of its thirds, given)."""
    thirds = x.chunk(3, -1) if isinstance(x, torch.Tensor) else x
    b, n = thirds[0].shape[:2]
    return [t.reshape(b, n, h, d).transpose(1, 2) for t in thirds]


@needs_kernel
@pytest.mark.parametrize('shape', [(2, 3, 40, 32), (1, 2, 197, 64),
                                   (2, 1, 61, 48), (3, 2, 8, 16),
                                   (1, 1, 450, 32)])
def test_bias_added_in_the_kernel_is_the_sum_attended(shape):
    """``cpu_sdpa(q, k, v, bias)`` (the experts' q/k/v projection without
    its bias, the kernel adding it as it reads the rows): the output and the
    gradients of the packed projection and of the bias are those of
    attention over ``q + bias[0]``, ``k + bias[1]``, ``v + bias[2]``, to
    fp32 rounding against fp64 (every tail of the blocks: 450 keys in two
    blocks, 240 + 210); the gradient apart equals the packed one bit for
    bit."""
    b, h, n, d = shape
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(b, n, 3 * h * d, generator=gen)
    bias = torch.randn(3 * h * d, generator=gen)
    g = torch.randn(b, h, n, d, generator=gen)
    x64, b64 = (t.double().requires_grad_() for t in (x, bias))
    want = F.scaled_dot_product_attention(*_packed_heads(x64 + b64, h, d))
    want_dx, want_db = torch.autograd.grad(want, (x64, b64), g.double())
    xf, bf = (t.clone().requires_grad_() for t in (x, bias))
    got = ca.cpu_sdpa(*_packed_heads(ca.split_thirds(xf), h, d), bf)
    dx, db = torch.autograd.grad(got, (xf, bf), g)
    # the unbiased kernel on the summed projection: as close to fp64
    plain = ca.cpu_sdpa(*_packed_heads(x + bias, h, d))
    tol = max(2 * (plain.double() - want).abs().max().item(), 2e-6)
    assert (got.double() - want).abs().max().item() <= tol
    assert (dx.double() - want_dx).abs().max().item() <= 1e-5
    assert (db.double() - want_db).abs().max().item() <= 1e-5 * n * b
    # the gradient apart: the same numbers as the packed one
    q, k, v = _packed_heads(x, h, d)
    out, lse = ca.cpu_sdpa_op(q, k, v, d ** -0.5, True, bias)
    apart = ca.cpu_sdpa_backward_op(g, q, k, v, out, lse, d ** -0.5, bias)
    packed = ca.cpu_sdpa_backward_packed_op(g, q, k, v, out, lse,
                                            d ** -0.5, bias)
    for i, t in enumerate(apart):
        assert torch.equal(packed[:, :, i].transpose(1, 2), t)
    # a bias that needs no gradient: none computed, the same output
    with torch.no_grad():
        assert torch.equal(ca.cpu_sdpa(q, k, v, bias), got.detach())


@needs_kernel
@pytest.mark.parametrize('shape', [(2, 3, 40, 29, 32), (3, 2, 8, 8, 32),
                                   (1, 2, 197, 450, 64)])
def test_cross_attention_biases_added_in_the_kernel(shape):
    """B-CAST's links: q from one projection, k / v from another (their
    halves: the kernel's k/v backward), the biases concatenated, q and k of
    other lengths: the output and the gradients of both projections and
    both biases are those of attention over the biased projections, to
    fp32 rounding against fp64."""
    b, h, lq, lk, d = shape
    c = h * d
    gen = torch.Generator().manual_seed(6)
    xq = torch.randn(b, lq, c, generator=gen)
    xkv = torch.randn(b, lk, 2 * c, generator=gen)
    bq = torch.randn(c, generator=gen)
    bkv = torch.randn(2 * c, generator=gen)
    g = torch.randn(b, lq, c, generator=gen)

    def heads(t, n):
        return t.reshape(b, n, h, d).transpose(1, 2)

    def run(xq, xkv, bq, bkv, kernel):
        if kernel:
            k, v = ca.split_halves(xkv)
            out = ca.cpu_sdpa(heads(xq, lq), heads(k, lk), heads(v, lk),
                              torch.cat([bq, bkv]))
        else:
            k, v = (xkv + bkv).chunk(2, -1)
            out = F.scaled_dot_product_attention(
                heads(xq + bq, lq), heads(k, lk), heads(v, lk))
        return out.transpose(1, 2).reshape(b, lq, c)

    ins = [t.double().requires_grad_() for t in (xq, xkv, bq, bkv)]
    want = run(*ins, kernel=False)
    want_grads = torch.autograd.grad(want, ins, g.double())
    ins = [t.clone().requires_grad_() for t in (xq, xkv, bq, bkv)]
    got = run(*ins, kernel=True)
    grads = torch.autograd.grad(got, ins, g)
    assert (got.double() - want).abs().max().item() <= 1e-5
    for a, e, tol in zip(grads, want_grads, (1e-5, 1e-5, 1e-4, 1e-4)):
        assert (a.double() - e).abs().max().item() <= tol * max(
            1.0, e.abs().max().item())


@needs_kernel
def test_a_bad_bias_gets_a_clear_error():
    q, k, v = (t.detach() for t in _qkv(1, 2, 8, 8, 32))
    with pytest.raises(RuntimeError, match=r'192 values \(3, H, D\)'):
        ca.cpu_sdpa_op(q, k, v, 0.2, False, torch.zeros(100))
    with pytest.raises(RuntimeError, match='contiguous fp32 CPU'):
        ca.cpu_sdpa_op(q, k, v, 0.2, False, torch.zeros(192).double())
    qp, kp, vp = (t.detach() for t in _qkv(1, 2, 8, 8, 24))
    with pytest.raises(ValueError, match='a bias needs heads'):
        ca.cpu_sdpa(qp, kp, vp, torch.zeros(144))


@needs_kernel
@pytest.mark.parametrize('kernel', ['cpu', None])
def test_heads_attention_adds_a_bias_left_to_it(kernel):
    """``heads_attention(..., bias)``: in the kernel where it takes one,
    else added before the reference (no kernel, fp64, narrow heads)."""
    gen = torch.Generator().manual_seed(2)
    for dtype, h, d in ((torch.float32, 2, 32), (torch.float64, 2, 32),
                        (torch.float32, 2, 24)):
        x = torch.randn(2, 9, 3 * h * d, generator=gen, dtype=dtype)
        bias = torch.randn(3 * h * d, generator=gen, dtype=dtype)
        got = speedups.heads_attention(*x.chunk(3, -1), h, kernel, bias)
        want = speedups.heads_attention(*(x + bias).chunk(3, -1), h, None)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _ops_in_backward(loss, x):
    (grad, ), seen = ops_dispatched(lambda: torch.autograd.grad(loss, x))
    return grad, seen


@needs_kernel
def test_a_packed_projection_gets_its_gradient_without_a_copy():
    """``split_thirds`` (the experts' q/k/v chunks under ``cpu_attention``):
    its backward passes the kernel's packed gradient on (no concatenation),
    the same gradient as ``chunk`` with the gradients apart."""
    b, n, h, d = 2, 30, 3, 32
    x = torch.randn(b, n, 3 * h * d, requires_grad=True)
    g = torch.randn(b, n, h * d)

    def loss(split, apart=False):
        q, k, v = (t.reshape(b, n, h, d).transpose(1, 2)
                   for t in split(x * 1.0))
        if apart:  # not the thirds of one tensor: the three-tensor backward
            q, k, v = (t.clone() for t in (q, k, v))
        out = ca.cpu_sdpa(q, k, v).transpose(1, 2).reshape(b, n, h * d)
        return (out * g).sum()

    got, ops = _ops_in_backward(loss(ca.split_thirds), x)
    want, want_ops = _ops_in_backward(
        loss(lambda t: t.chunk(3, dim=-1), apart=True), x)
    assert torch.equal(got, want)
    assert 'aten.cat.default' in want_ops
    assert 'aten.cat.default' not in ops
    assert 'cast_mmaction.cpu_sdpa_backward_packed.default' in ops


def test_kv_whole_reads_the_layout():
    """k and v are the halves of one (B, L, 2 H d) tensor, contiguous or a
    transposed view (a 'time' window's sequences), or they are not."""
    h, d = 2, 8

    def halves(kv):
        b, n, _ = kv.shape
        return [t.reshape(b, n, h, d).transpose(1, 2)
                for t in kv.chunk(2, dim=-1)]

    flat = torch.randn(3, 5, 2 * h * d)
    assert torch.equal(ca.kv_whole(*halves(flat)), flat)
    grid = torch.randn(1, 5, 3, 2 * h * d)  # (B, T, N, 2 c) -> N sequences
    seq = grid.transpose(1, 2).reshape(3, 5, 2 * h * d)
    whole = ca.kv_whole(*halves(seq))
    assert whole.stride() == seq.stride() and torch.equal(whole, seq)
    k, v = halves(flat)
    assert ca.kv_whole(k, v.clone()) is None  # apart
    assert ca.kv_whole(v, k) is None  # v first: not k's right half
    assert ca.kv_whole(*halves(torch.randn(3, 5, 4 * h * d)[..., :2 * h * d])
                       ) is None  # halves of a slice with a gap after them


@needs_kernel
@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('window', ['time', 'space', 'global'])
def test_a_links_projections_get_their_gradients_without_a_copy(window,
                                                                batch):
    """B-CAST's window attention under the kernel: k / v's gradient is
    written as the kv projection's, laid out as its grid (no concatenation
    of the halves), q's and the output's in the grid's layout too: at batch
    1 no copy at all, forward or backward (a 'time' window's sequences are
    a transposed view of the grid); at batch 2 a 'time' window's sequences
    of both samples are copies (at most one each way for q and kv), the
    rest as at batch 1. The same numbers as the reference module to fp32 rounding."""
    from cast_mmaction.models.fusion import WindowCrossAttention
    torch.manual_seed(0)
    ref = WindowCrossAttention(64, 2, window, (4, 6), (4, 6))
    fast = WindowCrossAttention(64, 2, window, (4, 6), (4, 6))
    fast.load_state_dict(ref.state_dict())
    fast.__class__ = speedups.CPUKernelWindowCrossAttention
    q, kv = (torch.randn(batch, 4, 6, 64) for _ in range(2))
    g = torch.randn(batch, 4, 6, 64)

    def run(mod):
        qq, kk = (t.clone().requires_grad_() for t in (q, kv))
        out, fwd = ops_dispatched(lambda: mod(qq, kk), shapes=True)
        got, bwd = ops_dispatched(lambda: torch.autograd.grad(
            out, [qq, kk] + list(mod.parameters()), g), shapes=True)
        # copies of activations (the kernel's model concatenates the two
        # projections' biases, 3 x 64 values, to hand them to the kernel)
        return out, got, [op for op, dims in fwd + bwd
                          if ('clone' in op or 'copy' in op or 'cat' in op)
                          and dims > 1]

    out_ref, want, _ = run(ref)
    out, got, copies = run(fast)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if window == 'time' and batch > 1:
        # the sequences of q and kv, and their gradients back
        assert len(copies) <= 4 and 'aten.cat.default' not in copies, copies
    else:
        assert copies == []


def test_split_thirds_concatenates_gradients_that_are_apart():
    """Where the attention ran elsewhere (the reference path), the three
    gradients are separate tensors: concatenated, as ``chunk``'s backward."""
    x = torch.randn(2, 5, 12, requires_grad=True)
    q, k, v = ca.split_thirds(x)
    (q * 1 + k * 2 + v * 3).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.] * 4 + [2.] * 4 + [3.] * 4)
                       .expand(2, 5, 12))
    odd = torch.randn(2, 5, 10)  # not divisible by 3: plain chunk
    assert len(ca.split_thirds(odd)) == len(odd.chunk(3, dim=-1))


@needs_kernel
def test_bad_inputs_get_a_clear_error():
    q, k, v = (t.detach() for t in _qkv(1, 2, 8, 8, 32))
    with pytest.raises(RuntimeError, match='head width 16, 32, 48 or 64'):
        ca.cpu_sdpa_op(q[..., :8], k[..., :8], v[..., :8], 0.25, False)
    with pytest.raises(RuntimeError, match='fp32 CPU'):
        ca.cpu_sdpa_op(q.double(), k.double(), v.double(), 0.2, False)
    with pytest.raises(RuntimeError, match=r'k and v \(B, H, Lk, D\)'):
        ca.cpu_sdpa_op(q, k[:, :1], v, 0.2, False)


@needs_kernel
@pytest.mark.parametrize('layout', ['apart', 'thirds', 'halves'])
def test_flops_are_counted_as_the_fused_kernel(layout):
    """Every backward counts the fused kernel's FLOPs: the gradients apart,
    the thirds of a packed q/k/v projection (the experts), the halves of a
    k/v projection (B-CAST's links; a missing formula counted nothing for
    its backward)."""
    speedups.register_flop_formulas()
    if layout == 'halves':
        q = torch.randn(2, 3, 48, 32).requires_grad_()
        kv = torch.randn(2, 64, 2 * 3 * 32, requires_grad=True)
        k, v = (t.reshape(2, 64, 3, 32).transpose(1, 2)
                for t in ca.split_halves(kv * 1.0))
        assert ca.kv_whole(k, v) is not None
    else:
        q, k, v = _qkv(2, 3, 64, 64 if layout == 'thirds' else 48, 32,
                       strided=layout == 'thirds')
    counts = []
    for fn in (F.scaled_dot_product_attention, ca.cpu_sdpa):
        with FlopCounterMode(display=False) as fc:
            fn(q, k, v).sum().backward(retain_graph=True)
        counts.append(fc.get_total_flops())
    assert counts[0] == counts[1] > 0


@needs_kernel
def test_selective_checkpointing_keeps_its_output(monkeypatch):
    """The 'attention' save policy keeps the operator's outputs: the region's
    recompute in backward does not run the kernel again."""
    calls = []
    ext = ca.extension()

    class Counting:
        forward_into = staticmethod(
            lambda *a: calls.append(1) or ext.forward_into(*a))
        backward_into = staticmethod(ext.backward_into)
        backward = staticmethod(ext.backward)

    monkeypatch.setattr(ca, 'extension', lambda: Counting)
    assert forward_runs_per_checkpointed_step(ca.cpu_sdpa, calls, 32) == {
        True: 1, False: 2}


@needs_kernel
def test_in_a_backbone_it_gives_the_reference_numbers(monkeypatch):
    """Experts (heads 64 wide) and B-CAST's links (32 wide) run the kernel
    (its calls recorded by shape) and outputs and gradients equal the
    reference model's to fp32 rounding; in fp64 the reference path runs."""
    import test_speedups as ts
    # experts' heads 64 wide, B-CAST's (half the width) 32
    monkeypatch.setattr(ts, 'SIZES', dict(ts.SIZES, embed_dim=128))
    widths = []  # (Lq, Lk) of each call
    biased = []  # the calls given the q/k/v bias to add
    real = ca.cpu_sdpa

    def spy(q, k, v, bias=None):
        widths.append((q.shape[-2], k.shape[-2]))
        biased.append(bias is not None)
        return real(q, k, v, bias)

    monkeypatch.setattr(ca, 'cpu_sdpa', spy)
    ref, fast = ts._pair('cast', dict(cpu_attention=True))
    assert any(type(m) is speedups.CPUKernelWindowCrossAttention
               for m in fast.modules())
    x = ts._inputs('cast')
    out_ref, want = ts._step(ref, x)
    out, got = ts._step(fast, x)
    # both experts' self-attention and the links' window attention ran
    # here: queries and keys (5, 5) CLIP, (8, 8) VideoMAE, links over frames
    # and over a frame's patches
    assert len(widths) > 4 and len(set(widths)) > 2, widths
    # the experts' self-attention and the links' cross-attention: the
    # q / k / v biases added in the kernel
    assert all(biased), biased
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert want.keys() == got.keys() and len(want) > 10
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-4,
                                   msg=n)
    widths.clear()
    ts._step(fast.double(), ts._inputs('cast', torch.float64))
    assert not widths


@needs_kernel
@pytest.mark.parametrize('kind', ['cast', 'cava'])
def test_experts_project_q_k_v_without_the_bias_the_kernel_adds(
        kind, monkeypatch):
    """With the kernel, the experts' q/k/v projection is a plain ``mm`` (no
    ``addmm`` writing the bias into the (tokens, 3 C) output for the GEMM
    to read back): the kernel adds the bias. Where the experts' q/k/v
    biases train, their gradients are the reference model's. CAST's CLIP
    and VideoMAE, CAVA's CLIP and AST."""
    import test_speedups as ts
    monkeypatch.setattr(ts, 'SIZES', dict(ts.SIZES, embed_dim=128))
    ref, fast = ts._pair(kind, dict(cpu_attention=True))
    x = ts._inputs(kind)

    def products_of_width(bb, width=3 * 128):
        """The matmuls of ``bb``'s forward with ``width`` output columns,
        by operator."""
        from torch.utils._python_dispatch import TorchDispatchMode
        seen = []

        class Log(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func in (torch.ops.aten.addmm.default,
                            torch.ops.aten.mm.default) and (
                                out.shape[-1] == width):
                    seen.append(str(func))
                return out

        bb.eval()
        with torch.no_grad(), Log():
            bb(x)
        return seen

    layers = 2 * ts.SIZES['depth']  # both experts' self-attention
    assert products_of_width(ref) == ['aten.addmm.default'] * layers
    assert products_of_width(fast) == ['aten.mm.default'] * layers
    # the experts' q/k/v biases (CLIP's in_proj_bias, VideoMAE's q_bias and
    # v_bias, AST's qkv.bias) trained: the same gradients
    names = [n for n, _ in ref.named_parameters()
             if n.split('.')[-1] in ('in_proj_bias', 'q_bias', 'v_bias')
             or n.endswith('attn.qkv.bias')]
    per_layer = 3 if kind == 'cast' else 2  # VideoMAE's two, AST's one
    assert len(names) == per_layer * ts.SIZES['depth'], names
    for bb in (ref, fast):
        for n, p in bb.named_parameters():
            if n in names:
                p.requires_grad_(True)
    out_ref, want = ts._step(ref, x)
    out, got = ts._step(fast, x)
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for n in names:
        assert n in got and got[n].abs().sum() > 0, n
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-4,
                                   msg=n)


def test_no_kernel_load_on_a_cpu_without_avx512(monkeypatch):
    """Called directly on such a CPU (not through the speed-up, which
    refuses it when the model is built): a clear error, not SIGILL."""
    import cast_mmaction.utils as utils
    monkeypatch.setattr(utils, 'cpu_facts', lambda: dict(
        INTEL512, cpu_isa=['avx2', 'fma']))
    ca.extension.cache_clear()
    try:
        with pytest.raises(RuntimeError, match='needs AVX-512F'):
            ca.extension()
    finally:
        ca.extension.cache_clear()


def test_asked_for_checked_against_the_cpu():
    """Asked for (True) on a CPU without AVX-512F: a clear error when the
    model is built, not at the first forward (the preset's 'auto':
    tests/test_speedups.py)."""
    sp = speedups.resolve(dict(preset='cpu', cpu_attention=True),
                          facts=INTEL512)
    assert sp['cpu_attention'] is True and sp['frozen_mlp'] is True
    with pytest.raises(ValueError, match='cpu_attention=True.*AVX-512F'):
        speedups.resolve(dict(cpu_attention=True),
                         facts=dict(INTEL512, cpu_isa=['avx2']))
    with pytest.raises(ValueError, match="cpu_attention='yes'.*'auto'"):
        speedups.resolve(dict(cpu_attention='yes'), facts=INTEL512)


def test_it_takes_precedence_over_the_onednn_attention():
    sp = speedups.resolve(dict(cpu_attention=True, onednn_attention=True),
                          facts=INTEL512)
    assert speedups.attention_kernel(sp) == 'cpu'
    sp = speedups.resolve(dict(onednn_attention=True), facts=INTEL512)
    assert speedups.attention_kernel(sp) == 'onednn'
    assert speedups.attention_kernel(speedups.resolve(None)) is None
