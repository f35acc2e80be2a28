#!/usr/bin/env python
"""EPIC-KITCHENS-100: check the official CSVs and videos, write what the
dataset reads, optionally re-encode the videos to a 256-pixel short side.

    python tools/data/prepare_ek100.py \\
        --ann-dir data/ek100/epic-kitchens-100-annotations \\
        --video-root data/ek100/videos --out-dir data/ek100 \\
        [--reencode data/ek100/videos_256 --short-side 256 --jobs 4]

``EpicKitchens100Dataset`` (configs/cast_ek100.py) reads the official CSVs
as they are, with one video file per ``video_id`` at
``<video root>/<--video-path-tmpl>`` (official layout
``{participant_id}/videos/{video_id}.MP4``). This script

1. validates ``EPIC_100_train.csv``, ``EPIC_100_validation.csv`` (and
   ``EPIC_100_test_timestamps.csv`` when present) with the dataset's own
   reader, and ``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv``
   (97 verbs, 300 nouns: the class names of tools/infer.py);
2. checks that every video the CSVs name exists. When some are missing (a
   partial download), it writes ``EPIC_100_<split>_available.csv`` to
   --out-dir: the official rows of the videos you have, unchanged, and
   ``missing_videos.txt``; the summary says how many segments that drops.
   Point the config's CSVs at those files to train on what you have;
3. with --reencode DIR, re-encodes every present video with ffmpeg to a
   ``--short-side`` (256) short side, same frame rate, same relative paths
   (files already there are kept, so an interrupted run resumes). The
   dataset converts segments through their timestamps when a copy's frame
   count differs. ffmpeg must be on PATH (``apt-get install ffmpeg`` /
   ``conda install ffmpeg``); without it the script says so and stops.

At the end it prints the config lines to use.
"""
import argparse
import csv
import os
import os.path as osp
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cast_mmaction.datasets.label_maps import (  # noqa: E402
    LabelMapError, read_epic_classes)
from cast_mmaction.progress import (  # noqa: E402
    add_quiet_argument, track, write as progress_write)

SPLITS = (('train', 'EPIC_100_train.csv', True),
          ('validation', 'EPIC_100_validation.csv', True),
          ('test', 'EPIC_100_test_timestamps.csv', False))
CLASSES = (('verb', 'EPIC_100_verb_classes.csv', 97),
           ('noun', 'EPIC_100_noun_classes.csv', 300))


class PrepareError(ValueError):
    pass


def ffmpeg_path():
    return shutil.which('ffmpeg')


def reencode_cmd(src, dst, short_side, crf=23, keep_audio=True):
    """ffmpeg command: scale the short side to ``short_side`` (the other
    side even, aspect kept), H.264, same frame rate."""
    vf = (f"scale='if(gt(iw,ih),-2,{short_side})':"
          f"'if(gt(iw,ih),{short_side},-2)'")
    cmd = ['ffmpeg', '-nostdin', '-hide_banner', '-loglevel', 'error', '-y',
           '-i', src, '-vf', vf, '-c:v', 'libx264', '-preset', 'fast',
           '-crf', str(crf), '-pix_fmt', 'yuv420p']
    cmd += ['-c:a', 'aac'] if keep_audio else ['-an']
    return cmd + [dst]


def reencode_one(src, dst, short_side, keep_audio):
    """Re-encode one file (to ``dst`` through a temporary name). Returns
    None or an error message."""
    if osp.isfile(dst) and osp.getsize(dst) > 0:
        return None
    os.makedirs(osp.dirname(dst) or '.', exist_ok=True)
    root, ext = osp.splitext(dst)
    tmp = f'{root}.part{ext}'
    proc = subprocess.run(
        reencode_cmd(src, tmp, short_side, keep_audio=keep_audio),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not osp.isfile(tmp):
        if osp.exists(tmp):
            os.remove(tmp)
        return (proc.stderr.strip().splitlines() or ['ffmpeg failed'])[-1]
    os.replace(tmp, dst)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--ann-dir', required=True,
                    help='the epic-kitchens-100-annotations folder')
    ap.add_argument('--video-root', required=True,
                    help='folder the video path template starts from')
    ap.add_argument('--video-path-tmpl',
                    default='{participant_id}/videos/{video_id}.MP4',
                    help='video path below --video-root, formatted with a '
                    'CSV row (default: the official layout)')
    ap.add_argument('--out-dir', required=True)
    ap.add_argument('--reencode', metavar='DIR',
                    help='write re-encoded copies here (needs ffmpeg)')
    ap.add_argument('--short-side', type=int, default=256)
    ap.add_argument('--no-audio', action='store_true',
                    help='drop the sound track when re-encoding')
    ap.add_argument('--jobs', type=int, default=2,
                    help='parallel ffmpeg processes')
    add_quiet_argument(ap)
    args = ap.parse_args(argv)

    from cast_mmaction.datasets.epic_kitchens import (EpicAnnotationError,
                                                      read_epic_csv)
    try:
        if args.reencode and ffmpeg_path() is None:
            raise PrepareError(
                '--reencode needs ffmpeg, which is not on PATH. Install it '
                '(apt-get install ffmpeg, or conda install -c conda-forge '
                'ffmpeg) or run without --reencode: the dataset reads the '
                'original videos too (decoding full-HD is just slower)')
        if not osp.isdir(args.video_root):
            raise PrepareError(f'--video-root {args.video_root} is not a '
                               f'folder')
        class_files = {}
        for key, fname, num in CLASSES:
            path = osp.join(args.ann_dir, fname)
            if not osp.isfile(path):
                raise PrepareError(f'{path} not found (part of the official '
                                   f'annotations)')
            names = read_epic_classes(path)
            if len(names) != num:
                raise PrepareError(f'{path}: {len(names)} {key} classes, '
                                   f'EPIC-KITCHENS-100 has {num}')
            class_files[key] = path
            print(f'{path}: {len(names)} {key} classes')
        splits = {}
        for split, fname, required in SPLITS:
            path = osp.join(args.ann_dir, fname)
            if not osp.isfile(path):
                if required:
                    raise PrepareError(f'{path} not found')
                continue
            items = read_epic_csv(path, ann_format='official')
            splits[split] = (path, items)
        # every video the CSVs name
        videos = {}
        for split, (path, items) in splits.items():
            for it in items:
                try:
                    rel = args.video_path_tmpl.format(**it)
                except KeyError as e:
                    raise PrepareError(
                        f'--video-path-tmpl {args.video_path_tmpl!r} names '
                        f'column {e}, which {path} does not have') from None
                videos.setdefault(it['video_id'], rel)
        present = {v for v, rel in videos.items()
                   if osp.isfile(osp.join(args.video_root, rel))}
        missing = sorted(set(videos) - present)
        os.makedirs(args.out_dir, exist_ok=True)
        print(f'{len(present)} of {len(videos)} videos found under '
              f'{args.video_root} ({args.video_path_tmpl})')
        if not present:
            example = osp.join(args.video_root, next(iter(videos.values())))
            raise PrepareError(f'no video found; e.g. {example} does not '
                               f'exist. Check --video-root and '
                               f'--video-path-tmpl')
        ann_for = {}
        miss_file = osp.join(args.out_dir, 'missing_videos.txt')
        if missing:
            with open(miss_file, 'w') as f:
                f.writelines(f'{v} {videos[v]}\n' for v in missing)
            print(f'{miss_file}: {len(missing)} missing videos')
            for split, (path, items) in splits.items():
                keep_lines = {it['csv_line'] for it in items
                              if it['video_id'] in present}
                out = osp.join(args.out_dir, f'EPIC_100_{split}_available.csv')
                with open(path, newline='', encoding='utf-8-sig') as f:
                    rows = list(csv.reader(f))
                with open(out, 'w', newline='') as f:
                    w = csv.writer(f)
                    w.writerow(rows[0])
                    # csv_line is the 1-based line of the row in the file
                    for n, r in enumerate(rows[1:], 2):
                        if n in keep_lines:
                            w.writerow(r)
                print(f'{out}: {len(keep_lines)} of {len(items)} segments '
                      f'({len(items) - len(keep_lines)} dropped: their '
                      f'videos are missing)')
                ann_for[split] = out
        else:
            if osp.exists(miss_file):
                os.remove(miss_file)
            for split, (path, items) in splits.items():
                print(f'{path}: {len(items)} segments, all videos present')
                ann_for[split] = path
        video_root = args.video_root
        if args.reencode:
            todo = [(osp.join(args.video_root, videos[v]),
                     osp.join(args.reencode, videos[v]))
                    for v in sorted(present)]
            errors = []
            with ThreadPoolExecutor(max(1, args.jobs)) as pool:
                futs = [pool.submit(reencode_one, s, d, args.short_side,
                                    not args.no_audio) for s, d in todo]
                for (src, _), fut in track(zip(todo, futs), total=len(todo),
                                           desc='re-encoding', unit='video',
                                           quiet=args.quiet):
                    err = fut.result()
                    if err:
                        errors.append(f'{src}: {err}')
                        progress_write(f'ffmpeg failed on {src}: {err}')
            print(f'{args.reencode}: {len(todo) - len(errors)} of '
                  f'{len(todo)} videos at a {args.short_side}-pixel short '
                  f'side')
            if errors:
                raise PrepareError(f'{len(errors)} videos could not be '
                                   f're-encoded, e.g. {errors[0]}')
            video_root = args.reencode
    except (PrepareError, EpicAnnotationError, LabelMapError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print('\nconfig (configs/_base_/datasets/ek100.py):')
    print(f'  ek100_video_root = {video_root!r}')
    print(f'  ek100_video_path_tmpl = {args.video_path_tmpl!r}')
    for split, var in (('train', 'ek100_train_csv'),
                       ('validation', 'ek100_val_csv'),
                       ('test', 'ek100_test_csv')):
        if split in ann_for:
            print(f'  {var} = {ann_for[split]!r}')
    print(f'  label_map = dict(verb={class_files["verb"]!r}, '
          f'noun={class_files["noun"]!r})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
