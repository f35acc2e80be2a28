"""Training-step time of CAST ViT-B SSv2 (batch 1, fp32, random weights, drop
path 0.3 as configs/cast_ssv2.py) with the residual updates of
``DropPath.add`` (one ``addcmul``: ``x + drop(scale * y)``) and with the
earlier form, alternated step by step in one process: ``x + drop(scale * y)``
with ``drop`` dividing by the keep probability (``x / keep`` when every
sample is kept, after a host check; else ``x * mask / keep``). Both forms run
the same random draws in a round (the seed is set before each step). The
speed-ups are ``SPEEDUPS`` (default the C++ attention kernel and block
cache over the ``'cpu'`` preset, the % of peak runs' setting).

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_drop_path.py [ROUNDS]

The order of the two forms swaps every round. Prints each round's two step
times (s), the medians and the per-round ratios.
"""
import json
import os
import statistics
import sys
import time

import torch

from cast_mmaction.models import layers
from _ssv2_step import ssv2_step

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
spec = os.environ.get('SPEEDUPS', json.dumps(dict(
    preset='cpu', cpu_attention=True, cpu_block_cache=True)))
ssv2 = ssv2_step(spec)
model, step = ssv2.model, ssv2.train
NEW = layers.DropPath.add, layers.DropPath.forward


def earlier_forward(self, x):
    if self.p == 0.0 or not self.training:
        return x
    keep = 1.0 - self.p
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1))
    mask.bernoulli_(keep)
    if x.device.type == 'cpu' and bool(mask.all()):
        return x / keep
    return x * mask / keep


def earlier_add(self, x, y, scale=1.0):
    return x + self(scale * y if scale != 1.0 else y)


def use(form):
    layers.DropPath.add, layers.DropPath.forward = NEW if form == 'add' \
        else (earlier_add, earlier_forward)


model.train()
for form in ('add', 'earlier'):  # warm-up, one step each
    use(form)
    step()
times = {'add': [], 'earlier': []}
for r in range(rounds):
    for form in (('add', 'earlier') if r % 2 == 0 else ('earlier', 'add')):
        use(form)
        torch.manual_seed(r)  # the same drop-path draws for both forms
        t0 = time.perf_counter()
        step()
        times[form].append(time.perf_counter() - t0)
    print(f'round {r}: add {times["add"][-1]:.3f} s, earlier '
          f'{times["earlier"][-1]:.3f} s', flush=True)
med = {k: statistics.median(v) for k, v in times.items()}
print(f'median: add {med["add"]:.3f} s, earlier {med["earlier"]:.3f} s, '
      f'ratio {med["add"] / med["earlier"]:.4f}')
print('per round add / earlier: ' + ' '.join(
    f'{a / b:.3f}' for a, b in zip(times['add'], times['earlier'])))
