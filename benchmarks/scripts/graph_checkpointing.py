"""The CUDA-graph training loop with activation checkpointing, on a GPU:
the recipe's ViT-B (batch 6, fp16, accumulation 4, Mixup, drop path 0.3,
random weights) with ``backbone.with_cp=True`` (POLICY ``with_cp``),
``backbone.checkpoint_policy=POLICY`` or neither (``none``): 8 iterations
of MMEngine's eager ``train_step`` and 8 of the graph loop's step from the
same weights and seeds. Prints one JSON line: losses, step times and peak GPU memory of each,
and whether the weights after both are bit-identical.

    PYTHONPATH=$PWD python benchmarks/scripts/graph_checkpointing.py POLICY
"""
import json
import sys
import time
import traceback

import numpy as np
import torch

import tools.gpu_check as gc
from mmengine.optim import build_optim_wrapper

from cast_mmaction.engine.cuda_graph import GraphedTrainStep


def run(graph, policy, steps=8, batch=6):
    cfg = gc.load_cfg('recipe')
    m = gc.model_cfg(cfg, False)
    if policy == 'with_cp':
        m['backbone']['with_cp'] = True
    elif policy != 'none':
        m['backbone']['checkpoint_policy'] = policy
    from cast_mmaction.utils import build_model
    torch.manual_seed(0)
    model = build_model(m).cuda().train()
    ow = build_optim_wrapper(model, gc.optim_wrapper_cfg(cfg, True))
    ow.initialize_count_status(model, 0, steps)
    step = GraphedTrainStep(warmup_iters=3) if graph else None
    losses, times = [], []
    for i in range(steps):
        data = gc.runner_batch(cfg, False, batch, seed=i)
        np.random.seed(1000 + i)
        torch.manual_seed(1000 + i)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        lv = step(model, data, ow) if step else model.train_step(data, ow)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(lv['loss']))
    w = {n: p.detach().float().cpu() for n, p in model.named_parameters()
         if p.requires_grad}
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, ow, step
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return w, dict(losses=losses, step_s=times, peak_gb=peak)


policy = sys.argv[1] if len(sys.argv) > 1 else 'with_cp'
out = dict(policy=policy)
try:
    wa, out['eager'] = run(False, policy)
    wg, out['graph'] = run(True, policy)
    out['bit_identical'] = all(torch.equal(wa[n], wg[n]) for n in wa)
except Exception as e:  # noqa: BLE001
    out['error'] = f'{type(e).__name__}: {e}'
    out['traceback'] = traceback.format_exc()[-2000:]
print(json.dumps(out))
