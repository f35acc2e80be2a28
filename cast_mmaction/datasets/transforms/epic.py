"""Transforms for EPIC-KITCHENS-100 segments of untrimmed videos.

A pipeline starts with

``EpicVideoInit``
    opens the video (decord or PyAV; only the container index is read) and
    maps the annotated segment onto this file's frames with
    :func:`~cast_mmaction.datasets.epic_kitchens.resolve_segment`
    (timestamps are converted with the file's own frame rate when the file
    disagrees with the annotation, e.g. a re-encoded copy);
``EpicSampleFrames``
    TSN-style sampling inside the segment: the segment is cut into
    ``num_segments`` equal parts; training takes one random frame per part,
    testing takes ``num_clips`` fixed views, view ``k`` the frame at offset
    ``k / num_clips`` of every part (two views: the starts and the middles
    of the parts, as in the authors' EK100 test);
``EpicDecode``
    decodes exactly the sampled frames by seeking (never the whole video);

and ends with ``PackEpicInputs``, which puts ``gt_verb`` / ``gt_noun`` into
the data sample. The standard MMAction2 transforms (``Resize``,
``RandomResizedCrop``, ``Flip``, ``ThreeCrop``, ``FormatShape``) go in
between.
"""
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmaction.datasets.transforms import PackActionInputs
from mmaction.registry import TRANSFORMS
from ..epic_kitchens import EpicSegmentError, resolve_segment


# --------------------------------------------------------------------------
# video readers: random access to a few frames of a long file
# --------------------------------------------------------------------------
def _past_the_end(path, missing, last_index):
    print_log(f'{path}: frames {missing[:5]} lie past the last decodable '
              f'frame {last_index}; using that frame', logger='current',
              level=30)


class DecordVideoReader:
    """decord: ``get_batch`` seeks to the nearest key frame before each
    requested frame and decodes from there (in C++; see
    ``docs/video_readers.md`` for what the per-sample time limit can and
    cannot interrupt there)."""

    def __init__(self, path, num_threads=1):
        try:
            import decord
        except ImportError as e:  # pragma: no cover - decord is pinned
            raise ImportError('EpicVideoInit(backend="decord") needs decord '
                              '(pip install decord), or use backend="pyav"'
                              ) from e
        self.path = path
        self._vr = decord.VideoReader(path, num_threads=num_threads,
                                      ctx=decord.cpu(0))
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps())

    def get_frames(self, indices):
        """(N, H, W, 3) uint8 RGB for ``indices`` (in their order);
        indices past the end of the file give its last frame (with a
        warning), as :class:`PyAVVideoReader` does."""
        wanted = [int(i) for i in indices]
        if any(i < 0 for i in wanted):
            raise ValueError(f'{self.path}: negative frame index in '
                             f'{wanted[:5]}')
        last = self.num_frames - 1
        missing = [i for i in wanted if i > last]
        if missing:
            _past_the_end(self.path, missing, last)
        return self._vr.get_batch([min(i, last) for i in wanted]).asnumpy()

    def close(self):
        self._vr = None


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
    """

    def __init__(self, path, seek_gap=60):
        import av
        if seek_gap < 1:
            raise ValueError(f'PyAVVideoReader.seek_gap must be >= 1, got '
                             f'{seek_gap}')
        self.path = path
        self.seek_gap = int(seek_gap)
        self._container = av.open(path)
        stream = self._container.streams.video[0]
        stream.thread_type = 'AUTO'
        self._stream = stream
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

    def _index(self, frame):
        return int(round((frame.pts - self._t0) * self._tb * self.fps))

    def _seek(self, index):
        """Iterator of the decoded frames from the key frame at or before
        frame ``index``."""
        self.seeks += 1
        pts = int(index / self.fps / self._tb) + self._t0
        self._container.seek(max(pts, self._t0), stream=self._stream,
                             backward=True, any_frame=False)
        return self._container.decode(self._stream)

    def get_frames(self, indices):
        """(N, H, W, 3) uint8 RGB for ``indices`` (any order, repeats
        allowed). Indices past the last decodable frame give that frame,
        with a warning."""
        wanted = [int(i) for i in indices]
        if any(i < 0 for i in wanted):
            raise ValueError(f'{self.path}: negative frame index in '
                             f'{wanted[:5]}')
        todo = sorted(set(wanted))
        out = {}
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
            # first one after it) for every wanted index up to ``pos``
            img = last.to_ndarray(format='rgb24')
            while k < len(todo) and todo[k] <= pos:
                out[todo[k]] = img
                k += 1
        if k < len(todo):
            if last is None:
                raise EpicSegmentError(f'{self.path}: PyAV decoded no frames '
                                       f'at or before frame {todo[k]}')
            _past_the_end(self.path, todo[k:], pos)
            fill = last.to_ndarray(format='rgb24')
            for i in todo[k:]:
                out[i] = fill
        return np.stack([out[i] for i in wanted])

    def close(self):
        if self._container is not None:
            self._container.close()
            self._container = None


_READERS = dict(decord=DecordVideoReader, pyav=PyAVVideoReader)
_WARNED = set()


@TRANSFORMS.register_module()
class EpicVideoInit(BaseTransform):
    """Open the segment's video and resolve the segment to frame indices.

    Required keys: ``filename``; optional ``start_frame``, ``stop_frame``,
    ``start_sec``, ``stop_sec``, ``ann_fps``.
    Added keys: ``video_reader``, ``total_frames`` (of the file), ``avg_fps``,
    ``segment_frames`` ``(first, last)`` (0-based, inclusive),
    ``segment_policy`` (``whole`` / ``frames`` / ``timestamps``, plus
    ``+clamped``).

    Args:
        backend (str): ``'decord'`` or ``'pyav'``.
        num_threads (int): decord decoding threads.
        frame_tol (float): see ``resolve_segment``.
        end_slack_sec (float): see ``resolve_segment``.
    """

    def __init__(self, backend='decord', num_threads=1, frame_tol=2.0,
                 end_slack_sec=1.0):
        if backend not in _READERS:
            raise ValueError(f'EpicVideoInit.backend must be one of '
                             f'{sorted(_READERS)}, got {backend!r}')
        self.backend = backend
        self.num_threads = num_threads
        self.frame_tol = frame_tol
        self.end_slack_sec = end_slack_sec

    def _open(self, path):
        if not osp.isfile(path):
            raise FileNotFoundError(f'video {path} not found')
        try:
            if self.backend == 'decord':
                return DecordVideoReader(path, self.num_threads)
            return PyAVVideoReader(path)
        except (EpicSegmentError, FileNotFoundError):
            raise
        except Exception as e:
            raise RuntimeError(f'{self.backend} cannot open video {path}: '
                               f'{e}') from e

    def transform(self, results: Dict) -> Dict:
        path = results['filename']
        reader = self._open(path)
        where = path
        if results.get('csv_line') is not None:
            where = (f'{path} (narration {results.get("narration_id")}, '
                     f'{results.get("ann_file")} line {results["csv_line"]})')
        first, last, how = resolve_segment(
            reader.num_frames, reader.fps,
            results.get('start_frame'), results.get('stop_frame'),
            results.get('start_sec'), results.get('stop_sec'),
            ann_fps=results.get('ann_fps'), frame_tol=self.frame_tol,
            end_slack_sec=self.end_slack_sec, name=where)
        if how not in ('whole', 'frames') and (path, how) not in _WARNED:
            _WARNED.add((path, how))
            if how.endswith('+clamped'):
                note = (f'ends before the segment of narration '
                        f'{results.get("narration_id")} does; segments are '
                        f'cut at its last frame')
            else:
                note = ('disagrees with the annotated frame numbers; '
                        'segments of this video are located through their '
                        'timestamps')
            print_log(f'{path} ({reader.num_frames} frames at '
                      f'{reader.fps:.3f} fps) {note}', logger='current',
                      level=30 if how.endswith('+clamped') else 20)
        results['video_reader'] = reader
        results['total_frames'] = reader.num_frames
        results['avg_fps'] = reader.fps
        results['segment_frames'] = (first, last)
        results['segment_policy'] = how
        return results

    def __repr__(self):
        return f'{type(self).__name__}(backend={self.backend!r})'


@TRANSFORMS.register_module()
class EpicSampleFrames(BaseTransform):
    """TSN-style frame sampling inside ``segment_frames``.

    Args:
        num_segments (int): frames per clip (16 in the EK100 recipe).
        num_clips (int): views in test mode (2 in the recipe); training
            always takes one clip.
        test_mode (bool): fixed views instead of random frames.

    Added keys: ``frame_inds`` (``num_clips * num_segments`` absolute frame
    indices, view-major), ``clip_len``, ``num_clips``, ``frame_interval``.
    """

    def __init__(self, num_segments=16, num_clips=1, test_mode=False):
        if num_segments < 1 or num_clips < 1:
            raise ValueError('EpicSampleFrames: num_segments and num_clips '
                             'must be >= 1')
        self.num_segments = num_segments
        self.num_clips = num_clips
        self.test_mode = test_mode

    def sample(self, first, last):
        # the authors' EK100 / SSv2 segment sampling (transforms/sampling.py)
        from .sampling import segment_indices
        return first + segment_indices(last - first + 1, self.num_segments,
                                       self.num_clips, self.test_mode)

    def transform(self, results: Dict) -> Dict:
        first, last = results['segment_frames']
        results['frame_inds'] = self.sample(int(first), int(last))
        results['clip_len'] = self.num_segments
        results['num_clips'] = self.num_clips if self.test_mode else 1
        results['frame_interval'] = None
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(num_segments={self.num_segments}, '
                f'num_clips={self.num_clips}, test_mode={self.test_mode})')


@TRANSFORMS.register_module()
class EpicDecode(BaseTransform):
    """Decode the frames in ``frame_inds`` (each distinct frame once) and
    close the reader. Adds ``imgs`` (list of H x W x 3 RGB uint8),
    ``original_shape`` and ``img_shape``."""

    def transform(self, results: Dict) -> Dict:
        reader = results.pop('video_reader')
        inds = np.asarray(results['frame_inds'], dtype=np.int64)
        uniq, inverse = np.unique(inds, return_inverse=True)
        try:
            frames = reader.get_frames(uniq)
        finally:
            reader.close()
        imgs = [frames[i] for i in inverse.reshape(-1)]
        results['imgs'] = imgs
        results['original_shape'] = imgs[0].shape[:2]
        results['img_shape'] = imgs[0].shape[:2]
        return results


@TRANSFORMS.register_module()
class PackEpicInputs(PackActionInputs):
    """``PackActionInputs`` plus the verb and noun labels: sets ``gt_verb``
    and ``gt_noun`` (0-d long tensors) when the segment is labelled.

    Args:
        meta_keys (Sequence[str]): kept in the data sample's metainfo; the
            metric and the submission tool need ``narration_id``.
    """

    def __init__(self,
                 meta_keys: Sequence[str] = ('img_shape', 'narration_id',
                                             'video_id', 'segment_frames',
                                             'segment_policy'),
                 **kwargs):
        super().__init__(meta_keys=meta_keys, **kwargs)

    def transform(self, results: Dict) -> Dict:
        packed = super().transform(results)
        sample = packed['data_samples']
        for key, field in (('verb_label', 'gt_verb'),
                           ('noun_label', 'gt_noun')):
            value: Optional[int] = results.get(key)
            if value is not None:
                sample.set_field(torch.tensor(int(value), dtype=torch.long),
                                 field)
        return packed
