#!/usr/bin/env python
"""Plot an MMEngine training log: loss, learning rate and validation
accuracy over training iterations, as PNG files.

    python tools/analysis_tools/plot_log.py work_dirs/cast_ssv2 [--out-dir plots/]
    python tools/analysis_tools/plot_log.py run1/.../vis_data/scalars.json run2/... \\
        --labels baseline cast --smooth 10

Each LOG is a work dir (its newest ``<timestamp>/vis_data/scalars.json``,
else its newest ``<timestamp>/<timestamp>.log``), a ``scalars.json`` or a
text ``.log`` written by MMEngine's LoggerHook. Several logs are drawn on the
same axes (one colour per run).

Written to --out-dir (default: ``<timestamp>/plots/`` of the first log):
  loss.png      every training loss (``loss``, ``loss_cls``, ``loss_verb``...)
  lr.png        learning rate(s)
  accuracy.png  every validation metric (``acc/top1``, ``ek100/verb_top1``...)
                and the training accuracies the heads log (``top1_acc``...)
  <key>.png     for each --keys KEY (any logged scalar)

x axis: the global training iteration. Validation results are drawn at the
end of their epoch (text logs: exact; scalars.json: the last logged training
iteration before them).
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import re
import sys

TIMING = {'data_time', 'time', 'eta', 'memory', 'step', 'epoch', 'iter'}


class LogError(ValueError):
    pass


# ----------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------
def _newest(paths):
    return sorted(paths)[-1] if paths else None


def find_log(path):
    """A work dir, a scalars.json or a .log -> the file to read."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise LogError(f'{path}: no such file or folder')
    found = _newest(glob.glob(osp.join(path, '*', 'vis_data',
                                       'scalars.json')))
    if found is None and osp.isfile(osp.join(path, 'vis_data',
                                             'scalars.json')):
        found = osp.join(path, 'vis_data', 'scalars.json')
    if found is None:
        found = _newest(glob.glob(osp.join(path, '*', '*.log')) +
                        glob.glob(osp.join(path, '*.log')))
    if found is None:
        raise LogError(f'{path}: no MMEngine log in this folder (looked for '
                       f'*/vis_data/scalars.json and */*.log)')
    return found


def _is_train(rec):
    return 'lr' in rec or any(k.startswith('loss') for k in rec)


def read_scalars_json(path):
    """``vis_data/scalars.json`` -> (train records, val records); every
    record has ``x`` (global iteration)."""
    train, val = [], []
    last = 0
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise LogError(f'{path}, line {n}: not JSON; is it an '
                               f'MMEngine scalars.json?') from None
            if not isinstance(rec, dict):
                raise LogError(f'{path}, line {n}: expected a JSON object')
            if _is_train(rec):
                last = rec.get('step', rec.get('iter', last))
                rec['x'] = last
                train.append(rec)
            else:
                rec['x'] = last
                val.append(rec)
    return train, val


_TRAIN = re.compile(r'(Epoch|Iter)\(train\)\s*(?:\[\s*(\d+)\])?'
                    r'\[\s*(\d+)/\s*(\d+)\]')
_VAL = re.compile(r'(Epoch|Iter)\(val\)\s*(?:\[\s*(\d+)\])?'
                  r'\[\s*(\d+)/\s*(\d+)\]')
_KV = re.compile(r'([A-Za-z_][\w./@-]*):\s+(-?(?:\d+\.?\d*|\.\d+)'
                 r'(?:[eE][-+]?\d+)?|nan|inf|-inf)(?=\s|$)')


def read_text_log(path):
    """An MMEngine ``.log`` -> (train records, val records)."""
    train, val = [], []
    iters_per_epoch = None
    last = 0
    with open(path, errors='replace') as f:
        for line in f:
            m = _TRAIN.search(line)
            if m:
                kind, epoch, i, total = m.groups()
                i, total = int(i), int(total)
                if kind == 'Epoch':
                    iters_per_epoch = total
                    x = (int(epoch) - 1) * total + i
                else:
                    x = i
                rec = {k: float(v) for k, v in _KV.findall(line[m.end():])}
                if epoch is not None:
                    rec['epoch'] = int(epoch)
                rec['x'] = last = x
                train.append(rec)
                continue
            m = _VAL.search(line)
            if m:
                kind, epoch, _, _ = m.groups()
                rec = {k: float(v) for k, v in _KV.findall(line[m.end():])}
                if not set(rec) - TIMING:
                    continue  # a progress line of the validation loop
                if kind == 'Epoch' and epoch is not None and iters_per_epoch:
                    rec['x'] = int(epoch) * iters_per_epoch
                else:
                    rec['x'] = last
                val.append(rec)
    return train, val


def read_log(path):
    path = find_log(path)
    if path.endswith('.json'):
        train, val = read_scalars_json(path)
    else:
        train, val = read_text_log(path)
    if not train and not val:
        raise LogError(f'{path}: no training or validation records found '
                       f'(is it an MMEngine log?)')
    return path, train, val


# ----------------------------------------------------------------------------
# plotting
# ----------------------------------------------------------------------------
def series(records, key):
    pts = [(r['x'], r[key]) for r in records if key in r and isinstance(
        r[key], (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def smooth(values, n):
    if n <= 1 or len(values) < 2:
        return values
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > n:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def loss_keys(records):
    keys = []
    for r in records:
        for k in r:
            if k.startswith('loss') and k not in keys:
                keys.append(k)
    return keys


def lr_keys(records):
    keys = []
    for r in records:
        for k in r:
            if (k == 'lr' or k.endswith('lr') or k.endswith('/lr')) and \
                    k not in keys:
                keys.append(k)
    return keys


def metric_keys(records):
    keys = []
    for r in records:
        for k, v in r.items():
            if k not in TIMING and k != 'x' and isinstance(
                    v, (int, float)) and k not in keys:
                keys.append(k)
    return keys


def train_acc_keys(records):
    """Training accuracies logged by the heads (``top1_acc``...)."""
    keys = []
    for r in records:
        for k in r:
            if 'acc' in k and k not in keys:
                keys.append(k)
    return keys


def plot(runs, parts, title, ylabel, path):
    """One figure. ``parts``: ``[(source, keys_of, n_smooth, marker,
    prefix)]`` with source ``'train'`` or ``'val'``; every key of every run
    is a curve. Returns the number of curves."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    curves = 0
    for label, train, val in runs:
        for source, keys_of, n_smooth, marker, prefix in parts:
            recs = train if source == 'train' else val
            for key in keys_of(recs):
                xs, ys = series(recs, key)
                if not xs:
                    continue
                name = prefix + key
                if len(runs) > 1:
                    name = f'{label}: {name}'
                ax.plot(xs, smooth(ys, n_smooth), marker=marker,
                        linestyle='--' if source == 'train' and marker is None
                        and prefix else '-', label=name)
                curves += 1
    if not curves:
        plt.close(fig)
        return 0
    ax.set_title(title)
    ax.set_xlabel('iteration')
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return curves


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('logs', nargs='+', metavar='LOG')
    ap.add_argument('--out-dir')
    ap.add_argument('--labels', nargs='+', help='legend name per LOG')
    ap.add_argument('--keys', nargs='+', default=[],
                    help='also plot these scalars, one PNG each')
    ap.add_argument('--smooth', type=int, default=1,
                    help='moving average over N points for the losses')
    args = ap.parse_args(argv)
    if args.labels and len(args.labels) != len(args.logs):
        ap.error('--labels needs one name per LOG')
    runs = []
    try:
        for k, log in enumerate(args.logs):
            path, train, val = read_log(log)
            label = args.labels[k] if args.labels else (
                osp.basename(osp.normpath(log)) or path)
            print(f'{path}: {len(train)} training and {len(val)} validation '
                  f'records')
            runs.append((label, train, val))
    except (LogError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    out_dir = args.out_dir
    if out_dir is None:
        where = osp.dirname(find_log(args.logs[0]))
        if osp.basename(where) == 'vis_data':
            where = osp.dirname(where)
        out_dir = osp.join(where, 'plots')
    os.makedirs(out_dir, exist_ok=True)
    written = []
    jobs = [('loss.png', 'training loss', 'loss',
             [('train', loss_keys, args.smooth, None, '')]),
            ('lr.png', 'learning rate', 'lr',
             [('train', lr_keys, 1, None, '')]),
            ('accuracy.png', 'accuracy', 'metric',
             [('train', train_acc_keys, args.smooth, None, 'train '),
              ('val', metric_keys, 1, 'o', 'val ')])]
    for key in args.keys:
        fname = re.sub(r'[^\w.-]+', '_', key) + '.png'
        in_val = any(key in r for _, _, val in runs for r in val)
        jobs.append((fname, key, key, [
            ('val' if in_val else 'train', lambda recs, key=key: [key], 1,
             'o' if in_val else None, '')]))
    for fname, title, ylabel, parts in jobs:
        path = osp.join(out_dir, fname)
        curves = plot(runs, parts, title, ylabel, path)
        if curves:
            written.append(path)
            print(f'{path}: {curves} curve(s)')
        else:
            print(f'{fname}: nothing to plot ({title} not in the log)')
    if not written:
        print('error: nothing was plotted', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
