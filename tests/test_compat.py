"""The compat work-arounds for what the stack imports on every import: VindLU
(mmaction2 1.2.0; with it transformers' models, torch._dynamo, torchvision)
is not imported by ``import mmaction.models``; building a VindLU model
imports it then, with transformers' helpers given back where VindLU looks
for them. transformers itself (mmengine 0.10.7's Adafactor) is imported when
an Adafactor is built."""
import importlib.util
import subprocess
import sys

import pytest

from conftest import ROOT

NAMES = ('apply_chunking_to_forward', 'find_pruneable_heads_and_indices',
         'prune_linear_layer')

# argv[1]: where the three helpers are removed from before cast_mmaction is
# imported ('' : nowhere, 'modeling_utils': as transformers >= 4.56,
# 'both': a transformers that has them nowhere); argv[2]: a folder for a tiny
# BEiT config
_PROBE = r'''
import json, sys
from transformers import modeling_utils, pytorch_utils
names = %r
where, folder = sys.argv[1:3]
for n in names:
    if where in ('modeling_utils', 'both') and hasattr(modeling_utils, n):
        delattr(modeling_utils, n)
    if where == 'both' and hasattr(pytorch_utils, n):
        delattr(pytorch_utils, n)
import cast_mmaction  # noqa: F401  (applies compat)
import mmaction.models  # noqa: F401
from mmaction.registry import MODELS, TOKENIZER
heavy = [m for m in ('mmaction.models.multimodal.vindlu',
                     'transformers.models.beit.modeling_beit',
                     'transformers.models.bert.modeling_bert')
         if m in sys.modules]
print('AFTER_IMPORT', heavy or 'none', MODELS.get('CASTBackbone') is not None,
      MODELS.get('VindLUVQA').__name__, TOKENIZER.get('VindLUTokenizer').__name__)
json.dump(dict(model_type='beit', hidden_size=32, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=16), open(folder + '/config.json', 'w'))
if len(sys.argv) > 3:  # user code importing VindLU itself
    import mmaction.models.multimodal.vindlu  # noqa: F401
try:
    model = MODELS.build(dict(type='BeitModel3D', config=folder,
                              tem_config=dict(num_frames=2)))
except ImportError as e:
    print('BUILD ImportError', str(e).replace(' ', '_'))
    try:  # the same clear error again, not a registry KeyError
        MODELS.build(dict(type='BeitModel3D', config=folder,
                          tem_config=dict(num_frames=2)))
    except ImportError:
        print('AGAIN ImportError')
else:
    real = MODELS.get('BeitModel3D')
    print('BUILD', type(model).__name__, type(model) is real,
          type(model).__module__, all(
              getattr(modeling_utils, n) is getattr(pytorch_utils, n)
              for n in names))
''' % (NAMES, )


def _probe(where, tmp_path, *extra):
    out = subprocess.run([sys.executable, '-c', _PROBE, where, str(tmp_path),
                          *extra],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return {line.split()[0]: line.split()[1:]
            for line in out.stdout.splitlines() if line and line.split()[0]
            in ('AFTER_IMPORT', 'BUILD', 'AGAIN')}


@pytest.mark.skipif(importlib.util.find_spec('transformers') is None,
                    reason='transformers is not installed: mmaction2 never '
                    'imports VindLU then, there is nothing to work around')
@pytest.mark.parametrize('where', ['', 'modeling_utils', 'both'])
def test_vindlu_is_imported_when_built(where, tmp_path):
    got = _probe(where, tmp_path)
    # import mmaction.models leaves VindLU and the transformers models it
    # uses out; every name VindLU registers has a lazy entry; CAST's models
    # are registered
    assert got['AFTER_IMPORT'] == ['none', 'True', 'VindLUVQA',
                                   'VindLUTokenizer']
    if where == 'both':
        # a transformers with the helpers nowhere: building a VindLU model
        # names them, and does so again on a second try
        assert got['BUILD'][0] == 'ImportError'
        assert 'apply_chunking_to_forward' in got['BUILD'][1]
        assert got['AGAIN'] == ['ImportError']
    else:
        # building one imports VindLU: the real class, registered in place of
        # the lazy entry; the helpers are where VindLU looks for them
        assert got['BUILD'] == ['BeitModel3D', 'True',
                                'mmaction.models.multimodal.vindlu.beit3d',
                                'True']


@pytest.mark.skipif(importlib.util.find_spec('transformers') is None,
                    reason='transformers is not installed: mmaction2 never '
                    'imports VindLU then, there is nothing to work around')
def test_vindlu_imported_by_user_code(tmp_path):
    # `import mmaction.models.multimodal.vindlu` replaces the lazy entries
    # with the real classes (no "already registered" error), helpers given
    # back where VindLU looks (as transformers >= 4.56)
    got = _probe('modeling_utils', tmp_path, 'import')
    assert got['BUILD'] == ['BeitModel3D', 'True',
                            'mmaction.models.multimodal.vindlu.beit3d', 'True']


@pytest.mark.skipif(importlib.util.find_spec('transformers') is None,
                    reason='transformers is not installed: mmaction2 never '
                    'imports VindLU then, there is nothing to work around')
def test_plugin_import_leaves_out_what_only_vindlu_needs():
    # what VindLU's import costs every process (docs/install.md): transformers'
    # models pull in torch._dynamo, torch._inductor and torchvision
    # and mmengine.optim's import of transformers, for its Adafactor
    code = ('import sys, cast_mmaction, mmaction.models; print([m for m in '
            '("torch._dynamo", "torch._inductor", "torchvision", '
            '"mmaction.models.multimodal.vindlu", "transformers") '
            'if m in sys.modules])')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split('\n')[-2] == '[]'


# mmengine <= 0.10.7 imports transformers in mmengine.optim only to register
# its Adafactor; compat registers a lazy entry instead (docs/install.md)
_ADAFACTOR = r'''
import sys
if sys.argv[1] == 'optim-first':  # mmengine.optim imported before the plugin
    import mmengine.optim  # noqa: F401
import cast_mmaction, mmaction.models  # noqa: E401,F401
loaded = 'transformers' in sys.modules
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.optim.optimizer.builder import TRANSFORMERS_OPTIMIZERS
from mmengine.registry import OPTIMIZERS
model = torch.nn.Linear(3, 2)
ow = build_optim_wrapper(model, dict(optimizer=dict(
    type='Adafactor', lr=1e-3, relative_step=False, scale_parameter=False,
    weight_decay=0.01), paramwise_cfg=dict(norm_decay_mult=0.)))
from transformers import Adafactor
opt = ow.optimizer
ps = [p for g in opt.param_groups for p in g['params']]
print('RESULT', loaded, TRANSFORMERS_OPTIMIZERS.count('Adafactor'),
      OPTIMIZERS.get('Adafactor') is Adafactor, type(opt) is Adafactor,
      opt.defaults['lr'], len(ps) == 2 and all(
          any(p is q for q in ps) for p in model.parameters()),
      OPTIMIZERS.get('TorchAdafactor') is getattr(torch.optim, 'Adafactor',
                                                   None))
'''


@pytest.mark.skipif(importlib.util.find_spec('transformers') is None,
                    reason='transformers is not installed: mmengine never '
                    'imports it then, there is nothing to defer')
@pytest.mark.parametrize('order', ['plugin-first', 'optim-first'])
def test_transformers_imported_only_for_adafactor(order):
    out = subprocess.run([sys.executable, '-c', _ADAFACTOR, order], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = [line.split()[1:] for line in out.stdout.splitlines()
           if line.startswith('RESULT')][0]
    first = order == 'plugin-first'
    # the plugin first: transformers not imported, Adafactor a lazy entry
    # (listed once, as mmengine lists it); mmengine.optim first: mmengine's
    # own registration, untouched. Either way a config's Adafactor builds
    # transformers' optimizer over the model's parameters, with its lr
    assert got == [str(not first), '1', str(not first), 'True', '0.001',
                   'True', 'True']


_END_GLOO = r'''
import os, sys
import torch.distributed as dist
from cast_mmaction import compat
print(compat.end_gloo_process_group())  # no group yet: nothing to end
dist.init_process_group('gloo', init_method='file://' + sys.argv[1],
                        rank=0, world_size=1)
t = __import__('torch').ones(3)
dist.all_reduce(t)  # gloo work done, as at the end of a run
print(compat.end_gloo_process_group(), dist.is_initialized())
print(compat.end_gloo_process_group())
'''


def test_end_gloo_process_group_destroys_the_default_group(tmp_path):
    """The end of tools/train.py and tools/test.py (a torch defect: a gloo
    rank that exits with its group alive can abort at exit): the default
    gloo group is destroyed once, and a process without one is left
    alone."""
    r = subprocess.run([sys.executable, '-c', _END_GLOO,
                        str(tmp_path / 'store')], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ['False', 'True', 'False', 'False']


def test_the_tools_end_the_gloo_group_after_a_run():
    """tools/train.py after ``runner.train()`` and tools/test.py after its
    metrics are written (rank 0 only writes them: the group must still be
    there)."""
    for tool, after in (('train.py', 'runner.train()'),
                        ('test.py', "print(f'metrics written to {out}')")):
        src = open(f'{ROOT}/tools/{tool}').read()
        assert src.count('compat.end_gloo_process_group()') == 1, tool
        assert src.index(after) < src.index(
            'compat.end_gloo_process_group()'), tool
