"""A sample that hangs costs at most its time limit and is handled as a bad
sample (issue 18): ``call_with_time_limit`` on its own (Python loops,
blocking sleeps, code that swallows the error, other threads, a caller's own
alarm, a C call that never returns), no leaked file descriptors or decoder
threads, ``RobustDataset(sample_timeout=...)`` with a deliberately hanging
transform at 0 and 2 DataLoader workers, and a 2-process DDP run (gloo, CPU,
``tools/dist_train.sh``) where one rank's sample hangs.

A watchdog bounds every test: a regression fails it instead of hanging CI.
"""
import gc
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from mmcv.transforms import BaseTransform
from mmengine.dataset import pseudo_collate

from cast_mmaction.datasets.robust import BadSampleError, RobustDataset
from cast_mmaction.datasets.sample_timeout import (SampleTimeoutError,
                                                   call_with_time_limit,
                                                   default_hard_limit)
from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
from cast_mmaction.datasets.transforms.epic import (DecordVideoReader,
                                                    PyAVVideoReader)
from mmaction.registry import TRANSFORMS

from conftest import ROOT
from test_readers import br

LIMIT = 2.0  # seconds: the sample time limit of these tests
SLACK = 3.0  # seconds a limit may be overrun on a busy 2-core machine


@contextmanager
def watchdog(seconds):
    """End the test process (with the stacks) should the block hang; the
    code under test owns SIGALRM and faulthandler's timer, so this is a
    plain thread (the hangs tested here release the GIL)."""
    done = threading.Event()

    def watch():
        if not done.wait(seconds):
            import faulthandler
            sys.stderr.write(f'\nwatchdog: test still running after '
                             f'{seconds} s\n')
            faulthandler.dump_traceback(all_threads=True)
            os._exit(3)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def _busy():
    x = 0
    while True:
        x = (x + 1) % 7


def _sleep():
    time.sleep(3600)


def _swallow():
    try:
        _busy()
    except Exception:  # a broad except in some library, which goes on
        pass
    _busy()


@pytest.mark.parametrize('hang', [_busy, _sleep, _swallow])
def test_a_hang_is_interrupted_after_the_limit(hang):
    before = signal.getsignal(signal.SIGALRM)
    t = time.monotonic()
    with watchdog(60), pytest.raises(SampleTimeoutError) as err:
        call_with_time_limit(hang, seconds=LIMIT, label='sample 3: a.mp4')
    took = time.monotonic() - t
    assert LIMIT <= took < LIMIT + SLACK + (1 if hang is _swallow else 0)
    msg = str(err.value)
    assert 'loading sample 3: a.mp4 was interrupted' in msg
    assert f'longer than its {LIMIT:g} s limit' in msg
    assert 'RobustDataset.sample_timeout' in msg
    assert '_busy' in msg or '_sleep' in msg  # where it was stuck
    # the process's signal state is as before
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_fast_loads_pass_through_and_the_limit_can_be_off():
    assert call_with_time_limit(lambda a, b=0: a + b, 2, b=3,
                                seconds=LIMIT) == 5
    t = time.monotonic()
    with watchdog(60):
        call_with_time_limit(time.sleep, 0.3, seconds=0)
        call_with_time_limit(time.sleep, 0.3, seconds=None)
    assert time.monotonic() - t >= 0.6
    for bad in (-1, 'soon', float('nan')):
        with pytest.raises(ValueError, match='>= 0'):
            call_with_time_limit(time.sleep, 0, seconds=bad)
    with pytest.raises(ValueError, match='sample_timeout'):
        RobustDataset(_tiny_dataset(), sample_timeout=-5)


def test_other_threads_and_a_callers_own_alarm():
    """Off the main thread, and while the caller's own ITIMER_REAL runs,
    the limit comes from a helper thread; the caller's alarm and handler
    are left alone."""
    out = {}

    def in_thread():
        t = time.monotonic()
        try:
            call_with_time_limit(_busy, seconds=LIMIT, label='in a thread')
        except SampleTimeoutError as e:
            out['error'], out['took'] = str(e), time.monotonic() - t

    with watchdog(60):
        th = threading.Thread(target=in_thread)
        th.start()
        th.join()
    assert 'loading in a thread was interrupted' in out['error']
    assert '_busy' in out['error']
    assert LIMIT <= out['took'] < LIMIT + SLACK

    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    signal.setitimer(signal.ITIMER_REAL, 50.0)
    try:
        with watchdog(60), pytest.raises(SampleTimeoutError):
            call_with_time_limit(_busy, seconds=LIMIT)
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 40 < remaining <= 50 and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # no helper thread is left behind
    assert not [t for t in threading.enumerate()
                if t.name == 'sample-time-limit']


STUCK_IN_C = '''
import ctypes, importlib.util, sys
# the module alone (no package import: a quick start)
spec = importlib.util.spec_from_file_location('sample_timeout', sys.argv[3])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
call_with_time_limit = module.call_with_time_limit

def stuck():
    # a C call that never returns and holds the GIL (as decord's get_batch
    # on some files, dmlc/decord#373): a mutex locked twice
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)

print('started', flush=True)
hard = None if sys.argv[2] == 'default' else float(sys.argv[2])
call_with_time_limit(stuck, seconds=float(sys.argv[1]), hard_seconds=hard,
                     label='sample 7: /data/stuck.mp4')
print('not reached', flush=True)
'''


def test_a_c_call_that_never_returns_ends_the_process_naming_the_file(
        tmp_path):
    script = tmp_path / 'stuck.py'
    script.write_text(STUCK_IN_C)
    t = time.monotonic()
    r = subprocess.run([sys.executable, str(script), str(LIMIT), '5',
                        osp.join(ROOT, 'cast_mmaction', 'datasets',
                                 'sample_timeout.py')],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    took = time.monotonic() - t
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'started' in r.stdout and 'not reached' not in r.stdout
    # the stack names the sample
    assert 'Timeout (0:00:05)!' in r.stderr
    assert 'File "<sample 7: /data/stuck.mp4>"' in r.stderr
    assert 'in stuck' in r.stderr
    assert took < 5 + 20  # interpreter start-up included
    # the default hard limit: twice the soft one, at least 30 s more
    assert default_hard_limit(120) == 240 and default_hard_limit(2) == 32


def _stuck_in_c():
    import ctypes
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


class _StuckItem(torch.utils.data.Dataset):

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return call_with_time_limit(_stuck_in_c, seconds=1, hard_seconds=3,
                                    label='sample 0: /data/stuck_in_worker.mp4')


def test_a_worker_stuck_in_c_stops_the_loader_instead_of_hanging(capfd):
    loader = torch.utils.data.DataLoader(_StuckItem(), batch_size=None,
                                         num_workers=1)
    t = time.monotonic()
    with watchdog(120), pytest.raises(RuntimeError,
                                      match='exited unexpectedly'):
        list(loader)
    assert time.monotonic() - t < 3 + 30
    err = capfd.readouterr().err
    assert 'File "<sample 0: /data/stuck_in_worker.mp4>"' in err


# ---------------------------------------------------------------------------
# resources
# ---------------------------------------------------------------------------
def _fds():
    return len(os.listdir('/proc/self/fd'))


def _os_threads():
    return len(os.listdir('/proc/self/task'))


@pytest.fixture(scope='module')
def long_video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('timeout') / 'g250.mp4')
    br.write_indexed_video(path, 400, 64, 48, 50, 250)
    return path


OPEN = []  # (fds, OS threads) seen while a reader was open


def _opened():
    OPEN.append((_fds(), _os_threads()))


def _pyav_forever(path):
    """Decode, seek back, decode again... with the reader's frame threads
    (thread_type AUTO) running: an open container and its threads are live
    when the limit strikes."""
    reader = PyAVVideoReader(path)
    _opened()
    try:
        while True:
            reader.get_frames([5, 200, 380])
    finally:
        reader.close()


def _pyav_forever_unclosed(path):
    reader = PyAVVideoReader(path)  # noqa: F841 - never closed here
    reader.get_frames([5])
    _opened()
    while True:
        reader.get_frames([5, 200, 380])


def _decord_forever(path):
    reader = DecordVideoReader(path, num_threads=2)
    reader.get_frames([5])
    _opened()
    while True:
        reader.get_frames([5, 200, 380])


def _fd_table():
    table = {}
    for fd in os.listdir('/proc/self/fd'):
        try:
            table[fd] = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return table


def _interrupt_and_count(load_name, path):
    """Run in a fresh interpreter by the test below: one interrupted load
    to create the lazily made pools (FFmpeg, OpenMP), then five more, and
    the process's descriptors and OS threads before, during and after."""
    load = globals()[load_name]

    def once():
        try:
            call_with_time_limit(load, path, seconds=0.5)
        except SampleTimeoutError:
            pass
        else:
            raise AssertionError('the load was not interrupted')
        gc.collect()

    once()
    fds, threads, before = _fds(), _os_threads(), _fd_table()
    OPEN.clear()
    for _ in range(5):
        once()
    after_fds, after = _fds(), _fd_table()
    # decoder threads end when their context is freed (a moment later)
    deadline = time.monotonic() + 5
    while _os_threads() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    return dict(fds=fds, threads=threads, opened=list(OPEN),
                after_fds=after_fds, after_threads=_os_threads(),
                new={fd: t for fd, t in after.items() if before.get(fd) != t})


@pytest.mark.skipif(not osp.isdir('/proc/self/fd'), reason='needs /proc')
@pytest.mark.parametrize('load', [_pyav_forever, _pyav_forever_unclosed,
                                  _decord_forever])
def test_interrupted_decoders_leak_no_files_or_threads(long_video, load):
    # in a fresh interpreter: a pytest worker that ran other test files
    # has their threads (compile pools, loggers) opening and closing
    # descriptors of their own, which a process-wide count would blame on
    # the decoders (CI saw 51 != 50 that way once)
    code = (f'import json, sys; sys.path.insert(0, {osp.dirname(__file__)!r})'
            f'; import test_sample_timeout as m; print("RESULT " + json.dumps('
            f'm._interrupt_and_count({load.__name__!r}, {long_video!r})))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.split('RESULT ', 1)[1])
    # the readers held a file (and decoder threads) when interrupted ...
    assert len(r['opened']) == 5
    assert min(f for f, _ in r['opened']) > r['fds']
    assert min(t for _, t in r['opened']) > r['threads']
    # ... and nothing is left once they are unwound
    assert r['after_fds'] == r['fds'], r['new']
    assert not any(t == long_video for t in r['new'].values()), r['new']
    assert r['after_threads'] <= r['threads']


class _InterruptedDecodes(torch.utils.data.Dataset):
    """In a DataLoader worker: item 0 and 6 report the worker's open files
    and OS threads; items 1-5 are PyAV / decord loads interrupted by the
    limit."""

    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 7

    def __getitem__(self, i):
        if i in (0, 6):
            gc.collect()
            time.sleep(0.2)  # decoder threads end a moment after their close
            return dict(pid=os.getpid(), fds=_fds(), threads=_os_threads())
        load = (_pyav_forever, _pyav_forever_unclosed, _decord_forever)[i % 3]
        try:
            call_with_time_limit(load, self.path, seconds=0.5)
        except SampleTimeoutError as e:
            return dict(pid=os.getpid(), error=str(e), opened=OPEN[-1])
        return dict(pid=os.getpid(), error=None)


@pytest.mark.skipif(not osp.isdir('/proc/self/fd'), reason='needs /proc')
def test_no_leaks_in_a_dataloader_worker(long_video):
    # two passes through one persistent worker: after the first, the
    # worker's lazily created pools exist, so the second pass's item 0 is
    # the baseline for everything that follows
    loader = torch.utils.data.DataLoader(
        _InterruptedDecodes(long_video), batch_size=None, num_workers=1,
        persistent_workers=True)
    with watchdog(120):
        first = list(loader)
        second = list(loader)
    assert len({r['pid'] for r in first + second}) == 1  # one worker
    for r in first[1:6] + second[1:6]:
        assert r['error'] and 'interrupted after' in r['error']
        assert r['opened'][0] > second[0]['fds']  # a file was open
    assert second[6]['fds'] == second[0]['fds'] == first[6]['fds']
    assert second[6]['threads'] <= second[0]['threads']


# ---------------------------------------------------------------------------
# RobustDataset: a deliberately hanging transform
# ---------------------------------------------------------------------------
@TRANSFORMS.register_module(force=True)
class HangOnFile(BaseTransform):
    """Hangs (a Python loop, or a long sleep) on the files whose name
    contains ``pattern``."""

    def __init__(self, pattern, how='busy'):
        self.pattern, self.how = pattern, how

    def transform(self, results):
        if self.pattern in results['filename']:
            _busy() if self.how == 'busy' else _sleep()
        return results


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('hang_data'))
    info = write_synthetic_video_dataset(root, num_train_per_class=2,
                                         num_val_per_class=1, num_frames=4,
                                         size=32, seed=5)
    with open(info['train_ann']) as f:
        lines = [ln.split()[0] for ln in f if ln.strip()]
    return dict(info, hang=lines[3])  # the 4th of 8 training videos


def _pipeline(pattern, how='busy'):
    return [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=4, frame_interval=1,
             num_clips=1, test_mode=True),
        dict(type='DecordDecode'),
        dict(type='HangOnFile', pattern=pattern, how=how),
        dict(type='Resize', scale=(32, 32), keep_ratio=False),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs'),
    ]


def _tiny_dataset(videos=None, how='busy', test_mode=False):
    from mmaction.datasets import VideoDataset
    if videos is None:
        return [dict(inputs=torch.zeros(1))]
    return VideoDataset(videos['train_ann'],
                        _pipeline(videos['hang'], how),
                        data_prefix=dict(video=videos['root']),
                        test_mode=test_mode)


@pytest.mark.parametrize('workers,how', [(0, 'busy'), (0, 'sleep'),
                                         (2, 'busy'), (2, 'sleep')])
def test_a_hanging_sample_is_replaced_and_counted(videos, workers, how):
    ds = RobustDataset(_tiny_dataset(videos, how), sample_timeout=LIMIT,
                       check_annotations=False)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=workers, collate_fn=pseudo_collate,
        shuffle=False)
    t = time.monotonic()
    with watchdog(180):
        batches = list(loader)
    took = time.monotonic() - t
    samples = [s for b in batches for s in b['data_samples']]
    assert len(samples) == 8
    bad = [(i, s.metainfo['bad_samples']) for i, s in enumerate(samples)
           if 'bad_samples' in s.metainfo]
    assert len(bad) == 1, bad
    i, [(idx, path, error)] = bad[0]
    assert i == idx == 3 and path.endswith(videos['hang'])
    assert error.startswith('SampleTimeoutError: loading sample 3: ')
    assert f'{LIMIT:g} s limit' in error
    # the replacement is a good sample of another file, not a placeholder
    assert samples[3].metainfo['bad_samples'] and \
        batches[0]['inputs'][3].abs().sum() > 0
    assert took < LIMIT + 60  # one limit, not an hour (workers start-up)


def test_testing_raises_or_flags_a_hanging_sample(videos):
    ds = RobustDataset(_tiny_dataset(videos, test_mode=True),
                       sample_timeout=LIMIT, check_annotations=False)
    assert ds.bad_sample == 'raise'
    with watchdog(60), pytest.raises(BadSampleError,
                                     match=r'sample 3\).*SampleTimeoutError'
                                     r'.*2 s limit') as err:
        ds[3]
    assert videos['hang'] in str(err.value)
    flag = RobustDataset(_tiny_dataset(videos, test_mode=True),
                         bad_sample='flag', sample_timeout=LIMIT,
                         check_annotations=False)
    with watchdog(60):
        out = flag[3]
    assert out['data_samples'].metainfo['bad_sample'].endswith(
        videos['hang'])
    assert float(out['inputs'].abs().sum()) == 0
    # off: the default of a wrapper is 120 s, 0 turns the limit off
    assert RobustDataset(_tiny_dataset(videos),
                         check_annotations=False).sample_timeout == 120


# ---------------------------------------------------------------------------
# DDP: one rank's sample hangs
# ---------------------------------------------------------------------------
PROBE = '''
import json
import os
import time

from mmcv.transforms import BaseTransform
from mmengine.hooks import Hook
from mmaction.registry import HOOKS, TRANSFORMS


@TRANSFORMS.register_module()
class HangOnRank(BaseTransform):
    """On rank ``rank`` only, the file matching ``pattern`` hangs."""

    def __init__(self, pattern, rank, marker):
        self.pattern, self.rank, self.marker = pattern, rank, marker

    def transform(self, results):
        if self.pattern in results['filename'] and \\
                os.environ.get('RANK') == str(self.rank):
            with open(self.marker, 'a') as f:
                f.write(f"{os.environ.get('RANK')} {results['filename']}\\n")
            while True:
                time.sleep(0.01)
        return results


@HOOKS.register_module()
class DumpBadHook(Hook):
    """Writes what BadSampleHook gathered from all ranks."""

    def after_train(self, runner):
        from mmengine.dist import get_rank
        bad = [h for h in runner.hooks if type(h).__name__ ==
               'BadSampleHook'][0].bad
        with open(os.path.join(runner.work_dir,
                               f'bad{get_rank()}.json'), 'w') as f:
            # keyed (path, index): the index, and the path beside it
            json.dump({str(k[1]): [k[0]] + list(v) for k, v in bad.items()},
                      f)
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_ddp_run_finishes_when_one_ranks_sample_hangs(videos, tmp_path):
    from cast_mmaction.models.presets import cast_recognizer_cfg
    (tmp_path / 'hang_probe.py').write_text(PROBE)
    marker = str(tmp_path / 'hung.txt')
    model = cast_recognizer_cfg(num_classes=4, embed_dim=32, depth=1,
                                num_heads=2, num_frames=4, img_size=32)
    pipeline = _pipeline('no file has this name')
    pipeline[3] = dict(type='HangOnRank', pattern=videos['hang'], rank=1,
                       marker=marker)
    cfg = tmp_path / 'hang_ddp.py'
    cfg.write_text(textwrap.dedent(f'''
        _base_ = [{osp.join(ROOT, 'configs', '_base_',
                            'default_runtime.py')!r}]
        custom_imports = dict(imports=['cast_mmaction', 'hang_probe'],
                              allow_failed_imports=False)
        model = {model!r}
        train_dataloader = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(
                type='RobustDataset', sample_timeout={LIMIT},
                dataset=dict(type='VideoDataset',
                             ann_file={videos['train_ann']!r},
                             data_prefix=dict(video={videos['root']!r}),
                             pipeline={pipeline!r})))
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
        val_cfg = val_dataloader = val_evaluator = None
        optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=100, save_best=None),
                             bad_samples=dict(max_bad_fraction=0.5))
        custom_hooks = [dict(type='DumpBadHook')]
        '''))
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OMP_NUM_THREADS='1',
               PYTHON=sys.executable, MASTER_PORT=str(_free_port()))
    t = time.monotonic()
    r = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'),
                        str(cfg), '2', '--work-dir', str(work)],
                       cwd=str(tmp_path), env=env, capture_output=True,
                       text=True, timeout=400)
    took = time.monotonic() - t
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert 'Distributed training is not used' not in log
    # the sample really hung, on rank 1 only
    with open(marker) as f:
        hung = f.read().split()
    assert hung[0] == '1' and hung[1].endswith(videos['hang'])
    assert len(hung) == 2
    # ... and was counted like any bad sample (summed over the ranks)
    assert 'Epoch(train) [1] bad samples: 1 skipped and replaced this ' \
        'epoch; 1 distinct bad of 8' in log
    for rank in (0, 1):  # both ranks know it after the epoch
        with open(work / f'bad{rank}.json') as f:
            bad = json.load(f)
        assert list(bad) == ['3'], bad
        key_path, path, error = bad['3']
        assert key_path == path and path.endswith(videos['hang'])
        assert error.startswith('SampleTimeoutError: loading sample 3: ')
    assert took < 300
