#!/usr/bin/env python
"""Kinetics-400 (also 600 / 700): official CSVs -> MMAction2 list files,
skipping missing videos with a report.

    python tools/data/prepare_k400.py \\
        --csv train=data/kinetics400/annotations/train.csv \\
        --csv val=data/kinetics400/annotations/validate.csv \\
        --videos train=data/kinetics400/videos_train \\
        --videos val=data/kinetics400/videos_val \\
        --out-dir data/kinetics400

The official CSVs have the header ``label,youtube_id,time_start,time_end,
split[,is_cc]``. A row's video is found under the split's --videos folder
(searched recursively, so per-class sub-folders work) by its file stem:
``<youtube_id>_<time_start:06d>_<time_end:06d>`` (the official download
scripts' naming), ``<youtube_id>_<time_start>_<time_end>`` or
``<youtube_id>``; any video extension. Rows whose video is not found are
left out of the list and named in ``<name>_<split>_missing.txt``: many
YouTube videos have disappeared, so every local copy of Kinetics is
incomplete.

Class indices: the order of --label-map (a text file, one class per line,
e.g. MMAction2's label_map_k400.txt) when given, else the sorted class names
of the first CSV (the order of MMAction2's label maps). Writes to --out-dir:
  <name>_<split>_list_videos.txt   "<path relative to --videos> <label>"
  label_map_<short>.txt            class names, line i = class i
                                   (the config's ``label_map``)
"""
import argparse
import csv
import os
import os.path as osp
import re
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cast_mmaction.datasets.label_maps import (  # noqa: E402
    LabelMapError, read_text_label_map)
from cast_mmaction.progress import add_quiet_argument, track  # noqa: E402,E501

VIDEO_EXTS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.flv')


class PrepareError(ValueError):
    pass


def read_kinetics_csv(path):
    """Rows of an official Kinetics CSV -> [dict(label or None, youtube_id,
    time_start, time_end, line)]."""
    if not osp.isfile(path):
        raise PrepareError(f'{path} not found')
    with open(path, newline='', encoding='utf-8-sig') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise PrepareError(f'{path}: empty file')
        header = [h.strip().lower() for h in header]
        need = ('youtube_id', 'time_start', 'time_end')
        missing = [c for c in need if c not in header]
        if missing:
            raise PrepareError(
                f'{path}: header lacks {missing}; the official Kinetics CSVs '
                f'start with "label,youtube_id,time_start,time_end,split"')
        col = {c: header.index(c) for c in header}
        rows = []
        for n, r in enumerate(reader, 2):
            if not r or not any(x.strip() for x in r):
                continue
            if len(r) != len(header):
                raise PrepareError(f'{path}, line {n}: {len(r)} fields, the '
                                   f'header has {len(header)}')
            try:
                start = int(float(r[col['time_start']]))
                end = int(float(r[col['time_end']]))
            except ValueError:
                raise PrepareError(f'{path}, line {n}: time_start / time_end '
                                   f'must be numbers') from None
            yid = r[col['youtube_id']].strip()
            if not yid:
                raise PrepareError(f'{path}, line {n}: empty youtube_id')
            label = r[col['label']].strip() if 'label' in col else None
            if label is not None and not label:
                raise PrepareError(f'{path}, line {n}: empty label')
            rows.append(dict(label=label, youtube_id=yid, time_start=start,
                             time_end=end, line=n))
    if not rows:
        raise PrepareError(f'{path}: no rows')
    return rows


def index_videos(root, quiet=False):
    """{file stem: path relative to root} of every video under root."""
    found = {}
    for dirpath, dirnames, filenames in track(
            os.walk(root), desc=f'indexing {root}', unit='dir', quiet=quiet):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = osp.splitext(name)
            if ext.lower() in VIDEO_EXTS:
                rel = osp.relpath(osp.join(dirpath, name), root)
                found.setdefault(stem, rel)
    return found


def candidates(row):
    y, s, e = row['youtube_id'], row['time_start'], row['time_end']
    return (f'{y}_{s:06d}_{e:06d}', f'{y}_{s}_{e}', y)


def parse_pairs(values, flag):
    out = {}
    for v in values or []:
        m = re.fullmatch(r'([A-Za-z]\w*)=(.+)', v)
        if not m:
            raise PrepareError(f'{flag} {v!r}: use SPLIT=PATH, e.g. '
                               f'{flag} train=...')
        out[m.group(1)] = m.group(2)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--csv', nargs='+', required=True, metavar='SPLIT=CSV',
                    help='official CSV per split (train=..., val=...)')
    ap.add_argument('--videos', nargs='+', required=True,
                    metavar='SPLIT=DIR', help='video folder per split')
    ap.add_argument('--out-dir', required=True)
    ap.add_argument('--name', default='kinetics400',
                    help='list-file prefix (kinetics400, kinetics600, ...)')
    ap.add_argument('--label-map', help='class order: a text file, one '
                    'class name per line')
    add_quiet_argument(ap)
    args = ap.parse_args(argv)
    try:
        csvs = parse_pairs(args.csv, '--csv')
        roots = parse_pairs(args.videos, '--videos')
        for split in csvs:
            if split not in roots:
                raise PrepareError(f'--csv {split}=... needs --videos '
                                   f'{split}=DIR')
            if not osp.isdir(roots[split]):
                raise PrepareError(f'--videos {split}={roots[split]}: not a '
                                   f'folder')
        rows = {s: read_kinetics_csv(p) for s, p in csvs.items()}
        first = next(iter(csvs))
        if args.label_map:
            classes = read_text_label_map(args.label_map)
            source = args.label_map
        else:
            if rows[first][0]['label'] is None:
                raise PrepareError(f'{csvs[first]} has no label column; '
                                   f'give --label-map or a labelled CSV '
                                   f'first')
            classes = sorted({r['label'] for r in rows[first]})
            source = f'sorted class names of {csvs[first]}'
        cls_idx = {c: i for i, c in enumerate(classes)}
        short = re.sub(r'^kinetics', 'k', args.name)
        os.makedirs(args.out_dir, exist_ok=True)
        label_map = osp.join(args.out_dir, f'label_map_{short}.txt')
        with open(label_map, 'w') as f:
            f.writelines(c + '\n' for c in classes)
        print(f'{label_map}: {len(classes)} classes ({source})')
        for split, split_rows in rows.items():
            unknown = [r for r in split_rows if r['label'] is not None and
                       r['label'] not in cls_idx]
            if unknown:
                r = unknown[0]
                raise PrepareError(
                    f'{csvs[split]}, line {r["line"]}: class {r["label"]!r} '
                    f'is not in the class list ({source}); '
                    f'{len(unknown)} rows like it')
            found = index_videos(roots[split], args.quiet)
            lines, missing = [], []
            for r in track(split_rows, desc=f'{split} rows', unit='row',
                           quiet=args.quiet):
                rel = next((found[c] for c in candidates(r) if c in found),
                           None)
                if rel is None:
                    missing.append(candidates(r)[0])
                    continue
                lines.append(rel if r['label'] is None else
                             f'{rel} {cls_idx[r["label"]]}')
            out = osp.join(args.out_dir,
                           f'{args.name}_{split}_list_videos.txt')
            with open(out, 'w') as f:
                f.writelines(ln + '\n' for ln in lines)
            miss = osp.join(args.out_dir, f'{args.name}_{split}_missing.txt')
            msg = (f'{out}: {len(lines)} of {len(split_rows)} videos '
                   f'(paths relative to {roots[split]})')
            if missing:
                with open(miss, 'w') as f:
                    f.writelines(m + '\n' for m in missing)
                msg += (f'; {len(missing)} not found, left out and listed '
                        f'in {miss}')
            elif osp.exists(miss):
                os.remove(miss)
            print(msg)
            if not lines:
                raise PrepareError(
                    f'no video of {csvs[split]} was found under '
                    f'{roots[split]}; expected files named like '
                    f'{candidates(split_rows[0])[0]}.mp4')
    except (PrepareError, LabelMapError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
