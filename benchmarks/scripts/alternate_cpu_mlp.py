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
import statistics
import sys
import time

import torch

from cast_mmaction.models import speedups
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


def timed(fn):
    torch.manual_seed(0)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


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
    for side in ('pass', 'addmm'):  # warm-up, one each
        use(side)
        fn()
    times = {'pass': [], 'addmm': []}
    for r in range(rounds):
        order = ('pass', 'addmm') if r % 2 == 0 else ('addmm', 'pass')
        for side in order:
            use(side)
            times[side].append(timed(fn))
        print(f'{phase} round {r}: pass {times["pass"][-1]:.3f} s, addmm '
              f'{times["addmm"][-1]:.3f} s', flush=True)
    ratios = [p / q for p, q in zip(times['pass'], times['addmm'])]
    print(f'{phase}: median pass {statistics.median(times["pass"]):.3f} s, '
          f'addmm {statistics.median(times["addmm"]):.3f} s; per-round '
          f'ratio median {statistics.median(ratios):.4f} '
          f'[{min(ratios):.4f}-{max(ratios):.4f}]', flush=True)
