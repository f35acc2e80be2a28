"""EPIC-SOUNDS metric: top-1, top-5, mean class accuracy, mAP and mAUC as
the official benchmark defines them, checked against values computed by
hand on a tiny input (6 classes, classes 3 and 5 absent from the ground
truth)."""
import math
import pickle

import numpy as np
import pytest
import torch

from cast_mmaction.evaluation.epic_sounds_metric import (
    EpicSoundsMetric, epic_sounds_metrics, one_vs_rest_ap, one_vs_rest_auc)

LABELS = np.array([0, 0, 1, 2, 2, 4])
SCORES = np.array([
    # 0     1     2     3     4     5        label  top-1  top-5
    [.50, .20, .10, .05, .10, .05],  # 0      hit    hit
    [.30, .40, .10, .05, .10, .05],  # 0      miss   hit
    [.10, .35, .20, .05, .25, .05],  # 1      hit    hit
    [.20, .10, .40, .10, .10, .10],  # 2      hit    hit
    [.10, .12, .01, .15, .50, .12],  # 2      miss   miss (5 higher)
    [.02, .03, .05, .40, .10, .40],  # 4      miss   hit
])

# Per class, ranking the class's column, positives marked (P):
#  0: .50P .30P ...                    AP 1      AUC 8/8 = 1
#  1: .40 .35P ...                     AP 1/2    AUC 4/5 = .8
#  2: .40P .20 .10 .10 .05 .01P        AP (1/1 + 2/6)/2 = 2/3
#                                      AUC (4 + 0)/8 = .5
#  4: .50 .25 then a tie of four .10 holding the positive:
#     one step with precision 1/6      AP 1/6
#     positive ties 3 negatives        AUC 1.5/5 = .3
#  3, 5: absent from the ground truth: NaN, left out of the means
AP = [1, 1 / 2, 2 / 3, math.nan, 1 / 6, math.nan]
AUC = [1, .8, .5, math.nan, .3, math.nan]
EXPECTED = dict(top1=3 / 6, top5=5 / 6,
                mean_class_acc=(1 / 2 + 1 + 1 / 2 + 0) / 4,
                mAP=(1 + 1 / 2 + 2 / 3 + 1 / 6) / 4,  # 7/12
                mAUC=(1 + .8 + .5 + .3) / 4)  # .65


def test_per_class_ap_and_auc_by_hand():
    np.testing.assert_allclose(one_vs_rest_ap(SCORES, LABELS), AP)
    np.testing.assert_allclose(one_vs_rest_auc(SCORES, LABELS), AUC)


def test_metrics_by_hand():
    out = epic_sounds_metrics(SCORES, LABELS)
    assert list(out) == list(EXPECTED)
    for k, v in EXPECTED.items():
        assert out[k] == pytest.approx(v, abs=1e-12), k


def test_constant_or_nan_scores_are_not_correct():
    """A diverged model (NaN scores) or one that says nothing (constant
    scores) scored 100 % top-1 and top-5 (only strictly higher scores
    counted against the label); now ties rank the lower class first and
    NaN rows are wrong, as the mean-class accuracy already had it."""
    labels = np.arange(8)
    flat = epic_sounds_metrics(np.full((8, 44), 1 / 44), labels)
    assert flat['top1'] == 1 / 8 and flat['top5'] == 5 / 8
    assert flat['mean_class_acc'] == 1 / 8
    nan = epic_sounds_metrics(np.full((8, 44), np.nan), labels)
    assert nan['top1'] == nan['top5'] == nan['mean_class_acc'] == 0
    assert math.isfinite(nan['mAP'])


def test_absent_classes_leave_the_means_but_compete_in_the_ranking():
    # without the absent classes' columns, sample 4's label is within the
    # top 5 and sample 5's label becomes its top-1; the one-vs-rest AP and
    # AUC of the present classes only read their own columns
    kept = [0, 1, 2, 4]
    labels = np.searchsorted(kept, LABELS)
    out = epic_sounds_metrics(SCORES[:, kept], labels)
    assert out['top5'] == 1.0 and out['top1'] == pytest.approx(4 / 6)
    assert out['mean_class_acc'] == pytest.approx((1 / 2 + 1 + 1 / 2 + 1) / 4)
    for k in ('mAP', 'mAUC'):
        assert out[k] == pytest.approx(EXPECTED[k]), k


def test_auc_of_a_class_without_negatives_is_left_out():
    scores = np.array([[.9, .1], [.6, .4]])
    assert np.isnan(one_vs_rest_auc(scores, [0, 0])).all()
    out = epic_sounds_metrics(scores, [0, 0])
    assert 'mAUC' not in out and out['mAP'] == 1.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match='labels must lie in 0..5'):
        epic_sounds_metrics(SCORES, [0, 0, 1, 2, 2, 6])
    with pytest.raises(ValueError, match=r'scores \(N, C\) and labels'):
        epic_sounds_metrics(SCORES, LABELS[:5])


def _samples(labels):
    from mmaction.structures import ActionDataSample
    out = []
    for i, (s, y) in enumerate(zip(SCORES, labels)):
        ds = ActionDataSample().set_pred_score(torch.tensor(s))
        if y is not None:
            ds.set_gt_label(int(y))
        ds.set_metainfo(dict(annotation_id=f'P01_01_{i}'))
        out.append(ds.to_dict())
    return out


def test_metric_class_through_the_evaluator_keys(tmp_path):
    from mmengine.evaluator import Evaluator
    scores_file = str(tmp_path / 'sounds' / 'scores.pkl')
    ev = Evaluator(dict(type='EpicSoundsMetric', scores_file=scores_file))
    samples = _samples(LABELS)
    # a distributed sampler's padding repeats the first sample: dropped
    ev.process(data_samples=samples + samples[:1])
    out = ev.evaluate(len(samples) + 1)
    assert set(out) == {f'epic_sounds/{k}' for k in EXPECTED}
    for k, v in EXPECTED.items():
        assert out[f'epic_sounds/{k}'] == pytest.approx(v), k
    with open(scores_file, 'rb') as f:
        data = pickle.load(f)
    assert list(data['annotation_id']) == [f'P01_01_{i}' for i in range(6)]
    np.testing.assert_allclose(data['interaction_output'], SCORES, rtol=1e-6)


def test_unlabelled_test_split_only_writes_scores(tmp_path):
    metric = EpicSoundsMetric(scores_file=str(tmp_path / 's.pkl'))
    metric.process(None, _samples([None] * 6))
    assert metric.compute_metrics(metric.results) == {}
    assert (tmp_path / 's.pkl').is_file()
    mixed = EpicSoundsMetric()
    mixed.process(None, _samples([0, None, 1, 2, 2, 4]))
    with pytest.raises(ValueError, match='1 of 6 samples have no label'):
        mixed.compute_metrics(mixed.results)


def test_metric_without_results_names_the_problem(tmp_path):
    """An evaluation that saw no sample stops with a one-line error
    instead of NumPy's 'need at least one array to stack' (MMEngine's
    BaseMetric only warns and calls compute_metrics anyway); no scores file
    is written."""
    metric = EpicSoundsMetric(scores_file=str(tmp_path / 's.pkl'))
    with pytest.raises(ValueError) as err:
        metric.evaluate(size=0)
    assert str(err.value) == (
        'EpicSoundsMetric: no samples to score (empty results): the '
        'evaluated dataloader yielded no samples; check the val / test '
        "dataloader's dataset (ann_file) and sampler")
    assert not (tmp_path / 's.pkl').exists()


def test_the_epic_sounds_config_reports_the_benchmark_metrics():
    import os.path as osp

    from mmengine.config import Config
    from mmengine.evaluator import Evaluator
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = Config.fromfile(osp.join(root, 'configs', 'cava_epic_sounds.py'))
    for name in ('val_evaluator', 'test_evaluator'):
        ev = Evaluator(cfg[name].to_dict())
        ev.process(data_samples=_samples(LABELS))
        out = ev.evaluate(len(LABELS))
        assert out['epic_sounds/mAUC'] == pytest.approx(EXPECTED['mAUC'])
