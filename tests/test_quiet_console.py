"""A quiet console: the tools print no upstream warning, and the filters in
``cast_mmaction.compat`` hide exactly the two known ones (that message, that
category, from that module), nothing else."""
import os
import subprocess
import sys
import warnings

import pytest

from conftest import ROOT

from cast_mmaction import compat


def test_train_and_test_help_print_no_warning():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop('PYTHONWARNINGS', None)
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'tools', tool), '--help'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for tool in ('train.py', 'test.py')]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        assert 'usage:' in out
        assert 'Warning' not in err, err[-2000:]
        assert err.strip() == '', err[-2000:]


def _shown(message, category, module):
    """Whether ``message`` warned from ``module`` reaches the user under the
    filters compat installs, all else shown (the filters of the test run,
    e.g. conftest's, are set aside inside the block)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter('always')
        compat.silence_upstream_warnings()
        warnings.warn_explicit(message, category, module.replace('.', '/') +
                               '.py', 1, module=module, registry={})
    return len(caught) == 1


@pytest.mark.parametrize('index', range(len(compat.UPSTREAM_WARNINGS)))
def test_each_filter_hides_its_warning_and_nothing_else(index):
    upstream = {
        0: ('Fail to import ``MultiScaleDeformableAttention`` from '
            '``mmcv.ops.multi_scale_deform_attn``, You should install '
            '``mmcv`` rather than ``mmcv-lite`` if you need this module. ',
            UserWarning, 'mmcv.cnn.bricks.transformer'),
        1: ('Importing from timm.models.layers is deprecated, please import '
            'via timm.layers', FutureWarning, 'timm.models.layers'),
    }
    message, category, module = upstream[index]
    assert not _shown(message, category, module)
    # another message of that module, the same message from another module
    # or with another category: all shown
    assert _shown('something else went wrong', category, module)
    assert _shown(message, category, 'cast_mmaction.models')
    assert _shown(message, RuntimeWarning, module)
