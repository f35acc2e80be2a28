#!/usr/bin/env python
"""Train a recognizer with MMEngine's Runner (CAST recipes or any MMAction2
config; the cast_mmaction plugin is imported first, so configs need no
``custom_imports``).

    python tools/train.py configs/cast_demo.py --work-dir work_dirs/demo
    python tools/train.py configs/cast_ssv2.py --amp --resume
    python tools/train.py configs/cast_ssv2.py --cuda-graph  # one GPU
    tools/dist_train.sh configs/cast_ssv2.py 8      # multi-GPU / multi-node

Every path the run needs (data, annotation files, expert weights) is checked
before the Runner starts; a missing one stops the run with an error that
names its config field. Everything else (bad videos skipped and counted,
exact --resume, non-finite losses, start-up checks) is in the config itself,
so MMAction2's own tools/train.py behaves the same (docs/reliability.md).
"""
import argparse
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
    MissingPathError, NotResumableError, check_paths, check_resumable)
from cast_mmaction.engine.checkpoint_check import (  # noqa: E402
    CheckpointMismatchError)
from cast_mmaction.engine.runner_utils import (  # noqa: E402
    add_runner_args, apply_runner_args, build_runner)
from cast_mmaction.safe_load import (  # noqa: E402  (docs/security.md)
    UntrustedCheckpointError, add_trust_argument, trust_config)
from cast_mmaction.engine.guarded_optim_wrapper import AMP_OF  # noqa: E402
from cast_mmaction.engine.cuda_graph import GRAPH_LOOP_OF  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train an action recognizer.')
    p.add_argument('config', help='config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go '
                   '(default: work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', const='auto', default=None,
                   metavar='CHECKPOINT',
                   help='resume from CHECKPOINT, or without a value from the '
                   'latest checkpoint in the work dir')
    p.add_argument('--amp', action='store_true',
                   help='mixed precision (OptimWrapper -> AmpOptimWrapper, '
                   'GuardedOptimWrapper -> GuardedAmpOptimWrapper); the CAST '
                   'recipes use it already')
    p.add_argument('--cuda-graph', action='store_true',
                   help='replay the forward + backward as a CUDA graph '
                   '(one GPU; EpochBasedTrainLoop / IterBasedTrainLoop -> '
                   'CUDAGraph*TrainLoop, cast_mmaction/engine/cuda_graph.py)')
    p.add_argument('--no-validate', action='store_true',
                   help='do not evaluate on the validation set while '
                   'training')
    p.add_argument('--auto-scale-lr', action='store_true',
                   help='scale the lr linearly with GPUs x batch size '
                   '(config auto_scale_lr.base_batch_size is the reference)')
    p.add_argument('--seed', type=int, default=None, help='random seed')
    p.add_argument('--deterministic', action='store_true',
                   help='deterministic CUDNN settings')
    add_runner_args(p, 'train_dataloader.batch_size=4', 'dist_train.sh')
    add_trust_argument(p, 'the --resume / load_from checkpoint')
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg, args):
    apply_runner_args(cfg, args)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper in AMP_OF:
            cfg.optim_wrapper.type = AMP_OF[wrapper]
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        elif wrapper not in AMP_OF.values():
            print(f'--amp ignored: optim_wrapper.type is {wrapper}')
    if args.cuda_graph:
        if args.launcher != 'none':  # before any process group or loader
            raise ValueError(f'--cuda-graph runs on one GPU without a '
                             f'launcher (got --launcher {args.launcher}): '
                             f'capturing DDP\'s all-reduce is not supported; '
                             f'use python tools/train.py CONFIG --cuda-graph')
        loop = cfg.train_cfg.get('type', 'EpochBasedTrainLoop')
        if loop in GRAPH_LOOP_OF:
            cfg.train_cfg.type = GRAPH_LOOP_OF[loop]
        elif loop not in GRAPH_LOOP_OF.values():
            raise ValueError(f'--cuda-graph: train_cfg.type is {loop}; it '
                             f'replaces only {" / ".join(GRAPH_LOOP_OF)}')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in \
                cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr = dict('
                             'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.seed is not None or args.deterministic:
        randomness = dict(cfg.get('randomness') or {})
        if args.seed is not None:
            randomness['seed'] = args.seed
        if args.deterministic:
            randomness['deterministic'] = True
        cfg.randomness = randomness
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.trust_checkpoint:  # security: load_from / resume file
        cfg.trust_checkpoint = True
    trust_config(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    if not args.no_check:
        try:
            check_paths(cfg, 'train', config_name=args.config,
                        resume=None if args.resume == 'auto' else args.resume)
        except MissingPathError as e:  # a clear message, no traceback
            sys.exit(f'MissingPathError: {e}')
        try:
            check_resumable(cfg, '--resume' if args.resume not in (
                None, 'auto') else 'load_from')
        except NotResumableError as e:
            sys.exit(f'NotResumableError: {e}')
    runner = build_runner(cfg)
    try:
        runner.train()
    # the checkpoint refused (names the type and the flag) or not fitting
    # the model (StartupCheckHook, naming the keys): one message, no traceback
    except (UntrustedCheckpointError, CheckpointMismatchError) as e:
        sys.exit(f'{type(e).__name__}: {e}')
    compat.end_gloo_process_group()  # see its docstring: a torch defect
    return runner


if __name__ == '__main__':
    main()
