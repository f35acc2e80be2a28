"""The non-matmul operators of one CAST ViT-B SSv2 step (fp32, random
weights, batch 1) by operator, calling operator chain and input shapes:
``torch.profiler`` self time over one training step (``train``) or one
inference forward (``infer``) after one untimed run, the categories of
``tools/benchmark.py``'s profile phase (copies, elementwise, norms,
other), the largest rows first. Shows which tensors the copies and
element-wise passes are (e.g. a LayerNorm copying a non-contiguous input).

    PYTHONPATH=$PWD python benchmarks/scripts/profile_ops.py train|infer \\
        [SPEEDUPS_JSON] [ROWS]
"""
import collections
import sys
import time

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, 'tools')
import benchmark as B  # noqa: E402
from _ssv2_step import ssv2_step  # noqa: E402

mode = sys.argv[1] if len(sys.argv) > 1 else 'train'
speedups = sys.argv[2] if len(sys.argv) > 2 else None
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 30
step = ssv2_step(speedups)
model, train, infer = step.model, step.train, step.infer

fn = train if mode == 'train' else infer
model.train(mode == 'train')
fn()
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
agg = collections.defaultdict(lambda: [0.0, 0])
for ev in prof.events():
    cat = B.op_category(ev.name)
    if cat not in ('copies', 'elementwise', 'norms', 'other'):
        continue
    chain, up = [], ev.cpu_parent
    while up is not None and len(chain) < 2:
        chain.append(up.name)
        up = up.cpu_parent
    key = (cat, ev.name, ' < '.join(chain), str(ev.input_shapes)[:70])
    agg[key][0] += ev.self_cpu_time_total / 1e6
    agg[key][1] += 1
totals = collections.Counter()
for (cat, *_), (s, _) in agg.items():
    totals[cat] += s
print(f'{mode}, wall {wall:.3f} s; by category (s): ' + ', '.join(
    f'{k} {v:.3f}' for k, v in sorted(totals.items())))
print(f'{"ms":>7} {"calls":>5}  {"category":11} {"operator":30} {"called by":48} '
      f'input shapes')
for (cat, name, chain, shapes), (s, n) in sorted(
        agg.items(), key=lambda kv: -kv[1][0])[:rows]:
    print(f'{s * 1e3:7.1f} {n:5d}  {cat:11} {name:30} {chain[:48]:48} '
          f'{shapes}')
