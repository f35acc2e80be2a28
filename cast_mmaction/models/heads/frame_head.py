"""Per-frame classification head of the frame-wise ViT family.

The backbone (:class:`~cast_mmaction.models.backbones.MSCAViT`) returns the
final-norm class token of every frame, ``(B, T, D)``; this head applies one
linear classifier to each frame and averages the per-frame logits over the
frames (the authors' ``ConsensusModule('avg')``). Multi-view testing (several
clips x crops per video) then goes through ``BaseHead.average_clip``.
"""
import torch.nn as nn

from mmaction.models.heads.base import BaseHead
from mmaction.registry import MODELS


@MODELS.register_module()
class FrameClsHead(BaseHead):
    """Linear classifier per frame, logits averaged over frames.

    Args:
        num_classes: number of classes.
        in_channels: width of the per-frame features.
        dropout_ratio: dropout before the classifier (0 in the recipes).
        init_std: std of the classifier's trunc-normal init; 0 gives the
            authors' ``zero_head`` (all-zero classifier).
        **kwargs: ``BaseHead`` arguments (``loss_cls``, ``label_smooth_eps``,
            ``topk``, ``average_clips``: 'score' averages logits over views
            as the authors' test does, 'prob' averages softmax scores).
    """

    def __init__(self, num_classes, in_channels, dropout_ratio=0.0,
                 init_std=0.02, **kwargs):
        kwargs.setdefault('average_clips', 'score')
        super().__init__(num_classes, in_channels, **kwargs)
        self.dropout = nn.Dropout(dropout_ratio)
        self.fc_cls = nn.Linear(in_channels, num_classes)
        if init_std > 0:
            nn.init.trunc_normal_(self.fc_cls.weight, std=init_std)
        else:
            nn.init.zeros_(self.fc_cls.weight)
        nn.init.zeros_(self.fc_cls.bias)

    def init_weights(self):
        """Initialisation happens in ``__init__``."""

    def frame_logits(self, feats):
        """(B, T, D) per-frame features -> (B, T, num_classes) logits."""
        if feats.ndim != 3 or feats.shape[-1] != self.in_channels:
            raise ValueError(
                f'FrameClsHead(in_channels={self.in_channels}) expects '
                f'per-frame features (B, T, {self.in_channels}), got '
                f'{tuple(feats.shape)}; set cls_head.in_channels to the '
                f'backbone width')
        return self.fc_cls(self.dropout(feats))

    def forward(self, feats, **kwargs):
        """(B, T, D) -> (B, num_classes): mean over frames of the logits."""
        if isinstance(feats, (tuple, list)):
            if len(feats) != 1:
                raise ValueError(f'FrameClsHead takes one feature tensor, '
                                 f'got {len(feats)}')
            feats = feats[0]
        return self.frame_logits(feats).mean(dim=1)
