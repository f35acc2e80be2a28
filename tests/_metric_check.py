"""Recompute a run's top-1 accuracy from its dumped predictions, so that an
end-to-end test checks the reported metric rather than its range."""
import pickle

import torch


def dump_evaluator(evaluator, path):
    """``test_evaluator`` plus MMEngine's ``DumpResults`` writing ``path``."""
    evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) \
        else [evaluator]
    return evaluators + [dict(type='DumpResults', out_file_path=str(path))]


def top1_of_dump(path):
    """(top-1 accuracy, number of samples) of a ``DumpResults`` /
    ``tools/test.py --dump`` pickle of single-label predictions."""
    with open(path, 'rb') as f:
        preds = pickle.load(f)
    assert preds, f'{path}: no predictions dumped'
    hits = 0
    for p in preds:
        score = torch.as_tensor(p['pred_score'])
        label = int(torch.as_tensor(p['gt_label']).reshape(-1)[0])
        hits += int(score.argmax()) == label
    return hits / len(preds), len(preds)
