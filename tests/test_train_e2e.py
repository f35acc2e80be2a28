"""End to end through the command-line tools: tools/train.py trains a tiny
CAST on synthetic mp4 videos with MMEngine's Runner and writes a checkpoint;
tools/test.py loads it and reports top-1."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from _metric_check import top1_of_dump
from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
from cast_mmaction.safe_load import load_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

TINY = """
_base_ = [{base!r}]
data = {data!r}
model = dict(
    backbone=dict(
        num_frames=4, img_size=32,
        experts=dict(
            clip=dict(embed_dim=32, depth=1, num_heads=2, frozen=True),
            vmae=dict(embed_dim=32, depth=1, num_heads=2, frozen=True))),
    cls_head=dict(in_channels=32, init_std=0.02))
pipe_train = [
    dict(type='DecordInit'),
    dict(type='SegmentSample', num_segments=4),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]
pipe_test = [
    dict(type='DecordInit'),
    dict(type='SegmentSample', num_segments=4, num_clips=2, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 32)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]
loader = dict(batch_size=4, num_workers=0, persistent_workers=False)
train_dataloader = dict(
    loader, dataset=dict(ann_file=data + '/train_list.txt',
                         data_prefix=dict(video=data), pipeline=pipe_train))
val_dataloader = dict(
    loader, dataset=dict(ann_file=data + '/val_list.txt',
                         data_prefix=dict(video=data), pipeline=pipe_test))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_begin=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1),
                     logger=dict(interval=1))
"""


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH']
                                if env.get('PYTHONPATH') else '')
    env.setdefault('OMP_NUM_THREADS', '2')
    return env


def _run(args, cwd):
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('e2e')
    data = str(tmp / 'data')
    write_synthetic_video_dataset(data, num_train_per_class=2,
                                  num_val_per_class=1, num_frames=8,
                                  size=32)
    cfg = tmp / 'tiny_demo.py'
    cfg.write_text(TINY.format(
        base=osp.join(ROOT, 'configs', 'cast_demo.py'), data=data))
    work = str(tmp / 'work')
    log = _run(['tools/train.py', str(cfg), '--work-dir', work], ROOT)
    return dict(tmp=tmp, cfg=str(cfg), work=work, log=log)


def test_training_writes_checkpoints(trained):
    work = trained['work']
    assert 'Epoch(train) [2]' in trained['log']
    assert 'parameters: trainable' in trained['log']
    with open(osp.join(work, 'last_checkpoint')) as f:
        last = f.read().strip()
    assert osp.basename(last) == 'epoch_2.pth' and osp.isfile(last)
    assert not osp.exists(osp.join(work, 'epoch_1.pth'))  # max_keep_ckpts
    ckpt = load_checkpoint(last)
    assert ckpt['meta']['epoch'] == 2
    sd = ckpt['state_dict']
    assert any(k.startswith('backbone.links.clip_vmae.0.') for k in sd)
    # zero-initialised parts have trained away from zero
    assert sd['cls_head.adapters.0.fc2.weight'].abs().sum() > 0
    assert sd['backbone.mlp_adapters.vmae.0.fc2.weight'].abs().sum() > 0
    # frozen experts: optimizer state only for the trainable parameters
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model
    model = build_model(cast_recognizer_cfg(
        num_classes=4, embed_dim=32, depth=1, num_heads=2, num_frames=4,
        img_size=32))
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    total = sum(1 for _ in model.parameters())
    assert trainable < total
    state = ckpt['optimizer']['state']
    assert len(state) == trainable


def test_test_tool_loads_checkpoint_and_reports_top1(trained):
    work = trained['work']
    ckpt = osp.join(work, 'epoch_2.pth')
    dump = osp.join(str(trained['tmp']), 'preds.pkl')
    out = _run(['tools/test.py', trained['cfg'], ckpt, '--work-dir', work,
                '--dump', dump], ROOT)
    assert 'Load checkpoint from' in out and ckpt in out
    assert 'top-1 accuracy:' in out
    with open(osp.join(work, 'test_metrics.json')) as f:
        metrics = json.load(f)['metrics']
    # the reported top-1 is the accuracy of the dumped predictions
    top1, count = top1_of_dump(dump)
    assert count == 4  # one entry per test video (2 clips x 3 crops)
    assert metrics['acc/top1'] == pytest.approx(top1)
    import pickle
    with open(dump, 'rb') as f:
        score = pickle.load(f)[0]['pred_score']
    assert score.shape[-1] == 4
    # softmax averaged over the views: a probability vector
    assert float(score.sum()) == pytest.approx(1.0, abs=1e-4)
    # every test video was loaded (the recipe's BadSampleAwareMetric counts
    # none)
    assert metrics['acc/bad_samples'] == 0


def test_resume_continues_from_the_checkpoint(trained):
    log = _run(['tools/train.py', trained['cfg'], '--work-dir',
                trained['work'], '--resume', '--cfg-options',
                'train_cfg.max_epochs=3'], ROOT)
    assert 'resumed epoch: 2' in log
    assert 'Epoch(train) [3]' in log and 'Epoch(train) [1]' not in log


def test_dist_scripts_pass_multi_node_arguments(tmp_path):
    """The launch scripts hand NNODES / NODE_RANK / MASTER_ADDR /
    MASTER_PORT / GPUS to torchrun (checked with an echo stand-in)."""
    env = dict(_env(), PYTHON='echo', NNODES='2', NODE_RANK='1',
               MASTER_ADDR='10.0.0.1', MASTER_PORT='29999')
    out = subprocess.run(
        ['bash', 'tools/dist_train.sh', 'configs/cast_ssv2.py', '8', '--amp'],
        cwd=ROOT, env=env, capture_output=True, text=True,
        check=True).stdout
    for arg in ('--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.1',
                '--master_port=29999', '--nproc_per_node=8',
                'tools/train.py configs/cast_ssv2.py --launcher pytorch '
                '--amp'):
        assert arg in out, (arg, out)
    env['GPUS'] = '4'
    out = subprocess.run(
        ['bash', 'tools/dist_test.sh', 'configs/cast_ssv2.py', 'c.pth'],
        cwd=ROOT, env=env, capture_output=True, text=True,
        check=True).stdout
    assert '--nproc_per_node=4' in out
    assert 'tools/test.py configs/cast_ssv2.py c.pth --launcher pytorch' in out
