"""CPU time per K400 training clip with the PyAV reader's two ways of
converting decoded frames to RGB, alternated clip batch by clip batch in one
process (this host's speed drifts between runs).

* ``per-frame``: each wanted frame converted when it is decoded, by
  ``VideoFrame.to_ndarray(format='rgb24')`` (a new scaler context per frame,
  the scaler cold between two decodes);
* ``one-context``: the reader as it is (``PyAVVideoReader._to_rgb``): the
  wanted frames kept decoded and converted after the last one, through one
  scaler context;
* ``no-conversion`` (a floor, not a reader): the wanted frames' YUV planes
  copied out instead of converted; only the decode stage is timed.

One thread; process CPU time; the ``configs/cast_k400_device_aug.py``
training pipeline (open, sample, decode with PyAV, pack) on the files of
``tools/benchmark/bench_pipeline.py --video-kind KIND`` prepared as
``tools/data/prepare_k400.py`` prepares them (short side 320, key frame every
32); KIND ``ssv2``: the ``configs/cast_ssv2_device_aug.py`` pipeline on the
SSv2-like files as written. The same clip indices for every way in a round.

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_rgb_conversion.py \\
        ROUNDS CLIPS KIND
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

from cast_mmaction.datasets.transforms import decoding  # noqa: E402

rounds, clips, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
workdir = osp.join(bp.ROOT, 'work_dirs', 'bench_pipeline')
ssv2 = kind == 'ssv2'
cfg = bp.load_config('configs/cast_ssv2_device_aug.py' if ssv2 else
                     'configs/cast_k400_device_aug.py')
ann, folder = bp.ensure_videos(workdir, kind, 8)
if not ssv2:
    ann, folder, _, _, _ = bp.ensure_prepared(folder, ann, 320, 32)
ds = bp.build_dataset(cfg, 'train', ann, folder)
ts = list(ds.pipeline.transforms)
bp._set_threads(ts, 1)
bp.pin_threads(1)

one_context = decoding.PyAVVideoReader._to_rgb


def _each(convert):
    def to_rgb(self, out):  # the reader's _to_rgb, converting as given
        alive, rgb = list(out.values()), {}
        for i, f in out.items():
            if not isinstance(f, np.ndarray):
                if id(f) not in rgb:
                    rgb[id(f)] = convert(self, f)
                out[i] = rgb[id(f)]
        del alive
    return to_rgb


# a new scaler context per frame, as VideoFrame.to_ndarray builds one
per_frame = _each(lambda self, f: f.to_ndarray(**self._rgb))
# the YUV planes copied out, no conversion (a floor)
no_conversion = _each(lambda self, f: f.to_ndarray())


WAYS = {'per-frame': per_frame, 'one-context': one_context,
        'no-conversion': no_conversion}
m = bp.machine()
print(f'CPU: {m["cpu"]} ({m["logical_cpus"]} logical), ISA '
      f'{m.get("cpu_isa")}; av {m["av"]}; load {os.getloadavg()[0]:.2f}; '
      f'{kind}, {clips} clips per way and round', flush=True)
tot = {w: [] for w in WAYS}
dec = {w: [] for w in WAYS}
for r in range(-1, rounds):  # round -1 warms up, not counted
    for way, fn in WAYS.items():
        decoding.PyAVVideoReader._to_rgb = fn
        stop = len(ts) - 1 if way == 'no-conversion' else len(ts)
        np.random.seed(max(r, 0))
        random.seed(max(r, 0))
        c_all = c_dec = 0.0
        for i in range(clips):
            res = copy.deepcopy(ds.get_data_info((max(r, 0) * clips + i) %
                                                 len(ds)))
            for t in ts[:stop]:
                c0 = time.process_time()
                res = t(res)
                dt = time.process_time() - c0
                c_all += dt
                if bp.category(type(t).__name__) == 'decode':
                    c_dec += dt
        if r < 0:
            continue
        tot[way].append(1e3 * c_all / clips)
        dec[way].append(1e3 * c_dec / clips)
        print(f'round {r} {way}: total {tot[way][-1]:.1f} ms, decode '
              f'{dec[way][-1]:.1f} ms per clip; load '
              f'{os.getloadavg()[0]:.2f}', flush=True)
decoding.PyAVVideoReader._to_rgb = one_context
base = np.mean(tot['per-frame'])
print('| way | total CPU ms / clip: mean (median) | decode: mean (median) | '
      'total / per-frame | workers per GPU (median) |')
print('| --- | --- | --- | --- | --- |')
for way in WAYS:
    if way == 'no-conversion':
        print(f'| {way} | - | {np.mean(dec[way]):.1f} '
              f'({np.median(dec[way]):.1f}) | - | - |')
        continue
    print(f'| {way} | {np.mean(tot[way]):.1f} ({np.median(tot[way]):.1f}) '
          f'| {np.mean(dec[way]):.1f} ({np.median(dec[way]):.1f}) | '
          f'{np.mean(tot[way]) / base:.3f} | '
          f'{0.218 * np.median(tot[way]):.1f} |')
