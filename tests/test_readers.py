"""The video and audio readers return the right frames within a bound on
real H.264 files with short (12), typical (100) and ffmpeg-default (250)
key-frame intervals (a PyAV reader that re-seeks whenever a wanted frame lies
more than ``seek_gap`` frames after its key frame seeks back to the same key
frame forever).

Media: 400 frames of 64 x 48 at 50 fps written with libx264 (a key frame
exactly every ``g`` frames, checked from the packets) and a mono AAC track;
every frame carries its index as a 14-bit bar code (``cast_mmaction.datasets.indexed_video``),
the audio a tone whose frequency steps every 0.2 s; an 8 s wav of the same
tones. Every call runs under a watchdog: a Python-level loop that does not
end fails the test after ``BOUND`` seconds (SIGALRM), a C-level one ends the
test process after ``3 * BOUND`` (faulthandler), so a regression fails CI
instead of hanging it.
"""
import faulthandler
import os.path as osp
import signal
import time
from contextlib import contextmanager

import numpy as np
import pytest

from cast_mmaction.datasets.transforms.audio import read_audio
from cast_mmaction.datasets.transforms.epic import (DecordVideoReader,
                                                    EpicDecode,
                                                    EpicSampleFrames,
                                                    EpicVideoInit,
                                                    PyAVVideoReader)
from conftest import ROOT
from cast_mmaction.datasets import indexed_video as br  # the test media

N = 400  # frames of the test videos
FPS = 50
GOPS = (12, 100, 250)
READERS = dict(decord=DecordVideoReader, pyav=PyAVVideoReader)
BOUND = 20.0  # seconds: a call taking longer is a failure (they take ~10 ms)
PER_CALL = 5.0  # seconds: the bound asserted for each call
RATE = 16000




class Hung(AssertionError):
    pass


@contextmanager
def bounded(seconds=BOUND):
    """Fail (``Hung``) when the block runs longer than ``seconds``; end the
    process when it is stuck in C code for three times that."""

    def alarm(signum, frame):
        raise Hung(f'still running after {seconds} s: the reader loops '
                   f'without progress')

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(3 * seconds, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope='module')
def media(tmp_path_factory):
    import av
    if 'libx264' not in av.codecs_available:
        pytest.skip('this PyAV build has no libx264 encoder to write H.264 '
                    'test files with a given key-frame interval')
    root = tmp_path_factory.mktemp('readers')
    videos = {}
    for g in GOPS:
        path = str(root / f'indexed_g{g}.mp4')
        br.write_indexed_video(path, N, 64, 48, FPS, g, audio_rate=RATE)
        videos[g] = path
    wav = str(root / 'tones.wav')
    br.write_tone_wav(wav, N / FPS, RATE)
    return dict(videos=videos, wav=wav)


def _check(frames, indices, what):
    got = [br.frame_index(f) for f in frames]
    want = [min(int(i), N - 1) for i in indices]
    assert got == want, f'{what}: frames {got} for indices {list(indices)}'


def _timed_get(reader, indices, what):
    t = time.monotonic()
    with bounded():
        frames = reader.get_frames(indices)
    took = time.monotonic() - t
    assert took < PER_CALL, f'{what}: {took:.1f} s for {list(indices)}'
    assert frames.shape == (len(indices), 48, 64, 3)
    _check(frames, indices, what)
    return frames


def _segment(first, length=150, num=16):
    """The 16 sorted frames of the test views of a 150-frame segment."""
    return EpicSampleFrames(num, 2, test_mode=True).sample(
        first, first + length - 1)


# every kind of target: near the start, in the middle (more than seek_gap
# frames after a key frame on g=100 and g=250: the frames of issue 18), near
# the end, past the end; EK100 segments
TARGETS = dict(
    start=[0, 1, 2, 7],
    middle=[170, 171, 185, 199, 200, 201, 240],
    end=[380, 395, 398, 399],
    past_end=[399, 400, 450, 10_000],
    segment_start=list(np.unique(_segment(0))),
    segment_middle=list(np.unique(_segment(170))),
    segment_end=list(np.unique(_segment(N - 150))),
)


def test_media_have_the_intended_key_frames(media):
    for g, path in media['videos'].items():
        assert br.key_frames(path) == list(range(0, N, g)), g
    with pytest.raises(AssertionError):  # the bar code is really checked
        _check([br.indexed_frame(5, 64, 48)], [6], 'self-check')


@pytest.mark.parametrize('gop', GOPS)
@pytest.mark.parametrize('backend', sorted(READERS))
def test_ascending_targets_across_calls(media, backend, gop):
    """One open reader, calls in ascending order of position: start,
    middle, end, past the end (as EpicDecode's sorted unique indices)."""
    reader = READERS[backend](media['videos'][gop])
    assert (reader.num_frames, reader.fps) == (N, FPS)
    try:
        for name, indices in TARGETS.items():
            _timed_get(reader, indices, f'{backend} g={gop} {name}')
    finally:
        reader.close()


@pytest.mark.parametrize('gop', GOPS)
@pytest.mark.parametrize('backend', sorted(READERS))
def test_random_targets_in_random_order(media, backend, gop):
    """Calls in random order on one reader, each with random (unsorted,
    repeated) indices anywhere in the file and past its end."""
    rng = np.random.default_rng(gop)
    reader = READERS[backend](media['videos'][gop])
    try:
        for call in range(12):
            k = int(rng.integers(1, 20))
            indices = rng.integers(0, N + 30, size=k)
            if backend == 'decord' or call % 2:
                indices = np.unique(indices)  # decord takes them sorted
            _timed_get(reader, indices, f'{backend} g={gop} call {call}')
    finally:
        reader.close()


@pytest.mark.parametrize('gop', GOPS)
def test_pyav_seeks_at_most_once_per_wanted_frame(media, gop):
    """The structural bound: a call never seeks more often than it has
    distinct frames, whatever the key-frame interval; the 16 frames of an
    EK100 segment cost a single seek."""
    reader = PyAVVideoReader(media['videos'][gop])
    try:
        for indices in TARGETS.values():
            before = reader.seeks
            _timed_get(reader, indices, f'g={gop}')
            assert reader.seeks - before <= len(set(indices))
        for first in (0, 30, 170, 240):
            before = reader.seeks
            _timed_get(reader, np.unique(_segment(first)), f'g={gop}')
            assert reader.seeks - before == 1
    finally:
        reader.close()


def test_pyav_still_seeks_forward_over_long_gaps(media):
    """The forward re-seek survives where it helps: with a key frame every
    12 frames, frames 10 and 300 are decoded with two seeks and without
    decoding the 290 frames in between."""
    decoded = []

    class Counting(PyAVVideoReader):

        def _seek(self, index):
            for frame in super()._seek(index):
                decoded.append(self._index(frame))
                yield frame

    reader = Counting(media['videos'][12])
    try:
        _timed_get(reader, [10, 300], 'g=12 gap')
        assert reader.seeks == 2
        assert len(decoded) <= 2 * 12, decoded  # at most a GOP per seek
    finally:
        reader.close()


@pytest.mark.parametrize('gop', (100, 250))
@pytest.mark.parametrize('backend', sorted(READERS))
def test_epic_pipeline_decodes_segments(media, backend, gop):
    """EpicVideoInit + EpicSampleFrames + EpicDecode, the path of the
    EK100 configs, on segments at the start, middle and end of the file."""
    init, decode = EpicVideoInit(backend=backend), EpicDecode()
    sample = EpicSampleFrames(16, num_clips=2, test_mode=True)
    for first in (0, 170, N - 150):
        results = dict(filename=media['videos'][gop], start_frame=first,
                       stop_frame=first + 149)
        with bounded():
            results = decode(sample(init(results)))
        assert 'video_reader' not in results  # closed and dropped
        _check(results['imgs'], results['frame_inds'],
               f'{backend} g={gop} segment {first}')


def _check_tones(wave, offset, start, end, what):
    """The tone of every 0.2 s step inside ``[start, end)`` (centres only)
    is where the reader says it is."""
    assert offset == pytest.approx(start, abs=1e-3), what
    stop = min(end, N / FPS)
    assert len(wave) / RATE == pytest.approx(max(0.0, stop - start),
                                             abs=0.03), what
    checked = 0
    first = int(np.ceil(start / br.TONE_SECONDS))
    for seg in range(first, int(stop / br.TONE_SECONDS)):
        centre = (seg + 0.5) * br.TONE_SECONDS
        if centre + 0.05 > stop:
            break
        freq = br.tone_at(wave, RATE, offset, centre)
        assert freq == pytest.approx(br.tone_frequency(seg), abs=20), \
            f'{what}: {freq} Hz at {centre:.1f} s'
        checked += 1
    return checked


WINDOWS = dict(start=(0.0, 1.0), middle=(3.4, 4.6), end=(7.0, 8.0),
               across_end=(7.5, 9.0), past_end=(9.0, 10.0))


@pytest.mark.parametrize('source', ['mp4', 'wav'])
def test_audio_reader_windows_in_any_order(media, source):
    """``read_audio`` (seek one second early, decode forward to the window's
    end) on the AAC track of the g=250 video and on the wav: windows at the
    start, middle, end, across and past the end, in ascending then random
    order; the tones are where the reader says."""
    path = media['videos'][250] if source == 'mp4' else media['wav']
    names = list(WINDOWS) + list(np.random.default_rng(1).permutation(
        list(WINDOWS)))
    checked = 0
    for name in names:
        start, end = WINDOWS[name]
        t = time.monotonic()
        with bounded():
            wave, offset = read_audio(path, RATE, start, end)
        assert time.monotonic() - t < PER_CALL
        checked += _check_tones(wave, offset, start, end,
                                f'{source} {name}')
    assert checked >= 30


def test_reader_benchmark_tool_names_bad_arguments(tmp_path, capsys):
    """tools/benchmark/bench_readers.py: a --video that does not exist or is
    no video, an unknown reader and --rounds 0 stop with a message naming
    the option or the file (they were tracebacks: av's FileNotFoundError /
    InvalidDataError, a KeyError, statistics.median of no rounds)."""
    import importlib.util

    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(
        '_bench_readers_tool', tool_path('bench_readers'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    missing = str(tmp_path / 'missing.mp4')
    usage = [(['--video', missing], f'--video {missing}: no such file'),
             (['--readers', 'pyav', 'foo'], "--readers: unknown ['foo']; "
              'known: decord, pyav'),
             (['--rounds', '0'], '--rounds takes a positive integer')]
    for argv, match in usage:
        with pytest.raises(SystemExit) as e:
            tool.main(argv + ['--workdir', str(tmp_path)])
        assert e.value.code == 2 and match in capsys.readouterr().err, argv
    junk = tmp_path / 'junk.mp4'
    junk.write_bytes(b'not a video')
    with pytest.raises(SystemExit) as e:
        tool.main(['--video', str(junk), '--clips', '1', '--rounds', '1'])
    assert str(e.value.code).startswith(f'{junk}: PyAV cannot read it')


def test_reader_benchmark_tool_checks_every_frame(tmp_path):
    """tools/benchmark/bench_readers.py on a tiny generated file: it writes
    the indexed video with the package's media helpers, decodes EK100-style
    clips and checks each frame's bar code (a wrong frame raises)."""
    import importlib.util
    import json

    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(
        '_bench_readers_tool', tool_path('bench_readers'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / 'r.json')
    rows = tool.main(['--gop', '12', '--seconds', '2', '--size', '64', '48',
                      '--fps', '25', '--segment', '32', '--clips', '2',
                      '--rounds', '1', '--readers', 'pyav', '--workdir',
                      str(tmp_path), '--json', out])
    assert [(r['gop'], r['reader']) for r in rows] == [(12, 'pyav')]
    assert rows[0]['clips_per_s'] > 0
    with open(out) as f:
        saved = json.load(f)
    assert saved['cpu'] and saved['results'][0]['file'] == rows[0]['file']
