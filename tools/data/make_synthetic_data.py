#!/usr/bin/env python
"""Write the synthetic appearance x motion video dataset (real mp4 files).

    python tools/data/make_synthetic_data.py demo_data --train-per-class 40 \
        --val-per-class 10 --num-frames 16 --size 64

Prints the annotation files and the class count; an identical existing
dataset under OUT is reused unless --overwrite is given. See
cast_mmaction/datasets/synthetic.py for what the classes are.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from cast_mmaction.datasets.synthetic import (  # noqa: E402
    write_synthetic_video_dataset)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out', help='output folder')
    p.add_argument('--train-per-class', type=int, default=40)
    p.add_argument('--val-per-class', type=int, default=10)
    p.add_argument('--num-frames', type=int, default=16)
    p.add_argument('--size', type=int, default=64,
                   help='frame height = width (even)')
    p.add_argument('--fps', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--overwrite', action='store_true')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    info = write_synthetic_video_dataset(
        args.out, num_train_per_class=args.train_per_class,
        num_val_per_class=args.val_per_class, num_frames=args.num_frames,
        size=args.size, fps=args.fps, seed=args.seed,
        overwrite=args.overwrite)
    print(f'synthetic dataset in {info["root"]} ({time.time() - t0:.1f} s)')
    print(f'  classes ({info["num_classes"]}): {", ".join(info["classes"])}')
    print(f'  train list: {info["train_ann"]}')
    print(f'  val list:   {info["val_ann"]}')
    print(f'  label map:  {info["label_map"]}')
    return info


if __name__ == '__main__':
    main()
