"""Batch blending for two-label (verb / noun) recognition.

``VerbNounMixupCutmix`` is a ``blending`` of MMAction2's
``ActionDataPreprocessor`` for EPIC-KITCHENS-100: one mixing weight and one
permutation per batch mix the clips, the verb labels and the noun labels
alike, so a mixed clip's verb and noun targets always describe the same two
source clips in the same proportion. The published recipe (timm-style Mixup
of the authors' code, ``mode='batch'``): with probability ``prob`` a batch is
mixed; then CutMix (``cutmix_alpha``) with probability ``switch_prob``,
otherwise Mixup (``mixup_alpha``); the weight ``lam`` is drawn from
Beta(alpha, alpha); for CutMix one box (area ``1 - lam``) is pasted into
every frame of every clip and ``lam`` is corrected to the box actually
pasted. Label smoothing is left to the head (``label_smooth_eps``), which
smooths soft labels exactly as the authors' smoothed mixup targets.
"""
import math

import torch
import torch.nn.functional as F
from torch.distributions import Beta

from mmaction.registry import MODELS


@MODELS.register_module()
class VerbNounMixupCutmix:
    """Mixup / CutMix applied to clips and to both ``gt_verb`` and
    ``gt_noun`` with the same permutation and weight.

    Args:
        num_verbs (int): verb classes (97).
        num_nouns (int): noun classes (300).
        mixup_alpha (float): Beta parameter of Mixup (0 disables it).
        cutmix_alpha (float): Beta parameter of CutMix (0 disables it).
        prob (float): probability that a batch is mixed at all.
        switch_prob (float): probability of CutMix instead of Mixup when
            both are enabled (the EK100 recipe uses 0: Mixup only).
        correct_lam (bool): set ``lam`` to the area actually kept after the
            CutMix box is clipped at the border.

    After a call, ``last`` holds ``dict(mode, lam, perm)`` of that batch
    (``mode`` in ``{'none', 'mixup', 'cutmix'}``).
    """

    def __init__(self,
                 num_verbs=97,
                 num_nouns=300,
                 mixup_alpha=0.8,
                 cutmix_alpha=1.0,
                 prob=1.0,
                 switch_prob=0.5,
                 correct_lam=True):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError('VerbNounMixupCutmix: set mixup_alpha or '
                             'cutmix_alpha > 0 (or drop the blending)')
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError('VerbNounMixupCutmix: prob and switch_prob must '
                             'be in [0, 1]')
        self.num_verbs, self.num_nouns = num_verbs, num_nouns
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.correct_lam = correct_lam
        self.last = None

    # -- labels ----------------------------------------------------------
    @staticmethod
    def _soft(samples, field, num, device):
        rows = []
        for i, ds in enumerate(samples):
            if field not in ds:
                raise KeyError(f'VerbNounMixupCutmix: data sample {i} has no '
                               f'{field!r}; pack the segments with '
                               f'PackEpicInputs (labelled annotations)')
            value = torch.as_tensor(ds.get(field), device=device)
            if value.numel() == 1:
                value = F.one_hot(value.reshape(()).long(), num).float()
            elif value.shape != (num, ):
                raise ValueError(f'VerbNounMixupCutmix: {field} of sample {i}'
                                 f' has shape {tuple(value.shape)}, expected a'
                                 f' class id or a ({num},) vector')
            rows.append(value.float())
        return torch.stack(rows)

    # -- parameters ------------------------------------------------------
    def _params(self):
        if torch.rand(()).item() >= self.prob:
            return 'none', 1.0
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = torch.rand(()).item() < self.switch_prob
        else:
            cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = Beta(alpha, alpha).sample().item()
        return ('cutmix' if cutmix else 'mixup'), lam

    @staticmethod
    def _box(h, w, lam):
        """A random box of area about ``(1 - lam) h w``, clipped."""
        ratio = math.sqrt(1.0 - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy = torch.randint(0, h, ()).item()
        cx = torch.randint(0, w, ()).item()
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        return y0, y1, x0, x1

    def __call__(self, imgs, data_samples):
        """``imgs``: (B, ..., H, W) float; returns mixed imgs and the data
        samples with soft ``gt_verb`` (num_verbs,) / ``gt_noun``
        (num_nouns,)."""
        device = imgs.device
        verbs = self._soft(data_samples, 'gt_verb', self.num_verbs, device)
        nouns = self._soft(data_samples, 'gt_noun', self.num_nouns, device)
        mode, lam = self._params()
        perm = torch.randperm(imgs.shape[0], device=device)
        if mode == 'mixup':
            imgs = lam * imgs + (1.0 - lam) * imgs[perm]
        elif mode == 'cutmix':
            h, w = imgs.shape[-2:]
            y0, y1, x0, x1 = self._box(h, w, lam)
            imgs = imgs.clone()
            imgs[..., y0:y1, x0:x1] = imgs[perm][..., y0:y1, x0:x1]
            if self.correct_lam:
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        if mode != 'none':
            verbs = lam * verbs + (1.0 - lam) * verbs[perm]
            nouns = lam * nouns + (1.0 - lam) * nouns[perm]
        for ds, v, n in zip(data_samples, verbs, nouns):
            ds.set_field(v, 'gt_verb')
            ds.set_field(n, 'gt_noun')
        self.last = dict(mode=mode, lam=lam, perm=perm)
        return imgs, data_samples

    def __repr__(self):
        return (f'{type(self).__name__}(mixup_alpha={self.mixup_alpha}, '
                f'cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, '
                f'switch_prob={self.switch_prob})')
