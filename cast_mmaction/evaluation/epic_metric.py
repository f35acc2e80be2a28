"""EPIC-KITCHENS-100 verb / noun / action recognition metric.

Per segment the head gives verb and noun probabilities, already averaged
over the test views (``CASTVerbNounHead`` with ``average_clips='prob'``).
Reported, as fractions in [0, 1] like MMAction2's ``AccMetric``:

- ``verb_top1``, ``verb_top5``, ``noun_top1``, ``noun_top5``;
- ``action_top1``: verb and noun top-1 both correct;
- ``action_top5``: the true (verb, noun) pair is among the 5 most likely
  pairs under ``p(verb) x p(noun)``. (Those 5 pairs always lie in the 5 x 5
  grid of the top-5 verbs and top-5 nouns, so only that grid is scored.)
- ``verb_mean_class_acc``, ``noun_mean_class_acc``: top-1 recall of each
  class present in the ground truth, averaged over those classes.

``scores_file`` additionally writes every segment's scores in the
"dict format" of the official EPIC-KITCHENS action-recognition tools
(``{'narration_id': (N,) str, 'verb_output': (N, 97), 'noun_output':
(N, 300)}``, pickled); ``tools/analysis_tools/ek100_submission.py`` turns that file into
a challenge submission. Unlabelled segments (the test split) are only
written there.
"""
import logging
import os
import os.path as osp
import pickle
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from mmaction.registry import METRICS


def _np(x):
    if torch.is_tensor(x):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def finite_rows(*score_arrays):
    """(N,) bool: the samples whose scores are all finite in every array (a
    diverged model's NaN / inf scores are not a ranking)."""
    ok = None
    for a in score_arrays:
        f = np.isfinite(np.asarray(a, dtype=np.float64)).all(1)
        ok = f if ok is None else ok & f
    return ok


def warn_nonfinite(ok, what):
    """Log how many samples had non-finite scores (counted as wrong)."""
    bad = int((~ok).sum())
    if bad:
        print_log(f'{what}: {bad} of {len(ok)} samples have NaN / inf '
                  f'scores; they count as wrong', logger='current',
                  level=logging.WARNING)


def topk_correct(scores, labels, k):
    """(N,) bool: the label is among the ``k`` highest scores, ranked as a
    stable sort puts them (equal scores: the lower class index first, as
    ``torch.topk`` / ``argsort`` rank them, so constant scores are not all
    correct); a sample with a NaN / inf score is wrong."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    own = scores[np.arange(len(labels)), labels][:, None]
    before = np.arange(scores.shape[1])[None, :] < labels[:, None]
    rank = (scores > own).sum(1) + ((scores == own) & before).sum(1)
    return (rank < k) & finite_rows(scores)


def action_topk_correct(verb_scores, noun_scores, verb_labels, noun_labels,
                        k=5):
    """(N,) bool: the true (verb, noun) pair is among the ``k`` best pairs of
    ``verb_scores[v] * noun_scores[n]`` (scores must be non-negative, e.g.
    probabilities), ranked as a stable sort of the pairs in verb-major order
    puts them (equal products: the lower ``v * num_nouns + n`` first); a
    sample with a NaN / inf score is wrong."""
    v = np.asarray(verb_scores, dtype=np.float64)
    n = np.asarray(noun_scores, dtype=np.float64)
    ok = finite_rows(v, n)
    if (v[ok] < 0).any() or (n[ok] < 0).any():
        raise ValueError('action top-k needs non-negative verb/noun scores '
                         '(probabilities); set the head\'s '
                         "average_clips='prob'")
    yv = np.asarray(verb_labels, dtype=np.int64)
    yn = np.asarray(noun_labels, dtype=np.int64)
    rows = np.arange(len(yv))
    kv, kn = min(k, v.shape[1]), min(k, n.shape[1])
    # the k best pairs lie within the top-k verbs x top-k nouns (each
    # ranked by a stable sort), and so does every pair ranked before the
    # true one when that one is among the k best
    top_v = np.argsort(-v, axis=1, kind='stable')[:, :kv]
    top_n = np.argsort(-n, axis=1, kind='stable')[:, :kn]
    grid = (v[rows[:, None], top_v][:, :, None]
            * n[rows[:, None], top_n][:, None, :]).reshape(len(yv), -1)
    flat = (top_v[:, :, None] * n.shape[1]
            + top_n[:, None, :]).reshape(len(yv), -1)
    own = (v[rows, yv] * n[rows, yn])[:, None]
    before = flat < (yv * n.shape[1] + yn)[:, None]
    rank = (grid > own).sum(1) + ((grid == own) & before).sum(1)
    return (rank < k) & ok


def mean_class_accuracy(scores, labels):
    """Top-1 recall per ground-truth class (the first of equal scores
    predicted; a sample with a NaN / inf score wrong), averaged over those
    classes."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    pred = np.where(finite_rows(scores), scores.argmax(1), -1)
    accs = [np.mean(pred[labels == c] == c) for c in np.unique(labels)]
    return float(np.mean(accs))


def epic_metrics(verb_scores, noun_scores, verb_labels, noun_labels):
    """All EK100 recognition metrics (fractions) as an ordered dict."""
    v, n = np.asarray(verb_scores), np.asarray(noun_scores)
    yv, yn = np.asarray(verb_labels), np.asarray(noun_labels)
    out = OrderedDict()
    warn_nonfinite(finite_rows(v, n), 'EK100 metrics')
    v1, n1 = topk_correct(v, yv, 1), topk_correct(n, yn, 1)
    out['verb_top1'] = float(v1.mean())
    out['verb_top5'] = float(topk_correct(v, yv, 5).mean())
    out['noun_top1'] = float(n1.mean())
    out['noun_top5'] = float(topk_correct(n, yn, 5).mean())
    out['action_top1'] = float((v1 & n1).mean())
    out['action_top5'] = float(action_topk_correct(v, n, yv, yn, 5).mean())
    out['verb_mean_class_acc'] = mean_class_accuracy(v, yv)
    out['noun_mean_class_acc'] = mean_class_accuracy(n, yn)
    return out


def save_scores(path, narration_ids, verb_scores, noun_scores):
    """Write the official "dict format" score file (pickle or ``.pt``)."""
    data = dict(narration_id=np.asarray(list(narration_ids), dtype=object),
                verb_output=np.asarray(verb_scores, dtype=np.float32),
                noun_output=np.asarray(noun_scores, dtype=np.float32))
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
    if path.endswith('.pt'):
        torch.save(data, path)
    else:
        with open(path, 'wb') as f:
            pickle.dump(data, f)
    return path


def load_scores(path):
    """Read a score file in the official dict format (``save_scores``) or
    list format (``[{'narration_id', 'verb_output', 'noun_output'}, ...]``).
    Returns ``(narration_ids list, verb (N, V) array, noun (N, K) array)``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'score file {path} not found')
    # opened without running code a file may carry (docs/security.md)
    from ..safe_load import load_checkpoint, load_pickle
    if path.endswith('.pt'):
        data = load_checkpoint(path, what='score file')
    else:
        data = load_pickle(path, what='score file')
    if isinstance(data, (list, tuple)):
        try:
            ids = [str(d['narration_id']) for d in data]
            verb = np.stack([_np(d['verb_output']) for d in data])
            noun = np.stack([_np(d['noun_output']) for d in data])
        except (KeyError, TypeError) as e:
            raise ValueError(f'{path}: list-format entries need narration_id,'
                             f' verb_output and noun_output ({e})') from None
    elif isinstance(data, dict):
        missing = [k for k in ('narration_id', 'verb_output', 'noun_output')
                   if k not in data]
        if missing:
            raise ValueError(f'{path}: score file lacks {missing}')
        ids = [str(x) for x in data['narration_id']]
        verb, noun = _np(data['verb_output']), _np(data['noun_output'])
    else:
        raise ValueError(f'{path}: expected a dict or list of scores, got '
                         f'{type(data).__name__}')
    if verb.ndim != 2 or noun.ndim != 2 or not (len(ids) == len(verb)
                                                == len(noun)):
        raise ValueError(f'{path}: {len(ids)} narration ids but verb scores '
                         f'{verb.shape} and noun scores {noun.shape}')
    return ids, verb, noun


@METRICS.register_module()
class EpicKitchensMetric(BaseMetric):
    """Verb / noun / action accuracy for EPIC-KITCHENS-100.

    Reads ``pred_verb`` / ``pred_noun`` (probabilities averaged over views by
    the head), ``gt_verb`` / ``gt_noun`` and ``narration_id`` of every data
    sample.

    Args:
        scores_file (str, optional): also write all segments' scores here
            (official dict format; ``.pkl`` or ``.pt``).
        collect_device, prefix: as in ``mmengine.evaluator.BaseMetric``
            (the default prefix gives keys like ``ek100/action_top1``).
    """

    default_prefix: Optional[str] = 'ek100'

    def __init__(self,
                 scores_file: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.scores_file = scores_file

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            if 'pred_verb' not in ds or 'pred_noun' not in ds:
                raise KeyError('EpicKitchensMetric needs pred_verb and '
                               'pred_noun in the predictions (use '
                               'CASTVerbNounHead)')
            item = dict(narration_id=str(ds.get('narration_id', '')),
                        verb=_np(ds['pred_verb']).reshape(-1),
                        noun=_np(ds['pred_noun']).reshape(-1))
            if 'gt_verb' in ds and 'gt_noun' in ds:
                gv, gn = _np(ds['gt_verb']), _np(ds['gt_noun'])
                if gv.size != 1 or gn.size != 1:
                    raise ValueError('EpicKitchensMetric: gt_verb / gt_noun '
                                     'must be class ids at test time')
                item['gt_verb'] = int(gv.reshape(()))
                item['gt_noun'] = int(gn.reshape(()))
            self.results.append(item)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if not results:
            raise ValueError(
                'EpicKitchensMetric: no segments to score (empty results): '
                'the evaluated dataloader yielded no samples; check the '
                'val / test dataloader\'s dataset (ann_file) and sampler')
        # ids repeat only when a distributed sampler padded the last batch
        unique = OrderedDict()
        for r in results:
            unique.setdefault(r['narration_id'] or len(unique), r)
        results = list(unique.values())
        verb = np.stack([r['verb'] for r in results])
        noun = np.stack([r['noun'] for r in results])
        if self.scores_file:
            save_scores(self.scores_file,
                        [r['narration_id'] for r in results], verb, noun)
            print_log(f'EpicKitchensMetric: scores of {len(results)} '
                      f'segments written to {self.scores_file}',
                      logger='current')
        labelled = ['gt_verb' in r for r in results]
        if not any(labelled):
            print_log('EpicKitchensMetric: the segments are unlabelled (test '
                      'split); no accuracy computed', logger='current')
            return {}
        if not all(labelled):
            raise ValueError(f'EpicKitchensMetric: {labelled.count(False)} '
                             f'of {len(results)} segments have no labels; '
                             f'mixing labelled and unlabelled CSVs?')
        return dict(
            epic_metrics(verb, noun, [r['gt_verb'] for r in results],
                         [r['gt_noun'] for r in results]))
