"""The CUDA-graph training loop with activation checkpointing, on a GPU:
the recipe's ViT-B (batch 6, fp16, accumulation 4, Mixup, drop path 0.3,
random weights) with ``backbone.with_cp=True`` (POLICY ``with_cp``),
``backbone.checkpoint_policy=POLICY`` or neither (``none``): 8 iterations
of MMEngine's eager ``train_step`` and 8 of the graph loop's step from the
same weights and seeds (``tools/gpu_check.py``'s runs). Prints one JSON
line: losses, step times and GPU memory of each, and whether the weights
after both are bit-identical.

    PYTHONPATH=$PWD python benchmarks/scripts/graph_checkpointing.py POLICY
"""
import argparse
import json
import sys
import traceback

import torch

import tools.gpu_check as gc

policy = sys.argv[1] if len(sys.argv) > 1 else 'with_cp'
backbone = (dict(with_cp=True) if policy == 'with_cp' else
            {} if policy == 'none' else dict(checkpoint_policy=policy))
args = argparse.Namespace(steps=8, batch=6, tiny=False)
device = torch.device('cuda')
out = dict(policy=policy)
try:
    wa, out['eager'] = gc._graph_run(args, device, False, backbone=backbone)
    wg, out['graph'] = gc._graph_run(args, device, True, backbone=backbone)
    out['bit_identical'] = all(torch.equal(wa[n], wg[n]) for n in wa)
except Exception as e:  # noqa: BLE001 - reported in the JSON line
    out['error'] = f'{type(e).__name__}: {e}'
    out['traceback'] = traceback.format_exc()[-2000:]
print(json.dumps(out))
