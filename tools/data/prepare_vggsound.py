#!/usr/bin/env python
"""VGGSound: the official ``vggsound.csv`` -> MMAction2 list files of the
clips you have, and the class list.

    python tools/data/prepare_vggsound.py --csv data/vggsound/vggsound.csv \\
        --videos data/vggsound/videos --out-dir data/vggsound [--check-audio]

``vggsound.csv`` has no header; rows are ``youtube_id,start_seconds,label,
split`` with split ``train`` or ``test``. A row's clip is found under
--videos (searched recursively) by its file stem: ``<id>_<start:06d>`` (the
default ``video_path_tmpl`` of ``VGGSoundDataset``), ``<id>_<start>``,
``<id>_<start>000_<start+10>000`` (milliseconds) or ``<id>``, among video
files (.mp4, .mkv, .webm, .avi, .mov; not .wav / .flac). Rows without a
clip are left out and named in ``vggsound_<split>_missing.txt`` (YouTube
clips disappear; every local copy is partial). A row that repeats an earlier
one, or names the same file (two segments of one ``<id>`` file), is left
out and reported with both lines in ``vggsound_<split>_duplicates.txt``:
each clip is listed once, with its first row's label.

With --check-audio every found clip is opened with PyAV: clips that cannot
be decoded, have no video stream or no audio stream (they would train on
silence) are left out and named in ``vggsound_<split>_bad.txt``.

Writes to --out-dir:
  vggsound_classes.txt              class names, line i = class i (the
                                    sorted label texts, as VGGSoundDataset
                                    orders them): the config's label_map /
                                    class_names
  vggsound_<split>_list_videos.txt  "<path relative to --videos> <label>"
                                    (AudioVisualDataset / VGGSoundDataset)
"""
import argparse
import csv
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cast_mmaction.progress import add_quiet_argument, track  # noqa: E402
from cast_mmaction.datasets.annotation_checks import (  # noqa: E402
    duplicate_note)

# video containers only: a clip's audio is read from its video, and an
# audio file of the same stem (a dataset's audio/ folder) is not the clip
VIDEO_EXTS = ('.mp4', '.mkv', '.webm', '.avi', '.mov')
#: the fields that make two CSV rows the same clip (duplicate_note)
VGGSOUND_ROW = ('ytid', 'start')


class PrepareError(ValueError):
    pass


def read_vggsound_csv(path):
    if not osp.isfile(path):
        raise PrepareError(f'{path} not found')
    rows = []
    with open(path, newline='', encoding='utf-8-sig') as f:
        for n, r in enumerate(csv.reader(f), 1):
            if not r or not any(x.strip() for x in r):
                continue
            r = [x.strip() for x in r]
            if len(r) != 4:
                raise PrepareError(
                    f'{path}, line {n}: expected 4 fields "youtube_id,'
                    f'start_seconds,label,split", got {len(r)}: {r}')
            ytid, start, label, split = r
            try:
                start = int(float(start))
            except ValueError:
                if n == 1:  # a header line
                    continue
                raise PrepareError(f'{path}, line {n}: start_seconds '
                                   f'{start!r} is not a number') from None
            if not ytid or not label:
                raise PrepareError(f'{path}, line {n}: empty youtube_id or '
                                   f'label')
            rows.append(dict(ytid=ytid, start=start, label=label,
                             split=split, line=n))
    if not rows:
        raise PrepareError(f'{path}: no rows')
    return rows


def index_videos(root, quiet=False):
    found = {}
    for dirpath, dirnames, filenames in track(
            os.walk(root), desc=f'indexing {root}', unit='dir', quiet=quiet):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = osp.splitext(name)
            if ext.lower() in VIDEO_EXTS:
                found.setdefault(stem, osp.relpath(osp.join(dirpath, name),
                                                   root))
    return found


def candidates(row):
    y, s = row['ytid'], row['start']
    return (f'{y}_{s:06d}', f'{y}_{s}', f'{y}_{s}000_{s + 10}000', y)


def audio_problem(path):
    """None, or why the clip is unusable for audio-visual training (no
    video stream, no audio stream, or no audio samples)."""
    import av
    try:
        with av.open(path) as c:
            if not c.streams.video:
                return 'no video stream'
            if not c.streams.audio:
                return 'no audio stream'
            for _ in c.decode(c.streams.audio[0]):
                return None
            return 'audio stream without samples'
    except Exception as e:  # noqa: BLE001 - reported per file
        return f'cannot be decoded ({type(e).__name__}: {e})'


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--csv', required=True, help='the official vggsound.csv')
    ap.add_argument('--videos', required=True, help='folder of the clips')
    ap.add_argument('--out-dir', required=True)
    ap.add_argument('--check-audio', action='store_true',
                    help='open every clip; leave out those without sound')
    add_quiet_argument(ap)
    args = ap.parse_args(argv)
    try:
        if not osp.isdir(args.videos):
            raise PrepareError(f'--videos {args.videos} is not a folder')
        rows = read_vggsound_csv(args.csv)
        classes = sorted({r['label'] for r in rows})
        if len(classes) != 309:
            print(f'warning: {args.csv} has {len(classes)} classes (the '
                  f'release has 309)', file=sys.stderr)
        cls_idx = {c: i for i, c in enumerate(classes)}
        splits = sorted({r['split'] for r in rows})
        unknown = [s for s in splits if s not in ('train', 'test')]
        if unknown:
            bad = next(r for r in rows if r['split'] in unknown)
            raise PrepareError(f'{args.csv}, line {bad["line"]}: split '
                               f'{bad["split"]!r}; expected train or test')
        os.makedirs(args.out_dir, exist_ok=True)
        cls_file = osp.join(args.out_dir, 'vggsound_classes.txt')
        with open(cls_file, 'w') as f:
            f.writelines(c + '\n' for c in classes)
        print(f'{cls_file}: {len(classes)} classes')
        found = index_videos(args.videos, args.quiet)
        total = 0
        for split in splits:
            split_rows = [r for r in rows if r['split'] == split]
            lines, missing, bad, dups, first_row = [], [], [], [], {}
            for r in track(split_rows, desc=f'{split} clips', unit='clip',
                           quiet=args.quiet):
                rel = next((found[c] for c in candidates(r) if c in found),
                           None)
                # one sample per file: a repeated row, or two segments that
                # fall back to one <id> file, is kept once and reported
                key = rel if rel is not None else candidates(r)[0]
                if key in first_row:
                    dups.append(duplicate_note(args.csv, r, first_row[key],
                                               key, VGGSOUND_ROW, 'clip'))
                    continue
                first_row[key] = r
                if rel is None:
                    missing.append(candidates(r)[0])
                    continue
                if args.check_audio:
                    why = audio_problem(osp.join(args.videos, rel))
                    if why:
                        bad.append(f'{rel} {why}')
                        continue
                lines.append(f'{rel} {cls_idx[r["label"]]}')
            out = osp.join(args.out_dir, f'vggsound_{split}_list_videos.txt')
            with open(out, 'w') as f:
                f.writelines(ln + '\n' for ln in lines)
            total += len(lines)
            msg = f'{out}: {len(lines)} of {len(split_rows)} clips'
            for kind, items in (('missing', missing), ('bad', bad),
                                ('duplicates', dups)):
                path = osp.join(args.out_dir, f'vggsound_{split}_{kind}.txt')
                if items:
                    with open(path, 'w') as f:
                        f.writelines(x + '\n' for x in items)
                    what = {'missing': 'not found',
                            'bad': 'without usable audio',
                            'duplicates': 'duplicate row(s) (each clip is '
                            'listed once)'}[kind]
                    msg += f'; {len(items)} {what}, left out ({path})'
                    if kind == 'duplicates':
                        msg += ':\n  ' + '\n  '.join(items[:10]) + (
                            '\n  ...' if len(items) > 10 else '')
                elif osp.exists(path):
                    os.remove(path)
            print(msg)
        if not total:
            raise PrepareError(
                f'no clip of {args.csv} was found under {args.videos}; '
                f'expected files named like '
                f'{candidates(rows[0])[0]}.mp4')
    except (PrepareError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'config: ann_file = {out!r} (one per split), '
          f'data_prefix=dict(video={args.videos!r}), '
          f'label_map = {cls_file!r}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
