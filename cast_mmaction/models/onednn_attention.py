"""Scaled-dot-product attention on oneDNN matmuls, for fp32 on CPU.

The CPU speed-up ``onednn_attention`` (``models/speedups.py``). PyTorch's
fused CPU attention (``_scaled_dot_product_flash_attention_for_cpu``) runs
its tiles through MKL's SGEMM, which on an AMD CPU with AVX-512 reaches less
than half of oneDNN's fp32 matmul rate (docs/benchmarks.md). Here the same
algorithm is written over oneDNN matmuls, one (batch, head) and one block of
query rows at a time so that the block's scores stay in cache:

* forward: ``S = (scale q) k^T``, ``P = softmax(S)``, ``O = P v``; with
  autograd the log-sum-exp of each row is kept, as the fused kernel keeps it;
* backward: the scores are recomputed from q, k and the log-sum-exp
  (``P = exp(S - lse)``), then ``dV += P^T dO``, ``dP = dO v^T``,
  ``dS = P (dP - rowsum(dO O))``, ``dQ = scale dS k``, ``dK += dS^T (scale q)``.

Two things keep the passes over a block's scores (rows x Lk, the only large
tensors here) few:

* the exponentials are ``exp2`` of scores in base 2 (``log2(e)`` folded into
  the query's scale): torch's vectorised ``exp2_`` ran 3.5x faster than
  ``exp_`` on this project's AMD EPYC, and the fused kernel itself uses a
  shortened exponential (``exp_u20``), so the results stay within fp32
  rounding of it;
* the backward computes the transposed blocks ``P^T`` and ``dS^T``
  (Lk x rows): the per-query terms ``- lse`` and ``- rowsum(dO O)`` are then
  per-column and ride on the matmul as its bias, and every product reads its
  operands in the layouts oneDNN takes without copying.

The output and the gradients are written token-major, (B, L, H, d), the
layout of the (B, L, H d) tensors around the attention, so that merging the
heads there is a view, not a copy.

Like the fused kernel, nothing of size Lq x Lk is kept for backward (q, k,
v, the output and the log-sum-exp are), and the FLOPs are the same: two
matmuls forward, five backward (the recompute of the scores included), which
``torch.utils.flop_counter`` counts through the oneDNN linear's formula.

The forward and backward are operators (``torch.library.custom_op``
``cast_mmaction::onednn_sdpa`` / ``onednn_sdpa_backward``), so that selective
activation checkpointing can keep the forward's outputs as it keeps the fused
kernel's (``models/checkpointing.py``). Results equal the fused kernel's up to
fp32 rounding (another summation order); the block size is a fact of the
shapes (:func:`block_rows`), never a timing.
"""
import math

import torch

from . import sdpa_ops

_LP = getattr(getattr(torch.ops, 'mkldnn', None), '_linear_pointwise', None)

# a block's scores (rows x Lk fp32) are at most this many bytes: they are
# written by one matmul and read by the softmax and the next, in cache
BLOCK_BYTES = 4 << 20
# attention with fewer scores per (batch, head) stays on the fused kernel:
# its per-head matmuls are too small for the per-call cost (CLIP's 197
# tokens per frame measured 2x slower in training, docs/benchmarks.md)
MIN_SCORES = 1 << 18


def worth_it(lq, lk):
    """Whether attention of ``lq`` queries over ``lk`` keys runs here (a
    fact of the shapes): at least :data:`MIN_SCORES` scores per head."""
    return lq * lk >= MIN_SCORES


def block_rows(lq, lk):
    """Query rows per block: the fewest equal blocks whose scores fit
    :data:`BLOCK_BYTES`."""
    most = max(16, BLOCK_BYTES // (4 * max(lk, 1)))
    blocks = max(1, math.ceil(lq / most))
    return math.ceil(lq / blocks)


LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


def _mm_t(a, w, bias=None):
    """``a @ w.T (+ bias)`` on oneDNN for 2-D row- or column-major ``a`` /
    ``w``; ``bias`` has one value per row of ``w``."""
    return _LP(a, w, bias, 'none', [], '')


def _fwd(q, k, v, scale, with_lse):
    b, h, lq, d = q.shape
    lk = k.shape[2]
    # scores in base 2: exp2(log2(e) s) = exp(s)
    qs = (q * (scale * LOG2E)).contiguous()
    kc = k.contiguous()
    vt = v.transpose(-1, -2).contiguous()  # (b, h, d, lk): the weight of P v
    # written token-major, (b, lq, h, d): the heads' layout of the (b, lq,
    # h d) tensor the attention's output projection reads, so that merging
    # the heads is a view, not a copy
    out = q.new_empty(b, lq, h, v.shape[-1])
    lse = q.new_empty(b, h, lq) if with_lse else q.new_empty(0)
    step = block_rows(lq, lk)
    for i in range(b):
        for j in range(h):
            for r in range(0, lq, step):
                s = _mm_t(qs[i, j, r:r + step], kc[i, j])
                # exp(S - max) v, then divided by the row sums: the
                # division runs over (rows, d), not (rows, Lk)
                m = s.amax(-1, keepdim=True)
                e = s.sub_(m).exp2_()
                z = e.sum(-1, keepdim=True)
                out[i, r:r + step, j] = _mm_t(e, vt[i, j]).div_(z)
                if with_lse:  # natural log: log(z) + max / log2(e)
                    lse[i, j, r:r + step] = z.log_().add_(
                        m, alpha=LN2).squeeze(-1)
    return out.transpose(1, 2), lse


@torch.library.custom_op('cast_mmaction::onednn_sdpa', mutates_args=())
def onednn_sdpa_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   scale: float, with_lse: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of attention over (B, H, L, d) q / k / v; ``lse`` is
    empty unless ``with_lse``."""
    return _fwd(q, k, v, scale, with_lse)


@torch.library.custom_op('cast_mmaction::onednn_sdpa_backward',
                         mutates_args=())
def onednn_sdpa_backward_op(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
        scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of :func:`onednn_sdpa_op` from the kept tensors."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    qs = (q * scale).contiguous()
    q2 = qs * LOG2E  # base-2 scores, as in the forward
    kc, vc = k.contiguous(), v.contiguous()
    do = dout.contiguous()
    # the per-query terms, as the biases of the transposed products
    nlse = lse * -LOG2E
    ndelta = (do * out).sum(-1).neg_()  # - rowsum(dO O) = - rowsum(dP P)
    # the gradients token-major, (b, L, h, d), as the forward's output: the
    # heads of the packed q / k / v gradients without a copy
    dq = q.new_empty(b, lq, h, d)
    dk = q.new_empty(b, lk, h, d)
    dv = q.new_empty(b, lk, h, v.shape[-1])
    step = block_rows(lq, lk)
    for i in range(b):
        for j in range(h):
            kt = (kc[i, j] * scale).t().contiguous()  # dQ^T = scale k^T dS^T
            for n, r in enumerate(range(0, lq, step)):
                qb, dob = qs[i, j, r:r + step], do[i, j, r:r + step]
                pt = _mm_t(kc[i, j], q2[i, j, r:r + step],
                           nlse[i, j, r:r + step]).exp2_()  # P^T
                gv = _mm_t(pt, dob.t())  # P^T dO
                dst = _mm_t(vc[i, j], dob, ndelta[i, j, r:r + step]).mul_(pt)
                dq[i, r:r + step, j] = _mm_t(kt, dst.t()).t()
                gk = _mm_t(dst, qb.t())  # dS^T (scale q)
                if n == 0:
                    dv[i, :, j], dk[i, :, j] = gv, gk
                else:
                    dv[i, :, j] += gv
                    dk[i, :, j] += gk
    return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)


sdpa_ops.register_pair(onednn_sdpa_op, onednn_sdpa_backward_op)


def register_flop_formulas():
    """The FLOPs of the two operators, as torch's fused attention's
    (:func:`~cast_mmaction.models.sdpa_ops.register_flop_formulas`)."""
    sdpa_ops.register_flop_formulas(torch.ops.cast_mmaction.onednn_sdpa,
                                    torch.ops.cast_mmaction.onednn_sdpa_backward)


def onednn_sdpa(q, k, v):
    """``F.scaled_dot_product_attention(q, k, v)`` (no mask, no dropout,
    scale ``d ** -0.5``) for fp32 CPU (B, H, L, d) tensors, on oneDNN."""
    scale = q.shape[-1] ** -0.5
    need = sdpa_ops.needs_lse(q, k, v)
    return onednn_sdpa_op(q, k, v, scale, need)[0]
