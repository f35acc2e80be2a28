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
