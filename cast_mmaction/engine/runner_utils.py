"""Helpers shared by tools/train.py and tools/test.py."""
import os.path as osp


def default_work_dir(config_path):
    """work_dirs/<config file name without extension>."""
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def use_gloo_without_cuda(cfg):
    """nccl needs GPUs: on a CPU-only host a distributed run (e.g.
    ``tools/dist_train.sh`` for a quick check) uses gloo instead."""
    import torch
    env = cfg.get('env_cfg') or {}
    dist = env.get('dist_cfg') or {}
    if dist.get('backend') == 'nccl' and not torch.cuda.is_available():
        cfg.env_cfg.dist_cfg.backend = 'gloo'
    return cfg


def build_runner(cfg):
    """The config's runner (``runner_type``) or MMEngine's Runner."""
    from mmengine.runner import Runner

    from mmaction.registry import RUNNERS
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
