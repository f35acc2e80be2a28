#!/usr/bin/env python
"""Speed and memory of a config's model, with no data and no pretrained weights.

    python tools/benchmark.py configs/cast_ssv2.py                 # CPU, batch 1
    python tools/benchmark.py configs/cast_ssv2.py --device cuda --batch-size 6 --amp bf16
    python tools/benchmark.py configs/cast_ssv2.py --with-cp --json out.json
    python tools/benchmark.py configs/cast_ssv2.py --reference-repo /path/to/KHU-VLL/CAST
    python tools/benchmark.py configs/cast_demo.py --data --num-workers 2

Model mode builds the model with random weights (expert ``pretrained``
fields are ignored) and synthetic inputs of the config's shape, then reports:
training-step time (forward + backward + AdamW over the trainable parameters;
median of ``--steps`` steps after ``--warmup``), inference time per clip,
clips/s, peak memory (process peak RSS on CPU, measured in a fresh
subprocess per phase; max allocated on CUDA), trainable / total parameters
and GFLOPs per clip (``torch.utils.flop_counter``).

``--reference-repo DIR`` runs the same harness on the authors' CAST model,
imported at run time from a checkout of KHU-VLL/CAST (nothing of it is part
of this package), for side-by-side figures.

``--data`` measures the data pipeline alone: the config's train dataset
(decode + transforms) iterated by a DataLoader with ``--num-workers`` workers,
reported as clips/s and clips/s per worker.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from mmengine.config import DictAction
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('config')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    ap.add_argument('--batch-size', type=int, default=1)
    ap.add_argument('--device', default='cpu', help='cpu or cuda[:i]')
    ap.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='none',
                    help='autocast dtype')
    ap.add_argument('--with-cp', action='store_true',
                    help='activation checkpointing per layer')
    ap.add_argument('--compile', action='store_true', help='torch.compile')
    ap.add_argument('--steps', type=int, default=9)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=0,
                    help='torch threads (0: torch default)')
    ap.add_argument('--phases', default='train,infer',
                    help='comma list of train, infer, flops')
    ap.add_argument('--reference-repo', help='checkout of KHU-VLL/CAST: '
                    'benchmark the authors\' model instead')
    ap.add_argument('--json', help='also write the results here')
    ap.add_argument('--data', action='store_true',
                    help='measure the data pipeline instead of the model')
    ap.add_argument('--num-workers', type=int, default=0)
    ap.add_argument('--num-clips', type=int, default=32,
                    help='clips to load in --data mode')
    ap.add_argument('--_phase', help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------
# model construction
def _load_cfg(args):
    from mmengine.config import Config
    import cast_mmaction  # noqa: F401
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    return cfg


def input_spec(model_cfg):
    """(num_frames, (H, W)) of the clip the model consumes."""
    bb = model_cfg['backbone']
    frames = bb.get('num_frames', 16)
    size = bb.get('img_size', 224)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return frames, size


def build_ours(args, cfg):
    from cast_mmaction.utils import build_model
    model_cfg = cfg.model.to_dict()
    bb = model_cfg['backbone']
    for e in bb.get('experts', {}).values():
        e['pretrained'] = None
    bb.pop('pretrained', None)
    if args.with_cp:
        bb['with_cp'] = True
    model = build_model(model_cfg)
    frames, size = input_spec(model_cfg)
    num_classes = model_cfg['cls_head'].get('num_classes', 2)

    def train_forward(x, labels):
        from mmaction.structures import ActionDataSample
        samples = [ActionDataSample().set_gt_label(int(l)) for l in labels]
        # the recognizer takes (N, views, C, T, H, W)
        losses = model(x[:, None], samples, mode='loss')
        return sum(v for k, v in losses.items() if 'loss' in k)

    def infer_forward(x):
        feats = model.backbone(x)
        return model.cls_head(feats)

    return model, frames, size, num_classes, train_forward, infer_forward


def build_reference(args, cfg):
    """The authors' STCrossTransformer, frozen as their training script does
    (run_bidirection.py: unfreeze_block on cross/Adapter/ln_post/fc_norm/head)."""
    import torch.nn.functional as F
    sys.path.insert(0, os.path.abspath(args.reference_repo))
    from models.bidir_modeling_crossattn import bidir_vit_base_patch16_224
    model_cfg = cfg.model.to_dict()
    frames, size = input_spec(model_cfg)
    num_classes = model_cfg['cls_head'].get('num_classes', 174)
    dpr = model_cfg['backbone'].get('drop_path_rate', 0.0)
    model = bidir_vit_base_patch16_224(num_classes=num_classes,
                                       all_frames=frames, img_size=size[0],
                                       drop_path_rate=dpr)
    keep = ['cross', 'clip_space_time_pos', 'clip_time_pos', 'vmae_time_pos',
            'Adapter', 'ln_post', 'vmae_fc_norm', 'last_proj', 'fusion',
            'head']
    for n, p in model.named_parameters():
        p.requires_grad_(any(k in n for k in keep))

    def train_forward(x, labels):
        return F.cross_entropy(model(x), labels)

    def infer_forward(x):
        return model(x)

    return model, frames, size, num_classes, train_forward, infer_forward


# ---------------------------------------------------------------------------
def run_phase(args, phase):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _load_cfg(args)
    builder = build_reference if args.reference_repo else build_ours
    model, frames, size, num_classes, train_fwd, infer_fwd = builder(args, cfg)
    device = torch.device(args.device)
    model.to(device)
    cuda = device.type == 'cuda'
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    b = args.batch_size
    x = torch.randn(b, 3, frames, *size, device=device)
    labels = torch.randint(0, num_classes, (b, ), device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    res = dict(trainable_params=sum(p.numel() for p in trainable),
               total_params=sum(p.numel() for p in model.parameters()))

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype,
                              enabled=amp_dtype is not None)

    if phase == 'flops':
        from torch.utils.flop_counter import FlopCounterMode
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            infer_fwd(x[:1])
        res['gflops_per_clip'] = fc.get_total_flops() / 1e9
        return res

    if phase == 'train':
        model.train()
        fwd = torch.compile(train_fwd) if args.compile else train_fwd
        opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.05)
        scaler = torch.amp.GradScaler(device.type,
                                      enabled=amp_dtype == torch.float16)
        times = []
        for i in range(args.warmup + args.steps):
            sync()
            t0 = time.perf_counter()
            with autocast():
                loss = fwd(x, labels)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        res['train_step_s'] = statistics.median(times)
        res['train_step_all_s'] = times
    else:
        model.eval()
        fwd = torch.compile(infer_fwd) if args.compile else infer_fwd
        times = []
        with torch.no_grad():
            for i in range(args.warmup + args.steps):
                sync()
                t0 = time.perf_counter()
                with autocast():
                    fwd(x)
                sync()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        res['infer_s_per_clip'] = med / b
        res['clips_per_s'] = b / med
        res['infer_all_s'] = times
    if cuda:
        res[f'{phase}_peak_mem_gb'] = torch.cuda.max_memory_allocated(
            device) / 2**30
    else:
        # ru_maxrss is in KiB on Linux; the phase runs in its own process
        res[f'{phase}_peak_mem_gb'] = resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 2**20
    return res


def run_data(args):
    import torch
    from mmengine.dataset import pseudo_collate
    from torch.utils.data import DataLoader

    from cast_mmaction.utils import ensure_scope
    from mmaction.registry import DATASETS
    cfg = _load_cfg(args)
    ensure_scope()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    n = min(args.num_clips, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, list(range(n))),
                        batch_size=1, num_workers=args.num_workers,
                        collate_fn=pseudo_collate)
    t0 = time.perf_counter()
    count = 0
    for _ in loader:
        count += 1
    dt = time.perf_counter() - t0
    workers = max(args.num_workers, 1)
    return dict(data_clips=count, data_seconds=dt, data_clips_per_s=count / dt,
                data_clips_per_s_per_worker=count / dt / workers,
                num_workers=args.num_workers)


def _child(args, phase, argv):
    cmd = [sys.executable, os.path.abspath(__file__), *argv, '--_phase', phase]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f'benchmark phase {phase} failed')
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._phase:
        print(json.dumps(run_phase(args, args._phase)))
        return
    if args.data:
        res = run_data(args)
    else:
        res = dict(config=args.config, batch_size=args.batch_size,
                   device=args.device, amp=args.amp, with_cp=args.with_cp,
                   compile=args.compile,
                   model='authors' if args.reference_repo else 'ours')
        for phase in args.phases.split(','):
            res.update(_child(args, phase.strip(), argv))
    rows = [(k, v) for k, v in res.items() if not k.endswith('_all_s')]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        if isinstance(v, float):
            v = f'{v:.4g}'
        print(f'{k:<{width}}  {v}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == '__main__':
    main()
