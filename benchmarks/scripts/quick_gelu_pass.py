"""CLIP's frozen MLP (QuickGELU) with the ``cpu_mlp`` pass, two ways,
alternated in one process: ``pass`` the pass computing QuickGELU itself
(the code now), ``scaled`` the pass computing SiLU of the pre-activation
scaled by 1.702, with the MLP's input, first bias and second bias scaled
by 1.702 and its output divided by it (the code before). CLIP's size: 8
frames x 197 tokens, 768 -> 3072 -> 768, fp32, random weights; inference
(no autograd) and training (forward + backward of the input gradient).
Median and minimum ms over ROUNDS alternations of 5 calls each (the
minimum: the run least disturbed by a noisy host).

    PYTHONPATH=$PWD python benchmarks/scripts/quick_gelu_pass.py [ROUNDS]
"""
import sys

import torch

from cast_mmaction.models.layers import QUICK_GELU_SCALE
from cast_mmaction.models import cpu_bias_act, speedups
from _alternation import calls_alternated

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
g = torch.Generator().manual_seed(0)
x = torch.randn(8 * 197, 768, generator=g)
w1 = torch.randn(3072, 768, generator=g) * 0.02
b1 = torch.randn(3072, generator=g) * 0.02
w2 = torch.randn(768, 3072, generator=g) * 0.02
b2 = torch.randn(768, generator=g) * 0.02
gy = torch.randn(8 * 197, 768, generator=g)
a = QUICK_GELU_SCALE


def scaled(x2d, keep):  # the code before: SiLU of the scaled pre-activation
    h, d = cpu_bias_act.mm_bias_act(x2d * a, w1, b1 * a, 'silu', keep)
    return speedups._mm_t(h, w2, b2 * a) / a, d


def native(x2d, keep):  # the code now
    h, d = cpu_bias_act.mm_bias_act(x2d, w1, b1, 'quick_gelu', keep)
    return speedups._mm_t(h, w2, b2), d


def infer(fn):
    with torch.no_grad():
        return fn(x, False)[0]


def train(fn):
    out, d = fn(x, True)
    gh = speedups._mm_t(gy, w2.t()).mul_(d)
    return out, speedups._mm_t(gh, w1.t())


# the two ways agree to fp32 rounding
for phase in (infer, train):
    o1, o2 = phase(scaled), phase(native)
    o1, o2 = (o1, ) if torch.is_tensor(o1) else o1, (
        o2, ) if torch.is_tensor(o2) else o2
    for p, q in zip(o1, o2):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)
print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
      f'{rounds} rounds of 5 calls')
for phase in (infer, train):
    calls_alternated(phase, phase.__name__,
                     [('scaled', scaled), ('pass', native)], rounds)
