"""Any timm ViT (EVA-02, SigLIP, DINOv2, CLIP, ...) as the frame-wise spatial
expert.

The expert holds timm's own model (``self.model``, built with
``timm.create_model(model_name, pretrained=False, num_classes=0, ...)``) and
drives its modules layer by layer through the :class:`Expert` interface:
``patch_embed`` and timm's ``_pos_embed`` (class / register tokens, absolute
position table, RoPE for EVA-02), ``norm_pre``, then per block the attention
branch and the MLP branch separately, so that the CAST adapters and B-CA
links see the same pieces as with :class:`CLIPViTExpert`. Nothing of the
network is re-implemented: norms, SwiGLU MLPs, layer scale, RoPE and the
pooling head (class token, average or SigLIP's attention pool) are timm's.

Supported block types: timm's pre-norm ``Block`` (``ls1`` / ``ls2`` layer
scale), post-norm ``ResPostBlock``, ``EvaBlock`` (``gamma_1`` / ``gamma_2``,
RoPE) and ``EvaBlockPostNorm``. For post-norm blocks the MLP input is the
un-normalised stream (those blocks have no norm before the MLP), which is
then also what the MLP adapter reads.

timm is needed only by this expert (imported when it is built); weights are
a local file (``pretrained=PATH``), never the hub: see
``cast_mmaction/checkpoints/timm_expert.py`` and docs/experts.md.
"""
import torch

from mmaction.registry import MODELS
from ..layers import grid_size
from .base import Expert, check_frames

# first name components (under ``model.``) of the embeddings: layer id 0
_EMBEDDINGS = ('patch_embed', 'cls_token', 'reg_token', 'pos_embed',
               'norm_pre', 'rope')


class _TimmUnits:
    """``fsdp_units`` of :class:`TimmViTExpert`: timm's attention and MLP
    classes, resolved when read (timm stays an optional dependency)."""

    def __get__(self, obj, owner):
        try:
            from timm.layers import Attention, GluMlp, Mlp, SwiGLU
            from timm.models.eva import EvaAttention
        except ImportError:
            return ()
        # (timm's SwiGLUPacked is a partial of GluMlp)
        units = (Attention, EvaAttention, Mlp, GluMlp, SwiGLU)
        return tuple(u for u in units if isinstance(u, type))


def _block_kinds():
    from timm.models.eva import Eva, EvaBlock, EvaBlockPostNorm
    from timm.models.vision_transformer import (Block, ResPostBlock,
                                                VisionTransformer)
    kinds = {Block: 'pre', ResPostBlock: 'post', EvaBlock: 'eva_pre',
             EvaBlockPostNorm: 'eva_post'}
    return (VisionTransformer, Eva), kinds


@MODELS.register_module()
class TimmViTExpert(Expert):
    """A timm ViT applied to selected frames of a clip (like
    :class:`CLIPViTExpert`).

    Args:
        model_name: a timm model name, e.g. ``'eva02_base_patch16_clip_224'``,
            ``'vit_base_patch16_siglip_224'``, ``'vit_base_patch14_dinov2'``,
            ``'vit_base_patch16_clip_224'`` (the pretrained tag after a dot,
            ``.merged2b``, is accepted and ignored: weights come from
            ``pretrained``).
        pretrained: local weight file (timm state dict, ``.safetensors`` or
            ``.pth``/``.bin``; the formats timm's own ``checkpoint_filter_fn``
            of that model converts, e.g. an open_clip EVA file); None keeps
            timm's random initialisation.
        embed_dim, depth, num_heads, patch_size: size overrides passed to
            timm (None: the model's own).
        img_size: frame size the model is built for (its position table is
            resampled to it when loading).
        num_frames, frame_start, frame_step: the frames the expert sees
            (CAST: 1, 2 -> frames 1, 3, ..., 15 of 16).
        model_kwargs: further ``timm.create_model`` arguments (e.g.
            ``drop_path_rate``, ``global_pool``).
        frozen: freeze all but the final norms (``model.norm``,
            ``model.fc_norm``: the counterpart of CLIP's ``ln_post``).
    """

    modality = 'video'
    role = 'image'
    fsdp_units = _TimmUnits()
    trainable_names = ('model.norm', 'model.fc_norm')

    def __init__(self,
                 model_name,
                 pretrained=None,
                 embed_dim=None,
                 depth=None,
                 num_heads=None,
                 patch_size=None,
                 img_size=224,
                 num_frames=16,
                 frame_start=1,
                 frame_step=2,
                 model_kwargs=None,
                 frozen=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        try:
            import timm
        except ImportError as e:
            raise ImportError(
                'TimmViTExpert needs timm (pip install timm; open_clip_torch '
                'installs it too)') from e
        kwargs = dict(model_kwargs or {})
        sizes = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                     patch_size=patch_size)
        kwargs.update({k: v for k, v in sizes.items() if v is not None})
        for bad in ('pretrained', 'num_classes', 'img_size',
                    'dynamic_img_size'):
            if bad in kwargs:
                raise ValueError(
                    f'TimmViTExpert: model_kwargs.{bad} is set by the expert '
                    f'(weights: pretrained=PATH; size: img_size)')
        self.model_name = model_name
        try:
            self.model = timm.create_model(
                model_name.split('.')[0], pretrained=False, num_classes=0,
                img_size=img_size, **kwargs)
        except RuntimeError as e:  # unknown model name
            raise ValueError(f'TimmViTExpert: {e} (model_name='
                             f'{model_name!r}; list them with '
                             f'timm.list_models("*vit*"))') from e
        except TypeError as e:  # a non-ViT model refuses img_size / sizes
            raise TypeError(
                f'TimmViTExpert: timm cannot build {model_name} with '
                f'img_size={img_size}, {kwargs} ({e}); supported are timm\'s '
                f'VisionTransformer (ViT, DeiT-3, CLIP, SigLIP, DINOv2) and '
                f'Eva (EVA, EVA-02) models') from e
        model = self.model
        families, kinds = _block_kinds()
        if not isinstance(model, families):
            raise TypeError(
                f'TimmViTExpert: {model_name} is a timm '
                f'{type(model).__name__}; supported are timm\'s '
                f'VisionTransformer (ViT, DeiT-3, CLIP, SigLIP, DINOv2) and '
                f'Eva (EVA, EVA-02) models')
        self._kinds = []
        for i, blk in enumerate(model.blocks):
            kind = kinds.get(type(blk))
            if kind is None:
                raise TypeError(
                    f'TimmViTExpert: {model_name} block {i} is a '
                    f'{type(blk).__name__}; supported blocks: '
                    f'{sorted(c.__name__ for c in kinds)}')
            self._kinds.append(kind)
        drop = getattr(model, 'patch_drop', None)
        if drop is not None and not isinstance(drop, torch.nn.Identity):
            raise ValueError('TimmViTExpert: patch dropout would break the '
                             'patch grid the links use; set '
                             'patch_drop_rate=0')
        self.embed_dim = model.embed_dim
        self.depth = len(model.blocks)
        self.num_heads = model.blocks[0].attn.num_heads
        self.patch_size = tuple(model.patch_embed.patch_size)
        self.grid_hw = grid_size(img_size, self.patch_size,
                                 'img_size (timm expert)')
        if tuple(model.patch_embed.grid_size) != self.grid_hw:
            raise ValueError(f'TimmViTExpert: timm built a '
                             f'{model.patch_embed.grid_size} grid for '
                             f'img_size={img_size}')
        self.frame_start, self.frame_step = frame_start, frame_step
        self.grid_t = check_frames(num_frames, frame_start, frame_step,
                                   'timm expert')
        self.grid_n = self.grid_hw[0] * self.grid_hw[1]
        self.num_frames = num_frames
        self.num_prefix_tokens = model.num_prefix_tokens
        self.pretrained = pretrained
        if frozen:
            self.freeze()

    def init_weights(self):
        # not BaseModule.init_weights: it would call timm's init_weights,
        # which re-initialises the network
        if self.pretrained:
            from ...checkpoints.timm_expert import load_timm_expert
            load_timm_expert(self, self.pretrained)

    def get_layer_id(self, name, depth):
        """Layer-wise lr decay id of parameter ``name`` (relative to the
        expert): embeddings 0, block ``i`` ``i + 1``, the rest
        ``depth + 1``."""
        parts = name.split('.')
        if parts[0] == 'model' and len(parts) > 1:
            if parts[1] in _EMBEDDINGS:
                return 0
            if parts[1] == 'blocks' and parts[2].isdigit():
                return int(parts[2]) + 1
        return depth + 1

    def cast_frozen(self, dtype):
        """As :meth:`Expert.cast_frozen`, but the pooling head (SigLIP's
        attention pool) stays in full precision: the backbone runs
        :meth:`pool` outside the frozen-dtype autocast, like the trainable
        norms."""
        super().cast_frozen(dtype)
        head = getattr(self.model, 'attn_pool', None)
        if head is not None:
            for p in head.parameters():
                p.data = p.data.float()

    # -- tokens ---------------------------------------------------------
    def embed(self, video):  # (B, C, T, H, W) -> (B*Ts, prefix + N, D)
        frames = video[:, :, self.frame_start::self.frame_step]
        b, c, t, h, w = frames.shape
        if (h // self.patch_size[0], w // self.patch_size[1]) != self.grid_hw:
            raise ValueError(
                f'timm expert {self.model_name} built for {self.grid_hw} '
                f'patches per frame got {h}x{w} frames; set the model '
                f'img_size to {h}')
        frames = frames.transpose(1, 2).reshape(b * t, c, h, w)
        m = self.model
        x = m._pos_embed(m.patch_embed(frames))
        if isinstance(x, tuple):  # Eva: (tokens, rope)
            x = x[0]
        drop = getattr(m, 'patch_drop', None)
        if drop is not None:
            x = drop(x)
        return m.norm_pre(x)

    def _rope(self, i):
        rope = getattr(self.model, 'rope', None)
        if rope is None:
            return None
        if hasattr(rope, 'feat_shape'):
            emb = rope.get_embed()
        else:
            emb = rope.get_embed(shape=self.grid_hw)
        return emb[i] if getattr(self.model, 'rope_mixed', False) else emb

    def attn_branch(self, i, x):
        blk, kind = self.model.blocks[i], self._kinds[i]
        if kind == 'pre':
            return blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x))))
        if kind == 'post':
            return blk.drop_path1(blk.norm1(blk.attn(x)))
        if kind == 'eva_pre':
            y = blk.attn(blk.norm1(x), rope=self._rope(i))
            if blk.gamma_1 is not None:
                y = blk.gamma_1 * y
            return blk.drop_path1(y)
        return blk.drop_path1(blk.norm1(blk.attn(x, rope=self._rope(i))))

    def mlp_norm(self, i, x):
        if self._kinds[i] in ('post', 'eva_post'):
            return x  # post-norm blocks normalise after the MLP
        return self.model.blocks[i].norm2(x)

    def mlp_branch(self, i, xn):
        blk, kind = self.model.blocks[i], self._kinds[i]
        if kind == 'pre':
            return blk.drop_path2(blk.ls2(blk.mlp(xn)))
        if kind == 'eva_pre':
            y = blk.mlp(xn)
            if blk.gamma_2 is not None:
                y = blk.gamma_2 * y
            return blk.drop_path2(y)
        return blk.drop_path2(blk.norm2(blk.mlp(xn)))

    def features(self, video):
        """The plain expert's tokens after timm's final norm, one row per
        seen frame: (B*Ts, prefix + N, D), timm's ``forward_features`` of
        each frame."""
        x = self.embed(video)
        for i in range(self.depth):
            x = x + self.attn_branch(i, x)
            x = x + self.mlp_branch(i, self.mlp_norm(i, x))
        return self.model.norm(x)

    def pool(self, x, batch):
        """timm's pooled pre-logits feature of each frame (final norm, then
        the model's pool: class token, average or attention pool, then
        ``fc_norm``), averaged over the frames."""
        m = self.model
        feat = m.forward_head(m.norm(x), pre_logits=True)
        return feat.reshape(batch, -1, feat.shape[-1]).mean(1)

    def split(self, x, batch):
        p = self.num_prefix_tokens
        grid = x[:, p:].reshape(batch, self.grid_t, self.grid_n, x.shape[-1])
        return (x[:, :p] if p else None), grid

    def merge(self, prefix, grid, batch):
        grid = grid.reshape(batch * self.grid_t, self.grid_n, grid.shape[-1])
        return grid if prefix is None else torch.cat([prefix, grid], dim=1)
