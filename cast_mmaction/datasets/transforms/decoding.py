"""Video readers (decord, PyAV, torchcodec) and the decoding transforms.

The readers give random access to a few frames of a file: each
``get_frames(indices)`` decodes every distinct wanted frame once, in
ascending order (so at most one seek per frame, and none between frames
that lie after each other in one key-frame interval), and returns them in
the order asked, repeats included. Indices past the last decodable frame
give that frame (with a warning); negative ones are refused.

``VideoInit`` + ``VideoDecode`` are drop-in replacements for MMAction2's
``DecordInit`` + ``DecordDecode`` (same ``total_frames``, ``avg_fps``,
``imgs``; identical arrays with ``backend='decord'``: ``tests/test_decoding.py``)
with a choice of decoder, the decoder's thread count, and an optional
reduced-size decode (``short_side``: the decoder's scaler outputs frames
whose short side is ``short_side``, sized as MMAction2's
``Resize(scale=(-1, short_side))`` sizes them; close to, not bit-identical
with, decode-then-``Resize``: ``docs/data_pipeline.md``).

The EPIC-KITCHENS transforms (``epic.py``) use the same readers.
"""
import os.path as osp
from typing import Dict

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmaction.registry import TRANSFORMS
from ..epic_kitchens import EpicSegmentError

#: what to install for the torchcodec backend
TORCHCODEC_HINT = (
    'pip install torchcodec (the release matching your torch, see '
    'https://github.com/pytorch/torchcodec#installing-torchcodec) and '
    'FFmpeg 4-8 shared libraries (libavcodec, libavformat, libavutil, '
    'libswscale, libswresample, libavfilter, libavdevice), e.g. '
    '`apt-get install libavcodec59 libavformat59 libavutil57 libswscale6 '
    'libswresample4 libavfilter8 libavdevice59` on Debian 12 or '
    '`conda install ffmpeg`')


def _past_the_end(path, missing, last_index):
    print_log(f'{path}: frames {missing[:5]} lie past the last decodable '
              f'frame {last_index}; using that frame', logger='current',
              level=30)


def scaled_size(width, height, short_side):
    """(width, height) of a ``width x height`` frame scaled to
    ``short_side`` on its short side, rounded as MMAction2's
    ``Resize(scale=(-1, short_side))`` rounds (``mmcv.rescale_size``)."""
    from mmcv import rescale_size
    return tuple(int(v) for v in rescale_size(
        (int(width), int(height)), (np.inf, int(short_side))))


def _probe_size(path):
    """(width, height) of the first video stream, from the header."""
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        return int(s.codec_context.width), int(s.codec_context.height)


def _check_indices(path, indices):
    wanted = [int(i) for i in np.asarray(indices).reshape(-1)]
    if any(i < 0 for i in wanted):
        raise ValueError(f'{path}: negative frame index in {wanted[:5]}')
    return wanted


class _ClampedReader:
    """Shared ``get_frames`` of the readers that know their frame count:
    clamp past-the-end indices (warning), decode the distinct frames in
    ascending order (``_decode_sorted``), return them in the asked order."""

    def get_frames(self, indices):
        """(N, H, W, 3) uint8 RGB for ``indices`` (any order, repeats
        allowed)."""
        wanted = _check_indices(self.path, indices)
        last = self.num_frames - 1
        missing = [i for i in wanted if i > last]
        if missing:
            _past_the_end(self.path, missing, last)
        wanted = [min(i, last) for i in wanted]
        uniq, inverse = np.unique(wanted, return_inverse=True)
        frames = self._decode_sorted([int(i) for i in uniq])
        return frames[inverse.reshape(-1)]


class DecordVideoReader(_ClampedReader):
    """decord: ``get_batch`` seeks to the nearest key frame before each
    requested frame and decodes from there (in C++; see
    ``docs/video_readers.md`` for what the per-sample time limit can and
    cannot interrupt there). ``short_side``: decord's scaler outputs frames
    of that short side (``VideoReader(width=, height=)``)."""

    def __init__(self, path, num_threads=1, short_side=None):
        try:
            import decord
        except ImportError as e:  # pragma: no cover - decord is pinned
            raise ImportError('backend="decord" needs decord (pip install '
                              'decord), or use backend="pyav"') from e
        self.path = path
        kw = {}
        if short_side:
            w, h = scaled_size(*_probe_size(path), short_side)
            kw = dict(width=w, height=h)
        self._vr = decord.VideoReader(path, num_threads=int(num_threads),
                                      ctx=decord.cpu(0), **kw)
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps())

    def _decode_sorted(self, indices):
        return self._vr.get_batch(indices).asnumpy()

    def close(self):
        self._vr = None


def _open_without_probe_decode(path):
    """``av.open(path)`` without decoding while probing: FFmpeg's
    ``avformat_find_stream_info`` decodes the first frames of a stream to
    learn what the header already says in MP4 / MKV / WebM (size, rate);
    ``skip_frame='all'`` for the probing decoders skips that decode (3 of
    3.6 ms of opening a 568 x 320 K400 file; docs/data_pipeline.md). The
    option lives only in the probing decoders; the reader decodes with its
    own, and the frames are bit-identical (``tests/test_decoding.py``). A
    file whose header lacks the size or the frame rate is opened again
    with the full probe."""
    import av
    container = av.open(path, options={'skip_frame': 'all'})
    streams = container.streams.video
    if streams and streams[0].codec_context.width and \
            (streams[0].average_rate or streams[0].guessed_rate):
        return container
    container.close()
    return av.open(path)


class PyAVVideoReader:
    """PyAV: seeks to the key frame before a wanted frame and decodes
    forward to it, however far that key frame is.

    Wanted frames are visited in ascending order. Each one costs at most
    one seek: the reader seeks when it has nothing decoded yet, when the
    frame lies behind the decoder (unsorted input) or, as an optimisation,
    when it lies more than ``seek_gap`` frames ahead of the last decoded
    frame (a key frame in between saves decoding the gap). After a seek it
    decodes forward until it reaches that frame or the end of the stream,
    never seeking again for the same frame, so every call ends after at
    most ``len(indices)`` seeks and a bounded number of decoded frames.
    (Before issue 18 a frame more than ``seek_gap`` frames after its key
    frame made the reader seek back to that key frame forever.)

    ``num_threads``: FFmpeg decoding threads (``None``: FFmpeg's own
    choice, frame + slice threads on every core). ``short_side``: frames
    are converted to RGB at that short side by FFmpeg's scaler
    (``to_ndarray(width=, height=, interpolation=)``).

    RGB conversion: the wanted frames are kept as decoded (YUV) and
    converted after the last one is decoded (or every
    :attr:`HELD_FRAMES` frames), all through one scaler context of the
    reader. ``VideoFrame.to_ndarray(format='rgb24')``
    builds a new scaler context for every frame, and between two decodes
    the scaler runs cold: that cost 0.3-0.9 ms a frame against 0.1 ms
    converted together (568 x 320, docs/data_pipeline.md); the pixels are
    the same (same scaler, same arguments; ``tests/test_decoding.py``).

    ``skip_nonref`` (H.264 in MP4 / MOV / MKV, i.e. length-prefixed NAL
    units): packets of frames that are neither wanted nor used as a
    reference by any other frame (every slice ``nal_ref_idc == 0``; about
    40% of libx264's frames with its default B-frames) are not sent to the
    decoder. No other frame depends on them, so the frames returned are
    bit-identical (``tests/test_decoding.py``); only the work is smaller.
    """

    def __init__(self, path, seek_gap=60, num_threads=None, short_side=None,
                 interpolation='BILINEAR', skip_nonref=True):
        import av
        if seek_gap < 1:
            raise ValueError(f'PyAVVideoReader.seek_gap must be >= 1, got '
                             f'{seek_gap}')
        self.path = path
        self.seek_gap = int(seek_gap)
        self._container = _open_without_probe_decode(path)
        stream = self._container.streams.video[0]
        stream.thread_type = 'AUTO'
        if num_threads is not None:
            stream.codec_context.thread_count = int(num_threads)
        self._stream = stream
        self._rgb = dict(format='rgb24')
        self._reformatter = None  # one scaler context for every frame
        if short_side:
            w, h = scaled_size(stream.codec_context.width,
                               stream.codec_context.height, short_side)
            self._rgb.update(width=w, height=h, interpolation=interpolation)
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise EpicSegmentError(f'{path}: PyAV reports no frame rate')
        self.fps = float(rate)
        self._tb = float(stream.time_base)
        self._t0 = stream.start_time or 0
        n = stream.frames
        if not n:
            if stream.duration:
                secs = stream.duration * self._tb
            else:
                secs = (self._container.duration or 0) / 1e6
            n = int(round(secs * self.fps))
        self.num_frames = int(n)
        self.seeks = 0  # seeks made so far (tests, benchmarks)
        self.skipped = 0  # packets not decoded (skip_nonref)
        self._wanted = set()
        self._skip = False
        self._nal_size = None  # bytes of the NAL length prefix (AVCC)
        extra = stream.codec_context.extradata
        if skip_nonref and stream.codec_context.name == 'h264' and extra \
                and len(extra) > 4 and extra[0] == 1:
            self._nal_size = (extra[4] & 3) + 1

    def _index(self, frame):
        return int(round((frame.pts - self._t0) * self._tb * self.fps))

    def _seek(self, index):
        """Iterator of the decoded frames from the key frame at or before
        frame ``index`` (without the unwanted non-reference ones when
        ``skip_nonref`` applies)."""
        self.seeks += 1
        pts = int(index / self.fps / self._tb) + self._t0
        self._container.seek(max(pts, self._t0), stream=self._stream,
                             backward=True, any_frame=False)
        if self._nal_size is None or not self._skip:
            return self._container.decode(self._stream)
        return self._decode_needed(self._wanted)

    def _decode_needed(self, wanted):
        for packet in self._container.demux(self._stream):
            if packet.size and packet.pts is not None and \
                    not packet.is_keyframe and \
                    self._index(packet) not in wanted and \
                    self._nonref(bytes(packet)):
                self.skipped += 1
                continue
            yield from packet.decode()  # an empty packet flushes

    def _nonref(self, data):
        """Whether every slice of an H.264 access unit (length-prefixed
        NAL units) has ``nal_ref_idc == 0`` (no frame refers to it)."""
        size, i, slices = self._nal_size, 0, 0
        while i + size < len(data):
            length = int.from_bytes(data[i:i + size], 'big')
            header = data[i + size]
            if header & 0x1F in (1, 5):  # coded slice (non-IDR, IDR)
                if header & 0x60:
                    return False
                slices += 1
            i += size + length
        return slices > 0

    def get_frames(self, indices):
        """(N, H, W, 3) uint8 RGB for ``indices`` (any order, repeats
        allowed). Indices past the last decodable frame give that frame,
        with a warning."""
        wanted = _check_indices(self.path, indices)
        self._wanted = set(wanted)  # the frames skip_nonref keeps
        todo = sorted(self._wanted)
        # a frame at or past the end stands for the last decodable frame,
        # which must then be decoded whatever its kind: no skipping
        self._skip = bool(todo) and todo[-1] < self.num_frames - 1
        out = {}
        held = 0  # distinct frames in ``out`` not yet converted
        frames = None  # decoded-frame iterator since the last seek
        pos = None  # index of the last decoded frame
        last = None  # the last decoded frame
        k = 0  # todo[:k] are done
        while k < len(todo):
            target = todo[k]
            if frames is None or pos is None or target < pos or \
                    target - pos > self.seek_gap:
                frames, pos = self._seek(target), None
            # decode forward to ``target``: every step consumes a frame of
            # a finite stream, no step seeks
            for frame in frames:
                if frame.pts is None:
                    continue
                pos, last = self._index(frame), frame
                if pos >= target:
                    break
            else:  # end of the stream before ``target``: so are the rest
                break
            # the exact frame (or, should the time stamps skip an index, the
            # first one after it) for every wanted index up to ``pos``; kept
            # decoded, converted HELD_FRAMES at a time
            if k < len(todo) and todo[k] <= pos:
                held += 1
            while k < len(todo) and todo[k] <= pos:
                out[todo[k]] = last
                k += 1
            if held >= self.HELD_FRAMES:
                self._to_rgb(out)
                held = 0
        if k < len(todo):
            if last is None:
                raise EpicSegmentError(f'{self.path}: PyAV decoded no frames '
                                       f'at or before frame {todo[k]}')
            _past_the_end(self.path, todo[k:], pos)
            for i in todo[k:]:
                out[i] = last
        self._to_rgb(out)
        return np.stack([out[i] for i in wanted])

    #: decoded frames held before they are converted (bounds the memory of
    #: a long call: 16 frames of 1080p YUV are 50 MB)
    HELD_FRAMES = 16

    def _to_rgb(self, out):
        """Replace the decoded frames among ``out``'s values (index ->
        frame) by their (H, W, 3) uint8 RGB arrays, each distinct frame
        once, through the reader's one scaler context."""
        from av.video.reformatter import VideoReformatter
        if self._reformatter is None:
            self._reformatter = VideoReformatter()
        alive = list(out.values())  # no frame is freed (its id reused) here
        rgb = {}
        for i, f in out.items():
            if isinstance(f, np.ndarray):
                continue
            if id(f) not in rgb:
                rgb[id(f)] = self._reformatter.reformat(
                    f, **self._rgb).to_ndarray()
            out[i] = rgb[id(f)]
        del alive

    def close(self):
        if self._container is not None:
            self._container.close()
            self._container = None


def torchcodec_unavailable():
    """Why the torchcodec backend cannot decode here (a sentence naming
    what to install), or ``None`` when it can."""
    try:
        from torchcodec._core import ops
    except Exception as e:  # noqa: BLE001 - any import failure
        return (f'torchcodec cannot be imported ({type(e).__name__}: '
                f'{str(e).splitlines()[0] if str(e) else ""}); '
                f'{TORCHCODEC_HINT}')
    if not getattr(ops, '_FFMPEG_AVAILABLE', True):
        return ('torchcodec is installed but finds no FFmpeg shared '
                f'libraries it supports; {TORCHCODEC_HINT}')
    return None


class TorchCodecVideoReader(_ClampedReader):
    """torchcodec (PyTorch's decoder, FFmpeg; on CUDA devices NVDEC):
    ``get_frames_at`` of the sorted distinct frames. ``seek_mode='exact'``
    scans the file's packets when it opens (frame-exact seeks);
    ``'approximate'`` trusts the header's frame rate. ``short_side``: the
    decoder resizes (``torchcodec.transforms.Resize``, bilinear with
    anti-aliasing)."""

    def __init__(self, path, num_threads=1, short_side=None,
                 seek_mode='exact', device=None):
        why = torchcodec_unavailable()
        if why:
            raise ImportError(f'backend="torchcodec": {why}')
        from torchcodec.decoders import VideoDecoder
        self.path = path
        kw = {}
        if short_side:
            from torchcodec.transforms import Resize
            w, h = scaled_size(*_probe_size(path), short_side)
            kw['transforms'] = [Resize((h, w))]
        if device is not None:
            kw['device'] = device
        self._dec = VideoDecoder(path, num_ffmpeg_threads=int(num_threads),
                                 seek_mode=seek_mode,
                                 dimension_order='NHWC', **kw)
        md = self._dec.metadata
        self.num_frames = int(md.num_frames)
        self.fps = float(md.average_fps)

    def _decode_sorted(self, indices):
        return self._dec.get_frames_at(indices).data.cpu().numpy()

    def close(self):
        self._dec = None


READERS = dict(decord=DecordVideoReader, pyav=PyAVVideoReader,
               torchcodec=TorchCodecVideoReader)


def open_reader(backend, path, **kwargs):
    """A reader of ``backend`` on ``path``; a missing file or a file the
    decoder refuses is an error naming both."""
    if backend not in READERS:
        raise ValueError(f'video backend must be one of {sorted(READERS)}, '
                         f'got {backend!r}')
    if not osp.isfile(path):
        raise FileNotFoundError(f'video {path} not found')
    try:
        return READERS[backend](path, **kwargs)
    except (EpicSegmentError, FileNotFoundError, ImportError):
        raise
    except Exception as e:
        raise RuntimeError(f'{backend} cannot open video {path}: {e}') from e


@TRANSFORMS.register_module()
class VideoInit(BaseTransform):
    """Open a video for :class:`VideoDecode` (drop-in for ``DecordInit``).

    Required keys: ``filename`` (``.mp4`` is appended when it has no
    extension, as ``DecordInit`` does). Added keys: ``video_reader``,
    ``total_frames``, ``avg_fps``.

    Args:
        backend (str): ``'decord'`` (the recipes' decoder), ``'pyav'`` or
            ``'torchcodec'``.
        num_threads (int | None): decoding threads (``None``: the
            decoder's own choice; PyAV's is every core).
        short_side (int | None): decode at this short side (the decoder's
            scaler, sized as ``Resize(scale=(-1, short_side))``); ``None``:
            the file's size. Not bit-identical to decode-then-``Resize``.
        **reader_kwargs: passed to the reader (PyAV: ``seek_gap``,
            ``interpolation``; torchcodec: ``seek_mode``, ``device``).
    """

    def __init__(self, backend='decord', num_threads=1, short_side=None,
                 **reader_kwargs):
        if backend not in READERS:
            raise ValueError(f'VideoInit.backend must be one of '
                             f'{sorted(READERS)}, got {backend!r}')
        if short_side is not None and int(short_side) < 1:
            raise ValueError(f'VideoInit.short_side must be >= 1 or None, '
                             f'got {short_side}')
        if backend == 'torchcodec':
            why = torchcodec_unavailable()
            if why:
                raise ImportError(f'VideoInit(backend="torchcodec"): {why}')
        self.backend = backend
        self.num_threads = num_threads
        self.short_side = short_side
        self.reader_kwargs = reader_kwargs

    def transform(self, results: Dict) -> Dict:
        path = results['filename']
        if osp.splitext(path)[0] == path:
            path = path + '.mp4'
        threads = self.num_threads
        if threads is None and self.backend != 'pyav':
            threads = 0  # decord, torchcodec: 0 = the decoder's choice
        kw = dict(self.reader_kwargs, short_side=self.short_side,
                  num_threads=threads)
        reader = open_reader(self.backend, path, **kw)
        results['video_reader'] = reader
        results['total_frames'] = reader.num_frames
        results['avg_fps'] = reader.fps
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(backend={self.backend!r}, '
                f'num_threads={self.num_threads}, '
                f'short_side={self.short_side})')


@TRANSFORMS.register_module()
class VideoDecode(BaseTransform):
    """Decode the frames in ``frame_inds`` (each distinct frame once, in
    ascending order) and close the reader (drop-in for ``DecordDecode``).
    Adds ``imgs`` (list of H x W x 3 RGB uint8, in ``frame_inds`` order),
    ``original_shape`` and ``img_shape`` (the decoded frames' size)."""

    def transform(self, results: Dict) -> Dict:
        reader = results.pop('video_reader')
        inds = np.asarray(results['frame_inds'], dtype=np.int64).reshape(-1)
        try:
            frames = reader.get_frames(inds)
        finally:
            reader.close()
        imgs = list(frames)
        results['imgs'] = imgs
        results['original_shape'] = imgs[0].shape[:2]
        results['img_shape'] = imgs[0].shape[:2]
        return results
