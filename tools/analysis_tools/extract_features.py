#!/usr/bin/env python
"""Pooled per-stream features of a trained model, for linear probes or
retrieval.

    python tools/analysis_tools/extract_features.py INPUT --config CFG --checkpoint CKPT \\
        --out-dir feats/ [--format npy|pt] [--keep-views] [--one-view]

INPUT is a video file, a folder or a list file (as for tools/infer.py; the
labels of a list file are kept). Each video goes through the config's test
pipeline; the backbone's pooled output of every stream is taken from the same
forward pass that makes the predictions (a forward hook on ``model.backbone``)
and averaged over the test views (``--keep-views`` keeps them).

Streams are named by role: ``spatial`` (CLIP), ``temporal`` (VideoMAE),
``audio`` (audio expert); other experts keep their config names; a
backbone without experts gives ``backbone`` (a frame-wise ViT's per-frame
features are averaged over frames).

Written to --out-dir:
  npy: ``<stream>.npy`` float32 (N, D) (or (N, V, D) with --keep-views), row
       i = video i
  pt:  ``features.pt`` = {'features': {stream: tensor}, 'videos': [...],
       'labels': [...]}
  both: ``index.csv`` (row, video, label) and ``index.json`` (videos, labels,
       streams with file, shape and expert, the failed videos with reasons,
       config, checkpoint).
A video that cannot be decoded is reported, listed under ``failed`` in
index.json and has no row.
"""
import argparse
import csv
import json
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import cast_mmaction  # noqa: E402,F401
from cast_mmaction import inference as inf  # noqa: E402
from cast_mmaction import safe_load  # noqa: E402
from cast_mmaction.cli import (  # noqa: E402
    add_video_model_arguments, check_writable, mmengine_logs_to_stderr)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_video_model_arguments(ap)
    ap.add_argument('--out-dir', required=True)
    ap.add_argument('--format', choices=('npy', 'pt'), default='npy')
    ap.add_argument('--keep-views', action='store_true',
                    help='save (N, views, D) instead of the view average')
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    mmengine_logs_to_stderr()  # stdout: results only
    # before any video runs (the features would be lost at the end)
    why = check_writable(args.out_dir, '--out-dir', folder=True)
    if why:
        print(f'error: {why}', file=sys.stderr)
        return 2
    try:
        items = inf.collect_inputs(args.input, args.data_root)
        cfg = inf.load_config(args.config, args.cfg_options)
        safe_load.trust_inputs(cfg, args.checkpoint, args.trust_checkpoint)
        model = inf.init_model(cfg, args.checkpoint, args.device)
        pipeline = inf.build_test_pipeline(cfg, one_view=args.one_view)
    except (inf.InferenceError, safe_load.UntrustedCheckpointError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    streams = inf.stream_info(model)
    names = [s[0] for s in streams]

    def pooled(packed):
        with inf.capture_backbone(model) as calls:
            inf.predict(model, packed)
        return inf.pooled_features(calls, len(packed), not args.keep_views)

    feats = None
    done, failed = [], []
    t0 = time.time()
    for good, feat in inf.run_videos(items, pipeline, pooled, failed,
                                     args.batch_size, args.num_workers,
                                     quiet=args.quiet):
        if not names or len(names) != len(feat):
            # a backbone without named experts (e.g. MSCAViT)
            names = ['backbone'] if len(feat) == 1 else [
                f'stream{i}' for i in range(len(feat))]
        if feats is None:
            feats = [[] for _ in feat]
        for k, f in enumerate(feat):
            feats[k].append(f.cpu())
        done.extend(r['item'] for r in good)

    if not done:
        print(f'error: none of the {len(items)} video(s) could be processed',
              file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    tensors = {n: torch.cat(parts) for n, parts in zip(names, feats)}
    videos = [d['video'] for d in done]
    labels = [d.get('label') for d in done]
    info = {}
    experts = {s[0]: (s[1], s[2]) for s in streams}
    if not streams:
        experts = {n: (n, type(model.backbone).__name__) for n in names}
    if args.format == 'npy':
        for n, t in tensors.items():
            np.save(osp.join(args.out_dir, f'{n}.npy'),
                    t.numpy().astype(np.float32))
    else:
        torch.save(dict(features=tensors, videos=videos, labels=labels,
                        streams=names),
                   osp.join(args.out_dir, 'features.pt'))
    for n, t in tensors.items():
        info[n] = dict(
            file=f'{n}.npy' if args.format == 'npy' else 'features.pt',
            shape=list(t.shape), stream=experts.get(n, (n, ''))[0],
            expert=experts.get(n, ('', ''))[1])
    with open(osp.join(args.out_dir, 'index.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['row', 'video', 'label'])
        for i, (v, lab) in enumerate(zip(videos, labels)):
            w.writerow([i, v, '' if lab is None else lab])
    with open(osp.join(args.out_dir, 'index.json'), 'w') as f:
        json.dump(dict(videos=videos, labels=labels, streams=info,
                       views='kept' if args.keep_views else 'averaged',
                       failed=failed, config=args.config,
                       checkpoint=args.checkpoint), f, indent=1)
    secs = time.time() - t0
    print(f'{len(done)} of {len(items)} video(s) in {secs:.1f} s -> '
          f'{args.out_dir}: ' + ', '.join(
              f'{n} {tuple(t.shape)} ({info[n]["file"]})'
              for n, t in tensors.items()) + ', index.csv, index.json' +
          (f'; {len(failed)} skipped: ' +
           ', '.join(f['video'] for f in failed[:5]) if failed else ''),
          file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
