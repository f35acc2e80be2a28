"""One frozen MLP block's residual update, two ways, alternated in one
process: ``into`` the MLP's output product accumulated into the residual
(``x`` + the MLP adapter's drop-path part, plus fc2's bias, then
``addmm_``: the code now, ``frozen_mlp(..., residual=)``), ``add`` the MLP
output by ``addmm`` (fc2's bias written into it first), the adapter's part
added to it, then the residual add (the code before). VideoMAE's size:
1568 tokens, 768 -> 3072 -> 768, GELU, fp32, random weights, the C++ MLP
pass where it is available (``cpu_mlp``); inference (no autograd) and
training (forward + backward to the input, residual and adapter output).
Median and minimum ms over ROUNDS alternations of 5 calls each (the
minimum: the run least disturbed by a noisy host).

    PYTHONPATH=$PWD python benchmarks/scripts/mlp_residual_pass.py [ROUNDS]
"""
import sys
from types import SimpleNamespace

import torch

from cast_mmaction.models import cpu_bias_act, speedups
from _alternation import calls_alternated

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
cpu_mlp = cpu_bias_act.unavailable() is None
g = torch.Generator().manual_seed(0)
n, d, h = 1568, 768, 3072
fc1 = SimpleNamespace(weight=torch.randn(h, d, generator=g) * 0.02,
                      bias=torch.randn(h, generator=g) * 0.02)
fc2 = SimpleNamespace(weight=torch.randn(d, h, generator=g) * 0.02,
                      bias=torch.randn(d, generator=g) * 0.02)
x0 = torch.randn(1, n, d, generator=g)
xn0 = torch.randn(1, n, d, generator=g)
a0 = torch.randn(1, n, d, generator=g)
factor = torch.full((1, 1, 1), 1.25)  # a drop-path draw kept
gy = torch.randn(1, n, d, generator=g)


def add(x, xn, a):  # the code before
    y = speedups.frozen_mlp(xn, fc1, fc2, 'gelu', cpu_mlp=cpu_mlp)
    return x + torch.addcmul(y, a, factor)


def into(x, xn, a):  # the code now
    return speedups.frozen_mlp(xn, fc1, fc2, 'gelu', cpu_mlp=cpu_mlp,
                               residual=torch.addcmul(x, a, factor))


def infer(fn):
    with torch.no_grad():
        return (fn(x0, xn0, a0), )


def train(fn):
    ins = [t.clone().requires_grad_() for t in (x0, xn0, a0)]
    out = fn(*ins)
    return (out.detach(), ) + torch.autograd.grad(out, ins, gy)


for phase in (infer, train):  # the two ways agree to fp32 rounding
    for p, q in zip(phase(add), phase(into)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)
print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
      f'cpu_mlp {cpu_mlp}, {rounds} rounds of 5 calls')
for phase in (infer, train):
    calls_alternated(phase, phase.__name__, [('add', add), ('into', into)],
                     rounds)
