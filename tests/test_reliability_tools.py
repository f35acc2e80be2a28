"""The reliability behaviour is in the config, so MMAction2's own tools give
what this package's tools give (issue 12).

One tiny CAST config (cast_demo.py underneath, nothing added by a tool)
trains 2 epochs x 3 iterations on 9 good and 3 corrupt training videos (the
first third of an mp4, random bytes, an empty file), with a NaN loss
injected at iteration 3, a checkpoint after every iteration and a
validation set holding one corrupt video. It is run, each in a fresh
process,

* by ``tools/train.py`` of this package (uninterrupted);
* by MMAction2's installed ``mmaction/.mim/tools/train.py`` (what ``mim
  train`` runs), killed with SIGKILL before iteration 5 and resumed with
  ``--resume``;
* by a plain ``Runner.from_cfg(cfg).train()``;

and then tested by both ``tools/test.py`` on a test list with a corrupt
video (an error naming it; scored as wrong with ``bad_sample='flag'``), and
trained by both with ``optim_wrapper.nonfinite='stop'``. Every run must give
the same skipped samples, losses, weights, validation and test metrics.
"""
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from _reliability_driver import read_records, synthetic_lists
from conftest import ROOT, TINY_CONFIG_HEAD

ITERS = 6  # 2 epochs x 3 iterations
BAD = ('truncated', 'random', 'empty')


def mmaction_tool(name):
    """MMAction2's own tools/<name>.py, as the mmaction2 wheel installs it."""
    import mmaction
    path = osp.join(osp.dirname(mmaction.__file__), '.mim', 'tools',
                    f'{name}.py')
    if not osp.isfile(path):
        pytest.skip(f'MMAction2 tools not installed at {path}')
    return path


TINY = TINY_CONFIG_HEAD.replace('{drop_path}', '0.1') + """
custom_imports = dict(imports=['cast_mmaction', '_reliability_driver'],
                      allow_failed_imports=False)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/train_bad.txt',
                 data_prefix=dict(video=data), pipeline=pipe_train))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/val_bad.txt',
                 data_prefix=dict(video=data), pipeline=pipe_test))
test_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/val_bad.txt',
                 data_prefix=dict(video=data), pipeline=pipe_test))
train_cfg = dict(max_epochs=2, val_begin=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=1, by_epoch=False),
    logger=dict(interval=1),
    bad_samples=dict(max_bad_fraction=0.5))
randomness = dict(seed=3)
custom_hooks = [dict(type='RecordForTestHook', path={record!r}),
                dict(type='NaNForTestHook', at_iter=2)] + {extra}
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([ROOT, osp.join(ROOT, 'tests')]))
    return env


def _run(args, cwd, expect_ok=True):
    proc = subprocess.run([sys.executable] + args, cwd=cwd, env=_env(),
                          capture_output=True, text=True, errors='replace',
                          timeout=600)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out[-5000:]
    return proc.returncode, out


def _write_config(tmp, name, data, record, extra=()):
    path = osp.join(tmp, f'cfg_{name}.py')  # not a module name (mmaction)
    with open(path, 'w') as f:
        f.write(TINY.format(base=osp.join(ROOT, 'configs', 'cast_demo.py'),
                            data=data, record=record, extra=list(extra)))
    return path


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp('tools'))
    data = osp.join(tmp, 'data')
    _, train, val = synthetic_lists(data, num_train_per_class=3)
    os.makedirs(osp.join(data, 'bad'))
    with open(osp.join(data, train[0].split()[0]), 'rb') as f:
        good = f.read()
    with open(osp.join(data, 'bad', 'truncated.mp4'), 'wb') as f:
        f.write(good[:len(good) // 3])  # its index (at the end) is cut off
    with open(osp.join(data, 'bad', 'random.mp4'), 'wb') as f:
        f.write(os.urandom(4096))
    open(osp.join(data, 'bad', 'empty.mp4'), 'wb').close()
    with open(osp.join(data, 'train_bad.txt'), 'w') as f:
        f.write('\n'.join(train[:9] + [f'bad/{b}.mp4 {k}'
                                       for k, b in enumerate(BAD)]) + '\n')
    with open(osp.join(data, 'val_bad.txt'), 'w') as f:
        f.write('\n'.join(val + ['bad/random.mp4 1']) + '\n')

    out = {}

    def paths(name):
        return osp.join(tmp, 'work_' + name), osp.join(tmp, name + '.jsonl')

    # ours, uninterrupted
    work, record = paths('ours')
    cfg = _write_config(tmp, 'ours', data, record)
    _, log = _run([osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir',
                   work], tmp)
    out['ours'] = dict(work=work, record=record, log=log, cfg=cfg)
    # MMAction2's train.py, killed before iteration 5, then --resume
    work, record = paths('mmaction')
    killed = _write_config(tmp, 'mmaction_kill', data, record,
                           [dict(type='KillForTestHook', at_iter=4)])
    code, log1 = _run([mmaction_tool('train'), killed, '--work-dir', work],
                      tmp, expect_ok=False)
    assert code == -9, log1[-5000:]
    cfg = _write_config(tmp, 'mmaction', data, record)
    _, log2 = _run([mmaction_tool('train'), cfg, '--work-dir', work,
                    '--resume'], tmp)
    out['mmaction'] = dict(work=work, record=record, log=log1 + log2,
                           log_killed=log1, log_resumed=log2, cfg=cfg)
    # a user's own Runner.from_cfg(cfg)
    work, record = paths('runner')
    cfg = _write_config(tmp, 'runner', data, record)
    _, log = _run(['-c', (
        'from mmengine.config import Config\n'
        'from mmengine.runner import Runner\n'
        f'cfg = Config.fromfile({cfg!r})\n'
        f'cfg.work_dir = {work!r}\n'
        'Runner.from_cfg(cfg).train()\n')], tmp)
    out['runner'] = dict(work=work, record=record, log=log, cfg=cfg)
    out['data'], out['tmp'] = data, tmp
    return out


def _records(path):
    losses, vals, tests = read_records(path)
    return losses, [v['metrics'] for v in vals], tests


def _final(run):
    path = osp.join(run['work'], f'iter_{ITERS}.pth')
    assert osp.isfile(path), os.listdir(run['work'])
    return torch.load(path, map_location='cpu', weights_only=False)


def test_mmaction_train_was_killed_and_resumed(runs):
    log = runs['mmaction']['log_resumed']
    assert 'resumed epoch: 1, iter: 4' in log
    assert 'resuming epoch 2 after its first 1 of 3 iterations' in log
    assert 'KillForTestHook' in runs['mmaction']['log_killed']


@pytest.mark.parametrize('name', ['ours', 'mmaction', 'runner'])
def test_bad_videos_are_skipped_and_counted_alike(runs, name):
    log = runs[name]['log']
    for bad in BAD:
        path = osp.join(runs['data'], 'bad', bad + '.mp4')
        hits = re.findall('bad sample skipped and replaced by another: ' +
                          re.escape(path) + r' \(', log)
        assert len(hits) == 1, (name, bad, len(hits))
    for epoch in (1, 2):
        assert (f'Epoch(train) [{epoch}] bad samples: 3 skipped and replaced'
                f' this epoch; 3 distinct bad of 12') in log, name
    # the NaN at iteration 3 skipped the update and was counted
    assert 'non-finite loss (nan) at iteration 3 (epoch 1): update skipped ' \
        '(1 skipped so far)' in log
    assert 'nonfinite_skips: 1' in log
    # the corrupt validation video was scored as wrong and counted
    _, vals, _ = _records(runs[name]['record'])
    assert vals[-1]['acc/bad_samples'] == 1.0


@pytest.mark.parametrize('name', ['mmaction', 'runner'])
def test_same_losses_weights_and_metrics_as_our_tools(runs, name):
    ref_losses, ref_vals, _ = _records(runs['ours']['record'])
    losses, vals, _ = _records(runs[name]['record'])
    assert sorted(ref_losses) == sorted(losses) == list(range(ITERS))
    assert math.isnan(ref_losses[2][0])  # the injected NaN, update skipped
    for it, values in losses.items():
        ref_loss = ref_losses[it][0]
        assert all(v == ref_loss or math.isnan(v) and math.isnan(ref_loss)
                   for v in values), (it, values, ref_loss)
    assert vals[-1] == ref_vals[-1]
    ref, got = _final(runs['ours']), _final(runs[name])
    differ = [k for k in ref['state_dict']
              if not torch.equal(ref['state_dict'][k], got['state_dict'][k])]
    assert not differ, differ[:3]
    assert got['meta']['iter'] == ITERS and 'rng_state' in got
    assert got['message_hub']['runtime_info']['bad_samples'] == \
        ref['message_hub']['runtime_info']['bad_samples']


def test_test_tools_raise_and_flag_alike(runs):
    ckpt = osp.join(runs['mmaction']['work'], f'iter_{ITERS}.pth')
    cfg, tmp = runs['mmaction']['cfg'], runs['tmp']
    bad = osp.join(runs['data'], 'bad', 'random.mp4')
    # the recipe's test policy: an error naming the file
    for tool in (mmaction_tool('test'), osp.join(ROOT, 'tools', 'test.py')):
        code, log = _run([tool, cfg, ckpt, '--work-dir',
                          osp.join(tmp, 'test_raise')], tmp, expect_ok=False)
        assert code != 0 and 'BadSampleError: ' + bad in log, log[-3000:]
    # scored as wrong: MMAction2's tool with the config field, ours with
    # --bad-samples flag
    record = runs['mmaction']['record']
    before = len(_records(record)[2])
    _run([mmaction_tool('test'), cfg, ckpt, '--work-dir',
          osp.join(tmp, 'test_flag_mm'), '--cfg-options',
          'test_dataloader.dataset.bad_sample=flag'], tmp)
    theirs = _records(record)[2][before:]
    work = osp.join(tmp, 'test_flag_ours')
    _run([osp.join(ROOT, 'tools', 'test.py'), cfg, ckpt, '--work-dir', work,
          '--bad-samples', 'flag'], tmp)
    with open(osp.join(work, 'test_metrics.json')) as f:
        ours = json.load(f)['metrics']
    assert len(theirs) == 1 and theirs[0]['acc/bad_samples'] == 1.0
    assert {k: ours[k] for k in theirs[0]} == theirs[0]
    # 4 good videos + 1 scored wrong: top-1 is a multiple of 1/5, < 1
    assert round(ours['acc/top1'] * 5, 6) == int(round(ours['acc/top1'] * 5))
    assert ours['acc/top1'] <= 0.8


def test_nonfinite_stop_stops_both_train_tools(runs):
    tmp = runs['tmp']
    cfg = _write_config(tmp, 'stop', runs['data'], osp.join(tmp, 'stop.jsonl'))
    for key, tool in (('mm', mmaction_tool('train')),
                      ('ours', osp.join(ROOT, 'tools', 'train.py'))):
        work = osp.join(tmp, 'stop_' + key)
        code, log = _run([tool, cfg, '--work-dir', work, '--cfg-options',
                          'optim_wrapper.nonfinite=stop'], tmp,
                         expect_ok=False)
        assert code != 0
        assert ('FloatingPointError: non-finite loss (nan) at iteration 3 '
                '(epoch 1): training stopped before the update') in log, \
            log[-3000:]
        with open(osp.join(work, 'last_checkpoint')) as f:
            assert osp.basename(f.read().strip()) == 'iter_2.pth'
