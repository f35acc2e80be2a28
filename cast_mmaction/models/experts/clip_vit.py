"""CLIP image tower (OpenAI layout) as a frame-wise spatial expert.

Parameter names follow the ``visual.*`` part of the OpenAI checkpoints
(``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
``transformer.resblocks.{i}.{ln_1,attn,ln_2,mlp.c_fc,mlp.c_proj}``,
``ln_post``) and of open_clip's ``visual`` tower, so loading is a prefix strip
(see ``cast_mmaction/checkpoints/clip.py``). The output projection ``proj`` is
not part of the expert: CAST pools ``ln_post`` of the class token.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmaction.registry import MODELS
from ..layers import QuickGELU, grid_size, sdpa_heads
from .base import Expert, check_frames, reject_renamed


class CLIPAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameter names
    (packed ``in_proj_weight`` q;k;v, ``out_proj``) computed with SDPA."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x):  # (B, L, C)
        q, k, v = F.linear(x, self.in_proj_weight,
                           self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(sdpa_heads(q, k, v, self.num_heads))


class CLIPMlp(nn.Sequential):
    """``c_fc -> QuickGELU -> c_proj`` (the OpenAI names)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.add_module('c_fc', nn.Linear(dim, hidden))
        self.add_module('gelu', QuickGELU())
        self.add_module('c_proj', nn.Linear(hidden, dim))


class CLIPBlock(nn.Module):

    def __init__(self, dim, num_heads, mlp_ratio=4.0, eps=1e-5):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = CLIPAttention(dim, num_heads)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = CLIPMlp(dim, hidden)


class CLIPTransformer(nn.Module):
    """``resblocks`` (the OpenAI checkpoint's container name)."""

    def __init__(self, embed_dim, depth, num_heads, mlp_ratio, eps):
        super().__init__()
        self.resblocks = nn.ModuleList(
            CLIPBlock(embed_dim, num_heads, mlp_ratio, eps)
            for _ in range(depth))


@MODELS.register_module()
class CLIPViTExpert(Expert):
    """CLIP ViT image tower applied to selected frames of a clip.

    Args:
        embed_dim, depth, num_heads, patch_size: tower size (ViT-B/16: 768,
            12, 12, 16; ViT-L/14: 1024, 24, 16, 14); OpenAI's ``width``,
            ``layers``, ``heads`` (the checkpoint keys keep their names).
        img_size: input resolution (int or (H, W)).
        num_frames: frames of the input clip.
        frame_start, frame_step: which frames the expert sees
            (CAST: 1, 2 -> frames 1, 3, ..., 15 of 16).
        eps: LayerNorm epsilon (1e-5 in OpenAI CLIP).
        post_norm_eps: epsilon of ``ln_post`` (1e-5 in CAST).
        pretrained: path of the weights to load in ``init_weights`` (OpenAI
            TorchScript ``ViT-B-16.pt``, an open_clip state dict or tag).
        frozen: freeze all but ``ln_post``.
    """

    modality = 'video'
    role = 'image'
    fsdp_units = (CLIPAttention, CLIPMlp)
    branch_modules = dict(attn=('ln_1', 'attn'), mlp=('ln_2', 'mlp'))
    embedding_names = ('conv1', 'class_embedding', 'positional_embedding',
                       'ln_pre')
    trainable_names = ('ln_post', )

    def __init__(self,
                 embed_dim=768,
                 depth=12,
                 num_heads=12,
                 patch_size=16,
                 img_size=224,
                 num_frames=16,
                 frame_start=1,
                 frame_step=2,
                 mlp_ratio=4.0,
                 eps=1e-5,
                 post_norm_eps=1e-5,
                 pretrained=None,
                 frozen=True,
                 init_cfg=None,
                 width=None,
                 layers=None,
                 heads=None):
        super().__init__(init_cfg=init_cfg)
        reject_renamed('CLIPViTExpert', width=width, layers=layers,
                       heads=heads)
        if embed_dim % num_heads:
            raise ValueError(f'CLIP expert: embed_dim={embed_dim} is not '
                             f'divisible by num_heads={num_heads}')
        self.embed_dim, self.depth = embed_dim, depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.grid_hw = grid_size(img_size, patch_size,
                                 'img_size (CLIP expert)')
        self.frame_start, self.frame_step = frame_start, frame_step
        self.grid_t = check_frames(num_frames, frame_start, frame_step,
                                   'CLIP expert')
        self.grid_n = self.grid_hw[0] * self.grid_hw[1]
        self.num_frames = num_frames
        self.pretrained = pretrained
        self.num_prefix_tokens = 1
        scale = embed_dim**-0.5
        self.conv1 = nn.Conv2d(3, embed_dim, patch_size, patch_size,
                               bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(embed_dim))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(self.grid_n + 1, embed_dim))
        self.ln_pre = nn.LayerNorm(embed_dim, eps=eps)
        self.transformer = CLIPTransformer(embed_dim, depth, num_heads,
                                           mlp_ratio, eps)
        self.ln_post = nn.LayerNorm(embed_dim, eps=post_norm_eps)
        if frozen:
            self.freeze()

    def init_weights(self):
        if self.pretrained:
            from ...checkpoints.clip import load_clip_expert
            load_clip_expert(self, self.pretrained)

    def embed(self, video):  # (B, C, T, H, W) -> (B*Ts, 1+N, D)
        return self.embed_norm(self.embed_tokens(video))

    def embed_tokens(self, video):
        """Class token + patch tokens with the position table added, before
        ``ln_pre`` (a backbone adds its own embeddings here, e.g. AIM's
        temporal embedding)."""
        frames = video[:, :, self.frame_start::self.frame_step]
        b, c, t, h, w = frames.shape
        frames = frames.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.conv1(frames).flatten(2).transpose(1, 2)
        if x.shape[1] != self.grid_n:
            raise ValueError(
                f'CLIP expert built for {self.grid_hw} patches per frame got '
                f'{h}x{w} frames; set the model img_size to {h}')
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.positional_embedding.to(
            x.dtype)

    def embed_norm(self, x):
        return self.ln_pre(x)

    def layer_module(self, i):
        return self.transformer.resblocks[i]

    def attn_branch(self, i, x):
        return self.attn_core(i, self.attn_norm(i, x))

    def attn_norm(self, i, x):
        return self.transformer.resblocks[i].ln_1(x)

    def attn_core(self, i, xn):
        return self.transformer.resblocks[i].attn(xn)

    def mlp_norm(self, i, x):
        return self.transformer.resblocks[i].ln_2(x)

    def mlp_branch(self, i, xn):
        return self.transformer.resblocks[i].mlp(xn)

    def mlp_module(self, i):
        return self.transformer.resblocks[i].mlp

    def pool(self, x, batch):  # ln_post(mean over frames of the class token)
        cls = x[:, 0].reshape(batch, -1, x.shape[-1]).mean(1)
        return self.ln_post(cls)

    def frame_features(self, x, batch):  # ln_post of each class token
        return self.ln_post(x[:, 0]).reshape(batch, -1, x.shape[-1])

    def split(self, x, batch):
        prefix = x[:, :1]
        grid = x[:, 1:].reshape(batch, self.grid_t, self.grid_n, x.shape[-1])
        return prefix, grid

    def merge(self, prefix, grid, batch):
        grid = grid.reshape(batch * self.grid_t, self.grid_n, grid.shape[-1])
        return torch.cat([prefix, grid], dim=1)
