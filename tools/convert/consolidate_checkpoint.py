#!/usr/bin/env python
"""Consolidate a sharded checkpoint folder (FSDP2Strategy, written with
torch.distributed.checkpoint on any number of ranks) into one ordinary
MMEngine checkpoint ``{'state_dict', 'meta'}`` that tools/test.py,
tools/infer.py and MMAction2's inferencer load.

    python tools/convert/consolidate_checkpoint.py work_dirs/demo_fsdp/epoch_20.pth epoch_20_full.pth
    python tools/convert/consolidate_checkpoint.py SRC_FOLDER OUT.pth --trainable-only

Runs in one process, without GPUs or a process group. The folder is
checked first: a missing marker, metadata file or rank shard stops the tool
with its name. ``--trainable-only`` leaves out the frozen weights of every
expert whose ``pretrained`` file exists (recorded with a fingerprint, as
TrainableCheckpointHook does; load it with that hook in the config). The
optimizer state is not copied (the folder itself is what --resume reads).
"""
import argparse
import io
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Sharded checkpoint folder -> one checkpoint file.')
    p.add_argument('src', help='sharded checkpoint folder (e.g. '
                   'work_dirs/RUN/epoch_N.pth/)')
    p.add_argument('out', help='checkpoint file to write (.pth)')
    p.add_argument('--trainable-only', action='store_true',
                   help='leave out frozen expert weights that their '
                   'pretrained files hold')
    p.add_argument('--config', help='config naming the experts\' pretrained '
                   'files (default: the one saved in the checkpoint)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    import cast_mmaction  # noqa: F401 (compat, registries)
    from cast_mmaction.engine.checkpoint_files import atomic_write
    from cast_mmaction.engine.sharded_checkpoint import (
        IncompleteCheckpointError, consolidate)
    if not osp.isdir(args.src):
        kind = 'a file' if osp.isfile(args.src) else 'not found'
        print(f'consolidate_checkpoint: {args.src} is {kind}; give the '
              f'sharded checkpoint folder an FSDP2 run wrote (e.g. '
              f'work_dirs/RUN/epoch_N.pth/)', file=sys.stderr)
        return 2
    cfg_text = None
    if args.config:
        from mmengine.config import Config
        cfg_text = Config.fromfile(args.config).pretty_text
    try:
        ckpt = consolidate(args.src, trainable_only=args.trainable_only,
                           cfg_text=cfg_text)
    except IncompleteCheckpointError as e:
        print(f'consolidate_checkpoint: {e}', file=sys.stderr)
        return 1
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write(args.out, buf.getvalue())
    sd = ckpt['state_dict']
    n = sum(t.numel() for t in sd.values())
    left = sum(r['num_tensors'] for r in ckpt.get('frozen_experts', {})
               .values())
    print(f'wrote {args.out}: {len(sd)} tensors, {n} values'
          + (f'; {left} frozen expert tensors left out (restored from '
             f'their pretrained files on load)' if left else '')
          + f' (from {ckpt["meta"]["consolidated_from"]["world_size"]} '
          f'rank(s))')
    return 0


if __name__ == '__main__':
    sys.exit(main())
