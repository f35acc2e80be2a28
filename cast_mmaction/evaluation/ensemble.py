"""Score-level late fusion of prediction dumps (``tools/analysis_tools/ensemble.py``).

A dump is what ``tools/test.py --dump FILE.pkl`` writes: MMEngine's
``DumpResults`` pickles a list with one dict per test sample (the data
sample's ``to_dict()``), holding

- single-label models: ``pred_score`` (C,) and ``gt_label`` (1,);
- verb/noun models (``CASTVerbNounHead``): ``pred_verb`` (V,),
  ``pred_noun`` (K,), ``gt_verb``, ``gt_noun`` and ``narration_id``;

and the sample's meta keys (``narration_id``, ``annotation_id``,
``video_id``, ... whichever the pipeline packed). The dumps are read with
``mmengine.load`` (pickle), the reader of the format ``DumpResults``
writes: a pickle can run code, so load only dumps you made yourself.

The fused scores are the weighted mean of the dumps' softmax scores; the
metrics are those ``tools/test.py`` reports for the dump's kind (MMAction2's
``AccMetric`` for single-label dumps, :func:`epic_metrics` for verb/noun
dumps, optionally :func:`epic_sounds_metrics`).
"""
import os.path as osp
from collections import OrderedDict

import numpy as np

from .epic_metric import _np, epic_metrics
from .epic_sounds_metric import epic_sounds_metrics

# meta keys that identify a sample, most specific first
ID_KEYS = ('narration_id', 'annotation_id', 'video_id', 'filename',
           'frame_dir')
SINGLE, VERB_NOUN = 'single-label', 'verb/noun'


class DumpError(ValueError):
    """A prediction dump that cannot be read or fused with the others."""


class Dump:
    """One prediction dump as arrays: ``parts`` {name: (N, C) scores},
    ``labels`` {name: (N,) class ids}, ``ids`` (N sample ids or None)."""

    def __init__(self, path, kind, parts, labels, ids):
        self.path, self.kind = path, kind
        self.parts, self.labels, self.ids = parts, labels, ids
        self.id_key = None

    @property
    def labelled(self):
        return all(v is not None for v in self.labels.values())

    def __len__(self):
        return len(next(iter(self.parts.values())))


def _labels(data, key, path):
    """(N,) class ids of ``key``, or None when no sample has it (the
    unlabelled test split)."""
    have = [key in d for d in data]
    if not any(have):
        return None
    if not all(have):
        raise DumpError(f'{path}: {have.count(False)} of {len(data)} samples '
                        f'have no {key}; a dump is all labelled or all '
                        f'unlabelled')
    out = []
    for i, d in enumerate(data):
        value = _np(d[key]).reshape(-1)
        if value.size != 1:
            raise DumpError(f'{path}: sample {i} has {value.size} values in '
                            f'{key}; only single-label dumps (one class id '
                            f'per sample) are supported')
        out.append(int(value[0]))
    return np.array(out)


def load_dump(path):
    """Read a ``tools/test.py --dump`` file into a :class:`Dump`."""
    import mmengine
    if not osp.isfile(path):
        raise DumpError(f'{path}: dump not found (tools/test.py CONFIG CKPT '
                        f'--dump {path} writes it)')
    if not path.endswith(('.pkl', '.pickle')):
        raise DumpError(f'{path}: expected a .pkl dump written by '
                        f'tools/test.py --dump')
    try:
        data = mmengine.load(path, file_format='pkl')
    except Exception as e:  # any unpickling failure: name the file
        raise DumpError(f'{path}: not a readable pickle ({type(e).__name__}:'
                        f' {e})') from None
    if not isinstance(data, (list, tuple)) or not data or not all(
            isinstance(d, dict) for d in data):
        raise DumpError(f'{path}: expected a non-empty list of per-sample '
                        f'dicts (the format of tools/test.py --dump), got '
                        f'{type(data).__name__}')
    if all('pred_verb' in d and 'pred_noun' in d for d in data):
        kind, fields = VERB_NOUN, (('verb', 'pred_verb', 'gt_verb'),
                                   ('noun', 'pred_noun', 'gt_noun'))
    elif all('pred_score' in d for d in data):
        kind, fields = SINGLE, (('score', 'pred_score', 'gt_label'), )
    else:
        raise DumpError(f'{path}: samples need pred_score (single-label) or '
                        f'pred_verb and pred_noun (verb/noun); the first has '
                        f'{sorted(data[0])}')
    parts, labels = {}, {}
    for name, pred, gt in fields:
        rows = [_np(d[pred]).reshape(-1) for d in data]
        if len({r.size for r in rows}) != 1:
            raise DumpError(f'{path}: {pred} has different lengths across '
                            f'samples ({sorted({r.size for r in rows})})')
        parts[name] = np.stack(rows).astype(np.float64)
        labels[name] = _labels(data, gt, path)
    dump = Dump(path, kind, parts, labels, None)
    for key in ID_KEYS:
        if all(key in d for d in data):
            dump.ids, dump.id_key = [str(d[key]) for d in data], key
            break
    return dump


def is_probability(scores, atol=1e-3):
    """Rows non-negative and summing to 1."""
    return bool((scores >= 0).all()
                and np.allclose(scores.sum(1), 1.0, atol=atol))


def softmax(scores):
    z = scores - scores.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def as_probabilities(scores, mode='auto'):
    """``mode`` 'prob': the scores are probabilities already (as with the
    configs' ``average_clips='prob'``); 'logit': apply the softmax; 'auto':
    softmax unless every row already is a probability vector."""
    if mode == 'prob':
        if not is_probability(scores):
            raise DumpError('--scores prob: the scores are not probabilities '
                            '(rows must be non-negative and sum to 1); use '
                            '--scores logit')
        return scores
    if mode == 'logit' or (mode == 'auto' and not is_probability(scores)):
        return softmax(scores)
    if mode != 'auto':
        raise ValueError(f"mode must be 'auto', 'prob' or 'logit', got "
                         f"{mode!r}")
    return scores


def _what(part):
    """'class' for single-label scores, 'verb class' / 'noun class'."""
    return 'class' if part == 'score' else f'{part} class'


def check_compatible(dumps):
    """Raise :class:`DumpError` unless the dumps score the same samples, in
    the same order, with the same labels and classes."""
    if len(dumps) < 2:
        raise DumpError('give at least two dumps to fuse')
    ref = dumps[0]
    for d in dumps[1:]:
        if d.kind != ref.kind:
            raise DumpError(f'{d.path} is a {d.kind} dump but {ref.path} is '
                            f'a {ref.kind} dump')
        if len(d) != len(ref):
            raise DumpError(f'{d.path} has {len(d)} samples but {ref.path} '
                            f'has {len(ref)}; dump the same test set')
        for name, scores in d.parts.items():
            if scores.shape[1] != ref.parts[name].shape[1]:
                raise DumpError(
                    f'{d.path} scores {scores.shape[1]} {_what(name)}es but '
                    f'{ref.path} scores {ref.parts[name].shape[1]}; the '
                    f'models must share the label set')
        if d.ids is not None and ref.ids is not None and d.ids != ref.ids:
            i = next(k for k, (a, b) in enumerate(zip(d.ids, ref.ids))
                     if a != b)
            same = sorted(d.ids) == sorted(ref.ids)
            raise DumpError(
                f'{d.path} and {ref.path} differ at sample {i} ({d.ids[i]!r}'
                f' vs {ref.ids[i]!r}): '
                + ('the same samples in another order; test both with the '
                   'same annotation file and no shuffling' if same else
                   'they hold different samples'))
        if d.labelled != ref.labelled:
            raise DumpError(f'{(d if d.labelled else ref).path} is labelled '
                            f'but {(ref if d.labelled else d).path} is not; '
                            f'dump the same test set')
        if not d.labelled:
            continue
        for name, labels in d.labels.items():
            bad = np.flatnonzero(labels != ref.labels[name])
            if len(bad):
                raise DumpError(
                    f'{d.path} and {ref.path} disagree on the {_what(name)} '
                    f'of {len(bad)} samples (first: sample {bad[0]}, '
                    f'{labels[bad[0]]} vs {ref.labels[name][bad[0]]}); the '
                    f'dumps are of different test sets or orders')


def fuse(dumps, weights=None, scores='auto'):
    """Weighted mean of the dumps' softmax scores: {part: (N, C)}."""
    check_compatible(dumps)
    if weights is None:
        weights = [1.0] * len(dumps)
    weights = [float(w) for w in weights]
    if len(weights) != len(dumps):
        raise DumpError(f'{len(weights)} weights for {len(dumps)} dumps')
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DumpError(f'weights must be non-negative with a positive sum, '
                        f'got {weights}')
    total = sum(weights)
    return {name: sum(w * as_probabilities(d.parts[name], scores)
                      for w, d in zip(weights, dumps)) / total
            for name in dumps[0].parts}


def evaluate(kind, parts, labels, metric='auto'):
    """The metrics tools/test.py reports, keyed as in test_metrics.json
    (none for unlabelled dumps)."""
    if any(v is None for v in labels.values()):
        return OrderedDict()
    if kind == VERB_NOUN:
        if metric not in ('auto', 'ek100'):
            raise DumpError(f'verb/noun dumps are evaluated with the EK100 '
                            f'metric, not {metric!r}')
        out = epic_metrics(parts['verb'], parts['noun'], labels['verb'],
                           labels['noun'])
        return OrderedDict((f'ek100/{k}', v) for k, v in out.items())
    if metric == 'epic_sounds':
        out = epic_sounds_metrics(parts['score'], labels['score'])
        return OrderedDict((f'epic_sounds/{k}', v) for k, v in out.items())
    if metric not in ('auto', 'acc'):
        raise DumpError(f'single-label dumps take --metric acc or '
                        f'epic_sounds, not {metric!r}')
    from mmaction.evaluation import AccMetric
    out = AccMetric().calculate(list(parts['score']),
                                [int(x) for x in labels['score']])
    return OrderedDict((f'acc/{k}', float(v)) for k, v in out.items())


def ensemble(paths, weights=None, scores='auto', metric='auto',
             progress=None):
    """Load, fuse and evaluate. Returns ``{'kind', 'inputs': [(path,
    metrics)], 'fused': metrics, 'weights', 'num_samples', 'scores': {part:
    fused (N, C)}, 'reference': the first Dump}``. ``progress``: wraps the
    iteration over ``paths`` (e.g. :func:`cast_mmaction.progress.track`)."""
    dumps = [load_dump(p) for p in (progress(paths) if progress else paths)]
    fused = fuse(dumps, weights, scores)
    ref = dumps[0]
    inputs = [(d.path, evaluate(d.kind, {k: as_probabilities(v, scores)
                                         for k, v in d.parts.items()},
                                d.labels, metric)) for d in dumps]
    return dict(kind=ref.kind, inputs=inputs,
                fused=evaluate(ref.kind, fused, ref.labels, metric),
                weights=list(weights or [1.0] * len(dumps)),
                num_samples=len(ref), scores=fused, reference=ref)


def write_fused_dump(path, ref, fused):
    """The fused scores as a dump in the format of ``tools/test.py --dump``
    (labels and sample ids taken from ``ref``), e.g. to fuse it again."""
    import mmengine
    import torch
    out = []
    for i in range(len(ref)):
        item = {}
        if ref.kind == VERB_NOUN:
            v = torch.as_tensor(fused['verb'][i], dtype=torch.float32)
            n = torch.as_tensor(fused['noun'][i], dtype=torch.float32)
            item.update(pred_verb=v, pred_noun=n, pred_score=torch.cat([v, n]))
            if ref.labelled:
                item.update(gt_verb=torch.tensor(ref.labels['verb'][i]),
                            gt_noun=torch.tensor(ref.labels['noun'][i]))
        else:
            item['pred_score'] = torch.as_tensor(fused['score'][i],
                                                 dtype=torch.float32)
            if ref.labelled:
                item['gt_label'] = torch.tensor([ref.labels['score'][i]])
        if ref.ids is not None:
            item[ref.id_key] = ref.ids[i]
        out.append(item)
    mmengine.dump(out, path, file_format='pkl')
    return path


def write_ek100_scores(path, ref, fused):
    """Fused verb/noun scores in the official EPIC-KITCHENS dict format
    (the input of ``tools/analysis_tools/ek100_submission.py --scores``)."""
    from .epic_metric import save_scores
    if ref.kind != VERB_NOUN or ref.id_key != 'narration_id':
        raise DumpError(f'{ref.path}: EK100 score files need verb/noun dumps '
                        f'with narration_id (the EK100 configs\' dumps)')
    return save_scores(path, ref.ids, fused['verb'], fused['noun'])
