"""Training-step and inference time of CAST ViT-B SSv2 (batch 1, fp32, random
weights) with the frozen MLPs' output product accumulated into the residual
stream (``frozen_mlp``'s ``add_to``: ``x`` + the MLP adapter's part, plus
fc2's bias, then ``addmm_``) and without it (``addmm`` writing fc2's bias,
the adapter's part added to the MLP output, then the residual add),
alternated step by step in one process. The speed-ups are ``SPEEDUPS``
(default the ``'cpu'`` preset with the C++ attention kernel, MLP pass and
block cache, the % of peak runs' setting).

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_mlp_residual.py [ROUNDS]

The order swaps every round; the seed is set before each step. Prints each
round's times (s), the medians and the median per-round ratio, training
then inference, and the backbone outputs' largest difference.
"""
import json
import os
import sys

import torch

from _alternation import steps_alternated
from _ssv2_step import ssv2_step

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
spec = json.loads(os.environ.get('SPEEDUPS', json.dumps(dict(
    preset='cpu', cpu_attention=True, cpu_mlp=True, cpu_block_cache=True))))
ssv2 = ssv2_step(json.dumps(spec))
experts = list(ssv2.model.backbone.experts.values())
assert all(e.mlp_adder(0, torch.zeros(1, 1, e.embed_dim)) is not None
           for e in experts), 'the frozen MLP speed-up is not on'
print(f'{len(experts)} experts; speedups {spec}; torch threads '
      f'{torch.get_num_threads()}', flush=True)


def use(side):
    for e in experts:
        if side == 'into':
            e.__dict__.pop('mlp_adder', None)  # the class's method
        else:
            e.mlp_adder = lambda i, xn: None  # the backbone adds



ssv2.model.eval()
outs = {}
for side in ('into', 'add'):
    use(side)
    with torch.no_grad():
        out = ssv2.model.backbone(ssv2.x)
    outs[side] = out if torch.is_tensor(out) else out[0]
a, b = outs['into'], outs['add']
print(f'backbone output, largest |into - add|: '
      f'{(a - b).abs().max().item():.3g} (of {b.abs().max().item():.3g})')
for phase, fn in (('training', ssv2.train), ('inference', ssv2.infer)):
    ssv2.model.train(phase == 'training')
    steps_alternated(phase, fn, ('into', 'add'), use, rounds)
