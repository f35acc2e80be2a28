"""Our CAST equals the authors' on the reference dumps (tools/check_parity.py)."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from cast_mmaction.parity import check_dump
from conftest import FIXTURES, ROOT

CAST_DUMPS = ['cast_single', 'cast_composition']


@pytest.mark.parametrize('name', CAST_DUMPS)
def test_cast_dumps_match(name):
    rows = check_dump(os.path.join(FIXTURES, name))
    names = {r[0] for r in rows}
    assert {'spatial_feature', 'temporal_feature'} <= names
    assert names & {'cls_score', 'verb', 'noun'}
    for out, diff, tol, ok in rows:
        assert ok, f'{name}/{out}: max|diff| {diff:.3e} > {tol:.3e}'


def _tool(*args):
    return subprocess.run([sys.executable, 'tools/check_parity.py', *args],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_check_parity_tool_passes_and_fails(tmp_path):
    dumps = [os.path.join(FIXTURES, n) for n in CAST_DUMPS]
    r = _tool(*dumps)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '2 of 2 dumps match' in r.stdout
    # a perturbed expectation must make the tool fail
    bad = tmp_path / 'cast_single_bad'
    shutil.copytree(dumps[0], bad)
    exp = torch.load(bad / 'expected.pt')
    exp['cls_score'] = exp['cls_score'] + 1e-3
    torch.save(exp, bad / 'expected.pt')
    r = _tool(str(bad))
    assert r.returncode == 1
    assert 'FAIL' in r.stdout
