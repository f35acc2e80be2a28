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

# The experts and the fusion modules use plain ``nn.Linear``; ``Linear`` is
# that class under the name some modules import. The CPU speed-ups (oneDNN
# matmuls, the frozen-MLP autograd node, fusion checkpoint regions) are an
# opt-in layer applied to a built model: ``models/speedups.py``.
Linear = nn.Linear


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at p=0).

    In training each sample's branch is kept with probability ``1 - p`` and
    scaled by ``mask / (1 - p)``, drawn and computed as timm's ``drop_path``
    (a ``(B, 1, ..., 1)`` Bernoulli draw divided by the keep probability,
    then one multiplication). :meth:`add` is the residual update
    ``x + self(scale * y)`` in one pass."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = float(p)
        if not 0.0 <= self.p < 1.0:
            # p = 1 would divide by a keep probability of 0 (NaN outputs)
            raise ValueError(f'DropPath p={p}: use 0 <= p < 1 (the model\'s '
                             f'drop_path_rate sets the last layer\'s p)')

    def _factor(self, x):
        """The per-sample factor ``mask / keep``, (B, 1, ..., 1)."""
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1))
        return mask.bernoulli_(keep).div_(keep)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        return x * self._factor(x)

    def add(self, x, y, scale=1.0):
        """``x + self(scale * y)`` as one ``addcmul``: one pass over the
        residual stream instead of two to four (the scale, the mask, the
        division, the sum), forward and backward, and no host sync. The
        same draw as ``self(y)``; in eval (or at p=0) the same numbers as
        ``x + scale * y``; in training the last product and sum are one
        fused multiply-add (one rounding, where ``x + self(scale * y)``
        rounds the product first)."""
        if self.p == 0.0 or not self.training:
            if scale == 1.0:
                return x + y
            return torch.addcmul(x, y, y.new_ones(()), value=scale)
        return torch.addcmul(x, y, self._factor(y), value=scale)

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
