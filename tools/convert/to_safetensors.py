#!/usr/bin/env python
"""Rewrite a checkpoint as ``.safetensors``: tensors and JSON metadata only,
so that opening it can never run code (docs/security.md).

    python tools/convert/to_safetensors.py work_dirs/demo/epoch_20.pth demo.safetensors
    python tools/convert/to_safetensors.py a.pth a.safetensors --trust-checkpoint

SRC is any checkpoint this package reads: one of our runs (MMEngine
``{'state_dict', 'meta', ...}``, trainable-only ones included), an expert or
official file (``{'module': ...}``, ``{'model': ...}``, plain state dict). The
state dict and the entries JSON can hold (``meta``, ``frozen_experts``) are
kept; optimizer, scheduler and message-hub states are left out (to resume a
run, keep the ``.pth``). The result is accepted wherever the ``.pth`` was:
``tools/test.py``, ``infer.py``, ``load_from``, ``pretrained``,
``tools/convert/convert_checkpoint.py``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

import cast_mmaction  # noqa: E402,F401
from cast_mmaction import safe_load  # noqa: E402
from cast_mmaction.checkpoints.common import (check_output,  # noqa: E402
                                             unwrap)
from cast_mmaction.progress import Stages, add_quiet_argument  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('src', help='checkpoint file (.pth, .pt, .bin)')
    ap.add_argument('dst', help='output file (.safetensors)')
    safe_load.add_trust_argument(ap, 'src')
    add_quiet_argument(ap)
    args = ap.parse_args(argv)
    if not args.dst.endswith('.safetensors'):
        ap.error(f'dst {args.dst}: use a .safetensors file name')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:  # before SRC is read
        check_output(args.dst)
    except ValueError as e:
        sys.exit(f'ValueError: {e}')
    if args.trust_checkpoint:
        safe_load.trust(args.src)
    with Stages(['read', 'write'], f'to_safetensors '
                f'{os.path.basename(args.src)}', args.quiet) as stage:
        stage('read')
        try:
            obj = safe_load.load_checkpoint(args.src)
            if not (isinstance(obj, dict)
                    and isinstance(obj.get('state_dict'), dict)
                    and all(torch.is_tensor(v)
                            for v in obj['state_dict'].values())):
                obj = unwrap(obj, args.src)  # an official / expert layout
        # missing, refused, not a checkpoint, no state dict of tensors: one
        # line naming it
        except (safe_load.UntrustedCheckpointError, FileNotFoundError,
                ValueError) as e:
            sys.exit(f'{type(e).__name__}: {e}')
        stage('write')
        os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
        try:
            dropped = safe_load.save_safetensors(obj, args.dst)
        except ValueError as e:  # tensors of the state dict that are not
            sys.exit(f'ValueError: {e}')
    state = obj.get('state_dict', obj)
    print(f'wrote {args.dst}: {len(state)} tensors'
          + (f'; left out (not tensors or JSON): {dropped}' if dropped
             else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
