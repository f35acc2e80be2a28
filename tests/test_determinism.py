"""Same config, same seed, same machine: the same weights bit for bit.

Two runs of ``tools/train.py configs/cast_demo.py`` (shrunk: 8 synthetic
clips, 2 epochs, data-loader workers, the CPU speed-ups on) give identical
checkpoints, the second while another process keeps a core busy: nothing
(oneDNN or not, thread counts, worker seeds) depends on the machine's load.
Each checkpoint records the speed-up decision (SpeedupsHook)."""
import glob
import os
import os.path as osp
import subprocess
import sys

import torch

from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
from cast_mmaction.safe_load import load_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _train(data, work_dir):
    options = [
        f'train_dataloader.dataset.ann_file={data}/train_list.txt',
        f'train_dataloader.dataset.data_prefix.video={data}',
        f'val_dataloader.dataset.ann_file={data}/val_list.txt',
        f'val_dataloader.dataset.data_prefix.video={data}',
        'train_dataloader.num_workers=2', 'train_dataloader.batch_size=4',
        'train_cfg.max_epochs=2', 'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'model.backbone.speedups=cpu',
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='2')
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/cast_demo.py',
         '--work-dir', work_dir, '--cfg-options', *options],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    ckpt = sorted(glob.glob(osp.join(work_dir, 'epoch_*.pth')))
    assert ckpt, out[-2000:]
    return load_checkpoint(ckpt[-1]), out


def test_two_runs_give_bit_identical_weights_even_under_load(tmp_path):
    data = str(tmp_path / 'data')
    write_synthetic_video_dataset(data, num_train_per_class=2,
                                  num_val_per_class=1, num_frames=8, size=64)
    a, log_a = _train(data, str(tmp_path / 'a'))
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        b, _ = _train(data, str(tmp_path / 'b'))
    finally:
        busy.kill()
        busy.wait(timeout=30)
    sa, sb = a['state_dict'], b['state_dict']
    assert sa.keys() == sb.keys() and len(sa) > 10
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different
    # the weights moved (the runs trained), and every tensor is finite
    assert all(torch.isfinite(v).all() for v in sa.values()
               if v.is_floating_point())
    # the decision is logged once and stored in the checkpoint
    assert log_a.count('speedups: ') == 1, log_a[-3000:]
    meta = a['meta']['speedups']
    assert meta == b['meta']['speedups']
    assert meta['requested'] == 'cpu' and meta['device'] == 'cpu'
    assert set(meta['runs']) == {'onednn_linear', 'frozen_mlp', 'checkpoint',
                                 'malloc_mmap_threshold'}
    assert meta['runs']['frozen_mlp']['on'] is True
