"""Small building blocks shared by every model of the package."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class QuickGELU(nn.Module):
    """The GELU approximation of OpenAI CLIP: ``x * sigmoid(1.702 x)``."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


QUICK_GELU_SCALE = 1.702


def _compute_dtype(x):
    """The dtype matmuls on ``x`` run in: the autocast dtype when autocast
    is on for ``x``'s device, else ``x``'s own dtype."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _mlp_act(pre, act, inplace):
    """The MLP activation on the pre-activation.

    ``quick_gelu`` gets ``pre`` already multiplied by 1.702 (folded into
    the first matmul) and is then a SiLU: ``x * sigmoid(1.702 x) =
    silu(1.702 x) / 1.702``, the ``1 / 1.702`` being folded into the second
    matmul."""
    if act == 'quick_gelu':
        return F.silu(pre, inplace=inplace)
    return torch.ops.aten.gelu_(pre) if inplace else F.gelu(pre)


def _mlp_act_backward_(grad, pre, act):
    """d act(pre) / d pre * grad, written into ``grad``."""
    if act == 'quick_gelu':
        return torch.ops.aten.silu_backward.grad_input(grad, pre,
                                                        grad_input=grad)
    return torch.ops.aten.gelu_backward.grad_input(grad, pre,
                                                    grad_input=grad)


def _mlp_forward(x2d, w1, b1, w2, b2, act, keep_pre):
    """``fc2(act(fc1 x))`` on 2-D ``x`` with weights already in the compute
    dtype; returns (out, pre or None)."""
    a = QUICK_GELU_SCALE if act == 'quick_gelu' else 1.0
    if b1 is None:
        pre = torch.mm(x2d, w1.t())
        if a != 1.0:
            pre.mul_(a)
    else:
        pre = torch.addmm(b1, x2d, w1.t(), beta=a, alpha=a)
    h = _mlp_act(pre, act, inplace=not keep_pre)
    if b2 is None:
        out = torch.mm(h, w2.t())
        if a != 1.0:
            out.div_(a)
    else:
        out = torch.addmm(b2, h, w2.t(), alpha=1.0 / a)
    return out, (pre if keep_pre else None)


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
        gh = _mlp_act_backward_(torch.mm(g, w2), pre, ctx.act)
        gx = torch.mm(gh, w1)
        return (gx.reshape(*shape[:-1], gx.shape[-1]), None, None, None,
                None, None)


def frozen_mlp(x, fc1, fc2, act='gelu'):
    """``fc2(act(fc1(x)))`` for the MLPs of the experts, ``act`` ``gelu``
    (exact erf GELU) or ``quick_gelu`` (CLIP's ``x * sigmoid(1.702 x)``).

    When ``fc1`` and ``fc2`` are frozen (the experts of CAST) the MLP is one
    autograd node that keeps only the pre-activation for backward, and
    without autograd the activation runs in place; QuickGELU costs one SiLU
    pass (its scale is folded into the matmuls). Under autocast the matmuls
    run in the autocast dtype, as ``nn.Linear`` would. A trainable ``fc1`` or
    ``fc2`` takes the plain module path."""
    params = [p for p in (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
              if p is not None]
    if any(p.requires_grad for p in params):
        h = fc1(x)
        if act == 'quick_gelu':
            h = h * torch.sigmoid(QUICK_GELU_SCALE * h)
        else:
            h = F.gelu(h)
        return fc2(h)
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
