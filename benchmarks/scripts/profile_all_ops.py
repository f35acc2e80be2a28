"""Every operator of one CAST ViT-B SSv2 training step (fp32, random
weights, batch 1) by self time and call count (``torch.profiler``, after
one untimed step), the largest first: what a checkpoint policy recomputes
shows as extra calls (e.g. ``aten::addmm``) and its dispatch-mode
overhead as ``PythonDispatchMode``.

    PYTHONPATH=$PWD python benchmarks/scripts/profile_all_ops.py \\
        [SPEEDUPS_JSON] [ROWS]
"""
import sys
import time

from torch.profiler import ProfilerActivity, profile

from _ssv2_step import ssv2_step

speedups = sys.argv[1] if len(sys.argv) > 1 else None
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 28
step = ssv2_step(speedups)
step.model.train()
step.train()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    t0 = time.perf_counter()
    step.train()
    wall = time.perf_counter() - t0
print(f'speedups {speedups}; profiled training step, wall {wall:.3f} s')
print(f'{"self s":>8} {"calls":>6}  operator')
for e in sorted(prof.key_averages(),
                key=lambda e: -e.self_cpu_time_total)[:rows]:
    print(f'{e.self_cpu_time_total / 1e6:8.3f} {e.count:6d}  {e.key}')
