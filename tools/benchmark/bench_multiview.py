#!/usr/bin/env python
"""Multi-view testing cost in the model: all views of a video through the
model as one batch (MMAction2's ``Recognizer3D.test_step``, what
``tools/test.py`` runs) against one view per forward (each view alone
through ``test_step``, then the mean of the views' softmax scores, which is
what the authors' ``merge`` computes from their per-view outputs). The
loaders' side, ours against the authors': ``bench_test_loop.py``.

    python tools/benchmark/bench_multiview.py                        # K400 5x3 and SSv2 2x3
    python tools/benchmark/bench_multiview.py --embed-dim 768 --depth 12 --heads 12 --img-size 224
    python tools/benchmark/bench_multiview.py --embed-dim 768 --depth 12 --heads 12 --img-size 224 \
        --device cuda --amp fp16 --videos 4                           # on a GPU

A CAST recognizer of the given size (default: ViT-S-like width 384, 6 heads,
depth 4, 16 frames of 112 px, so that a CPU run takes minutes) with random
weights tests ``--videos`` random videos per protocol; the two patterns
alternate video by video. Reported per protocol and pattern: process CPU
time and wall time per video, videos/s and views/s by CPU time, and the
largest difference between the two patterns' scores (they must agree).
``--max-testing-views N`` chunks the batched views (``test_cfg``).

``--device cuda``: the model and the views on that GPU (the random videos
are drawn on the CPU, as a loader hands them over, and copied by the data
preprocessor in both patterns); each timing ends with a synchronise, so the
wall time is what counts there (``views_per_s_wall``), and each pattern's
peak GPU memory is reported. ``--amp fp16|bf16`` runs the forward under
autocast, as the recipes' fp16 test runs.
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: protocol -> (clips, crops): the recipes' test views
PROTOCOLS = dict(k400=(5, 3), ssv2=(2, 3))


def build(args):
    import torch
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model
    torch.manual_seed(args.seed)
    model = build_model(cast_recognizer_cfg(
        num_classes=args.num_classes, embed_dim=args.embed_dim,
        depth=args.depth, num_heads=args.heads, num_frames=args.frames,
        img_size=args.img_size)).eval().to(args.device)
    with torch.no_grad():  # random weights, so that the scores differ
        for p in model.cls_head.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    if args.max_testing_views:
        model.test_cfg = dict(max_testing_views=args.max_testing_views)
    return model


def batched(model, x, ds):
    return model.test_step(dict(inputs=[x], data_samples=[ds]))[0] \
        .pred_score


def one_by_one(model, x, ds):
    import torch
    return torch.stack([model.test_step(dict(
        inputs=[x[v:v + 1]], data_samples=[copy.deepcopy(ds)]))[0]
        .pred_score for v in range(x.shape[0])]).mean(0)


def autocast(device, amp):
    """The forward's autocast context for ``amp`` (``'none'``, ``'fp16'``,
    ``'bf16'``) on ``device``, or a null one."""
    import contextlib
    import torch
    if amp == 'none':
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type,
                          dtype=dict(fp16=torch.float16,
                                     bf16=torch.bfloat16)[amp])


def run(args):
    import torch
    from mmaction.structures import ActionDataSample
    from cast_mmaction.utils import ensure_scope
    ensure_scope()
    torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == 'cuda'
    def sync():
        if cuda:
            torch.cuda.synchronize(args.device)
    model = build(args)
    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for proto in args.protocols:
        clips, crops = PROTOCOLS[proto]
        views = clips * crops
        times = {'batched': [], 'one_by_one': []}
        peak = {'batched': 0, 'one_by_one': 0}
        diff = 0.0
        for i in range(args.warmup + args.videos):
            x = torch.randn(views, 3, args.frames, args.img_size,
                            args.img_size, generator=g)
            ds = ActionDataSample().set_gt_label(0)
            out = {}
            for name, fn in (('batched', batched),
                             ('one_by_one', one_by_one)):
                if cuda:
                    torch.cuda.reset_peak_memory_stats(args.device)
                sync()
                w0, c0 = time.perf_counter(), time.process_time()
                with torch.no_grad(), autocast(args.device, args.amp):
                    out[name] = fn(model, x, copy.deepcopy(ds))
                sync()
                w1, c1 = time.perf_counter(), time.process_time()
                if i >= args.warmup:
                    times[name].append((c1 - c0, w1 - w0))
                if cuda:
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated(
                        args.device))
            diff = max(diff, float((out['batched'].float() -
                                    out['one_by_one'].float()).abs().max()))
        row = dict(protocol=proto, clips=clips, crops=crops, views=views,
                   videos=args.videos, max_score_diff=diff)
        for name, t in times.items():
            cpu = statistics.mean(c for c, _ in t)
            wall = statistics.mean(w for _, w in t)
            row[name] = dict(cpu_s_per_video=cpu,
                             wall_s_per_video=wall,
                             videos_per_s_cpu=1 / cpu,
                             views_per_s_cpu=views / cpu,
                             views_per_s_wall=views / wall,
                             cpu_s_all=[c for c, _ in t],
                             wall_s_all=[w for _, w in t])
            if cuda:
                row[name]['peak_gpu_mib'] = peak[name] / 2 ** 20
        row['speedup_cpu'] = row['one_by_one']['cpu_s_per_video'] / \
            row['batched']['cpu_s_per_video']
        row['speedup_wall'] = row['one_by_one']['wall_s_per_video'] / \
            row['batched']['wall_s_per_video']
        rows.append(row)
        for name in times:
            r = row[name]
            print(f'| {proto} ({clips}x{crops}) | {name} | '
                  f'{r["cpu_s_per_video"]:.3f} | {r["wall_s_per_video"]:.3f}'
                  f' | {r["videos_per_s_cpu"]:.2f} | '
                  f'{r["views_per_s_cpu"]:.1f} |', flush=True)
        print(f'{proto}: batched is {row["speedup_cpu"]:.2f}x less CPU and '
              f'{row["speedup_wall"]:.2f}x less wall time per video; largest '
              f'score difference {diff:.2e}', flush=True)
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--protocols', nargs='+', default=list(PROTOCOLS),
                    choices=sorted(PROTOCOLS))
    ap.add_argument('--embed-dim', type=int, default=384)
    ap.add_argument('--depth', type=int, default=4)
    ap.add_argument('--heads', type=int, default=6)
    ap.add_argument('--frames', type=int, default=16)
    ap.add_argument('--img-size', type=int, default=112)
    ap.add_argument('--num-classes', type=int, default=400)
    ap.add_argument('--videos', type=int, default=3)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--device', default='cpu', help='cpu or cuda[:i]')
    ap.add_argument('--amp', choices=['none', 'fp16', 'bf16'],
                    default='none', help='autocast dtype of the forward')
    ap.add_argument('--max-testing-views', type=int)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', help='write the results here')
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from cast_mmaction.utils import cpu_facts
    import torch
    facts = dict(cpu_facts(), logical_cpus=os.cpu_count(),
                 torch=torch.__version__)
    if torch.device(args.device).type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit(f'--device {args.device}: torch sees no CUDA '
                             f'device here (torch {torch.__version__})')
        facts['gpu'] = torch.cuda.get_device_name(args.device)
    load0 = os.getloadavg()
    print(f'CPU: {facts.get("cpu_model")} ({facts["logical_cpus"]} logical '
          f'CPUs); load average {load0[0]:.2f}; {args.threads} thread(s); '
          f'model on {facts.get("gpu", args.device)}, amp {args.amp}')
    print('| protocol | pattern | CPU s/video | wall s/video | videos/s (CPU) '
          '| views/s (CPU) |')
    print('| --- | --- | --- | --- | --- | --- |')
    rows = run(args)
    out = dict(machine=facts, args=vars(args), results=rows,
               load_avg_before=load0, load_avg_after=os.getloadavg())
    if args.json:
        from cast_mmaction.evaluation.summaries import write_json
        write_json(args.json, out, default=str)
    return out


if __name__ == '__main__':
    main()
