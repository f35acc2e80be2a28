"""The matmuls of one CAST ViT-B SSv2 training step, or with ``infer`` of
one inference (fp32, random weights, batch 1), by operator and shape:
``torch.profiler`` self time, call count, FLOPs and GFLOP/s of each
(``mm`` / ``addmm`` / ``addmm_`` as (M, K, N)), after one untimed step,
the largest first; then their total. Shows which
products run below the matmul peak (e.g. the adapters' narrow weight
gradients) and which carry a bias copy (``addmm``).

    PYTHONPATH=$PWD python benchmarks/scripts/profile_matmul_shapes.py \\
        [SPEEDUPS_JSON] [ROWS] [train|infer]
"""
import collections
import sys

from torch.profiler import ProfilerActivity, profile

from _ssv2_step import ssv2_step

MATMULS = ('aten::mm', 'aten::addmm', 'aten::addmm_')
speedups = sys.argv[1] if len(sys.argv) > 1 else None
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 40
mode = sys.argv[3] if len(sys.argv) > 3 else 'train'
if mode not in ('train', 'infer'):
    sys.exit(f'mode must be train or infer, got {mode!r}')
step = ssv2_step(speedups)
step.model.train(mode == 'train')
run = step.train if mode == 'train' else step.infer
run()
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    run()
agg = collections.defaultdict(lambda: [0.0, 0, 0.0])  # s, calls, GFLOP
for ev in prof.events():
    if ev.name not in MATMULS:
        continue
    shapes = ev.input_shapes
    a, b = (shapes[0], shapes[1]) if ev.name == 'aten::mm' else (
        shapes[1], shapes[2])
    m, k, n = a[-2], a[-1], b[-1]
    row = agg[(ev.name, m, k, n)]
    row[0] += ev.self_cpu_time_total / 1e6
    row[1] += 1
    row[2] += 2 * m * k * n / 1e9
total_s = sum(r[0] for r in agg.values())
total_f = sum(r[2] for r in agg.values())
what = 'training step' if mode == 'train' else 'inference'
print(f'speedups {speedups}; matmuls of one {what}: {total_s:.3f} s, '
      f'{total_f:.0f} GFLOP, {total_f / total_s:.0f} GFLOP/s')
print(f'{"self s":>7} {"calls":>5} {"GFLOP":>7} {"GFLOP/s":>7}  '
      f'operator (M, K, N)')
for (name, m, k, n), (s, c, f) in sorted(agg.items(),
                                         key=lambda kv: -kv[1][0])[:rows]:
    print(f'{s:7.3f} {c:5d} {f:7.1f} {f / s:7.0f}  {name} ({m}, {k}, {n})')
