"""Small building blocks shared by every model of the package."""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class QuickGELU(nn.Module):
    """The GELU approximation of OpenAI CLIP: ``x * sigmoid(1.702 x)``."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


QUICK_GELU_SCALE = 1.702

# --------------------------------------------------------------------------
# matmuls
#
# On CPUs, fp32 ``nn.Linear`` runs on MKL's SGEMM, which on non-Intel CPUs
# (e.g. AMD EPYC) takes a generic code path: measured on an AMD EPYC with
# AVX-512, 100 GFLOP/s per core against 200 for oneDNN's fp32 matmul on the
# same dense tensors (``torch.ops.mkldnn._linear_pointwise``; docs/
# benchmarks.md); on an AVX2-only EPYC and on Intel Xeons both run at about
# the same rate. The hot matmuls of the models therefore go through
# :func:`linear`, which uses oneDNN for fp32 CPU tensors outside autocast
# *when it is faster on this machine* and ``F.linear`` everywhere else (CUDA,
# fp64, autocast, no oneDNN). Which one is faster is decided once per process
# and thread count by :func:`onednn_linear_faster` (a micro-benchmark of both
# on a ViT-B MLP shape, alternated); ``CAST_ONEDNN_LINEAR=0`` / ``1`` in the
# environment or :func:`use_onednn_linear` fixes it. The results are fp32
# matmuls either way (another summation order).
_LP = getattr(getattr(torch.ops, 'mkldnn', None), '_linear_pointwise', None)
_USE_ONEDNN = None  # None: decided by onednn_linear_faster()
_FASTER = {}  # threads -> (onednn faster?, details)


def use_onednn_linear(enabled=True):
    """Switch the oneDNN fp32 CPU matmul path on (True), off (False) or back
    to the per-machine choice (None); returns the previous setting."""
    global _USE_ONEDNN
    previous = _USE_ONEDNN
    _USE_ONEDNN = None if enabled is None else bool(enabled)
    return previous


def onednn_linear_faster(reps=5, shape=(512, 768, 3072)):
    """Whether oneDNN's fp32 linear beats ``F.linear`` on this CPU at the
    current thread count: both run ``reps`` times, alternated, on an
    (n, k) x (k, m) ViT-B MLP product; oneDNN is chosen only when its best
    time is at least 5% below ``F.linear``'s (never slower than the plain
    path). Measured once per thread count and cached; returns
    ``(faster, details)`` with the GFLOP/s of both."""
    threads = torch.get_num_threads()
    if threads in _FASTER:
        return _FASTER[threads]
    if _LP is None:
        _FASTER[threads] = (False, dict(reason='no oneDNN'))
        return _FASTER[threads]
    import time
    n, k, m = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=gen)
    w = torch.randn(m, k, generator=gen)
    b = torch.randn(m, generator=gen)
    best = {'onednn': float('inf'), 'plain': float('inf')}
    # outside any dispatch mode the first use may run under (a FLOP
    # counter, selective checkpointing's caching, ...)
    from torch.utils._python_dispatch import _disable_current_modes
    with torch.no_grad(), _disable_current_modes():
        for i in range(reps + 1):
            for name in ('onednn', 'plain'):
                t0 = time.perf_counter()
                if name == 'onednn':
                    _LP(x, w, b, 'none', [], '')
                else:
                    F.linear(x, w, b)
                dt = time.perf_counter() - t0
                if i:  # the first round warms up
                    best[name] = min(best[name], dt)
    flop = 2 * n * k * m
    details = {f'{name}_gflops': flop / t / 1e9 for name, t in best.items()}
    faster = best['onednn'] < 0.95 * best['plain']
    _FASTER[threads] = (faster, details)
    return _FASTER[threads]


def _onednn_enabled():
    if _USE_ONEDNN is not None:
        return _USE_ONEDNN
    env = os.environ.get('CAST_ONEDNN_LINEAR', 'auto').lower()
    if env in ('0', 'false', 'off'):
        return False
    if env in ('1', 'true', 'on'):
        return True
    if env != 'auto':
        raise ValueError(f'CAST_ONEDNN_LINEAR={env!r}: use 0, 1 or auto')
    return onednn_linear_faster()[0]


def _onednn_ok(*tensors):
    if _LP is None:
        return False
    if torch.is_autocast_enabled('cpu') or torch.compiler.is_compiling():
        return False  # inductor lowers the op only with constant weights
    return all(t is None or (t.device.type == 'cpu'
                             and t.dtype == torch.float32)
               for t in tensors) and _onednn_enabled()


def register_flop_formulas():
    """Teach ``torch.utils.flop_counter`` oneDNN's linear (2 n k m), so that
    FLOPs are counted on the path the model runs (``_Linear``,
    ``_FrozenMLP`` and :func:`linear` call it); idempotent."""
    from torch.utils import flop_counter
    if _LP is None or _LP.default in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(_LP)
    def _linear_pointwise_flop(x_shape, *args, out_shape=None, **kwargs):
        # x (..., k) -> out (..., m), for the plain and the binary overloads
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * out_shape[-1]


def _mm_t(a, b, bias=None, act='none'):
    """``a @ b.T (+ bias)`` for 2-D ``a`` (n, k) and ``b`` (m, k), then an
    optional fused activation (``'gelu'`` exact, ``'silu'``). ``b`` may be a
    transposed view."""
    if _onednn_ok(a, b, bias):
        # oneDNN is fast on row- or column-major 2-D operands and falls back
        # to a slow reference kernel on other strides
        a, b = _dense_2d(a), _dense_2d(b)
        if act == 'silu':
            return _LP(a, b, bias, 'swish', [], '')
        if act == 'gelu':
            return _LP(a, b, bias, 'gelu', [], 'none')
        return _LP(a, b, bias, 'none', [], '')
    out = torch.addmm(bias, a, b.t()) if bias is not None else a.mm(b.t())
    if act == 'silu':
        return F.silu(out, inplace=True)
    if act == 'gelu':
        return torch.ops.aten.gelu_(out)
    return out


def _dense_2d(t):
    if t.is_contiguous() or t.t().is_contiguous():
        return t
    return t.contiguous()


class _Linear(torch.autograd.Function):
    """``x W^T + b`` on oneDNN, with oneDNN matmuls for the gradients;
    the input is kept for backward only when the weight needs a gradient
    (a frozen weight keeps nothing but its reference)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])
        y = _mm_t(x2, weight, bias)
        need_w = ctx.needs_input_grad[1]
        ctx.save_for_backward(x2 if need_w else None, weight)
        ctx.in_shape = x.shape
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm_t(g, weight.t()).reshape(ctx.in_shape)
        if ctx.needs_input_grad[1]:
            gw = _mm_t(g.t(), x2.t())
        if ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb


def linear(x, weight, bias=None):
    """``F.linear`` with the oneDNN fp32 CPU path (see above)."""
    if not _onednn_ok(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None
                                        and bias.requires_grad)):
        return _Linear.apply(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    y = _mm_t(x2, weight, bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) computed with
    :func:`linear`."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)


def _compute_dtype(x):
    """The dtype matmuls on ``x`` run in: the autocast dtype when autocast
    is on for ``x``'s device, else ``x``'s own dtype."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _mlp_act_backward_(grad, pre, act):
    """d act(pre) / d pre * grad, written into ``grad``."""
    if act == 'quick_gelu':
        return torch.ops.aten.silu_backward.grad_input(grad, pre,
                                                        grad_input=grad)
    return torch.ops.aten.gelu_backward.grad_input(grad, pre,
                                                    grad_input=grad)


def _mlp_forward(x2d, w1, b1, w2, b2, act, keep_pre):
    """``fc2(act(fc1 x))`` on 2-D ``x`` with weights already in the compute
    dtype; returns (out, pre or None).

    ``quick_gelu`` (``h * sigmoid(1.702 h)``) is computed as a SiLU of the
    scaled pre-activation ``1.702 h`` (``silu(1.702 h) / 1.702``): the 1.702
    is applied to the (narrow) input and first bias, the 1 / 1.702 to the
    (narrow) output, never to the wide hidden activation. ``pre`` is the
    scaled pre-activation for ``quick_gelu``."""
    quick = act == 'quick_gelu'
    a = QUICK_GELU_SCALE if quick else 1.0
    fused = 'silu' if quick else 'gelu'
    xs = x2d * a if quick else x2d
    bs1 = b1 * a if (quick and b1 is not None) else b1
    if keep_pre:
        pre = _mm_t(xs, w1, bs1)
        h = F.silu(pre) if quick else F.gelu(pre)
    else:
        pre, h = None, _mm_t(xs, w1, bs1, act=fused)
    if quick:
        out = _mm_t(h, w2, None if b2 is None else b2 * a)
        out = out / a  # not in place: selective checkpointing may keep
        # the matmul output (models/checkpointing.py)
    else:
        out = _mm_t(h, w2, b2)
    return out, pre


class _FrozenMLP(torch.autograd.Function):
    """``fc2(act(fc1 x))`` with frozen ``fc1`` / ``fc2``: only the
    pre-activation (and the weights, by reference) is kept for backward,
    which needs no weight gradients (autograd would keep the activation
    output as well, and QuickGELU's sigmoid on top)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, act):
        shape = x.shape
        out, pre = _mlp_forward(x.reshape(-1, shape[-1]), w1, b1, w2, b2,
                                act, keep_pre=True)
        ctx.act = act
        ctx.save_for_backward(pre, w1, w2)
        return out.reshape(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        pre, w1, w2 = ctx.saved_tensors
        shape = grad.shape
        g = grad.reshape(-1, shape[-1]).to(w2.dtype)
        # the 1.702 of quick_gelu cancels: d/dx of silu(a x W1) W2 / a
        gh = _mlp_act_backward_(_mm_t(g, w2.t()), pre, ctx.act)
        gx = _mm_t(gh, w1.t())
        return (gx.reshape(*shape[:-1], gx.shape[-1]), None, None, None,
                None, None)


def frozen_mlp(x, fc1, fc2, act='gelu'):
    """``fc2(act(fc1(x)))`` for the MLPs of the experts, ``act`` ``gelu``
    (exact erf GELU) or ``quick_gelu`` (CLIP's ``x * sigmoid(1.702 x)``).

    When ``fc1`` and ``fc2`` are frozen (the experts of CAST) the MLP is one
    autograd node that keeps only the pre-activation for backward, and
    without autograd the activation is fused into the first matmul (oneDNN)
    or runs in place. Under autocast the matmuls run in the autocast dtype,
    as ``nn.Linear`` would. A trainable ``fc1`` or ``fc2`` takes the plain
    module path."""
    params = [p for p in (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
              if p is not None]
    if any(p.requires_grad for p in params):
        h = linear(x, fc1.weight, fc1.bias)
        if act == 'quick_gelu':
            h = h * torch.sigmoid(QUICK_GELU_SCALE * h)
        else:
            h = F.gelu(h)
        return linear(h, fc2.weight, fc2.bias)
    dtype = _compute_dtype(x)

    def cast(t):
        return None if t is None else t.to(dtype)

    w1, b1, w2, b2 = (cast(fc1.weight), cast(fc1.bias), cast(fc2.weight),
                      cast(fc2.bias))
    xc = x.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        if torch.is_grad_enabled() and x.requires_grad:
            return _FrozenMLP.apply(xc, w1, b1, w2, b2, act)
        shape = x.shape
        out, _ = _mlp_forward(xc.reshape(-1, shape[-1]), w1, b1, w2, b2,
                              act, keep_pre=False)
        return out.reshape(*shape[:-1], out.shape[-1])


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at p=0)."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1))
        mask.bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f'p={self.p}'


def sdpa_heads(q, k, v, num_heads):
    """Multi-head scaled-dot-product attention on packed heads.

    ``q`` (..., Lq, H*d), ``k``/``v`` (..., Lk, H*d) -> (..., Lq, H*d). The
    scale is ``d ** -0.5`` (the default of every model here). All attention in
    the package goes through ``F.scaled_dot_product_attention`` so that fused
    kernels are used on CPU and GPU.
    """
    *lead, lq, c = q.shape
    lk = k.shape[-2]
    d = c // num_heads
    q = q.reshape(-1, lq, num_heads, d).transpose(1, 2)
    k = k.reshape(-1, lk, num_heads, d).transpose(1, 2)
    v = v.reshape(-1, lk, num_heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(*lead, lq, c)


def sincos_table(n_position, dim):
    """The fixed 1-D sinusoid table of VideoMAE (Vaswani et al.), (n, dim):
    even channels sin, odd channels cos, of ``pos / 10000^(2*(j//2)/dim)``.
    Computed in float64 and returned as float32, like the reference."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode='floor') / dim)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


def resize_grid_embed(embed, old_hw, new_hw, num_prefix=0):
    """Bicubically resize a learned position table laid out as
    ``num_prefix`` tokens followed by an ``old_hw`` grid (row-major).

    ``embed`` is (L, C) or (1, L, C); the result keeps the leading dims.
    """
    if tuple(old_hw) == tuple(new_hw):
        return embed
    squeeze = embed.ndim == 2
    if squeeze:
        embed = embed[None]
    prefix, grid = embed[:, :num_prefix], embed[:, num_prefix:]
    c = grid.shape[-1]
    if grid.shape[1] != old_hw[0] * old_hw[1]:
        raise ValueError(f'position table has {grid.shape[1]} grid tokens, '
                         f'expected {old_hw[0]}x{old_hw[1]}')
    dtype = grid.dtype
    grid = grid.reshape(1, old_hw[0], old_hw[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_hw), mode='bicubic',
                         align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, c).to(dtype)
    out = torch.cat([prefix, grid], dim=1)
    return out[0] if squeeze else out


def resize_1d_embed(embed, new_len):
    """Linearly resize a learned (L, C) table along L."""
    if embed.shape[0] == new_len:
        return embed
    x = embed.t()[None].float()
    x = F.interpolate(x, size=new_len, mode='linear', align_corners=False)
    return x[0].t().to(embed.dtype)


def trunc_normal_init(module, std=0.02):
    """timm/CAST default init: Linear trunc-normal(std), bias 0; LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def grid_size(img_size, patch_size, field='img_size'):
    """(H/p, W/p), or a clear error naming the config field."""
    h, w = to_2tuple(img_size)
    ph, pw = to_2tuple(patch_size)
    if h % ph or w % pw:
        raise ValueError(
            f'{field}={img_size} is not divisible by patch_size={patch_size}; '
            f'change {field} (e.g. to {math.ceil(h / ph) * ph}) or patch_size')
    return h // ph, w // pw


def _resize_axis(grid, size, axis):
    """Centre-crop (shorter) or bilinearly resize (longer) one axis of a
    (1, C, F, T) grid, as AST does for its position table."""
    old = grid.shape[axis]
    if size == old:
        return grid
    if size < old:
        start = old // 2 - size // 2
        return grid.narrow(axis, start, size)
    shape = list(grid.shape[-2:])
    shape[axis - 2] = size
    return F.interpolate(grid, size=tuple(shape), mode='bilinear',
                         align_corners=False)


def resize_audio_grid(table, old_grid, new_grid, num_prefix=0):
    """(.., P + f*t, C) table over a frequency-major (f, t) patch grid ->
    the ``new_grid`` (time axis first, then frequency: crop or resize)."""
    squeeze = table.ndim == 2
    x = table[None] if squeeze else table
    prefix, grid = x[:, :num_prefix], x[:, num_prefix:]
    c = grid.shape[-1]
    (fo, to), (fn, tn) = old_grid, new_grid
    if grid.shape[1] != fo * to:
        raise ValueError(f'audio position table has {grid.shape[1]} patches, '
                         f'not {fo}x{to}')
    dtype = grid.dtype
    g = grid.float().transpose(1, 2).reshape(1, c, fo, to)
    g = _resize_axis(g, tn, 3)
    g = _resize_axis(g, fn, 2)
    g = g.reshape(1, c, fn * tn).transpose(1, 2).to(dtype)
    out = torch.cat([prefix, g], dim=1)
    return out[0] if squeeze else out
