#!/usr/bin/env python
"""Check the GPU training path of the CAST SSv2 recipe in one command.

    python tools/gpu_check.py --out gpu_check.json           # on a GPU
    python tools/gpu_check.py --device cpu --tiny   # the script itself

Runs the recipe's model (configs/cast_ssv2.py, ViT-B, random weights) on
CUDA and writes one JSON object (stdout, and --out):

* ``amp_train``: ``--steps`` (20) Runner training steps (``model.train_step``:
  data preprocessor with Mixup, loss, the recipe's fp16 ``AmpOptimWrapper``
  with its gradient accumulation) at ``--batch`` (6): every loss finite, the
  loss scale after each step;
* ``precision``: fp32 vs fp16-autocast vs bf16-autocast on one input (train
  mode, drop path 0, adapters and B-CA given random non-zero weights so
  every path carries signal): relative differences of the logits and of the
  trainable gradients (global and per tensor);
* ``sdpa``: the ``scaled_dot_product_attention`` kernels a training forward
  under fp16 autocast dispatches to (flash / memory-efficient / cudnn /
  math), from the profiler; fails if any call takes the math kernel;
* ``cuda_graph``: the recipe's training step (fp16 ``AmpOptimWrapper``,
  accumulation 4, Mixup, drop path) for ``--steps`` iterations three times
  from the same weights and seeds: MMEngine's eager ``train_step`` twice and
  the CUDA-graph loop's step (``GraphedTrainStep``, captured after 3 eager
  iterations) once; passes when every loss is finite and the graph run's
  weights are as close to the eager run's as the two eager runs are to each
  other (at most 2x their difference plus 1e-6 relative: GPU kernels with
  atomics are not bit-reproducible eager to eager); reports both, bit
  equality, the step times (eager vs replayed, after the warm-up) and each
  run's peak allocated / peak and final reserved GPU memory;
* ``fsdp`` / ``deepspeed``: configs/cast_ssv2_fsdp.py and
  cast_ssv2_deepspeed.py, one training step each on one GPU (a one-process
  group), in a subprocess each; DeepSpeed is skipped when not installed.

Exit status 0 when every check that ran passed, 1 otherwise, 2 without a
CUDA device (the GPU path cannot be checked on a CPU-only machine). With
``--device cpu --tiny`` everything is built and run once at a tiny size on
the CPU up to what needs CUDA (fp32 OptimWrapper instead of AMP, bf16
autocast only, strategies built but not run): a test of the script, not of
the GPU path.
"""
import argparse
import copy
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = dict(recipe='configs/cast_ssv2.py',
               fsdp='configs/cast_ssv2_fsdp.py',
               deepspeed='configs/cast_ssv2_deepspeed.py')
TINY = dict(num_frames=4, img_size=32, down_ratio=2, embed_dim=32, depth=2,
            num_heads=2, patch_size=16, mlp_ratio=4, tubelet_size=2,
            composition=False, num_classes=174)
# pass limits of the precision check (relative L2 differences to fp32)
PRECISION_LIMITS = dict(float16=dict(logits=1e-2, grad=5e-2),
                        bfloat16=dict(logits=5e-2, grad=2e-1))
SDPA_KERNELS = (('_scaled_dot_product_flash_attention_for_cpu', 'cpu_flash'),
                ('_scaled_dot_product_flash_attention', 'flash'),
                ('_scaled_dot_product_efficient_attention', 'mem_efficient'),
                ('_scaled_dot_product_cudnn_attention', 'cudnn'),
                ('_scaled_dot_product_attention_math', 'math'))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--device', default='cuda', help='cuda[:i] (default) or '
                    'cpu (with --tiny: test the script)')
    ap.add_argument('--tiny', action='store_true',
                    help='a tiny model (width 32, 2 layers, 4 frames of 32 '
                    'px) instead of the recipe\'s ViT-B')
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--batch', type=int, default=6)
    ap.add_argument('--precision-batch', type=int, default=2)
    ap.add_argument('--checks', default='amp_train,precision,sdpa,'
                    'cuda_graph,fsdp,deepspeed',
                    help='comma-separated subset')
    ap.add_argument('--out', help='also write the JSON here')
    ap.add_argument('--strategy-child', help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# -- building ---------------------------------------------------------
def load_cfg(name):
    import cast_mmaction  # noqa: F401  (registers everything)
    from mmengine.config import Config
    return Config.fromfile(os.path.join(ROOT, CONFIGS[name]))


def model_cfg(cfg, tiny, drop_path=None):
    """The recipe's model with random weights (no expert files), optionally
    at the tiny size."""
    from cast_mmaction.parity import cast_sizes_from_meta
    m = copy.deepcopy(cfg.model.to_dict())
    if tiny:
        keep = m['backbone']['drop_path_rate']
        m = cast_sizes_from_meta(m, TINY)
        m['backbone']['drop_path_rate'] = keep
    for e in m['backbone']['experts'].values():
        e['pretrained'] = None
    m['backbone'].pop('init_cfg', None)
    if drop_path is not None:
        m['backbone']['drop_path_rate'] = drop_path
    return m


def build(cfg, tiny, device, drop_path=None, backbone=None):
    """The model of ``cfg`` (tiny or full) on ``device``; ``backbone``:
    overrides of the backbone's config (e.g. ``with_cp``)."""
    from cast_mmaction.utils import build_model
    m = model_cfg(cfg, tiny, drop_path)
    m['backbone'].update(backbone or {})
    return build_model(m).to(device)


def clip_shape(cfg, tiny):
    if tiny:
        return (3, TINY['num_frames'], TINY['img_size'], TINY['img_size'])
    bb = cfg.model.backbone
    return (3, bb.num_frames, bb.img_size, bb.img_size)


def runner_batch(cfg, tiny, batch, seed):
    """A batch as the dataloader hands it to ``train_step``: uint8 clips
    (num_clips=1, C, T, H, W) and labelled data samples."""
    from mmaction.structures import ActionDataSample
    g = torch.Generator().manual_seed(seed)
    shape = (1, ) + clip_shape(cfg, tiny)
    n_cls = cfg.model.cls_head.num_classes
    inputs = [torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
              for _ in range(batch)]
    samples = []
    for _ in range(batch):
        ds = ActionDataSample()
        ds.set_gt_label(torch.randint(0, n_cls, (1, ), generator=g))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


def optim_wrapper_cfg(cfg, cuda):
    ow = copy.deepcopy(cfg.optim_wrapper.to_dict())
    if not cuda:
        # MMEngine's AmpOptimWrapper needs CUDA: the CPU run checks the rest
        from cast_mmaction.engine.guarded_optim_wrapper import without_amp
        ow = without_amp(ow)
        ow.get('optimizer', {}).pop('fused', None)
    return ow


# -- checks -------------------------------------------------------------------
def check_amp_train(args, device):
    from mmengine.optim import build_optim_wrapper
    cfg = load_cfg('recipe')
    cuda = device.type == 'cuda'
    torch.manual_seed(0)
    model = build(cfg, args.tiny, device)
    model.train()
    ow = build_optim_wrapper(model, optim_wrapper_cfg(cfg, cuda))
    ow.initialize_count_status(model, 0, args.steps)
    losses, scales = [], []
    t0 = time.time()
    for step in range(args.steps):
        data = runner_batch(cfg, args.tiny, args.batch, seed=step)
        log_vars = model.train_step(data, optim_wrapper=ow)
        losses.append(float(torch.as_tensor(log_vars['loss']).detach()))
        scaler = getattr(ow, 'loss_scaler', None)
        scales.append(float(scaler.get_scale()) if scaler is not None
                      else None)
    if cuda:
        torch.cuda.synchronize(device)
    finite = all(math.isfinite(v) for v in losses)
    scaled = not cuda or all(v is not None and v > 0 for v in scales)
    return dict(ok=finite and scaled, optim_wrapper=type(ow).__name__,
                accumulative_counts=ow._accumulative_counts,
                batch=args.batch, steps=args.steps, losses=losses,
                all_finite=finite, loss_scale=scales,
                seconds=round(time.time() - t0, 2),
                peak_mem_gb=(round(torch.cuda.max_memory_allocated(device) /
                                   2**30, 2) if cuda else None))


def _randomise_trainable(model, seed):
    """Non-zero adapters / up-projections (zero at init) so every path
    carries signal into logits and gradients."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=g).to(p))


def _loss_and_grads(model, x, samples, dtype, device, scale):
    model.zero_grad(set_to_none=True)
    ctx = (torch.autocast(device.type, dtype=dtype) if dtype is not None
           else torch.autocast(device.type, enabled=False))
    with ctx:
        feats = model.backbone(x)
        logits = model.cls_head(feats)
        losses = model.cls_head.loss_by_feat(logits, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
    (loss * scale).backward()
    grads = {n: (p.grad.float() / scale if p.grad is not None else
                 torch.zeros_like(p, dtype=torch.float32))
             for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach().float(), grads


def _rel(a, b):
    den = b.norm().item()
    return (a - b).norm().item() / den if den > 0 else float(
        (a - b).norm().item())


def check_precision(args, device):
    cfg = load_cfg('recipe')
    cuda = device.type == 'cuda'
    torch.manual_seed(0)
    model = build(cfg, args.tiny, device, drop_path=0.0).train()
    _randomise_trainable(model, 1)
    data = runner_batch(cfg, args.tiny, args.precision_batch, seed=100)
    data = model.data_preprocessor(data, training=False)  # no Mixup
    x, samples = data['inputs'].flatten(0, 1), data['data_samples']
    tf32 = (torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref_logits, ref_grads = _loss_and_grads(model, x, samples, None,
                                                device, 1.0)
    finally:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = tf32
    dtypes = ['bfloat16'] if not cuda else ['float16', 'bfloat16']
    out = dict(ok=True, batch=args.precision_batch, limits=PRECISION_LIMITS,
               fp32_reference='TF32 off')
    for name in dtypes:
        dtype = getattr(torch, name)
        scale = 128.0 if dtype == torch.float16 else 1.0  # fp16: loss scale
        logits, grads = _loss_and_grads(model, x, samples, dtype, device,
                                        scale)
        per = {n: _rel(grads[n], ref_grads[n]) for n in ref_grads
               if ref_grads[n].norm() > 0}
        flat = torch.cat([grads[n].reshape(-1) for n in ref_grads])
        flat_ref = torch.cat([ref_grads[n].reshape(-1) for n in ref_grads])
        worst = max(per, key=per.get) if per else None
        res = dict(logits_rel=_rel(logits, ref_logits),
                   grad_rel_global=_rel(flat, flat_ref),
                   grad_rel_max=per[worst] if worst else None,
                   grad_rel_max_tensor=worst,
                   grad_rel_median=(sorted(per.values())[len(per) // 2]
                                    if per else None),
                   grads_finite=bool(torch.isfinite(flat).all()))
        lim = PRECISION_LIMITS[name]
        res['ok'] = (res['grads_finite'] and res['logits_rel'] <= lim['logits']
                     and res['grad_rel_global'] <= lim['grad'])
        out[name] = res
        out['ok'] = out['ok'] and res['ok']
    if not cuda:
        out['note'] = 'CPU: bf16 autocast only (fp16 is checked on CUDA)'
    return out


def sdpa_kernels(fn):
    """{kernel: number of calls} of the SDPA kernels ``fn()`` runs."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts = {}
    for ev in prof.key_averages():
        for op, kernel in SDPA_KERNELS:
            if ev.key == f'aten::{op}':
                counts[kernel] = counts.get(kernel, 0) + ev.count
                break
    return counts


def check_sdpa(args, device):
    cfg = load_cfg('recipe')
    cuda = device.type == 'cuda'
    torch.manual_seed(0)
    model = build(cfg, args.tiny, device, drop_path=0.0).train()
    data = runner_batch(cfg, args.tiny, 1, seed=7)
    x = model.data_preprocessor(data, training=False)['inputs'].flatten(0, 1)
    dtype = torch.float16 if cuda else torch.bfloat16

    def step():
        with torch.autocast(device.type, dtype=dtype):
            out = model.cls_head(model.backbone(x))
        out.float().sum().backward()
        if cuda:
            torch.cuda.synchronize(device)

    counts = sdpa_kernels(step)
    res = dict(autocast=str(dtype).replace('torch.', ''), kernels=counts)
    if cuda:
        res['ok'] = bool(counts) and not counts.get('math')
    else:
        res['ok'] = bool(counts)
        res['note'] = 'CPU: kernels reported; "not math" is checked on CUDA'
    return res


def _graph_run(args, device, graph, seed_base=1000, backbone=None):
    """``--steps`` recipe training iterations from fixed weights: eager
    ``train_step`` or the CUDA-graph loop's step (``backbone``: overrides of
    the backbone's config, e.g. ``with_cp``). Returns the trainable weights
    (CPU, fp32), the losses, the loss scales, the step times and, on CUDA,
    the GPU memory."""
    import numpy as np
    from mmengine.optim import build_optim_wrapper

    from cast_mmaction.engine.cuda_graph import GraphedTrainStep
    cfg = load_cfg('recipe')
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = build(cfg, args.tiny, device, backbone=backbone).train()
    ow = build_optim_wrapper(model, optim_wrapper_cfg(cfg, cuda))
    ow.initialize_count_status(model, 0, args.steps)
    step = GraphedTrainStep(warmup_iters=3, capture=cuda) if graph else None
    losses, scales, times = [], [], []
    for i in range(args.steps):
        data = runner_batch(cfg, args.tiny, args.batch, seed=i)
        np.random.seed(seed_base + i)  # Mixup's choice
        torch.manual_seed(seed_base + i)  # Mixup's lambda, drop path
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if step is None:
            log_vars = model.train_step(data, optim_wrapper=ow)
        else:
            log_vars = step(model, data, ow)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(torch.as_tensor(log_vars['loss']).detach()))
        scaler = getattr(ow, 'loss_scaler', None)
        scales.append(float(scaler.get_scale()) if scaler is not None
                      else None)
    weights = {n: p.detach().float().cpu() for n, p in
               model.named_parameters() if p.requires_grad}
    out = dict(losses=losses, loss_scale=scales, step_s=times)
    if cuda:  # reserved: what the caching allocator holds (nvidia-smi's view)
        out.update(
            peak_allocated_gb=torch.cuda.max_memory_allocated(device) / 2**30,
            peak_reserved_gb=torch.cuda.max_memory_reserved(device) / 2**30,
            end_reserved_gb=torch.cuda.memory_reserved(device) / 2**30)
    if step is not None:
        out.update(replayed=step.replayed, eager=step.eager,
                   graphs=len(step._graphs))
    del model, ow, step
    if cuda:
        torch.cuda.empty_cache()
    return weights, out


def check_cuda_graph(args, device):
    cuda = device.type == 'cuda'
    w_a, eager = _graph_run(args, device, graph=False)
    w_b, eager2 = _graph_run(args, device, graph=False)
    w_g, graph = _graph_run(args, device, graph=True)

    def diff(x, y):
        num = sum((x[n] - y[n]).norm() ** 2 for n in x) ** 0.5
        den = sum(x[n].norm() ** 2 for n in x) ** 0.5
        return float(num / den)

    eager_vs_eager, graph_vs_eager = diff(w_b, w_a), diff(w_g, w_a)
    skip = 4  # the 3 eager warm-ups and the capture
    med = (lambda v: sorted(v)[len(v) // 2] if v else None)
    res = dict(batch=args.batch, steps=args.steps,
               eager=eager, eager_again=eager2, graph=graph,
               weights_rel_eager_vs_eager=eager_vs_eager,
               weights_rel_graph_vs_eager=graph_vs_eager,
               bit_identical=all(torch.equal(w_g[n], w_a[n]) for n in w_a),
               eager_bit_reproducible=all(torch.equal(w_b[n], w_a[n])
                                          for n in w_a),
               median_step_s=dict(eager=med(eager['step_s'][skip:]),
                                  graph=med(graph['step_s'][skip:])))
    finite = all(math.isfinite(v) for r in (eager, eager2, graph)
                 for v in r['losses'])
    close = graph_vs_eager <= 2 * eager_vs_eager + 1e-6
    res['ok'] = finite and close and (graph['replayed'] > 0 or not cuda)
    if not cuda:
        res['note'] = ('CPU: the graph loop\'s step runs uncaptured '
                       '(capture=False); the replay is checked on CUDA')
    return res


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_strategy_step(name, args, device):
    """In a child process: build the variant's strategy as FlexibleRunner
    does (one process), prepare the model and optim wrapper and take one
    training step."""
    from mmengine.registry import STRATEGIES
    cfg = load_cfg(name)
    torch.manual_seed(0)
    from cast_mmaction.utils import build_model
    model = build_model(model_cfg(cfg, args.tiny))
    work = tempfile.mkdtemp(prefix=f'gpu_check_{name}_')
    strategy = STRATEGIES.build(dict(
        cfg.strategy.to_dict(), work_dir=work,
        env_kwargs=dict(launcher='pytorch', dist_cfg=dict(backend='nccl'))))
    model, ow = strategy.prepare(
        model, optim_wrapper=optim_wrapper_cfg(cfg, True),
        dispatch_kwargs=dict(epoch_length=1, max_epochs=1, max_iters=1,
                             train_micro_batch_size_per_gpu=args.batch))
    if hasattr(ow, 'initialize_count_status'):
        ow.initialize_count_status(model, 0, 1)
    model.train()
    data = runner_batch(cfg, args.tiny, args.batch, seed=0)
    t0 = time.time()
    log_vars = model.train_step(data, optim_wrapper=ow)
    torch.cuda.synchronize(device)
    loss = float(torch.as_tensor(log_vars['loss']).detach())
    return dict(ok=math.isfinite(loss), loss=loss,
                strategy=type(strategy).__name__,
                model_wrapper=type(model).__name__,
                optim_wrapper=type(ow).__name__,
                seconds=round(time.time() - t0, 2))


def check_strategy(name, args, device):
    import importlib.util
    if name == 'deepspeed' and importlib.util.find_spec('deepspeed') is None:
        return dict(ok=None, skipped='deepspeed is not installed '
                    '(pip install deepspeed)')
    if device.type != 'cuda':
        from mmengine.registry import STRATEGIES
        cfg = load_cfg(name)
        built = type(STRATEGIES.build(cfg.strategy.to_dict())).__name__
        return dict(ok=None, built=built,
                    skipped=f'{name}: its GPU step (nccl) runs on CUDA '
                    f'only; strategy built')
    env = dict(os.environ, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(
        _free_port()), RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
        PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    cmd = [sys.executable, os.path.abspath(__file__), '--strategy-child',
           name, '--device', str(device), '--batch', str(args.batch)]
    if args.tiny:
        cmd.append('--tiny')
    p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       timeout=900)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith('{')]
    if p.returncode == 0 and lines:
        return json.loads(lines[-1])
    return dict(ok=False, returncode=p.returncode,
                error=(p.stderr or p.stdout)[-3000:])


CHECKS = dict(amp_train=check_amp_train, precision=check_precision,
              sdpa=check_sdpa, cuda_graph=check_cuda_graph,
              fsdp=lambda a, d: check_strategy('fsdp', a, d),
              deepspeed=lambda a, d: check_strategy('deepspeed', a, d))


def machine(device):
    info = dict(torch=torch.__version__, device=str(device),
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    return info


def main(argv=None):
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        print(f'gpu_check: --device {args.device}: not a device ({e}); give '
              f'cuda[:i], or cpu with --tiny', file=sys.stderr)
        return 2
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: no CUDA device is available. This tool checks the '
              'GPU training path (fp16 AMP, autocast, SDPA kernels, FSDP, '
              'DeepSpeed) and must run on a machine with a GPU; '
              '`--device cpu --tiny` only tests the script itself.',
              file=sys.stderr)
        return 2
    if device.type == 'cpu' and not args.tiny:
        print('gpu_check: --device cpu runs only with --tiny (a test of the '
              'script; the ViT-B checks are meant for a GPU)',
              file=sys.stderr)
        return 2
    if args.strategy_child:
        try:
            res = run_strategy_step(args.strategy_child, args, device)
        except Exception as e:  # noqa: BLE001 - reported to the parent
            res = dict(ok=False, error=f'{type(e).__name__}: {e}',
                       traceback=traceback.format_exc()[-3000:])
        print(json.dumps(res))
        return 0 if res.get('ok') else 1
    names = [c.strip() for c in args.checks.split(',') if c.strip()]
    unknown = set(names) - set(CHECKS)
    if unknown:
        print(f'gpu_check: unknown checks {sorted(unknown)}; known: '
              f'{sorted(CHECKS)}', file=sys.stderr)
        return 2
    if args.out:  # before the first check, not after minutes of it
        folder = os.path.dirname(os.path.abspath(args.out))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            print(f'gpu_check: --out {args.out}: its folder {folder} cannot '
                  f'be created ({e}); give a path in a writable folder',
                  file=sys.stderr)
            return 2
        if os.path.isdir(args.out):
            print(f'gpu_check: --out {args.out} is a folder; give the JSON '
                  f'file to write', file=sys.stderr)
            return 2
    report = dict(machine=machine(device), tiny=args.tiny, checks={},
                  complete=False)

    def write_out():
        # after every check, so that a run stopped by a time limit (a
        # borrowed GPU's) still leaves the checks it finished
        if args.out:
            with open(args.out + '.part', 'w') as f:
                f.write(json.dumps(report, indent=1) + '\n')
            os.replace(args.out + '.part', args.out)

    t0 = time.time()
    for name in names:
        try:
            report['checks'][name] = CHECKS[name](args, device)
        except Exception as e:  # noqa: BLE001 - report and go on
            report['checks'][name] = dict(
                ok=False, error=f'{type(e).__name__}: {e}',
                traceback=traceback.format_exc()[-3000:])
        print(f'gpu_check: {name}: ok={report["checks"][name].get("ok")}',
              file=sys.stderr)
        report['seconds'] = round(time.time() - t0, 1)
        write_out()
    ran = [c.get('ok') for c in report['checks'].values()
           if c.get('ok') is not None]
    report['ok'] = all(ran)
    report['complete'] = True
    write_out()
    print(json.dumps(report, indent=1))
    return 0 if report['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
