#!/usr/bin/env python
"""EPIC-KITCHENS-100 action recognition challenge submission.

Writes the challenge JSON: ``version`` "0.2", ``challenge``
"action_recognition", the three supervision-level fields ``sls_pt``,
``sls_tl``, ``sls_td`` (0-5, your own declaration, see the challenge's
guidelines) and ``results``: for every ``narration_id`` of the test split,
``{"verb": {"0": s, ..., "96": s}, "noun": {"0": s, ..., "299": s}}``.
The written file is read back and validated against the test CSV.

Run the model on the test split and write the submission::

    python tools/analysis_tools/ek100_submission.py configs/cast_ek100.py \
        work_dirs/cast_ek100/best_ek100_action_top1_epoch_50.pth \
        --test-csv data/ek100/annotations/EPIC_100_test_timestamps.csv \
        --sls-pt 2 --sls-tl 3 --sls-td 4 --out submission.json --zip

or convert scores written earlier by ``EpicKitchensMetric(scores_file=...)``
(or any score file in the official dict / list format)::

    python tools/analysis_tools/ek100_submission.py --scores test_scores.pkl \
        --test-csv .../EPIC_100_test_timestamps.csv \
        --sls-pt 2 --sls-tl 3 --sls-td 4 --out submission.json

or only validate an existing submission::

    python tools/analysis_tools/ek100_submission.py --validate submission.json \
        --test-csv .../EPIC_100_test_timestamps.csv
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
import zipfile

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

VERSION = '0.2'
CHALLENGE = 'action_recognition'
NUM_VERBS = 97
NUM_NOUNS = 300
SLS_FIELDS = ('sls_pt', 'sls_tl', 'sls_td')


class SubmissionError(ValueError):
    """The submission does not follow the challenge format."""


def expected_narration_ids(test_csv):
    """The narration ids of an EPIC-KITCHENS CSV (test split)."""
    from cast_mmaction.datasets.epic_kitchens import read_epic_csv
    return [r['narration_id'] for r in read_epic_csv(test_csv)]


def make_submission(narration_ids, verb_scores, noun_scores, sls_pt, sls_tl,
                    sls_td, digits=6):
    """The submission dict. Scores are rounded to ``digits`` significant
    digits (ranking-preserving for probabilities; keeps the file small)."""
    if len(narration_ids) != len(verb_scores) or \
            len(narration_ids) != len(noun_scores):
        raise SubmissionError(f'{len(narration_ids)} narration ids, '
                              f'{len(verb_scores)} verb and '
                              f'{len(noun_scores)} noun score rows')
    fmt = f'{{:.{digits}g}}'

    def row(scores):
        return {str(c): float(fmt.format(float(s)))
                for c, s in enumerate(scores)}

    results = {}
    for nid, v, n in zip(narration_ids, verb_scores, noun_scores):
        if nid in results:
            raise SubmissionError(f'narration_id {nid} appears twice')
        results[str(nid)] = dict(verb=row(v), noun=row(n))
    sub = dict(version=VERSION, challenge=CHALLENGE)
    for key, value in zip(SLS_FIELDS, (sls_pt, sls_tl, sls_td)):
        sub[key] = int(value)
    sub['results'] = results
    return sub


def validate_submission(sub, expected_ids=None, num_verbs=NUM_VERBS,
                        num_nouns=NUM_NOUNS):
    """Raise :class:`SubmissionError` naming the first problem found."""
    if not isinstance(sub, dict):
        raise SubmissionError('the submission must be a JSON object')
    if sub.get('version') != VERSION:
        raise SubmissionError(f"'version' must be {VERSION!r}, got "
                              f"{sub.get('version')!r}")
    if sub.get('challenge') != CHALLENGE:
        raise SubmissionError(f"'challenge' must be {CHALLENGE!r}, got "
                              f"{sub.get('challenge')!r}")
    for key in SLS_FIELDS:
        value = sub.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or \
                not 0 <= value <= 5:
            raise SubmissionError(f"'{key}' must be an integer 0-5 (the "
                                  f'supervision level), got {value!r}')
    results = sub.get('results')
    if not isinstance(results, dict) or not results:
        raise SubmissionError("'results' must be a non-empty object keyed "
                              'by narration_id')
    if expected_ids is not None:
        expected = set(map(str, expected_ids))
        missing = sorted(expected - set(results))
        extra = sorted(set(results) - expected)
        if missing:
            raise SubmissionError(f'{len(missing)} narration ids of the test '
                                  f'split are missing, e.g. {missing[:5]}')
        if extra:
            raise SubmissionError(f'{len(extra)} narration ids are not in the'
                                  f' test split, e.g. {extra[:5]}')
    classes = dict(verb=[str(c) for c in range(num_verbs)],
                   noun=[str(c) for c in range(num_nouns)])
    for nid, entry in results.items():
        if not isinstance(entry, dict):
            raise SubmissionError(f'results[{nid!r}] must be an object')
        extra_keys = set(entry) - {'verb', 'noun', 'action'}
        if extra_keys:
            raise SubmissionError(f'results[{nid!r}] has unexpected keys '
                                  f'{sorted(extra_keys)}')
        for task, keys in classes.items():
            scores = entry.get(task)
            if not isinstance(scores, dict):
                raise SubmissionError(f'results[{nid!r}] lacks {task!r} '
                                      f'scores')
            if len(scores) != len(keys) or set(scores) != set(keys):
                miss = sorted(set(keys) - set(scores), key=int)[:5]
                raise SubmissionError(
                    f'results[{nid!r}][{task!r}] must have one score for '
                    f'each class "0".."{len(keys) - 1}" ({len(scores)} '
                    f'given; missing e.g. {miss}, unexpected e.g. '
                    f'{sorted(set(scores) - set(keys))[:5]})')
            for c, s in scores.items():
                if isinstance(s, bool) or not isinstance(s, (int, float)) \
                        or not math.isfinite(s):
                    raise SubmissionError(f'results[{nid!r}][{task!r}]'
                                          f'[{c!r}] must be a finite number,'
                                          f' got {s!r}')
    return True


def write_submission(sub, out, expected_ids=None, make_zip=False):
    """Write, read back and validate; optionally also zip it as
    ``test.json``. Returns the paths written."""
    validate_submission(sub, expected_ids)
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(sub, f)
    read_submission(out, expected_ids)
    paths = [out]
    if make_zip:
        zpath = osp.splitext(out)[0] + '.zip'
        with zipfile.ZipFile(zpath, 'w', zipfile.ZIP_DEFLATED) as z:
            z.write(out, arcname='test.json')
        paths.append(zpath)
    return paths


def read_submission(path, expected_ids=None):
    """Load a submission JSON (or a zip holding one) and validate it."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith('.json')]
            if len(names) != 1:
                raise SubmissionError(f'{path}: expected one .json inside, '
                                      f'found {names}')
            sub = json.loads(z.read(names[0]).decode('utf-8'))
    else:
        with open(path) as f:
            try:
                sub = json.load(f)
            except json.JSONDecodeError as e:
                raise SubmissionError(f'{path} is not valid JSON: {e}'
                                      ) from None
    try:
        validate_submission(sub, expected_ids)
    except SubmissionError as e:
        raise SubmissionError(f'{path}: {e}') from None
    return sub


def run_test(config, checkpoint, test_csv, work_dir=None, cfg_options=None,
             launcher='none'):
    """Run the config's test pipeline on ``test_csv`` and return the path of
    the score file the metric wrote."""
    import cast_mmaction  # noqa: F401 (registers)
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    cfg.load_from = checkpoint
    from cast_mmaction import safe_load
    safe_load.trust_config(cfg)  # the config's trust_checkpoint fields
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config))[0])
    cfg.test_dataloader.dataset.ann_file = test_csv
    cfg.test_dataloader.dataset.test_mode = True
    scores = osp.join(cfg.work_dir, 'ek100_test_scores.pkl')
    cfg.test_evaluator = dict(type='EpicKitchensMetric', scores_file=scores)
    runner = Runner.from_cfg(cfg)
    runner.test()
    return scores


def parse_args(argv=None):
    from mmengine.config import DictAction
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('config', nargs='?', help='config of the model')
    ap.add_argument('checkpoint', nargs='?', help='trained checkpoint')
    ap.add_argument('--scores', help='score file instead of config + '
                    'checkpoint (official dict or list format)')
    ap.add_argument('--validate', metavar='JSON',
                    help='only validate this submission (.json or .zip)')
    ap.add_argument('--test-csv', help='EPIC_100_test_timestamps.csv '
                    '(default: the config\'s ek100_test_csv)')
    ap.add_argument('--out', default='submission.json')
    ap.add_argument('--zip', action='store_true',
                    help='also write OUT.zip holding it as test.json')
    for key, what in (('pt', 'pre-training'), ('tl', 'training labels'),
                      ('td', 'training data')):
        ap.add_argument(f'--sls-{key}', type=int, choices=range(6),
                        help=f'supervision level, {what} (0-5)')
    ap.add_argument('--work-dir')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction)
    ap.add_argument('--launcher', default='none',
                    choices=['none', 'pytorch', 'slurm', 'mpi'])
    ap.add_argument('--local_rank', '--local-rank', type=int, default=0)
    from cast_mmaction import safe_load
    safe_load.add_trust_argument(ap, 'the checkpoint or --scores file')
    args = ap.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return ap, args


def main(argv=None):
    from cast_mmaction import safe_load
    ap, args = parse_args(argv)
    try:
        # --trust-checkpoint: the named checkpoint / score file may hold
        # objects outside the allow-list (docs/security.md)
        with safe_load.trusted(*((args.checkpoint, args.scores)
                                 if args.trust_checkpoint else ())):
            return _main(ap, args)
    except (safe_load.UntrustedCheckpointError, _InputError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


class _InputError(Exception):
    """A file given on the command line is missing or unreadable, or the
    submission / score file / CSV does not follow its format; the message
    names the file and what is wrong (printed as ``error: ...``, exit 2)."""


def _read(option, path, fn, *args):
    """``fn(*args)``, turning a missing / malformed input into
    :class:`_InputError` naming the option and the file ``path``."""
    try:
        return fn(*args)
    except (SubmissionError, OSError, ValueError) as e:
        msg = str(e) if str(path) in str(e) else f'{path}: {e}'
        raise _InputError(f'{option}: {msg}') from e


def _main(ap, args):
    test_csv = args.test_csv
    if test_csv is None and args.config:
        from mmengine.config import Config
        test_csv = _read('CONFIG', args.config, Config.fromfile,
                         args.config).get('ek100_test_csv')
    if args.validate:
        ids = _read('--test-csv', test_csv, expected_narration_ids,
                    test_csv) if test_csv else None
        sub = _read('--validate', args.validate, read_submission,
                    args.validate, ids)
        print(f'{args.validate}: valid ({len(sub["results"])} segments'
              f'{"" if ids else "; narration ids not checked, no --test-csv"}'
              f')')
        return 0
    if not test_csv:
        ap.error('--test-csv is required (or ek100_test_csv in the config)')
    if None in (args.sls_pt, args.sls_tl, args.sls_td):
        ap.error('--sls-pt, --sls-tl and --sls-td are required: declare the '
                 'supervision levels of your model (0-5, see the challenge '
                 'guidelines)')
    ids = _read('--test-csv', test_csv, expected_narration_ids, test_csv)
    if args.scores:
        score_file = args.scores
    elif args.config and args.checkpoint:
        score_file = run_test(args.config, args.checkpoint, test_csv,
                              args.work_dir, args.cfg_options, args.launcher)
        from mmengine.dist import get_rank
        if get_rank() != 0:
            return 0
    else:
        ap.error('give CONFIG CHECKPOINT, --scores FILE or --validate JSON')
    from cast_mmaction.evaluation.epic_metric import load_scores
    scores_opt = '--scores' if args.scores else 'the test run\'s scores'
    sid, verb, noun = _read(scores_opt, score_file, load_scores,
                            score_file)
    if verb.shape[1] != NUM_VERBS or noun.shape[1] != NUM_NOUNS:
        raise _InputError(f'{score_file}: expected {NUM_VERBS} verb and '
                          f'{NUM_NOUNS} noun scores per segment, got '
                          f'{verb.shape[1]} and {noun.shape[1]}')
    sub = _read(scores_opt, score_file, make_submission, sid, verb,
                noun, args.sls_pt, args.sls_tl, args.sls_td)
    _read(scores_opt, score_file, validate_submission, sub, ids)
    paths = _read('--out', args.out, write_submission, sub, args.out,
                  ids, args.zip)
    print(f'wrote {", ".join(paths)}: {len(sid)} segments, validated against'
          f' {test_csv}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
