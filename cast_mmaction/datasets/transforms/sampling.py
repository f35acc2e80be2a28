"""Frame sampling as the authors' loaders sample (KHU-VLL/CAST
``dataset/ssv2.py``, ``dataset/epic.py``, ``dataset/kinetics.py``).

TSN-style segments (SSv2, EPIC-KITCHENS-100; :class:`SegmentSample`,
:func:`segment_indices`), for a video of ``n`` frames and ``S`` segments:

* training: ``part = n // S``; frame ``i * part + randint(part)`` of every
  segment ``i`` (the last ``n % S`` frames are never drawn). A video shorter
  than ``S`` frames gives frame 0 ``S`` times, as their loader does;
* testing: ``tick = n / S``; the views are the segment starts
  ``int(tick * i)`` and the segment middles ``int(tick / 2 + tick * i)``
  (their two temporal views, in this order); with ``num_clips`` views view
  ``k`` is at offset ``k / num_clips`` of every segment.

Dense clips (Kinetics-400; :class:`DenseSpanSample`,
:func:`dense_train_indices`, :func:`dense_test_indices`), ``L`` frames at
stride ``r`` (16 and 4):

* training: one clip of ``L`` indices spread evenly (``np.linspace``, both
  ends) over a random span of ``L x r`` frames ending at a random
  ``end in [L r, n)``, clipped to ``[end - L r, end - 1]``. A video of at
  most ``L r`` frames gives ``linspace(0, n, n // r)`` padded with ``n`` to
  ``L`` indices, clipped to ``[0, n - 1]``;
* testing: every ``r``-th frame (``0, r, 2r, ...``; padded with the last one
  to at least ``L``), cut into ``num_clips`` windows of ``L`` consecutive
  entries whose starts are ``int(k x (m - L) / (num_clips - 1))`` for the
  ``m`` entries: the first window at the start of the video, the last at
  its end. One view (validation) takes the middle window.

Indices are truncated to integers as the authors' ``astype(np.int64)`` /
``int()`` do. Random draws use ``np.random`` (seeded per worker by MMEngine).
"""
import numpy as np
from mmcv.transforms import BaseTransform

from mmaction.registry import TRANSFORMS


def segment_indices(n, num_segments, num_clips=1, test_mode=False):
    """TSN-style frame indices of an ``n``-frame video (module docstring):
    ``num_segments`` per view, views one after the other."""
    if n < 1:
        raise ValueError(f'the video has no frames (total_frames={n})')
    seg = np.arange(num_segments)
    if test_mode:
        tick = n / float(num_segments)
        # k = 1 of 2: int(tick / 2 + tick * i), their middles
        views = [[int(tick * k / num_clips + tick * i) for i in seg]
                 for k in range(num_clips)]
        inds = np.array(views, dtype=np.int64).reshape(-1)
    else:
        part = n // num_segments
        if part > 0:
            inds = seg * part + np.random.randint(part, size=num_segments)
        else:  # shorter than num_segments frames: frame 0, as theirs
            inds = np.zeros(num_segments, dtype=np.int64)
    return np.clip(inds, 0, n - 1).astype(np.int64)


def dense_train_indices(n, clip_len=16, frame_interval=4):
    """One training clip of the authors' Kinetics loader (one segment)."""
    if n < 1:
        raise ValueError(f'the video has no frames (total_frames={n})')
    span = int(clip_len * frame_interval)
    if n <= span:
        k = n // frame_interval
        idx = np.linspace(0, n, num=k)
        idx = np.concatenate((idx, np.ones(clip_len - k) * n))
        return np.clip(idx, 0, n - 1).astype(np.int64)
    end = np.random.randint(span, n)
    start = end - span
    idx = np.linspace(start, end, num=clip_len)
    return np.clip(idx, start, end - 1).astype(np.int64)


def dense_test_indices(n, clip_len=16, frame_interval=4, num_clips=5):
    """The ``num_clips`` test clips of the authors' Kinetics loader, one
    after the other (``num_clips x clip_len`` indices)."""
    if n < 1:
        raise ValueError(f'the video has no frames (total_frames={n})')
    frames = list(range(0, n, frame_interval))
    while len(frames) < clip_len:
        frames.append(frames[-1])
    m = len(frames)
    if num_clips == 1:
        starts = [(m - clip_len) // 2]
    else:
        step = max(1.0 * (m - clip_len) / (num_clips - 1), 0)
        starts = [int(k * step) for k in range(num_clips)]
    return np.array([frames[s:s + clip_len] for s in starts],
                    dtype=np.int64).reshape(-1)


class _IndexSample(BaseTransform):
    """Sets ``frame_inds`` (+ ``start_index``), ``clip_len``,
    ``frame_interval`` and ``num_clips`` from ``self.indices(n)``."""

    frame_interval = None

    def _check(self, num_clips, test_mode, **positive):
        for k, v in dict(positive, num_clips=num_clips).items():
            if int(v) < 1:
                raise ValueError(f'{type(self).__name__}: {k}={v} must be '
                                 f'>= 1')
        if num_clips > 1 and not test_mode:
            raise ValueError(f'{type(self).__name__}: num_clips > 1 needs '
                             f'test_mode=True (training draws one clip)')
        self.num_clips = int(num_clips)
        self.test_mode = bool(test_mode)

    def transform(self, results):
        n = int(results['total_frames'])
        if n < 1:
            raise ValueError(f'{type(self).__name__}: video '
                             f"{results.get('filename')} has no frames "
                             f'(total_frames={n})')
        inds = self.indices(n) + results.get('start_index', 0)
        results['frame_inds'] = inds.astype(np.int64)
        results['clip_len'] = self.clip_len
        results['frame_interval'] = self.frame_interval
        results['num_clips'] = self.num_clips if self.test_mode else 1
        return results


@TRANSFORMS.register_module()
class SegmentSample(_IndexSample):
    """TSN-style segment sampling as the authors' SSv2 / EK100 loaders
    (module docstring). Required keys: ``total_frames``, ``start_index``
    (optional, 0). Added keys: ``frame_inds`` (views one after the other),
    ``clip_len`` (= ``num_segments``), ``frame_interval`` (None),
    ``num_clips``.

    Args:
        num_segments: frames per clip (parts of the video).
        num_clips: test views (training always draws one clip); 2 = the
            authors' starts and middles.
        test_mode: fixed views instead of random frames.
    """

    def __init__(self, num_segments=16, num_clips=1, test_mode=False):
        self._check(num_clips, test_mode, num_segments=num_segments)
        self.num_segments = self.clip_len = int(num_segments)

    def indices(self, n):
        return segment_indices(n, self.num_segments, self.num_clips,
                               self.test_mode)

    def __repr__(self):
        return (f'{self.__class__.__name__}(num_segments={self.num_segments}'
                f', num_clips={self.num_clips}, test_mode={self.test_mode})')


@TRANSFORMS.register_module()
class DenseSpanSample(_IndexSample):
    """Dense clips as the authors' Kinetics-400 loader (module docstring):
    training, ``clip_len`` indices spread evenly over a random span of
    ``clip_len x frame_interval`` frames; testing, every
    ``frame_interval``-th frame cut into ``num_clips`` windows from the start
    to the end of the video (one view: the middle window).

    Required keys: ``total_frames``, ``start_index`` (optional, 0). Added
    keys: ``frame_inds``, ``clip_len``, ``frame_interval``, ``num_clips``.
    """

    def __init__(self, clip_len=16, frame_interval=4, num_clips=1,
                 test_mode=False):
        self._check(num_clips, test_mode, clip_len=clip_len,
                    frame_interval=frame_interval)
        self.clip_len = int(clip_len)
        self.frame_interval = int(frame_interval)

    def indices(self, n):
        if self.test_mode:
            return dense_test_indices(n, self.clip_len, self.frame_interval,
                                      self.num_clips)
        return dense_train_indices(n, self.clip_len, self.frame_interval)

    def __repr__(self):
        return (f'{self.__class__.__name__}(clip_len={self.clip_len}, '
                f'frame_interval={self.frame_interval}, num_clips='
                f'{self.num_clips}, test_mode={self.test_mode})')
