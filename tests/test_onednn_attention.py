"""Attention on oneDNN matmuls (models/onednn_attention.py, the CPU speed-up
``onednn_attention``): the numbers of torch's fused attention, forward and
backward, in blocks or not; the same FLOP count; kept by selective
checkpointing like the fused kernel; in a backbone it changes nothing but the
summation order."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cast_mmaction.models import onednn_attention as oa
from cast_mmaction.models import speedups

from _attention_checks import check_kept_log_sum_exp, check_token_major
from _attention_checks import forward_runs_per_checkpointed_step
from _attention_checks import qkv as _qkv

pytestmark = pytest.mark.skipif(
    oa._LP is None, reason='this torch build has no oneDNN linear')


@pytest.mark.parametrize('shape, block_bytes, strided', [
    ((2, 3, 40, 40, 16), 4 << 20, False),   # one block
    ((2, 3, 70, 50, 16), 1024, False),      # Lq != Lk, blocks of 16 rows
    ((1, 2, 97, 97, 32), 4096, True),       # uneven blocks, strided heads
])
def test_forward_and_backward_equal_the_fused_kernel(shape, block_bytes,
                                                     strided, monkeypatch):
    monkeypatch.setattr(oa, 'BLOCK_BYTES', block_bytes)
    b, h, lq, lk, d = shape
    q, k, v = _qkv(b, h, lq, lk, d, strided=strided)
    g = torch.randn(b, h, lq, d, generator=torch.Generator().manual_seed(9))
    want = F.scaled_dot_product_attention(q, k, v)
    want_grads = torch.autograd.grad(want, (q, k, v), g)
    got = oa.onednn_sdpa(q, k, v)
    got_grads = torch.autograd.grad(got, (q, k, v), g)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, e in zip(got_grads, want_grads):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
    # without autograd: no log-sum-exp, the same output
    with torch.no_grad():
        torch.testing.assert_close(oa.onednn_sdpa(q, k, v), got, rtol=1e-6,
                                   atol=1e-6)
    if block_bytes < 4 << 20:
        assert oa.block_rows(lq, lk) < lq  # the blocked path ran


@pytest.mark.parametrize('block_bytes', [4 << 20, 1024])
def test_kept_log_sum_exp_is_the_natural_log_of_the_scores(block_bytes,
                                                           monkeypatch):
    """The forward's scores are in base 2 (exp2); what it keeps for backward
    is the natural log-sum-exp of ``scale q k^T``, as the fused kernel's."""
    monkeypatch.setattr(oa, 'BLOCK_BYTES', block_bytes)
    check_kept_log_sum_exp(oa.onednn_sdpa_op, 16)


def test_large_scores_do_not_overflow():
    """Rows whose scores span far beyond exp's fp32 range (|s| ~ 1e3) give
    the softmax of the fused kernel, forward and backward: the row maximum
    is subtracted before exp2, the kept log-sum-exp in backward."""
    q, k, v = _qkv(1, 2, 40, 40, 16)
    with torch.no_grad():
        q.mul_(60)
        k.mul_(60)
    g = torch.randn(1, 2, 40, 16, generator=torch.Generator().manual_seed(3))
    want = F.scaled_dot_product_attention(q, k, v)
    got = oa.onednn_sdpa(q, k, v)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for a, e in zip(torch.autograd.grad(got, (q, k, v), g),
                    torch.autograd.grad(want, (q, k, v), g)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-3)


def test_block_rows_is_a_fact_of_the_shapes():
    assert oa.block_rows(1568, 1568) == 523  # 3 equal blocks of <= 4 MiB
    assert oa.block_rows(197, 197) == 197
    assert oa.worth_it(1568, 1568) and not oa.worth_it(197, 197)


def test_flops_are_counted_as_the_fused_kernel():
    speedups.register_flop_formulas()
    q, k, v = _qkv(2, 3, 64, 48, 16)
    counts = []
    for fn in (F.scaled_dot_product_attention, oa.onednn_sdpa):
        with FlopCounterMode(display=False) as fc:
            fn(q, k, v).sum().backward()
        counts.append(fc.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_selective_checkpointing_keeps_its_output(monkeypatch):
    """The 'attention' save policy keeps the operator's outputs: the region's
    recompute in backward does not run attention again."""
    calls = []
    real = oa._fwd
    monkeypatch.setattr(oa, '_fwd', lambda *a: calls.append(1) or real(*a))
    assert forward_runs_per_checkpointed_step(oa.onednn_sdpa, calls, 8) == {
        True: 1, False: 2}


@pytest.mark.parametrize('kind', ['cast', 'cava'])
def test_in_a_backbone_it_gives_the_reference_numbers(kind, monkeypatch):
    """With the size threshold lowered to reach the tiny test model, the
    experts' attention runs here (counted) and outputs and gradients equal
    the reference model's to fp32 rounding; in fp64 it does not run."""
    from test_speedups import _inputs, _pair, _step
    monkeypatch.setattr(oa, 'MIN_SCORES', 1)
    calls = []
    real = oa._fwd
    monkeypatch.setattr(oa, '_fwd', lambda *a: calls.append(1) or real(*a))
    ref, fast = _pair(kind, dict(onednn_attention=True))
    x = _inputs(kind)
    out_ref, want = _step(ref, x)
    out, got = _step(fast, x)
    assert calls
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-4,
                                   msg=n)
    calls.clear()
    _step(fast.double(), _inputs(kind, torch.float64))
    assert not calls


def test_output_and_gradients_are_token_major():
    """Output and q / k / v gradients come (B, L, H, d)-contiguous: merging
    the heads back into (B, L, H d) is a view (no copy) in the experts."""
    grads = check_token_major(oa.onednn_sdpa,
                              *_qkv(2, 3, 40, 40, 16, strided=True))
    for g in grads:
        assert g.transpose(1, 2).is_contiguous()
