#!/usr/bin/env python
"""Speed and memory of a config's model, with no data and no pretrained weights.

    python tools/benchmark.py configs/cast_ssv2.py                 # CPU, batch 1
    python tools/benchmark.py configs/cast_ssv2.py --device cuda --batch-size 6 --amp bf16
    python tools/benchmark.py configs/cast_ssv2.py --with-cp --json out.json
    python tools/benchmark.py configs/cast_ssv2.py --reference-repo /path/to/KHU-VLL/CAST
    python tools/benchmark.py configs/cast_demo.py --data --num-workers 2
    python tools/benchmark.py configs/cast_ssv2.py --phases train --compare-speedups
    python tools/benchmark.py configs/cast_ssv2.py --cost-curve --json c.json \
        --markdown c.md --plot c.png --timing-cfg-options \
        model.backbone.experts.clip.depth=2 model.backbone.experts.vmae.depth=2

Model mode builds the model with random weights (expert ``pretrained``
fields are ignored) and synthetic inputs of the config's shape, then reports:
training-step time (forward + backward + AdamW over the trainable parameters;
median of ``--steps`` steps after ``--warmup``), inference time per clip
(both by ``--clock``, and the process CPU time of all threads as
``train_step_cpu_s`` / ``infer_cpu_s_per_clip``), clips/s, peak memory
(process peak RSS on CPU, measured in a fresh subprocess per phase; max
allocated on CUDA), trainable / total parameters
GFLOPs per clip and per training step (``torch.utils.flop_counter``, oneDNN
matmuls included), the machine's matmul peak measured in the same run
(``peak`` phase) and the achieved GFLOP/s with their % of that peak, for
ours and, side by side, the authors'; ``--phases ckpt`` adds
the checkpoint size on disk, full and trainable-only (what
``TrainableCheckpointHook`` saves).

The optimizer of the training step is the one the config's
``optim_wrapper`` builds (its ``optimizer`` type and arguments, its
``constructor`` and ``paramwise_cfg``; the wrapper type and accumulation are
ignored), e.g. ``--cfg-options optim_wrapper.optimizer.fused=True``.

``--cuda-graph`` (CUDA only) captures the training step's forward + backward
(the loss computed from the head's logits, equal to the recognizer's) and the
inference forward as CUDA graphs and times their replays.

``--reference-repo DIR`` runs the same harness on the authors' CAST model,
imported at run time from a checkout of KHU-VLL/CAST (nothing of it is part
of this package), frozen as their ``run_bidirection.py`` freezes it, with
``torch.optim.AdamW`` at its defaults for the trainable parameters (their
training script's optimizer on CPU). ``--side-by-side`` runs ours and theirs
alternately (``--runs`` times each, every phase in a fresh process) and
prints both with their ratios; ``--reference-amp`` sets the autocast of
their side (default: none, the fp32 path of their code on CPU).

``--runs R`` repeats every phase in R fresh processes: times are the median
of all R x ``--steps`` steps (with min-max), peak memory the median of the R
runs (with min-max).

``--speedups SPEC`` sets ``model.backbone.speedups`` (``none``: the
reference model; ``cpu``: the preset; or a JSON dict, models/speedups.py).
``--compare-speedups`` runs the phases for the reference and each CPU
speed-up alone (``onednn_linear``, ``onednn_attention``, ``frozen_mlp``,
``checkpoint='fusion'``, ``malloc_mmap_threshold``, ``malloc_trim``) and
the ``cpu`` preset, alternated ``--runs``
times, and prints time and peak memory of each against the reference.

``--cost-curve`` tabulates cost against ``--frames`` (8,16,32), ``--sizes``
(224,288) and ``--batches`` (1,2,4): forward and training-step FLOPs of the
config at full size, counted on the meta device (``meta_flops``: exact, no
memory), and the train / infer phases (``--curve-phases``) measured on the
model of ``--timing-cfg-options`` (e.g. a reduced depth), each setting in
fresh processes (``--timed axes``: only along the axes through the smallest
setting); JSON (``--json``), markdown (``--markdown``), PNG (``--plot``);
with ``--reference-repo`` the authors' model at the same settings.

``--data`` measures the data pipeline alone: the config's train dataset
(decode + transforms) iterated by a DataLoader with ``--num-workers`` workers,
reported as clips/s and clips/s per worker.

A config that does not exist and a ``--device`` torch cannot use here (a CUDA
device on a host without one) stop before any phase starts, naming them.
"""
import argparse
import json
import os
import re
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
    ap.add_argument('--cuda-graph', action='store_true',
                    help='CUDA only: capture the training step\'s forward + '
                    'backward (loss: cross-entropy on the head\'s logits) '
                    'and the inference forward as CUDA graphs and time '
                    'their replays (the optimizer and the loss scaler run '
                    'eagerly after each replay); what the step costs '
                    'without the CPU launching each kernel')
    ap.add_argument('--steps', type=int, default=9)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=0,
                    help='torch threads (0: torch default)')
    ap.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                    help='time steps and the matmul peak by wall clock '
                    '(default) or by the process CPU time (CPU only: on a '
                    'machine shared with other jobs, with --threads 1, the '
                    'work done by one core; %% of peak stays comparable '
                    'because the peak is timed the same way)')
    ap.add_argument('--phases', default='train,infer,flops,peak',
                    help='comma list of train, infer, flops (inference and '
                    'training-step FLOPs), peak (the machine\'s matmul rate '
                    'in this run: GFLOP/s and %% of it are reported), ckpt '
                    '(checkpoint sizes, full and trainable-only), profile '
                    '(torch.profiler over one training step and one '
                    'inference: self time by operator category)')
    ap.add_argument('--paired-peak', action='store_true',
                    help='after every timed step, measure the matmul peak '
                    'again in the same process and report each step as a %% '
                    'of the peak of its own moment (train_pct_of_paired_peak, '
                    'infer_pct_of_paired_peak: medians over the steps); for '
                    'a machine whose speed drifts between phases')
    ap.add_argument('--reference-repo', help='checkout of KHU-VLL/CAST: '
                    'benchmark the authors\' model instead')
    ap.add_argument('--runs', type=int, default=1,
                    help='fresh processes per phase (medians over all)')
    ap.add_argument('--side-by-side', action='store_true',
                    help='with --reference-repo: ours and theirs '
                    'alternately, with ratios')
    ap.add_argument('--reference-amp', choices=['none', 'bf16', 'fp16'],
                    default='none', help='autocast of the authors\' side in '
                    '--side-by-side')
    ap.add_argument('--json', help='also write the results here')
    ap.add_argument('--data', action='store_true',
                    help='measure the data pipeline instead of the model')
    ap.add_argument('--num-workers', type=int, default=0)
    ap.add_argument('--num-clips', type=int, default=32,
                    help='clips to load in --data mode')
    ap.add_argument('--speedups', metavar='SPEC',
                    help="model.backbone.speedups: none, cpu or a JSON dict")
    ap.add_argument('--compare-speedups', action='store_true',
                    help='reference vs each CPU speed-up (time, peak memory)')
    ap.add_argument('--cost-curve', action='store_true',
                    help='FLOPs (meta device, full size) and time / peak '
                    'memory against --frames, --sizes and --batches')
    ap.add_argument('--frames', default='8,16,32',
                    help='--cost-curve: clip lengths')
    ap.add_argument('--sizes', default='224,288',
                    help='--cost-curve: resolutions (pixels per side)')
    ap.add_argument('--batches', default='1,2,4',
                    help='--cost-curve: batch sizes')
    ap.add_argument('--curve-phases', default='train,infer',
                    help='--cost-curve: the measured phases (train, infer; '
                    'none: FLOPs only)')
    ap.add_argument('--timed', choices=['all', 'axes'], default='all',
                    help='--cost-curve: measure time / memory at every '
                    'setting, or only along the three axes through the '
                    'smallest setting (what the plot shows; the others get '
                    'FLOPs only)')
    ap.add_argument('--timing-cfg-options', nargs='+', action=DictAction,
                    default={}, help='--cost-curve: options of the timed '
                    'model only (e.g. a reduced depth); FLOPs are counted '
                    'at the config\'s size')
    ap.add_argument('--markdown', help='--cost-curve: write the table here')
    ap.add_argument('--plot', help='--cost-curve: write the PNG here')
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


def clip_inputs(model, batch, frames, size, gen):
    """One batch of random inputs for ``model``: a video (B, 3, T, H, W)
    of normal noise, or, for a backbone that reads other modalities too
    (CAVA, CA2ST: audio, and the segment times of time encodings), the dict
    of every input its recognizer's data preprocessor gives (video, audio
    as a normal log-mel-like spectrogram, increasing times in seconds;
    ``cast_mmaction.deployment.example_inputs``)."""
    import torch
    from cast_mmaction.deployment import (ExportError, example_inputs,
                                          input_spec as model_inputs)
    try:
        spec = model_inputs(model)
    except ExportError:  # not a CAST-family or frame-wise backbone
        spec = [('video', None)]
    if [name for name, _ in spec] == ['video']:
        return torch.randn(batch, 3, frames, *size, generator=gen)
    seed = int(torch.randint(0, 2**31 - 1, (1, ), generator=gen))
    return dict(zip([name for name, _ in spec],
                    example_inputs(spec, batch, seed)))


def inputs_map(fn, x):
    """``fn`` applied to the clip tensor ``x``, or to each of a dict's."""
    if isinstance(x, dict):
        return {k: fn(v) for k, v in x.items()}
    return fn(x)


def random_labels(num_classes, verb_noun=None):
    """``labels(batch, generator)``: random class indices (batch, ), or with
    ``verb_noun`` = (verbs, nouns) one [verb, noun] pair a clip (batch, 2),
    for a verb + noun head (EPIC-KITCHENS)."""
    import torch

    def labels(batch, gen):
        if verb_noun is None:
            return torch.randint(0, num_classes, (batch, ), generator=gen)
        return torch.stack([torch.randint(0, n, (batch, ), generator=gen)
                            for n in verb_noun], 1)

    return labels


def build_optimizer_ours(cfg, model):
    """The torch optimizer the config's ``optim_wrapper`` builds (type,
    arguments, constructor, paramwise_cfg), in a plain ``OptimWrapper``."""
    from mmengine.optim import build_optim_wrapper
    from cast_mmaction.utils import ensure_scope
    ensure_scope()
    ow = cfg.get('optim_wrapper')
    if not ow or 'optimizer' not in ow:
        raise SystemExit(f'{cfg.filename}: no optim_wrapper.optimizer in the '
                         f'config; the training step needs one')
    ow = ow.to_dict() if hasattr(ow, 'to_dict') else dict(ow)
    for key in ('loss_scale', 'dtype', 'accumulative_counts', 'clip_grad',
                'use_fsdp'):
        ow.pop(key, None)
    ow['type'] = 'OptimWrapper'
    return build_optim_wrapper(model, ow).optimizer


def parse_speedups(text):
    """``--speedups``: ``none`` -> None, a JSON dict -> dict, else the
    preset name."""
    if text == 'none':
        return None
    if text.lstrip().startswith('{'):
        from cast_mmaction.models.speedups import spec_from_json
        try:
            return spec_from_json(text, 'none, cpu')
        except ValueError as e:  # argparse's usage error form
            print(f'benchmark.py: error: argument --speedups: {e}',
                  file=sys.stderr)
            raise SystemExit(2) from None
    return text


# the rows of --compare-speedups: (label, --speedups value)
SPEEDUP_ROWS = [
    ('reference', 'none'),
    ('onednn_linear', json.dumps(dict(onednn_linear=True))),
    ('onednn_attention', json.dumps(dict(onednn_attention=True))),
    ('cpu_attention', json.dumps(dict(cpu_attention=True))),
    ('frozen_mlp', json.dumps(dict(frozen_mlp=True))),
    ('cpu_mlp', json.dumps(dict(frozen_mlp=True, cpu_mlp=True))),
    ("checkpoint='fusion'", json.dumps(dict(checkpoint='fusion'))),
    ('malloc_mmap_threshold=1M',
     json.dumps(dict(malloc_mmap_threshold=1 << 20))),
    ('malloc_trim', json.dumps(dict(malloc_trim=True))),
    ('cpu_block_cache', json.dumps(dict(cpu_block_cache=True))),
    ("'cpu' preset", 'cpu'),
]


def build_ours(args, cfg):
    from cast_mmaction.utils import build_model
    model_cfg = cfg.model.to_dict()
    bb = model_cfg['backbone']
    for e in bb.get('experts', {}).values():
        e['pretrained'] = None
    bb.pop('pretrained', None)
    if args.with_cp:
        bb['with_cp'] = True
    if args.speedups:
        bb['speedups'] = parse_speedups(args.speedups)
    model = build_model(model_cfg)
    frames, size = input_spec(model_cfg)
    num_classes = model_cfg['cls_head'].get('num_classes', 2)
    # a verb + noun head (EPIC-KITCHENS): one [verb, noun] label a clip
    verb_noun = tuple(getattr(model.cls_head, k, None)
                      for k in ('num_verbs', 'num_nouns'))
    labels = random_labels(num_classes,
                           None if None in verb_noun else verb_noun)

    def train_forward(x, labels):
        from mmaction.structures import ActionDataSample
        samples = [ActionDataSample().set_gt_label(
            l if l.ndim else int(l)) for l in labels]
        # the recognizer takes (N, views, C, T, H, W); an audio-visual one
        # a dict of (N, views, ...) inputs
        losses = model(inputs_map(lambda t: t[:, None], x), samples,
                       mode='loss')
        return sum(v for k, v in losses.items() if 'loss' in k)

    def infer_forward(x):
        feats = model.backbone(x)
        return model.cls_head(feats)

    def logits_train_forward(x, labels):
        # --cuda-graph: the recognizer's loss path builds data samples from
        # the labels with int(), a device-to-host copy that a CUDA graph
        # cannot capture; the same backbone, head and loss value, the labels
        # staying on the device
        import torch.nn.functional as F
        logits = infer_forward(x)
        if not hasattr(logits, 'float'):
            raise SystemExit(f'--cuda-graph: the head returns '
                             f'{type(logits).__name__}, not one tensor of '
                             f'logits; use a single-label config')
        # the head's label smoothing, as its loss applies it
        eps = getattr(model.cls_head, 'label_smooth_eps', 0) or 0
        return F.cross_entropy(logits.float(), labels, label_smoothing=eps)

    def optimizer():
        return build_optimizer_ours(cfg, model)

    return dict(model=model, frames=frames, size=size,
                num_classes=num_classes, labels=labels,
                train_forward=train_forward,
                graph_train_forward=logits_train_forward,
                infer_forward=infer_forward, optimizer=optimizer)


def _check_takes_speedups(backbone_type):
    """``--speedups`` on a backbone without the option: a clear error
    instead of the constructor's TypeError."""
    import inspect
    from mmaction.registry import MODELS
    from cast_mmaction.utils import ensure_scope
    ensure_scope()
    cls = MODELS.get(backbone_type) if isinstance(backbone_type, str) \
        else backbone_type
    if cls is not None and 'speedups' not in inspect.signature(
            cls.__init__).parameters:
        raise SystemExit(f'--speedups: backbone {backbone_type} has no CPU '
                         f'speed-ups (model.backbone.speedups is an option '
                         f'of CASTBackbone: CAST, CAVA, CA2ST); leave it out')


def _check_reference_comparable(model_cfg, config):
    """The authors' side builds their STCrossTransformer (a CLIP and a
    VideoMAE expert, one single-label head) whatever the config says; a
    config of another model (CAVA, CA2ST, EPIC-KITCHENS' verb + noun heads,
    other experts, a frame-wise ViT) would be timed against a different
    model without a word, so it stops here."""
    bb = model_cfg.get('backbone', {})
    experts = sorted(e.get('type', '?') for e in (
        bb.get('experts') or {}).values())
    head = model_cfg.get('cls_head', {}).get('type')
    if experts != ['CLIPViTExpert', 'VideoMAEExpert'] or head != 'CASTHead':
        raise SystemExit(
            f'--reference-repo: the authors\' side is their CAST (a CLIP and '
            f'a VideoMAE expert, one single-label head); {config} has '
            f'backbone {bb.get("type")} with experts {experts or "none"} and '
            f'head {head}: compare a CAST SSv2 / K400 config, or drop '
            f'--reference-repo')


def build_reference(args, cfg):
    """The authors' STCrossTransformer, frozen as their training script does
    (run_bidirection.py: unfreeze_block on cross/Adapter/ln_post/fc_norm/head),
    with torch AdamW at its defaults (for-loop implementation on CPU)."""
    import torch
    import torch.nn.functional as F
    repo = os.path.abspath(args.reference_repo)
    if not os.path.isfile(os.path.join(repo, 'models',
                                       'bidir_modeling_crossattn.py')):
        raise SystemExit(f'--reference-repo {args.reference_repo}: no '
                         f'models/bidir_modeling_crossattn.py there; give a '
                         f'checkout of https://github.com/KHU-VLL/CAST')
    sys.path.insert(0, repo)
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

    def optimizer():
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.05)

    return dict(model=model, frames=frames, size=size,
                num_classes=num_classes,
                labels=random_labels(num_classes),
                train_forward=train_forward,
                graph_train_forward=train_forward,
                infer_forward=infer_forward, optimizer=optimizer)


# ---------------------------------------------------------------------------
def run_phase(args, phase):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _load_cfg(args)
    builder = build_reference if args.reference_repo else build_ours
    built = builder(args, cfg)
    model = built['model']
    train_fwd, infer_fwd = built['train_forward'], built['infer_forward']
    frames, size = built['frames'], built['size']
    device = torch.device(args.device)
    model.to(device)
    cuda = device.type == 'cuda'
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(args.amp)
    b = args.batch_size
    gen = torch.Generator().manual_seed(0)
    x = inputs_map(lambda t: t.to(device),
                   clip_inputs(model, b, frames, size, gen))
    labels = built['labels'](b, gen).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    res = dict(trainable_params=sum(p.numel() for p in trainable),
               total_params=sum(p.numel() for p in model.parameters()))

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype,
                              enabled=amp_dtype is not None)

    if phase == 'ckpt':
        return dict(res, **checkpoint_sizes(model))

    if phase == 'flops':
        return dict(res, **count_flops(model, train_fwd, infer_fwd, x,
                                       labels, autocast))

    if phase == 'profile':
        return dict(res, **profile_categories(built, x, labels, autocast,
                                              sync, args.warmup))

    clock = get_clock(args)
    res['clock'] = args.clock
    if phase == 'peak':
        return dict(res, **matmul_peak(model, device, amp_dtype, frames,
                                       size, b, clock=clock))

    peaks = []
    paired = None
    if args.paired_peak:
        # the matmul rate right after each timed step, in this process: on a
        # machine whose speed drifts (a shared host) each step is divided by
        # the rate the machine had at that moment
        def paired():
            with torch.no_grad():
                return matmul_peak(model, device, amp_dtype, frames, size, b,
                                   reps=1, clock=clock)['peak_gflops']

    def graph_autocast():
        # the autocast cache of weight casts cannot outlive a graph capture
        # (torch.cuda.graph's notes): inside a captured region casts are not
        # cached
        return torch.autocast(device.type, dtype=amp_dtype,
                              enabled=amp_dtype is not None,
                              cache_enabled=False)

    if phase == 'train':
        model.train()
        fwd = torch.compile(train_fwd) if args.compile else train_fwd
        opt = built['optimizer']()
        res['optimizer'] = _describe_optimizer(opt)
        scaler = torch.amp.GradScaler(device.type,
                                      enabled=amp_dtype == torch.float16)
        if args.cuda_graph:
            graph_fwd = built['graph_train_forward']

            def fwd_bwd():
                with graph_autocast():
                    loss = graph_fwd(x, labels)
                scaler.scale(loss).backward()

            def eager_step():
                fwd_bwd()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)

            # gradients are None at the capture, so the backward allocates
            # them in the graph's pool and every replay rewrites them there:
            # no zero_grad between replays (it would drop those buffers)
            forward_backward = capture_cuda_graph(
                fwd_bwd, eager_step, max(args.warmup, 3)).replay
            zero_grad = None
        else:
            def forward_backward():
                with autocast():
                    loss = fwd(x, labels)
                scaler.scale(loss).backward()

            def zero_grad():
                opt.zero_grad(set_to_none=True)
        times, fb_times, cpu_times = [], [], []
        for i in range(args.warmup + args.steps):
            sync()
            c0 = time.process_time()
            t0 = clock()
            forward_backward()
            sync()
            t1 = clock()
            scaler.step(opt)
            scaler.update()
            if zero_grad:
                zero_grad()
            sync()
            if i >= args.warmup:
                times.append(clock() - t0)
                fb_times.append(t1 - t0)
                cpu_times.append(time.process_time() - c0)
                if paired:
                    peaks.append(paired())
        res['train_step_all_s'] = times
        res['train_fwd_bwd_all_s'] = fb_times
        # CPU seconds of all the process's threads, whatever the clock
        res['train_step_cpu_all_s'] = cpu_times
        if paired:
            res['train_paired_peak_all'] = peaks
    else:
        model.eval()
        fwd = torch.compile(infer_fwd) if args.compile else infer_fwd
        times, cpu_times = [], []
        with torch.no_grad():
            if args.cuda_graph:
                def graph_infer():
                    with graph_autocast():
                        infer_fwd(x)
                run = capture_cuda_graph(graph_infer, graph_infer,
                                         max(args.warmup, 3)).replay
            else:
                def run():
                    with autocast():
                        fwd(x)
            for i in range(args.warmup + args.steps):
                sync()
                c0 = time.process_time()
                t0 = clock()
                run()
                sync()
                if i >= args.warmup:
                    times.append(clock() - t0)
                    cpu_times.append(time.process_time() - c0)
                    if paired:
                        peaks.append(paired())
        res['infer_all_s'] = times
        res['infer_cpu_all_s'] = cpu_times
        if paired:
            res['infer_paired_peak_all'] = peaks
    if cuda:
        res[f'{phase}_peak_mem_gb'] = torch.cuda.max_memory_allocated(
            device) / 2**30
    else:
        # ru_maxrss is in KiB on Linux; the phase runs in its own process
        res[f'{phase}_peak_mem_gb'] = resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 2**20
    return res


def capture_cuda_graph(fn, warm_step, warmup):
    """``fn`` captured as a CUDA graph: ``warm_step`` runs ``warmup`` times
    on a side stream first (cuBLAS / cuDNN handles and workspaces, the
    optimizer's state, the allocator's blocks set up outside the capture, as
    ``torch.cuda.graph`` requires), then one call of ``fn`` is captured."""
    import torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            warm_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


# the operator categories of the ``profile`` phase: the first whose test
# matches an operator's name takes its self time
PROFILE_CATEGORIES = [
    ('matmul', ('addmm', 'aten::mm', 'bmm', 'baddbmm', 'matmul',
                'linear_pointwise', 'mkldnn_linear', 'aten::linear')),
    ('attention', ('scaled_dot_product', 'softmax', 'flash_attention',
                   'onednn_sdpa', 'cpu_sdpa')),
    ('norms', ('layer_norm', 'batch_norm', 'group_norm')),
    ('copies', ('copy', 'clone', 'contiguous', 'aten::cat', 'stack',
                'index', 'gather', 'scatter', 'roll', 'pad', 'repeat',
                'expand_as', 'fill_', 'zero_', 'aten::empty', 'as_strided')),
    ('optimizer', ('adam', 'foreach', 'sgd')),
    ('elementwise', ('add', 'mul', 'div', 'sub', 'gelu', 'silu', 'sigmoid',
                     'bias_act',
                     'sqrt', 'rsqrt', 'neg', 'exp', 'tanh', 'where',
                     'sum', 'mean', 'dropout', 'nll_loss', 'log_softmax',
                     'threshold', 'pow', 'clamp', 'masked')),
]


def op_category(name):
    """The category of a profiler operator name (:data:`PROFILE_CATEGORIES`;
    ``other`` when none matches)."""
    low = name.lower()
    for cat, keys in PROFILE_CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return 'other'


def profile_categories(built, x, labels, autocast, sync, warmup=1):
    """``torch.profiler`` over one training step (forward, backward,
    optimizer) and one inference forward, each after ``warmup`` untimed
    runs: self CPU time of every operator summed by category (matmul,
    attention, norms, copies, elementwise, optimizer, other) and the wall
    time of the profiled call; ``untraced`` is wall minus the operators'
    self time (Python, autograd bookkeeping between operators). Operators
    run their threads inside the call, so self times are wall times of the
    calling thread."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    model = built['model']
    opt = built['optimizer']()

    def train_step():
        with autocast():
            loss = built['train_forward'](x, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    def infer():
        with torch.no_grad(), autocast():
            built['infer_forward'](x)
        sync()

    out = {}
    for name, mode, fn in (('train', True, train_step),
                           ('infer', False, infer)):
        model.train(mode)
        for _ in range(max(warmup, 1)):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
        cats, ops = {}, {}
        for ev in prof.events():
            s = ev.self_cpu_time_total / 1e6
            if s <= 0:
                continue
            # an operator called by an attention operator (the matmuls and
            # exp of models/onednn_attention.py) is attention's
            cat, up = op_category(ev.name), ev.cpu_parent
            while up is not None and cat != 'attention':
                if op_category(up.name) == 'attention':
                    cat = 'attention'
                up = up.cpu_parent
            cats[cat] = cats.get(cat, 0.0) + s
            ops[ev.name] = ops.get(ev.name, 0.0) + s
        traced = sum(cats.values())
        cats['untraced'] = max(wall - traced, 0.0)
        out[f'profile_{name}_s'] = cats
        out[f'profile_{name}_wall_s'] = wall
        out[f'profile_{name}_top_ops_s'] = dict(
            sorted(ops.items(), key=lambda kv: -kv[1])[:15])
    return out


# operators that compute products, by the name after the namespace (aten.mm,
# aten.addmm_, cast_mmaction.cpu_sdpa_backward_kv, mkldnn._linear_pointwise):
# one that runs without a formula in torch.utils.flop_counter counts nothing,
# so the GFLOPs and every % of peak computed from them come out low without
# a word (an in-place addmm_ and a k / v attention backward did, once each)
_PRODUCT_OP = re.compile(r'mm|mv|dot|matmul|linear|conv|attention|attn|sdpa|'
                         r'einsum|gemm')


def _ops_seen():
    """A dispatch mode that records the overload packet of every operator
    that runs below it (entered before ``FlopCounterMode``, it sees what the
    counter executes after its decompositions)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpsSeen(TorchDispatchMode):

        def __init__(self):
            super().__init__()
            self.packets = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.packets.add(func.overloadpacket)
            return func(*args, **(kwargs or {}))

    return OpsSeen()


def uncounted_products(packets, registry=None):
    """The names of the operators among ``packets`` (overload packets that
    ran) whose names say they compute products but that have no FLOP
    formula in ``registry`` (torch.utils.flop_counter's), sorted."""
    from cast_mmaction.models.sdpa_ops import has_flop_formula
    return sorted({str(p) for p in packets
                   if _PRODUCT_OP.search(str(p).rsplit('.', 1)[-1])
                   and not has_flop_formula(p, registry)})


def count_flops(model, train_fwd, infer_fwd, x, labels, autocast):
    """FLOPs (``torch.utils.flop_counter``) of inference per clip and of one
    training step (forward + backward of the loss), on the path the model
    runs: oneDNN's linear (used by ``_Linear``, ``_FrozenMLP`` and
    ``linear`` of models/layers.py), the in-place ``addmm_`` and the C++
    attention kernels get formulas, the other matmuls and fused attention
    (forward and backward) have torch's. The training step is counted
    without activation checkpointing (model FLOPs: the recompute of
    ``with_cp`` / ``checkpoint_policy`` is extra work, not progress).
    ``flops_uncounted_ops``: operators that compute products but ran without
    a formula (their FLOPs are missing from both counts; a warning names
    them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from cast_mmaction.models.speedups import register_flop_formulas
    register_flop_formulas()
    model.eval()
    seen = _ops_seen()
    with seen, torch.no_grad(), FlopCounterMode(display=False) as fc:
        with autocast():
            infer_fwd(inputs_map(lambda t: t[:1], x))
    out = dict(gflops_per_clip=fc.get_total_flops() / 1e9)
    bb = getattr(model, 'backbone', None)
    cp_layers = getattr(bb, 'cp_layers', None)
    runner = getattr(bb, 'layer_runner', None)
    if cp_layers is not None:
        bb.cp_layers, bb.layer_runner = set(), None
    model.train()
    try:
        with seen, FlopCounterMode(display=False) as fc:
            with autocast():
                loss = train_fwd(x, labels)
            loss.backward()
    finally:
        if cp_layers is not None:
            bb.cp_layers, bb.layer_runner = cp_layers, runner
    model.zero_grad(set_to_none=True)
    out['train_gflops_per_step'] = fc.get_total_flops() / 1e9
    out['flops_uncounted_ops'] = uncounted_products(seen.packets)
    if out['flops_uncounted_ops']:
        print('WARNING: FLOPs: no formula in torch.utils.flop_counter for '
              f'{", ".join(out["flops_uncounted_ops"])}: their products are '
              'missing from gflops_per_clip / train_gflops_per_step and the '
              '% of peak is low; register one (register_flop_formula)',
              file=sys.stderr)
    return out



# ---------------------------------------------------------------------------
# FLOPs on the meta device (no memory, no data: exact at full size)
def build_meta(cfg, num_frames=None, img_size=None):
    """The config's model at full size on the meta device (no weights, no
    memory); ``num_frames`` / ``img_size`` override the backbone's. The
    batch blending of the preprocessor (a torch distribution, which samples
    on build) is left out: it has no FLOPs."""
    import torch
    from cast_mmaction.utils import build_model
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') \
        else dict(cfg.model)
    bb = model_cfg['backbone']
    for e in (bb.get('experts') or {}).values():
        if isinstance(e, dict):
            e['pretrained'] = None
    if num_frames is not None and 'num_frames' in bb:
        bb['num_frames'] = int(num_frames)  # else: frame-wise (MSCAViT)
    if img_size is not None:
        bb['img_size'] = int(img_size)
    if 'speedups' in bb:
        bb['speedups'] = None  # plain PyTorch modules: same FLOPs
    pre = model_cfg.get('data_preprocessor') or {}
    if pre.get('blending'):
        pre['blending'] = None
    with torch.device('meta'):
        model = build_model(model_cfg)
    return model


def meta_inputs(model, batch=1, num_frames=None):
    """``[(name, meta tensor)]`` of one view at ``batch``: the inputs the
    ONNX export reads from the model (``deployment.input_spec``: video,
    audio, times), else a video of the backbone's ``num_frames`` x
    ``img_size``."""
    import torch
    from cast_mmaction.deployment import ExportError, input_spec
    try:
        spec = input_spec(model, num_frames)
    except ExportError:
        bb = model.backbone
        size = getattr(bb, 'img_size', 224)
        h, w = tuple(size) if isinstance(size, (tuple, list)) else (size,
                                                                    size)
        t = int(num_frames or getattr(bb, 'num_frames', 8))
        spec = [('video', (3, t, h, w))]
    return [(name, torch.zeros((batch, ) + tuple(shape), device='meta'))
            for name, shape in spec]


def _nearest_counted_parent(key, counts):
    parts = key.split('.')
    for i in range(len(parts) - 1, 0, -1):
        parent = '.'.join(parts[:i])
        if parent in counts:
            return parent
    return None


def _module_groups(fc, model):
    """GFLOPs of each module class and of each module path (layer indices
    as ``*``), each module counted without its children: the share of the
    work each kind of module does."""
    import re
    counts = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
    names = {}
    for path, mod in model.named_modules():
        names[path] = type(mod).__name__
    # keys are '<class of the module called>.<path below it>'
    roots = {type(m).__name__: attr for attr, m in model.named_children()}
    children = {}
    for k, v in counts.items():
        parent = _nearest_counted_parent(k, counts)
        children[parent] = children.get(parent, 0) + v
    by_class, by_path = {}, {}
    for key, total in counts.items():
        head, _, rest = key.partition('.')
        path = roots.get(head)
        if path is None:
            continue
        path = f'{path}.{rest}' if rest else path
        # minus its nearest counted descendants (modules that ran no op
        # of their own, e.g. a block container, have no key)
        own = total - children.get(key, 0)
        if own <= 0:
            continue
        cls = names.get(path, '?')
        by_class[cls] = by_class.get(cls, 0) + own / 1e9
        pattern = re.sub(r'\.\d+(?=\.|$)', '.*', path)
        by_path[pattern] = by_path.get(pattern, 0) + own / 1e9
    return by_class, by_path


def meta_flops(cfg, batch=1, num_frames=None, img_size=None, train=True,
               breakdown=False, ops=False, model=None):
    """FLOPs (``torch.utils.flop_counter``) of the config's model at full
    size, counted on the meta device: ``gflops_forward`` (one view at
    ``batch``, eval mode, the backbone and the head) and, with ``train``,
    ``train_gflops_per_step`` (forward + backward of a cross-entropy over
    the head's scores; the loss's own FLOPs are elementwise, which the
    counter does not count). Exact, fast, and independent of the machine.
    ``breakdown``: the forward's GFLOPs by module class and module path
    (each module without its children). ``ops``: the training step's FLOPs
    by aten op (``train_by_op``). ``model``: a model already built on the
    meta device from ``cfg`` (then ``num_frames`` only sets the clip length
    of a frame-wise backbone).

    Attention runs on the meta device as its matmuls (``aten.bmm``): the
    backward is counted as model FLOPs (two matmuls per forward matmul). On
    CPU tensors (the ``flops`` phase) it runs as the fused kernel, whose
    backward torch counts with the recompute of the scores, so that phase's
    ``train_gflops_per_step`` is higher; the forward counts are the
    same (tests/test_benchmark.py)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    if model is None:
        model = build_meta(cfg, num_frames, img_size)
    inputs = meta_inputs(model, batch, num_frames)

    def run():
        x = (inputs[0][1] if [n for n, _ in inputs] == ['video']
             else dict(inputs))
        return model.cls_head(model.backbone(x))

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        run()
    out = dict(gflops_forward=fc.get_total_flops() / 1e9,
               input_shapes={n: list(t.shape) for n, t in inputs})
    if breakdown:
        out['forward_by_class'], out['forward_by_path'] = _module_groups(
            fc, model)
        out['forward_by_op'] = {
            str(op).split('.')[-2] if str(op).count('.') > 1 else str(op):
            n / 1e9 for op, n in fc.get_flop_counts()['Global'].items()}
    if train:
        model.train()
        with FlopCounterMode(display=False) as fc:
            scores = run()
            scores = scores if isinstance(scores, (tuple, list)) else [
                scores]
            loss = sum(F.cross_entropy(
                s, torch.zeros(s.shape[0], dtype=torch.long, device='meta'))
                for s in scores)
            loss.backward()
        out['train_gflops_per_step'] = fc.get_total_flops() / 1e9
        if ops:
            out['train_by_op'] = {str(k): v for k, v in
                                  fc.get_flop_counts()['Global'].items()}
    return out


def matmul_shapes(model, tokens, top=3):
    """The ``top`` largest distinct (in, out) linear shapes of the model, as
    (tokens, in, out) matmuls."""
    import torch.nn as nn
    shapes = {(m.in_features, m.out_features) for m in model.modules()
              if isinstance(m, nn.Linear)}
    shapes = sorted(shapes, key=lambda s: -s[0] * s[1])[:top]
    return [(tokens, k, n) for k, n in shapes] or [(tokens, 768, 3072)]


def get_clock(args):
    """The timer of the steps and of the peak: ``time.perf_counter`` or,
    with ``--clock cpu``, ``time.process_time`` (CPU seconds of all the
    process's threads)."""
    if getattr(args, 'clock', 'wall') == 'cpu':
        return time.process_time
    return time.perf_counter


def matmul_peak(model, device, amp_dtype, frames, size, batch, reps=5,
                clock=time.perf_counter):
    """The machine's dense matmul rate in this process (same threads, device
    and dtype as the model): the model's largest linear shapes at its token
    count, through ``F.linear`` (autocast dtype on CUDA / with ``--amp``)
    and, for fp32 on CPU, oneDNN's linear as well; each the best of ``reps``
    timed runs after one warm-up, alternated. The peak is the best rate of
    any shape and path: the yardstick the model's FLOP rate is divided by."""
    import torch
    import torch.nn.functional as F
    from cast_mmaction.models import speedups
    cuda = device.type == 'cuda'
    tokens = max(1024, batch * frames * (size[0] // 16) * (size[1] // 16))
    dtype = amp_dtype or torch.float32
    if not cuda and amp_dtype is None:
        dtype = torch.float32
    paths = {'F.linear': F.linear}
    if not cuda and dtype == torch.float32 and speedups._LP is not None:
        paths['onednn'] = lambda a, w, b: speedups._LP(a, w, b, 'none', [],
                                                       '')
    detail = {}
    gen = torch.Generator().manual_seed(0)
    for n, k, m in matmul_shapes(model, tokens):
        a = torch.randn(n, k, generator=gen).to(device, dtype)
        w = torch.randn(m, k, generator=gen).to(device, dtype)
        bias = torch.randn(m, generator=gen).to(device, dtype)
        best = dict.fromkeys(paths, float('inf'))
        with torch.no_grad():
            for i in range(reps + 1):
                for name, fn in paths.items():
                    if cuda:
                        torch.cuda.synchronize(device)
                    t0 = clock()
                    fn(a, w, bias)
                    if cuda:
                        torch.cuda.synchronize(device)
                    if i:
                        best[name] = min(best[name], clock() - t0)
        for name, t in best.items():
            detail[f'{name} {n}x{k}x{m}'] = 2 * n * k * m / t / 1e9
    # whether the model's matmuls run on oneDNN: its speed-ups, decided
    # from the config and the CPU's facts (models/speedups.py)
    sp = getattr(getattr(model, 'backbone', None), 'speedups', None)
    running = [] if sp is None else [
        k for k, (on, _) in sp.decide(device, dtype,
                                      amp_dtype is not None).items() if on]
    return dict(peak_gflops=max(detail.values()), peak_detail=detail,
                peak_dtype=str(dtype).replace('torch.', ''),
                onednn_linear_chosen='onednn_linear' in running,
                speedups_running=running)


def checkpoint_sizes(model):
    """MB on disk of the model's state dict as a full checkpoint and as the
    trainable-only checkpoint of ``TrainableCheckpointHook`` (the frozen
    expert parameters left out; optimizer state not included in either)."""
    import tempfile

    import torch
    from cast_mmaction.engine.trainable_checkpoint import (frozen_keys,
                                                           frozen_state)
    state = model.state_dict()
    experts = getattr(getattr(model, 'backbone', None), 'experts', None)
    dropped = set()
    for name, expert in (experts.items() if experts is not None else ()):
        dropped.update(frozen_keys(name, frozen_state(expert)))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, sd in (('full', state),
                        ('trainable_only', {k: v for k, v in state.items()
                                            if k not in dropped})):
            path = os.path.join(tmp, key + '.pth')
            torch.save(dict(state_dict=sd), path)
            out[f'ckpt_{key}_mb'] = os.path.getsize(path) / 1e6
    return out


def _describe_optimizer(opt):
    d = opt.defaults
    flags = [k for k in ('fused', 'foreach') if d.get(k)]
    return (f'{type(opt).__name__}({", ".join(flags) or "for-loop"}; '
            f'{len(opt.param_groups)} groups)')


def summarize(runs, batch_size):
    """Merge the results of repeated runs of the phases: medians over all
    steps and over runs, with ranges."""
    out = dict(batch_size=batch_size)
    for key in ('trainable_params', 'total_params', 'gflops_per_clip',
                'train_gflops_per_step', 'optimizer', 'ckpt_full_mb',
                'ckpt_trainable_only_mb', 'peak_dtype', 'flops_uncounted_ops',
                'onednn_linear_chosen', 'speedups_running'):
        vals = [r[key] for r in runs if key in r]
        if vals:
            out[key] = vals[0]

    def med(values):
        return statistics.median(values), min(values), max(values)

    for key in ('train_paired_peak_all', 'infer_paired_peak_all'):
        vals = [v for r in runs for v in r.get(key, [])]
        if vals:
            out[key] = vals
    steps = [t for r in runs for t in r.get('train_step_all_s', [])]
    if steps:
        out['train_step_s'], lo, hi = med(steps)
        out['train_step_s_range'] = [lo, hi]
        out['train_step_all_s'] = steps
        fb = [t for r in runs for t in r.get('train_fwd_bwd_all_s', [])]
        out['train_fwd_bwd_s'] = statistics.median(fb)
        out['train_optimizer_step_s'] = statistics.median(
            [a - b for a, b in zip(steps, fb)])
        cpu = [t for r in runs for t in r.get('train_step_cpu_all_s', [])]
        if cpu:
            out['train_step_cpu_s'] = statistics.median(cpu)
    inf = [t for r in runs for t in r.get('infer_all_s', [])]
    if inf:
        m, lo, hi = med(inf)
        out['infer_s_per_clip'] = m / batch_size
        out['infer_s_per_clip_range'] = [lo / batch_size, hi / batch_size]
        out['clips_per_s'] = batch_size / m
        out['infer_all_s'] = inf
        cpu = [t for r in runs for t in r.get('infer_cpu_all_s', [])]
        if cpu:
            out['infer_cpu_s_per_clip'] = statistics.median(cpu) / batch_size
    peaks = [r['peak_gflops'] for r in runs if 'peak_gflops' in r]
    if peaks:
        out['peak_gflops'], lo, hi = med(peaks)
        out['peak_gflops_range'] = [lo, hi]
        out['peak_detail'] = [r['peak_detail'] for r in runs
                              if 'peak_detail' in r]
    for phase in ('train', 'infer'):
        # profile: the median over runs of each category's seconds
        profs = [r[f'profile_{phase}_s'] for r in runs
                 if f'profile_{phase}_s' in r]
        if profs:
            cats = sorted({c for p in profs for c in p})
            out[f'profile_{phase}_s'] = {
                c: statistics.median(p.get(c, 0.0) for p in profs)
                for c in cats}
            out[f'profile_{phase}_wall_s'] = statistics.median(
                r[f'profile_{phase}_wall_s'] for r in runs
                if f'profile_{phase}_wall_s' in r)
            out[f'profile_{phase}_top_ops_s'] = next(
                r[f'profile_{phase}_top_ops_s'] for r in runs
                if f'profile_{phase}_top_ops_s' in r)
        mems = [r[f'{phase}_peak_mem_gb'] for r in runs
                if f'{phase}_peak_mem_gb' in r]
        if mems:
            out[f'{phase}_peak_mem_gb'], lo, hi = med(mems)
            out[f'{phase}_peak_mem_gb_range'] = [lo, hi]
    return out


def add_efficiency(res, peak=None):
    """Achieved GFLOP/s of the training step and of inference, and their
    share of the matmul peak measured in the same run (``peak``, default the
    result's own ``peak_gflops``), in place."""
    peak = peak or res.get('peak_gflops')
    if 'train_gflops_per_step' in res and 'train_step_s' in res:
        res['train_gflops_per_s'] = (res['train_gflops_per_step']
                                     / res['train_step_s'])
        if 'train_fwd_bwd_s' in res:
            res['train_fwd_bwd_gflops_per_s'] = (
                res['train_gflops_per_step'] / res['train_fwd_bwd_s'])
    if 'gflops_per_clip' in res and 'infer_s_per_clip' in res:
        res['infer_gflops_per_s'] = (res['gflops_per_clip']
                                     / res['infer_s_per_clip'])
    if peak:
        for key in ('train', 'train_fwd_bwd', 'infer'):
            if f'{key}_gflops_per_s' in res:
                res[f'{key}_pct_of_peak'] = (100 * res[f'{key}_gflops_per_s']
                                             / peak)
    # --paired-peak: each step's rate over the matmul rate measured right
    # after it, median over the steps
    for key, flops, times, per in (
            ('train', 'train_gflops_per_step', 'train_step_all_s', 1),
            ('infer', 'gflops_per_clip', 'infer_all_s',
             res.get('batch_size', 1))):
        peaks = res.get(f'{key}_paired_peak_all')
        if peaks and flops in res and res.get(times):
            pct = [100 * res[flops] * per / t / p
                   for t, p in zip(res[times], peaks)]
            res[f'{key}_pct_of_paired_peak'] = statistics.median(pct)
            res[f'{key}_paired_peak_gflops'] = statistics.median(peaks)
    return res


def machine_facts(args):
    import platform

    import torch

    from cast_mmaction.utils import cpu_facts
    facts = dict(torch=torch.__version__, python=platform.python_version(),
                 threads=args.threads or torch.get_num_threads())
    cpu = cpu_facts()
    if cpu:
        facts['cpu'] = (f"{cpu['cpu_model']} x {cpu['cpu_count']}"
                        if cpu['cpu_model'] else '?')
        isa = cpu['cpu_isa']
        facts['cpu_bf16'] = 'avx512_bf16' in isa or 'amx_bf16' in isa
        facts['cpu_avx512'] = 'avx512f' in isa
        facts['cpu_isa'] = isa
    if torch.cuda.is_available() and args.device.startswith('cuda'):
        facts['gpu'] = torch.cuda.get_device_name(torch.device(args.device))
    return facts


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


def _child(phase, argv):
    cmd = [sys.executable, os.path.abspath(__file__), *argv, '--_phase', phase]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f'benchmark phase {phase} failed')
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res['load_avg_1min'] = os.getloadavg()[0]
    return res


MULTI_VALUE = ('--cfg-options', '--timing-cfg-options')


def _strip(argv, *flags, with_value=()):
    """argv without ``flags`` and without those in ``with_value`` with their
    value(s) (all values up to the next option for ``--cfg-options``)."""
    out, skip = [], 0
    for a in argv:
        if skip == 1:
            skip = 0
            continue
        if skip == 2:
            if not a.startswith('--'):
                continue
            skip = 0
        name = a.split('=', 1)[0]
        if name in flags:
            continue
        if name in with_value:
            if '=' not in a:
                skip = 2 if name in MULTI_VALUE else 1
            continue
        out.append(a)
    return out


def _side_argv(argv, side, args):
    base = _strip(argv, '--side-by-side', with_value=('--json', '--runs',
                                                      '--reference-amp'))
    if side == 'ours':
        return _strip(base, with_value=('--reference-repo', ))
    base = _strip(base, '--with-cp', '--compile',
                  with_value=('--amp', '--cfg-options'))
    return base + ['--amp', args.reference_amp]


def _print_profile(sides):
    """The ``profile`` phase's seconds by category, one column per side
    (``{name: summarized result}``), with % of the profiled wall time."""
    for phase in ('train', 'infer'):
        key = f'profile_{phase}_s'
        have = {n: r for n, r in sides.items() if key in r}
        if not have:
            continue
        cats = [c for c, _ in PROFILE_CATEGORIES] + ['other', 'untraced']
        print(f'profile, {phase} (s, % of wall):' + ''.join(
            f'{n:>22s}' for n in have))
        for c in cats + ['wall']:
            cells = []
            for r in have.values():
                wall = r[f'profile_{phase}_wall_s']
                v = wall if c == 'wall' else r[key].get(c, 0.0)
                cells.append(f'{v:8.3f} ({100 * v / wall:5.1f} %)')
            print(f'  {c:<30s}' + ''.join(f'{x:>22s}' for x in cells))


def _print_table(res):
    rows = [(k, v) for k, v in res.items()
            if not k.endswith('_all_s') and not isinstance(v, dict)
            and k != 'peak_detail']
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        if isinstance(v, float):
            v = f'{v:.4g}'
        elif isinstance(v, list) and v and isinstance(v[0], float):
            v = '[' + ', '.join(f'{x:.4g}' for x in v) + ']'
        print(f'{k:<{width}}  {v}')


SIDE_BY_SIDE_ROWS = [
    # key, label, goal (ours / theirs <= goal)
    ('train_step_s', 'training step (s)', 0.5),
    ('train_peak_mem_gb', 'training peak RSS (GB)', 0.5),
    ('infer_s_per_clip', 'inference per clip (s)', 0.6),
    ('infer_peak_mem_gb', 'inference peak RSS (GB)', None),
    ('train_step_cpu_s', 'training step CPU time (s)', None),
    ('infer_cpu_s_per_clip', 'inference CPU time (s)', None),
    ('train_fwd_bwd_s', 'forward + backward (s)', None),
    ('train_optimizer_step_s', 'optimizer step (s)', None),
    ('train_gflops_per_s', 'training GFLOP/s', None),
    ('train_pct_of_peak', 'training % of matmul peak', None),
    ('infer_gflops_per_s', 'inference GFLOP/s', None),
    ('infer_pct_of_peak', 'inference % of matmul peak', None),
    ('train_pct_of_paired_peak', 'training % of paired peak', None),
    ('infer_pct_of_paired_peak', 'inference % of paired peak', None),
]


def _print_side_by_side(ours, theirs, cuda=False):
    """The table of both sides with ratios. On CUDA the memory rows are
    ``torch.cuda.max_memory_allocated`` and the CPU-time rows are left out:
    ``torch.cuda.synchronize`` spin-waits, so a step's process CPU time
    there counts the wait for the GPU, not the host's work (the JSON keeps
    them)."""
    print(f'{"":28s} {"ours":>16s} {"authors":>16s} {"ratio":>7s}  goal')
    for key, label, goal in SIDE_BY_SIDE_ROWS:
        if key not in ours or key not in theirs:
            continue
        if cuda and '_cpu_' in key:
            continue
        if cuda:
            label = label.replace('peak RSS', 'peak GPU mem')
        o, t = ours[key], theirs[key]
        rk = key + '_range'

        def fmt(v, r):
            return f'{v:.3g}' + (f' [{r[0]:.3g}-{r[1]:.3g}]' if r else '')
        ratio = o / t if t else float('nan')
        mark = '' if goal is None else (
            f'<= {goal}: ' + ('met' if ratio <= goal else 'not met'))
        print(f'{label:28s} {fmt(o, ours.get(rk)):>16s} '
              f'{fmt(t, theirs.get(rk)):>16s} {ratio:7.3f}  {mark}')


def runnable_speedup_rows(facts=None):
    """:data:`SPEEDUP_ROWS` that this CPU can run (``cpu_attention`` and
    ``cpu_mlp`` need AVX-512F); a row left out is printed with the
    reason."""
    from cast_mmaction.models import speedups
    rows = []
    for label, spec in SPEEDUP_ROWS:
        try:
            speedups.resolve(parse_speedups(spec), facts)
        except ValueError as e:
            print(f'{label}: left out ({e})')
            continue
        rows.append((label, spec))
    return rows


def compare_speedups(argv, args, phases):
    """The phases for each row of :data:`SPEEDUP_ROWS`, alternated
    ``--runs`` times; prints time and peak memory against the reference."""
    base = _strip(argv, '--compare-speedups',
                  with_value=('--json', '--runs', '--speedups'))
    rows = runnable_speedup_rows()
    runs = {label: [] for label, _ in rows}
    for _ in range(max(args.runs, 1)):
        for label, spec in rows:  # alternated
            for phase in phases:
                runs[label].append(_child(phase, base + ['--speedups', spec]))
    out = {label: summarize(r, args.batch_size) for label, r in runs.items()}
    ref = out['reference']
    keys = [k for k in ('train_step_s', 'train_peak_mem_gb',
                        'infer_s_per_clip', 'infer_peak_mem_gb')
            if k in ref]
    print(f'{"":28s}' + ''.join(f'{k:>22s}' for k in keys))
    for label, r in out.items():
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append('-' if v is None else
                         f'{v:.4g} ({v / ref[k]:.2f}x)' if ref[k] else
                         f'{v:.4g}')
        print(f'{label:28s}' + ''.join(f'{c:>22s}' for c in cells))
    return out



# ---------------------------------------------------------------------------
# --cost-curve: FLOPs (meta device, full size) and measured time / memory
# against frames, resolution and batch
CURVE_COLUMNS = [
    # key, header, format
    ('frames', 'frames', '{}'),
    ('img_size', 'size', '{}'),
    ('batch', 'batch', '{}'),
    ('gflops_forward', 'forward GFLOPs (full)', '{:.5g}'),
    ('train_gflops_per_step', 'train-step GFLOPs (full)', '{:.5g}'),
    ('timed_gflops_forward', 'forward GFLOPs (timed model)', '{:.4g}'),
    ('train_step_s', 'train step (s)', '{:.3f}'),
    ('infer_s_per_clip', 'inference (s/clip)', '{:.3f}'),
    ('train_peak_mem_gb', 'train peak RSS (GB)', '{:.2f}'),
    ('infer_peak_mem_gb', 'infer peak RSS (GB)', '{:.2f}'),
]


def _int_list(text, name):
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise SystemExit(f'{name} {text!r}: give comma-separated integers, '
                         f'e.g. {name} 8,16,32')
    if not values or min(values) < 1:
        raise SystemExit(f'{name} {text!r}: give positive integers')
    return values


def _raw_values(argv, flag):
    """The tokens after ``flag`` up to the next option (``--cfg-options``
    as typed, to pass on to a child)."""
    out, on = [], False
    for a in argv:
        if a == flag:
            on = True
            continue
        if on and a.startswith('--'):
            on = False
        if on:
            out.append(a)
    return out


def curve_settings(args):
    frames = _int_list(args.frames, '--frames')
    sizes = _int_list(args.sizes, '--sizes')
    batches = _int_list(args.batches, '--batches')
    return [(f, s, b) for f in frames for s in sizes for b in batches]


def _curve_child_argv(argv, args, frames, size, batch, reference=False):
    base = _strip(argv, '--cost-curve', with_value=(
        '--json', '--runs', '--frames', '--sizes', '--batches',
        '--curve-phases', '--timing-cfg-options', '--markdown', '--plot',
        '--cfg-options', '--batch-size', '--reference-repo', '--phases'))
    setting = [f'model.backbone.num_frames={frames}',
               f'model.backbone.img_size={size}']
    if reference:
        # their builder reads frames and size from the config; their depth
        # is their model's (our --cfg-options do not reach it)
        opts = setting
        base = base + ['--reference-repo', args.reference_repo]
    else:
        opts = (_raw_values(argv, '--cfg-options')
                + _raw_values(argv, '--timing-cfg-options') + setting)
    return base + ['--batch-size', str(batch), '--cfg-options', *opts]


def cost_curve(argv, args):
    """One row per (frames, size, batch): FLOPs of the config at full size
    on the meta device (``meta_flops``: forward of one view at the batch and
    the training step), and, for the phases of ``--curve-phases``, the
    training-step time, inference time and peak memory measured in fresh
    processes on the model of ``--cfg-options`` + ``--timing-cfg-options``
    (e.g. a reduced depth). With ``--reference-repo``: the authors' model
    at the same settings (their full depth), where their code accepts it."""
    cfg = _load_cfg(args)
    bb = cfg.model.get('backbone', {})
    if 'num_frames' not in bb or 'img_size' not in bb:
        raise SystemExit(
            f'{args.config}: --cost-curve sets model.backbone.num_frames and '
            f'model.backbone.img_size, which this backbone '
            f'({bb.get("type")}) does not have')
    timing_cfg = _load_cfg(args)
    timing_cfg.merge_from_dict(args.timing_cfg_options)
    phases = [p.strip() for p in args.curve_phases.split(',')
              if p.strip() and p.strip() != 'none']
    bad = set(phases) - {'train', 'infer'}
    if bad:
        raise SystemExit(f'--curve-phases: {sorted(bad)}; choose from '
                         f'train, infer (or none)')
    rows, authors = [], []
    settings = curve_settings(args)
    base = tuple(min(s[i] for s in settings) for i in range(3))
    for frames, size, batch in settings:
        row = dict(frames=frames, img_size=size, batch=batch)
        full = meta_flops(cfg, batch, frames, size)
        row.update(gflops_forward=full['gflops_forward'],
                   train_gflops_per_step=full['train_gflops_per_step'],
                   input_shapes=full['input_shapes'])
        off_axes = sum(v != b for v, b in zip((frames, size, batch), base))
        timed = bool(phases) and (args.timed == 'all' or off_axes <= 1)
        if timed:
            row['timed_gflops_forward'] = meta_flops(
                timing_cfg, batch, frames, size, train=False)[
                    'gflops_forward']
            child = _curve_child_argv(argv, args, frames, size, batch)
            runs = [_child(p, child) for _ in range(max(args.runs, 1))
                    for p in phases]
            summary = summarize(runs, batch)
            row.update({k: summary[k] for k, _, _ in CURVE_COLUMNS
                        if k in summary})
            row['load_avg_1min'] = [r['load_avg_1min'] for r in runs]
        rows.append(row)
        print(_curve_line(row), flush=True)
        if args.reference_repo and timed:
            theirs = dict(frames=frames, img_size=size, batch=batch)
            child = _curve_child_argv(argv, args, frames, size, batch,
                                      reference=True)
            try:
                runs = [_child(p, child) for _ in range(max(args.runs, 1))
                        for p in phases + ['flops']]
            except SystemExit as e:  # their code rejects the setting
                theirs['error'] = str(e)
            else:
                summary = summarize(runs, batch)
                theirs.update({k: summary[k] for k, _, _ in CURVE_COLUMNS
                               if k in summary})
                theirs['gflops_forward'] = summary.get('gflops_per_clip')
            authors.append(theirs)
            print('authors: ' + _curve_line(theirs), flush=True)
    # the breakdown of the forward at the first and the largest setting
    breakdown = {}
    ends = [(r['frames'], r['img_size']) for r in (rows[0], rows[-1])]
    for frames, size in dict.fromkeys(ends):
        b = meta_flops(cfg, 1, frames, size, train=False, breakdown=True)
        breakdown[f'{frames}x{size}'] = {k: b[k] for k in (
            'forward_by_class', 'forward_by_path', 'forward_by_op')}
    return dict(rows=rows, authors=authors, breakdown=breakdown,
                timing_cfg_options=args.timing_cfg_options,
                phases=phases)


def _curve_line(row):
    cells = []
    for key, head, fmt in CURVE_COLUMNS:
        if row.get(key) is not None:
            cells.append(f'{head} ' + fmt.format(row[key]))
    if 'error' in row:
        cells.append('failed: ' + row['error'])
    return ', '.join(cells)


def curve_markdown(curve, machine=None):
    """The cost curve as a markdown table (columns present in any row)."""
    rows = curve['rows']
    cols = [c for c in CURVE_COLUMNS if any(c[0] in r for r in rows)]
    lines = ['| ' + ' | '.join(h for _, h, _ in cols) + ' |',
             '|' + ' --- |' * len(cols)]
    for r in rows:
        lines.append('| ' + ' | '.join(
            fmt.format(r[k]) if r.get(k) is not None else '-'
            for k, _, fmt in cols) + ' |')
    if curve.get('authors'):
        lines += ['', 'Authors\' model (their full depth):', '',
                  '| frames | size | batch | forward GFLOPs | train step (s) '
                  '| inference (s/clip) | train peak RSS (GB) |',
                  '| --- | --- | --- | --- | --- | --- | --- |']
        for r in curve['authors']:
            if 'error' in r:
                lines.append(f"| {r['frames']} | {r['img_size']} | "
                             f"{r['batch']} | not accepted: {r['error']} "
                             f"| | | |")
                continue
            lines.append('| ' + ' | '.join(
                '-' if r.get(k) is None else fmt.format(r[k])
                for k, fmt in (('frames', '{}'), ('img_size', '{}'),
                               ('batch', '{}'), ('gflops_forward', '{:.5g}'),
                               ('train_step_s', '{:.3f}'),
                               ('infer_s_per_clip', '{:.3f}'),
                               ('train_peak_mem_gb', '{:.2f}'))) + ' |')
    if machine:
        lines += ['', 'machine: ' + ', '.join(
            f'{k} {v}' for k, v in machine.items() if k != 'cpu_isa')]
    return '\n'.join(lines) + '\n'


def plot_curve(curve, path):
    """Three panels (frames, resolution, batch; the others at their
    smallest value): each quantity relative to its value at the panel's
    smallest setting, log-log, with the linear reference."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    rows = curve['rows']
    f0 = min(r['frames'] for r in rows)
    s0 = min(r['img_size'] for r in rows)
    b0 = min(r['batch'] for r in rows)
    panels = [('frames', 'frames', dict(img_size=s0, batch=b0)),
              ('img_size', 'resolution (pixels per side)',
               dict(frames=f0, batch=b0)),
              ('batch', 'batch', dict(frames=f0, img_size=s0))]
    series = [('gflops_forward', 'forward FLOPs'),
              ('train_gflops_per_step', 'train-step FLOPs'),
              ('timed_gflops_forward', 'forward FLOPs (timed model)'),
              ('train_step_s', 'train step time'),
              ('infer_s_per_clip', 'inference time per clip'),
              ('train_peak_mem_gb', 'train peak RSS')]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (axis, label, fixed) in zip(axes, panels):
        sel = sorted((r for r in rows
                      if all(r[k] == v for k, v in fixed.items())),
                     key=lambda r: r[axis])
        xs = [r[axis] for r in sel]
        if len(xs) < 2:
            ax.set_visible(False)
            continue
        ax.plot(xs, [x / xs[0] for x in xs], 'k:', label='linear')
        if axis == 'img_size':
            ax.plot(xs, [(x / xs[0])**2 for x in xs], 'k--',
                    label='quadratic (pixels)')
        for key, name in series:
            ys = [r.get(key) for r in sel]
            if all(y is not None for y in ys) and ys[0]:
                ax.plot(xs, [y / ys[0] for y in ys], 'o-', label=name)
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        top = ax.get_ylim()[1]
        ticks = [v for v in (1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16)
                 if v <= top]
        ax.set_yticks(ticks)
        ax.set_yticklabels([f'{v:g}' for v in ticks])
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(f'relative to {label.split()[0]} = {xs[0]}')
        ax.set_title(', '.join(f'{k} {v}' for k, v in fixed.items()))
        ax.grid(True, which='both', alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._phase:
        print(json.dumps(run_phase(args, args._phase)))
        return
    if args.side_by_side and not args.reference_repo:
        raise SystemExit('--side-by-side needs --reference-repo DIR')
    if args.cuda_graph and not args.device.startswith('cuda'):
        raise SystemExit(f'--cuda-graph captures CUDA graphs: it needs '
                         f'--device cuda, not {args.device}')
    if args.cuda_graph and (args.compile or args.with_cp):
        raise SystemExit('--cuda-graph times the eager model captured as it '
                         'is: drop --compile and --with-cp')
    if args.clock == 'cpu' and not args.device.startswith('cpu'):
        raise SystemExit('--clock cpu times CPU work; on --device '
                         f'{args.device} use the default --clock wall')
    # in the parent, before a phase's child dies on them with a traceback
    if not os.path.isfile(args.config):
        raise SystemExit(f'config {args.config}: no such file')
    from cast_mmaction.utils import device_problem
    problem = device_problem(args.device)
    if problem:
        raise SystemExit(f'--device {args.device}: {problem}')
    speedups = args.compare_speedups or args.speedups not in (None, 'none')
    if speedups or args.reference_repo:
        model_cfg = _load_cfg(args).model
        if speedups:
            _check_takes_speedups(model_cfg['backbone']['type'])
        if args.reference_repo:
            _check_reference_comparable(model_cfg, args.config)
    if args.reference_repo and (args.reference_amp if args.side_by_side
                                else args.amp) == 'bf16':
        # their LayerNorm.forward casts back only from fp16 / fp32 and
        # fails with UnboundLocalError on a bf16 input
        raise SystemExit('the authors\' model has no bf16 path (its '
                         'LayerNorm handles fp16 and fp32 inputs only): use '
                         '--reference-amp none or fp16 for their side')
    if args.data:
        res = run_data(args)
        _print_table(res)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(res, f, indent=2)
        return res
    if args.cost_curve:
        machine = machine_facts(args)
        curve = cost_curve(argv, args)
        res = dict(config=args.config, cfg_options=args.cfg_options,
                   device=args.device, clock=args.clock, steps=args.steps,
                   warmup=args.warmup, runs=args.runs, machine=machine,
                   **curve)
        table = curve_markdown(curve, machine)
        print(table)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(res, f, indent=2)
        if args.markdown:
            with open(args.markdown, 'w') as f:
                f.write(table)
        if args.plot:
            plot_curve(curve, args.plot)
        return res
    phases = [p.strip() for p in args.phases.split(',') if p.strip()]
    common = dict(config=args.config, batch_size=args.batch_size,
                  device=args.device, clock=args.clock,
                  machine=machine_facts(args))
    if args.compare_speedups:
        res = dict(common, speedups=compare_speedups(argv, args, phases))
    elif args.side_by_side:
        sides = {'ours': [], 'theirs': []}
        for _ in range(max(args.runs, 1)):
            for side in ('ours', 'theirs'):  # interleaved
                child = _side_argv(argv, side, args)
                for phase in phases:
                    sides[side].append(_child(phase, child))
        ours = dict(summarize(sides['ours'], args.batch_size), amp=args.amp,
                    with_cp=args.with_cp, compile=args.compile,
                    cuda_graph=args.cuda_graph,
                    cfg_options=args.cfg_options, model='ours')
        theirs = dict(summarize(sides['theirs'], args.batch_size),
                      amp=args.reference_amp, cuda_graph=args.cuda_graph,
                      model='authors')
        # one yardstick for both sides: the matmul peak over all their runs
        peaks = [r['peak_gflops'] for side in sides.values() for r in side
                 if 'peak_gflops' in r]
        peak = max(peaks) if peaks else None
        for side in (ours, theirs):
            add_efficiency(side, peak)
            if peak:
                side['peak_gflops_both_sides'] = peak
        ours['load_avg_1min'] = [r['load_avg_1min'] for r in sides['ours']]
        theirs['load_avg_1min'] = [r['load_avg_1min']
                                   for r in sides['theirs']]
        res = dict(common, runs=args.runs, ours=ours, theirs=theirs)
        for name, side in (('ours', ours), ('authors', theirs)):
            print(f'== {name}')
            _print_table(side)
        _print_side_by_side(ours, theirs,
                            cuda=args.device.startswith('cuda'))
        _print_profile({'ours': ours, 'authors': theirs})
    else:
        runs = []
        for _ in range(max(args.runs, 1)):
            for phase in phases:
                runs.append(_child(phase, argv))
        res = dict(common, amp=args.amp, with_cp=args.with_cp,
                   compile=args.compile, cuda_graph=args.cuda_graph,
                   runs=args.runs, model='authors' if args.reference_repo else 'ours')
        res.update(summarize(runs, args.batch_size))
        add_efficiency(res)
        res['load_avg_1min'] = [r['load_avg_1min'] for r in runs]
        _print_table(res)
        _print_profile({res['model']: res})
    print('machine: ' + ', '.join(f'{k} {v}' for k, v in
                                  common['machine'].items()))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == '__main__':
    main()
