#!/usr/bin/env python
"""Something-Something-V2: official label and split JSON -> MMAction2 list
files.

    python tools/data/prepare_ssv2.py --ann-dir data/sthv2/annotations \\
        --video-dir data/sthv2/videos --out-dir data/sthv2

Reads from --ann-dir the files of the official release:
  something-something-v2-labels.json       {"Approaching something ...": "0"}
  something-something-v2-train.json        [{"id", "label", "template",
  something-something-v2-validation.json     "placeholders"}, ...]
  something-something-v2-test.json         [{"id"}, ...]   (optional)
The class of an entry is its ``template`` with the brackets removed
("Putting [something] on [something]" -> "Putting something on something"),
looked up in the labels JSON.

Writes to --out-dir (the names configs/_base_/datasets/ssv2.py reads):
  sthv2_train_list_videos.txt   lines "<id>.<ext> <label>" (the file found
                                in --video-dir; <id>.webm without it)
  sthv2_val_list_videos.txt
  sthv2_test_list_videos.txt    lines "<id>.webm" (no labels; for
                                tools/infer.py)
With --video-dir, every listed video is checked; missing ones are left out of
the list and named in sthv2_<split>_missing.txt (the summary says how many).
Class names at run time come straight from the labels JSON (the config's
``label_map``).
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cast_mmaction.datasets.label_maps import (  # noqa: E402
    LabelMapError, read_ssv2_labels)
from cast_mmaction.progress import add_quiet_argument, track  # noqa: E402,E501

PREFIX = 'something-something-v2-'
SPLITS = (('train', 'train', True), ('validation', 'val', True),
          ('test', 'test', False))


class PrepareError(ValueError):
    pass


def template_to_name(template):
    return template.replace('[', '').replace(']', '').strip()


def read_split(path, name_to_idx, labelled):
    """Entries of one split JSON -> [(video id, label or None)]."""
    try:
        with open(path, encoding='utf-8') as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise PrepareError(f'{path}: not valid JSON ({e})') from None
    if not isinstance(entries, list):
        raise PrepareError(f'{path}: expected a JSON list of entries '
                           f'[{{"id": ..., "template": ...}}], got '
                           f'{type(entries).__name__}')
    out, seen = [], {}
    for k, e in enumerate(entries):
        if not isinstance(e, dict) or 'id' not in e:
            raise PrepareError(f'{path}: entry {k} has no "id": {e!r:.200}')
        vid = str(e['id']).strip()
        if vid in seen:
            raise PrepareError(f'{path}: id {vid} repeats (entries '
                               f'{seen[vid]} and {k})')
        seen[vid] = k
        label = None
        if labelled:
            if 'template' not in e:
                raise PrepareError(f'{path}: entry {k} (id {vid}) has no '
                                   f'"template"')
            name = template_to_name(e['template'])
            if name not in name_to_idx:
                raise PrepareError(
                    f'{path}: entry {k} (id {vid}): class {name!r} (from '
                    f'template {e["template"]!r}) is not in the labels JSON')
            label = name_to_idx[name]
        out.append((vid, label))
    if not out:
        raise PrepareError(f'{path}: no entries')
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--ann-dir', required=True,
                    help='folder of the official something-something-v2-*.'
                    'json files')
    ap.add_argument('--out-dir', required=True)
    ap.add_argument('--video-dir', help='check that the videos exist here '
                    '(missing ones are left out and reported)')
    ap.add_argument('--video-ext', default=None,
                    help='extension of the video files (default: the one '
                    'found in --video-dir, else webm as released)')
    add_quiet_argument(ap)
    args = ap.parse_args(argv)

    labels_json = osp.join(args.ann_dir, PREFIX + 'labels.json')
    try:
        if not osp.isfile(labels_json):
            raise PrepareError(f'{labels_json} not found (the labels file '
                               f'of the official SSv2 annotations)')
        names = read_ssv2_labels(labels_json)
        name_to_idx = {n: i for i, n in enumerate(names)}
        if len(names) != 174:
            print(f'warning: {labels_json} has {len(names)} classes (the '
                  f'official release has 174)', file=sys.stderr)
        if args.video_dir and not osp.isdir(args.video_dir):
            raise PrepareError(f'--video-dir {args.video_dir} is not a '
                               f'folder')
        present = None  # {id: file name} of the videos in --video-dir
        if args.video_dir:
            present = {}
            for fname in track(sorted(os.listdir(args.video_dir)),
                               desc=f'indexing {args.video_dir}',
                               unit='file', quiet=args.quiet):
                stem, ext = osp.splitext(fname)
                if args.video_ext is None or \
                        ext.lstrip('.') == args.video_ext.lstrip('.'):
                    present.setdefault(stem, fname)
        ext = (args.video_ext or 'webm').lstrip('.')
        os.makedirs(args.out_dir, exist_ok=True)
        written = []
        for split, short, labelled in SPLITS:
            path = osp.join(args.ann_dir, PREFIX + split + '.json')
            if not osp.isfile(path):
                if labelled:
                    raise PrepareError(f'{path} not found')
                continue
            entries = read_split(path, name_to_idx, labelled)
            lines, missing = [], []
            for vid, label in track(entries, desc=f'{split} entries',
                                    unit='video', quiet=args.quiet):
                if present is None:
                    fname = f'{vid}.{ext}'
                elif vid in present:
                    fname = present[vid]
                else:
                    missing.append(f'{vid}.{ext}' if args.video_ext else vid)
                    continue
                lines.append(fname if label is None else f'{fname} {label}')
            out = osp.join(args.out_dir, f'sthv2_{short}_list_videos.txt')
            with open(out, 'w') as f:
                f.writelines(ln + '\n' for ln in lines)
            msg = f'{out}: {len(lines)} videos'
            if labelled:
                used = len({int(ln.split()[1]) for ln in lines})
                msg += f', {used} classes'
            else:
                msg += ' (no labels)'
            miss_file = osp.join(args.out_dir, f'sthv2_{short}_missing.txt')
            if missing:
                with open(miss_file, 'w') as f:
                    f.writelines(m + '\n' for m in missing)
                msg += (f'; {len(missing)} of {len(entries)} missing in '
                        f'{args.video_dir}, left out and listed in '
                        f'{miss_file}')
            elif osp.exists(miss_file):
                os.remove(miss_file)
            print(msg)
            written.append(out)
    except (PrepareError, LabelMapError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'class names: {labels_json} ({len(names)} classes; set '
          f'label_map = {labels_json!r} in the config)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
