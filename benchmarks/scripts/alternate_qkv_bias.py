"""The experts' q/k/v bias added by the C++ attention kernel as it reads
q, k and v (``cpu_attention``: the projection a plain ``mm``) against the
projection by ``addmm`` (its bias written into the (tokens, 3 C) output,
which the GEMM then reads back), alternated in one process. First the
parts that differ, at VideoMAE ViT-B's size (1568 tokens, 768 -> 2304, 12
heads of 64, fp32, random weights): the projection by ``mm`` against
``addmm``, the kernel's forward and backward with the bias against
without. Then one VideoMAE self-attention module and one B-CAST window
cross-attention (its 'space' window on an 8 x 196 grid, 384 wide, 12
heads of 32; its q and k/v projections' biases likewise) as small calls:
inference (no autograd) and training (forward and backward to the input;
the link's parameters too), median and minimum ms over ROUNDS
alternations of 5 calls; then CAST ViT-B SSv2 (batch 1) steps, training then inference,
with the speed-ups ``SPEEDUPS`` (default the ``'cpu'`` preset with the C++
attention kernel, MLP pass and block cache, the % of peak runs' setting).

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_qkv_bias.py \\
        [ROUNDS] [STEP_ROUNDS]

(STEP_ROUNDS 0: the small calls only.)

Needs an AVX-512 CPU, a C++ compiler and ninja.
"""
import json
import os
import sys

import torch

from cast_mmaction.models import cpu_attention, speedups
from cast_mmaction.models.experts.videomae_vit import VideoMAEAttention
from cast_mmaction.models.fusion import WindowCrossAttention
from _alternation import calls_alternated, steps_alternated
from _ssv2_step import ssv2_step

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
step_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
real_takes_bias = cpu_attention.takes_bias


def use(side):
    """'kernel': the bias added in the kernel (the code now); 'addmm': in
    the projection (the code before)."""
    cpu_attention.takes_bias = real_takes_bias if side == 'kernel' else (
        lambda *a: False)


torch.manual_seed(0)
attn = VideoMAEAttention(768, 12)
with torch.no_grad():
    for p in attn.parameters():
        p.normal_(0, 0.02)
attn.__class__ = speedups.OneDNNVideoMAEAttention
attn.speedup_attention = 'cpu'
attn.requires_grad_(False)  # frozen, as in CAST
x0 = torch.randn(1, 1568, 768)
gy = torch.randn(1, 1568, 768)


def infer(side):
    use(side)
    with torch.no_grad():
        return (attn(x0), )


def train(side):
    use(side)
    x = x0.clone().requires_grad_()
    out = attn(x)
    return (out.detach(), ) + torch.autograd.grad(out, x, gy)


# the parts
ext = cpu_attention.extension()
w = attn.qkv.weight.detach()
bias = attn.qkv_bias().detach().contiguous()
qkv = torch.mm(x0[0], w.t()).reshape(1, 1568, 2304)
q, k, v = (t.reshape(1, 1568, 12, 64).transpose(1, 2)
           for t in qkv.chunk(3, -1))
dout = gy.reshape(1, 1568, 12, 64).transpose(1, 2)
out, lse = ext.forward(q, k, v, 0.125, True, bias)
print(f'torch threads {torch.get_num_threads()}; the parts, {rounds} rounds',
      flush=True)
for label, with_bias, without in (
        ('projection (mm, addmm)', lambda: torch.mm(x0[0], w.t()),
         lambda: torch.addmm(bias, x0[0], w.t())),
        ('kernel forward (+ bias, without)',
         lambda: ext.forward(q, k, v, 0.125, False, bias),
         lambda: ext.forward(q, k, v, 0.125, False)),
        ('kernel backward (+ bias, without)',
         lambda: ext.backward(dout, q, k, v, out, lse, 0.125, True, bias),
         lambda: ext.backward(dout, q, k, v, out, lse, 0.125, True))):
    calls_alternated(lambda fn: fn(), label,
                     [('now', with_bias), ('before', without)], rounds)

for phase in (infer, train):  # the two ways agree to fp32 rounding
    for p, q in zip(phase('addmm'), phase('kernel')):
        print(f'{phase.__name__}: largest |kernel - addmm| '
              f'{(p - q).abs().max().item():.3g} (of '
              f'{p.abs().max().item():.3g})')
print(f'torch threads {torch.get_num_threads()}; one VideoMAE ViT-B '
      f'attention, {rounds} rounds', flush=True)
for phase in (infer, train):
    calls_alternated(phase, phase.__name__,
                     [('kernel', 'kernel'), ('addmm', 'addmm')], rounds)

link = WindowCrossAttention(384, 12, 'space', (8, 196), (8, 196))
link.__class__ = speedups.CPUKernelWindowCrossAttention
gq, gkv, gl = (torch.randn(1, 8, 196, 384) for _ in range(3))


def link_infer(side):
    use(side)
    with torch.no_grad():
        return (link(gq, gkv), )


def link_train(side):  # the link trains: its parameters' gradients too
    use(side)
    ins = [t.clone().requires_grad_() for t in (gq, gkv)]
    out = link(*ins)
    return (out.detach(), ) + torch.autograd.grad(
        out, ins + list(link.parameters()), gl)


for phase in (link_infer, link_train):
    for p, q in zip(phase('addmm'), phase('kernel')):
        print(f'{phase.__name__}: largest |kernel - addmm| '
              f'{(p - q).abs().max().item():.3g} (of '
              f'{p.abs().max().item():.3g})')
print(f'one B-CAST space-window cross-attention, {rounds} rounds',
      flush=True)
for phase in (link_infer, link_train):
    calls_alternated(phase, phase.__name__,
                     [('kernel', 'kernel'), ('addmm', 'addmm')], rounds)

if not step_rounds:  # the small calls only
    sys.exit(0)
spec = json.loads(os.environ.get('SPEEDUPS', json.dumps(dict(
    preset='cpu', cpu_attention=True, cpu_mlp=True, cpu_block_cache=True))))
ssv2 = ssv2_step(json.dumps(spec))
print(f'CAST ViT-B SSv2 steps; speedups {spec}', flush=True)
for phase, fn in (('training', ssv2.train), ('inference', ssv2.infer)):
    ssv2.model.train(phase == 'training')
    steps_alternated(phase, fn, ('kernel', 'addmm'), use, step_rounds)
