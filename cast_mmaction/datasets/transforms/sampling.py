"""TSN-style segment sampling of whole videos, as in the CAST SSv2 recipe.

The video's ``n`` frames are cut into ``num_segments`` equal parts and one
frame is taken from each part:

* training: a random frame of every part (part length ``n // num_segments``;
  videos shorter than ``num_segments`` frames: sorted random frames);
* testing: ``num_clips`` fixed views; view ``k`` takes the frame at offset
  ``k / num_clips`` of every part (``int(n / num_segments * (i + k /
  num_clips))``). Two views are the starts and the middles of the parts,
  which are the two temporal views of the authors' SSv2 test.

MMAction2's ``UniformSample`` draws training frames the same way but places
its test views at 1/3 and 2/3 of the parts; use this transform to reproduce
the published test views.
"""
import numpy as np
from mmcv.transforms import BaseTransform

from mmaction.registry import TRANSFORMS


@TRANSFORMS.register_module()
class SegmentSample(BaseTransform):
    """Required keys: ``total_frames``, ``start_index`` (optional, 0).
    Added keys: ``frame_inds`` (views one after the other), ``clip_len``
    (= ``num_segments``), ``frame_interval`` (None), ``num_clips``.

    Args:
        num_segments: frames per clip (parts of the video).
        num_clips: test views (training always draws one clip).
        test_mode: fixed views instead of random frames.
    """

    def __init__(self, num_segments=16, num_clips=1, test_mode=False):
        if num_segments < 1 or num_clips < 1:
            raise ValueError(f'SegmentSample: num_segments={num_segments} and'
                             f' num_clips={num_clips} must be >= 1')
        if num_clips > 1 and not test_mode:
            raise ValueError('SegmentSample: num_clips > 1 needs '
                             'test_mode=True (training draws one clip)')
        self.num_segments = int(num_segments)
        self.num_clips = int(num_clips)
        self.test_mode = bool(test_mode)

    def _train_inds(self, n):
        part = n // self.num_segments
        if part > 0:
            return (np.arange(self.num_segments) * part +
                    np.random.randint(part, size=self.num_segments))
        return np.sort(np.random.randint(n, size=self.num_segments))

    def _test_inds(self, n):
        tick = n / self.num_segments
        base = np.arange(self.num_segments)
        views = [(tick * (base + k / self.num_clips)).astype(np.int64)
                 for k in range(self.num_clips)]
        return np.concatenate(views)

    def transform(self, results):
        n = int(results['total_frames'])
        if n < 1:
            raise ValueError(f"SegmentSample: video {results.get('filename')}"
                             f' has no frames (total_frames={n})')
        inds = self._test_inds(n) if self.test_mode else self._train_inds(n)
        inds = np.clip(inds, 0, n - 1) + results.get('start_index', 0)
        results['frame_inds'] = inds.astype(np.int64)
        results['clip_len'] = self.num_segments
        results['frame_interval'] = None
        results['num_clips'] = self.num_clips if self.test_mode else 1
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(num_segments={self.num_segments}'
                f', num_clips={self.num_clips}, test_mode={self.test_mode})')
