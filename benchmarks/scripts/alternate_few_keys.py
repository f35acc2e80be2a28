"""CAST ViT-B SSv2 (fp32, random weights, the 'cpu' preset; ``BATCH``
clips, default 1; ``CHECKPOINT=fusion`` adds that speed-up) with the B-CA
links' window attention of at most 16 keys (CAST's temporal-to-spatial
window: one key per frame) on torch's fused CPU kernel (the model) and as
two batched matmuls and a softmax (an experiment, defined here: 0.48x the
fused kernel's forward + backward on that shape alone), alternated step by step in one
process: inference and training step (forward, backward and the config's
fused AdamW), wall and process CPU time, with the load average; then the
medians and their ratios.

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_few_keys.py \\
        [INFER_ROUNDS] [TRAIN_ROUNDS] [PROFILE_ROUNDS]

With PROFILE_ROUNDS > 0 it then profiles that many training steps per
setting, alternated (``torch.profiler``), and prints the summed self time of
the operators the two settings differ in (the fused kernel's forward and
backward; the batched matmuls, softmax and their backward): the step's
other work, and the host's drift over it, drop out of that figure.
"""
import os
import statistics
import sys
import time

import torch
from mmengine.config import Config

import cast_mmaction  # noqa: F401
from cast_mmaction.models.fusion.bottleneck_cross_attention import \
    WindowCrossAttention
from cast_mmaction.utils import build_model, cpu_facts

sys.path.insert(0, 'tools')
from benchmark import build_optimizer_ours  # noqa: E402
from mmaction.structures import ActionDataSample  # noqa: E402

infer_rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
train_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
profile_rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 0
batch = int(os.environ.get('BATCH', 1))
cfg = Config.fromfile('configs/cast_ssv2.py')
m = cfg.model.to_dict()
spec = dict(preset='cpu')
if os.environ.get('CHECKPOINT'):
    spec['checkpoint'] = os.environ['CHECKPOINT']
m['backbone']['speedups'] = spec
for e in m['backbone']['experts'].values():
    e['pretrained'] = None
model = build_model(m)
FEW_KEYS = 16


def few_keys_attention(q, k, v, num_heads):
    """``sdpa_heads`` as softmax(q k^T / sqrt(d)) v with batched matmuls."""
    *lead, lq, c = q.shape
    lk = k.shape[-2]
    d = c // num_heads
    q = q.reshape(-1, lq, num_heads, d).transpose(1, 2)
    k = k.reshape(-1, lk, num_heads, d).transpose(1, 2)
    v = v.reshape(-1, lk, num_heads, d).transpose(1, 2)
    w = torch.matmul(q * d ** -0.5, k.transpose(-1, -2)).softmax(-1)
    return torch.matmul(w, v).transpose(1, 2).reshape(*lead, lq, c)


class FewKeys(WindowCrossAttention):

    def _attend(self, q, k, v):
        if k.shape[-2] <= FEW_KEYS:
            return few_keys_attention(q, k, v, self.num_heads)
        return super()._attend(q, k, v)


opt = build_optimizer_ours(cfg, model)
x = torch.randn(batch, 3, 16, 224, 224,
                generator=torch.Generator().manual_seed(0))
links = [mod for mod in model.modules()
         if type(mod) is WindowCrossAttention]
assert links, 'no link attention'


def use(on):
    cls = FewKeys if on else WindowCrossAttention
    for mod in links:
        mod.__class__ = cls


def infer():
    with torch.no_grad():
        model.cls_head(model.backbone(x))


def train():
    losses = model(x[:, None], [ActionDataSample().set_gt_label(1)
                                for _ in range(batch)], mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    opt.step()
    model.zero_grad(set_to_none=True)


f = cpu_facts()
print(f'{f.get("cpu_model")}, ISA {f.get("cpu_isa")}, torch '
      f'{torch.__version__}, {torch.get_num_threads()} threads, batch '
      f'{batch}, speedups {spec}', flush=True)
times = {}
for phase, fn, rounds in (('infer', infer, infer_rounds),
                          ('train', train, train_rounds)):
    model.train(phase == 'train')
    for on in (False, True) if rounds else ():  # warm-up
        use(on)
        fn()
    for r in range(rounds):
        for on in (False, True):
            use(on)
            t, c = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - t, time.process_time() - c
            times.setdefault((phase, on), []).append((w, c))
            print(r, phase, 'few_keys' if on else 'fused_kernel',
                  'wall %.3f cpu %.3f' % (w, c),
                  'load %.2f' % os.getloadavg()[0], flush=True)
for phase in ('infer', 'train'):
    if (phase, False) not in times:
        continue
    off, on = times[(phase, False)], times[(phase, True)]
    mw = [statistics.median(t[0] for t in s) for s in (off, on)]
    mc = [statistics.median(t[1] for t in s) for s in (off, on)]
    per_round = sorted(b[0] / a[0] for a, b in zip(off, on))
    print(f'{phase}: median wall {mw[0]:.3f} -> {mw[1]:.3f} s '
          f'({mw[1] / mw[0]:.3f}x; per round {per_round[0]:.3f}-'
          f'{per_round[-1]:.3f}), CPU {mc[0]:.3f} -> {mc[1]:.3f} s '
          f'({mc[1] / mc[0]:.3f}x)')

OPS = ('aten::_scaled_dot_product_flash_attention_for_cpu',
       'aten::_scaled_dot_product_flash_attention_for_cpu_backward',
       'aten::bmm', 'aten::_softmax', 'aten::_softmax_backward_data')
if profile_rounds:
    from torch.profiler import ProfilerActivity, profile
    model.train(True)
    sums = {False: [], True: []}
    for on in (False, True):  # warm-up
        use(on)
        train()
    for r in range(profile_rounds):
        for on in (False, True):
            use(on)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train()
            got = {e.key: e.self_cpu_time_total / 1e6
                   for e in prof.key_averages() if e.key in OPS}
            sums[on].append(sum(got.values()))
            print(r, 'profile', 'few_keys' if on else 'fused_kernel',
                  ' '.join(f'{k.split("::")[1]} {v:.3f}'
                           for k, v in sorted(got.items())), flush=True)
    a, b = (statistics.median(sums[o]) for o in (False, True))
    print(f'attention operators of a training step (self time, median of '
          f'{profile_rounds}): {a:.3f} -> {b:.3f} s ({b - a:+.3f} s)')
