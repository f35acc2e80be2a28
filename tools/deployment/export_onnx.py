#!/usr/bin/env python
"""Export a recognizer to ONNX for one view, optionally checked by
onnxruntime (docs/deployment.md).

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out m.onnx \\
        [--verify] [--benchmark RUNS --threads N]

Inputs of the file: the normalised clip batch ``video`` (B, 3, T, H, W);
CAVA / CA2ST also ``audio`` (B, 1, T', F) and, with time encodings,
``times`` (B, 2 + T); the batch axis is dynamic. Outputs: ``scores``
(B, classes), or ``verb_scores`` and ``noun_scores`` (EPIC-KITCHENS-100),
after the head's ``average_clips`` for one view (softmax for 'prob').
``--verify`` runs onnxruntime and PyTorch on one random input and prints
``max abs diff: X``; ``--benchmark`` times both on the CPU.
"""
import argparse
import os.path as osp
import statistics
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)

import cast_mmaction  # noqa: E402,F401  (compat fixes, registrations)
from cast_mmaction import deployment  # noqa: E402
from cast_mmaction import inference as inf  # noqa: E402
from cast_mmaction import safe_load  # noqa: E402


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: give a positive integer')
    return value


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='model config')
    p.add_argument('checkpoint', nargs='?',
                   help='MMEngine checkpoint of that config (omit only with '
                   '--random-weights)')
    p.add_argument('--out', required=True, help='the .onnx file to write')
    p.add_argument('--random-weights', action='store_true',
                   help='export the initialised model without a checkpoint, '
                   'its zero-initialised adapters, links and heads filled '
                   'with seeded noise (for timing and checking the graph)')
    p.add_argument('--num-frames', type=_positive_int,
                   help='clip length of a frame-wise model (MSCA, '
                   'TokenShift, ViT; default: the test pipeline\'s '
                   'clip_len, else 8); CAST/CAVA/CA2ST take theirs from '
                   'the model and refuse another')
    p.add_argument('--opset', type=int, default=deployment.OPSET,
                   help=f'ONNX opset, {deployment.MIN_OPSET} to '
                   f'{deployment.max_opset()} (default: %(default)s)')
    p.add_argument('--verify', action='store_true',
                   help='compare onnxruntime with PyTorch on a random input')
    p.add_argument('--benchmark', type=_positive_int, metavar='RUNS',
                   help='time RUNS forward passes of each at batch 1 and '
                   'print the medians')
    p.add_argument('--threads', type=_positive_int, default=1,
                   help='intra-op threads of both for --benchmark')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, key=value')
    safe_load.add_trust_argument(p, 'checkpoint')
    args = p.parse_args(argv)
    if not args.checkpoint and not args.random_weights:
        p.error('give CHECKPOINT, or --random-weights to export the '
                'initialised model')
    if args.checkpoint and args.random_weights:
        p.error('--random-weights and CHECKPOINT exclude each other')
    if not args.out.endswith('.onnx'):
        p.error(f'--out {args.out}: use a file name ending in .onnx')
    return args


def _version(dist):
    import importlib.metadata
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return '(not installed)'


def _stage_failed(stage, error):
    """The tool's one-line error for a failure of ``--verify`` /
    ``--benchmark`` (onnxruntime cannot load or run the file)."""
    print(f'error: {stage}: {error}', file=sys.stderr)
    return 2


def _clip_len(cfg):
    try:
        pipeline = inf.test_pipeline_cfg(cfg)
    except inf.InferenceError:
        return None
    for t in pipeline:
        if 'clip_len' in t:
            return int(t['clip_len'])
    return None


def main(argv=None):
    args = parse_args(argv)
    try:
        deployment.check_opset(args.opset)
        cfg = inf.load_config(args.config, args.cfg_options)
        if args.checkpoint:
            safe_load.trust_inputs(cfg, args.checkpoint,
                                   args.trust_checkpoint)
        model = deployment.load_model(cfg, args.checkpoint)
        if args.random_weights:
            deployment.fill_zero_init(model)
        deployment.check_num_frames(model, args.num_frames)
        frames = args.num_frames or _clip_len(cfg)
        wrapper, spec, outputs = deployment.export(model, args.out, frames,
                                                   args.opset)
    except (deployment.ExportError, safe_load.UntrustedCheckpointError,
            inf.InferenceError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    shapes = ', '.join(f'{n} (B, {", ".join(map(str, s))})' for n, s in spec)
    print(f'wrote {args.out}: {shapes} -> {", ".join(outputs)} '
          f'(opset {args.opset})')
    if args.verify:
        try:
            diff, spread = deployment.verify(args.out, wrapper, spec)
        except deployment.ExportError as e:
            return _stage_failed('--verify', e)
        print(f'max abs diff: {diff:.3g} (onnxruntime vs PyTorch, batch 3; '
              f'the outputs differ by up to {spread:.3g} between inputs)')
    if args.benchmark:
        from cast_mmaction.utils import cpu_facts
        cpu = cpu_facts()
        print(f'machine: {cpu.get("cpu_model")}, {cpu.get("cpu_count")} '
              f'logical CPUs, ISA {" ".join(cpu.get("cpu_isa", []))}; '
              f'onnxruntime {_version("onnxruntime")}, torch '
              f'{_version("torch")}')
        try:
            times = deployment.benchmark(args.out, wrapper, spec,
                                         runs=args.benchmark,
                                         threads=args.threads)
        except deployment.ExportError as e:
            return _stage_failed('--benchmark', e)
        for kind in ('cpu', 'wall'):
            ort = statistics.median(times['ort'][kind])
            pt = statistics.median(times['torch'][kind])
            print(f'{kind} time, batch 1, {args.threads} thread(s), median '
                  f'of {args.benchmark} alternated runs: onnxruntime '
                  f'{ort * 1000:.1f} ms, PyTorch eager {pt * 1000:.1f} ms '
                  f'(PyTorch / onnxruntime {pt / ort:.2f}x)')
            print(f'  runs (ms): onnxruntime ' + ' '.join(
                f'{t * 1000:.1f}' for t in times['ort'][kind]) +
                '; PyTorch ' + ' '.join(
                    f'{t * 1000:.1f}' for t in times['torch'][kind]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
