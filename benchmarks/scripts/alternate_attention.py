"""CAST ViT-B SSv2 (fp32, random weights) with its attention on torch's
fused kernel, on oneDNN matmuls (the speed-up onednn_attention) and, on a
CPU with AVX-512, in the C++ kernel (cpu_attention: the experts' and B-CAST's
attention), alternated step by step in one process: inference per clip and
training step (forward, backward and the config's fused AdamW), wall and
process CPU time, with the load average. The linears stay as the 'cpu'
preset decides for this CPU (oneDNN on AMD with AVX-512, MKL elsewhere).

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_attention.py \\
        [INFER_ROUNDS] [TRAIN_ROUNDS]

``KERNELS=fused_kernel,cpu_attention`` (a comma list of the settings'
names) alternates only those.

With ``OLD_ATTENTION=FILE`` (an earlier models/onednn_attention.py, e.g.
``git show COMMIT:cast_mmaction/models/onednn_attention.py > FILE``) that
version's oneDNN attention is a third setting of the alternation, its
operators registered under another namespace.
"""
import os
import sys
import time

import torch
from mmengine.config import Config

import cast_mmaction  # noqa: F401
from cast_mmaction.models import cpu_attention, speedups
from cast_mmaction.models.fusion.bottleneck_cross_attention import (
    WindowCrossAttention)
from cast_mmaction.models.speedups import (CPUKernelWindowCrossAttention,
                                           _OneDNNAttentionMixin)
from cast_mmaction.utils import build_model

sys.path.insert(0, 'tools')
from benchmark import build_optimizer_ours  # noqa: E402

from _old_attention import old_onednn_sdpa  # noqa: E402

infer_rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
train_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
cfg = Config.fromfile('configs/cast_ssv2.py')
m = cfg.model.to_dict()
m['backbone']['speedups'] = dict(preset='cpu', onednn_attention=True)
for e in m['backbone']['experts'].values():
    e['pretrained'] = None
model = build_model(m)
opt = build_optimizer_ours(cfg, model)
x = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0))
attn = [mod for mod in model.modules()
        if isinstance(mod, _OneDNNAttentionMixin)]
links = [mod for mod in model.modules()
         if isinstance(mod, WindowCrossAttention)]
from mmaction.structures import ActionDataSample  # noqa: E402


# name: (kernel of heads_attention, the oneDNN attention's function)
settings = {'fused_kernel': (None, speedups.onednn_sdpa),
            'onednn_attention': ('onednn', speedups.onednn_sdpa)}
if cpu_attention.unavailable() is None:
    settings['cpu_attention'] = ('cpu', speedups.onednn_sdpa)
old = old_onednn_sdpa()
if old:
    settings[f'onednn_attention ({old[0]})'] = ('onednn', old[1])
if os.environ.get('KERNELS'):
    settings = {k: settings[k] for k in os.environ['KERNELS'].split(',')}


def use(name):
    kernel, fn = settings[name]
    speedups.onednn_sdpa = fn
    for mod in attn:
        mod.speedup_attention = kernel
    link = (CPUKernelWindowCrossAttention if kernel == 'cpu' else
            WindowCrossAttention)
    for mod in links:
        mod.__class__ = link


def infer():
    with torch.no_grad():
        model.cls_head(model.backbone(x))


def train():
    losses = model(x[:, None], [ActionDataSample().set_gt_label(1)],
                   mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    opt.step()
    model.zero_grad(set_to_none=True)


print(f'{torch.get_num_threads()} threads', flush=True)
for phase, fn, rounds in (('infer', infer, infer_rounds),
                          ('train', train, train_rounds)):
    model.train(phase == 'train')
    for name in settings:  # warm-up
        use(name)
        fn()
    for r in range(rounds):
        for name in settings:
            use(name)
            t, c = time.perf_counter(), time.process_time()
            fn()
            print(r, phase, name,
                  'wall %.3f cpu %.3f' % (time.perf_counter() - t,
                                          time.process_time() - c),
                  'load %.2f' % os.getloadavg()[0], flush=True)
