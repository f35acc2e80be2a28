"""The plugin route: a STOCK MMAction2 config from the installed wheel
(``_base_ = 'mmaction::...'``) with ``custom_imports = dict(imports=
['cast_mmaction'])`` and the CAST backbone / head swapped in builds a Runner,
trains and tests, in a fresh interpreter that never imports cast_mmaction
itself."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from _metric_check import top1_of_dump
from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STOCK = 'mmaction::recognition/videomae/' \
    'vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400.py'

CONFIG = """
_base_ = [{stock!r}]
custom_imports = dict(imports=['cast_mmaction'], allow_failed_imports=False)
data = {data!r}

# swap the stock ViT / TimeSformer head for a tiny CAST; the stock data
# preprocessor (ImageNet mean / std, NCTHW) stays
model = dict(
    backbone=dict(
        _delete_=True,
        type='CASTBackbone',
        num_frames=4,
        img_size=32,
        experts=dict(
            clip=dict(type='CLIPViTExpert', embed_dim=32, depth=1, num_heads=2,
                      patch_size=16),
            vmae=dict(type='VideoMAEExpert', embed_dim=32, depth=1,
                      num_heads=2, patch_size=16, tubelet_size=2)),
        links=[dict(experts=('clip', 'vmae'),
                    windows=dict(clip='time', vmae='space'))]),
    cls_head=dict(_delete_=True, type='CASTHead', num_classes=4,
                  in_channels=32, num_streams=2, average_clips='prob'))

# the stock test pipeline (16x4x5 at 224) shrunk to the tiny model
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=4, frame_interval=1, num_clips=2,
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 32)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/val_list.txt',
                 data_prefix=dict(video=data), pipeline=test_pipeline))
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='VideoDataset', ann_file=data + '/train_list.txt',
        data_prefix=dict(video=data),
        pipeline=[
            dict(type='DecordInit'),
            dict(type='SampleFrames', clip_len=4, frame_interval=2,
                 num_clips=1),
            dict(type='DecordDecode'),
            dict(type='Resize', scale=(32, 32), keep_ratio=False),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs')]))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
"""

SCRIPT = r"""
import json, sys
from mmengine.config import Config
from mmengine.runner import Runner
assert 'cast_mmaction' not in sys.modules
cfg = Config.fromfile(sys.argv[1])
assert 'cast_mmaction' in sys.modules  # imported by custom_imports
cfg.work_dir = sys.argv[2]
cfg.test_evaluator = [cfg.test_evaluator, dict(
    type='DumpResults', out_file_path=sys.argv[2] + '/preds.pkl')]
runner = Runner.from_cfg(cfg)
print('BACKBONE', type(runner.model.backbone).__name__,
      type(runner.model.cls_head).__name__)
runner.train()
metrics = runner.test()
print('METRICS', json.dumps({k: float(v) for k, v in metrics.items()}))
"""


def test_stock_config_with_custom_imports_trains_and_tests(tmp_path):
    data = str(tmp_path / 'data')
    write_synthetic_video_dataset(data, num_train_per_class=2,
                                  num_val_per_class=1, num_frames=8,
                                  size=32)
    cfg = tmp_path / 'stock_cast.py'
    cfg.write_text(CONFIG.format(stock=STOCK, data=data))
    script = tmp_path / 'run.py'
    script.write_text(SCRIPT)
    # a clean environment: cast_mmaction comes from the checkout, as an
    # installed plugin would, but nothing imports it except custom_imports
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='2')
    proc = subprocess.run(
        [sys.executable, str(script), str(cfg), str(tmp_path / 'work')],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'BACKBONE CASTBackbone CASTHead' in out
    assert 'Epoch(train) [1][2/2]' in out
    line = [ln for ln in out.splitlines() if ln.startswith('METRICS')][-1]
    metrics = json.loads(line[len('METRICS'):])
    # the reported top-1 is the accuracy of the dumped predictions
    top1, count = top1_of_dump(tmp_path / 'work' / 'preds.pkl')
    assert count > 0 and metrics['acc/top1'] == pytest.approx(top1)
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
