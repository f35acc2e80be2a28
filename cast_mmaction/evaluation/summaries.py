"""Summaries over the ``test_metrics.json`` files that ``tools/test.py``
writes (``{"config": ..., "checkpoint": ..., "metrics": {key: value}}``):

- :func:`balanced_score`: the CAST paper's balanced score, the harmonic mean
  of top-1 over EK100 verb, EK100 noun, SSv2 and K400 (``tools/analysis_tools/balance.py``);
- :func:`compare_models`: those top-1 per task for several models side by
  side (``tools/analysis_tools/balance.py --model``), e.g. CLIP-PEFT baselines vs CAST;
- :func:`average_metrics`: every metric averaged over runs, e.g. the three
  UCF-101 splits (``tools/analysis_tools/average_splits.py``).

Bad input raises :class:`MetricsFileError` naming the file and what to fix.
"""
import json
import os
import os.path as osp
from collections import OrderedDict

# (row name, metric key in test_metrics.json, which file it comes from):
# AccMetric's keys for the single-label sets, EpicKitchensMetric's for EK100
BALANCE_ROWS = (
    ('EK100 verb', 'ek100/verb_top1', 'ek100'),
    ('EK100 noun', 'ek100/noun_top1', 'ek100'),
    ('SSv2', 'acc/top1', 'ssv2'),
    ('K400', 'acc/top1', 'k400'),
)


class MetricsFileError(ValueError):
    """A test_metrics.json that is missing, unreadable or lacks a key."""


def metrics_path(path):
    """``path`` itself, or ``path/test_metrics.json`` for a work dir."""
    if osp.isdir(path):
        return osp.join(path, 'test_metrics.json')
    return path


def load_test_metrics(path):
    """The ``metrics`` dict of a test_metrics.json (or of a work dir's)."""
    path = metrics_path(path)
    if not osp.isfile(path):
        raise MetricsFileError(f'{path}: file not found (tools/test.py writes '
                               f'<work-dir>/test_metrics.json)')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetricsFileError(f'{path}: not readable JSON ({e}); give the '
                               f'test_metrics.json that tools/test.py '
                               f'wrote') from None
    if not isinstance(data, dict) or not isinstance(data.get('metrics'),
                                                    dict):
        raise MetricsFileError(f'{path}: no "metrics" dict (tools/test.py '
                               f'writes {{"config", "checkpoint", '
                               f'"metrics"}})')
    return data


def metric_value(data, key, path, what=''):
    """``data['metrics'][key]`` as a float, or an error naming the key and
    the keys present."""
    metrics = data['metrics']
    if key not in metrics:
        raise MetricsFileError(
            f'{metrics_path(path)}: no metric {key!r}{what}; the file has '
            f'{sorted(metrics) or "no metrics"}')
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetricsFileError(f'{metrics_path(path)}: metric {key!r} is '
                               f'{value!r}, not a number')
    return float(value)


def harmonic_mean(values):
    """Harmonic mean of non-negative values (0 when any is 0)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError('harmonic mean of nothing')
    if any(v < 0 for v in values):
        raise ValueError(f'harmonic mean needs non-negative values: {values}')
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def balanced_score(files):
    """``files``: {'ek100': path, 'ssv2': path, 'k400': path}. Returns
    ``{'rows': [(name, path, key, top1)], 'harmonic_mean': h}`` (fractions).
    """
    missing = [k for k in ('ek100', 'ssv2', 'k400') if not files.get(k)]
    if missing:
        raise MetricsFileError(f'the balanced score needs the test metrics '
                               f'of {missing} too')
    loaded = {k: load_test_metrics(p) for k, p in files.items()}
    rows = []
    for name, key, which in BALANCE_ROWS:
        path = files[which]
        value = metric_value(loaded[which], key, path,
                             f' (the {name} top-1)')
        if not 0.0 <= value <= 1.0:
            raise MetricsFileError(f'{metrics_path(path)}: {key} = {value} '
                                   f'is not a fraction in [0, 1]')
        rows.append((name, metrics_path(path), key, value))
    return dict(rows=rows,
                harmonic_mean=harmonic_mean([r[3] for r in rows]))


TASKS = ('ek100', 'ssv2', 'k400')


def compare_models(models):
    """The paper's comparison table: ``models`` is a list of ``(name,
    {task: path})`` with tasks among :data:`TASKS` (e.g. a CLIP-PEFT
    baseline tested on SSv2 and K400 only). Returns ``{'columns': [row
    names of BALANCE_ROWS], 'models': [(name, {column: top1 or None},
    harmonic mean or None)]}``; the harmonic mean needs all four columns.
    """
    if not models:
        raise MetricsFileError('give at least one model to compare')
    names = [n for n, _ in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MetricsFileError(f'model names {dup} given more than once')
    out = []
    for name, files in models:
        unknown = sorted(set(files) - set(TASKS))
        if unknown or not files:
            raise MetricsFileError(
                f'model {name!r}: tasks {unknown or "none"}; give TASK=PATH '
                f'with TASK among {list(TASKS)}')
        loaded = {k: load_test_metrics(p) for k, p in files.items()}
        values = OrderedDict()
        for row, key, which in BALANCE_ROWS:
            if which not in files:
                values[row] = None
                continue
            v = metric_value(loaded[which], key, files[which],
                             f' (the {row} top-1 of {name})')
            if not 0.0 <= v <= 1.0:
                raise MetricsFileError(f'{metrics_path(files[which])}: {key} '
                                       f'= {v} is not a fraction in [0, 1]')
            values[row] = v
        full = all(v is not None for v in values.values())
        out.append((name, values,
                    harmonic_mean(list(values.values())) if full else None))
    return dict(columns=[r[0] for r in BALANCE_ROWS], models=out)


def average_metrics(paths):
    """Mean of every numeric metric over the runs in ``paths`` (e.g. the
    three UCF-101 splits). Every file must hold the same metric keys and
    come from a different checkpoint. Returns ``{'runs': [...], 'mean':
    {key: value}, 'per_run': {key: [values]}}``."""
    if len(paths) < 2:
        raise MetricsFileError('give the test_metrics.json of at least two '
                               'runs to average')
    full = [metrics_path(p) for p in paths]
    dup = sorted({p for p in full if full.count(p) > 1})
    if dup:
        raise MetricsFileError(f'{dup} given more than once')
    loaded = [load_test_metrics(p) for p in full]
    ckpts = [d.get('checkpoint') for d in loaded]
    for i, c in enumerate(ckpts):
        if c is not None and ckpts.index(c) != i:
            raise MetricsFileError(
                f'{full[ckpts.index(c)]} and {full[i]} both tested checkpoint '
                f'{c}: each split needs the model trained on it')
    keys = [sorted(k for k, v in d['metrics'].items()
                   if isinstance(v, (int, float))
                   and not isinstance(v, bool)) for d in loaded]
    for p, k in zip(full[1:], keys[1:]):
        if k != keys[0]:
            raise MetricsFileError(
                f'{p} has metrics {k} but {full[0]} has {keys[0]}; average '
                f'runs of the same config')
    if not keys[0]:
        raise MetricsFileError(f'{full[0]}: no numeric metrics')
    per_run = OrderedDict((k, [float(d['metrics'][k]) for d in loaded])
                          for k in keys[0])
    mean = OrderedDict((k, sum(v) / len(v)) for k, v in per_run.items())
    return dict(runs=[dict(path=p, config=d.get('config'),
                           checkpoint=d.get('checkpoint'))
                      for p, d in zip(full, loaded)],
                mean=mean, per_run=per_run)


def format_table(header, rows):
    """Plain-text table, columns padded to their widest cell."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    return '\n'.join([line(cells[0]), line(['-' * w for w in widths])]
                     + [line(r) for r in cells[1:]])


def write_json(path, data, default=None):
    """``data`` as indented JSON at ``path`` (folders created);
    ``default``: as ``json.dump``'s (e.g. ``str`` for any other object)."""
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1, default=default)
    return path
