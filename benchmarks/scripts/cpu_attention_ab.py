"""The C++ attention kernel (cast_mmaction/csrc/cpu_attention.cpp) against
another version of its source, alternated in one process: forward and
backward alone (the extension's functions, no autograd), median ms and
GFLOP/s (the backward's five products counted, its recompute included),
after checking that both give the same output, log-sum-exp and gradients
(and printing whether they are bit-identical).

    git show COMMIT:cast_mmaction/csrc/cpu_attention.cpp > /tmp/old.cpp
    PYTHONPATH=$PWD python benchmarks/scripts/cpu_attention_ab.py \\
        /tmp/old.cpp [ROUNDS] [B H N D] [packed]

q, k and v are the heads of one packed (B, N, 3 H D) projection, as the
experts give them; ``packed``: the backward writes their gradients as that
projection's (the experts' path; both sources must have it), else as three
tensors. Needs an AVX-512 CPU, a C++ compiler and ninja.
"""
import sys
import time

import torch

from cast_mmaction.models import cpu_attention
from _kernel_build import build_kernel, packed_heads

args = [a for a in sys.argv[1:] if a != 'packed']
packed = len(args) < len(sys.argv) - 1
old_src = args[0]
rounds = int(args[1]) if len(args) > 1 else 7
b, h, n, d = (int(v) for v in args[2:6]) if len(args) > 5 else (
    1, 12, 1568, 64)
new = cpu_attention.extension()
old = build_kernel(open(old_src).read(), 'cpu_attention_old')
g = torch.Generator().manual_seed(0)
q, k, v, dout = packed_heads(b, h, n, d, g)
scale = d ** -0.5
out, lse = new.forward(q, k, v, scale, True)
out_o, lse_o = old.forward(q, k, v, scale, True)
grads = new.backward(dout, q, k, v, out, lse, scale, *[True] * packed)
grads_o = old.backward(dout, q, k, v, out, lse, scale, *[True] * packed)
names = ('out', 'lse') + (('dqkv', ) if packed else ('dq', 'dk', 'dv'))
for name, x, y in zip(names,
                      (out, lse, *grads), (out_o, lse_o, *grads_o)):
    torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    print(f'{name}: bit-identical {torch.equal(x, y)}, max |diff| '
          f'{(x - y).abs().max().item():.3g}')
times = {key: [] for key in ('new forward', 'old forward', 'new backward',
                             'old backward')}
for _ in range(rounds):
    for side, mod in (('new', new), ('old', old)):
        t0 = time.perf_counter()
        mod.forward(q, k, v, scale, True)
        times[f'{side} forward'].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mod.backward(dout, q, k, v, out, lse, scale, *[True] * packed)
        times[f'{side} backward'].append(time.perf_counter() - t0)
flops = {'forward': 2 * 2 * b * h * n * n * d,
         'backward': 5 * 2 * b * h * n * n * d}
print(f'{b} x {h} heads x {n} tokens x {d}, {torch.get_num_threads()} '
      f'threads, {rounds} rounds alternated'
      f'{", packed gradient" if packed else ""}')
for key, ts in times.items():
    med = sorted(ts)[len(ts) // 2]
    print(f'{key:13s} ms {[round(t * 1e3, 1) for t in sorted(ts)]}  '
          f'{flops[key.split()[1]] / med / 1e9:.0f} GFLOP/s at the median')
