#!/usr/bin/env python
"""Score-level late fusion of two or more prediction dumps of the same test
set (``tools/test.py CONFIG CKPT --dump FILE.pkl``): the weighted mean of
the models' softmax scores, evaluated with the metrics tools/test.py reports
(single-label dumps: top-1, top-5, mean class accuracy; verb/noun dumps:
verb / noun / action accuracy of EPIC-KITCHENS-100).

    python tools/analysis_tools/ensemble.py a.pkl b.pkl --weights 0.6 0.4 --json fused.json

The dumps are pickles read with ``mmengine.load``: fuse only dumps you made.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

import cast_mmaction  # noqa: E402,F401  (compat fixes, registrations)
from cast_mmaction.evaluation.ensemble import (  # noqa: E402
    DumpError, ensemble, write_ek100_scores, write_fused_dump)
from cast_mmaction.evaluation.summaries import (  # noqa: E402
    format_table, write_json)
from cast_mmaction.progress import add_quiet_argument, track  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('dumps', nargs='+', metavar='DUMP.pkl',
                   help='prediction dumps written by tools/test.py --dump')
    p.add_argument('--weights', nargs='+', type=float, default=None,
                   help='one weight per dump (default: equal)')
    p.add_argument('--scores', choices=['auto', 'prob', 'logit'],
                   default='auto',
                   help='the dumps hold probabilities (prob; the configs\' '
                   "average_clips='prob') or logits (logit: softmax "
                   'applied); auto: softmax unless the rows are '
                   'probabilities')
    p.add_argument('--metric', choices=['auto', 'acc', 'ek100',
                                        'epic_sounds'], default='auto',
                   help='auto: acc (AccMetric) for single-label dumps, ek100 '
                   'for verb/noun dumps; epic_sounds adds mAP / mAUC')
    p.add_argument('--json', metavar='OUT',
                   help='also write the per-dump and fused metrics here')
    p.add_argument('--out', metavar='FUSED.pkl',
                   help='also write the fused scores as a dump (the format '
                   'of tools/test.py --dump)')
    p.add_argument('--ek100-scores', metavar='FILE',
                   help='verb/noun dumps: also write the fused scores in the '
                   'official EK100 dict format (for tools/analysis_tools/ek100_submission.py'
                   ' --scores; the test split\'s dumps are unlabelled)')
    add_quiet_argument(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        result = ensemble(
            args.dumps, args.weights, args.scores, args.metric,
            progress=lambda paths: track(paths, desc='loading dumps',
                                         unit='dump', quiet=args.quiet))
        if args.ek100_scores:
            write_ek100_scores(args.ek100_scores, result['reference'],
                               result['scores'])
            print(f'EK100 scores written to {args.ek100_scores}')
    except DumpError as e:
        sys.exit(f'error: {e}')
    if args.out:
        write_fused_dump(args.out, result['reference'], result['scores'])
        print(f'fused dump written to {args.out}')
    keys = list(result['fused'])
    if keys:
        rows = [[osp.basename(p), f'{w:g}']
                + [f'{100 * m[k]:.2f}' for k in keys]
                for (p, m), w in zip(result['inputs'], result['weights'])]
        rows.append(['fused', ''] + [f'{100 * result["fused"][k]:.2f}'
                                     for k in keys])
        print(f'{result["kind"]} dumps, {result["num_samples"]} samples '
              f'(metrics in %)')
        print(format_table(['dump', 'weight'] + keys, rows))
    else:
        print(f'{result["kind"]} dumps, {result["num_samples"]} samples, '
              f'unlabelled: no metrics')
    if args.json:
        write_json(args.json, dict(
            kind=result['kind'], num_samples=result['num_samples'],
            inputs=[dict(dump=p, weight=w, metrics=m) for (p, m), w in zip(
                result['inputs'], result['weights'])],
            fused=result['fused']))
        print(f'written to {args.json}')
    return result


if __name__ == '__main__':
    main()
