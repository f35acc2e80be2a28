"""Operators one training step and one inference dispatch, ours against the
authors' CAST ViT-B (tools/benchmark.py's builders, random weights, batch 1,
on the CPU): a proxy, measurable without a GPU, for the kernels a GPU step
launches. On the H200 the recipe's batch-6 step took no less time than a
batch-12 one (docs/benchmarks.md, GPU): it was not set by the arithmetic.

    PYTHONPATH=$PWD python benchmarks/scripts/count_ops.py /path/to/CAST [--amp bf16]

Counted with a TorchDispatchMode over forward, backward and the optimizer
step (the optimizer each side's benchmark builds: ours fused AdamW, theirs
torch's AdamW with foreach=True, its default on CUDA), split
into operators that launch no kernel (views, ``_unsafe_view``, empty
buffers) and the rest. Under ``--amp`` the
casts that autocast inserts are counted too (CPU autocast's op lists are not
CUDA's: the fp32 count is the like-for-like one; the authors' code fails
under bf16 autocast, so use fp16).
"""
import argparse
import collections
import importlib.util
import json
import os.path as osp
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class Count(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func] += 1
        return func(*args, **(kwargs or {}))


# operators that return an alias or an uninitialised buffer: no kernel runs
NO_KERNEL = {'_unsafe_view', 'new_empty', 'empty', 'empty_like', 'detach',
             'alias', 'lift_fresh'}


def launches_nothing(func):
    return func.is_view or func._opname in NO_KERNEL


def summary(counter):
    none = sum(n for f, n in counter.items() if launches_nothing(f))
    total = sum(counter.values())
    top = collections.Counter({str(f): n for f, n in counter.items()
                               if not launches_nothing(f)}).most_common(12)
    return dict(total=total, no_kernel=none, kernels=total - none, top=top)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('reference_repo')
    ap.add_argument('--config', default=osp.join(ROOT, 'configs',
                                                 'cast_ssv2.py'))
    ap.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='none')
    ap.add_argument('--speedups', default='none',
                    help="ours: model.backbone.speedups (default none: the "
                         "CPU speed-ups off, the path a GPU run takes)")
    ap.add_argument('--json')
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location(
        '_cast_benchmark', osp.join(ROOT, 'tools', 'benchmark.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bargs = bench.parse_args([args.config, '--reference-repo',
                              args.reference_repo, '--speedups',
                              args.speedups])
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    out = dict(config=args.config, amp=args.amp, speedups=args.speedups,
               torch=torch.__version__)
    for side, builder in (('ours', bench.build_ours),
                          ('authors', bench.build_reference)):
        bargs.reference_repo = args.reference_repo if side == 'authors' \
            else None
        built = builder(bargs, bench._load_cfg(bargs))
        model = built['model']
        frames, size = built['frames'], built['size']
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, frames, *size, generator=gen)
        labels = torch.zeros(1, dtype=torch.long)
        opt = built['optimizer']()
        if side == 'authors':  # torch's AdamW on CUDA defaults to foreach
            for group in opt.param_groups:
                group['foreach'] = True
        cast = torch.autocast('cpu', dtype=dtype, enabled=dtype is not None)
        model.train()
        with cast:  # warm-up: lazy state (optimizer moments, caches)
            loss = built['train_forward'](x, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        res = {}
        with Count() as c:
            with cast:
                loss = built['train_forward'](x, labels)
        res['train_forward'] = summary(c.ops)
        with Count() as c:
            loss.backward()
        res['train_backward'] = summary(c.ops)
        with Count() as c:
            opt.step()
            opt.zero_grad(set_to_none=True)
        res['optimizer_step'] = summary(c.ops)
        model.eval()
        with Count() as c, torch.no_grad(), cast:
            built['infer_forward'](x)
        res['inference'] = summary(c.ops)
        out[side] = res
        del model, built, opt
        print(side, {k: (v['kernels'], v['no_kernel']) for k, v in res.items()},
              flush=True)
    for phase in out['ours']:
        o, a = out['ours'][phase]['kernels'], out['authors'][phase]['kernels']
        print(f'{phase:16s} operators with a kernel: ours {o:6d}  authors {a:6d}'
              f'  ratio {o / a:.2f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    sys.exit(main())
