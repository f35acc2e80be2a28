"""Training-step and inference time of CAST ViT-B SSv2 (batch 1, fp32, random
weights) with the frozen MLPs' first bias and activation in the C++ pass
(``cpu_mlp``: ``mm``, then bias + activation + derivative in one pass, the
derivative multiplied into the gradient in backward) and without it
(``addmm``, the activation, ``gelu_backward`` / ``silu_backward`` on the
kept pre-activation), alternated step by step in one process. The other
speed-ups are ``SPEEDUPS`` (default the ``'cpu'`` preset with the C++
attention kernel and block cache, the % of peak runs' setting).

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_cpu_mlp.py [ROUNDS]

The order swaps every round; the seed is set before each step. Prints each
round's times (s), the medians and the median per-round ratio, training
then inference, and the backbone outputs' largest difference.
"""
import json
import os
import sys

import torch

from cast_mmaction.models import speedups
from _alternation import steps_alternated
from _ssv2_step import ssv2_step

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
spec = json.loads(os.environ.get('SPEEDUPS', json.dumps(dict(
    preset='cpu', cpu_attention=True, cpu_block_cache=True))))
spec['cpu_mlp'] = True
ssv2 = ssv2_step(json.dumps(spec))
mlps = [m for m in ssv2.model.modules()
        if isinstance(m, (speedups.FrozenCLIPMlp, speedups.FrozenVideoMAEMlp))]
assert mlps and all(m.speedup_cpu_mlp for m in mlps)
print(f'{len(mlps)} frozen MLPs; speedups {spec}; torch threads '
      f'{torch.get_num_threads()}', flush=True)


def use(side):
    for m in mlps:
        m.speedup_cpu_mlp = side == 'pass'



ssv2.model.eval()
outs = {}
for side in ('pass', 'addmm'):
    use(side)
    with torch.no_grad():  # the backbone's features (the head's scores
        # are zero with the recipe's zero-initialised head)
        out = ssv2.model.backbone(ssv2.x)
    outs[side] = out if torch.is_tensor(out) else out[0]
a, b = outs['pass'], outs['addmm']
print(f'backbone output, largest |pass - addmm|: '
      f'{(a - b).abs().max().item():.3g} (of {b.abs().max().item():.3g})')
for phase, fn in (('training', ssv2.train), ('inference', ssv2.infer)):
    ssv2.model.train(phase == 'training')
    steps_alternated(phase, fn, ('pass', 'addmm'), use, rounds)
