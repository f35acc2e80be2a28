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

The helpers :func:`write_indexed_video`, :func:`frame_index` and
:func:`write_tone_audio` / :func:`tone_at` also make the test media of
``tests/test_readers.py``.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: bar code: bits, least significant on the left, one stripe each
BAR_BITS = 14


# --------------------------------------------------------------------------
# media whose content encodes time
# --------------------------------------------------------------------------
def _bar_rows(height):
    return height if height <= 64 else max(16, height // 8)


def indexed_frame(index, width, height, texture=None):
    """RGB frame (H, W, 3) uint8: bit ``b`` of ``index`` as a black / white
    stripe ``b`` of the top rows (the whole frame when it is small), the
    rest ``texture`` (scrolled with the index) or mid-grey."""
    img = np.empty((height, width, 3), np.uint8)
    if texture is None:
        img[:] = 128
    else:
        shift = (3 * index) % texture.shape[1]
        img[:] = np.roll(texture, -shift, axis=1)[:height, :width, None]
    rows = _bar_rows(height)
    stripe = width // BAR_BITS
    for b in range(BAR_BITS):
        on = (index >> b) & 1
        img[:rows, b * stripe:(b + 1) * stripe] = 235 if on else 20
    return img


def frame_index(img):
    """The index :func:`indexed_frame` wrote into ``img`` (after lossy
    compression: each stripe's centre is averaged and thresholded)."""
    height, width = img.shape[:2]
    rows = _bar_rows(height)
    stripe = width // BAR_BITS
    gray = img[:rows].astype(np.float32).mean(-1)
    lo, hi = max(0, rows // 4), max(1, rows - rows // 4)
    value = 0
    for b in range(BAR_BITS):
        c0, c1 = b * stripe + stripe // 4, (b + 1) * stripe - stripe // 4
        if gray[lo:hi, c0:max(c1, c0 + 1)].mean() > 127:
            value |= 1 << b
    return value


def _texture(width, height, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 216, size=(height // 8 + 1, width // 8 + 1))
    tex = np.kron(coarse, np.ones((8, 8)))[:height, :width]
    fine = rng.normal(0, 12, size=(height, width))
    yy, xx = np.mgrid[:height, :width]
    waves = 30 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    return np.clip(tex + fine + waves, 0, 255).astype(np.uint8)


def tone_frequency(segment):
    """Frequency (Hz) of the tone of audio segment ``segment``."""
    return 400.0 + 100.0 * (segment % 30)


#: length (s) of one tone of :func:`tone_samples`
TONE_SECONDS = 0.2


def tone_samples(start, count, rate):
    """``count`` float32 samples from sample ``start``: a tone whose
    frequency steps every :data:`TONE_SECONDS` (:func:`tone_frequency`)."""
    n = np.arange(start, start + count)
    t = n / rate
    seg = np.floor(t / TONE_SECONDS).astype(np.int64)
    freq = 400.0 + 100.0 * (seg % 30)
    # phase continuous inside a segment is not needed: the reader is checked
    # by the dominant frequency of a window inside one segment
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tone_at(wave, rate, offset, time_s, window=0.08):
    """Dominant frequency (Hz) of ``wave`` (first sample at ``offset`` s)
    around time ``time_s``, from a ``window``-second FFT."""
    i = int(round((time_s - offset) * rate))
    half = int(window * rate / 2)
    seg = np.asarray(wave[max(0, i - half):i + half], np.float64)
    if seg.size < half:
        return None
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size), n=rate))
    return float(np.argmax(spec[50:]) + 50)


def write_indexed_video(path, num_frames, width=64, height=48, fps=50,
                        gop=100, texture=False, audio_rate=None, crf=18,
                        preset='medium'):
    """H.264 (libx264) mp4 of ``num_frames`` :func:`indexed_frame` frames
    with a key frame exactly every ``gop`` frames (scene-cut key frames
    off); ``audio_rate``: add a mono AAC track of :func:`tone_samples`."""
    import av
    tex = _texture(width * 2, height) if texture else None
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with av.open(path, 'w') as c:
        v = c.add_stream('libx264', rate=int(fps), options={
            'g': str(gop), 'keyint_min': str(gop), 'crf': str(crf),
            'preset': preset, 'x264-params': 'scenecut=0'})
        v.width, v.height, v.pix_fmt = width, height, 'yuv420p'
        a = None
        if audio_rate:
            a = c.add_stream('aac', rate=int(audio_rate))
            a.layout = 'mono'
        done = 0  # audio samples written
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(
                indexed_frame(i, width, height, tex), format='rgb24')
            frame.pts = i
            for packet in v.encode(frame):
                c.mux(packet)
            while a is not None and done < (i + 1) * audio_rate / fps:
                n = 1024
                af = av.AudioFrame.from_ndarray(
                    tone_samples(done, n, audio_rate)[None], format='fltp',
                    layout='mono')
                af.sample_rate, af.pts = int(audio_rate), done
                for packet in a.encode(af):
                    c.mux(packet)
                done += n
        for s in (v, a):
            if s is not None:
                for packet in s.encode():
                    c.mux(packet)


def write_tone_wav(path, seconds, rate=16000):
    """16-bit mono wav of :func:`tone_samples`."""
    import wave
    n = int(round(seconds * rate))
    pcm = np.round(tone_samples(0, n, rate) * 32767).astype('<i2')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with wave.open(path, 'wb') as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def key_frames(path):
    """Indices of the key frames of the first video stream (from the
    packets, without decoding)."""
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        step = 1.0 / float(s.average_rate) / float(s.time_base)
        t0 = s.start_time or 0
        return sorted(int(round((p.pts - t0) / step))
                      for p in c.demux(s) if p.pts is not None and
                      p.is_keyframe)


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
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'):
                return line.split(':', 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or 'unknown CPU'


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
    return ap.parse_args(argv)


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
        n = _READERS['pyav'](path).num_frames
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
