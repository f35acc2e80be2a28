"""One VideoMAE-size self-attention (1 x 12 heads x 1568 tokens x 64, fp32,
CPU): torch's fused kernel (F.scaled_dot_product_attention) against the
oneDNN attention of models/onednn_attention.py and, on a CPU with AVX-512,
the C++ kernel of models/cpu_attention.py, forward alone (no autograd)
and forward + backward, alternated ROUNDS times in one process; prints the
sorted times in ms and each side's GFLOP/s at its median.

    PYTHONPATH=$PWD python benchmarks/scripts/attention_kernels.py [ROUNDS] [B H N D]

With ``STRIDED=1`` q, k and v are the heads of one packed (B, N, 3 H D)
tensor, as the experts' q/k/v projection gives them (rows 3 H D apart).
With ``OLD_ATTENTION=FILE`` (an earlier models/onednn_attention.py, e.g.
``git show COMMIT:cast_mmaction/models/onednn_attention.py > FILE``) that
version is a third kernel of the alternation.
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

from cast_mmaction.models import cpu_attention
from cast_mmaction.models.onednn_attention import onednn_sdpa

from _old_attention import old_onednn_sdpa

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
b, h, n, d = (int(v) for v in sys.argv[2:6]) if len(sys.argv) > 5 else (
    1, 12, 1568, 64)
g = torch.Generator().manual_seed(0)
if os.environ.get('STRIDED') == '1':
    qkv = torch.randn(b, n, 3 * h * d, generator=g)
    q, k, v = (t.reshape(b, n, h, d).transpose(1, 2).detach().requires_grad_()
               for t in qkv.chunk(3, dim=-1))
else:
    q, k, v = (torch.randn(b, h, n, d, generator=g).requires_grad_()
               for _ in range(3))
grad = torch.randn(b, h, n, d, generator=g)
fwd_flops = 4 * b * h * n * n * d  # two matmuls
train_flops = fwd_flops * 7 / 2  # + five in backward (scores recomputed)


def train(fn):
    fn(q, k, v).backward(grad)


def infer(fn):
    with torch.no_grad():
        fn(q, k, v)


cases = {
    'fused kernel, forward': (lambda: infer(F.scaled_dot_product_attention),
                              fwd_flops),
    'oneDNN, forward': (lambda: infer(onednn_sdpa), fwd_flops),
    'fused kernel, forward + backward': (
        lambda: train(F.scaled_dot_product_attention), train_flops),
    'oneDNN, forward + backward': (lambda: train(onednn_sdpa), train_flops),
}
if cpu_attention.unavailable() is None and cpu_attention.supports(d, n):
    cases['C++ kernel, forward'] = (lambda: infer(cpu_attention.cpu_sdpa),
                                    fwd_flops)
    cases['C++ kernel, forward + backward'] = (
        lambda: train(cpu_attention.cpu_sdpa), train_flops)
old = old_onednn_sdpa()
if old:
    cases['oneDNN (FILE), forward'] = (lambda: infer(old[1]), fwd_flops)
    cases['oneDNN (FILE), forward + backward'] = (lambda: train(old[1]),
                                                  train_flops)
times = {name: [] for name in cases}
for fn, _ in cases.values():
    fn()  # warm-up
for _ in range(rounds):
    for name, (fn, _) in cases.items():
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
print(f'{b} x {h} heads x {n} tokens x {d}'
      f'{" (heads of packed q/k/v)" if os.environ.get("STRIDED") == "1" else ""}'
      f', {torch.get_num_threads()} threads, {rounds} rounds')
# the fixed cost of one matmul call, where the arithmetic is nothing
a16 = torch.randn(16, 16)
lp = torch.ops.mkldnn._linear_pointwise
for name, fn in (('oneDNN linear', lambda: lp(a16, a16, None, 'none', [], '')),
                 ('aten.mm', lambda: a16 @ a16.t())):
    best = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(200):
            fn()
        best.append((time.perf_counter() - t0) / 200)
    print(f'one 16 x 16 x 16 product, {name}: {min(best) * 1e6:.1f} us '
          '(best of 5 x 200 calls)')
for name, ts in times.items():
    ts = sorted(ts)
    med = ts[len(ts) // 2]
    print(f'{name:34s} ms {[round(t * 1e3, 1) for t in ts]}  '
          f'{cases[name][1] / med / 1e9:.0f} GFLOP/s at the median')
