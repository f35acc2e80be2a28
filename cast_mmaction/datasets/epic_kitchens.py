"""EPIC-KITCHENS-100 action segments for verb / noun / action recognition.

Two annotation layouts are read (``ann_format='auto'`` tells them apart):

``official``
    The CSVs of ``epic-kitchens-100-annotations``: ``EPIC_100_train.csv`` and
    ``EPIC_100_validation.csv`` (``narration_id, participant_id, video_id,
    narration_timestamp, start_timestamp, stop_timestamp, start_frame,
    stop_frame, narration, verb, verb_class, noun, noun_class, all_nouns,
    all_noun_classes``) and the unlabelled ``EPIC_100_test_timestamps.csv``
    (no ``verb_class`` / ``noun_class``; an extra ``uid`` column). Every row
    is one segment of a long untrimmed video, one file per ``video_id``
    (``video_path_tmpl``, default ``{participant_id}/videos/{video_id}.MP4``
    under ``data_prefix['video']``). Only frames inside the segment are ever
    decoded (see :mod:`cast_mmaction.datasets.transforms.epic`).

``clips``
    The pre-trimmed list of the authors' release (``annotations/ek100/*.csv``
    of KHU-VLL/CAST): no header, ``clip_path,verb_class,noun_class``; one
    short video per segment at ``data_prefix['video']/clip_path`` plus
    ``clip_suffix`` (``.mp4``) when ``clip_path`` has no extension. The whole
    clip is the segment; ``narration_id`` is the clip's file stem.

Frame numbers. ``start_frame`` / ``stop_frame`` of the official CSVs equal
``round(timestamp x fps)`` of the original recording (50, 59.94, 29.97, ...
fps), i.e. 0-based indices of the decoded frames of the *original* file;
both ends are inclusive. Users often hold re-encoded copies (256-pixel short
side, sometimes another frame rate or a few frames shorter). The segment is
therefore resolved per video at load time by :func:`resolve_segment`: the
annotated frame numbers are used as they are when this file's frame rate
reproduces them from the timestamps, otherwise the timestamps are converted
with the file's own frame rate. A segment that starts after the end of its
video is an error naming the file (wrong file or truncated download), never a
silently substituted clip.

Malformed rows raise :class:`EpicAnnotationError` naming the CSV file, the
line and the field to fix.
"""
import csv
import math
import os
import os.path as osp
import re
from typing import Callable, List, Optional, Union

from mmengine.logging import print_log

from mmaction.registry import DATASETS
from mmaction.datasets.base import BaseActionDataset
from .annotation_checks import check_data_list, data_infos

NUM_VERBS = 97
NUM_NOUNS = 300

# Columns a row of the official layout needs (besides a segment and labels).
_REQUIRED = ('narration_id', 'video_id')


class EpicAnnotationError(ValueError):
    """A malformed EPIC-KITCHENS annotation row (names file and line)."""


class EpicSegmentError(ValueError):
    """An annotated segment that the video file cannot provide."""


_TS = re.compile(r'^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$')


def parse_timestamp(text):
    """``'HH:MM:SS.ff'`` (or ``'MM:SS.ff'`` or plain seconds) -> seconds."""
    text = str(text).strip()
    m = _TS.match(text)
    if m:
        h, mnt, sec = m.groups()
        mnt, sec = int(mnt), float(sec)
        if mnt >= 60 or sec >= 60:
            raise ValueError(f'invalid timestamp {text!r} (minutes/seconds '
                             f'must be < 60)')
        return int(h or 0) * 3600 + mnt * 60 + sec
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'invalid timestamp {text!r}; expected HH:MM:SS.ff '
                         f'(e.g. 00:01:02.35)') from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'invalid timestamp {text!r}')
    return value


def resolve_segment(num_frames,
                    fps,
                    start_frame=None,
                    stop_frame=None,
                    start_sec=None,
                    stop_sec=None,
                    ann_fps=None,
                    frame_tol=2.0,
                    end_slack_sec=1.0,
                    name='video'):
    """Map an annotated segment onto the frames of one video file.

    Args:
        num_frames (int): frames the file holds.
        fps (float): the file's frame rate.
        start_frame, stop_frame (int, optional): annotated frame numbers
            (0-based, inclusive) of the original recording.
        start_sec, stop_sec (float, optional): annotated timestamps.
        ann_fps (float, optional): frame rate the annotated frame numbers
            refer to; only needed when a CSV has frames but no timestamps.
        frame_tol (float): the annotated frames are used as they are when
            ``timestamp x fps`` of this file is within this many frames of
            them at both ends (the official frame numbers are rounded).
        end_slack_sec (float): a segment that starts less than this after
            the end of the file (re-encodes lose a few frames at the end) is
            clamped to the last frame; later starts are an error.
        name (str): the file, for messages.

    Returns:
        tuple: ``(first, last, how)`` with 0-based inclusive frame indices of
        this file and ``how`` in ``{'whole', 'frames', 'timestamps'}``, with
        ``'+clamped'`` appended when the file ends before the segment does.
    """
    if num_frames is None or num_frames <= 0:
        raise EpicSegmentError(f'{name}: the decoder reports no frames')
    have_frames = start_frame is not None and stop_frame is not None
    have_secs = start_sec is not None and stop_sec is not None
    if not have_frames and not have_secs:
        return 0, num_frames - 1, 'whole'

    if have_frames:
        if have_secs and fps:
            agree = (abs(start_sec * fps - start_frame) <= frame_tol
                     and abs(stop_sec * fps - stop_frame) <= frame_tol)
        elif ann_fps and fps:
            agree = abs(ann_fps - fps) <= 1e-4 * fps
        else:
            agree = True  # frames only, no rate given: this file's frames
    else:
        agree = False

    if agree:
        first, last, how = int(start_frame), int(stop_frame), 'frames'
    else:
        if not fps or fps <= 0:
            raise EpicSegmentError(
                f'{name}: the decoder reports no frame rate, so the segment '
                f'cannot be converted through timestamps')
        if not have_secs:
            # frames of another rate and no timestamps: go through ann_fps
            start_sec, stop_sec = start_frame / ann_fps, stop_frame / ann_fps
        # frame k of this file is shown at k / fps
        first = math.ceil(start_sec * fps - 1e-6)
        last = math.floor(stop_sec * fps + 1e-6)
        if first > last:  # shorter than one frame of this file
            first = last = int(round(0.5 * (start_sec + stop_sec) * fps))
        how = 'timestamps'

    if first > num_frames - 1:
        late = (first - (num_frames - 1)) / fps if fps else float('inf')
        if late > end_slack_sec:
            seg = (f'frames [{start_frame}, {stop_frame}]' if have_frames
                   else '')
            if have_secs:
                seg += f' {start_sec:.2f}-{stop_sec:.2f} s'
            raise EpicSegmentError(
                f'{name}: the annotated segment ({seg.strip()}) starts after '
                f'the end of the video ({num_frames} frames at {fps:.3f} '
                f'fps = {num_frames / fps if fps else 0:.2f} s). Is it the '
                f'right file, or a truncated download / re-encode?')
        first = num_frames - 1
    if last > num_frames - 1:
        last = num_frames - 1
        how += '+clamped'
    return max(first, 0), max(last, 0), how


def _read_rows(path):
    """Yield ``(line_number, fields)`` of the non-blank rows of a CSV."""
    with open(path, newline='', encoding='utf-8-sig') as f:
        reader = csv.reader(f)
        start = 1
        for fields in reader:
            line = start
            start = reader.line_num + 1
            if not fields or all(not x.strip() for x in fields):
                continue
            yield line, [x.strip() for x in fields]


def _is_int(text):
    return re.fullmatch(r'[+-]?\d+', text) is not None


def detect_format(path):
    """``'official'`` (a header naming ``video_id``) or ``'clips'``."""
    for _, fields in _read_rows(path):
        lowered = [x.lower() for x in fields]
        if 'video_id' in lowered or 'narration_id' in lowered:
            return 'official'
        if len(fields) == 3 and (_is_int(fields[1]) and _is_int(fields[2])
                                 or lowered[1:] == ['verb_class',
                                                    'noun_class']):
            return 'clips'
        raise EpicAnnotationError(
            f'{path}, line 1: cannot tell the annotation layout. Expected the '
            f'official EPIC-KITCHENS-100 header (narration_id, ..., video_id, '
            f'...) or the pre-trimmed list "clip_path,verb_class,noun_class";'
            f' got {",".join(fields)[:200]!r}')
    raise EpicAnnotationError(f'{path}: the annotation file is empty')


def read_epic_csv(path,
                  ann_format='auto',
                  num_verbs=NUM_VERBS,
                  num_nouns=NUM_NOUNS,
                  clip_suffix='.mp4'):
    """Parse an EPIC-KITCHENS-100 CSV into a list of segment dicts.

    Every dict has ``narration_id``, ``video_id``, ``participant_id``,
    ``start_frame``/``stop_frame`` and ``start_sec``/``stop_sec`` (None when
    the layout has none), ``verb_label``/``noun_label`` (absent when the
    CSV is unlabelled), ``csv_line`` and, for the clip list, ``clip_path``.
    All other columns of the official layout are kept as strings.

    Raises:
        EpicAnnotationError: naming the file, the line and the field.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file {path} not found')
    fmt = detect_format(path) if ann_format == 'auto' else ann_format
    if fmt not in ('official', 'clips'):
        raise ValueError(f"ann_format must be 'auto', 'official' or "
                         f"'clips', got {ann_format!r}")

    def fail(line, msg):
        raise EpicAnnotationError(f'{path}, line {line}: {msg}')

    def label(line, text, column, num):
        if not _is_int(text):
            fail(line, f'{column} must be an integer class id, got {text!r}')
        value = int(text)
        if not 0 <= value < num:
            fail(line, f'{column} {value} is outside [0, {num - 1}]')
        return value

    out = []
    seen = {}
    rows = _read_rows(path)
    if fmt == 'clips':
        for line, fields in rows:
            if line == 1 and [x.lower() for x in fields[1:]] == [
                    'verb_class', 'noun_class']:
                continue  # optional header
            if len(fields) != 3:
                fail(line, f'expected 3 fields "clip_path,verb_class,'
                     f'noun_class", got {len(fields)}: {",".join(fields)!r}')
            clip, verb, noun = fields
            if not clip:
                fail(line, 'clip_path is empty')
            stem = osp.splitext(osp.basename(clip))[0]
            if not osp.splitext(clip)[1]:
                clip = clip + clip_suffix
            item = dict(narration_id=stem, clip_path=clip,
                        verb_label=label(line, verb, 'verb_class', num_verbs),
                        noun_label=label(line, noun, 'noun_class', num_nouns),
                        start_frame=None, stop_frame=None, start_sec=None,
                        stop_sec=None, csv_line=line)
            vid = re.match(r'^(P\d+_\d+)', stem)
            item['video_id'] = vid.group(1) if vid else stem
            item['participant_id'] = item['video_id'].split('_')[0]
            if stem in seen:
                fail(line, f'clip {stem!r} repeats line {seen[stem]}')
            seen[stem] = line
            out.append(item)
        if not out:
            raise EpicAnnotationError(f'{path}: no clips listed')
        return out

    header = None
    for line, fields in rows:
        if header is None:
            header = [x.lower() for x in fields]
            missing = [c for c in _REQUIRED if c not in header]
            if missing:
                fail(line, f'header lacks column(s) {missing}; the official '
                     f'EPIC-KITCHENS-100 CSVs have narration_id, '
                     f'participant_id, video_id, start_timestamp, '
                     f'stop_timestamp, start_frame, stop_frame, ...')
            has_frames = {'start_frame', 'stop_frame'} <= set(header)
            has_secs = {'start_timestamp', 'stop_timestamp'} <= set(header)
            if not (has_frames or has_secs):
                fail(line, 'header needs start_frame/stop_frame or '
                     'start_timestamp/stop_timestamp columns')
            labelled = [c in header for c in ('verb_class', 'noun_class')]
            if labelled[0] != labelled[1]:
                fail(line, 'header has only one of verb_class / noun_class')
            labelled = labelled[0]
            continue
        if len(fields) != len(header):
            fail(line, f'expected {len(header)} fields as in the header, '
                 f'got {len(fields)} (an unquoted comma in a text field?)')
        row = dict(zip(header, fields))
        item = dict(row)
        item['csv_line'] = line
        for col in _REQUIRED:
            if not row[col]:
                fail(line, f'{col} is empty')
        nid = row['narration_id']
        if nid in seen:
            fail(line, f'narration_id {nid!r} repeats line {seen[nid]}')
        seen[nid] = line
        item['participant_id'] = (row.get('participant_id')
                                  or row['video_id'].split('_')[0])
        item['start_frame'] = item['stop_frame'] = None
        item['start_sec'] = item['stop_sec'] = None
        if has_frames:
            for col in ('start_frame', 'stop_frame'):
                if not _is_int(row[col]) or int(row[col]) < 0:
                    fail(line, f'{col} must be a non-negative integer, got '
                         f'{row[col]!r}')
                item[col] = int(row[col])
            if item['start_frame'] > item['stop_frame']:
                fail(line, f'start_frame {item["start_frame"]} is after '
                     f'stop_frame {item["stop_frame"]}')
        if has_secs:
            for col, key in (('start_timestamp', 'start_sec'),
                             ('stop_timestamp', 'stop_sec')):
                try:
                    item[key] = parse_timestamp(row[col])
                except ValueError as e:
                    fail(line, f'{col}: {e}')
            if item['start_sec'] > item['stop_sec']:
                fail(line, f'start_timestamp {row["start_timestamp"]} is '
                     f'after stop_timestamp {row["stop_timestamp"]}')
        if labelled:
            item['verb_label'] = label(line, row['verb_class'], 'verb_class',
                                       num_verbs)
            item['noun_label'] = label(line, row['noun_class'], 'noun_class',
                                       num_nouns)
        out.append(item)
    if header is None:
        raise EpicAnnotationError(f'{path}: the annotation file is empty')
    if not out:
        raise EpicAnnotationError(f'{path}: header but no segments')
    return out


@DATASETS.register_module()
class EpicKitchens100Dataset(BaseActionDataset):
    """EPIC-KITCHENS-100 segments with verb and noun labels.

    Args:
        ann_file (str): an official CSV (train / validation / test
            timestamps) or the authors' ``clip_path,verb_class,noun_class``
            list.
        pipeline (list): transforms; start with ``EpicVideoInit``,
            ``EpicSampleFrames``, ``EpicDecode`` (see
            ``configs/cast_ek100.py``).
        data_prefix (dict): ``dict(video=<folder of the videos>)``.
        ann_format (str): ``'auto'``, ``'official'`` or ``'clips'``.
        video_path_tmpl (str): path of a video below ``data_prefix['video']``
            for the official layout, formatted with the row's columns.
            The official release is ``{participant_id}/videos/{video_id}.MP4``;
            a flat folder of re-encoded files might be ``{video_id}.mp4``.
        clip_suffix (str): appended to ``clip_path`` without an extension.
        num_verbs, num_nouns (int): class counts (labels are checked).
        ann_fps (float, optional): frame rate of the CSV's frame numbers,
            only used for CSVs without timestamps.
        check_files (bool): fail at start-up, naming the first missing
            files, when videos are missing (instead of hours into training).
        test_mode (bool): unlabelled CSVs (the test split) need it.
    """

    def __init__(self,
                 ann_file: str,
                 pipeline: List[Union[dict, Callable]],
                 data_prefix: Optional[dict] = dict(video=''),
                 ann_format: str = 'auto',
                 video_path_tmpl: str = '{participant_id}/videos/'
                 '{video_id}.MP4',
                 clip_suffix: str = '.mp4',
                 num_verbs: int = NUM_VERBS,
                 num_nouns: int = NUM_NOUNS,
                 ann_fps: Optional[float] = None,
                 check_files: bool = True,
                 test_mode: bool = False,
                 **kwargs) -> None:
        self.ann_format = ann_format
        self.video_path_tmpl = video_path_tmpl
        self.clip_suffix = clip_suffix
        self.num_verbs, self.num_nouns = num_verbs, num_nouns
        self.ann_fps = ann_fps
        self.check_files = check_files
        super().__init__(
            ann_file,
            pipeline=pipeline,
            data_prefix=data_prefix,
            test_mode=test_mode,
            **kwargs)

    def _video_path(self, item):
        root = self.data_prefix.get('video', '') or ''
        if 'clip_path' in item:
            return osp.join(root, item['clip_path'])
        try:
            rel = self.video_path_tmpl.format(**item)
        except KeyError as e:
            raise EpicAnnotationError(
                f'{self.ann_file}, line {item["csv_line"]}: '
                f'video_path_tmpl {self.video_path_tmpl!r} names column {e} '
                f'that the CSV does not have') from None
        return osp.join(root, rel)

    def verify_annotations(self, num_classes=None,
                           num_classes_field='model.cls_head.num_classes'):
        """Repeated ``narration_id`` rows and videos outside the data root,
        naming the CSV line (``read_epic_csv`` checks layout and labels).
        Returns the sample count."""
        data_list = data_infos(self)
        check_data_list(self, data_list, self.ann_file,
                        [d.get('csv_line') for d in data_list],
                        id_key='narration_id')
        return len(data_list)

    def load_data_list(self) -> List[dict]:
        items = read_epic_csv(self.ann_file, self.ann_format, self.num_verbs,
                              self.num_nouns, self.clip_suffix)
        if not self.test_mode and 'verb_label' not in items[0]:
            raise EpicAnnotationError(
                f'{self.ann_file} has no verb_class / noun_class columns (the '
                f'unlabelled test split?); it can only be used with '
                f'test_mode=True (test_dataloader / '
                f'tools/analysis_tools/ek100_submission.py)')
        data_list = []
        for item in items:
            info = dict(item)
            info['filename'] = self._video_path(item)
            info['ann_file'] = self.ann_file
            info['ann_fps'] = self.ann_fps
            data_list.append(info)
        if self.check_files:
            files = sorted({d['filename'] for d in data_list})
            missing = [f for f in files if not osp.isfile(f)]
            if missing:
                raise FileNotFoundError(
                    f'{len(missing)} of {len(files)} videos named by '
                    f'{self.ann_file} are missing, e.g. {missing[:3]}. Check '
                    f"data_prefix['video'] and video_path_tmpl (now "
                    f'{self.video_path_tmpl!r}), or set check_files=False.')
        print_log(f'EpicKitchens100Dataset: {len(data_list)} segments from '
                  f'{os.path.basename(self.ann_file)}'
                  f'{" (unlabelled)" if "verb_label" not in items[0] else ""}',
                  logger='current')
        return data_list
