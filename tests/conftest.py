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


# The head of the tiny CAST training configs of the reliability tests (a
# str.format template: base, data; drop_path is filled by the test module):
# the demo config shrunk to one 32-wide layer on 4 frames of 32 px.
TINY_CONFIG_HEAD = """
_base_ = [{base!r}]
data = {data!r}
model = dict(
    backbone=dict(
        num_frames=4, img_size=32, drop_path_rate={drop_path},
        experts=dict(
            clip=dict(embed_dim=32, depth=1, num_heads=2),
            vmae=dict(embed_dim=32, depth=1, num_heads=2))),
    cls_head=dict(in_channels=32))
pipe_train = [
    dict(type='DecordInit'),
    dict(type='SegmentSample', num_segments=4),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]
pipe_test = [
    dict(type='DecordInit'),
    dict(type='SegmentSample', num_segments=4, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]
"""
