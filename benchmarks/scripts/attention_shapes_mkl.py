"""What torch's matmuls (MKL on an Intel CPU) reach on the products of one
VideoMAE-size attention, 12 heads x 1568 tokens x 64, each alone over all
heads (``torch.bmm``, fp32, the median of 5 after one untimed call): the
scores q k^T, the weighted values P v and the values' gradient P^T dO,
beside two of the model's linear shapes (the ``peak`` phase of
tools/benchmark.py measures such shapes). The attention kernels compute the
same products a block of rows at a time without writing the 1568 x 1568
score matrix.

    PYTHONPATH=$PWD python benchmarks/scripts/attention_shapes_mkl.py
"""
import time

import torch
import torch.nn.functional as F

n, d, h = 1568, 64, 12
g = torch.Generator().manual_seed(0)


def bench(fn, flops, reps=5):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    t = sorted(times)[reps // 2]
    return f'{t * 1e3:6.1f} ms, {flops / t / 1e9:4.0f} GFLOP/s'


q, k = (torch.randn(h, n, d, generator=g) for _ in range(2))
p = torch.randn(h, n, n, generator=g)
att = 2 * h * n * n * d
print(f'{torch.get_num_threads()} threads')
print('scores  q k^T   12 x (1568 x 64) (64 x 1568)  ',
      bench(lambda: torch.bmm(q, k.transpose(1, 2)), att))
print('values  P v     12 x (1568 x 1568) (1568 x 64)',
      bench(lambda: torch.bmm(p, k), att))
print('dV      P^T dO  12 x (1568 x 1568) (1568 x 64)',
      bench(lambda: torch.bmm(p.transpose(1, 2), k), att))
for a, b in ((768, 3072), (3072, 768)):
    x = torch.randn(n, a, generator=g)
    w = torch.randn(b, a, generator=g)
    print(f'linear  {n} x {a} x {b}           ',
          bench(lambda: F.linear(x, w), 2 * n * a * b))
