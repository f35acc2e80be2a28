"""CPU time per K400 training clip of files prepared with different libx264
settings, alternated clip batch by clip batch in one process (this host's
speed drifts between runs; alternation compares the settings under the same
drift). One thread, the training pipeline of ``configs/cast_k400_device_aug.py``
(open, sample, decode with PyAV, pack), the same clip indices for every
setting in a round.

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_x264_settings.py \\
        ROUNDS CLIPS KIND 'default;cabac=0:deblock=0:weightb=0:weightp=0;...'

``KIND`` is a ``tools/benchmark/bench_pipeline.py`` video kind (``k400``,
``k400_noisy``); a setting is ``default`` (the preparation's own settings,
``--resize-short 320 --keyint 32``) or extra ``x264-params`` on top of them;
``gN:params`` prepares with key frames every N instead; ``source`` is the
files as written; a prefix ``tN:`` decodes that setting with N decoder
threads (``VideoInit(num_threads=N)``; CPU time counts every thread, the
wall time per clip is printed too). Prints per round and setting the CPU ms per clip (total
and decode), then the means and medians over the rounds, the ratio of the
means to the first setting, workers per GPU at 218 clips/s (the estimate of
docs/data_pipeline.md: 218 x CPU s per clip, from the median) and the bytes
per file.
"""
import copy
import os
import os.path as osp
import random
import sys
import time

import numpy as np

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..', 'tools',
                            'benchmark'))
import bench_pipeline as bp  # noqa: E402

rounds, clips, kind, settings = (int(sys.argv[1]), int(sys.argv[2]),
                                 sys.argv[3], sys.argv[4].split(';'))
workdir = osp.join(bp.ROOT, 'work_dirs', 'bench_pipeline')
cfg = bp.load_config('configs/cast_k400_device_aug.py')
ann0, folder0 = bp.ensure_videos(workdir, kind, 8)
variants = []


def prefix(spec, letter, default):
    """(N, rest) of ``'<letter>N:rest'``, else (default, spec)."""
    head, sep, rest = spec.partition(':')
    if sep and head[:1] == letter and head[1:].isdigit():
        return int(head[1:]), rest
    return default, spec


for s in settings:
    threads, spec = prefix(s, 't', 1)
    keyint, params = prefix(spec, 'g', 32)
    params = None if params in ('', 'default') else params
    if spec == 'source':  # the files as written, not prepared
        ann, folder = ann0, folder0
        sizes = (None, np.mean([osp.getsize(osp.join(folder0, ln.split()[0]))
                                for ln in open(ann0).read().splitlines()]))
    else:
        ann, folder, size, _, sizes = bp.ensure_prepared(
            folder0, ann0, 320, keyint, params)
    ds = bp.build_dataset(cfg, 'train', ann, folder)
    ts = list(ds.pipeline.transforms)
    bp._set_threads(ts, threads)
    variants.append((s, ds, ts, sizes[1]))
bp.pin_threads(1)
print(f'CPU: {bp.machine()["cpu"]}; load {os.getloadavg()[0]:.2f}; {kind}, '
      f'{clips} clips per setting and round', flush=True)
tot = {s: [] for s in settings}
dec = {s: [] for s in settings}
wall = {s: [] for s in settings}
for r in range(rounds):
    for s, ds, ts, _ in variants:
        np.random.seed(r)
        random.seed(r)
        c_all = c_dec = 0.0
        w0 = time.perf_counter()
        for i in range(clips):
            res = copy.deepcopy(ds.get_data_info((r * clips + i) % len(ds)))
            for t in ts:
                c0 = time.process_time()
                res = t(res)
                dt = time.process_time() - c0
                c_all += dt
                if bp.category(type(t).__name__) == 'decode':
                    c_dec += dt
        wall[s].append(1e3 * (time.perf_counter() - w0) / clips)
        tot[s].append(1e3 * c_all / clips)
        dec[s].append(1e3 * c_dec / clips)
        print(f'round {r} {s}: total {tot[s][-1]:.1f} ms, decode '
              f'{dec[s][-1]:.1f} ms per clip; load {os.getloadavg()[0]:.2f}',
              flush=True)
base = np.mean(tot[settings[0]])
print('| setting | kB per file | total CPU ms / clip: mean (median) | '
      'decode: mean (median) | mean / first | workers per GPU (median) | '
      'wall ms / clip: mean |')
print('| --- | --- | --- | --- | --- | --- | --- |')
for s, _, _, size in variants:
    print(f'| {s} | {size / 1e3:.0f} | {np.mean(tot[s]):.1f} '
          f'({np.median(tot[s]):.1f}) | {np.mean(dec[s]):.1f} '
          f'({np.median(dec[s]):.1f}) | {np.mean(tot[s]) / base:.3f} | '
          f'{0.218 * np.median(tot[s]):.1f} | {np.mean(wall[s]):.1f} |')
