#!/usr/bin/env python
"""Average the metrics of several test runs, e.g. the three UCF-101 splits
(``configs/ca2st_ucf101.py`` with ``split`` 1, 2, 3): every numeric metric
of the ``test_metrics.json`` files that ``tools/test.py`` wrote (or the work
dirs holding them), per run and averaged.

    python tools/analysis_tools/average_splits.py work_dirs/ucf101_split1 \\
        work_dirs/ucf101_split2 work_dirs/ucf101_split3 --json ucf101.json

The files must hold the same metric keys and come from different
checkpoints (each split is trained and tested on its own).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from cast_mmaction.evaluation.summaries import (  # noqa: E402
    MetricsFileError, average_metrics, format_table, write_json)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('files', nargs='+', metavar='FILE',
                   help='test_metrics.json of each run (or its work dir)')
    p.add_argument('--num-runs', type=int, default=None,
                   help='fail unless exactly this many files are given '
                   '(3 for the UCF-101 protocol)')
    p.add_argument('--json', metavar='OUT',
                   help='also write the per-run values and the means here')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.num_runs is not None and len(args.files) != args.num_runs:
            raise MetricsFileError(f'{len(args.files)} files given, '
                                   f'--num-runs {args.num_runs} expected')
        result = average_metrics(args.files)
    except MetricsFileError as e:
        sys.exit(f'error: {e}')
    n = len(result['runs'])
    header = ['metric'] + [f'run {i + 1}' for i in range(n)] + ['mean']
    rows = [[k] + [f'{v:.4f}' for v in vals] + [f'{result["mean"][k]:.4f}']
            for k, vals in result['per_run'].items()]
    print(format_table(header, rows))
    for i, run in enumerate(result['runs'], 1):
        print(f'run {i}: {run["path"]}')
    if args.json:
        write_json(args.json, result)
        print(f'written to {args.json}')
    return result


if __name__ == '__main__':
    main()
