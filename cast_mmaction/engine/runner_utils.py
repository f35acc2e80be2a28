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
