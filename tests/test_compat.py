"""The compat work-arounds act only where their upstream defect exists."""
import subprocess
import sys

from conftest import ROOT

_PROBE = r'''
import importlib.metadata as md, sys
real = md.version
def version(name):
    if name == 'transformers':
        return sys.argv[1]
    return real(name)
md.version = version
import cast_mmaction  # noqa: F401  (applies compat)
import mmaction.models  # noqa: F401
from mmaction.utils import dependency
print(dependency.WITH_MULTIMODAL,
      'mmaction.models.multimodal.vindlu' in sys.modules)
'''


def _probe(transformers_version):
    out = subprocess.run([sys.executable, '-c', _PROBE, transformers_version],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()[-2:]


def test_vindlu_is_skipped_only_with_transformers_that_lack_its_imports():
    import importlib.util
    if importlib.util.find_spec('transformers') is None:
        import pytest
        pytest.skip('transformers is not installed: mmaction2 never imports '
                    'VindLU then, there is nothing to work around')
    # transformers >= 4.56 no longer re-exports apply_chunking_to_forward
    # from modeling_utils: VindLU must not be imported (it would fail)
    assert _probe('4.56.0') == ['False', 'False']
    assert _probe('5.24.0') == ['False', 'False']
    # an older transformers keeps MMAction2's own behaviour
    assert _probe('4.55.4') == ['True', 'True']
