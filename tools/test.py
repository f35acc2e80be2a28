#!/usr/bin/env python
"""Test a checkpoint with MMEngine's Runner: multi-view testing as the
config's test pipeline says (e.g. SSv2 2 clips x 3 crops, K400 5 x 3),
softmax scores averaged over views (``average_clips='prob'``).

    python tools/test.py configs/cast_demo.py work_dirs/demo/epoch_12.pth
    python tools/test.py configs/cast_ssv2.py cast_ssv2.pth --dump preds.pkl
    tools/dist_test.sh configs/cast_ssv2.py cast_ssv2.pth 8

``CHECKPOINT`` is a checkpoint written by tools/train.py or by
tools/convert/convert_checkpoint.py (official CAST weights). The metrics are
printed and written to ``<work-dir>/test_metrics.json``. What an
unreadable test video does (``test_dataloader.dataset.bad_sample``) and the
check that the checkpoint fits the model are in the config, so MMAction2's
own tools/test.py behaves the same (docs/reliability.md).
"""
import argparse
import json
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

import cast_mmaction  # noqa: E402,F401  (compat fixes, registrations)
from cast_mmaction import compat  # noqa: E402
from mmengine.config import Config  # noqa: E402

from cast_mmaction.engine.checks import (  # noqa: E402
    MissingPathError, check_paths)
from cast_mmaction.engine.checkpoint_check import (  # noqa: E402
    CheckpointMismatchError)
from cast_mmaction.engine.runner_utils import (  # noqa: E402
    add_runner_args, apply_runner_args, build_runner)
from cast_mmaction.safe_load import (  # noqa: E402  (docs/security.md)
    UntrustedCheckpointError, add_trust_argument, trust_config)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test an action recognizer.')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='where logs and test_metrics.json go '
                   '(default: work_dirs/<config name>)')
    p.add_argument('--dump', metavar='FILE.pkl',
                   help='also save every prediction (scores, labels) to a '
                   'pickle file')
    p.add_argument('--bad-samples', choices=['raise', 'flag'], default=None,
                   help='a video that cannot be loaded stops the test naming '
                   'it (raise, the recipes\' default) or is scored as a wrong '
                   'prediction and counted as <metric>/bad_samples (flag); '
                   'sets test_dataloader.dataset.bad_sample')
    add_runner_args(p, 'test_dataloader.batch_size=2', 'dist_test.sh')
    add_trust_argument(p, 'CHECKPOINT')
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg, args):
    apply_runner_args(cfg, args)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    # before --dump makes test_evaluator a list, so that
    # --cfg-options test_evaluator.scores_file=... still reaches the metric
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.dump is not None:
        if not args.dump.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--dump {args.dump}: use a .pkl file name')
        dump = dict(type='DumpResults', out_file_path=args.dump)
        evaluators = cfg.test_evaluator
        if isinstance(evaluators, (list, tuple)):
            cfg.test_evaluator = list(evaluators) + [dump]
        else:
            cfg.test_evaluator = [evaluators, dump]
    if args.bad_samples is not None:
        dataset = cfg.test_dataloader.get('dataset') or {}
        if dataset.get('type') != 'RobustDataset':
            raise ValueError(
                f'--bad-samples needs test_dataloader.dataset of type '
                f"'RobustDataset' (this config's is {dataset.get('type')!r}; "
                f'see docs/reliability.md)')
        dataset.bad_sample = args.bad_samples
    if args.trust_checkpoint:  # security: CHECKPOINT may need any object
        cfg.trust_checkpoint = True
    trust_config(cfg)
    return cfg


def summarise(metrics):
    """Human-readable lines, top-1 first: ``<prefix>/top1`` (AccMetric,
    EPIC-SOUNDS), or EPIC-KITCHENS-100's headline ``action_top1`` (never
    ``verb_top1``, the first of its keys)."""
    lines = []
    for name, suffix in (('action top-1 accuracy', 'action_top1'),
                         ('top-1 accuracy', 'top1')):
        top1 = next((v for k, v in metrics.items()
                     if k.rsplit('/', 1)[-1] == suffix), None)
        if top1 is not None:
            lines.append(f'{name}: {100 * float(top1):.2f}%')
            break
    for k, v in metrics.items():
        if isinstance(v, (int, float)):
            lines.append(f'  {k}: {v:.4f}')
    return lines


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    if not args.no_check:
        try:
            check_paths(cfg, 'test', checkpoint=args.checkpoint,
                        config_name=args.config)
        except MissingPathError as e:  # a clear message, no traceback
            sys.exit(f'MissingPathError: {e}')
    runner = build_runner(cfg)
    try:
        metrics = runner.test()
    # the checkpoint refused (names the type and the flag) or not fitting
    # the model (StartupCheckHook, naming the keys): one message, no traceback
    except (UntrustedCheckpointError, CheckpointMismatchError) as e:
        sys.exit(f'{type(e).__name__}: {e}')
    metrics = {k: float(v) if hasattr(v, '__float__') else v
               for k, v in (metrics or {}).items()}
    from mmengine.dist import is_main_process
    if is_main_process():
        os.makedirs(cfg.work_dir, exist_ok=True)
        out = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(out, 'w') as f:
            json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                           metrics=metrics), f, indent=1)
        print('\n'.join(summarise(metrics)))
        print(f'metrics written to {out}')
    compat.end_gloo_process_group()  # see its docstring: a torch defect
    return metrics


if __name__ == '__main__':
    main()
