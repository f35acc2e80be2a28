#!/usr/bin/env python
"""Per-rank bytes of the sharded model under FSDP2Strategy, for a config
and world sizes, measured on CPUs without GPUs or weights.

    python tools/benchmark/fsdp_memory.py configs/cast_ssv2_fsdp.py --world-sizes 1 2 4 8

For each world size N it starts N processes (gloo, this machine), builds
the config's model on the meta device (shapes only: no memory, no weight
files), shards it exactly as FSDP2Strategy does (``shard_model``: the
declared units, then the root), builds the config's optimizer with its
constructor (layer-decay groups) and initialises its state (one step with
zero gradients and lr 0, as torch.distributed.checkpoint does), then counts
the bytes of every rank's local shards: trainable parameters, frozen
parameters, optimizer state. Prints one JSON line per world size: the
largest rank's figures and their sum over the ranks.

What a rank also holds on a GPU (gathered units during forward / backward,
activations, gradients of the unit being reduced) depends on the batch and
is not counted.
"""
import argparse
import json
import os
import os.path as osp
import socket
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('--world-sizes', type=int, nargs='+', default=[1, 2, 4])
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='key=value overrides (e.g. model.backbone.'
                   'experts.clip.depth=2)')
    args = p.parse_args(argv)
    if not osp.isfile(args.config):
        p.error(f'config {args.config}: no such file')
    if min(args.world_sizes) < 1:
        p.error(f'--world-sizes {" ".join(map(str, args.world_sizes))}: '
                f'each a positive number of processes')
    return args


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world, port, config, options, queue):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world)
    try:
        import cast_mmaction  # noqa: F401
        from mmengine.config import Config, DictAction
        from mmengine.optim import build_optim_wrapper
        from torch.distributed.checkpoint.state_dict import _init_optim_state
        from torch.distributed.device_mesh import init_device_mesh

        from cast_mmaction.engine.fsdp2 import local_shard_bytes, shard_model
        from cast_mmaction.engine.guarded_optim_wrapper import without_amp
        from cast_mmaction.utils import build_model
        cfg = Config.fromfile(config)
        if options:
            parsed = argparse.ArgumentParser()
            parsed.add_argument('--o', nargs='+', action=DictAction)
            cfg.merge_from_dict(parsed.parse_args(['--o', *options]).o)
        # mixup / cutmix of the data preprocessor hold no parameters and
        # draw from a distribution at build time (not on the meta device)
        cfg.model.get('data_preprocessor', {}).pop('blending', None)
        with torch.device('meta'):
            model = build_model(cfg.model)
        mesh = init_device_mesh('cpu', (world, ))
        units = shard_model(model, mesh)
        ow_cfg = without_amp(cfg.optim_wrapper)
        ow_cfg['optimizer'] = dict(ow_cfg['optimizer'], fused=False,
                                   foreach=False)
        ow = build_optim_wrapper(model, ow_cfg)
        _init_optim_state(ow.optimizer)
        trainable = local_shard_bytes(model, ow.optimizer)
        every = local_shard_bytes(model, trainable_only=False)
        queue.put(dict(rank=rank, units=units,
                       trainable_params=trainable['params'],
                       frozen_params=every['params'] - trainable['params'],
                       optimizer_state=trainable['optimizer_state']))
    finally:
        dist.destroy_process_group()


def measure(config, world, options=()):
    import torch.multiprocessing as mp
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, config,
                                                list(options), queue))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f'a rank failed at world size {world} (exit codes '
                           f'{[p.exitcode for p in procs]})')
    ranks = sorted((queue.get() for _ in procs), key=lambda r: r['rank'])
    keys = ('trainable_params', 'frozen_params', 'optimizer_state')
    return dict(world_size=world, units=ranks[0]['units'],
                max_rank={k: max(r[k] for r in ranks) for k in keys},
                sum_ranks={k: sum(r[k] for r in ranks) for k in keys})


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    for world in args.world_sizes:
        try:
            result = measure(args.config, world, args.cfg_options)
        except RuntimeError as e:  # the rank printed its traceback above
            print(f'fsdp_memory: {e}; the failing rank\'s error is printed '
                  f'above', file=sys.stderr)
            return 1
        print(json.dumps(dict(config=args.config, **result)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
