"""Frame sampling of ST-Adapter's loader (linziyi96/st-adapter
``video_dataset/dataset.py``), for ``F`` frames of an ``n``-frame video:

* ``sampling_rate <= 0`` (SSv2, segment sampling): segment size
  ``s = (n - 1) / F``, segment ``i`` spans ``round(s i) .. round(s (i+1))``
  (both ends included, Python's ``round``); training draws one frame of
  each segment, testing takes the middle ``(start + end) // 2`` (one view);
* ``sampling_rate = r > 0`` (K400, every ``r``-th frame): training starts
  at a random frame in ``[0, n - r (F - 1))`` (a video of at most
  ``r (F - 1) + 1`` frames starts at 0 and repeats its last frame);
  testing pads the video with its last frame to ``r (F - 1) + 1`` frames
  and places ``num_clips`` windows evenly from the start to the end
  (starts ``round(slide i / (num_clips - 1))``; one view: the middle).
"""
import numpy as np

from mmaction.registry import TRANSFORMS
from .sampling import _IndexSample


def st_adapter_indices(n, num_frames=8, sampling_rate=0, num_clips=1,
                       test_mode=False, rng=np.random):
    """Frame indices (views one after the other) as ST-Adapter samples."""
    if n < 1:
        raise ValueError(f'the video has no frames (total_frames={n})')
    f, r = num_frames, sampling_rate
    if r <= 0:
        if test_mode and num_clips != 1:
            raise ValueError('ST-Adapter segment sampling has one temporal '
                             'view (num_clips=1)')
        seg = (n - 1) / f
        bounds = [(round(seg * i), round(seg * (i + 1))) for i in range(f)]
        if test_mode:
            idx = [(a + b) // 2 for a, b in bounds]
        else:
            idx = [rng.randint(a, b + 1) for a, b in bounds]
        return np.array(idx, dtype=np.int64)
    span = r * (f - 1) + 1
    if not test_mode:
        if span >= n:
            idx = []
            for i in range(f):
                idx.append(i * r if i * r < n else idx[-1])
        else:
            start = rng.randint(n - r * (f - 1))
            idx = list(range(start, start + r * f, r))
        return np.array(idx, dtype=np.int64)
    slide = max(n, span) - span
    if num_clips == 1:
        starts = [slide // 2]
    else:
        starts = [round(slide / (num_clips - 1) * i)
                  for i in range(num_clips)]
    idx = [min(s + k * r, n - 1) for s in starts for k in range(f)]
    return np.array(idx, dtype=np.int64)


@TRANSFORMS.register_module()
class STAdapterSample(_IndexSample):
    """ST-Adapter's frame sampling (module docstring).

    Args:
        num_frames: frames per clip (8).
        sampling_rate: 0: one frame per segment (SSv2); ``r``: every
            ``r``-th frame (K400: 16).
        num_clips: test views along time (K400: 3; segment sampling: 1).
        test_mode: fixed views instead of random frames.
    """

    def __init__(self, num_frames=8, sampling_rate=0, num_clips=1,
                 test_mode=False):
        self._check(num_clips, test_mode, num_frames=num_frames)
        if sampling_rate <= 0 and num_clips != 1:
            raise ValueError('STAdapterSample: segment sampling '
                             '(sampling_rate=0) has one temporal view; set '
                             'num_clips=1')
        self.clip_len = int(num_frames)
        self.sampling_rate = int(sampling_rate)
        self.frame_interval = self.sampling_rate or None

    def indices(self, n):
        return st_adapter_indices(n, self.clip_len, self.sampling_rate,
                                  self.num_clips, self.test_mode)

    def __repr__(self):
        return (f'{self.__class__.__name__}(num_frames={self.clip_len}, '
                f'sampling_rate={self.sampling_rate}, num_clips='
                f'{self.num_clips}, test_mode={self.test_mode})')
