"""A recognizer that feeds a dict of modalities to a multi-expert backbone.

Inputs come from ``PackAudioVisualInputs`` through
``AudioVisualDataPreprocessor`` as a dict::

    video  (B, V, C, T, H, W)   V views (clips x crops)
    audio  (B, V, 1, T', F)     log-mel spectrograms, one per view
    times  (B, V, 2 + T)        [audio_start, audio_end, t_0 ..] seconds

Every modality is flattened to ``(B * V, ...)`` (views as batch items, as
``Recognizer3D`` does for video), the backbone (``CASTBackbone``: CAVA,
CA2ST, or CAST itself) returns one pooled feature per expert, and the head
averages the view scores.
"""
import torch

from mmaction.models.recognizers.base import BaseRecognizer
from mmaction.registry import MODELS


def _flatten_views(inputs):
    """{name: (B, V, ...)} -> ({name: (B*V, ...)}, V)."""
    views = None
    flat = {}
    for k, v in inputs.items():
        if not torch.is_tensor(v):
            raise TypeError(f'AudioVisualRecognizer: input {k!r} must be a '
                            f'tensor, got {type(v).__name__}')
        if v.ndim < 2:
            raise ValueError(f'AudioVisualRecognizer: input {k!r} must be '
                             f'(B, views, ...), got {tuple(v.shape)}')
        if views is None:
            views = v.shape[1]
        elif v.shape[1] != views:
            shapes = {kk: tuple(vv.shape) for kk, vv in inputs.items()}
            raise ValueError(
                f'AudioVisualRecognizer: every modality needs the same number '
                f'of views (dim 1), got {shapes}; PackAudioVisualInputs '
                f'repeats the audio for every crop of a clip')
        flat[k] = v.reshape((-1, ) + v.shape[2:])
    return flat, views


@MODELS.register_module()
class AudioVisualRecognizer(BaseRecognizer):
    """Recognizer over ``{'video', 'audio', 'times'}`` inputs.

    ``test_cfg=dict(max_testing_views=n)`` runs the views of one sample in
    chunks of ``n`` (batch size 1), like ``Recognizer3D``.
    """

    def extract_feat(self, inputs, stage='neck', data_samples=None,
                     test_mode=False):
        if not isinstance(inputs, dict):
            raise TypeError(
                'AudioVisualRecognizer expects a dict of modality inputs '
                '(video / audio / times) from AudioVisualDataPreprocessor; '
                f'got {type(inputs).__name__}. Use PackAudioVisualInputs in '
                'the pipeline and data_preprocessor=dict(type='
                '"AudioVisualDataPreprocessor")')
        flat, views = _flatten_views(inputs)
        kwargs = dict()
        if test_mode:
            if self.test_cfg is not None:
                kwargs['fcn_test'] = self.test_cfg.get('fcn_test', False)
            chunk = (self.test_cfg or {}).get('max_testing_views', False)
            total = next(iter(flat.values())).shape[0]
            if chunk and chunk < total:
                feats = [self.backbone({k: v[s:s + chunk]
                                        for k, v in flat.items()})
                         for s in range(0, total, chunk)]
                x = tuple(torch.cat(parts) for parts in zip(*feats))
            else:
                x = self.backbone(flat)
            if self.with_neck:
                x, _ = self.neck(x)
            return x, kwargs
        x = self.backbone(flat)
        if stage == 'backbone':
            return x, kwargs
        loss_aux = dict()
        if self.with_neck:
            x, loss_aux = self.neck(x, data_samples=data_samples)
        kwargs['loss_aux'] = loss_aux
        if stage == 'neck':
            return x, kwargs
        if self.with_cls_head and stage == 'head':
            x = self.cls_head(x, **kwargs)
        return x, kwargs
