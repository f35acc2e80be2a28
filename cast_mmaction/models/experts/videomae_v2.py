"""VideoMAE V2 (Wang et al., CVPR 2023) as the temporal expert.

The network of OpenGVLab/VideoMAEv2 ``models/modeling_finetune.py`` is
VideoMAE's (tubelet patch embedding, the fixed sin-cos table over all tokens,
pre-norm blocks with ``qkv`` + separate ``q_bias`` / ``v_bias``, ``fc_norm``
of the token mean), so this expert is :class:`VideoMAEExpert` with

* V2's sizes by name (``arch``): the giant model has patch 14, width 1408,
  40 blocks of 16 heads (head width 88) and an MLP of ``1408 * 48 / 11 =
  6144``; the distilled ViT-S / ViT-B are the usual ViT sizes;
* V2's optional layer scale (``init_values``: parameters ``gamma_1`` /
  ``gamma_2`` of each block, multiplied onto the attention / MLP branch);
* V2's checkpoint containers (``module`` / ``model`` dicts, ``_orig_mod.``
  of ``torch.compile``, ``encoder.`` / ``backbone.`` prefixes), read by
  ``cast_mmaction/checkpoints/videomae_v2.py``.
"""
import torch
import torch.nn as nn

from mmaction.registry import MODELS
from .videomae_vit import VideoMAEExpert

# VideoMAEv2 models/modeling_finetune.py: vit_{small,base,large,huge}_
# patch16_224 and vit_giant_patch14_224
ARCHS = {
    'small': dict(embed_dim=384, depth=12, num_heads=6, patch_size=16,
                  mlp_ratio=4.0),
    'base': dict(embed_dim=768, depth=12, num_heads=12, patch_size=16,
                 mlp_ratio=4.0),
    'large': dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16,
                  mlp_ratio=4.0),
    'huge': dict(embed_dim=1280, depth=32, num_heads=16, patch_size=16,
                 mlp_ratio=4.0),
    'giant': dict(embed_dim=1408, depth=40, num_heads=16, patch_size=14,
                  mlp_ratio=48 / 11),
}


@MODELS.register_module()
class VideoMAEv2Expert(VideoMAEExpert):
    """VideoMAE V2 ViT over tubelets.

    Args:
        arch: ``'small'``, ``'base'``, ``'large'``, ``'huge'`` or
            ``'giant'``: the sizes of the V2 model of that name; the
            explicit ``embed_dim`` / ``depth`` / ``num_heads`` /
            ``patch_size`` / ``mlp_ratio`` override them.
        init_values: None, or V2's layer-scale init (the checkpoint then has
            ``blocks.{i}.gamma_1`` / ``gamma_2``); the released V2 models
            have none.
        other arguments: as :class:`VideoMAEExpert`.
    """

    def __init__(self,
                 arch='base',
                 embed_dim=None,
                 depth=None,
                 num_heads=None,
                 patch_size=None,
                 mlp_ratio=None,
                 tubelet_size=2,
                 img_size=224,
                 num_frames=16,
                 qkv_bias=True,
                 eps=1e-6,
                 init_values=None,
                 pretrained=None,
                 frozen=True,
                 init_cfg=None):
        if arch not in ARCHS:
            raise ValueError(f'VideoMAE V2 expert: arch={arch!r}; use one of '
                             f'{sorted(ARCHS)}')
        size = dict(ARCHS[arch])
        given = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                     patch_size=patch_size, mlp_ratio=mlp_ratio)
        size.update({k: v for k, v in given.items() if v is not None})
        super().__init__(tubelet_size=tubelet_size, img_size=img_size,
                         num_frames=num_frames, qkv_bias=qkv_bias, eps=eps,
                         pretrained=pretrained, frozen=False,
                         init_cfg=init_cfg, **size)
        self.arch = arch
        self.mlp_hidden = int(size['embed_dim'] * size['mlp_ratio'])
        self.init_values = init_values
        if init_values:
            for blk in self.blocks:
                for g in ('gamma_1', 'gamma_2'):
                    blk.register_parameter(g, nn.Parameter(
                        torch.full((self.embed_dim, ), float(init_values))))
        if frozen:
            self.freeze()

    def init_weights(self):
        if self.pretrained:
            from ...checkpoints.videomae_v2 import load_videomae_v2_expert
            load_videomae_v2_expert(self, self.pretrained)

    def attn_branch(self, i, x):
        y = super().attn_branch(i, x)
        gamma = getattr(self.blocks[i], 'gamma_1', None)
        return y if gamma is None else gamma * y

    def mlp_branch(self, i, xn):
        y = super().mlp_branch(i, xn)
        gamma = getattr(self.blocks[i], 'gamma_2', None)
        return y if gamma is None else gamma * y

    def mlp_module(self, i):  # a layer scale multiplies the branch
        if getattr(self.blocks[i], 'gamma_2', None) is not None:
            return None
        return super().mlp_module(i)
