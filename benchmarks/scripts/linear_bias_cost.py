"""What a linear's bias costs on the CPU: ``F.linear`` with a bias (``addmm``:
the bias written into the output, then read back by the GEMM, beta = 1),
the same product without it (``mm``), and oneDNN's linear with the bias
fused (``torch.ops.mkldnn._linear_pointwise``), on the model's linear shapes
(tokens x in -> out), alternated in one process.

    PYTHONPATH=$PWD python benchmarks/scripts/linear_bias_cost.py [ROUNDS]

Prints the median ms and GFLOP/s of each per shape.
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
LP = getattr(getattr(torch.ops, 'mkldnn', None), '_linear_pointwise', None)
SHAPES = [(1568, 192, 768), (1568, 384, 768), (1568, 768, 192),
          (1568, 768, 384), (1568, 384, 384), (1568, 768, 768),
          (1568, 768, 2304), (1568, 3072, 768), (1568, 768, 3072)]
print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
g = torch.Generator().manual_seed(0)
for n, k, m in SHAPES:
    x = torch.randn(n, k, generator=g)
    w = torch.randn(m, k, generator=g)
    b = torch.randn(m, generator=g)
    fs = {'addmm (F.linear)': lambda: F.linear(x, w, b),
          'mm (no bias)': lambda: x.mm(w.t())}
    if LP is not None:
        fs['oneDNN, bias fused'] = lambda: LP(x, w, b, 'none', [], '')
    for f in fs.values():
        f()
        f()
    times = {name: [] for name in fs}
    for _ in range(rounds):
        for name, f in fs.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    flop = 2 * n * k * m
    cells = []
    for name, ts in times.items():
        med = statistics.median(ts)
        cells.append(f'{name} {med * 1e3:.3f} ms ({flop / med / 1e9:.0f} '
                     f'GFLOP/s)')
    print(f'{n} x {k} -> {m}: ' + '; '.join(cells), flush=True)
