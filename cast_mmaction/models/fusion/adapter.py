"""Bottleneck adapters as used in CAST (and AIM before it)."""
import torch.nn as nn


class Adapter(nn.Module):
    """``fc2(GELU(fc1(x)))`` with an optional skip: ``x + ...``.

    Args:
        dim: token width.
        ratio: bottleneck width as a fraction of ``dim`` (0.25: 768 -> 192).
        skip: add the input back (attention-branch adapters) or not
            (MLP-branch and head adapters).
        zero_init: initialise ``fc2`` to zero so that a fresh adapter is the
            identity (skip) or outputs zero (no skip).
    """

    def __init__(self, dim, ratio=0.25, skip=True, zero_init=True):
        super().__init__()
        hidden = int(dim * ratio)
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        if zero_init:
            nn.init.zeros_(self.fc2.weight)
        else:
            nn.init.trunc_normal_(self.fc2.weight, std=0.02)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(x)))
        return x + y if self.skip else y

    def extra_repr(self):
        return f'skip={self.skip}'


class ConvAdapter(nn.Module):
    """ST-Adapter's spatio-temporal adapter on a patch grid:
    ``grid + fc2(dwconv3d(fc1(grid)))``, the depth-wise 3-D convolution
    over (time, height, width) of the bottleneck channels.

    Args:
        dim: token width.
        hidden: bottleneck width (ST-Adapter ViT-B: 384).
        kernel_size: (t, h, w) of the convolution, odd sizes ('same'
            padding); ST-Adapter: (3, 1, 1).

    The convolution and both biases start at zero, so a fresh adapter is
    the identity (ST-Adapter's initialisation); ``fc1`` / ``fc2`` weights
    keep ``nn.Linear``'s default initialisation as theirs do.
    """

    def __init__(self, dim, hidden, kernel_size=(3, 1, 1)):
        super().__init__()
        kernel_size = tuple(int(k) for k in kernel_size)
        if len(kernel_size) != 3 or any(k < 1 or k % 2 == 0
                                        for k in kernel_size):
            raise ValueError(f'ConvAdapter kernel_size={kernel_size}: give '
                             f'three odd sizes (t, h, w), e.g. (3, 1, 1)')
        self.fc1 = nn.Linear(dim, hidden)
        self.conv = nn.Conv3d(hidden, hidden, kernel_size,
                              padding=tuple(k // 2 for k in kernel_size),
                              groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        for t in (self.conv.weight, self.conv.bias, self.fc1.bias,
                  self.fc2.bias):
            nn.init.zeros_(t)

    def forward(self, grid, grid_hw):
        """``grid`` (B, T, N, C) with N = H * W patches -> same shape."""
        b, t, n, _ = grid.shape
        h, w = grid_hw
        if h * w != n:
            raise ValueError(f'ConvAdapter: {n} patches per frame is not the '
                             f'grid {h}x{w}')
        y = self.fc1(grid).reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3)
        y = self.conv(y).permute(0, 2, 3, 4, 1).reshape(b, t, n, -1)
        return grid + self.fc2(y)
