#!/usr/bin/env python
"""The CAST paper's balanced score: the harmonic mean of top-1 accuracy over
EK100 verb, EK100 noun, SSv2 and K400, from the ``test_metrics.json`` files
that ``tools/test.py`` writes (or the work dirs holding them).

    python tools/analysis_tools/balance.py --ek100 work_dirs/cast_ek100/test_metrics.json \\
        --ssv2 work_dirs/cast_ssv2 --k400 work_dirs/cast_k400 --json bal.json

Keys read: ``ek100/verb_top1`` and ``ek100/noun_top1`` (EpicKitchensMetric)
from the EK100 file, ``acc/top1`` (AccMetric) from the SSv2 and K400 files.

Several models side by side (the paper's comparison; a model tested on some
of the tasks gets its top-1 there and no harmonic mean):

    python tools/analysis_tools/balance.py --model ST-Adapter ssv2=work_dirs/st_adapter_ssv2 \
        k400=work_dirs/st_adapter_k400 --model CAST ek100=work_dirs/cast_ek100 \
        ssv2=work_dirs/cast_ssv2 k400=work_dirs/cast_k400
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

from cast_mmaction.evaluation.summaries import (  # noqa: E402
    TASKS, MetricsFileError, balanced_score, compare_models, format_table,
    write_json)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    for name, what in (('ek100', 'EK100 (verb and noun top-1)'),
                       ('ssv2', 'Something-Something V2'),
                       ('k400', 'Kinetics-400')):
        p.add_argument(f'--{name}', metavar='FILE',
                       help=f'test_metrics.json of the {what} test (or the '
                       f'work dir holding it)')
    p.add_argument('--model', nargs='+', action='append', default=[],
                   metavar='NAME TASK=FILE',
                   help='compare models: a name, then TASK=FILE for each task '
                   f'it was tested on (TASK in {", ".join(TASKS)}); repeat '
                   'per model')
    p.add_argument('--json', metavar='OUT',
                   help='also write the rows and the harmonic mean here')
    return p.parse_args(argv)


def _models(specs):
    models = []
    for spec in specs:
        name, files = spec[0], {}
        for item in spec[1:]:
            task, sep, path = item.partition('=')
            if not sep or not path:
                sys.exit(f'error: --model {name}: {item!r} is not TASK=FILE '
                         f'(TASK in {", ".join(TASKS)})')
            files[task] = path
        models.append((name, files))
    return models


def compare(args):
    if any(getattr(args, t) for t in TASKS):
        sys.exit('error: give either --model ... (a comparison) or --ek100 / '
                 '--ssv2 / --k400 (one model), not both')
    try:
        result = compare_models(_models(args.model))
    except MetricsFileError as e:
        sys.exit(f'error: {e}')
    rows = [[name] + [f'{100 * v:.2f}' if v is not None else '-'
                      for v in values.values()]
            + [f'{100 * h:.2f}' if h is not None else '-']
            for name, values, h in result['models']]
    print(format_table(['model'] + result['columns'] + ['harmonic mean'],
                       rows))
    if args.json:
        write_json(args.json, dict(columns=result['columns'], models=[
            dict(model=n, top1=dict(v), harmonic_mean=h)
            for n, v, h in result['models']]))
        print(f'written to {args.json}')
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.model:
        return compare(args)
    missing = [f'--{t}' for t in TASKS if not getattr(args, t)]
    if missing:
        sys.exit(f'error: the balanced score needs {", ".join(missing)} too '
                 f'(or compare models with --model)')
    try:
        result = balanced_score(dict(ek100=args.ek100, ssv2=args.ssv2,
                                     k400=args.k400))
    except MetricsFileError as e:
        sys.exit(f'error: {e}')
    rows = [(name, key, f'{100 * v:.2f}', path)
            for name, path, key, v in result['rows']]
    rows.append(('harmonic mean', '', f'{100 * result["harmonic_mean"]:.2f}',
                 ''))
    print(format_table(('task', 'metric', 'top-1 (%)', 'file'), rows))
    if args.json:
        write_json(args.json, dict(
            rows=[dict(task=n, file=p, key=k, top1=v)
                  for n, p, k, v in result['rows']],
            harmonic_mean=result['harmonic_mean']))
        print(f'written to {args.json}')
    return result


if __name__ == '__main__':
    main()
