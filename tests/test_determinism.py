"""Same config, same seed, same machine: the same weights bit for bit.

Two runs of ``tools/train.py configs/cast_demo.py`` (shrunk: 8 synthetic
clips, 2 epochs, 2 data-loader workers; the demo's reference model) give
identical checkpoints, the second while another process keeps a core busy:
nothing (the matmul path, thread counts, worker seeds) depends on the
machine's load. Each checkpoint records the speed-up decision
(SpeedupsHook). The CPU speed-ups get the same check in-process."""
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
        'default_hooks.logger.interval=1',
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
    assert meta['requested'] is None and meta['device'] == 'cpu'
    assert set(meta['runs']) == {'onednn_linear', 'onednn_attention',
                                 'cpu_attention', 'cpu_mlp', 'frozen_mlp',
                                 'checkpoint',
                                 'malloc_mmap_threshold', 'malloc_trim',
                                 'cpu_block_cache'}
    assert not any(r['on'] for r in meta['runs'].values())


def _train_in_process(spec):
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model
    torch.manual_seed(0)
    cfg = cast_recognizer_cfg(num_classes=4, embed_dim=64, depth=2,
                              num_heads=4, num_frames=4, img_size=32)
    cfg['backbone'].update(speedups=spec, drop_path_rate=0.1)
    model = build_model(cfg).train()
    assert 'frozen_mlp' in model.backbone.speedups.enabled
    start = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(2, 3, 4, 32, 32, generator=g)
        loss = model.cls_head(model.backbone(x)).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return start, {k: v.clone() for k, v in model.state_dict().items()}


def test_the_cpu_speedups_are_deterministic_under_load():
    """The 'cpu' preset (oneDNN by the CPU's facts, the frozen-MLP node)
    with the fusion regions: two trainings, the second under CPU load,
    give the same weights bit for bit."""
    spec = dict(preset='cpu', checkpoint='fusion')
    start, a = _train_in_process(spec)
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        _, b = _train_in_process(spec)
    finally:
        busy.kill()
        busy.wait(timeout=30)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
