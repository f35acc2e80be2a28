import os
import sys
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')

import cast_mmaction  # noqa: E402,F401  (applies compat, registers modules)

FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
# The large reference dumps (audio, MSCA) stay in the shared folder beside
# the checkout; tests that need them skip when it is absent.
SHARED_FIXTURES = os.path.abspath(os.path.join(ROOT, '..', 'shared', 'fixtures'))


def shared_fixture(name):
    path = os.path.join(SHARED_FIXTURES, name)
    if not os.path.isdir(path):
        pytest.skip(f'reference dump {name} not found at {path} (the shared '
                    f'fixtures folder beside the checkout is absent)')
    return path


@pytest.fixture(autouse=True)
def _mmaction_scope():
    from cast_mmaction.utils import ensure_scope
    ensure_scope()
    yield
