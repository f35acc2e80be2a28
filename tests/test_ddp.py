"""Multi-process DDP (gloo, CPU) and gradient accumulation reproduce one
process with the same total batch: the same loss trajectory and the same
trained parameters.

The runs go through the user-facing launchers: ``tools/dist_train.sh``
(torchrun + MMEngine DDP) for 2 processes x batch 2, ``tools/train.py`` for
1 process x batch 4 and for 1 process x batch 2 x ``accumulative_counts=2``.
Data: the synthetic videos, read in list order (no shuffling, centre
sampling), no mixup, no drop path, so every run sees the same 16 clips in
the same batches of 4.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
from cast_mmaction.models.presets import cast_recognizer_cfg
from conftest import ROOT

PROBE = '''
import json
import os

from mmengine.dist import get_dist_info
from mmengine.hooks import Hook

from mmaction.registry import HOOKS


@HOOKS.register_module(force=True)  # another test's probe may hold the name
class TraceHook(Hook):
    """Per-iteration loss of this rank, and the trained parameters."""

    def before_train(self, runner):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(float(outputs['loss']))

    def after_train(self, runner):
        rank, world = get_dist_info()
        model = getattr(runner.model, 'module', runner.model)
        params = {n: p.detach().double().flatten().tolist()
                  for n, p in model.named_parameters() if p.requires_grad}
        with open(os.path.join(runner.work_dir, f'trace{rank}.json'),
                  'w') as f:
            json.dump(dict(losses=self.losses, params=params,
                           world=world), f)
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    data = write_synthetic_video_dataset(str(root / 'data'),
                                         num_train_per_class=4,
                                         num_val_per_class=1, num_frames=4,
                                         size=32)
    (root / 'ddp_probe.py').write_text(PROBE)
    model = cast_recognizer_cfg(num_classes=4, embed_dim=32, depth=1,
                                num_heads=2, num_frames=4, img_size=32)
    pipeline = [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=4, frame_interval=1, num_clips=1,
             test_mode=True),
        dict(type='DecordDecode'),
        dict(type='Resize', scale=(32, 32), keep_ratio=False),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs'),
    ]
    cfg = root / 'tiny_ddp.py'
    cfg.write_text(textwrap.dedent(f'''
        _base_ = [{os.path.join(ROOT, 'configs', '_base_',
                                'default_runtime.py')!r}]
        custom_imports = dict(imports=['cast_mmaction', 'ddp_probe'],
                              allow_failed_imports=False)
        model = {model!r}
        batch_size = 4
        train_dataloader = dict(
            batch_size=batch_size, num_workers=0, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='VideoDataset', ann_file={data['train_ann']!r},
                         data_prefix=dict(video={data['root']!r}),
                         pipeline={pipeline!r}))
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
        val_cfg = val_dataloader = val_evaluator = None
        optim_wrapper = dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05,
                           fused=True),
            constructor='CASTLayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.75))
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=100, save_best=None))
        custom_hooks = [dict(type='TraceHook')]
        randomness = dict(seed=0, diff_rank_seed=True)
        '''))
    return root, cfg


def _run(setup, name, nproc, *options):
    root, cfg = setup
    work = root / name
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS='1',
               PYTHON=sys.executable, MASTER_PORT=str(_free_port()))
    if nproc > 1:
        cmd = ['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'),
               str(cfg), str(nproc)]
    else:
        cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train.py'),
               str(cfg)]
    cmd += ['--work-dir', str(work), *options]
    r = subprocess.run(cmd, cwd=str(root), env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    traces = []
    for rank in range(nproc):
        with open(work / f'trace{rank}.json') as f:
            traces.append(json.load(f))
    return traces, r.stdout + r.stderr


def _close(a, b, rtol=1e-4, atol=1e-6):
    return abs(a - b) <= atol + rtol * abs(b)


def _assert_same_params(p, q):
    assert p.keys() == q.keys()
    for name in p:
        worst = max(abs(a - b) for a, b in zip(p[name], q[name]))
        assert worst <= 1e-5, f'{name}: max|diff| {worst:.2e}'


@pytest.fixture(scope='module')
def single(setup):
    (trace, ), _ = _run(setup, 'single', 1)
    return trace


def test_two_process_ddp_equals_one_process_with_the_same_total_batch(
        setup, single):
    traces, log = _run(setup, 'ddp2', 2, '--cfg-options',
                       'train_dataloader.batch_size=2')
    assert 'Distributed training is not used' not in log
    r0, r1 = traces
    assert r0['world'] == r1['world'] == 2 and single['world'] == 1
    assert len(single['losses']) == len(r0['losses']) == 4
    # each rank averages its 2 clips; their mean is the mean over the 4
    ddp = [(a + b) / 2 for a, b in zip(r0['losses'], r1['losses'])]
    for t, (a, b) in enumerate(zip(ddp, single['losses'])):
        assert _close(a, b), f'iteration {t}: ddp {a} vs single {b}'
    # the ranks see different clips, so their own losses differ
    assert any(abs(a - b) > 1e-4 for a, b in zip(r0['losses'],
                                                r1['losses']))
    # and training moved the loss
    assert abs(single['losses'][-1] - single['losses'][0]) > 1e-3
    # replicas stay identical; both equal the single-process parameters
    assert r0['params'] == r1['params']
    _assert_same_params(r0['params'], single['params'])


def test_gradient_accumulation_equals_the_larger_batch(setup, single):
    (acc, ), _ = _run(setup, 'accum', 1, '--cfg-options',
                      'train_dataloader.batch_size=2',
                      'optim_wrapper.accumulative_counts=2')
    assert len(acc['losses']) == 8
    for t, b in enumerate(single['losses']):
        a = (acc['losses'][2 * t] + acc['losses'][2 * t + 1]) / 2
        assert _close(a, b), f'update {t}: accumulated {a} vs batch-4 {b}'
    _assert_same_params(acc['params'], single['params'])
