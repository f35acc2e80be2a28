#!/usr/bin/env python
"""Decoding throughput of the EPIC-KITCHENS video readers (decord, PyAV).

    python tools/benchmark/bench_readers.py                       # both readers, g=100 and g=250
    python tools/benchmark/bench_readers.py --gop 12 100 250 --seconds 180 --clips 40
    python tools/benchmark/bench_readers.py --video my.mp4        # an existing file

Writes (once, cached in ``--workdir``) an H.264 mp4 like the one of issue
18: 456 x 256, 50 fps, ``--seconds`` long, a key frame every ``--gop``
frames (libx264, no scene-cut key frames), a moving texture with a bar code
in its top rows that encodes each frame's index. Then, for each reader and
file, it times ``--clips`` EK100-style clips: a random ``--segment``-frame
segment (150 in the issue) of which ``EpicSampleFrames`` takes 16 frames
(one random frame per sixteenth, the training sampling), each clip opened,
decoded and closed as ``EpicVideoInit`` + ``EpicDecode`` do. Every decoded
frame is checked against its bar code. The same segments (``--seed``) are
used for both readers, which run alternately for ``--rounds`` rounds; the
table gives the median clips/s over the rounds (min-max) of one process,
the part of a clip's time spent opening the file,
and the median CPU seconds per clip (all threads of the process: PyAV
decodes with FFmpeg's frame threads, decord with ``num_threads=1``), which
is what counts when DataLoader workers keep every core busy.

The media helpers (:func:`write_indexed_video`, :func:`frame_index`,
:func:`tone_at`, ...) live in ``cast_mmaction/datasets/indexed_video.py``;
they also make the test media of ``tests/test_readers.py``.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# media whose content encodes time (also the test media of the readers)
from cast_mmaction.datasets.indexed_video import (  # noqa: E402
    frame_index, write_indexed_video)


# --------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------
def clip_indices(rng, num_frames, segment, num_segments=16):
    """Frame indices of one training clip: a random ``segment``-frame
    segment, one random frame per ``num_segments``-th of it (the sampling
    of ``EpicSampleFrames``)."""
    from cast_mmaction.datasets.transforms.epic import EpicSampleFrames
    first = int(rng.integers(0, num_frames - segment))
    sampler = EpicSampleFrames(num_segments=num_segments)
    state = np.random.get_state()
    np.random.seed(int(rng.integers(2**31)))
    try:
        inds = sampler.sample(first, first + segment - 1)
    finally:
        np.random.set_state(state)
    return np.unique(inds)


def time_reader(backend, path, clips, check=True):
    """(wall seconds, CPU seconds of the process (all threads), of which
    opening the file: wall, CPU) of each clip of ``clips`` (open, decode,
    close)."""
    from cast_mmaction.datasets.transforms.epic import _READERS
    times = []
    for inds in clips:
        t, c = time.perf_counter(), time.process_time()
        reader = _READERS[backend](path)
        opened = (time.perf_counter() - t, time.process_time() - c)
        try:
            frames = reader.get_frames(inds)
        finally:
            reader.close()
        times.append((time.perf_counter() - t, time.process_time() - c) +
                     opened)
        if check:
            got = [frame_index(f) for f in frames]
            if got != [int(i) for i in inds]:
                raise AssertionError(f'{backend} on {path}: frames {got} '
                                     f'for indices {list(inds)}')
    return times


def _cpu():
    from cast_mmaction.utils import cpu_facts
    return cpu_facts().get('cpu_model') or platform.processor() or \
        'unknown CPU'


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--video', nargs='+', help='existing video file(s) '
                    'instead of the generated ones (frames are not checked)')
    ap.add_argument('--gop', type=int, nargs='+', default=[100, 250],
                    help='key-frame intervals of the generated files')
    ap.add_argument('--seconds', type=float, default=180.0)
    ap.add_argument('--size', type=int, nargs=2, default=[456, 256],
                    metavar=('W', 'H'))
    ap.add_argument('--fps', type=int, default=50)
    ap.add_argument('--segment', type=int, default=150,
                    help='segment length in frames')
    ap.add_argument('--num-segments', type=int, default=16)
    ap.add_argument('--clips', type=int, default=24,
                    help='clips per reader, file and round')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--readers', nargs='+', default=['decord', 'pyav'])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--workdir', default=osp.join(ROOT, 'work_dirs',
                                                  'bench_readers'))
    ap.add_argument('--json', help='write the results here')
    args = ap.parse_args(argv)
    from cast_mmaction.datasets.transforms.epic import _READERS
    unknown = [r for r in args.readers if r not in _READERS]
    if unknown:
        ap.error(f'--readers: unknown {unknown}; known: '
                 f'{", ".join(sorted(_READERS))}')
    for path in args.video or ():
        if not osp.isfile(path):
            ap.error(f'--video {path}: no such file')
    for option in ('clips', 'rounds', 'num_segments', 'segment', 'fps'):
        if getattr(args, option) < 1:
            ap.error(f'--{option.replace("_", "-")} takes a positive '
                     f'integer')
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    files = []
    if args.video:
        files = [(p, None) for p in args.video]
    else:
        w, h = args.size
        n = int(round(args.seconds * args.fps))
        for g in args.gop:
            path = osp.join(args.workdir, f'indexed_{w}x{h}_{args.fps}fps_'
                            f'{n}f_g{g}.mp4')
            if not osp.isfile(path):
                t = time.perf_counter()
                write_indexed_video(path + '.part.mp4', n, w, h, args.fps, g,
                                    texture=True)
                os.replace(path + '.part.mp4', path)
                print(f'wrote {path} in {time.perf_counter() - t:.0f} s',
                      flush=True)
            files.append((path, g))
    rng = np.random.default_rng(args.seed)
    results = []
    print(f'CPU: {_cpu()} ({os.cpu_count()} logical CPUs); clips of '
          f'{args.num_segments} frames in {args.segment}-frame segments; '
          f'{args.clips} clips x {args.rounds} rounds', flush=True)
    for path, g in files:
        from cast_mmaction.datasets.transforms.epic import _READERS
        try:
            n = _READERS['pyav'](path).num_frames
        except Exception as e:  # noqa: BLE001 - name the file, not PyAV
            raise SystemExit(f'{path}: PyAV cannot read it as a video '
                             f'({type(e).__name__}: {e})') from e
        clips = [clip_indices(rng, n, args.segment, args.num_segments)
                 for _ in range(args.clips)]
        per = {b: [] for b in args.readers}
        cpu = {b: [] for b in args.readers}
        opening = {b: [] for b in args.readers}
        for _ in range(args.rounds):
            for b in args.readers:
                times = time_reader(b, path, clips, check=g is not None)
                per[b].append(len(times) / sum(t[0] for t in times))
                cpu[b].append(sum(t[1] for t in times) / len(times))
                opening[b].append((sum(t[2] for t in times) / len(times),
                                   sum(t[3] for t in times) / len(times)))
        for b in args.readers:
            rates = per[b]
            row = dict(file=osp.basename(path), gop=g, reader=b,
                       clips_per_s=statistics.median(rates),
                       min=min(rates), max=max(rates),
                       cpu_s_per_clip=statistics.median(cpu[b]),
                       open_s=statistics.median(o[0] for o in opening[b]),
                       open_cpu_s=statistics.median(o[1]
                                                    for o in opening[b]))
            results.append(row)
            print(f'{row["file"]:<44} {b:<7} {row["clips_per_s"]:7.2f} '
                  f'clips/s ({row["min"]:.2f}-{row["max"]:.2f}), '
                  f'{row["cpu_s_per_clip"]:.3f} CPU s/clip; opening the '
                  f'file {row["open_s"]:.3f} s ({row["open_cpu_s"]:.3f} '
                  f'CPU s)', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(cpu=_cpu(), args=vars(args), results=results), f,
                      indent=1)
    return results


if __name__ == '__main__':
    main()
