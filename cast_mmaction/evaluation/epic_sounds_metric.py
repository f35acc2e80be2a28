"""EPIC-SOUNDS audio-based interaction recognition metric.

Reports what the official EPIC-SOUNDS benchmark reports for the 44 sound
classes (its evaluation script: ``epic-kitchens/C9-epic-sounds``), as
fractions in [0, 1]:

- ``top1``, ``top5``: the label is among the k highest scores;
- ``mean_class_acc``: top-1 recall of each class present in the ground
  truth, averaged over those classes (the benchmark's "mCA");
- ``mAP``: one-vs-rest average precision of each class present in the ground
  truth (non-interpolated: the mean of the precisions at the ranks of the
  class's positives, tied scores ranked as one step), averaged;
- ``mAUC``: one-vs-rest area under the ROC curve of each class present in
  the ground truth (ties count one half), averaged. A class that is the
  label of every sample has no negatives and no AUC; it is left out.

Classes absent from the ground truth take no part in any of the means: their
scores still compete in the top-k ranking and as negatives of the other
classes.

``scores_file`` also writes every sample's scores in the benchmark's dict
format (``{'annotation_id': (N,) str, 'interaction_output': (N, 44)}``,
pickled), the input of its evaluation and submission scripts. Unlabelled
samples (the recognition test split) are only written there.
"""
import os
import os.path as osp
import pickle
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from mmaction.evaluation.functional import mean_average_precision
from mmaction.registry import METRICS

from .epic_metric import (_np, finite_rows, mean_class_accuracy, topk_correct,
                          warn_nonfinite)


def _check(scores, labels):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f'expected scores (N, C) and labels (N,), got '
                         f'{scores.shape} and {labels.shape}')
    if len(labels) == 0:
        raise ValueError('no samples to evaluate')
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f'labels must lie in 0..{scores.shape[1] - 1} (the '
                         f'score columns), got {labels.min()}..'
                         f'{labels.max()}')
    return scores, labels


def present_classes(labels):
    """The classes that occur in the ground truth, sorted."""
    return np.unique(np.asarray(labels, dtype=np.int64))


def one_vs_rest_ap(scores, labels):
    """(C,) average precision of each class against the rest; NaN for a
    class absent from ``labels``. MMAction2's ``mean_average_precision`` does
    the per-class work."""
    scores, labels = _check(scores, labels)
    onehot = np.eye(scores.shape[1])[labels]
    out = np.full(scores.shape[1], np.nan)
    for c in present_classes(labels):
        # one sample list of (1,) rows per class: the function's layout
        out[c] = mean_average_precision(list(scores[:, [c]]),
                                        list(onehot[:, [c]]))
    return out


def one_vs_rest_auc(scores, labels):
    """(C,) ROC AUC of each class against the rest (the probability that a
    positive scores above a negative, ties one half); NaN for a class with
    no positives or no negatives."""
    scores, labels = _check(scores, labels)
    out = np.full(scores.shape[1], np.nan)
    for c in present_classes(labels):
        pos = scores[labels == c, c]
        neg = scores[labels != c, c]
        if not len(neg):
            continue
        greater = (pos[:, None] > neg[None, :]).sum()
        ties = (pos[:, None] == neg[None, :]).sum()
        out[c] = (greater + 0.5 * ties) / (len(pos) * len(neg))
    return out


def epic_sounds_metrics(scores, labels):
    """All EPIC-SOUNDS recognition metrics (fractions) as an ordered dict."""
    scores, labels = _check(scores, labels)
    ok = finite_rows(scores)
    warn_nonfinite(ok, 'EPIC-SOUNDS metrics')
    # ranked last by mAP / mAUC: NaN / inf is no confidence
    scores = np.where(ok[:, None], scores, -np.inf)
    out = OrderedDict()
    out['top1'] = float(topk_correct(scores, labels, 1).mean())
    out['top5'] = float(topk_correct(scores, labels, 5).mean())
    out['mean_class_acc'] = mean_class_accuracy(scores, labels)
    out['mAP'] = float(np.nanmean(one_vs_rest_ap(scores, labels)))
    auc = one_vs_rest_auc(scores, labels)
    if np.isnan(auc).all():
        print_log('EpicSoundsMetric: every sample has the same label; mAUC '
                  'is undefined and not reported', logger='current')
    else:
        out['mAUC'] = float(np.nanmean(auc))
    return out


def save_sounds_scores(path, annotation_ids, scores):
    """Write the benchmark's dict-format score file (pickle)."""
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
    data = dict(annotation_id=np.asarray(list(annotation_ids), dtype=object),
                interaction_output=np.asarray(scores, dtype=np.float32))
    with open(path, 'wb') as f:
        pickle.dump(data, f)
    return path


@METRICS.register_module()
class EpicSoundsMetric(BaseMetric):
    """Top-1 / top-5 / mean class accuracy / mAP / mAUC for EPIC-SOUNDS.

    Reads ``pred_score`` (class scores averaged over the test views, e.g.
    probabilities with ``average_clips='prob'``), ``gt_label`` and
    ``annotation_id`` of every data sample.

    Args:
        scores_file (str, optional): also write all samples' scores here
            (the benchmark's dict format, pickled).
        collect_device, prefix: as in ``mmengine.evaluator.BaseMetric``
            (the default prefix gives keys like ``epic_sounds/mAP``).
    """

    default_prefix: Optional[str] = 'epic_sounds'

    def __init__(self,
                 scores_file: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.scores_file = scores_file

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            if 'pred_score' not in ds:
                raise KeyError('EpicSoundsMetric needs pred_score in the '
                               'predictions')
            label = _np(ds['gt_label']).reshape(-1) if 'gt_label' in ds \
                else np.array([-1.])
            if label.size != 1:
                raise ValueError('EpicSoundsMetric: gt_label must be one '
                                 'class id per sample at test time')
            self.results.append(dict(
                annotation_id=str(ds.get('annotation_id', '')),
                score=_np(ds['pred_score']).reshape(-1),
                label=int(label[0])))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if not results:
            raise ValueError(
                'EpicSoundsMetric: no samples to score (empty results): the '
                'evaluated dataloader yielded no samples; check the val / '
                'test dataloader\'s dataset (ann_file) and sampler')
        # ids repeat only when a distributed sampler padded the last batch
        unique = OrderedDict()
        for r in results:
            unique.setdefault(r['annotation_id'] or len(unique), r)
        results = list(unique.values())
        scores = np.stack([r['score'] for r in results])
        labels = np.array([r['label'] for r in results])
        if self.scores_file:
            save_sounds_scores(self.scores_file,
                               [r['annotation_id'] for r in results], scores)
            print_log(f'EpicSoundsMetric: scores of {len(results)} samples '
                      f'written to {self.scores_file}', logger='current')
        if (labels < 0).all():
            print_log('EpicSoundsMetric: the samples are unlabelled (test '
                      'split); no accuracy computed', logger='current')
            return {}
        if (labels < 0).any():
            raise ValueError(f'EpicSoundsMetric: {(labels < 0).sum()} of '
                             f'{len(labels)} samples have no label; mixing '
                             f'labelled and unlabelled CSVs?')
        return dict(epic_sounds_metrics(scores, labels))
