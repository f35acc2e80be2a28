"""Batch preprocessing of audio-visual inputs, with joint Mixup / CutMix.

``AudioVisualDataPreprocessor`` receives ``inputs`` as a dict of per-sample
lists from ``PackAudioVisualInputs`` (``video`` (V, C, T, H, W), ``audio``
(V, 1, T', F), ``times`` (V, 2 + T)), stacks each modality, normalises the
video with MMAction2's ``ActionDataPreprocessor`` (mean / std, NCTHW) and
leaves the audio as the pipeline normalised it (``AudioFbank``).

``AudioVisualMixup`` (its ``blending``) mixes a batch the way the authors'
training does (timm ``Mixup`` in ``batch`` mode with the spectrogram): one
permutation (the batch reversed) and one weight ``lam`` for the video, the
spectrogram and the labels. Mixup blends both modalities with ``lam``;
CutMix pastes one spatial box into every frame of the video and one
time x frequency box into the spectrogram, each covering a ``1 - lam``
fraction, and the labels use the video box's corrected ``lam``. The
``times`` input (time encodings) stays that of the unpermuted sample.
"""
import math

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, stack_batch

from mmaction.models.data_preprocessors import ActionDataPreprocessor
from mmaction.registry import MODELS


def _box(h, w, lam, generator=None):
    """A random box covering about ``1 - lam`` of an (h, w) plane."""
    ratio = math.sqrt(1.0 - lam)
    ch, cw = int(h * ratio), int(w * ratio)
    cy = int(torch.randint(0, h, (1, ), generator=generator))
    cx = int(torch.randint(0, w, (1, ), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return y0, y1, x0, x1


@MODELS.register_module()
class AudioVisualMixup:
    """Mixup / CutMix of video, spectrogram and labels with one permutation
    and one weight.

    Args:
        num_classes (int): classes of single-label data (``gt_label``).
        num_verbs, num_nouns (int): set both instead of ``num_classes`` for
            verb / noun data (``gt_verb`` / ``gt_noun``, or ``gt_label`` =
            ``[verb, noun]``).
        mixup_alpha, cutmix_alpha (float): Beta parameters (0 disables).
        prob (float): probability that a batch is mixed.
        switch_prob (float): probability of CutMix when both are enabled.
        correct_lam (bool): use the area of the clipped CutMix box.

    ``last`` holds ``dict(mode, lam, perm)`` of the latest batch.
    """

    def __init__(self, num_classes=None, num_verbs=None, num_nouns=None,
                 mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                 switch_prob=0.5, correct_lam=True):
        verbnoun = num_verbs is not None or num_nouns is not None
        if verbnoun and (num_verbs is None or num_nouns is None
                         or num_classes is not None):
            raise ValueError('AudioVisualMixup: give num_classes, or both '
                             'num_verbs and num_nouns')
        if not verbnoun and num_classes is None:
            raise ValueError('AudioVisualMixup: num_classes is required')
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError('AudioVisualMixup: set mixup_alpha or '
                             'cutmix_alpha > 0 (or drop the blending)')
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError('AudioVisualMixup: prob and switch_prob must be '
                             'in [0, 1]')
        self.num_classes = num_classes
        self.num_verbs, self.num_nouns = num_verbs, num_nouns
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.correct_lam = correct_lam
        self.last = dict(mode='none', lam=1.0, perm=None)

    def _draw(self):
        if torch.rand(1).item() >= self.prob:
            return 'none', 1.0
        use_cut = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or torch.rand(1).item() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cut else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return ('cutmix' if use_cut else 'mixup'), lam

    # -- labels -----------------------------------------------------------
    @staticmethod
    def _field(data_samples, field, index):
        out = []
        for ds in data_samples:
            if field in ds:
                out.append(torch.as_tensor(ds.get(field)))
            else:
                out.append(torch.as_tensor(ds.gt_label).reshape(-1)[index])
        return torch.stack(out)

    @staticmethod
    def _soft(labels, num, device):
        labels = labels.to(device)
        if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1):
            return F.one_hot(labels.reshape(-1).long(), num).float()
        if labels.shape[-1] != num:
            raise ValueError(f'AudioVisualMixup: soft labels of width '
                             f'{labels.shape[-1]} for {num} classes')
        return labels.float()

    def _mix_labels(self, data_samples, lam, perm, device):
        if self.num_classes is not None:
            y = self._soft(self._field(data_samples, 'gt_label', 0),
                           self.num_classes, device)
            y = lam * y + (1 - lam) * y[perm]
            for ds, label in zip(data_samples, y):
                ds.set_gt_label(label)
            return
        for field, index, num in (('gt_verb', 0, self.num_verbs),
                                  ('gt_noun', 1, self.num_nouns)):
            y = self._soft(self._field(data_samples, field, index), num,
                           device)
            y = lam * y + (1 - lam) * y[perm]
            for ds, label in zip(data_samples, y):
                ds.set_field(label, field)

    # -- data -------------------------------------------------------------
    def __call__(self, video, audio, data_samples):
        b = video.shape[0]
        mode, lam = self._draw()
        perm = torch.arange(b - 1, -1, -1, device=video.device)
        if mode == 'none' or b < 2:
            mode, lam = 'none', 1.0
        elif mode == 'mixup':
            video = lam * video + (1 - lam) * video[perm]
            if audio is not None:
                audio = lam * audio + (1 - lam) * audio[perm]
        else:
            h, w = video.shape[-2:]
            y0, y1, x0, x1 = _box(h, w, lam)
            video = video.clone()
            video[..., y0:y1, x0:x1] = video[perm][..., y0:y1, x0:x1]
            if self.correct_lam:
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
            if audio is not None:  # (..., T', F): a time x frequency box
                th, fw = audio.shape[-2:]
                t0, t1, f0, f1 = _box(th, fw, lam)
                audio = audio.clone()
                audio[..., t0:t1, f0:f1] = audio[perm][..., t0:t1, f0:f1]
        self._mix_labels(data_samples, lam, perm, video.device)
        self.last = dict(mode=mode, lam=lam, perm=perm)
        return video, audio, data_samples


@MODELS.register_module()
class AudioVisualDataPreprocessor(BaseDataPreprocessor):
    """Stack, normalise and (in training) blend audio-visual batches.

    Args:
        video (dict): ``ActionDataPreprocessor`` arguments for the video
            (``mean``, ``std``, ``to_rgb``); ``format_shape`` is NCTHW.
        blending (dict): e.g. ``dict(type='AudioVisualMixup',
            num_classes=309)``.
    """

    def __init__(self, video=None, blending=None):
        super().__init__()
        video = dict(video or {})
        video.setdefault('format_shape', 'NCTHW')
        if video.pop('blending', None) is not None:
            raise ValueError('AudioVisualDataPreprocessor: put the blending '
                             'at the top level (it mixes audio and video '
                             'together), not under video=')
        self.video = ActionDataPreprocessor(**video)
        self.blending = MODELS.build(blending) if blending else None

    def forward(self, data, training=False):
        data = self.cast_data(data)
        inputs, data_samples = data['inputs'], data['data_samples']
        if not isinstance(inputs, dict):
            raise TypeError(
                'AudioVisualDataPreprocessor expects inputs packed as a dict '
                '(video / audio / times) by PackAudioVisualInputs, got '
                f'{type(inputs).__name__}')
        out = {}
        for key, value in inputs.items():
            if key == 'video':
                out[key], _ = self.video.preprocess(value, data_samples,
                                                    training=False)
            else:
                out[key] = (stack_batch(list(value)) if isinstance(
                    value, (list, tuple)) else value).float()
        if training and self.blending is not None:
            out['video'], audio, data_samples = self.blending(
                out['video'], out.get('audio'), data_samples)
            if audio is not None:
                out['audio'] = audio
        return dict(inputs=out, data_samples=data_samples)
