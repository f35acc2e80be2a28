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
incomplete. A row that repeats an earlier one (or names the same video file)
is left out and reported with both CSV lines, also in
``<name>_<split>_duplicates.txt``: each video is listed once (the datasets
refuse a list that names a video twice).

Preparing the videos for fast reads (optional): ``--resize-short 320
--keyint 16`` re-encodes every listed video with PyAV (libx264, no ffmpeg
command line needed) to a short side of 320 px and a key frame every 16
frames, into --prepared-videos SPLIT=DIR (default: ``<videos>_<S>p_g<N>``
beside each --videos folder), keeping the relative paths (extension
``.mp4``); the list files then name the prepared files, and the config's
``data_root`` / ``data_root_val`` must point at the prepared folders.
Frame k of a prepared file is frame k of its source at the source's frame
rate, so the recipe samples the same frames (docs/data_pipeline.md:
what it saves, and the pixel difference). Files already prepared are kept
(a run resumes); ``--jobs N`` prepares N files at a time. A video that
cannot be prepared (unreadable, undecodable, target not writable) does not
stop the others: it is left out of the list, named with its reason at the
end and in ``<name>_<split>_failed.txt``, and the exit status is 1.

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
from cast_mmaction.datasets.reencode import (  # noqa: E402
    X264_PARAMS, check_x264_params, reencode_videos)
from cast_mmaction.progress import add_quiet_argument, track  # noqa: E402,E501
from cast_mmaction.datasets.annotation_checks import (  # noqa: E402
    duplicate_note)

#: the fields that make two CSV rows the same clip (duplicate_note)
K400_ROW = ('youtube_id', 'time_start', 'time_end')

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
    ap.add_argument('--resize-short', type=int, metavar='S',
                    help='re-encode the videos to short side S (e.g. 320)')
    ap.add_argument('--keyint', type=int, metavar='N',
                    help='re-encode the videos with a key frame every N '
                    'frames (e.g. 16); with --resize-short or alone (the '
                    'size is then kept)')
    ap.add_argument('--prepared-videos', nargs='+', metavar='SPLIT=DIR',
                    help='where the re-encoded videos of a split go '
                    '(default <videos>_<S>p_g<N>)')
    ap.add_argument('--crf', type=int, default=23,
                    help='re-encoding quality (libx264 crf; 23 = default)')
    ap.add_argument('--jobs', type=int, default=1,
                    help='videos re-encoded at a time (processes)')
    ap.add_argument('--x264-params', metavar='K=V[:K=V]',
                    help='more libx264 settings for the re-encoding, after '
                    f'the defaults ({X264_PARAMS}; e.g. cabac=1 for smaller '
                    'files that decode slower)')
    add_quiet_argument(ap)
    args = ap.parse_args(argv)
    failures = []
    try:
        csvs = parse_pairs(args.csv, '--csv')
        roots = parse_pairs(args.videos, '--videos')
        prepare = args.resize_short is not None or args.keyint is not None
        for flag in ('resize_short', 'keyint'):
            v = getattr(args, flag)
            if v is not None and v < 1:
                raise PrepareError(f'--{flag.replace("_", "-")} must be '
                                   f'>= 1, got {v}')
        try:
            check_x264_params(args.x264_params)
        except ValueError as e:
            raise PrepareError(f'--x264-params: {e}') from e
        prepared = parse_pairs(args.prepared_videos, '--prepared-videos')
        if prepared and not prepare:
            raise PrepareError('--prepared-videos needs --resize-short S '
                               'and / or --keyint N')
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
            lines, missing, rels, dups, first_row = [], [], [], [], {}
            for r in track(split_rows, desc=f'{split} rows', unit='row',
                           quiet=args.quiet):
                rel = next((found[c] for c in candidates(r) if c in found),
                           None)
                # one sample per video: a repeated row (or two rows that
                # name the same file) is kept once and reported
                key = rel if rel is not None else candidates(r)[0]
                if key in first_row:
                    dups.append(duplicate_note(csvs[split], r,
                                               first_row[key], key,
                                               K400_ROW))
                    continue
                first_row[key] = r
                if rel is None:
                    missing.append(candidates(r)[0])
                    continue
                rels.append(rel)
                lines.append(rel if r['label'] is None else
                             f'{rel} {cls_idx[r["label"]]}')
            root = roots[split]
            spaced = [rel for rel in rels if any(c.isspace() for c in rel)]
            if spaced and not prepare:
                # VideoDataset splits each list line on spaces: such a
                # line is 'too many values' there
                raise PrepareError(
                    f'{split}: {len(spaced)} video(s) with a space in their '
                    f'path (e.g. {spaced[0]!r}: K400 class folders such as '
                    f'"air drumming"), which the list file cannot hold '
                    f'(VideoDataset splits each line on spaces). Rename the '
                    f'folders (spaces to underscores), or let this tool '
                    f're-encode them (--resize-short / --keyint), which names '
                    f'the new files with underscores')
            if prepare:
                lines, root, failed = prepare_split(args, split, root,
                                                    prepared, rels, lines)
                failures += failed
                fail_file = osp.join(args.out_dir,
                                     f'{args.name}_{split}_failed.txt')
                if failed:
                    with open(fail_file, 'w') as f:
                        f.writelines(f'{src}\t{why}\n'
                                     for src, why in failed)
                elif osp.exists(fail_file):
                    os.remove(fail_file)
            out = osp.join(args.out_dir,
                           f'{args.name}_{split}_list_videos.txt')
            with open(out, 'w') as f:
                f.writelines(ln + '\n' for ln in lines)
            miss = osp.join(args.out_dir, f'{args.name}_{split}_missing.txt')
            msg = (f'{out}: {len(lines)} of {len(split_rows)} videos '
                   f'(paths relative to {root})')
            if missing:
                with open(miss, 'w') as f:
                    f.writelines(m + '\n' for m in missing)
                msg += (f'; {len(missing)} not found, left out and listed '
                        f'in {miss}')
            elif osp.exists(miss):
                os.remove(miss)
            dup_file = osp.join(args.out_dir,
                                f'{args.name}_{split}_duplicates.txt')
            if dups:
                with open(dup_file, 'w') as f:
                    f.writelines(d + '\n' for d in dups)
                msg += (f'; {len(dups)} duplicate row(s) left out (each '
                        f'video is listed once), listed in {dup_file}:\n  '
                        + '\n  '.join(dups[:10]) +
                        ('\n  ...' if len(dups) > 10 else ''))
            elif osp.exists(dup_file):
                os.remove(dup_file)
            print(msg)
            if not lines:
                raise PrepareError(
                    f'no video of {csvs[split]} was found under '
                    f'{roots[split]}; expected files named like '
                    f'{candidates(split_rows[0])[0]}.mp4')
    except (PrepareError, LabelMapError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if failures:
        print(f'{len(failures)} video(s) could not be prepared and were left '
              f'out of the lists:', file=sys.stderr)
        for src, why in failures:
            print(f'  {src}: {why}', file=sys.stderr)
        return 1
    return 0


def prepare_split(args, split, root, prepared, rels, lines):
    """Re-encode the split's listed videos (``rels``, relative to
    ``root``) into the prepared folder; returns the list lines naming the
    prepared files, that folder, and ``[(source, reason)]`` of the
    failures (left out of the lines)."""
    tag = (f'_{args.resize_short}p' if args.resize_short else '') + \
        (f'_g{args.keyint}' if args.keyint else '')
    dst_root = prepared.get(split) or root.rstrip('/\\') + tag
    if osp.abspath(dst_root) == osp.abspath(root):
        raise PrepareError(f'--prepared-videos {split}={dst_root} is the '
                           f'source folder; give another folder')
    # new files: named without whitespace, which a list line cannot hold
    new_rels = [re.sub(r'\s', '_', osp.splitext(rel)[0]) + '.mp4'
                for rel in rels]
    clash = len(set(new_rels)) != len(new_rels)
    if clash:
        seen = {}
        for rel, new in zip(rels, new_rels):
            if new in seen:
                raise PrepareError(f'{split}: {seen[new]!r} and {rel!r} would '
                                   f'both be prepared as {new!r}')
            seen[new] = rel
    pairs = [(osp.join(root, r), osp.join(dst_root, n))
             for r, n in zip(rels, new_rels)]
    print(f'{split}: preparing {len(pairs)} videos into {dst_root} '
          f'(short side {args.resize_short or "kept"}, key frame every '
          f'{args.keyint or "x264 default"} frames, crf {args.crf}, '
          f'{args.jobs} job(s))', flush=True)

    def progress(n, total):
        if n == total or n % 100 == 0:
            print(f'  {n} / {total}', flush=True)

    done, failed = reencode_videos(
        pairs, jobs=args.jobs, progress=progress,
        short_side=args.resize_short, keyint=args.keyint, crf=args.crf,
        x264_params=args.x264_params)
    bad = {src for src, _ in failed}
    out = []
    for (src, _), new_rel, line, rel in zip(pairs, new_rels, lines, rels):
        if src not in bad:
            out.append(new_rel + line[len(rel):])
    print(f'{split}: {len(done)} prepared, {len(failed)} failed; set the '
          f'config\'s data root to {dst_root}')
    return out, dst_root, failed


if __name__ == '__main__':
    sys.exit(main())
