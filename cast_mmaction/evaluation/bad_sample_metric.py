"""BadSampleAwareMetric: a metric wrapper that scores the samples
``RobustDataset(bad_sample='flag')`` could not load as wrong predictions
and reports how many there were.

Config (the recipes)::

    val_evaluator = dict(type='BadSampleAwareMetric', metric_type='AccMetric')
    # or, nested: dict(type='BadSampleAwareMetric',
    #                  metric=dict(type='AccMetric'))
"""
import logging

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from mmaction.registry import METRICS

__all__ = ['BadSampleAwareMetric']


@METRICS.register_module()
class BadSampleAwareMetric(BaseMetric):
    """Wraps a metric: samples flagged by ``RobustDataset(bad_sample='flag')``
    (metainfo ``bad_sample``) get a prediction that ranks their true class
    last, so they count as wrong under top-k / mean-class / verb-noun-action
    accuracy, and ``<prefix>/bad_samples`` reports how many there were (the
    files are logged). Without flagged samples its metrics are the wrapped
    metric's plus ``<prefix>/bad_samples: 0``.

    Args:
        metric (dict | BaseMetric, optional): the metric, e.g.
            ``dict(type='AccMetric')``.
        metric_type (str, optional): instead of ``metric``: the wrapped
            metric's type, its arguments given beside it (``scores_file=...``),
            so that ``--cfg-options val_evaluator.<argument>=...`` reaches it
            as without the wrapper.
        collect_device (str), prefix (str, optional): as ``BaseMetric``; with
            ``metric_type`` they go to the wrapped metric too. The prefix is
            the wrapped metric's unless given.
    """

    def __init__(self, metric=None, collect_device='cpu', prefix=None,
                 metric_type=None, **metric_args):
        if metric_type is not None:
            if metric is not None:
                raise ValueError(
                    'BadSampleAwareMetric takes metric=dict(...) or '
                    'metric_type=... with its arguments, not both')
            metric = dict(type=metric_type, collect_device=collect_device,
                          **metric_args)
            if prefix is not None:
                metric['prefix'] = prefix
        elif metric_args:
            raise TypeError(
                f'BadSampleAwareMetric got {sorted(metric_args)} but no '
                f'metric_type: name the wrapped metric (metric_type=...) '
                f'beside its arguments, or write metric=dict(type=..., ...)')
        if metric is None:
            raise TypeError('BadSampleAwareMetric needs metric=dict(...) or '
                            'metric_type=...')
        if isinstance(metric, dict):
            metric = METRICS.build(metric)
        self.metric = metric
        super().__init__(collect_device=collect_device,
                         prefix=prefix or metric.prefix or 'data')

    @property
    def dataset_meta(self):
        return self.metric.dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, value):
        self.metric.dataset_meta = value

    def process(self, data_batch, data_samples):
        out = []
        for ds in data_samples:
            path = ds.get('bad_sample') if isinstance(ds, dict) else None
            if path:
                ds = _scored_wrong(ds)
            self.results.append(path or '')
            out.append(ds)
        self.metric.process(data_batch, out)

    def compute_metrics(self, results):
        bad = [p for p in results if p]
        if bad:
            print_log(f'{len(bad)} sample(s) could not be loaded and were '
                      f'scored as wrong predictions: ' + ', '.join(bad[:20]) +
                      (' ...' if len(bad) > 20 else ''), logger='current',
                      level=logging.WARNING)
        return dict(bad_samples=len(bad))

    def evaluate(self, size):
        metrics = self.metric.evaluate(size)
        own = super().evaluate(size)
        metrics = dict(metrics or {})
        metrics.update(own or {})
        return metrics


def _wrong_scores(pred, labels):
    """A probability vector like ``pred`` that ranks ``labels`` last."""
    pred = torch.as_tensor(pred)
    wrong = torch.ones_like(pred, dtype=torch.float32)
    idx = torch.as_tensor(labels).reshape(-1).long()
    idx = idx[(idx >= 0) & (idx < wrong.shape[-1])]
    wrong[..., idx] = 0.0
    return (wrong / wrong.sum(-1, keepdim=True).clamp_min(1e-12)).to(
        pred.dtype)


def _scored_wrong(ds):
    ds = dict(ds)
    for pred_key, gt_key in (('pred_score', 'gt_label'),
                             ('pred_verb', 'gt_verb'),
                             ('pred_noun', 'gt_noun')):
        if pred_key in ds and gt_key in ds and isinstance(
                ds[pred_key], torch.Tensor):
            gt = torch.as_tensor(ds[gt_key])
            if gt.dtype.is_floating_point and gt.numel() == ds[
                    pred_key].shape[-1]:  # one-hot / multi-hot
                gt = torch.nonzero(gt > 0).reshape(-1)
            ds[pred_key] = _wrong_scores(ds[pred_key], gt)
    return ds
