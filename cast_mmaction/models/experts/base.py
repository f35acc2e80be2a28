"""The expert interface: a pretrained transformer over its own token grid.

The multi-expert backbone (``backbones/cast.py``) runs several experts layer by
layer in lock-step. For that each expert exposes its layer in pieces (attention
branch, MLP branch) instead of a monolithic block, and describes how its token
sequence maps onto a ``(T, N)`` grid of patch tokens plus prefix tokens, which
is all a bottleneck cross-attention link needs to know about it.

Token layouts (``x`` below) are the expert's own; ``split``/``merge`` convert
any per-token tensor of that layout (any channel width) to and from
``prefix, grid`` with ``grid`` shaped ``(B, T, N, C)``.
"""
import torch
import torch.nn as nn
from mmengine.model import BaseModule


class Expert(BaseModule):
    """Base class of experts. Subclasses set ``embed_dim``, ``num_heads``,
    ``depth``, ``grid_t``, ``grid_n``, ``modality`` and
    ``trainable_names`` (parameter-name prefixes that stay trainable when the
    expert is frozen), and implement the methods below."""

    modality = 'video'
    trainable_names = ()

    # -- input and output -------------------------------------------------
    def embed(self, inputs):
        """Modality input -> tokens in the expert's layout."""
        raise NotImplementedError

    def pool(self, x, batch):
        """Tokens -> pooled feature (B, C)."""
        raise NotImplementedError

    # -- one layer, in pieces --------------------------------------------
    def attn_branch(self, i, x):
        """Output of layer ``i``'s attention branch (before the residual)."""
        raise NotImplementedError

    def mlp_norm(self, i, x):
        raise NotImplementedError

    def mlp_branch(self, i, xn):
        raise NotImplementedError

    # -- token layout -----------------------------------------------------
    def split(self, x, batch):
        """Tokens -> (prefix or None, grid (B, T, N, C))."""
        raise NotImplementedError

    def merge(self, prefix, grid, batch):
        """Inverse of :meth:`split`."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------
    @property
    def token_grid(self):
        return self.grid_t, self.grid_n

    def freeze(self):
        """Freeze every parameter except those under ``trainable_names``."""
        for name, p in self.named_parameters():
            p.requires_grad_(any(name == t or name.startswith(t + '.')
                                 for t in self.trainable_names))

    def cast_frozen(self, dtype):
        """Store every frozen parameter except those of normalisation layers
        in ``dtype`` (the backbone's ``frozen_dtype``): the matmul weights
        and biases, patch embeddings and position tables, which autocast
        would cast to ``dtype`` on every use anyway. Norm weights stay in
        full precision (autocast runs norms in fp32)."""
        norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d,
                 nn.BatchNorm3d)
        for mod in self.modules():
            if isinstance(mod, norms):
                continue
            for name, p in mod.named_parameters(recurse=False):
                if not p.requires_grad and p.is_floating_point():
                    p.data = p.data.to(dtype)

    def forward_plain(self, inputs):
        """The plain expert (no adapters, no fusion): pooled feature."""
        x = self.embed(inputs)
        batch = inputs.shape[0]
        for i in range(self.depth):
            x = x + self.attn_branch(i, x)
            x = x + self.mlp_branch(i, self.mlp_norm(i, x))
        return self.pool(x, batch)

    def forward(self, inputs):
        return self.forward_plain(inputs)


def check_frames(num_frames, start, step, field):
    idx = list(range(start, num_frames, step))
    if not idx:
        raise ValueError(
            f'{field}: no frame selected from num_frames={num_frames} with '
            f'frame_start={start}, frame_step={step}')
    return len(idx)


__all__ = ['Expert', 'check_frames', 'torch']
