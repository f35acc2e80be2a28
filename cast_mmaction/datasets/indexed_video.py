"""Test media whose content encodes time: H.264 videos whose every frame
carries its index as a bar code (:func:`write_indexed_video`,
:func:`frame_index`), with an audio track (or a wav) of tones that step every
:data:`TONE_SECONDS` (:func:`tone_at`). The video reader benchmark
(``tools/benchmark/bench_readers.py``), the data pipeline benchmark
(``tools/benchmark/bench_pipeline.py``) and the reader / decoding tests check
every decoded frame with them."""
import os
import os.path as osp

import numpy as np

#: bar code: bits, least significant on the left, one stripe each
BAR_BITS = 14


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
                        preset='medium', noise=0.0, seed=0):
    """H.264 (libx264) mp4 of ``num_frames`` :func:`indexed_frame` frames
    with a key frame exactly every ``gop`` frames (scene-cut key frames
    off); ``audio_rate``: add a mono AAC track of :func:`tone_samples`.
    ``noise``: grey noise of this standard deviation (uint8 levels), drawn
    afresh for every frame (``seed``), below the bar code, as a camera's
    noise: frames are no longer exact shifts of each other, so predicted
    frames cost bits and decoding time as in real video."""
    import av
    tex = _texture(width * 2, height) if texture else None
    rng = np.random.default_rng(seed) if noise else None
    rows = _bar_rows(height)
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
            img = indexed_frame(i, width, height, tex)
            if rng is not None and rows < height:
                grain = rng.normal(0, noise, size=(height - rows, width, 1))
                img[rows:] = np.clip(img[rows:] + grain, 0, 255).astype(
                    np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format='rgb24')
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
