"""Scaled-dot-product attention in one C++ kernel for fp32 on AVX-512 CPUs.

The CPU speed-up ``cpu_attention`` (``models/speedups.py``; the kernel:
``cast_mmaction/csrc/cpu_attention.cpp``). torch's fused CPU attention
computes each tile's products with a GEMM library call and the softmax in
separate passes between them; here the scores of a block of 12 query rows
are products of register tiles, the exponentials (``exp2`` of base-2 scores,
a degree-5 polynomial) run on the block while it is in the core's cache,
and the weighted sum of values follows from the same block: one kernel per
call, all (batch, head) pairs split over torch's threads. Backward recomputes
the scores from the kept log-sum-exp as the fused kernel does, in blocks of
256 keys whose dK / dV stay in the core's cache.

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
matmuls forward, five backward), and the output and gradients are written
token-major, (B, L, H, d), so that merging heads is a view; where q, k and v
are the heads of one packed projection's thirds (the experts' self-attention
after :func:`split_thirds`), the gradients are written as that projection's
(B, L, 3 H d) gradient, passed on without a concatenation. Results equal the
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
import math

import torch

from . import cpp_extensions, sdpa_ops

FIELD = 'model.backbone.speedups.cpu_attention'
KERNEL_WIDTHS = (16, 32, 48, 64)  # compiled; narrower others are padded
MAX_WIDTH = 64
# the kernel's build (also the benchmark scripts' builds of other sources)
CFLAGS = ('-O3', '-mavx512f', '-mfma', '-fopenmp')
LDFLAGS = ('-fopenmp', )


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled kernel (built on first call, ~40 s, then cached); on a
    CPU without AVX-512F a clear error instead of an illegal instruction."""
    from ..utils import cpu_facts
    why = cpu_refusal(cpu_facts())
    if why:
        raise RuntimeError(f'{FIELD}: {why}')
    return cpp_extensions.build(
        'cast_mmaction_cpu_attention', 'cpu_attention.cpp', FIELD,
        cflags=CFLAGS, ldflags=LDFLAGS)


def cpu_supports(facts):
    """``(ok, why)``: the kernel's instructions (AVX-512F and FMA) from the
    CPU facts (:func:`cast_mmaction.utils.cpu_facts`)."""
    isa = set(facts.get('cpu_isa') or ())
    if 'avx512f' not in isa:
        return False, 'the CPU has no AVX-512F'
    return True, 'AVX-512F'


def cpu_refusal(facts):
    """Why the kernel cannot run on the CPU of ``facts``, naming the fix,
    or None."""
    ok, why = cpu_supports(facts)
    if ok:
        return None
    return (f"{why} on this machine ({facts.get('cpu_model')}); the kernel "
            f"needs AVX-512F: set it to False")


def unavailable():
    """Why the kernel cannot be built and run here (the CPU's instructions,
    a C++ toolchain), or None: the reason a test or a benchmark script
    skips it."""
    from ..utils import cpu_facts
    ok, why = cpu_supports(cpu_facts())
    if ok:
        ok, why = cpp_extensions.toolchain()
    return None if ok else f'the C++ attention kernel cannot run here: {why}'


def supports(width, keys):
    """Whether heads ``width`` wide over ``keys`` keys run in the kernel
    (fp32 CPU tensors are the caller's check): at most :data:`MAX_WIDTH`
    wide, at least one key."""
    return 1 <= width <= MAX_WIDTH and keys >= 1


def _last_dim_dense(t):
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op('cast_mmaction::cpu_sdpa', mutates_args=())
def cpu_sdpa_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                scale: float, with_lse: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of attention over (B, H, L, d) q / k / v; ``out`` is a
    (B, H, L, d) view of a token-major tensor, ``lse`` the natural
    log-sum-exp of each query row, empty unless ``with_lse``."""
    out, lse = extension().forward(
        _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v), scale,
        with_lse)
    return out, lse


def same_layout(a, b):
    """Whether ``a`` and ``b`` are the same elements of one storage: shape,
    data pointer and the strides of every dimension longer than 1."""
    return (a.shape == b.shape and a.data_ptr() == b.data_ptr()
            and all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(),
                                                   a.shape) if n > 1))


def _whole_of_thirds(parts, shape, strides, third):
    """The tensor (``shape``, ``strides``) from the first of the three
    ``parts`` on, where ``third(whole, i)`` is ``parts[i]`` for each; else
    None (also where it would pass the storage's end)."""
    a, b, c = parts
    if not (a.shape == b.shape == c.shape and a.dtype == b.dtype == c.dtype):
        return None
    if (a.storage_offset() + math.prod(shape)) * a.element_size() > \
            a.untyped_storage().nbytes():
        return None
    whole = a.as_strided(shape, strides, a.storage_offset())
    if all(same_layout(t, third(whole, i)) for i, t in enumerate(parts)):
        return whole
    return None


def thirds_of_one(q, k, v):
    """Whether (B, H, L, d) ``q``, ``k``, ``v`` are the heads of the three
    thirds of one contiguous (B, L, 3 H d) tensor (a packed q/k/v
    projection's ``chunk(3, -1)``)."""
    b, h, n, d = q.shape
    c = h * d
    return _whole_of_thirds(
        (q, k, v), (b, n, 3 * c), (n * 3 * c, 3 * c, 1),
        lambda w, i: w[..., i * c:(i + 1) * c].reshape(b, n, h, d)
        .transpose(1, 2)) is not None


@torch.library.custom_op('cast_mmaction::cpu_sdpa_backward', mutates_args=())
def cpu_sdpa_backward_op(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
        scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of :func:`cpu_sdpa_op` from the kept tensors, each a
    (B, H, L, d) view of a token-major tensor."""
    dq, dk, dv = extension().backward(
        _last_dim_dense(dout), _last_dim_dense(q), _last_dim_dense(k),
        _last_dim_dense(v), _last_dim_dense(out), lse.contiguous(), scale,
        False)
    return dq, dk, dv


@torch.library.custom_op('cast_mmaction::cpu_sdpa_backward_packed',
                         mutates_args=())
def cpu_sdpa_backward_packed_op(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
        scale: float) -> torch.Tensor:
    """:func:`cpu_sdpa_backward_op` for q, k and v that are the thirds of
    one packed projection (:func:`thirds_of_one`): dq, dk and dv as one
    (B, L, 3, H, d) tensor, the projection's gradient. Autograd's backward
    of ``chunk`` concatenated the three (1.5 ms a layer of CAST ViT-B);
    :func:`split_thirds`'s passes this tensor on as it is."""
    return extension().backward(
        _last_dim_dense(dout), q, k, v, _last_dim_dense(out),
        lse.contiguous(), scale, True)[0]


class _SplitThirds(torch.autograd.Function):
    """``x.chunk(3, -1)`` whose backward returns the three gradients'
    common tensor where they are its thirds, laid out as ``x`` (contiguous),
    else their concatenation: the same values either way."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape, ctx.strides = x.shape, x.stride()
        return x.chunk(3, dim=-1)

    @staticmethod
    def backward(ctx, gq, gk, gv):
        c = ctx.shape[-1] // 3
        whole = _whole_of_thirds((gq, gk, gv), ctx.shape, ctx.strides,
                                 lambda w, i: w[..., i * c:(i + 1) * c])
        if whole is not None:
            return whole
        return torch.cat((gq, gk, gv), dim=-1)


def split_thirds(x):
    """``x.chunk(3, dim=-1)`` for a packed q/k/v projection (last dimension
    divisible by 3, contiguous) whose gradient the kernel's backward writes
    packed (:func:`cpu_sdpa_backward_packed_op`); else a plain ``chunk``."""
    if x.shape[-1] % 3 or not x.is_contiguous():
        return x.chunk(3, dim=-1)
    return _SplitThirds.apply(x)


sdpa_ops.register_pair(cpu_sdpa_op, cpu_sdpa_backward_op,
                       cpu_sdpa_backward_packed_op, thirds_of_one)


def register_flop_formulas():
    """The FLOPs of the two operators, as torch's fused attention's
    (:func:`~cast_mmaction.models.sdpa_ops.register_flop_formulas`)."""
    sdpa_ops.register_flop_formulas(
        torch.ops.cast_mmaction.cpu_sdpa,
        torch.ops.cast_mmaction.cpu_sdpa_backward,
        torch.ops.cast_mmaction.cpu_sdpa_backward_packed)


def cpu_sdpa(q, k, v):
    """``F.scaled_dot_product_attention(q, k, v)`` (no mask, no dropout,
    scale ``d ** -0.5``) for fp32 CPU (B, H, L, d) tensors that
    :func:`supports`, in the C++ kernel."""
    d = q.shape[-1]
    scale = d ** -0.5
    need = sdpa_ops.needs_lse(q, k, v)
    if d in KERNEL_WIDTHS:
        return cpu_sdpa_op(q, k, v, scale, need)[0]
    # zero channels: the same scores (the scale stays the true width's) and
    # zero output channels, dropped
    pad = (0, -d % 16)
    q, k, v = (torch.nn.functional.pad(t, pad) for t in (q, k, v))
    return cpu_sdpa_op(q, k, v, scale, need)[0][..., :d]
