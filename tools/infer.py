#!/usr/bin/env python
"""Recognise actions in your own videos with a trained model.

    python tools/infer.py INPUT --config CFG --checkpoint CKPT \\
        [--label-map FILE | --label-map verb=V.csv noun=N.csv] [--topk 5] \\
        [--out results.json | results.csv] [--device cuda] [--one-view]
    python tools/infer.py INPUT --config CFG --checkpoint model.onnx \
        --backend onnxruntime     # a file of tools/deployment/export_onnx.py

INPUT is a video file, a folder (searched recursively for video files) or a
list file (one video per line, optionally followed by its label as in
MMAction2 list files: every line or none; the label is the integer at the end
of the line, so a path may hold spaces; relative paths are relative to the
list's folder or --data-root). Each video goes through the config's test pipeline
(``test_dataloader.dataset.pipeline``: the recipe's sampling, crops and views)
and the model; the head averages the views. Printed per video: the top-k
class names with probabilities; EPIC-KITCHENS-100 models print verb, noun and
action (verb x noun pairs scored p(verb) p(noun)).

When a list file gives labels, the summary also reports top-1 / top-k
agreement with them (EPIC lists "path verb noun": verb, noun, action top-1).

Class names come from --label-map, else from the config's ``label_map``
field; without either, indices are printed. A video that cannot be decoded, or
a listed file that does not exist, is reported and skipped; the exit status is
1 only when no video succeeded.
"""
import argparse
import csv
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cast_mmaction  # noqa: E402,F401
from cast_mmaction import inference as inf  # noqa: E402
from cast_mmaction import safe_load  # noqa: E402
from cast_mmaction.cli import (  # noqa: E402
    add_video_model_arguments, check_writable, mmengine_logs_to_stderr)
from cast_mmaction.datasets.label_maps import LabelMapError  # noqa: E402
from cast_mmaction.deployment import ExportError  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_video_model_arguments(
        ap, quiet_help='no per-video lines and no progress bar (the summary '
        'only; results in --out)')
    ap.add_argument('--backend', choices=('pytorch', 'onnxruntime'),
                    default='pytorch',
                    help='onnxruntime: run an exported file '
                    '(tools/deployment/export_onnx.py; --checkpoint names '
                    'the .onnx file) on the CPU; the config gives the '
                    'pipeline and normalisation')
    ap.add_argument('--label-map', nargs='+', metavar='FILE',
                    help='class names: one file, or KEY=FILE per output '
                    '(verb=... noun=...); default: the config\'s label_map')
    ap.add_argument('--topk', type=int, default=5)
    ap.add_argument('--out', help='write results to .json or .csv')
    args = ap.parse_args(argv)
    if args.topk < 1:
        ap.error('--topk must be >= 1')
    if args.out and osp.splitext(args.out)[1].lower() not in ('.json',
                                                              '.csv'):
        ap.error(f'--out {args.out}: use a .json or .csv file name')
    return args


def format_result(res):
    lines = [res['video']]
    for key, preds in res['predictions'].items():
        shown = ', '.join(f'{p["name"]} {p["score"]:.3f}' for p in preds)
        lines.append(f'  {key:>6}: {shown}')
    return '\n'.join(lines)


def write_json(path, results, failed, meta):
    with open(path, 'w') as f:
        json.dump(dict(meta, results=results, failed=failed), f, indent=1)


def write_csv(path, results, failed):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['video', 'output', 'rank', 'index', 'name', 'score',
                    'error'])
        for res in results:
            for key, preds in res['predictions'].items():
                for rank, p in enumerate(preds, 1):
                    index = (p['index'] if 'index' in p else
                             f'{p["verb"]}:{p["noun"]}')
                    w.writerow([res['video'], key, rank, index, p['name'],
                                f'{p["score"]:.6f}', ''])
        for fail in failed:
            w.writerow([fail['video'], '', '', '', '', '', fail['error']])


def label_accuracy(results):
    """Top-1 / top-k agreement with the labels of a list file, when every
    recognised video has one: ``{name: fraction}`` (single-label: ``top1``,
    ``topk``; verb/noun lists ``path verb noun``: ``verb``, ``noun``,
    ``action`` top-1)."""
    if not results or any(r.get('label') is None for r in results):
        return {}
    preds = results[0]['predictions']
    n = len(results)
    if 'label' in preds and all(isinstance(r['label'], int)
                                for r in results):
        k = len(preds['label'])
        top1 = sum(r['predictions']['label'][0]['index'] == r['label']
                   for r in results)
        topk = sum(r['label'] in [p['index'] for p in
                                  r['predictions']['label']]
                   for r in results)
        return {'top1': top1 / n, f'top{k}': topk / n}
    if 'verb' in preds and all(isinstance(r['label'], list) and
                               len(r['label']) == 2 for r in results):
        out = {}
        for j, key in enumerate(('verb', 'noun')):
            out[key] = sum(r['predictions'][key][0]['index'] == r['label'][j]
                           for r in results) / n
        out['action'] = sum(
            [r['predictions']['action'][0]['verb'],
             r['predictions']['action'][0]['noun']] == r['label']
            for r in results) / n
        return out
    return {}


def main(argv=None):
    args = parse_args(argv)
    mmengine_logs_to_stderr()  # stdout: results only
    # before any video runs: a results file that cannot be written would
    # lose them all at the end
    why = args.out and check_writable(args.out, '--out')
    if why:
        print(f'error: {why}', file=sys.stderr)
        return 2
    try:
        items = inf.collect_inputs(args.input, args.data_root)
        cfg = inf.load_config(args.config, args.cfg_options)
        if args.backend == 'onnxruntime':
            from cast_mmaction.deployment import OnnxRecognizer
            model = OnnxRecognizer(args.checkpoint, cfg)
        else:
            safe_load.trust_inputs(cfg, args.checkpoint,
                                   args.trust_checkpoint)
            model = inf.init_model(cfg, args.checkpoint, args.device)
        names, names_from = inf.label_names_for(model, args.label_map, cfg)
        pipeline = inf.build_test_pipeline(cfg, one_view=args.one_view)
    except (inf.InferenceError, LabelMapError, ExportError,
            safe_load.UntrustedCheckpointError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    device = next(model.parameters()).device
    where = 'onnxruntime (CPU)' if args.backend == 'onnxruntime' else device
    print(f'{len(items)} video(s); model on {where}; class names '
          f'{names_from}', file=sys.stderr)

    from tqdm import tqdm
    results, failed = [], []
    t0 = time.time()
    for good, samples in inf.run_videos(
            items, pipeline, lambda packed: inf.predict(model, packed), failed,
            args.batch_size, args.num_workers, quiet=args.quiet):
        for rec, ds in zip(good, samples):
            preds = inf.topk_predictions(inf.scores_of(model, ds), names,
                                         args.topk)
            res = dict(video=rec['item']['video'], predictions=preds)
            if rec['item'].get('label') is not None:
                res['label'] = rec['item']['label']
            results.append(res)
            if not args.quiet:  # results to stdout, above the bar
                tqdm.write(format_result(res))
    secs = time.time() - t0

    acc = label_accuracy(results)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        if args.out.lower().endswith('.json'):
            meta = dict(config=args.config, checkpoint=args.checkpoint,
                        topk=args.topk, one_view=args.one_view)
            if acc:
                meta['accuracy'] = acc
            write_json(args.out, results, failed, meta)
        else:
            write_csv(args.out, results, failed)
    summary = (f'{len(results)} of {len(items)} video(s) recognised in '
               f'{secs:.1f} s')
    if failed:
        missing = sum(f['error'] == inf.MISSING for f in failed)
        why = [f'{n} {text}' for n, text in (
            (missing, 'not found'),
            (len(failed) - missing, 'cannot be decoded or run')) if n]
        summary += f'; {len(failed)} skipped ({", ".join(why)}): ' + \
            ', '.join(f['video'] for f in failed[:5]) + \
            (' ...' if len(failed) > 5 else '')
    if acc:
        summary += '; against the list\'s labels: ' + ', '.join(
            f'{k} {100 * v:.1f}%' for k, v in acc.items())
    if args.out:
        summary += f'; results in {args.out}'
    print(summary, file=sys.stderr)
    return 0 if results else 1


if __name__ == '__main__':
    sys.exit(main())
