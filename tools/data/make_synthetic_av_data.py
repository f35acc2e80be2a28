#!/usr/bin/env python
"""Write the synthetic audio-visual dataset (mp4 with an AAC sound track).

    python tools/data/make_synthetic_av_data.py demo_av_data --num-train 64 \
        --num-val 16

4 classes = {red, blue} square x {low, high} tone: sight alone or sound
alone gives at most 50 % (chance 25 %). See
cast_mmaction/datasets/synthetic_av.py. Used by configs/cava_demo.py and
configs/ca2st_demo.py.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from cast_mmaction.datasets.synthetic_av import (  # noqa: E402
    write_synthetic_av_dataset)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out', help='output folder')
    p.add_argument('--num-train', type=int, default=64)
    p.add_argument('--num-val', type=int, default=16)
    p.add_argument('--num-frames', type=int, default=16)
    p.add_argument('--fps', type=int, default=8)
    p.add_argument('--size', type=int, default=32, help='frame side (even)')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.time()
    info = write_synthetic_av_dataset(
        args.out, num_train=args.num_train, num_val=args.num_val,
        num_frames=args.num_frames, fps=args.fps, size=args.size,
        seed=args.seed)
    print(f'synthetic audio-visual dataset in {args.out} '
          f'({time.time() - t0:.1f} s)')
    print(f'  classes: {", ".join(info["classes"])}')
    print(f'  train list: {info["train_ann"]}')
    print(f'  val list:   {info["val_ann"]}')
    return info


if __name__ == '__main__':
    main()
