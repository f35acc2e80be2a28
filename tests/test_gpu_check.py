"""tools/gpu_check.py on the CPU, up to the point where CUDA is needed
(issue 13, part 4); the GPU run itself is recorded in
docs/training_parity.md."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


def _tool(*args, timeout=900):
    return subprocess.run([sys.executable, 'tools/gpu_check.py', *args],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_cpu_only_machine_gets_a_clear_message():
    r = _tool()
    assert r.returncode == 2
    assert 'no CUDA device' in r.stderr and '--device cpu --tiny' in r.stderr
    r = _tool('--device', 'cpu')  # the ViT-B checks are for a GPU
    assert r.returncode == 2 and '--tiny' in r.stderr


def test_tiny_cpu_run_builds_and_runs_every_check():
    r = _tool('--device', 'cpu', '--tiny', '--steps', '2', '--batch', '2')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(r.stdout[r.stdout.index('{'):])
    assert rep['ok'] is True and rep['tiny'] is True
    c = rep['checks']
    assert set(c) == {'amp_train', 'precision', 'sdpa', 'cuda_graph', 'fsdp',
                      'deepspeed'}
    amp = c['amp_train']
    assert amp['ok'] and len(amp['losses']) == 2 and amp['all_finite']
    assert amp['accumulative_counts'] == 4  # the recipe's update_freq
    bf16 = c['precision']['bfloat16']
    assert 0 < bf16['logits_rel'] < 0.05 and 0 < bf16['grad_rel_global'] < 0.2
    assert sum(c['sdpa']['kernels'].values()) > 0
    graph = c['cuda_graph']  # on the CPU: the uncaptured split step
    assert graph['ok'] and graph['bit_identical'], graph
    assert graph['graph']['replayed'] == 0 and graph['graph']['eager'] == 2
    assert c['fsdp']['ok'] is None and c['fsdp']['built'] == 'FSDP2Strategy'
    assert c['deepspeed']['ok'] is None


def test_unknown_check_is_named():
    r = _tool('--device', 'cpu', '--tiny', '--checks', 'amp_train,bogus')
    assert r.returncode == 2 and "['bogus']" in r.stderr


def test_bad_device_and_out_are_named_before_any_check(tmp_path):
    """--device that is no device, and an --out whose folder cannot be
    created, stop before the first check with a line naming the option
    (they were a RuntimeError traceback, and a NotADirectoryError traceback
    after the first check had run: minutes on a borrowed GPU); an --out in
    a folder that does not exist yet is created."""
    r = _tool('--device', 'gpu', timeout=120)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert r.stderr.startswith('gpu_check: --device gpu: not a device')
    (tmp_path / 'a_file').write_text('x')
    out = str(tmp_path / 'a_file' / 'gpu.json')
    r = _tool('--device', 'cpu', '--tiny', '--checks', 'sdpa', '--out', out,
              timeout=120)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.startswith(f'gpu_check: --out {out}: its folder')
    assert '"sdpa"' not in r.stdout  # stopped before the check
    out = tmp_path / 'new' / 'gpu.json'
    r = _tool('--device', 'cpu', '--tiny', '--checks', 'sdpa', '--out',
              str(out), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())['checks']['sdpa']


def test_sdpa_kernel_detection_sees_the_math_kernel():
    """The check that fails a run on the math kernel can see it."""
    sys.path.insert(0, ROOT)
    from tools.gpu_check import sdpa_kernels
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q = torch.randn(1, 2, 8, 16)

    def attend():
        torch.nn.functional.scaled_dot_product_attention(q, q, q)

    with sdpa_kernel([SDPBackend.MATH]):
        assert sdpa_kernels(attend).get('math', 0) >= 1
    assert 'math' not in sdpa_kernels(attend)  # the CPU default: flash


def test_out_holds_the_finished_checks_when_a_run_is_stopped(tmp_path,
                                                              monkeypatch):
    """--out is written after every check: a run stopped by a time limit
    (a borrowed GPU's) still leaves what it finished, marked incomplete."""
    sys.path.insert(0, ROOT)
    import tools.gpu_check as gc

    def stopped(args, device):
        raise KeyboardInterrupt  # what a time limit's signal leaves

    monkeypatch.setitem(gc.CHECKS, 'first', lambda a, d: dict(ok=True, x=1))
    monkeypatch.setitem(gc.CHECKS, 'second', stopped)
    out = tmp_path / 'g.json'
    with pytest.raises(KeyboardInterrupt):
        gc.main(['--device', 'cpu', '--tiny', '--checks', 'first,second',
                 '--out', str(out)])
    rep = json.loads(out.read_text())
    assert rep['complete'] is False and rep['checks'] == {
        'first': {'ok': True, 'x': 1}}
    assert not (tmp_path / 'g.json.part').exists()
    assert gc.main(['--device', 'cpu', '--tiny', '--checks', 'first',
                    '--out', str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep['complete'] is True and rep['ok'] is True
