"""Activation memory a training forward of the CAST backbone keeps for backward:
the growth of the resident set over one forward (graph alive), after a warm-up
step. Run with glibc's mmap threshold low, so that freed tensors leave the
resident set and it follows the live tensors:

    MALLOC_MMAP_THRESHOLD_=65536 PYTHONPATH=$PWD python \\
        benchmarks/scripts/kept_after_forward.py POLICY [DEPTH]

POLICY: none, fusion, fusion_qkv (or another checkpoint_policy name), or
F<links><adapters><qkv> with 0/1 digits for a FusionPolicy; DEPTH: layers
(default 2; 12 for ViT-B). Batch 1, 16 x 224 x 224, one torch thread.
"""
import gc
import os
import sys

import torch

from cast_mmaction.models.checkpointing import FusionPolicy
from cast_mmaction.models.presets import cast_backbone_cfg
from cast_mmaction.utils import build_model

torch.set_num_threads(1)


def rss_mib():
    pages = int(open('/proc/self/statm').read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


pol = sys.argv[1]
depth = int(sys.argv[2]) if len(sys.argv) > 2 else 2
if pol.startswith('F'):
    links, adapters, qkv = (c == '1' for c in pol[1:])
    policy = FusionPolicy(links=links, adapters=adapters, qkv=qkv)
else:
    policy = None if pol == 'none' else pol
cfg = cast_backbone_cfg(depth=depth)
if policy in ('fusion', 'fusion_qkv') or isinstance(policy, FusionPolicy):
    # the fusion regions are a CPU speed-up (models/speedups.py)
    cfg.update(speedups=dict(preset='cpu', checkpoint=policy), drop_path_rate=0.1)
else:
    cfg.update(speedups='cpu', checkpoint_policy=policy, drop_path_rate=0.1)
for e in cfg['experts'].values():
    e['pretrained'] = None
bb = build_model(cfg).train()
x = torch.randn(1, 3, 16, 224, 224)
sum(o.sum() for o in bb(x)).backward()  # warm-up
bb.zero_grad(set_to_none=True)
gc.collect()
r0 = rss_mib()
out = bb(x)
r1 = rss_mib()
print(pol, 'depth', depth, 'kept MiB %.1f' % (r1 - r0),
      'per layer %.1f' % ((r1 - r0) / depth), flush=True)
