"""tools/benchmark/gpu_figures.sh, the one command for the GPU figures: its
plumbing at a tiny size on the CPU (``DEVICE=cpu``), which part ran, what it
wrote, that a failing part makes the whole run fail while the others
still run, and that a CUDA run without a CUDA device stops before the first
part."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'tools', 'benchmark', 'gpu_figures.sh')


def _run(out, **env):
    return subprocess.run(
        ['bash', SCRIPT, str(out)], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, 'DEVICE': 'cpu',
                          'PYTHON': sys.executable, **env})


def test_selected_parts_run_and_write_their_files(tmp_path):
    r = _run(tmp_path / 'out', PARTS='multiview')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    files = sorted(os.listdir(tmp_path / 'out'))
    assert files == ['multiview_cuda.json', 'session.log']
    res = json.loads((tmp_path / 'out' / 'multiview_cuda.json').read_text())
    assert [row['views'] for row in res['results']] == [15, 6]
    log = (tmp_path / 'out' / 'session.log').read_text()
    assert '== multiview: exit 0' in log
    for part in ('check', 'bench', 'augment', 'decode'):
        assert f'== {part}: not selected' in log
    assert 'torch' in log and 'cpu' in log  # the machine's facts


def test_a_failing_part_fails_the_run_and_the_rest_still_run(tmp_path):
    bad = tmp_path / 'python'
    # an interpreter that fails for the multiview tool only
    bad.write_text('#!/bin/bash\ncase "$1" in *bench_multiview*) exit 3;; '
                   'esac\nexec %s "$@"\n' % sys.executable)
    bad.chmod(0o755)
    r = _run(tmp_path / 'out', PARTS='multiview,augment', PYTHON=str(bad))
    assert r.returncode == 1
    log = (tmp_path / 'out' / 'session.log').read_text()
    assert '== multiview: exit 3' in log
    assert '== augment: exit 0' in log
    assert 'a part failed' in log
    rows = [json.loads(line) for line in
            (tmp_path / 'out' / 'device_augment.jsonl').read_text()
            .splitlines() if line.startswith('{')]
    assert rows


def test_decode_part_prepares_videos_and_leaves_only_its_json(tmp_path):
    # on the CPU the part runs PyAV in torchcodec's CUDA decoder's place
    r = _run(tmp_path / 'out', PARTS='decode')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / 'out')) == ['decode_cuda.json',
                                                     'session.log']
    (row,) = json.loads((tmp_path / 'out' / 'decode_cuda.json')
                        .read_text())['results']
    assert row['decoder'] == 'pyav' and row['prepared']
    assert row['clips_per_s_per_worker_wall'] > 0


def test_a_relative_out_dir_is_the_callers(tmp_path):
    r = subprocess.run(
        ['bash', SCRIPT, 'rel_out'], cwd=tmp_path, capture_output=True,
        text=True, timeout=600,
        env={**os.environ, 'DEVICE': 'cpu', 'PYTHON': sys.executable,
             'PARTS': 'none'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / 'rel_out' / 'session.log').is_file()


def _pretend_cuda(tmp_path):
    """An interpreter for which the script's start-up device check passes
    (the parts themselves run the real one): the DEVICE=cuda branch's
    selection and skip logic on a host without CUDA."""
    fake = tmp_path / 'python_pretend_cuda'
    fake.write_text('#!/bin/bash\ncase "$*" in *device_problem*) echo; '
                    'exit 0;; esac\nexec %s "$@"\n' % sys.executable)
    fake.chmod(0o755)
    return str(fake)


def test_gpu_parts_that_cannot_run_are_skipped_with_the_reason(tmp_path):
    import importlib.util
    cuda = _pretend_cuda(tmp_path)
    r = _run(tmp_path / 'out', DEVICE='cuda', PARTS='loop,decode',
             PYTHON=cuda)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (tmp_path / 'out' / 'session.log').read_text()
    assert '== loop: skipped: needs AUTHORS_CHECKOUT' in log
    if importlib.util.find_spec('torchcodec') is None:
        assert '== decode: skipped: PyAV and torchcodec' in log
    r = _run(tmp_path / 'out2', DEVICE='cuda', PARTS='check', PYTHON=cuda)
    log = (tmp_path / 'out2' / 'session.log').read_text()
    for part in ('bench', 'graph', 'multiview', 'augment', 'loop', 'decode'):
        assert f'== {part}: not selected' in log
    # the CUDA-graph part cannot run on the CPU: skipped, not failed
    r = _run(tmp_path / 'out3', PARTS='graph')
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert os.listdir(tmp_path / 'out3') == ['session.log']
    log = (tmp_path / 'out3' / 'session.log').read_text()
    assert '== graph: skipped: --cuda-graph captures CUDA graphs' in log


def test_cuda_without_a_device_stops_once_before_any_part(tmp_path):
    """DEVICE=cuda where torch sees no CUDA device (hidden here with
    CUDA_VISIBLE_DEVICES, so the test is the same on a GPU host): one
    message with the reason from cast_mmaction.utils.device_problem and exit
    status 2 before the first part, instead of every part failing on its
    own with the same cause; a device string torch cannot parse likewise."""
    r = _run(tmp_path / 'out', DEVICE='cuda', CUDA_VISIBLE_DEVICES='')
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    assert lines[0].startswith('DEVICE=cuda: torch sees 0 CUDA device(s) '
                               'here (torch ')
    assert lines[0].endswith('; no part was run (DEVICE=cpu runs only the '
                             "script's own test, at a tiny size)")
    log = (tmp_path / 'out' / 'session.log').read_text()
    assert lines[0] in log and '== ' not in log
    assert os.listdir(tmp_path / 'out') == ['session.log']
    r = _run(tmp_path / 'out2', DEVICE='cuda:x')
    assert r.returncode == 2
    assert r.stdout.startswith("DEVICE=cuda:x: not a device (")
    assert '== ' not in (tmp_path / 'out2' / 'session.log').read_text()


def test_out_dir_is_required():
    r = subprocess.run(['bash', SCRIPT], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert 'usage: tools/benchmark/gpu_figures.sh OUT_DIR' in r.stderr


def test_missing_openmmlab_stops_at_once_with_what_to_do(tmp_path):
    """An interpreter that cannot import MMEngine (a lent GPU host before its
    wheels are installed): exit 2 and the fix, no part run."""
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\nexit 1\n')
    fake.chmod(0o755)
    r = _run(tmp_path / 'out', PYTHON=str(fake))
    assert r.returncode == 2
    assert 'device_wheels.sh' in r.stdout
    log = (tmp_path / 'out' / 'session.log').read_text()
    assert 'MMEngine / MMAction2 do not import' in log
    assert '== check' not in log and '== bench' not in log
