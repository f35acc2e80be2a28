"""The launchers and what happens when a rank dies, with real processes
(gloo on CPU, one host):

* ``tools/slurm_train.sh`` through a fake ``srun`` (2 local tasks with the
  SLURM_* environment) and a fake ``scontrol``: the srun command line, and a
  real 2-process run that initialises through MMEngine's slurm path. Its
  weights are the reference (1 node x 2 processes).
* ``tools/dist_train.sh`` / ``tools/dist_test.sh`` with ``NNODES=2``: two
  torchrun agents (one process each) give the reference's losses and
  weights bit for bit, and one process's test predictions; a video that
  only rank 1 reads is corrupt, and both ranks still run the same
  iterations (``RobustDataset`` replaces it).
* A lost rank: rank 1 SIGKILLs itself mid-epoch in a 2-node run (static
  rendezvous); the other node names it ("rank 1 (node 1) lost") and both
  agents exit within the configured watchdog time; ``--resume`` on 2 nodes
  (c10d rendezvous) then finishes the run with the reference weights
  (``torch.equal``).
* ``MAX_RESTARTS=1``: the same kill, torchrun restarts the workers, they
  resume from the last checkpoint by themselves (``ElasticResumeHook``) and
  end with the reference weights.

The config is ``configs/cast_demo.py`` shrunk (one 32-wide layer, 4 frames
of 32 px), 16 clips, 2 ranks x batch 2, 2 epochs (8 iterations), a
checkpoint per epoch. Every subprocess runs under a timeout on free ports.
"""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import torch

from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
from conftest import ROOT

TIMEOUT = 240  # seconds for any one launch (a hang fails the test)
WATCHDOG = dict(interval=0.5, timeout=4)
KILL_ITER = 6  # 1-based: iteration 2 of epoch 2, after the epoch-1 checkpoint

PROBE = r'''
import json
import os
import signal
import time

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook

from mmaction.registry import HOOKS


@HOOKS.register_module(force=True)  # another test's probe may hold the name
class TraceHook(Hook):
    """Per-iteration loss and replaced samples of this rank, as they come
    (steps_<CAST_TEST_TAG>_<attempt>_<rank>.jsonl), and at the end its
    trained parameters (params<rank>.pt) and iteration count."""

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        bad = 0
        for sample in data_batch['data_samples']:
            bad += len(sample.metainfo.get('bad_samples') or ())
        rank, world = get_dist_info()
        name = 'steps_{}_{}_{}.jsonl'.format(
            os.environ.get('CAST_TEST_TAG', 'run'),
            os.environ.get('TORCHELASTIC_RESTART_COUNT', '0') or '0', rank)
        with open(os.path.join(runner.work_dir, name), 'a') as f:
            f.write(json.dumps(dict(loss=float(outputs['loss']), bad=bad,
                                    world=world, iter=runner.iter)) + '\n')

    def after_train(self, runner):
        rank, world = get_dist_info()
        model = getattr(runner.model, 'module', runner.model)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save(params, os.path.join(runner.work_dir, f'params{rank}.pt'))


@HOOKS.register_module(force=True)  # another test's probe may hold the name
class KillHook(Hook):
    """CAST_TEST_KILL=<rank>:<iteration>: that rank SIGKILLs itself when it
    starts that iteration (1-based), on the first attempt only."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        spec = os.environ.get('CAST_TEST_KILL')
        if not spec or os.environ.get('TORCHELASTIC_RESTART_COUNT',
                                      '0') not in ('', '0'):
            return
        rank, at = (int(v) for v in spec.split(':'))
        if get_dist_info()[0] == rank and runner.iter + 1 == at:
            with open(os.path.join(runner.work_dir, 'killed.json'), 'w') as f:
                json.dump(dict(time=time.time(), rank=rank,
                               node=os.environ.get('GROUP_RANK')), f)
            os.kill(os.getpid(), signal.SIGKILL)
'''

FAKE_SRUN = '''#!{python}
"""A fake srun: records its argv and environment, then runs the command as
--ntasks local processes with the SLURM_* variables of one node."""
import json, os, subprocess, sys, time
args = sys.argv[1:]
opts, i = {{}}, 0
while i < len(args) and args[i].startswith('-'):
    if args[i] == '-p':
        opts['-p'] = args[i + 1]; i += 2; continue
    key, _, value = args[i].partition('=')
    opts[key] = value; i += 1
cmd = args[i:]
with open(os.environ['FAKE_SLURM_LOG'] + '.srun.json', 'w') as f:
    json.dump(dict(argv=sys.argv[1:], opts=opts, cmd=cmd,
                   env={{k: os.environ.get(k) for k in (
                       'MASTER_PORT', 'MASTER_ADDR', 'PYTHONPATH',
                       'OMP_NUM_THREADS')}}), f)
n = int(opts['--ntasks'])
procs = [subprocess.Popen(cmd, env=dict(
    os.environ, SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_NTASKS=str(n),
    SLURM_NODEID='0', SLURM_NODELIST='fakenode[0]', SLURM_JOB_ID='1'))
    for r in range(n)]
while True:  # --kill-on-bad-exit=1: one task fails, the others are killed
    codes = [p.poll() for p in procs]
    if any(c not in (None, 0) for c in codes) or all(c == 0 for c in codes):
        break
    time.sleep(0.2)
for p in procs:
    if p.poll() is None:
        p.kill()
sys.exit(max(abs(p.wait()) for p in procs))
'''

FAKE_SCONTROL = '''#!/usr/bin/env bash
echo "$@" >> "$FAKE_SLURM_LOG.scontrol"
[ "$1 $2" = "show hostname" ] && echo 127.0.0.1
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist')
    data = write_synthetic_video_dataset(str(root / 'data'),
                                         num_train_per_class=4,
                                         num_val_per_class=1, num_frames=4,
                                         size=32)
    with open(data['train_ann']) as f:
        lines = f.read().split('\n')
    # list line 1: DefaultSampler(shuffle=False) gives it to rank 1 only
    bad_video = os.path.join(data['root'], lines[1].split()[0])
    with open(bad_video, 'wb') as f:
        f.write(b'not a video')
    (root / 'dist_probe.py').write_text(PROBE)
    fake_bin = root / 'bin'
    fake_bin.mkdir()
    for name, text in (('srun', FAKE_SRUN.format(python=sys.executable)),
                       ('scontrol', FAKE_SCONTROL)):
        path = fake_bin / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    pipeline = [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=4, frame_interval=1, num_clips=1,
             test_mode=True),
        dict(type='DecordDecode'),
        dict(type='Resize', scale=(32, 32), keep_ratio=False),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs'),
    ]
    cfg = root / 'tiny_dist.py'
    cfg.write_text(textwrap.dedent(f'''
        _base_ = [{os.path.join(ROOT, 'configs', 'cast_demo.py')!r}]
        custom_imports = dict(imports=['cast_mmaction', 'dist_probe'],
                              allow_failed_imports=False)
        num_frames = 4
        model = dict(
            backbone=dict(num_frames=4, img_size=32, experts=dict(
                clip=dict(embed_dim=32, depth=1, num_heads=2),
                vmae=dict(embed_dim=32, depth=1, num_heads=2))),
            cls_head=dict(in_channels=32))
        train_dataloader = dict(
            batch_size=2, drop_last=False,
            sampler=dict(type='ReproducibleSampler', shuffle=False),
            dataset=dict(ann_file={data['train_ann']!r},
                         data_prefix=dict(video={data['root']!r}),
                         pipeline={pipeline!r}))
        val_cfg = val_dataloader = val_evaluator = None
        test_dataloader = dict(
            batch_size=2,
            dataset=dict(ann_file={data['val_ann']!r},
                         data_prefix=dict(video={data['root']!r}),
                         pipeline={pipeline!r}))
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2,
                         val_begin=3)
        param_scheduler = []
        default_hooks = dict(
            logger=dict(interval=1),
            checkpoint=dict(interval=1, max_keep_ckpts=3),
            bad_samples=dict(max_bad_fraction=0.25),
            rank_watchdog=dict(interval={WATCHDOG['interval']},
                               timeout={WATCHDOG['timeout']}))
        custom_hooks = [dict(type='TraceHook'), dict(type='KillHook')]
        env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=60))
        '''))
    return dict(root=root, cfg=cfg, bin=fake_bin, bad_video=bad_video)


def _env(setup, **extra):
    env = dict(os.environ, PYTHONPATH=str(setup['root']), OMP_NUM_THREADS='1',
               PYTHON=sys.executable)
    for key in ('MASTER_ADDR', 'MASTER_PORT', 'CAST_TEST_KILL', 'NNODES',
                'NODE_RANK', 'RDZV_BACKEND', 'MAX_RESTARTS', 'GPUS'):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _launch(args, cwd, env):
    """``args`` started in a process group of its own, its output (stdout
    and stderr) into an unnamed file, not a pipe: launches started together
    are waited for one after another, and a pipe nobody reads stalls its
    writer once 64 KiB are unread (a node blocked writing its log keeps the
    other node's torchrun waiting for it at exit)."""
    log = tempfile.TemporaryFile(mode='w+')
    proc = subprocess.Popen(args, cwd=str(cwd), env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    proc.log = log
    return proc


def _output(proc):
    proc.log.seek(0)
    return proc.log.read()


def _dist_train(setup, work, nproc=2, *options, **env):
    return _launch(
        ['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'),
         str(setup['cfg']), str(nproc), '--work-dir', str(work), *options],
        setup['root'], _env(setup, **env))


def _finish(proc, ok=True):
    return _finish_all([proc], ok)[0]


def _finish_all(procs, ok=True):
    """Wait for launches started together (the nodes of one run) within
    ``TIMEOUT`` s in all; on a timeout stop every one still running and
    fail with each one's output, so a node that hangs is told apart from
    one that waits for it (torchrun's agents wait for each other at exit)."""
    deadline = time.monotonic() + TIMEOUT
    timed_out = False
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    if timed_out:
        parts = []
        for k, p in enumerate(procs):
            state = 'still running: killed' if p.poll() is None else (
                f'exited with {p.returncode}')
            if p.poll() is None:  # the launcher, torchrun and its workers
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            parts.append(f'--- launch {k} of {len(procs)}, {state}:\n'
                         f'{_output(p)[-3000:]}')
        pytest.fail(f'launch still running after {TIMEOUT} s:\n'
                    + '\n'.join(parts))
    return [_checked(p, _output(p), ok) for p in procs]


def _checked(proc, out, ok):
    work = proc.args[proc.args.index('--work-dir') + 1]
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, f'launch_{proc.pid}.log'), 'w') as f:
        f.write(out)  # the whole output, for a failure's post-mortem
    if ok:
        assert proc.returncode == 0, out[-6000:]
    return out


def _two_nodes(setup, work, *options, **env):
    """Two torchrun agents of one process each on this host; their
    outputs, in node order."""
    port = _free_port()
    procs = [_dist_train(setup, work, 1, *options, NNODES=2, NODE_RANK=node,
                         MASTER_ADDR='127.0.0.1', MASTER_PORT=port, **env)
             for node in (0, 1)]
    return procs


def _steps(work, rank, tag='run', attempt=0):
    with open(work / f'steps_{tag}_{attempt}_{rank}.jsonl') as f:
        return [json.loads(line) for line in f]


def _params(work, rank):
    return torch.load(work / f'params{rank}.pt', weights_only=True)


def _assert_equal_params(p, q):
    assert p.keys() == q.keys()
    for name in p:
        assert torch.equal(p[name], q[name]), name


@pytest.fixture(scope='module')
def reference(setup):
    """1 node x 2 processes through tools/slurm_train.sh (fake srun)."""
    work = setup['root'] / 'slurm'
    log = str(setup['root'] / 'fake_slurm')
    env = _env(setup, GPUS=2, GPUS_PER_NODE=2, CPUS_PER_TASK=1,
               MASTER_PORT=_free_port(), FAKE_SLURM_LOG=log,
               SRUN_ARGS='--time=5')
    env['PATH'] = f"{setup['bin']}{os.pathsep}{env['PATH']}"
    proc = _launch(
        ['bash', os.path.join(ROOT, 'tools', 'slurm_train.sh'), 'cpu',
         'tiny', str(setup['cfg']), '--work-dir', str(work)],
        setup['root'], env)
    out = _finish(proc)
    with open(log + '.srun.json') as f:
        srun = json.load(f)
    with open(log + '.scontrol') as f:
        scontrol = f.read()
    return dict(work=work, log=out, srun=srun, scontrol=scontrol,
                steps=[_steps(work, r) for r in (0, 1)],
                params=[_params(work, r) for r in (0, 1)])


def _losses(steps):
    return [s['loss'] for s in steps]


def test_slurm_launcher_runs_two_tasks_through_the_slurm_path(reference):
    srun = reference['srun']
    opts = srun['opts']
    assert opts['-p'] == 'cpu' and opts['--job-name'] == 'tiny'
    assert opts['--ntasks'] == '2' and opts['--ntasks-per-node'] == '2'
    assert opts['--gres'] == 'gpu:2' and opts['--cpus-per-task'] == '1'
    assert opts['--kill-on-bad-exit'] == '1' and opts['--time'] == '5'
    assert srun['cmd'][1:3] == ['-u', os.path.join(ROOT, 'tools',
                                                   'train.py')]
    assert srun['cmd'][-4:-2] == ['--launcher', 'slurm']
    assert srun['env']['MASTER_ADDR'] is None  # from scontrol, below
    assert srun['env']['OMP_NUM_THREADS'] == '1'
    # MMEngine's _init_dist_slurm asked scontrol for node 0 of the list
    assert 'show hostname fakenode[0]' in reference['scontrol']
    s0, s1 = reference['steps']
    assert {s['world'] for s in s0 + s1} == {2}
    assert [s['iter'] for s in s0] == [s['iter'] for s in s1] == list(
        range(8))
    # DDP replicas agree, and training moved the loss
    _assert_equal_params(*reference['params'])
    assert abs(s0[-1]['loss'] - s0[0]['loss']) > 1e-3


def test_bad_video_on_one_rank_keeps_the_ranks_in_step(reference):
    s0, s1 = reference['steps']
    # rank 1 read the corrupt clip once per epoch (replaced), rank 0 never;
    # both ran all 8 iterations, none hung (the launch ended)
    assert [s['bad'] for s in s1] == [1, 0, 0, 0] * 2
    assert [s['bad'] for s in s0] == [0] * 8
    assert len(s0) == len(s1) == 8
    assert all(loss == loss for loss in _losses(s0 + s1))  # no NaN
    # the epoch summary gathers both ranks
    assert reference['log'].count(
        '1 skipped and replaced this epoch; 1 distinct bad of 16') == 2


def test_lost_rank_is_named_then_two_nodes_resume_to_the_reference(
        setup, reference):
    """A 2-node run (static rendezvous: node 0's agent hosts the store)
    loses rank 1 at iteration 6; until then both ranks match the 1-node
    reference; the other node names the lost rank and both agents exit
    within the watchdog time; --resume as 2 nodes (c10d rendezvous) ends
    with the reference weights."""
    work = setup['root'] / 'lost'
    procs = _two_nodes(setup, work, CAST_TEST_TAG='lost',
                       CAST_TEST_KILL=f'1:{KILL_ITER}')
    outs = _finish_all(procs, ok=False)
    ended = time.time()
    with open(work / 'killed.json') as f:
        killed = json.load(f)
    lost_node = int(killed['node'])
    assert lost_node == 1  # static rendezvous: node ranks as given
    survivor = 0
    assert all(p.returncode != 0 for p in procs), outs
    # the agent of the lost rank's node names it (torchrun's report)
    assert 'Signal 9 (SIGKILL)' in outs[lost_node], outs[lost_node][-3000:]
    # the other node's rank names it too, within the configured time
    message = f'rank 1 (node {lost_node}) lost: no heartbeat for'
    assert message in outs[survivor], outs[survivor][-3000:]
    assert ended - killed['time'] < WATCHDOG['timeout'] + 30, \
        ended - killed['time']
    # until the kill, 2 nodes x 1 process = 1 node x 2 processes
    for rank in (0, 1):
        steps = _steps(work, rank, 'lost')
        assert len(steps) == KILL_ITER - 1
        assert steps == reference['steps'][rank][:KILL_ITER - 1]
    assert (work / 'epoch_1.pth').exists()
    assert not (work / 'epoch_2.pth').exists()
    # --resume on 2 nodes (c10d rendezvous) ends where the reference ended
    procs = _two_nodes(setup, work, '--resume', CAST_TEST_TAG='resumed',
                       RDZV_BACKEND='c10d', RDZV_ID=f'resume{os.getpid()}')
    outs = _finish_all(procs)
    assert 'Auto resumed from the latest checkpoint' in outs[0]
    for rank in (0, 1):
        assert _steps(work, rank, 'resumed') == reference['steps'][rank][4:]
        _assert_equal_params(_params(work, rank), reference['params'][rank])


def test_dist_test_on_two_nodes_gives_the_one_process_result(setup,
                                                             reference):
    """tools/dist_test.sh with NNODES=2 (two agents, one process each) and
    tools/test.py in one process: the same predictions and metrics."""
    import importlib.util
    import pickle
    checkpoint = str(reference['work'] / 'epoch_2.pth')
    port = _free_port()
    results = {}
    work = setup['root'] / 'test_nodes2'
    procs = [_launch(
        ['bash', os.path.join(ROOT, 'tools', 'dist_test.sh'),
         str(setup['cfg']), checkpoint, '1', '--work-dir', str(work),
         '--dump', str(work / 'preds.pkl')],
        setup['root'], _env(setup, NNODES=2, NODE_RANK=node,
                            MASTER_ADDR='127.0.0.1', MASTER_PORT=port))
        for node in (0, 1)]
    outs = _finish_all(procs)
    assert 'top-1 accuracy' in outs[0]
    # one process, in this process (the probe module on sys.path)
    spec = importlib.util.spec_from_file_location(
        'cast_test_tool', os.path.join(ROOT, 'tools', 'test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    one = setup['root'] / 'test_single'
    sys.path.insert(0, str(setup['root']))
    try:
        tool.main([str(setup['cfg']), checkpoint, '--work-dir', str(one),
                   '--dump', str(one / 'preds.pkl')])
    finally:
        sys.path.remove(str(setup['root']))
    for name, folder in (('nodes2', work), ('single', one)):
        with open(folder / 'test_metrics.json') as f:
            metrics = json.load(f)
        with open(folder / 'preds.pkl', 'rb') as f:
            preds = pickle.load(f)
        results[name] = metrics, preds
    (m2, p2), (m1, p1) = results['nodes2'], results['single']
    assert m2['metrics'] == m1['metrics']
    assert len(p2) == len(p1) == 4
    for a, b in zip(p2, p1):
        assert a['gt_label'].item() == b['gt_label'].item()
        assert torch.allclose(a['pred_score'], b['pred_score'], atol=1e-6)


def test_max_restarts_resume_by_themselves(setup, reference):
    work = setup['root'] / 'restart'
    out = _finish(_dist_train(setup, work, 2, MASTER_PORT=_free_port(),
                              MAX_RESTARTS=1,
                              CAST_TEST_KILL=f'1:{KILL_ITER}'))
    assert (work / 'killed.json').exists()
    assert 'torchrun restart 1: resuming from the latest checkpoint' in out
    for rank in (0, 1):
        assert len(_steps(work, rank, attempt=0)) >= KILL_ITER - 2
        assert _steps(work, rank, attempt=1) == reference['steps'][rank][4:]
        _assert_equal_params(_params(work, rank), reference['params'][rank])


# ------------------------------------------------- in-process, no launch ---
def _bash(script, *args, **env):
    return subprocess.run(
        ['bash', os.path.join(ROOT, 'tools', script), *args],
        env=dict(os.environ, PYTHON=sys.executable, **env),
        capture_output=True, text=True, timeout=30)


def test_launchers_refuse_bad_settings_naming_them():
    r = _bash('dist_train.sh', 'x.py', '1', NNODES='2', MAX_RESTARTS='1')
    assert r.returncode == 2 and 'MAX_RESTARTS=1 needs NNODES=1' in r.stderr
    r = _bash('dist_test.sh', 'x.py', 'x.pth', '1', RDZV_BACKEND='etcd')
    assert r.returncode == 2 and "RDZV_BACKEND must be static or c10d, " \
        "got 'etcd'" in r.stderr
    r = _bash('slurm_train.sh', 'p', 'j', 'x.py', GPUS='two')
    assert r.returncode == 2 and "GPUS must be a positive integer, got " \
        "'two'" in r.stderr
    r = _bash('slurm_test.sh', 'p', 'j', 'x.py', 'x.pth', CPUS_PER_TASK='0')
    assert r.returncode == 2 and 'CPUS_PER_TASK must be' in r.stderr


def _master_store():
    import datetime

    from torch.distributed import TCPStore
    port = _free_port()  # a missing key fails in 5 s instead of hanging
    return TCPStore('127.0.0.1', port, is_master=True, wait_for_workers=False,
                    timeout=datetime.timedelta(seconds=5)), port


def test_restarted_workers_get_a_store_prefix_per_attempt(monkeypatch):
    import datetime
    import importlib
    rdzv = importlib.import_module('torch.distributed.rendezvous')
    assert getattr(rdzv._create_c10d_store, '_cast_attempt', False)
    master, port = _master_store()
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(port))
    monkeypatch.setenv('TORCHELASTIC_USE_AGENT_STORE', 'True')
    for attempt in ('0', '1'):
        monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', attempt)
        store = rdzv._create_c10d_store('127.0.0.1', port, 1, 2,
                                        datetime.timedelta(seconds=5))
        store.set('rank_1', f'address of attempt {attempt}')
    # the dead attempt's key does not shadow the restarted one's
    assert master.get('/worker/attempt_0/rank_1') == b'address of attempt 0'
    assert master.get('/worker/attempt_1/rank_1') == b'address of attempt 1'


def test_watchdog_names_a_silent_rank_and_skips_finished_ones(monkeypatch):
    from torch.distributed import PrefixStore

    from cast_mmaction.engine.hooks import RankWatchdogHook
    with pytest.raises(ValueError, match='default_hooks.rank_watchdog'):
        RankWatchdogHook(interval=5, timeout=5)
    master, _ = _master_store()
    hook = RankWatchdogHook(interval=0.05, timeout=0.3)
    hook._store = PrefixStore('cast/attempt_0', master)
    hook._rank, hook._world = 0, 3
    for rank, node in ((1, '1'), (2, '0')):
        hook._store.set(f'watchdog/node/{rank}', node)
        hook._store.add(f'watchdog/beat/{rank}', 1)
    seen = {}
    assert hook._check(seen) is None  # both just beat
    hook._store.set('watchdog/done/2', '1')  # rank 2 finished its run
    time.sleep(0.2)
    hook._store.add('watchdog/beat/1', 1)
    assert hook._check(seen) is None  # rank 1 beat again
    time.sleep(0.4)
    message = hook._check(seen)
    assert message.startswith('rank 1 (node 1) lost: no heartbeat for')
    # every other rank reads the same verdict from the store
    other = RankWatchdogHook(interval=0.05, timeout=0.3)
    other._store, other._rank, other._world = hook._store, 2, 3
    assert other._check({}) == message


def test_watchdog_verdict_ends_the_process_unless_it_is_failing_already(
        monkeypatch, capsys):
    """A verdict ends the process (``os._exit(1)``: its main thread may be
    blocked in a collective) unless the main thread is already unwinding a
    communication error, whose traceback then follows the verdict."""
    import threading

    from torch.distributed import PrefixStore

    from cast_mmaction.engine.hooks import RankWatchdogHook
    exits = []
    monkeypatch.setattr(os, '_exit', exits.append)
    master, _ = _master_store()
    for failing in (False, True):
        hook = RankWatchdogHook(interval=0.05, timeout=0.3)
        hook._store = PrefixStore(f'failing{failing}', master)
        hook._rank, hook._world = 0, 2
        hook._store.set('watchdog/node/1', '1')
        hook._store.add('watchdog/beat/1', 1)  # rank 1 beat once, then died
        if failing:
            hook._failing.set()
        thread = threading.Thread(target=hook._run, daemon=True)
        thread.start()
        thread.join(10)  # the main thread would be blocked meanwhile
        assert not thread.is_alive()
        assert hook.verdict.startswith('rank 1 (node 1) lost')
    assert exits == [1]  # only the first one ended the process
    assert capsys.readouterr().err.count('[rank 0] rank 1 (node 1) lost') == 2


def test_watchdog_holds_a_communication_error_until_the_verdict():
    """The main thread's gloo error waits for the watcher's verdict (so the
    lost rank is named before the traceback), at most timeout + 2 *
    interval seconds; other errors do not wait."""
    import threading

    from cast_mmaction.engine.hooks import RankWatchdogHook
    for exc, verdict_in, waited in (
            (RuntimeError('[gloo] Connection closed by peer'), 0.2, 0.2),
            (RuntimeError('[gloo] Connection closed by peer'), 1.5, 0.4),
            (ValueError('a bug'), 0.2, 0)):
        hook = RankWatchdogHook(interval=0.05, timeout=0.3)
        printed = []
        hook._excepthook = lambda *a: printed.append(time.monotonic())
        hook._thread = threading.Thread(target=time.sleep,
                                        args=(verdict_in, ))
        hook._thread.start()
        start = time.monotonic()
        hook._on_exception(type(exc), exc, None)
        assert hook._failing.is_set() is (waited > 0)
        assert waited - 0.05 <= printed[0] - start <= waited + 0.5
        hook._thread.join()


def test_watchdog_reports_a_store_gone_for_timeout_seconds():
    """The store's host (node 0) vanishes: the watcher reports it once the
    store has not answered for ``timeout`` s (not at the first error: a
    finished rank 0 may end its process while the others finish)."""
    import datetime
    import threading

    from torch.distributed import PrefixStore, TCPStore

    from cast_mmaction.engine.hooks import RankWatchdogHook
    master, port = _master_store()
    client = TCPStore('127.0.0.1', port, is_master=False,
                      timeout=datetime.timedelta(seconds=0.2))
    hook = RankWatchdogHook(interval=0.05, timeout=0.5)
    hook._store, hook._rank, hook._world = PrefixStore('p', client), 1, 2
    reports = []
    hook._report = lambda message: reports.append((time.monotonic(),
                                                   message))
    hook._beat()
    thread = threading.Thread(target=hook._run, daemon=True)
    thread.start()
    time.sleep(0.2)
    assert not reports  # the store answers
    del master  # node 0 is gone
    gone = time.monotonic()
    thread.join(10)
    assert not thread.is_alive() and len(reports) == 1
    at, message = reports[0]
    assert message.startswith('rank 0 (node 0) lost: the c10d store it '
                              'hosts has not answered for')
    assert at - gone >= 0.5


def test_elastic_resume_turns_on_resume_only_on_a_restart(tmp_path,
                                                          monkeypatch):
    import logging

    from mmengine.runner import BaseLoop

    from cast_mmaction.engine.hooks import ElasticResumeHook

    class Loop(BaseLoop):
        def run(self):
            pass

    class Runner:  # in training: Runner.train() built its train loop
        work_dir = str(tmp_path)
        _resume, _load_from = False, 'pretrained.pth'
        _train_loop = object.__new__(Loop)
        logger = logging.getLogger('elastic-test')

    hook, runner = ElasticResumeHook(), Runner()
    (tmp_path / 'epoch_1.pth').write_bytes(b'x')
    monkeypatch.delenv('TORCHELASTIC_RESTART_COUNT', raising=False)
    hook.before_run(runner)  # first attempt (no torchrun): left alone
    assert (runner._resume, runner._load_from) == (False, 'pretrained.pth')
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '0')
    hook.before_run(runner)
    assert runner._resume is False
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', '1')
    empty = Runner()
    empty.work_dir = str(tmp_path / 'nothing_yet')
    hook.before_run(empty)  # restarted before the first checkpoint
    assert (empty._resume, empty._load_from) == (False, 'pretrained.pth')
    hook.before_run(runner)
    assert (runner._resume, runner._load_from) == (True, None)
    # a restarted test run (tools/dist_test.sh with MAX_RESTARTS; its work
    # dir the training run's) tests the checkpoint it was given
    testing = Runner()
    testing._train_loop = dict(type='EpochBasedTrainLoop')  # not built
    hook.before_run(testing)
    assert (testing._resume, testing._load_from) == (False, 'pretrained.pth')
    monkeypatch.setenv('TORCHELASTIC_RESTART_COUNT', 'x')
    with pytest.raises(ValueError, match='TORCHELASTIC_RESTART_COUNT'):
        hook.before_run(Runner())


def test_bad_video_on_one_rank_keeps_fsdp2_ranks_in_step(setup):
    """The bad-sample policy under FSDP2 (MMEngine's FlexibleRunner with
    our FSDP2Strategy) as under DDP: the clip only rank 1 reads is replaced
    once per epoch, both ranks run every iteration and the launch ends."""
    cfg = setup['root'] / 'tiny_dist_fsdp.py'
    fsdp = os.path.join(ROOT, 'configs', '_base_', 'strategies', 'fsdp.py')
    cfg.write_text(f"_base_ = ['./tiny_dist.py', {fsdp!r}]\n")
    work = setup['root'] / 'fsdp2_bad'
    proc = _launch(
        ['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), str(cfg), '2',
         '--work-dir', str(work)],
        setup['root'], _env(setup, MASTER_PORT=_free_port()))
    out = _finish(proc)
    assert 'FSDP2Strategy' in out, out[-3000:]
    s0, s1 = _steps(work, 0), _steps(work, 1)
    assert [s['bad'] for s in s1] == [1, 0, 0, 0] * 2
    assert [s['bad'] for s in s0] == [0] * 8
    assert all(loss == loss for loss in _losses(s0 + s1))  # no NaN
    assert out.count(
        '1 skipped and replaced this epoch; 1 distinct bad of 16') == 2
