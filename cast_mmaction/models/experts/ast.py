"""AST (Audio Spectrogram Transformer) as the audio expert of CAVA / CA2ST.

DeiT-B layout (Gong et al., 2021): a Conv2d(1, D, 16x16) patch embedding
with *overlapping* strides (10 x 10 in the published models) on a 128-bin
log-mel filterbank, a class and a distillation token, a learned position
table over the ``(f_dim, t_dim)`` patch grid, pre-LN blocks with a fused
``qkv`` (with bias) and a GELU MLP, final ``norm``. Pooled feature =
``(norm(x)[cls] + norm(x)[dist]) / 2``.

Parameter names follow the official AST checkpoints without their
``module.v.`` prefix (``patch_embed.proj``, ``cls_token``, ``dist_token``,
``pos_embed``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), so loading is a prefix strip plus a position-grid adaptation
(``cast_mmaction/checkpoints/ast.py``).

Token layout: ``(B, 2 + f_dim * t_dim, D)``; patch tokens are *frequency
major* (token ``f * t_dim + t``), the order of the Conv2d output on the
``(B, 1, F, T)`` spectrogram. For the B-CA links the expert exposes its
patches as one time step of ``f_dim * t_dim`` patches (``grid_t = 1``),
which is the authors' layout of the audio position tables (a space table over
all patches plus a one-entry time table); audio links therefore use the
``global`` window.
"""
import torch
import torch.nn as nn

from mmaction.registry import MODELS
from ..layers import sdpa_heads, to_2tuple, trunc_normal_init
from .base import Expert
from .videomae_vit import VideoMAEMlp


class ASTAttention(nn.Module):
    """timm / DeiT self-attention: fused ``qkv`` (with bias) and ``proj``."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(sdpa_heads(q, k, v, self.num_heads))


class ASTBlock(nn.Module):

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ASTAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = VideoMAEMlp(dim, int(dim * mlp_ratio))


class ASTPatchEmbed(nn.Module):

    def __init__(self, dim, patch_size, stride):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch_size, stride=stride)


def ast_grid(input_fdim, input_tdim, patch_size=16, fstride=10, tstride=10):
    """Patch grid ``(f_dim, t_dim)`` of a Conv2d(patch, stride) on a
    ``(input_fdim, input_tdim)`` spectrogram."""
    pf, pt = to_2tuple(patch_size)
    if input_fdim < pf or input_tdim < pt:
        raise ValueError(
            f'AST expert: a {input_fdim}x{input_tdim} (mel bins x frames) '
            f'spectrogram is smaller than one {pf}x{pt} patch; raise '
            f'input_fdim / input_tdim (the audio pipeline\'s num_mel_bins / '
            f'target_length)')
    return (input_fdim - pf) // fstride + 1, (input_tdim - pt) // tstride + 1


@MODELS.register_module()
class ASTExpert(Expert):
    """Audio Spectrogram Transformer over a (T frames x F mel bins) input.

    Args:
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: tower size (AST /
            DeiT-B: 768, 12, 12, 4, True).
        input_fdim: mel bins of the input (128).
        input_tdim: spectrogram frames of the input (VGGSound 1024,
            EPIC-SOUNDS 400): the position table covers this length.
        patch_size, fstride, tstride: patch embedding (16, 10, 10).
        eps: LayerNorm epsilon (1e-6).
        time_token_order: how :meth:`time_grid` maps spectrogram-column
            encodings onto the patch tokens. ``'authors'`` (default)
            reproduces the published code, which lays the encodings out
            time-major although the tokens are frequency-major (token ``j``
            gets column ``j // f_dim``); ``'grid'`` gives token ``j`` the
            encoding of its own column ``j % t_dim``.
        pretrained: an official AST checkpoint (``module.v.*`` keys, e.g.
            ``audioset_10_10_0.4593.pth``) or a DeiT ImageNet checkpoint;
            the position grid is centre-cropped / resized to
            ``(f_dim, t_dim)``.
        pretrained_grid: ``(f, t)`` patch grid of ``pretrained`` when it
            cannot be inferred (AST AudioSet: (12, 101)).
        frozen: freeze all but the final ``norm``.
        num_frames, img_size: ignored (the backbone's shared video sizes).
    """

    modality = 'audio'
    role = 'audio'
    fsdp_units = (ASTAttention, VideoMAEMlp)
    branch_modules = dict(attn=('norm1', 'attn'), mlp=('norm2', 'mlp'))
    embedding_names = ('patch_embed', 'cls_token', 'dist_token', 'pos_embed')
    no_weight_decay_names = ('pos_embed', )
    trainable_names = ('norm', )

    def __init__(self,
                 embed_dim=768,
                 depth=12,
                 num_heads=12,
                 mlp_ratio=4.0,
                 qkv_bias=True,
                 input_fdim=128,
                 input_tdim=1024,
                 patch_size=16,
                 fstride=10,
                 tstride=10,
                 eps=1e-6,
                 time_token_order='authors',
                 pretrained=None,
                 pretrained_grid=None,
                 frozen=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dim % num_heads:
            raise ValueError(f'AST expert: embed_dim={embed_dim} is not '
                             f'divisible by num_heads={num_heads}')
        if time_token_order not in ('authors', 'grid'):
            raise ValueError(f'AST expert: time_token_order must be '
                             f'"authors" or "grid", got {time_token_order!r}')
        self.embed_dim, self.depth = embed_dim, depth
        self.num_heads = num_heads
        self.patch_size = to_2tuple(patch_size)
        self.stride = (fstride, tstride)
        self.input_fdim, self.input_tdim = input_fdim, input_tdim
        self.f_dim, self.t_dim = ast_grid(input_fdim, input_tdim, patch_size,
                                          fstride, tstride)
        self.grid_t, self.grid_n = 1, self.f_dim * self.t_dim
        self.num_prefix_tokens = 2
        self.time_token_order = time_token_order
        self.pretrained = pretrained
        self.pretrained_grid = pretrained_grid
        self.patch_embed = ASTPatchEmbed(embed_dim, self.patch_size,
                                         self.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.grid_n + 2, embed_dim))
        self.blocks = nn.ModuleList(
            ASTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, eps)
            for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        trunc_normal_init(self)
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        if frozen:
            self.freeze()

    def init_weights(self):
        if self.pretrained:
            from ...checkpoints.ast import load_ast_expert
            load_ast_expert(self, self.pretrained, self.pretrained_grid)

    # -- input and output -------------------------------------------------
    def embed(self, spec):
        """(B, T, F), (B, 1, T, F) or (B, C, T, F) -> (B, 2 + N, D). Like
        the published models only channel 0 of a multi-channel input is
        used."""
        if spec.ndim == 3:
            spec = spec[:, None]
        if spec.ndim != 4:
            raise ValueError(f'AST expert expects a spectrogram (B, [C,] T, '
                             f'F), got shape {tuple(spec.shape)}')
        spec = spec[:, :1]
        t, f = spec.shape[-2:]
        if (f, t) != (self.input_fdim, self.input_tdim):
            raise ValueError(
                f'AST expert built for {self.input_tdim} frames x '
                f'{self.input_fdim} mel bins got {t} x {f}; set the expert\'s '
                f'input_tdim / input_fdim to the audio pipeline\'s '
                f'target_length / num_mel_bins')
        x = self.patch_embed.proj(spec.transpose(-1, -2))  # (B, D, f, t)
        x = x.flatten(2).transpose(1, 2)  # frequency-major tokens
        b = x.shape[0]
        prefix = torch.cat([self.cls_token.expand(b, -1, -1),
                            self.dist_token.expand(b, -1, -1)], dim=1)
        x = torch.cat([prefix.to(x.dtype), x], dim=1)
        return x + self.pos_embed.to(x.dtype)

    def pool(self, x, batch):  # mean of the class and distillation tokens
        x = self.norm(x)
        return (x[:, 0] + x[:, 1]) / 2

    # -- one layer, in pieces --------------------------------------------
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

    # -- token layout -----------------------------------------------------
    def split(self, x, batch):
        return x[:, :2], x[:, 2:].reshape(batch, 1, self.grid_n, x.shape[-1])

    def merge(self, prefix, grid, batch):
        return torch.cat([prefix, grid.reshape(batch, self.grid_n, -1)], 1)

    # -- time encodings ---------------------------------------------------
    def time_segments(self, start_end, num_segments):
        """(B, 2) audio crop ``[start, end]`` in seconds -> (B, t_dim, 2):
        the crop is split into ``num_segments`` equal segments, and
        spectrogram column ``c`` gets segment ``c // (t_dim // S + 1)`` (the
        published assignment; the last segment covers fewer columns)."""
        from ..fusion.time_encoding import split_segments
        seg = split_segments(start_end, num_segments)
        per = self.t_dim // num_segments + 1
        index = torch.arange(num_segments, device=seg.device)
        index = index.repeat_interleave(per)[:self.t_dim]
        return seg[:, index]

    def time_grid(self, enc):
        """(B, t_dim, d) column encodings -> (B, 1, N, d) token encodings."""
        if self.time_token_order == 'authors':
            tokens = enc.repeat_interleave(self.f_dim, dim=1)
        else:
            tokens = enc.repeat(1, self.f_dim, 1)
        return tokens[:, None]


__all__ = ['ASTExpert', 'ast_grid']
