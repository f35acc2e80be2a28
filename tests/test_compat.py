"""The compat work-around for mmaction2 1.2.0's VindLU imports acts only
where the defect exists, and ``import mmaction.models`` works in each case."""
import importlib.util
import subprocess
import sys

import pytest

from conftest import ROOT

NAMES = ('apply_chunking_to_forward', 'find_pruneable_heads_and_indices',
         'prune_linear_layer')

# argv[1]: where the three helpers are removed from before cast_mmaction is
# imported ('' : nowhere, 'modeling_utils': as transformers >= 4.56,
# 'both': a transformers that has them nowhere)
_PROBE = r'''
import sys
from transformers import modeling_utils, pytorch_utils
names = %r
where = sys.argv[1]
for n in names:
    if where in ('modeling_utils', 'both') and hasattr(modeling_utils, n):
        delattr(modeling_utils, n)
    if where == 'both' and hasattr(pytorch_utils, n):
        delattr(pytorch_utils, n)
import cast_mmaction  # noqa: F401  (applies compat)
import mmaction.models  # noqa: F401
from mmaction.registry import MODELS
from mmaction.utils import dependency
print(dependency.WITH_MULTIMODAL,
      'mmaction.models.multimodal.vindlu' in sys.modules,
      MODELS.get('CASTBackbone') is not None)
''' % (NAMES, )


def _probe(where):
    out = subprocess.run([sys.executable, '-c', _PROBE, where], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-3:]


@pytest.mark.skipif(importlib.util.find_spec('transformers') is None,
                    reason='transformers is not installed: mmaction2 never '
                    'imports VindLU then, there is nothing to work around')
def test_vindlu_imports_are_restored_or_vindlu_is_left_out():
    # as transformers >= 4.56: the helpers moved to pytorch_utils; they are
    # given back where VindLU looks, so VindLU imports and works
    assert _probe('modeling_utils') == ['True', 'True', 'True']
    # a transformers without them anywhere: VindLU is left out (MMAction2's
    # placeholders), every other model imports
    assert _probe('both') == ['False', 'False', 'True']
    # nothing missing: MMAction2's own behaviour
    assert _probe('') == ['True', 'True', 'True']
