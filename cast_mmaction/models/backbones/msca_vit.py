"""Frame-wise ViT with temporal attention shifts: MSCA, TokenShift, plain ViT.

One backbone, four behaviours chosen by ``mode`` (``T`` frames of a clip are
consecutive in the batch dimension, ``b * T + t``):

``'plain'``
    the frame-wise ViT baseline: every frame is an image for a ViT.
``'msca_heads'``
    MSCA (Hashiguchi & Tamaki, ACCV 2022 workshops). After the qkv projection
    (bias included) and the head split, heads ``[0, f)`` of the tensors named
    in ``shift_qkv`` at frame ``t`` are taken from frame ``t + 1`` and heads
    ``[H - f, H)`` from frame ``t - 1``, with ``f = num_heads // shift_div``;
    where no neighbour exists (clip ends) they are zero. ``shift_qkv='kv'``
    is MSCA-KV, the published best and the only released variant; ``'q'``,
    ``'k'``, ``'v'``, ``'qkv'`` are the paper's other variants. Zero keys give
    a uniform softmax and zero values a zero context, so with ``'kv'`` a
    shifted head at a clip end contributes nothing.
``'msca_patches'``
    MSCA along the patch dimension: the same rule along tokens instead of
    heads. From the ordered token subset ``shift_tokens`` (``'patches'`` =
    all patch tokens, ``'all'`` = class token too, or explicit indices),
    ``f = len(subset) // shift_div`` tokens take every head of the shifted
    tensors from ``t + 1`` and ``f`` others from ``t - 1``: the first and the
    last ``f`` of the subset (``token_pattern='block'``, the head rule
    transposed) or every ``shift_div``-th token from offset 0 and 1
    (``'strided'``, spread over the image). Only the head variant's code is
    public; this is our reading of the paper's patch variant.
``'tokenshift'``
    TokenShift (Zhang et al., ACM MM 2021): before both the attention and
    the MLP branch of every block only the class token is shifted along
    channels, ``[0, f)`` from ``t + 1`` and ``[f, 2f)`` from ``t - 1`` with
    ``f = embed_dim // shift_div``, zero at clip ends; the shifted tensor is
    also the residual.

No mode adds a parameter or a FLOP (shifts are index copies) and all
attention runs through ``F.scaled_dot_product_attention``. Parameter names
follow timm's ``VisionTransformer`` (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
mlp.fc2}``, ``norm``), so a timm state dict loads by a prefix strip (see
``cast_mmaction/checkpoints/timm_vit.py``).

Input ``(B, C, T, H, W)``; output the final-norm class token of every frame,
``(B, T, D)``, for :class:`FrameClsHead`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule

from mmaction.registry import MODELS
from ... import safe_load
from ..layers import DropPath, grid_size, to_2tuple

# Sizes as data (timm / original ViT): embed_dim, depth, num_heads, mlp_ratio.
ARCH_SETTINGS = {
    'tiny': dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    'small': dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    'base': dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    'large': dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    'huge': dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
}

MODES = ('plain', 'msca_heads', 'msca_patches', 'tokenshift')


def shift_frames(x, num_frames, dim, fwd, bwd):
    """Temporal shift of selected entries along one axis.

    ``x`` is ``(B*T, ...)`` with the ``T`` frames of a clip consecutive.
    Entries ``fwd`` (a LongTensor of indices along per-frame axis ``dim``,
    0 = first axis after ``B*T``) at frame ``t`` are replaced by frame
    ``t + 1``'s, entries ``bwd`` by frame ``t - 1``'s; zero where that frame
    does not exist. Everything else is returned unchanged (bit-exact).
    """
    bt = x.shape[0]
    if bt % num_frames:
        raise ValueError(f'batch of {bt} frames is not a whole number of '
                         f'{num_frames}-frame clips')
    xs = x.reshape(bt // num_frames, num_frames, *x.shape[1:])
    d = dim + 2  # (B, T, ...)
    out = xs
    if fwd.numel():
        src = xs.index_select(d, fwd)
        src = torch.cat([src[:, 1:], torch.zeros_like(src[:, :1])], dim=1)
        out = out.index_copy(d, fwd, src)
    if bwd.numel():
        src = xs.index_select(d, bwd)
        src = torch.cat([torch.zeros_like(src[:, :1]), src[:, :-1]], dim=1)
        out = out.index_copy(d, bwd, src)
    if out is xs:
        out = xs.clone()
    return out.reshape(x.shape)


class ShiftAttention(nn.Module):
    """timm ``Attention`` (packed ``qkv``, ``proj``) with an optional
    temporal shift of q / k / v along heads or tokens before SDPA.

    ``shift`` is None (plain) or a dict ``axis`` ('heads' | 'tokens'),
    ``qkv`` (subset of 'qkv') and index buffers ``fwd`` / ``bwd``.
    """

    def __init__(self, dim, num_heads, qkv_bias=True, attn_drop=0.0,
                 proj_drop=0.0, shift=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed_dim={dim} is not divisible by '
                             f'num_heads={num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.shift_axis = None
        if shift is not None:
            self.shift_axis = shift['axis']
            self.shift_qkv = shift['qkv']
            # index buffers: not parameters, not saved in state dicts
            self.register_buffer('shift_fwd', shift['fwd'], persistent=False)
            self.register_buffer('shift_bwd', shift['bwd'], persistent=False)

    def forward(self, x, num_frames):  # (B*T, N, C)
        bt, n, c = x.shape
        qkv = self.qkv(x).reshape(bt, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B*T, H, N, d)
        if self.shift_axis is not None:
            dim = 0 if self.shift_axis == 'heads' else 1
            t = dict(q=q, k=k, v=v)
            for name in self.shift_qkv:
                t[name] = shift_frames(t[name], num_frames, dim,
                                       self.shift_fwd, self.shift_bwd)
            q, k, v = t['q'], t['k'], t['v']
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(bt, n, c)
        return self.proj_drop(self.proj(x))

    def extra_repr(self):
        if self.shift_axis is None:
            return 'shift=None'
        return (f'shift={self.shift_qkv} along {self.shift_axis}: '
                f'{self.shift_fwd.numel()} from t+1, '
                f'{self.shift_bwd.numel()} from t-1')


class Mlp(nn.Module):
    """timm ``Mlp``: fc1 -> GELU (erf) -> fc2."""

    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TokenShift(nn.Module):
    """Shift the class token's channels ``fwd`` from t+1, ``bwd`` from t-1."""

    def __init__(self, fwd, bwd):
        super().__init__()
        self.register_buffer('fwd', fwd, persistent=False)
        self.register_buffer('bwd', bwd, persistent=False)

    def forward(self, x, num_frames):  # (B*T, N, C)
        cls = shift_frames(x[:, :1], num_frames, 1, self.fwd, self.bwd)
        return torch.cat([cls, x[:, 1:]], dim=1)

    def extra_repr(self):
        return (f'class token: {self.fwd.numel()} channels from t+1, '
                f'{self.bwd.numel()} from t-1')


class FrameViTBlock(nn.Module):
    """Pre-LN ViT block (timm names) with an optional TokenShift."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True,
                 eps=1e-6, drop=0.0, attn_drop=0.0, drop_path=0.0,
                 attn_shift=None, token_shift=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ShiftAttention(dim, num_heads, qkv_bias, attn_drop, drop,
                                   shift=attn_shift)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        # the hidden width dim * mlp_ratio, as timm truncates it; rounded
        # to 6 decimals first, so that a ratio given as mlp_dim / dim (the
        # MSCA dumps' meta) gives mlp_dim back (int(120 * (490 / 120)) is
        # 489)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio, 6)), drop)
        self.drop_path = DropPath(drop_path)
        self.token_shift = token_shift

    def forward(self, x, num_frames):
        if self.token_shift is not None:
            x = self.token_shift(x, num_frames)
        x = self.drop_path.add(x, self.attn(self.norm1(x), num_frames))
        if self.token_shift is not None:
            x = self.token_shift(x, num_frames)
        return self.drop_path.add(x, self.mlp(self.norm2(x)))


def _select_tokens(spec, num_tokens, field='shift_tokens'):
    if spec == 'patches':
        return list(range(1, num_tokens))
    if spec == 'all':
        return list(range(num_tokens))
    if isinstance(spec, (list, tuple)) and all(
            isinstance(i, int) for i in spec):
        bad = [i for i in spec if not 0 <= i < num_tokens]
        if bad or len(set(spec)) != len(spec):
            raise ValueError(f'{field}: indices must be distinct and in '
                             f'[0, {num_tokens}) (0 = class token); got '
                             f'{bad or "duplicates"}')
        return list(spec)
    raise ValueError(f"{field} must be 'patches', 'all' or a list of token "
                     f'indices, got {spec!r}')


@MODELS.register_module()
class MSCAViT(BaseModule):
    """Frame-wise ViT backbone with MSCA / TokenShift temporal shifts.

    Args:
        arch: a size of :data:`ARCH_SETTINGS` ('tiny', 'small', 'base',
            'large', 'huge'); ``embed_dim``, ``depth``, ``num_heads``,
            ``mlp_ratio`` override it (None = from ``arch``).
        patch_size, img_size, in_channels: patch embedding (frames must be
            ``img_size``).
        mode: 'plain' | 'msca_heads' | 'msca_patches' | 'tokenshift'.
        shift_div: fraction of heads / tokens / channels shifted each way
            (``f = count // shift_div``). Published: 12 for MSCA-KV (one head
            each way on ViT-B), 4 for TokenShift. Ignored for 'plain'.
        shift_qkv: which of q, k, v the MSCA modes take from the neighbours
            ('kv' = MSCA-KV; 'q', 'k', 'v', 'qk', 'qv', 'qkv').
        shift_tokens, token_pattern: token subset and pattern of
            'msca_patches' (see the module doc).
        shift_layers: block indices that shift (None = all blocks).
        qkv_bias, eps: timm ViT defaults (True, 1e-6).
        drop_rate, attn_drop_rate, drop_path_rate: regularisation (0 in the
            published recipes).
        final_norm: apply the final LayerNorm ``norm`` to the class tokens.
        pretrained: ImageNet weights loaded in ``init_weights``: a timm state
            dict (``.safetensors``, ``.bin``, ``.pth``) or the original JAX
            ``.npz``; see :func:`cast_mmaction.checkpoints.load_timm_vit`.
        with_cp: activation checkpointing per block (training memory).
    """

    def __init__(self,
                 arch='base',
                 embed_dim=None,
                 depth=None,
                 num_heads=None,
                 mlp_ratio=None,
                 patch_size=16,
                 img_size=224,
                 in_channels=3,
                 mode='msca_heads',
                 shift_div=12,
                 shift_qkv='kv',
                 shift_tokens='patches',
                 token_pattern='block',
                 shift_layers=None,
                 qkv_bias=True,
                 eps=1e-6,
                 drop_rate=0.0,
                 attn_drop_rate=0.0,
                 drop_path_rate=0.0,
                 final_norm=True,
                 pretrained=None,
                 with_cp=False,
                 init_cfg=None,
                 trust_checkpoint=False):
        super().__init__(init_cfg=init_cfg)
        # the config's trust field for `pretrained` (docs/security.md),
        # for entry points that did not run trust_config
        safe_load.pop_trust(dict(pretrained=pretrained,
                                 trust_checkpoint=trust_checkpoint),
                            'backbone')
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'arch={arch!r} unknown; choose one of '
                             f'{sorted(ARCH_SETTINGS)} or set embed_dim, '
                             f'depth, num_heads')
        size = dict(ARCH_SETTINGS[arch])
        for k, v in dict(embed_dim=embed_dim, depth=depth,
                         num_heads=num_heads, mlp_ratio=mlp_ratio).items():
            if v is not None:
                size[k] = v
        self.embed_dim, self.depth = size['embed_dim'], size['depth']
        self.num_heads, self.mlp_ratio = size['num_heads'], size['mlp_ratio']
        if mode not in MODES:
            raise ValueError(f'mode={mode!r} unknown; choose one of {MODES}')
        self.mode, self.shift_div = mode, shift_div
        self.patch_size = to_2tuple(patch_size)
        self.img_size = to_2tuple(img_size)
        self.grid_hw = grid_size(img_size, patch_size, 'img_size (MSCAViT)')
        self.num_tokens = 1 + self.grid_hw[0] * self.grid_hw[1]
        self.pretrained = pretrained
        self.with_cp = with_cp

        dim = self.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, dim, self.patch_size,
                                          self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        self.pos_drop = nn.Dropout(drop_rate)

        attn_shift, token_shift = self._shift_spec(shift_qkv, shift_tokens,
                                                   token_pattern)
        layers = range(self.depth) if shift_layers is None else shift_layers
        bad = [i for i in layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f'shift_layers {bad} out of range for depth '
                             f'{self.depth}')
        self.shift_layers = sorted(set(layers))
        dpr = [drop_path_rate * i / max(self.depth - 1, 1)
               for i in range(self.depth)]  # stochastic depth, linear
        self.blocks = nn.ModuleList()
        for i in range(self.depth):
            on = i in self.shift_layers
            ts = None
            if on and token_shift is not None:
                ts = TokenShift(*token_shift)
            self.blocks.append(
                FrameViTBlock(dim, self.num_heads, self.mlp_ratio, qkv_bias,
                              eps, drop_rate, attn_drop_rate, dpr[i],
                              attn_shift=attn_shift if on else None,
                              token_shift=ts))
        self.norm = nn.LayerNorm(dim, eps=eps) if final_norm else nn.Identity()
        self._init_random()

    # -- construction -----------------------------------------------------
    def _fold(self, count, what):
        if not isinstance(self.shift_div, int) or self.shift_div < 0:
            raise ValueError(f'shift_div must be a non-negative int, got '
                             f'{self.shift_div!r}')
        fold = count // self.shift_div if self.shift_div else 0
        if 2 * fold > count:
            raise ValueError(f'shift_div={self.shift_div} shifts {fold} of '
                             f'{count} {what} each way (more than all); use '
                             f'shift_div >= 2')
        if fold == 0:
            print_log(f'MSCAViT(mode={self.mode!r}): shift_div='
                      f'{self.shift_div} shifts no {what} (of {count}); the '
                      f'model is a frame-wise ViT', logger='current',
                      level=30)
        return fold

    def _shift_spec(self, shift_qkv, shift_tokens, token_pattern):
        long = dict(dtype=torch.long)
        if self.mode == 'plain':
            return None, None
        if self.mode == 'tokenshift':
            f = self._fold(self.embed_dim, 'channels')
            return None, (torch.arange(0, f, **long),
                          torch.arange(f, 2 * f, **long))
        if not shift_qkv or set(shift_qkv) - set('qkv') or len(
                set(shift_qkv)) != len(shift_qkv):
            raise ValueError(f"shift_qkv must be a non-empty subset of 'qkv' "
                             f"such as 'kv', got {shift_qkv!r}")
        qkv = ''.join(c for c in 'qkv' if c in shift_qkv)
        if self.mode == 'msca_heads':
            h = self.num_heads
            f = self._fold(h, 'heads')
            fwd, bwd = list(range(0, f)), list(range(h - f, h))
            axis = 'heads'
        else:
            subset = _select_tokens(shift_tokens, self.num_tokens)
            f = self._fold(len(subset), 'tokens')
            if token_pattern == 'block':
                fwd, bwd = subset[:f], subset[len(subset) - f:]
            elif token_pattern == 'strided':
                fwd = subset[0::self.shift_div][:f] if f else []
                bwd = subset[1::self.shift_div][:f] if f else []
            else:
                raise ValueError(f"token_pattern must be 'block' or "
                                 f"'strided', got {token_pattern!r}")
            axis = 'tokens'
        return dict(axis=axis, qkv=qkv, fwd=torch.tensor(fwd, **long),
                    bwd=torch.tensor(bwd, **long)), None

    def _init_random(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=0.02)
        nn.init.zeros_(self.patch_embed.proj.bias)

    def init_weights(self):
        if self.pretrained:
            from ...checkpoints.timm_vit import load_timm_vit
            load_timm_vit(self, self.pretrained)
        else:
            super().init_weights()

    # -- forward ----------------------------------------------------------
    def embed(self, frames):  # (B*T, C, H, W) -> (B*T, 1+N, D)
        if tuple(frames.shape[-2:]) != self.img_size:
            raise ValueError(
                f'MSCAViT built for {self.img_size[0]}x{self.img_size[1]} '
                f'frames got {frames.shape[-2]}x{frames.shape[-1]}; set '
                f'model.backbone.img_size or the crop size of the pipeline')
        x = self.patch_embed.proj(frames).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        return self.pos_drop(x)

    def forward(self, inputs):
        """``inputs`` (B, C, T, H, W) -> final-norm class tokens (B, T, D)."""
        if inputs.ndim != 5:
            raise ValueError(f'MSCAViT expects (B, C, T, H, W) clips, got '
                             f'shape {tuple(inputs.shape)} (use '
                             f"format_shape='NCTHW' in the data "
                             f'preprocessor)')
        b, c, t, h, w = inputs.shape
        frames = inputs.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.embed(frames)
        for blk in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(blk, x, t, use_reentrant=False)
            else:
                x = blk(x, t)
        cls = self.norm(x[:, 0])
        return cls.reshape(b, t, -1)


def frame_vit_recognizer_cfg(num_classes=400, mode='msca_heads',
                             shift_div=12, shift_qkv='kv', arch='base',
                             label_smooth_eps=0.0, average_clips='score',
                             dropout_ratio=0.0, mean=(127.5, ) * 3,
                             std=(127.5, ) * 3, **backbone_kwargs):
    """Recognizer config of the frame-wise ViT family (MSCA, TokenShift,
    plain ViT) at any size; the shipped configs spell this out."""
    backbone = dict(type='MSCAViT', arch=arch, mode=mode,
                    shift_div=shift_div, shift_qkv=shift_qkv,
                    **backbone_kwargs)
    dim = backbone_kwargs.get('embed_dim') or ARCH_SETTINGS[arch]['embed_dim']
    return dict(
        type='Recognizer3D',
        backbone=backbone,
        cls_head=dict(type='FrameClsHead', num_classes=num_classes,
                      in_channels=dim, dropout_ratio=dropout_ratio,
                      label_smooth_eps=label_smooth_eps,
                      average_clips=average_clips),
        data_preprocessor=dict(type='ActionDataPreprocessor',
                               mean=list(mean), std=list(std),
                               format_shape='NCTHW'))


__all__ = ['MSCAViT', 'ARCH_SETTINGS', 'MODES', 'shift_frames',
           'frame_vit_recognizer_cfg']
