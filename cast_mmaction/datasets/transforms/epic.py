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

import torch
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmaction.datasets.transforms import PackActionInputs
from mmaction.registry import TRANSFORMS
from ..epic_kitchens import EpicSegmentError, resolve_segment
from .decoding import (DecordVideoReader, PyAVVideoReader,  # noqa: F401
                       VideoDecode)


# the readers live in decoding.py (shared with VideoInit / VideoDecode)
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
class EpicDecode(VideoDecode):
    """Decode the frames in ``frame_inds`` (each distinct frame once) and
    close the reader. Adds ``imgs`` (list of H x W x 3 RGB uint8),
    ``original_shape`` and ``img_shape`` (:class:`VideoDecode`)."""


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
