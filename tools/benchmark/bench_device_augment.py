"""CPU time per clip of the training augmentation: the CPU pipeline's
(VideoRandAugment + RandomResizedCrop + Resize + Flip + FormatShape, as the
recipes) vs DeviceAugmentPreprocessor's (the same augmentation batched over
the clip's frames, plus normalisation) on the device given (default: CPU).

    python tools/benchmark/bench_device_augment.py --clips 20 --threads 1
    python tools/benchmark/bench_device_augment.py --device cuda   # on a GPU host

Clips are random uint8 frames of the recipes' decoded sizes: SSv2 16 x 240 x
427, K400 16 x 320 x 568. Both paths draw random plans / boxes (the recipe's
rand-m7-n4-mstd0.5-inc1), seeded, so both see the same mix of ops on
average. CPU figures are process CPU time (``time.process_time``) with
``--threads`` torch / OpenCV threads; CUDA figures are wall time after a
synchronise. Prints one JSON line per (size, path).
"""
import argparse
import json
import os
import time


SIZES = dict(ssv2=(16, 240, 427), k400=(16, 320, 568))


def _device(p, spec):
    """``--device`` as a torch device, or a usage error naming it (checked
    before the CPU pipeline runs, which takes minutes)."""
    import torch
    from cast_mmaction.utils import device_problem
    problem = device_problem(spec)
    if problem:
        p.error(f'--device {spec}: {problem}')
    return torch.device(spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--clips', type=int, default=20)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--sizes', default='ssv2,k400',
                   help=f'comma-separated, of {", ".join(SIZES)}')
    args = p.parse_args(argv)
    unknown = [s for s in args.sizes.split(',') if s not in SIZES]
    if unknown:
        p.error(f'--sizes: unknown {unknown}; known: {", ".join(SIZES)}')
    if args.clips < 1 or args.threads < 1:
        p.error('--clips and --threads take positive integers')
    dev = _device(p, args.device)
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))

    import cv2
    import numpy as np
    import torch

    import cast_mmaction  # noqa: F401 (registers)
    from mmaction.registry import MODELS, TRANSFORMS
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    cpu_steps = [
        dict(type='VideoRandAugment', config_str='rand-m7-n4-mstd0.5-inc1'),
        dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
             aspect_ratio_range=(0.75, 1.3333)),
        dict(type='Resize', scale=(224, 224), keep_ratio=False),
        dict(type='Flip', flip_ratio=0.5),
        dict(type='FormatShape', input_format='NCTHW')]
    cpu_pipe = [TRANSFORMS.build(s) for s in cpu_steps]
    pack = TRANSFORMS.build(dict(type='PackRawFrames'))

    def clock():
        if dev.type == 'cuda':
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    for name in args.sizes.split(','):
        t, h, w = SIZES[name]
        rng = np.random.default_rng(0)
        clips = [rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
                 for _ in range(args.clips)]
        # the CPU pipeline
        np.random.seed(0)
        start = time.process_time()
        for frames in clips:
            results = dict(imgs=list(frames), img_shape=(h, w),
                           num_clips=1, clip_len=t, modality='RGB')
            for step in cpu_pipe:
                results = step(results)
        ms = (time.process_time() - start) / len(clips) * 1e3
        print(json.dumps(dict(size=name, frames=[t, h, w], path='cpu_pipeline',
                              ms_per_clip=round(ms, 1), threads=args.threads,
                              clock='process_time')))
        # the device preprocessor, one clip per call (the worst case) and
        # the float32 geometry variant
        for exact in (True, False):
            pre = MODELS.build(dict(
                type='DeviceAugmentPreprocessor', mean=mean, std=std,
                format_shape='NCTHW', seed=0, exact_geometry=exact,
                rand_augment=dict(config_str='rand-m7-n4-mstd0.5-inc1'),
                crop_size=224, aspect_ratio_range=(0.75, 1.3333),
                flip_ratio=0.5)).to(dev)
            packed = [pack(dict(imgs=list(f), img_shape=(h, w), num_clips=1,
                                clip_len=t)) for f in clips]
            pre(dict(inputs=[packed[0]['inputs']],
                     data_samples=[packed[0]['data_samples']]),
                training=True)  # warm-up
            start = clock()
            for s in packed:
                out = pre(dict(inputs=[s['inputs']],
                               data_samples=[s['data_samples']]),
                          training=True)
            ms = (clock() - start) / len(clips) * 1e3
            assert out['inputs'].shape == (1, 1, 3, t, 224, 224)
            print(json.dumps(dict(
                size=name, frames=[t, h, w],
                path='device_preprocessor' + ('' if exact else '_float32'),
                device=str(dev), ms_per_clip=round(ms, 1),
                threads=args.threads,
                clock='process_time' if dev.type == 'cpu' else 'wall')))


if __name__ == '__main__':
    main()
