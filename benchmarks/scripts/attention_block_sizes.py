"""The oneDNN attention (models/onednn_attention.py) of one VideoMAE-size
self-attention (1 x 12 heads x 1568 tokens x 64, fp32, CPU) with other block
sizes (bytes of one block's scores, BLOCK_BYTES), alternated ROUNDS times in
one process; prints each size's median forward and forward + backward time
and GFLOP/s.

    PYTHONPATH=$PWD python benchmarks/scripts/attention_block_sizes.py \\
        ROUNDS [THREADS] [KiB,KiB,...]
"""
import statistics
import sys
import time

import torch

import cast_mmaction.models.onednn_attention as oa

rounds = int(sys.argv[1])
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
sizes = [int(v) << 10 for v in (sys.argv[3] if len(sys.argv) > 3 else
                               '4096,2048,1024,512,256,128').split(',')]
b, h, n, d = 1, 12, 1568, 64
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(b, h, n, d, generator=g).requires_grad_()
           for _ in range(3))
grad = torch.randn(b, h, n, d, generator=g)
fwd = 4 * b * h * n * n * d
res = {(s, m): [] for s in sizes for m in ('fwd', 'train')}
for r in range(rounds):
    for s in sizes:
        oa.BLOCK_BYTES = s
        t = time.perf_counter()
        with torch.no_grad():
            oa.onednn_sdpa(q, k, v)
        res[(s, 'fwd')].append(time.perf_counter() - t)
        t = time.perf_counter()
        oa.onednn_sdpa(q, k, v).backward(grad)
        res[(s, 'train')].append(time.perf_counter() - t)
for s in dict.fromkeys(sizes):
    f = statistics.median(res[(s, 'fwd')])
    tr = statistics.median(res[(s, 'train')])
    oa.BLOCK_BYTES = s
    print(f'block {s >> 10:5d} KiB ({oa.block_rows(n, n)} query rows): '
          f'fwd {1e3 * f:.1f} ms ({fwd / f / 1e9:.0f} GFLOP/s)  fwd+bwd '
          f'{1e3 * tr:.1f} ms ({fwd * 3.5 / tr / 1e9:.0f} GFLOP/s)')
