#!/usr/bin/env python
"""The built-in demo (``make demo``): synthetic videos -> train -> test.

1. writes the synthetic appearance x motion dataset (real mp4 files) under
   ``demo_data/`` unless an identical one is there already;
2. trains a tiny CAST (``configs/cast_demo.py``) with ``tools/train.py``
   into ``work_dirs/demo``;
3. tests the last checkpoint with ``tools/test.py`` and prints the top-1
   accuracy next to the chance level.

    python tools/demo.py [--data-dir demo_data] [--work-dir work_dirs/demo]

Runs on a CPU (a few minutes on 2 cores); a GPU is used when present.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CONFIG = osp.join('configs', 'cast_demo.py')
# must match the data fields of configs/cast_demo.py
DATA = dict(num_train_per_class=100, num_val_per_class=25, num_frames=16,
            size=64, fps=8, seed=0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-dir', default='demo_data')
    p.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    p.add_argument('--config', default=CONFIG)
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='passed to tools/train.py and tools/test.py')
    return p.parse_args(argv)


def banner(text):
    print(f'\n{"=" * 72}\n{text}\n{"=" * 72}', flush=True)


def run(cmd):
    print('$ ' + ' '.join(cmd), flush=True)
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH']
                                if env.get('PYTHONPATH') else '')
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def data_options(data_dir):
    """--cfg-options that point the demo config at ``data_dir``."""
    if osp.normpath(data_dir) == 'demo_data':
        return []
    train = osp.join(data_dir, 'train_list.txt')
    val = osp.join(data_dir, 'val_list.txt')
    return [
        f'train_dataloader.dataset.ann_file={train}',
        f'train_dataloader.dataset.data_prefix.video={data_dir}',
        f'val_dataloader.dataset.ann_file={val}',
        f'val_dataloader.dataset.data_prefix.video={data_dir}',
        f'test_dataloader.dataset.ann_file={val}',
        f'test_dataloader.dataset.data_prefix.video={data_dir}',
    ]


def main(argv=None):
    args = parse_args(argv)
    os.chdir(ROOT)
    t0 = time.time()
    from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset

    banner(f'1/3  synthetic videos in {args.data_dir}/')
    info = write_synthetic_video_dataset(args.data_dir, **DATA)
    classes = info['classes']
    print(f'{len(classes)} classes: {", ".join(classes)}')
    with open(info['train_ann']) as f:
        n_train = sum(1 for _ in f)
    with open(info['val_ann']) as f:
        n_val = sum(1 for _ in f)
    print(f'{n_train} training and {n_val} test clips '
          f'({time.time() - t0:.0f} s)')

    options = data_options(args.data_dir) + list(args.cfg_options)
    opt = ['--cfg-options'] + options if options else []
    banner(f'2/3  training a tiny CAST: tools/train.py {args.config}')
    t1 = time.time()
    run([sys.executable, 'tools/train.py', args.config, '--work-dir',
         args.work_dir] + opt)
    t_train = time.time() - t1
    with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()

    banner(f'3/3  testing {ckpt}: tools/test.py')
    t2 = time.time()
    run([sys.executable, 'tools/test.py', args.config, ckpt, '--work-dir',
         args.work_dir] + opt)
    t_test = time.time() - t2
    with open(osp.join(args.work_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)['metrics']
    top1 = 100 * metrics['acc/top1']
    chance = 100 / len(classes)
    total = time.time() - t0
    banner('demo result')
    print(f'top-1 accuracy on {n_val} held-out clips: {top1:.1f}%  '
          f'(chance: {chance:.0f}%; colour alone or motion alone: at most '
          f'50%)')
    print(f'time: {total:.0f} s in all (training {t_train:.0f} s, testing '
          f'{t_test:.0f} s); checkpoint: {ckpt}')
    return dict(top1=top1, chance=chance, seconds=total, checkpoint=ckpt)


if __name__ == '__main__':
    main()
