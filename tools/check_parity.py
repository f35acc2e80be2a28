#!/usr/bin/env python
"""Compare our models with reference dumps of the authors' code.

    python tools/check_parity.py tests/fixtures/cast_single tests/fixtures/cast_composition
    python tools/check_parity.py ../shared/fixtures/* 

For each DUMP_DIR (meta.json, official_checkpoint.pth, input.pt,
expected.pt; format in tests/fixtures/README.md) the model is built from
meta.json, the official checkpoint converted with the code path of
tools/convert/convert_checkpoint.py, input.pt run in float32, and the max absolute
difference of every output printed. Exit status 1 when any output differs by
more than TOL_SCALE x max(1, max|expected|).

With ``--config CFG`` the model is the config's model with its sizes
(width, depth, heads, frames, classes...) overridden by meta.json, which
checks that the config describes the published architecture.

A training dump (meta.train_mode) is checked by
cast_mmaction.parity.train: loss, trainable set, gradients of one training
step, optimizer groups and lr schedule of the recipe (configs/cast_ssv2.py,
configs/cast_ek100.py for verb/noun dumps, or --config).

``--speedups cpu`` runs every dump with the CPU speed-ups
(models/speedups.py), ``--speedups none`` without any:

    python tools/check_parity.py --speedups none ../shared/fixtures/*
    python tools/check_parity.py --speedups cpu ../shared/fixtures/*
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cast_mmaction  # noqa: E402,F401
from cast_mmaction.parity import (check_dump, find_family,  # noqa: E402
                                  read_meta)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('dumps', nargs='+', metavar='DUMP_DIR')
    ap.add_argument('--config', help='build the model from this config')
    ap.add_argument('--tol-scale', type=float, default=1e-4)
    ap.add_argument(
        '--speedups', metavar='SPEC',
        help="CPU speed-ups for the models: 'cpu' (the preset), 'none' (the "
             "reference; a training dump's recipe may name some) or a "
             "JSON dict, e.g. '{\"checkpoint\": \"fusion\"}' "
             "(models/speedups.py); default: as built")
    args = ap.parse_args(argv)
    model_cfg = None
    if args.config:
        from mmengine.config import Config
        model_cfg = Config.fromfile(args.config).model.to_dict()
    speedups = args.speedups
    if speedups and speedups.lstrip().startswith('{'):
        from cast_mmaction.models.speedups import spec_from_json
        try:
            speedups = spec_from_json(speedups, 'cpu, none')
        except ValueError as e:
            ap.error(f'argument --speedups: {e}')
    failed = []
    for d in args.dumps:
        print(f'== {d}')
        try:
            # a family with its own check (training dumps) prints
            # check / value rows, the forward families output / max|diff|
            train = find_family(read_meta(d)).check is not None
            rows = check_dump(d, args.tol_scale, model_cfg=model_cfg,
                              config=args.config, speedups=speedups)
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f'  ERROR {type(e).__name__}: {e}')
            failed.append(d)
            continue
        w = max([24] + [len(r[0]) + 1 for r in rows])
        print(f'  {"check" if train else "output":<{w}}'
              f'{"value" if train else "max|diff|":>12}{"tolerance":>12}'
              f'  result')
        for name, diff, tol, ok in rows:
            print(f'  {name:<{w}}{diff:>12.3e}{tol:>12.3e}  '
                  f'{"ok" if ok else "FAIL"}')
        if not all(r[3] for r in rows):
            failed.append(d)
    print(f'{len(args.dumps) - len(failed)} of {len(args.dumps)} dumps match'
          + (f'; failing: {failed}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
