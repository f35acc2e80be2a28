"""Scaled-dot-product attention in one C++ kernel for fp32 on AVX-512 CPUs.

The CPU speed-up ``cpu_attention`` (``models/speedups.py``; the kernel:
``cast_mmaction/csrc/cpu_attention.cpp``). torch's fused CPU attention
computes each tile's products with a GEMM library call and the softmax in
separate passes between them; here the scores of a block of 12 query rows
are products of register tiles, the exponentials (``exp2`` of base-2 scores,
a degree-5 polynomial) run on the block while it is in the core's cache,
and the weighted sum of values follows from the same block: one kernel per
call, all (batch, head) pairs split over torch's threads. Backward recomputes
the scores from the kept log-sum-exp as the fused kernel does, in the
fewest blocks of at most 400 keys, of equal size, whose dK / dV stay in the
core's cache.

Measured on an Intel Xeon with AVX-512, 2 threads (docs/benchmarks.md, "The
C++ attention kernel"), against torch's fused kernel on CAST ViT-B's heads:
VideoMAE's 1568 tokens 1.17x faster forward and 1.11x forward + backward,
CLIP's 197 at parity, B-CAST's 196-token link 1.06x, its 8-frame link
1.3-1.6x; in the whole model, alternated in one process, 0.976x the
inference and 0.965x the training step. Hence an opt-in
(``speedups=dict(preset='cpu', cpu_attention=True)``), not in the ``'cpu'``
preset: a compiler at first use for ~2.5 %. Not measured on
AMD CPUs, where the fused kernel runs on MKL's slow path (there the oneDNN
attention is the preset's speed-up).

Like the fused kernel, nothing of size Lq x Lk is kept for backward (q, k, v,
the output and the natural log-sum-exp are), the FLOPs are the same (two
matmuls forward, five backward), and the output and each gradient are laid
out as q and as its input (token-major (B, L, H, d) for the heads of a
(B, L, H d) tensor; a B-CAST 'time' window's sequences, a transposed view
of their grid, keep the grid's layout), so that merging heads is a view and
the producer's backward needs no copy; where q, k and v are the heads of
one packed projection's thirds (the experts' self-attention after
:func:`split_thirds`), the gradients are written as that projection's
(B, L, 3 H d) gradient and the projection's bias may be left to the kernel
(``cpu_sdpa(q, k, v, bias)``: added to each row of q, k and v as the kernel
reads it, so the projection is a plain ``mm``, not an ``addmm`` that writes
the bias into the (tokens, 3 H d) output for the GEMM to read back; B-CAST's
links hand it their q and k/v projections' biases the same way), and where
k and v are the halves of one (B-CAST's
``kv`` after :func:`split_halves`), theirs as that projection's, laid out
as it: passed on without a concatenation. Results equal the
fused kernel's to fp32 rounding (another summation order and exponential);
every output element is summed in one fixed order, whatever the thread count.

The kernel takes head widths 16, 32, 48 and 64 (CAST ViT-B: 64 in the
experts, 32 in B-CAST); narrower heads of other widths (the reference dumps'
small models: 24 and 12) are padded with zero channels to the next multiple
of 16, which changes no score and no output channel; wider heads, fp64,
autocast and ``torch.compile`` keep the reference path (:func:`supports`,
``speedups.heads_attention``).
"""
import functools
from typing import Optional

import torch

from . import cpp_extensions, sdpa_ops

FIELD = 'model.backbone.speedups.cpu_attention'
KERNEL_WIDTHS = (16, 32, 48, 64)  # compiled; narrower others are padded
MAX_WIDTH = 64
# the kernel's build (also the benchmark scripts' builds of other sources)
CFLAGS = cpp_extensions.AVX512_CFLAGS
LDFLAGS = cpp_extensions.AVX512_LDFLAGS
DEPENDS = ('avx512_exp2.h', )


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled kernel (built on first call, ~17 s, then cached); on a
    CPU without AVX-512F a clear error instead of an illegal instruction."""
    return cpp_extensions.build_avx512(
        'cast_mmaction_cpu_attention', 'cpu_attention.cpp', FIELD,
        'the kernel', depends=DEPENDS)


def cpu_refusal(facts):
    """Why the kernel cannot run on the CPU of ``facts``, naming the fix,
    or None."""
    return cpp_extensions.avx512_refusal(facts, 'the kernel')


def unavailable():
    """Why the kernel cannot be built and run here (the CPU's instructions,
    a C++ toolchain), or None: the reason a test or a benchmark script
    skips it."""
    return cpp_extensions.avx512_unavailable('the C++ attention kernel')


def supports(width, keys):
    """Whether heads ``width`` wide over ``keys`` keys run in the kernel
    (fp32 CPU tensors are the caller's check): at most :data:`MAX_WIDTH`
    wide, at least one key."""
    return 1 <= width <= MAX_WIDTH and keys >= 1


def _last_dim_dense(t):
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op('cast_mmaction::cpu_sdpa', mutates_args=())
def cpu_sdpa_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                scale: float, with_lse: bool,
                bias: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of attention over (B, H, L, d) q / k / v (plus ``bias``
    where given: their (3 H d) biases, a packed projection's or a q and a
    k/v projection's concatenated, added as the kernel reads them); ``out``
    is laid out as ``q`` (:func:`_like`), ``lse`` the natural log-sum-exp
    of each query row, empty unless ``with_lse``."""
    q = _last_dim_dense(q)
    out = _like(q)
    lse = extension().forward_into(q, _last_dim_dense(k), _last_dim_dense(v),
                                   scale, out, with_lse, bias)
    return out, lse


def _like(t):
    """An empty tensor laid out as ``t`` where ``t`` is dense (the heads of
    a (B, L, H d) tensor in any order of B and L, e.g. a B-CAST window
    sequence that is a transposed view of its grid), else with the same
    order of dimensions, densely (the heads of one third of a packed q/k/v
    projection: token-major (B, L, H, d)); either way merging the heads
    back is a view and the producer's backward gets its own layout."""
    return torch.empty_like(t)


def same_layout(a, b):
    """Whether ``a`` and ``b`` are the same elements of one storage: shape,
    data pointer and the strides of every dimension longer than 1."""
    return (a.shape == b.shape and a.data_ptr() == b.data_ptr()
            and all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(),
                                                   a.shape) if n > 1))


def _whole_of_parts(parts, shape, strides, part):
    """The tensor (``shape``, ``strides``) from the first of ``parts`` on,
    where ``part(whole, i)`` is ``parts[i]`` for each; else None (also
    where it would pass the storage's end)."""
    a = parts[0]
    if any(t.shape != a.shape or t.dtype != a.dtype for t in parts):
        return None
    extent = 1 + sum((n - 1) * st for n, st in zip(shape, strides))
    if (a.storage_offset() + extent) * a.element_size() > \
            a.untyped_storage().nbytes():
        return None
    whole = a.as_strided(shape, strides, a.storage_offset())
    if all(same_layout(t, part(whole, i)) for i, t in enumerate(parts)):
        return whole
    return None


def thirds_of_one(q, k, v):
    """Whether (B, H, L, d) ``q``, ``k``, ``v`` are the heads of the three
    thirds of one contiguous (B, L, 3 H d) tensor (a packed q/k/v
    projection's ``chunk(3, -1)``)."""
    b, h, n, d = q.shape
    c = h * d
    return _whole_of_parts(
        (q, k, v), (b, n, 3 * c), (n * 3 * c, 3 * c, 1),
        lambda w, i: w[..., i * c:(i + 1) * c].reshape(b, n, h, d)
        .transpose(1, 2)) is not None


@torch.library.custom_op('cast_mmaction::cpu_sdpa_backward', mutates_args=())
def cpu_sdpa_backward_op(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
        scale: float, bias: Optional[torch.Tensor] = None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of :func:`cpu_sdpa_op` from the kept tensors (and its
    ``bias``), each laid out as its input (:func:`_like`)."""
    q, k, v = _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
    dq, dk, dv = _like(q), _like(k), _like(v)
    extension().backward_into(_last_dim_dense(dout), q, k, v,
                              _last_dim_dense(out), lse.contiguous(), scale,
                              dq, dk, dv, bias)
    return dq, dk, dv


@torch.library.custom_op('cast_mmaction::cpu_sdpa_backward_packed',
                         mutates_args=())
def cpu_sdpa_backward_packed_op(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
        scale: float, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`cpu_sdpa_backward_op` for q, k and v that are the thirds of
    one packed projection (:func:`thirds_of_one`): dq, dk and dv as one
    (B, L, 3, H, d) tensor, the projection's gradient. Autograd's backward
    of ``chunk`` concatenated the three (1.5 ms a layer of CAST ViT-B);
    :func:`split_thirds`'s passes this tensor on as it is."""
    return extension().backward(
        _last_dim_dense(dout), q, k, v, _last_dim_dense(out),
        lse.contiguous(), scale, True, bias)[0]


def _dense_dims(shape, strides):
    """Whether a tensor of ``shape`` / ``strides`` holds each of its
    elements once, without gaps, in some order of its dimensions."""
    step = 1
    for st, n in sorted((st, n) for n, st in zip(shape, strides) if n > 1):
        if st != step:
            return False
        step *= n
    return True


def kv_whole(k, v):
    """The (B, L, 2 H d) tensor whose two halves ``k`` and ``v`` ((B, H, L,
    d) heads) are, dense in some order of B and L (a B-CAST link's ``kv``
    projection, or a window sequence that is a transposed view of it); else
    None."""
    b, h, n, d = k.shape
    if v.shape != k.shape or v.dtype != k.dtype or k.stride(-1) != 1 or \
            k.stride(1) != d:
        return None
    c = h * d
    shape, strides = (b, n, 2 * c), (k.stride(0), k.stride(2), 1)
    if not _dense_dims(shape, strides):
        return None
    return _whole_of_parts((k, v), shape, strides,
                           lambda w, i: w[..., i * c:(i + 1) * c]
                           .reshape(b, n, h, d).transpose(1, 2))


@torch.library.custom_op('cast_mmaction::cpu_sdpa_backward_kv',
                         mutates_args=())
def cpu_sdpa_backward_kv_op(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
        scale: float, bias: Optional[torch.Tensor] = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`cpu_sdpa_backward_op` for k and v that are the halves of one
    projection (:func:`kv_whole`): dq (laid out as ``q``), and dk / dv as
    the halves of one tensor laid out as that projection, its gradient
    (autograd's backward of ``chunk`` would concatenate the two, and a
    window sequence's transpose then copy the result again)."""
    whole = kv_whole(k, v)
    g = torch.empty_strided(whole.shape, whole.stride(), dtype=k.dtype)
    b, h, n, d = k.shape
    dk, dv = (g[..., i * h * d:(i + 1) * h * d].reshape(b, n, h, d)
              .transpose(1, 2) for i in range(2))
    q = _last_dim_dense(q)
    dq = _like(q)
    extension().backward_into(_last_dim_dense(dout), q, k, v,
                              _last_dim_dense(out), lse.contiguous(), scale,
                              dq, dk, dv, bias)
    return dq, g


class _SplitParts(torch.autograd.Function):
    """``x.chunk(n, -1)`` whose backward returns the gradients' common
    tensor where they are its parts, laid out as ``x``, else their
    concatenation: the same values either way."""

    @staticmethod
    def forward(ctx, x, n):
        ctx.shape, ctx.strides, ctx.n = x.shape, x.stride(), n
        return x.chunk(n, dim=-1)

    @staticmethod
    def backward(ctx, *grads):
        c = ctx.shape[-1] // ctx.n
        whole = _whole_of_parts(grads, ctx.shape, ctx.strides,
                                lambda w, i: w[..., i * c:(i + 1) * c])
        if whole is not None:
            return whole, None
        return torch.cat(grads, dim=-1), None


def _split(x, n):
    if x.shape[-1] % n or not _dense_dims(x.shape, x.stride()):
        return x.chunk(n, dim=-1)
    return _SplitParts.apply(x, n)


def split_thirds(x):
    """``x.chunk(3, dim=-1)`` for a packed q/k/v projection (last dimension
    divisible by 3, contiguous) whose gradient the kernel's backward writes
    packed (:func:`cpu_sdpa_backward_packed_op`); else a plain ``chunk``."""
    if not x.is_contiguous():
        return x.chunk(3, dim=-1)
    return _split(x, 3)


def split_halves(x):
    """``x.chunk(2, dim=-1)`` for a k/v projection (last dimension even,
    dense in some order of its other dimensions: a B-CAST window sequence)
    whose gradient the kernel's backward writes as one tensor laid out as
    ``x`` (:func:`cpu_sdpa_backward_kv_op`); else a plain ``chunk``."""
    return _split(x, 2)


sdpa_ops.register_pair(cpu_sdpa_op, cpu_sdpa_backward_op,
                       cpu_sdpa_backward_packed_op, thirds_of_one,
                       cpu_sdpa_backward_kv_op, kv_whole)


def register_flop_formulas():
    """The FLOPs of the operators, as torch's fused attention's
    (:func:`~cast_mmaction.models.sdpa_ops.register_flop_formulas`): the
    forward and the three backwards (gradients apart, the thirds of a
    packed q/k/v projection, the halves of a k/v projection)."""
    sdpa_ops.register_flop_formulas(
        torch.ops.cast_mmaction.cpu_sdpa,
        torch.ops.cast_mmaction.cpu_sdpa_backward,
        torch.ops.cast_mmaction.cpu_sdpa_backward_packed,
        torch.ops.cast_mmaction.cpu_sdpa_backward_kv)


def cpu_sdpa(q, k, v, bias=None):
    """``F.scaled_dot_product_attention(q, k, v)`` (no mask, no dropout,
    scale ``d ** -0.5``) for fp32 CPU (B, H, L, d) tensors that
    :func:`supports`, in the C++ kernel; with ``bias`` (only for a width in
    :data:`KERNEL_WIDTHS`: :func:`takes_bias`), that of ``q + bias[0]``,
    ``k + bias[1]``, ``v + bias[2]`` for a contiguous (3, H, d) ``bias``
    (a packed q/k/v projection's ``(3 H d, )``, or a q and a k/v
    projection's concatenated), the sums formed as the kernel reads the
    rows."""
    d = q.shape[-1]
    scale = d ** -0.5
    need = sdpa_ops.needs_lse(q, k, v) or (
        bias is not None and torch.is_grad_enabled() and bias.requires_grad)
    if d in KERNEL_WIDTHS:
        return cpu_sdpa_op(q, k, v, scale, need, bias)[0]
    if bias is not None:
        raise ValueError(f'cpu_sdpa: a bias needs heads {KERNEL_WIDTHS} '
                         f'wide, got {d}')
    # zero channels: the same scores (the scale stays the true width's) and
    # zero output channels, dropped
    pad = (0, -d % 16)
    q, k, v = (torch.nn.functional.pad(t, pad) for t in (q, k, v))
    return cpu_sdpa_op(q, k, v, scale, need, None)[0][..., :d]


def takes_bias(width, keys):
    """Whether heads ``width`` wide over ``keys`` keys run in the kernel
    with the q / k / v biases added there (:func:`cpu_sdpa`'s ``bias``): a
    compiled width, at least one key."""
    return width in KERNEL_WIDTHS and keys >= 1
