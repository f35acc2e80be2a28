"""Helpers shared by tools/train.py and tools/test.py."""
import os.path as osp


def default_work_dir(config_path):
    """work_dirs/<config file name without extension>."""
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def build_runner(cfg):
    """The config's runner (``runner_type``) or MMEngine's Runner."""
    from mmengine.runner import Runner

    from mmaction.registry import RUNNERS
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def add_runner_args(parser, example, launcher_tool):
    """The arguments both tools take: --no-check, --cfg-options (``example``:
    an override to show in the help), --launcher (``launcher_tool``: the
    shell script that sets it) and the launcher's --local-rank."""
    from mmengine.config import DictAction
    parser.add_argument('--no-check', action='store_true',
                        help='skip the check that every needed path exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value (nested '
                        f'keys with dots, e.g. {example})')
    parser.add_argument('--launcher',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none',
                        help=f'job launcher ({launcher_tool}: pytorch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def apply_runner_args(cfg, args):
    """Launcher and work dir (--work-dir, else the config's, else
    work_dirs/<config name>) from the tool's arguments."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)
