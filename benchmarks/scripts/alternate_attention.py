"""CAST ViT-B SSv2 (fp32, random weights, the 'cpu' preset) with the
speed-up onednn_attention on and off, alternated step by step in one
process: inference per clip and training step (forward, backward and the
config's fused AdamW), wall and process CPU time, with the load average.

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_attention.py \\
        [INFER_ROUNDS] [TRAIN_ROUNDS]

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
from cast_mmaction.models import speedups
from cast_mmaction.models.speedups import _OneDNNAttentionMixin
from cast_mmaction.utils import build_model

sys.path.insert(0, 'tools')
from benchmark import build_optimizer_ours  # noqa: E402

from _old_attention import old_onednn_sdpa  # noqa: E402

infer_rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
train_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
cfg = Config.fromfile('configs/cast_ssv2.py')
m = cfg.model.to_dict()
m['backbone']['speedups'] = dict(onednn_linear=True, onednn_attention=True,
                                 frozen_mlp=True)
for e in m['backbone']['experts'].values():
    e['pretrained'] = None
model = build_model(m)
opt = build_optimizer_ours(cfg, model)
x = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0))
attn = [mod for mod in model.modules()
        if isinstance(mod, _OneDNNAttentionMixin)]
from mmaction.structures import ActionDataSample  # noqa: E402


settings = {'fused_kernel': (False, speedups.onednn_sdpa),
            'onednn_attention': (True, speedups.onednn_sdpa)}
old = old_onednn_sdpa()
if old:
    settings[f'onednn_attention ({old[0]})'] = (True, old[1])


def use(name):
    on, fn = settings[name]
    speedups.onednn_sdpa = fn
    for mod in attn:
        mod.speedup_attention = on


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
