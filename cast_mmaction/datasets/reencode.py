"""Preparing videos for fast training reads: re-encode to a short side
(320 px by default) with a key frame every ``keyint`` frames, with PyAV
(libx264; no ffmpeg command line needed).

A training clip of the K400 recipe is 16 frames of a random 64-frame span;
the decoder starts at the key frame before the span and decodes forward, so
with the ~250-frame key-frame interval of a default encode a clip decodes
~125 frames before its first wanted one on average. Dense key frames bound
that to ``keyint - 1`` frames (``docs/data_pipeline.md`` measures it).

Frame ``k`` of the prepared file is frame ``k`` of the source (frames are
numbered in presentation order, as decord and the PyAV reader number them)
and the frame rate is the source's, so the samplers draw the same indices
from both files (``tests/test_reencode.py`` checks it with bar-coded frames).
The prepared file holds the video stream only: the K400 / SSv2 recipes read
no audio.

    from cast_mmaction.datasets.reencode import reencode_video
    reencode_video('in.mp4', 'out.mp4', short_side=320, keyint=16)

``tools/data/prepare_k400.py --resize-short 320 --keyint 16`` runs it over
a dataset (``reencode_videos``: a failed file does not stop the others, and
every failure is returned with its reason).
"""
import functools
import os
import os.path as osp
from fractions import Fraction

#: x264 settings of the prepared files: key frames exactly every ``keyint``
#: frames (no scene-cut key frames), so the decode cost of a clip is bounded;
#: no B-frame pyramid, so that no B-frame is a reference and the PyAV reader
#: skips every B-frame a clip does not want (``skip_nonref``): 6-11% less
#: decoding at the same file size; CAVLC entropy coding instead of CABAC
#: (``cabac=0``; CABAC's bit-serial decoding was most of a clip's decode time)
#: and B-frames averaged without implicit weights (``weightb=0``): together
#: measured 0.65-0.67x (camera noise) / 0.67-0.75x (noise-free) the CPU time
#: per clip of the CABAC files, for 8-12% larger files (docs/data_pipeline.md)
X264_PARAMS = 'scenecut=0:b-pyramid=none:cabac=0:weightb=0'


class ReencodeError(RuntimeError):
    """A video that could not be prepared; the message names the file."""


@functools.lru_cache(maxsize=None)
def check_x264_params(x264_params):
    """Raise ValueError naming every setting of ``x264_params``
    (``'key=value:...'``) that libx264 rejects. FFmpeg's libx264 wrapper
    only logs a rejected option and encodes without it, which would drop a
    user's setting silently; a one-frame encode with the log captured finds
    them. Once per process and value."""
    if not x264_params:
        return
    import io

    import av
    import av.logging
    import numpy as np
    level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs, \
                av.open(io.BytesIO(), 'w', format='mp4') as out:
            stream = out.add_stream('libx264', rate=25, options={
                'x264-params': x264_params})
            stream.width, stream.height, stream.pix_fmt = 16, 16, 'yuv420p'
            frame = av.VideoFrame.from_ndarray(
                np.zeros((16, 16, 3), np.uint8), format='rgb24')
            for frame in (frame.reformat(format='yuv420p'), None):
                for packet in stream.encode(frame):
                    out.mux(packet)
    finally:
        av.logging.set_level(level)
    bad = [msg.strip() for _, name, msg in logs
           if name == 'libx264' and 'Error parsing option' in msg]
    if bad:
        raise ValueError(f'x264 params {x264_params!r}: libx264 rejects '
                         f'{"; ".join(bad)} (see `x264 --fullhelp` for the '
                         f'names and values)')


def prepared_size(width, height, short_side):
    """(width, height) of a ``width x height`` video whose short side is
    scaled to ``short_side``, the long side rounded as MMAction2's
    ``Resize(scale=(-1, short_side))`` rounds, then both to an even number
    (yuv420p holds only even sizes). ``short_side=None``: the source size
    (made even)."""
    if short_side is None:
        w, h = int(width), int(height)
    else:
        from .transforms.decoding import scaled_size
        w, h = scaled_size(width, height, short_side)
    return w - w % 2, h - h % 2


def _open_source(src):
    import av
    if not osp.isfile(src):
        raise ReencodeError(f'{src}: no such file')
    try:
        container = av.open(src)
    except Exception as e:  # noqa: BLE001 - any reason the decoder refuses
        raise ReencodeError(f'{src}: cannot be read as a video ({e})') from e
    if not container.streams.video:
        container.close()
        raise ReencodeError(f'{src}: has no video stream')
    return container


def reencode_video(src, dst, short_side=320, keyint=16, crf=23,
                   preset='medium', interpolation='BICUBIC', threads=1,
                   x264_params=None):
    """Re-encode ``src`` into the H.264 mp4 ``dst`` at short side
    ``short_side`` (``None``: keep the size) with a key frame every
    ``keyint`` frames. Returns a dict (frames, width, height, fps, keyint,
    bytes). ``interpolation``: FFmpeg's scaler (``'BICUBIC'`` is the
    ``ffmpeg -vf scale`` default, what MMAction2's ``resize_videos.py``
    uses). ``x264_params``: more libx264 settings (``'key=value:...'``,
    appended to :data:`X264_PARAMS`; a setting libx264 rejects is a
    ValueError, :func:`check_x264_params`). ``threads``: encoder and decoder threads (1 keeps the output the
    same from run to run; run files in parallel instead).

    The file is written to ``dst + '.part'`` and renamed when complete, so
    an interrupted run leaves no truncated ``dst``. Raises
    :class:`ReencodeError` naming ``src`` (unreadable, no video, undecodable)
    or ``dst`` (folder not writable)."""
    import av
    if keyint is not None and int(keyint) < 1:
        raise ValueError(f'keyint must be >= 1, got {keyint}')
    check_x264_params(x264_params)
    if short_side is not None and int(short_side) < 2:
        raise ValueError(f'short_side must be >= 2 or None, got {short_side}')
    folder = osp.dirname(osp.abspath(dst))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ReencodeError(f'{dst}: cannot create its folder ({e})') from e
    if not os.access(folder, os.W_OK):
        raise ReencodeError(f'{dst}: folder {folder} is not writable')
    part = dst + '.part'
    src_c = _open_source(src)
    try:
        vin = src_c.streams.video[0]
        vin.thread_type = 'AUTO'
        vin.codec_context.thread_count = int(threads)
        rate = vin.average_rate or vin.guessed_rate
        if not rate:
            raise ReencodeError(f'{src}: reports no frame rate')
        rate = Fraction(rate).limit_denominator(1001 * 1000)
        width, height = prepared_size(vin.codec_context.width,
                                      vin.codec_context.height, short_side)
        if width < 2 or height < 2:
            raise ReencodeError(f'{src}: cannot read its frame size')
        params = X264_PARAMS + (f':{x264_params}' if x264_params else '')
        opts = {'crf': str(crf), 'preset': preset, 'x264-params': params}
        if keyint is not None:
            opts.update(g=str(int(keyint)), keyint_min=str(int(keyint)))
        try:
            out_c = av.open(part, 'w', format='mp4')
        except Exception as e:  # noqa: BLE001
            raise ReencodeError(f'{dst}: cannot be written ({e})') from e
        frames = 0
        try:
            vout = out_c.add_stream('libx264', rate=rate, options=opts)
            vout.width, vout.height, vout.pix_fmt = width, height, 'yuv420p'
            vout.codec_context.thread_count = int(threads)
            vout.codec_context.time_base = 1 / rate
            try:
                for frame in src_c.decode(vin):
                    img = frame.reformat(width=width, height=height,
                                         format='yuv420p',
                                         interpolation=interpolation)
                    img.pts = frames  # frame k of the source -> frame k
                    img.time_base = vout.codec_context.time_base
                    for packet in vout.encode(img):
                        out_c.mux(packet)
                    frames += 1
            except av.error.FFmpegError as e:
                raise ReencodeError(f'{src}: decoding failed after {frames} '
                                    f'frames ({e})') from e
            for packet in vout.encode():
                out_c.mux(packet)
        finally:
            out_c.close()
        if frames == 0:
            os.remove(part)
            raise ReencodeError(f'{src}: no decodable frame')
        os.replace(part, dst)
    except BaseException:
        if osp.exists(part):
            os.remove(part)
        raise
    finally:
        src_c.close()
    return dict(src=src, dst=dst, frames=frames, width=width, height=height,
                fps=float(rate), keyint=keyint, bytes=osp.getsize(dst))


def _run_one(job):
    src, dst, kwargs = job
    try:
        return reencode_video(src, dst, **kwargs), None
    except (ReencodeError, ValueError, OSError) as e:
        return None, (src, str(e))
    except Exception as e:  # noqa: BLE001 - a bad file must not stop a run
        return None, (src, f'{src}: {type(e).__name__}: {e}')


def reencode_videos(pairs, jobs=1, overwrite=False, progress=None, **kwargs):
    """Re-encode every ``(src, dst)`` of ``pairs`` (:func:`reencode_video`
    with ``kwargs``) in ``jobs`` processes. A ``dst`` that exists is kept
    unless ``overwrite`` (an interrupted run resumes). A failed file does
    not stop the others. Returns ``(done, failed)``: the result dicts (or
    ``dict(src, dst, skipped=True)``) and ``[(src, reason)]``, both in the
    order of ``pairs``. ``progress(n_done, n_total)`` is called as files
    finish. Settings every file would fail on (bad ``x264_params``)
    raise ValueError before any file."""
    check_x264_params(kwargs.get('x264_params'))
    todo, done, failed = [], {}, {}
    for i, (src, dst) in enumerate(pairs):
        if not overwrite and osp.isfile(dst):
            done[i] = dict(src=src, dst=dst, skipped=True)
        else:
            todo.append((i, (src, dst, kwargs)))
    total, n = len(pairs), len(done)
    if jobs and int(jobs) > 1 and len(todo) > 1:
        import multiprocessing as mp
        with mp.get_context('spawn').Pool(int(jobs)) as pool:
            results = pool.imap(_run_one, [j for _, j in todo])
            for (i, _), (res, err) in zip(todo, results):
                (done if res else failed)[i] = res or err
                n += 1
                if progress:
                    progress(n, total)
    else:
        for i, job in todo:
            res, err = _run_one(job)
            (done if res else failed)[i] = res or err
            n += 1
            if progress:
                progress(n, total)
    return ([done[i] for i in sorted(done)],
            [failed[i] for i in sorted(failed)])
