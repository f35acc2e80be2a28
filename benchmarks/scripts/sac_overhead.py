"""What selective checkpointing's dispatch mode costs per operator it
intercepts: one checkpointed region of 100 small operators (50 x (mul,
add) on a 64 x 64 tensor), forward + backward (which recomputes it), with
a ``SavePolicy`` (``models/checkpointing.py``; the mode intercepts each
operator of the forward and of the recompute) and without one (a plain
non-reentrant checkpoint). Three alternations of 20 regions each; the
difference of the fastest, per intercepted operator.

    PYTHONPATH=$PWD python benchmarks/scripts/sac_overhead.py
"""
import time

import torch

from cast_mmaction.models.checkpointing import SavePolicy, checkpoint

x0 = torch.randn(64, 64, requires_grad=True)
OPS = 100  # per forward of the region


def region(x):
    for _ in range(OPS // 2):
        x = x * 1.0001 + 0.001
    return x


policy = SavePolicy(attention=True, widen=(), narrow=False)


def run(p):
    checkpoint(region, x0, policy=p).sum().backward()


for p in (None, policy):  # warm-up
    run(p)
times = {'plain': [], 'policy': []}
for _ in range(3):
    for name, p in (('plain', None), ('policy', policy)):
        t = time.perf_counter()
        for _ in range(20):
            run(p)
        times[name].append((time.perf_counter() - t) / 20)
print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
for name, v in times.items():
    print(f'{name}: ms per region (forward + backward with its recompute) '
          + ', '.join(f'{t * 1e3:.2f}' for t in v))
extra = min(times['policy']) - min(times['plain'])
print(f'the policy\'s dispatch mode: {extra / (2 * OPS) * 1e6:.1f} us per '
      f'intercepted operator (forward and recompute)')
