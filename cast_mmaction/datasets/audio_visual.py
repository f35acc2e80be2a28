"""Audio-visual datasets: VGGSound, Kinetics-Sounds, UCF-101 with audio and
EPIC-SOUNDS.

Every dataset yields ``filename`` (the video), the label and -- when the
audio lives in separate files (``data_prefix['audio']``) -- ``audio_path``;
``LoadAudioFbank`` otherwise decodes the audio track of the video itself.
Pipelines: see ``configs/cava_vggsound.py`` and docs/audio_visual.md.

Annotation formats
------------------
``AudioVisualDataset`` / ``KineticsSoundsDataset`` / ``UCF101AudioDataset``
    MMAction2 list files, one clip per line: ``relative/path.mp4 label``
    (the label is the last whitespace-separated field, so paths may hold
    spaces).
``VGGSoundDataset``
    the list format above, or the official ``vggsound.csv``
    (``youtube_id,start_seconds,label text,split``, no header): clips are
    ``video_path_tmpl`` (default ``{ytid}_{start:06d}.mp4``), classes the
    sorted label texts (309 in the release), ``split`` selects
    ``train`` / ``test`` rows.
``EpicSoundsDataset``
    the EPIC-SOUNDS CSVs (``annotation_id, participant_id, video_id,
    start_timestamp, stop_timestamp, start_sample, stop_sample,
    description, class, class_id``; the test CSV has no class columns): a
    sample is the span ``[start, stop]`` of an untrimmed EPIC-KITCHENS
    video; the video frames are sampled inside it (``EpicVideoInit`` /
    ``EpicSampleFrames``) and the audio window is cut inside it
    (``audio_range``).

Malformed annotations raise :class:`AVAnnotationError` naming the file, the
line and the field to fix.
"""
import csv
import os.path as osp
from typing import List

from mmengine.logging import print_log

from mmaction.datasets.base import BaseActionDataset
from mmaction.registry import DATASETS
from .annotation_checks import (check_data_infos, check_data_list,
                                check_list_file, csv_id_lines, data_infos,
                                fail_at)

VIDEO_EXTS = ('.mp4', '.mkv', '.avi', '.webm', '.mov', '.MP4')


class AVAnnotationError(ValueError):
    """A malformed audio-visual annotation (names the file and line)."""


def _read_list(path):
    """``path label`` lines -> [(line, path, label or None)]."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file {path} not found')
    out = []
    with open(path, encoding='utf-8') as f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and _is_int(parts[1]):
                out.append((n, parts[0], int(parts[1])))
            elif len(parts) == 1 or not _is_int(parts[-1]):
                out.append((n, line, None))
    if not out:
        raise AVAnnotationError(f'{path}: no clips listed')
    return out


def _is_int(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


@DATASETS.register_module()
class AudioVisualDataset(BaseActionDataset):
    """Videos with sound from an MMAction2 list file.

    Args:
        ann_file (str): ``relative/path.mp4 label`` per line (label may be
            omitted with ``test_mode=True``).
        pipeline (list): transforms (video decoding, ``LoadAudioFbank``,
            ..., ``PackAudioVisualInputs``).
        data_prefix (dict): ``video`` folder; optional ``audio`` folder of
            separate audio files named ``<video stem><audio_suffix>``.
        audio_suffix (str): suffix of the separate audio files.
        num_classes (int): labels are checked against it.
        check_files (bool): fail at start-up when listed videos (or audio
            files) are missing, naming the first ones.
    """

    default_num_classes = None

    def __init__(self, ann_file, pipeline, data_prefix=dict(video=''),
                 audio_suffix='.wav', num_classes=None, check_files=True,
                 test_mode=False, **kwargs):
        self.audio_suffix = audio_suffix
        self.check_files = check_files
        num_classes = num_classes or self.default_num_classes
        # an unset audio folder (None) means: decode the videos' own audio
        data_prefix = {k: v for k, v in dict(data_prefix or {}).items()
                       if v is not None}
        data_prefix.setdefault('video', '')
        super().__init__(ann_file, pipeline=pipeline,
                         data_prefix=data_prefix, test_mode=test_mode,
                         num_classes=num_classes, **kwargs)

    # -- helpers shared by the subclasses --------------------------------
    def _video(self, rel):
        root = self.data_prefix.get('video') or ''
        return osp.join(root, rel)

    def _audio(self, video):
        root = self.data_prefix.get('audio')
        if not root:
            return None
        stem = osp.splitext(osp.basename(video))[0]
        return osp.join(root, stem + self.audio_suffix)

    def _check_label(self, label, line, field='label'):
        if label is None:
            if not self.test_mode:
                raise AVAnnotationError(
                    f'{self.ann_file}, line {line}: no {field}; unlabelled '
                    f'lists need test_mode=True')
            return -1
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            raise AVAnnotationError(
                f'{self.ann_file}, line {line}: {field} {label} is outside '
                f'0..{self.num_classes - 1} (num_classes={self.num_classes})')
        return label

    def _finish(self, data_list):
        if not data_list:
            raise AVAnnotationError(f'{self.ann_file}: no samples')
        if self.check_files:
            for key in ('filename', 'audio_path'):
                files = sorted({d[key] for d in data_list if d.get(key)})
                missing = [f for f in files if not osp.isfile(f)]
                if missing:
                    raise FileNotFoundError(
                        f'{len(missing)} of {len(files)} files named by '
                        f'{self.ann_file} are missing, e.g. {missing[:3]}. '
                        f'Check data_prefix, or set check_files=False.')
        print_log(f'{type(self).__name__}: {len(data_list)} samples from '
                  f'{osp.basename(self.ann_file)}', logger='current')
        return data_list

    def verify_annotations(self, num_classes=None,
                           num_classes_field='model.cls_head.num_classes'):
        """The list file line by line (layout, labels, duplicates, paths
        inside ``data_prefix['video']``) and the audio paths of the built
        samples; a subclass with its own reader gets the generic check
        (``annotation_checks.check_data_infos``). Returns the sample
        count."""
        if type(self).load_data_list is not AudioVisualDataset.load_data_list:
            return check_data_infos(self)
        return self._verify_list_file(num_classes, num_classes_field)

    def _verify_list_file(self, num_classes, num_classes_field):
        prefix = self.data_prefix or {}
        count = check_list_file(
            self.ann_file, prefix.get('video') or '', num_classes,
            bool(self.test_mode), layout='label_last',
            num_classes_field=num_classes_field)
        check_data_list(self, data_infos(self), self.ann_file, None,
                        roots=(('audio_path', 'audio'), ))
        return count

    def load_data_list(self) -> List[dict]:
        data_list = []
        for line, rel, label in _read_list(self.ann_file):
            video = self._video(rel)
            item = dict(filename=video, label=self._check_label(label, line))
            audio = self._audio(video)
            if audio:
                item['audio_path'] = audio
            data_list.append(item)
        return self._finish(data_list)


@DATASETS.register_module()
class KineticsSoundsDataset(AudioVisualDataset):
    """Kinetics-Sounds: the 31 Kinetics classes with audible actions."""
    default_num_classes = 31


@DATASETS.register_module()
class UCF101AudioDataset(AudioVisualDataset):
    """UCF-101 with its audio tracks (101 classes). About half of the
    classes have no sound at all: those videos give silence (logged by
    ``LoadAudioFbank``), as in the published audio-visual UCF-101 results.

    Args:
        split (int, optional): the official train/test split (1, 2 or 3) of
            the three-split protocol; ``ann_file`` then holds ``{split}``
            (e.g. ``ucf101_train_split_{split}_videos.txt``, MMAction2's list
            names), filled in here. Results are reported as the mean over
            the three splits (``tools/analysis_tools/average_splits.py``).
    """
    default_num_classes = 101
    SPLITS = (1, 2, 3)

    def __init__(self, ann_file, pipeline, split=None, **kwargs):
        has_field = isinstance(ann_file, str) and '{split}' in ann_file
        if split is None and has_field:
            raise AVAnnotationError(
                f'ann_file {ann_file!r} holds {{split}} but no split is set; '
                f'set split=1, 2 or 3')
        if split is not None:
            if split not in self.SPLITS:
                raise AVAnnotationError(f'UCF-101 split must be 1, 2 or 3, '
                                        f'got {split!r}')
            if not has_field:
                raise AVAnnotationError(
                    f'split={split} but ann_file {ann_file!r} holds no '
                    f'{{split}} placeholder, so the split would not choose '
                    f'the clips; name the lists e.g. '
                    f'ucf101_train_split_{{split}}_videos.txt')
            ann_file = ann_file.replace('{split}', str(split))
        self.split = split
        super().__init__(ann_file, pipeline, **kwargs)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@DATASETS.register_module()
class VGGSoundDataset(AudioVisualDataset):
    """VGGSound (309 classes): a list file, or the official ``vggsound.csv``.

    Args:
        split (str): rows of the official CSV to use (``train`` / ``test``).
        video_path_tmpl (str): clip path for CSV rows, formatted with
            ``ytid`` and ``start`` (seconds, int).
        class_names (list | str, optional): the class order (a list or a file
            with one name per line); default: the sorted label texts of the
            whole CSV.
    """
    default_num_classes = 309

    def __init__(self, ann_file, pipeline, split='train',
                 video_path_tmpl='{ytid}_{start:06d}.mp4', class_names=None,
                 **kwargs):
        self.split = split
        self.video_path_tmpl = video_path_tmpl
        self.class_names = class_names
        super().__init__(ann_file, pipeline, **kwargs)

    def _is_csv(self):
        with open(self.ann_file, encoding='utf-8-sig') as f:
            first = f.readline()
        return first.count(',') >= 3

    def _csv_rows(self):
        """Line numbers of the official CSV rows of ``self.split``, in
        order (the order of the samples)."""
        lines = []
        with open(self.ann_file, newline='', encoding='utf-8-sig') as f:
            reader = csv.reader(f)
            for row in reader:
                if len(row) >= 4 and row[3].strip() == self.split:
                    lines.append(reader.line_num)
        return lines

    def verify_annotations(self, num_classes=None,
                           num_classes_field='model.cls_head.num_classes'):
        """A list file: as :class:`AudioVisualDataset`; the official CSV
        (whose reader checks layout and labels): repeated clips and paths
        outside the data roots, naming the CSV line."""
        if type(self).load_data_list is not VGGSoundDataset.load_data_list:
            return check_data_infos(self)
        if not self._is_csv():
            return self._verify_list_file(num_classes, num_classes_field)
        data_list = data_infos(self)
        lines = self._csv_rows()
        if len(lines) != len(data_list):
            lines = None
        check_data_list(self, data_list, self.ann_file, lines,
                        id_key='filename')
        return len(data_list)

    def _classes(self, rows):
        names = self.class_names
        if isinstance(names, str):
            with open(names, encoding='utf-8') as f:
                names = [ln.strip() for ln in f if ln.strip()]
        if names is None:
            names = sorted({r[2] for _, r in rows})
        if self.num_classes is not None and len(names) != self.num_classes:
            raise AVAnnotationError(
                f'{self.ann_file}: {len(names)} classes found but '
                f'num_classes={self.num_classes}; pass class_names (the '
                f'release\'s class list) or set num_classes')
        return {n: i for i, n in enumerate(names)}

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'annotation file {self.ann_file} not '
                                    f'found')
        if not self._is_csv():
            return super().load_data_list()
        rows = []
        with open(self.ann_file, newline='', encoding='utf-8-sig') as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row:
                    continue
                if len(row) < 4:
                    raise AVAnnotationError(
                        f'{self.ann_file}, line {n}: expected youtube_id,'
                        f'start_seconds,label,split; got {row}')
                rows.append((n, [c.strip() for c in row]))
        if rows and not _is_number(rows[0][1][1]):
            rows = rows[1:]  # a header line (youtube_id,start_seconds,...)
        known = ('train', 'test', self.split)
        for n, r in rows:  # a row of another split is left out: say so
            if r[3] not in known:
                raise AVAnnotationError(
                    f'{self.ann_file}, line {n}: split {r[3]!r} is neither '
                    f'\'train\' nor \'test\' (the official CSV\'s), so the '
                    f'row would be left out of every split; fix the row, or '
                    f'read that split with split={r[3]!r}')
        index = self._classes(rows)
        data_list = []
        for n, (ytid, start, label, split) in ((n, r[:4]) for n, r in rows):
            if split != self.split:
                continue
            try:
                start = int(float(start))
            except ValueError:
                raise AVAnnotationError(
                    f'{self.ann_file}, line {n}: start_seconds {start!r} is '
                    f'not a number') from None
            if label not in index:
                raise AVAnnotationError(f'{self.ann_file}, line {n}: label '
                                        f'{label!r} is not in class_names')
            video = self._video(self.video_path_tmpl.format(ytid=ytid,
                                                            start=start))
            item = dict(filename=video, label=index[label], youtube_id=ytid)
            audio = self._audio(video)
            if audio:
                item['audio_path'] = audio
            data_list.append(item)
        if not data_list:
            raise AVAnnotationError(f'{self.ann_file}: no rows with split '
                                    f'{self.split!r}')
        return self._finish(data_list)


@DATASETS.register_module()
class EpicSoundsDataset(AudioVisualDataset):
    """EPIC-SOUNDS (44 classes): labelled spans of EPIC-KITCHENS videos.

    Args:
        video_path_tmpl (str): video below ``data_prefix['video']``, with the
            row's columns (default ``{participant_id}/videos/{video_id}.MP4``;
            a flat folder of re-encoded files: ``{video_id}.mp4``).
        audio_path_tmpl (str, optional): per-video audio files below
            ``data_prefix['audio']`` (e.g. ``{video_id}.wav``); default: the
            audio track of the video.
    """
    default_num_classes = 44
    _COLUMNS = ('annotation_id', 'video_id', 'start_timestamp',
                'stop_timestamp')

    def __init__(self, ann_file, pipeline,
                 video_path_tmpl='{participant_id}/videos/{video_id}.MP4',
                 audio_path_tmpl=None, **kwargs):
        self.video_path_tmpl = video_path_tmpl
        self.audio_path_tmpl = audio_path_tmpl
        super().__init__(ann_file, pipeline, **kwargs)

    def verify_annotations(self, num_classes=None,
                           num_classes_field='model.cls_head.num_classes'):
        """Repeated ``annotation_id`` rows and paths outside the data roots
        (the reader checks layout and labels). Returns the sample count."""
        ann = self.ann_file
        data_list = data_infos(self)
        ids = csv_id_lines(ann, 'annotation_id')
        for ident, lines in ids.items():
            if len(lines) > 1:
                fail_at(ann, lines[1], f'annotation_id {ident!r} repeats '
                        f'line {lines[0]} (a duplicate sample); remove one '
                        f'of the two rows')
        lines = [(ids.get(d.get('annotation_id')) or [None])[0]
                 for d in data_list]
        check_data_list(self, data_list, ann, lines)
        return len(data_list)

    def _format(self, tmpl, row, n, field):
        try:
            return tmpl.format(**row)
        except KeyError as e:
            raise AVAnnotationError(
                f'{self.ann_file}, line {n}: {field} {tmpl!r} names column '
                f'{e} that the CSV does not have') from None

    def load_data_list(self) -> List[dict]:
        from .epic_kitchens import parse_timestamp
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'annotation file {self.ann_file} not '
                                    f'found')
        with open(self.ann_file, newline='', encoding='utf-8-sig') as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in self._COLUMNS if c not in header]
            if missing:
                raise AVAnnotationError(
                    f'{self.ann_file}: missing columns {missing} (an '
                    f'EPIC-SOUNDS CSV has annotation_id, participant_id, '
                    f'video_id, start_timestamp, stop_timestamp, ..., '
                    f'class_id); found {header}')
            labelled = 'class_id' in header
            if not labelled and not self.test_mode:
                raise AVAnnotationError(
                    f'{self.ann_file} has no class_id column (the test '
                    f'split?); use it with test_mode=True')
            data_list = []
            for row in reader:
                # the physical line of the row (DictReader skips blank lines,
                # so counting rows would name the wrong line after one);
                # csv_id_lines (verify_annotations) counts the same way
                n = reader.line_num
                # DictReader puts a short row's missing fields as None and a
                # long row's extra ones under the key None
                if None in row or None in row.values():
                    fields = len(header) + len(row.get(None) or ()) - sum(
                        v is None for v in row.values())
                    raise AVAnnotationError(
                        f'{self.ann_file}, line {n}: {fields} fields, the '
                        f'header has {len(header)} ({",".join(header)}); '
                        f'fix the row (a comma in a field needs quotes)')
                row = {k: v.strip() for k, v in row.items()}
                row.setdefault('participant_id', row['video_id'].split('_')[0])
                try:
                    start = parse_timestamp(row['start_timestamp'])
                    stop = parse_timestamp(row['stop_timestamp'])
                except ValueError as e:
                    raise AVAnnotationError(f'{self.ann_file}, line {n}: '
                                            f'{e}') from None
                if stop < start:
                    raise AVAnnotationError(
                        f'{self.ann_file}, line {n}: stop_timestamp '
                        f'{row["stop_timestamp"]} is before start_timestamp '
                        f'{row["start_timestamp"]}')
                label = None
                if labelled:
                    if not _is_int(row['class_id']):
                        raise AVAnnotationError(
                            f'{self.ann_file}, line {n}: class_id '
                            f'{row["class_id"]!r} is not an integer')
                    label = int(row['class_id'])
                video = self._video(self._format(self.video_path_tmpl, row, n,
                                                 'video_path_tmpl'))
                item = dict(filename=video,
                            label=self._check_label(label, n, 'class_id'),
                            annotation_id=row['annotation_id'],
                            video_id=row['video_id'], start_sec=start,
                            stop_sec=stop, audio_range=(start, stop))
                if self.audio_path_tmpl and self.data_prefix.get('audio'):
                    item['audio_path'] = osp.join(
                        self.data_prefix['audio'],
                        self._format(self.audio_path_tmpl, row, n,
                                     'audio_path_tmpl'))
                data_list.append(item)
        return self._finish(data_list)
