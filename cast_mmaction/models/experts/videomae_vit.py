"""VideoMAE ViT as the temporal expert.

Parameter names follow the VideoMAE checkpoints (``patch_embed.proj``,
``blocks.{i}.{norm1,attn.qkv,attn.q_bias,attn.v_bias,attn.proj,norm2,mlp.fc1,
mlp.fc2}``, ``fc_norm``), so loading pre-training (``encoder.`` prefix) and
fine-tuned checkpoints is a prefix strip (``cast_mmaction/checkpoints``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmaction.registry import MODELS
from ..layers import grid_size, sdpa_heads, sincos_table
from .base import Expert


class VideoMAEAttention(nn.Module):
    """qkv without bias plus separate q and v biases (k bias is zero)."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def qkv_bias(self):
        """The q;k;v bias (k's is zero), or None."""
        if self.q_bias is None:
            return None
        return torch.cat([self.q_bias, torch.zeros_like(self.q_bias),
                          self.v_bias])

    def forward(self, x):
        q, k, v = F.linear(x, self.qkv.weight,
                           self.qkv_bias()).chunk(3, dim=-1)
        return self.proj(sdpa_heads(q, k, v, self.num_heads))


class VideoMAEMlp(nn.Module):

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VideoMAEBlock(nn.Module):

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = VideoMAEAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = VideoMAEMlp(dim, int(dim * mlp_ratio))


class PatchEmbed3D(nn.Module):

    def __init__(self, dim, patch_size, tubelet_size, in_chans=3):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim,
                              (tubelet_size, patch_size, patch_size),
                              (tubelet_size, patch_size, patch_size))


@MODELS.register_module()
class VideoMAEExpert(Expert):
    """VideoMAE ViT over tubelets (``tubelet_size`` x ``patch_size``^2).

    The position table is the fixed 1-D sin-cos table over all
    ``(T / tubelet) * (H / p) * (W / p)`` tokens, regenerated for any clip
    size (it is not a parameter and never loaded).
    """

    modality = 'video'
    role = 'video'
    fsdp_units = (VideoMAEAttention, VideoMAEMlp)
    branch_modules = dict(attn=('norm1', 'attn'), mlp=('norm2', 'mlp'))
    embedding_names = ('patch_embed', )
    trainable_names = ('fc_norm', )

    def __init__(self,
                 embed_dim=768,
                 depth=12,
                 num_heads=12,
                 patch_size=16,
                 tubelet_size=2,
                 img_size=224,
                 num_frames=16,
                 mlp_ratio=4.0,
                 qkv_bias=True,
                 eps=1e-6,
                 pretrained=None,
                 frozen=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dim % num_heads:
            raise ValueError(f'VideoMAE expert: embed_dim={embed_dim} is not '
                             f'divisible by num_heads={num_heads}')
        if num_frames % tubelet_size:
            raise ValueError(
                f'num_frames={num_frames} is not divisible by the VideoMAE '
                f'tubelet_size={tubelet_size}; change num_frames (e.g. to '
                f'{num_frames + tubelet_size - num_frames % tubelet_size})')
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.grid_hw = grid_size(img_size, patch_size,
                                 'img_size (VideoMAE expert)')
        self.grid_t = num_frames // tubelet_size
        self.grid_n = self.grid_hw[0] * self.grid_hw[1]
        self.num_frames = num_frames
        self.pretrained = pretrained
        self.num_prefix_tokens = 0
        self.patch_embed = PatchEmbed3D(embed_dim, patch_size, tubelet_size)
        self.register_buffer(
            'pos_embed', sincos_table(self.grid_t * self.grid_n, embed_dim),
            persistent=False)
        self.blocks = nn.ModuleList(
            VideoMAEBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, eps)
            for _ in range(depth))
        self.fc_norm = nn.LayerNorm(embed_dim, eps=eps)
        if frozen:
            self.freeze()

    def init_weights(self):
        if self.pretrained:
            from ...checkpoints.videomae import load_videomae_expert
            load_videomae_expert(self, self.pretrained)

    def embed(self, video):  # (B, C, T, H, W) -> (B, T'*N, D)
        b, _, t, h, w = video.shape
        if t != self.num_frames or (h // self.patch_size,
                                    w // self.patch_size) != self.grid_hw:
            raise ValueError(
                f'VideoMAE expert built for {self.num_frames} frames of '
                f'{self.grid_hw[0] * self.patch_size}x'
                f'{self.grid_hw[1] * self.patch_size} got {t} frames of '
                f'{h}x{w}; set the model num_frames / img_size to match the '
                f'data pipeline')
        # contiguous tokens: the transposed view of the conv's (B, D, N)
        # output would be the layout of every layer's residual stream (an
        # elementwise op's output follows its first input), so each
        # LayerNorm copied it and each residual add read it across rows.
        # The same token values; a linear reading them now takes addmm's
        # path instead of matmul + bias add (fp32 rounding differences)
        x = self.patch_embed.proj(video).flatten(2).transpose(1, 2)
        return x.contiguous() + self.pos_embed.to(x.dtype)

    def layer_module(self, i):
        return self.blocks[i]

    def attn_branch(self, i, x):
        blk = self.blocks[i]
        return blk.attn(blk.norm1(x))

    def mlp_norm(self, i, x):
        return self.blocks[i].norm2(x)

    def mlp_branch(self, i, xn):
        return self.blocks[i].mlp(xn)

    def mlp_module(self, i):
        return self.blocks[i].mlp

    def pool(self, x, batch):  # fc_norm(mean of all tokens)
        return self.fc_norm(x.mean(1))

    def split(self, x, batch):
        return None, x.reshape(batch, self.grid_t, self.grid_n, x.shape[-1])

    def merge(self, prefix, grid, batch):
        return grid.reshape(batch, self.grid_t * self.grid_n, grid.shape[-1])
