"""tools/analysis_tools/balance.py, tools/analysis_tools/ensemble.py, tools/analysis_tools/average_splits.py and the
UCF-101 split field, on the files tools/test.py writes.

tools/test.py's own ``main`` writes the ``test_metrics.json`` files and the
``--dump`` pickles here: only the runner is replaced by one whose test loop
feeds fixed predictions through the evaluator that tools/test.py configured
(the config's metric, plus ``DumpResults`` with ``--dump``). The expected
numbers are computed by hand in the comments.
"""
import json
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from _tools import load_tool as _tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))




class _Runner:
    """Stands in for MMEngine's Runner: the test loop's evaluator calls on
    fixed data samples."""

    def __init__(self, cfg, samples):
        self.cfg, self.samples = cfg, samples

    def test(self):
        from mmengine.evaluator import Evaluator
        ev = Evaluator(self.cfg.test_evaluator)
        ev.process(data_samples=self.samples)
        return ev.evaluate(len(self.samples))


def run_test_tool(tmp_path, monkeypatch, name, evaluator, samples,
                  dump=False, checkpoint=None):
    """tools/test.py CONFIG CKPT --work-dir <tmp>/<name> [--dump]: returns
    (work dir, dump path or None)."""
    cfg = tmp_path / f'{name}.py'
    cfg.write_text(f'test_evaluator = {evaluator!r}\n')
    tool = _tool('test')
    monkeypatch.setattr(tool, 'build_runner',
                        lambda c: _Runner(c, samples))
    work = str(tmp_path / name)
    args = [str(cfg), checkpoint or f'{name}.pth', '--no-check',
            '--work-dir', work]
    out = None
    if dump:
        out = str(tmp_path / f'{name}.pkl')
        args += ['--dump', out]
    tool.main(args)
    return work, out


def onehotish(preds, num_classes, p=0.7):
    """Probability rows with ``p`` on the predicted class."""
    rows = np.full((len(preds), num_classes), (1 - p) / (num_classes - 1))
    rows[np.arange(len(preds)), preds] = p
    return rows


def single(scores, labels, ids=None):
    from mmaction.structures import ActionDataSample
    out = []
    for i, (s, y) in enumerate(zip(scores, labels)):
        ds = ActionDataSample().set_pred_score(torch.tensor(s).float())
        ds.set_gt_label(int(y))
        if ids is not None:
            ds.set_metainfo(dict(video_id=ids[i]))
        out.append(ds)
    return out


def verb_noun(verb, noun, yv, yn):
    from mmaction.structures import ActionDataSample
    out = []
    for i in range(len(verb)):
        ds = ActionDataSample()
        ds.set_field(torch.tensor(verb[i]).float(), 'pred_verb')
        ds.set_field(torch.tensor(noun[i]).float(), 'pred_noun')
        if yv is not None:  # None: the unlabelled test split
            ds.set_field(torch.tensor(yv[i]), 'gt_verb')
            ds.set_field(torch.tensor(yn[i]), 'gt_noun')
        ds.set_metainfo(dict(narration_id=f'P01_01_{i}'))
        out.append(ds)
    return out


LABELS4 = [0, 1, 2, 3]


@pytest.fixture
def four_runs(tmp_path, monkeypatch):
    """test_metrics.json of SSv2 (top-1 3/4), K400 (1/2) and EK100 (verb
    3/4, noun 1/4)."""
    acc = dict(type='AccMetric')
    ssv2, _ = run_test_tool(tmp_path, monkeypatch, 'ssv2', acc, single(
        onehotish([0, 1, 2, 0], 5), LABELS4))
    k400, _ = run_test_tool(tmp_path, monkeypatch, 'k400', acc, single(
        onehotish([0, 1, 0, 0], 5), LABELS4))
    ek, _ = run_test_tool(
        tmp_path, monkeypatch, 'ek100', dict(type='EpicKitchensMetric'),
        verb_noun(onehotish([0, 1, 2, 0], 6), onehotish([0, 0, 0, 0], 6),
                  LABELS4, LABELS4))
    return dict(ssv2=ssv2, k400=k400, ek100=ek)


# ------------------------------------------------------------ balance ----
def test_balance_is_the_harmonic_mean_of_the_four_top1(four_runs, tmp_path,
                                                       capsys):
    out_json = str(tmp_path / 'bal.json')
    files = {k: osp.join(v, 'test_metrics.json')
             for k, v in four_runs.items()}
    result = _tool('balance').main([
        '--ek100', files['ek100'], '--ssv2', four_runs['ssv2'],  # a work dir
        '--k400', files['k400'], '--json', out_json])
    # 4 / (1/.75 + 1/.25 + 1/.75 + 1/.5) = 4 / (26/3) = 6/13
    assert result['harmonic_mean'] == pytest.approx(6 / 13)
    assert [(r[0], r[3]) for r in result['rows']] == [
        ('EK100 verb', .75), ('EK100 noun', .25), ('SSv2', .75),
        ('K400', .5)]
    printed = capsys.readouterr().out
    assert 'harmonic mean' in printed and '46.15' in printed
    assert 'ek100/noun_top1' in printed and '25.00' in printed
    with open(out_json) as f:
        saved = json.load(f)
    assert saved['harmonic_mean'] == pytest.approx(6 / 13)
    assert [r['key'] for r in saved['rows']] == [
        'ek100/verb_top1', 'ek100/noun_top1', 'acc/top1', 'acc/top1']


def test_balance_names_what_is_wrong(four_runs, tmp_path):
    tool = _tool('balance')
    ok = dict(four_runs)

    def fails(**files):
        args = []
        for k, v in dict(ok, **files).items():
            args += [f'--{k}', v]
        with pytest.raises(SystemExit) as e:
            tool.main(args)
        return str(e.value)

    missing = str(tmp_path / 'nowhere' / 'test_metrics.json')
    msg = fails(k400=missing)
    assert msg.startswith('error: ') and missing in msg
    assert 'file not found' in msg
    bad = tmp_path / 'bad.json'
    bad.write_text('{"metrics": {"acc/top1": 0.5')
    assert 'not readable JSON' in fails(ssv2=str(bad))
    # the SSv2 file where the EK100 one belongs: the key and the keys there
    msg = fails(ek100=ok['ssv2'])
    assert "no metric 'ek100/verb_top1' (the EK100 verb top-1)" in msg
    assert "['acc/mean1', 'acc/top1', 'acc/top5']" in msg
    (tmp_path / 'nometrics.json').write_text('{"config": "x"}')
    assert 'no "metrics" dict' in fails(k400=str(tmp_path / 'nometrics.json'))
    (tmp_path / 'pct.json').write_text('{"metrics": {"acc/top1": 75.0}}')
    assert 'not a fraction' in fails(k400=str(tmp_path / 'pct.json'))
    with pytest.raises(SystemExit):  # argparse: --k400 is required
        tool.main(['--ek100', ok['ek100'], '--ssv2', ok['ssv2']])


def test_harmonic_mean_with_a_zero():
    from cast_mmaction.evaluation.summaries import harmonic_mean
    assert harmonic_mean([.5, 0.0]) == 0.0
    assert harmonic_mean([.5, .25]) == pytest.approx(2 / (2 + 4))


# ----------------------------------------------------------- ensemble ----
# 4 samples, 3 classes, labels 0 1 2 0; the argmax of each row in brackets
LABELS3 = [0, 1, 2, 0]
A = np.array([[.6, .3, .1],   # [0] hit
              [.5, .4, .1],   # [0] miss
              [.2, .2, .6],   # [2] hit
              [.4, .5, .1]])  # [1] miss  -> top-1 1/2
B = np.array([[.35, .55, .1],  # [1] miss
              [.1, .8, .1],    # [1] hit
              [.1, .3, .6],    # [2] hit
              [.7, .2, .1]])   # [0] hit   -> top-1 3/4
# mean 1:1 -> [.475 .425 .1] [.3 .6 .1] [.15 .25 .6] [.55 .35 .1]: all hit
# mean 9:1 -> sample 1 [.46 .44 .1] and sample 3 [.43 .47 .1] miss: 1/2


@pytest.fixture
def two_dumps(tmp_path, monkeypatch):
    acc = dict(type='AccMetric')
    ids = ['v0', 'v1', 'v2', 'v3']
    _, a = run_test_tool(tmp_path, monkeypatch, 'a', acc,
                         single(A, LABELS3, ids), dump=True)
    # model b's dump holds logits (softmax(log B + 3) = B)
    _, b = run_test_tool(tmp_path, monkeypatch, 'b', acc,
                         single(np.log(B) + 3, LABELS3, ids), dump=True)
    return a, b


def test_the_dump_is_what_tools_test_writes(two_dumps):
    with open(two_dumps[0], 'rb') as f:
        data = pickle.load(f)
    assert isinstance(data, list) and len(data) == 4
    assert {'pred_score', 'gt_label', 'video_id'} <= set(data[0])


def test_ensemble_of_single_label_dumps(two_dumps, tmp_path, capsys):
    tool = _tool('ensemble')
    out_json = str(tmp_path / 'fused.json')
    result = tool.main(list(two_dumps) + ['--json', out_json])
    assert result['kind'] == 'single-label'
    (_, ma), (_, mb) = result['inputs']
    assert ma['acc/top1'] == pytest.approx(.5)
    assert mb['acc/top1'] == pytest.approx(.75)  # logits softmaxed
    fused = result['fused']
    assert list(fused) == ['acc/top1', 'acc/top5', 'acc/mean1']
    assert fused['acc/top1'] == pytest.approx(1.0)
    assert fused['acc/mean1'] == pytest.approx(1.0)
    assert 'fused' in capsys.readouterr().out
    with open(out_json) as f:
        assert json.load(f)['fused']['acc/top1'] == pytest.approx(1.0)
    # the same metric keys and values as tools/test.py wrote for each run
    for dump, (_, m) in zip(two_dumps, result['inputs']):
        with open(osp.join(dump[:-4], 'test_metrics.json')) as f:
            written = json.load(f)['metrics']
        assert m == pytest.approx(written)
    nine = tool.main(list(two_dumps) + ['--weights', '9', '1'])
    assert nine['fused']['acc/top1'] == pytest.approx(.5)
    only_a = tool.main(list(two_dumps) + ['--weights', '1', '0'])
    assert only_a['fused'] == pytest.approx(ma)


def test_ensemble_of_verb_noun_dumps(tmp_path, monkeypatch):
    ek = dict(type='EpicKitchensMetric')
    yv, yn = [0, 1, 2], [1, 0, 2]
    # model a: verbs all right, nouns 1/3 right; model b: verbs 2/3 (sample
    # 0 wrong), nouns all right; their mean gets everything right
    av = [[.8, .1, .1], [.1, .8, .1], [.1, .1, .8]]
    an = [[.3, .4, .3], [.4, .5, .1], [.2, .5, .3]]
    bv = [[.4, .5, .1], [.1, .8, .1], [.3, .3, .4]]
    bn = [[.1, .8, .1], [.8, .1, .1], [.1, .1, .8]]
    _, a = run_test_tool(tmp_path, monkeypatch, 'a', ek,
                         verb_noun(av, an, yv, yn), dump=True)
    _, b = run_test_tool(tmp_path, monkeypatch, 'b', ek,
                         verb_noun(bv, bn, yv, yn), dump=True)
    result = _tool('ensemble').main([a, b])
    assert result['kind'] == 'verb/noun'
    (_, ma), (_, mb) = result['inputs']
    assert (ma['ek100/verb_top1'], ma['ek100/noun_top1'],
            ma['ek100/action_top1']) == pytest.approx((1, 1 / 3, 1 / 3))
    assert (mb['ek100/verb_top1'], mb['ek100/noun_top1'],
            mb['ek100/action_top1']) == pytest.approx((2 / 3, 1, 2 / 3))
    fused = result['fused']
    assert set(fused) == {'ek100/' + k for k in (
        'verb_top1', 'verb_top5', 'noun_top1', 'noun_top5', 'action_top1',
        'action_top5', 'verb_mean_class_acc', 'noun_mean_class_acc')}
    assert (fused['ek100/verb_top1'], fused['ek100/noun_top1'],
            fused['ek100/action_top1']) == pytest.approx((1, 1, 1))
    # the fused dump, read back: the fused scores and metrics again
    out = str(tmp_path / 'fused.pkl')
    _tool('ensemble').main([a, b, '--out', out])
    again = _tool('ensemble').main([out, a, '--weights', '1', '0'])
    assert again['inputs'][0][1] == pytest.approx(fused)
    np.testing.assert_allclose(again['scores']['verb'],
                               (np.array(av) + bv) / 2, rtol=1e-6)
    # the test split (no labels): fused scores for the submission tool
    _, ua = run_test_tool(tmp_path, monkeypatch, 'ua', ek,
                          verb_noun(av, an, None, None), dump=True)
    _, ub = run_test_tool(tmp_path, monkeypatch, 'ub', ek,
                          verb_noun(bv, bn, None, None), dump=True)
    scores = str(tmp_path / 'test_scores.pkl')
    unl = _tool('ensemble').main([ua, ub, '--weights', '1', '3',
                                  '--ek100-scores', scores])
    assert unl['fused'] == {}
    from cast_mmaction.evaluation.epic_metric import load_scores
    ids, verb, noun = load_scores(scores)
    assert ids == ['P01_01_0', 'P01_01_1', 'P01_01_2']
    np.testing.assert_allclose(noun, (np.array(an) + 3 * np.array(bn)) / 4,
                               rtol=1e-6)
    with pytest.raises(SystemExit, match='a.pkl is labelled but .*ua.pkl '
                       'is not'):
        _tool('ensemble').main([a, ua])
    # one of them again with a single-label dump: a clear error
    _, s = run_test_tool(tmp_path, monkeypatch, 's', dict(type='AccMetric'),
                         single(A[:3], yv), dump=True)
    with pytest.raises(SystemExit, match='is a single-label dump but .* is '
                       'a verb/noun dump'):
        _tool('ensemble').main([a, s])


def test_ensemble_epic_sounds_metric(two_dumps):
    result = _tool('ensemble').main(list(two_dumps) + ['--metric',
                                                       'epic_sounds'])
    assert result['fused']['epic_sounds/top1'] == pytest.approx(1.0)
    assert result['fused']['epic_sounds/mAUC'] == pytest.approx(1.0)
    # model a, class 1 column .3 .4 .2 .5 with its positive (.4) second:
    # AP 1/2; class 0 (.6 hit first, .4 third): AP (1 + 2/3)/2; class 2: 1
    assert result['inputs'][0][1]['epic_sounds/mAP'] == pytest.approx(
        (1 / 2 + 5 / 6 + 1) / 3)


def test_ensemble_rejects_dumps_that_do_not_match(two_dumps, tmp_path,
                                                  monkeypatch):
    tool = _tool('ensemble')
    a, b = two_dumps
    acc = dict(type='AccMetric')

    def fails(paths, *extra):
        with pytest.raises(SystemExit) as e:
            tool.main(list(paths) + list(extra))
        msg = str(e.value)
        assert msg.startswith('error: ')
        return msg

    _, short = run_test_tool(tmp_path, monkeypatch, 'short', acc,
                             single(B[:3], LABELS3[:3]), dump=True)
    assert 'has 3 samples but' in fails([a, short])
    order = [3, 2, 1, 0]
    _, shuffled = run_test_tool(
        tmp_path, monkeypatch, 'shuffled', acc,
        single(B[order], np.array(LABELS3)[order], ['v3', 'v2', 'v1', 'v0']),
        dump=True)
    assert 'the same samples in another order' in fails([a, shuffled])
    _, other = run_test_tool(tmp_path, monkeypatch, 'other', acc,
                             single(B, LABELS3, ['v0', 'v1', 'v2', 'w3']),
                             dump=True)
    assert 'they hold different samples' in fails([a, other])
    _, wide = run_test_tool(tmp_path, monkeypatch, 'wide', acc,
                            single(onehotish([0, 1, 2, 0], 4), LABELS3),
                            dump=True)
    msg = fails([wide, a])
    assert 'a.pkl scores 3 classes but' in msg and 'wide.pkl scores 4' in msg
    _, relabelled = run_test_tool(tmp_path, monkeypatch, 'relabelled', acc,
                                  single(B, [0, 1, 2, 1]), dump=True)
    assert 'disagree on the class of 1 samples (first: sample 3' in \
        fails([a, relabelled])
    assert '1 weights for 2 dumps' in fails([a, b], '--weights', '1')
    assert 'weights must be non-negative' in fails([a, b], '--weights', '1',
                                                   '-1')
    assert 'at least two dumps' in fails([a])
    assert 'dump not found' in fails([a, str(tmp_path / 'none.pkl')])
    (tmp_path / 'junk.pkl').write_bytes(b'not a pickle')
    assert 'not a readable pickle' in fails([a, str(tmp_path / 'junk.pkl')])
    with open(tmp_path / 'dict.pkl', 'wb') as f:
        pickle.dump({'pred_score': 1}, f)
    assert 'list of per-sample dicts' in fails([a, str(tmp_path /
                                                       'dict.pkl')])
    assert 'the scores are not probabilities' in fails([a, b], '--scores',
                                                       'prob')
    assert 'EK100 score files need verb/noun dumps' in fails(
        [a, b], '--ek100-scores', str(tmp_path / 's.pkl'))


# --------------------------------------------------- UCF-101 splits ----
def _ucf_runs(tmp_path, monkeypatch, hits_per_split):
    works = []
    for split, hits in enumerate(hits_per_split, 1):
        # misses predict another class of the ground truth (MMAction2's
        # mean class accuracy also averages over predicted classes)
        preds = [y if k < hits else (y + 1) % 4
                 for k, y in enumerate(LABELS4)]
        work, _ = run_test_tool(tmp_path, monkeypatch, f'ucf_split{split}',
                                dict(type='AccMetric'),
                                single(onehotish(preds, 5), LABELS4))
        works.append(work)
    return works


def test_average_splits(tmp_path, monkeypatch, capsys):
    works = _ucf_runs(tmp_path, monkeypatch, [1, 2, 4])
    out_json = str(tmp_path / 'ucf.json')
    tool = _tool('average_splits')
    result = tool.main(works + ['--num-runs', '3', '--json', out_json])
    # top-1 1/4, 2/4, 4/4 -> 7/12; mean class accuracy the same (one
    # sample per class)
    assert result['per_run']['acc/top1'] == pytest.approx([.25, .5, 1])
    assert result['mean']['acc/top1'] == pytest.approx(7 / 12)
    assert result['mean']['acc/mean1'] == pytest.approx(7 / 12)
    assert '0.5833' in capsys.readouterr().out
    with open(out_json) as f:
        assert json.load(f)['mean']['acc/top1'] == pytest.approx(7 / 12)
    with pytest.raises(SystemExit, match='2 files given, --num-runs 3'):
        tool.main(works[:2] + ['--num-runs', '3'])
    with pytest.raises(SystemExit, match='given more than once'):
        tool.main([works[0], works[0]])


def test_average_splits_rejects_mixed_runs(tmp_path, monkeypatch):
    tool = _tool('average_splits')
    works = _ucf_runs(tmp_path, monkeypatch, [1, 2])
    same, _ = run_test_tool(tmp_path, monkeypatch, 'again',
                            dict(type='AccMetric'),
                            single(onehotish([0, 1, 2, 3], 5), LABELS4),
                            checkpoint='ucf_split1.pth')
    with pytest.raises(SystemExit, match='both tested checkpoint '
                       'ucf_split1.pth'):
        tool.main([works[0], same])
    ek, _ = run_test_tool(
        tmp_path, monkeypatch, 'ek', dict(type='EpicKitchensMetric'),
        verb_noun(onehotish([0, 1, 2, 0], 6), onehotish([0, 0, 0, 0], 6),
                  LABELS4, LABELS4))
    with pytest.raises(SystemExit, match='average runs of the same config'):
        tool.main(works + [ek])


def test_ucf101_split_chooses_the_lists(tmp_path):
    from mmaction.registry import DATASETS
    for split in (1, 2, 3):
        (tmp_path / f'train_split_{split}.txt').write_text(
            f'c/v_{split}.avi {split}\n')
    tmpl = str(tmp_path / 'train_split_{split}.txt')

    def build(**kw):
        return DATASETS.build(dict(type='UCF101AudioDataset', pipeline=[],
                                   check_files=False, **kw))

    ds = build(ann_file=tmpl, split=2)
    assert ds.split == 2 and ds.ann_file.endswith('train_split_2.txt')
    assert ds.get_data_info(0)['label'] == 2
    with pytest.raises(ValueError, match='split must be 1, 2 or 3, got 4'):
        build(ann_file=tmpl, split=4)
    with pytest.raises(ValueError, match='holds {split} but no split'):
        build(ann_file=tmpl)
    with pytest.raises(ValueError, match='holds no {split} placeholder'):
        build(ann_file=str(tmp_path / 'train_split_1.txt'), split=1)


@pytest.mark.parametrize('name', ['ca2st_ucf101.py', 'cava_ucf101.py'])
def test_ucf101_config_split_field(tmp_path, name):
    from mmengine.config import Config

    from cast_mmaction.engine.checks import required_paths
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    assert cfg.split == 1
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.split == 1
        assert '{split}' in cfg[loader].dataset.ann_file
    cfg.merge_from_dict({'test_dataloader.dataset.split': 3})
    paths = dict((f, p) for f, p, _ in required_paths(cfg, 'test', 'x.pth'))
    assert paths['test_dataloader.dataset.ann_file'] == \
        'data/ucf101/ucf101_val_split_3_videos.txt'


@pytest.mark.parametrize('name,dataset,classes', [
    ('cava_ucf101.py', 'UCF101AudioDataset', 101),
    ('cava_kinetics_sounds.py', 'KineticsSoundsDataset', 31)])
def test_cava_configs_of_the_ca2st_paper_sets(name, dataset, classes):
    """CAVA on UCF-101 and Kinetics-Sounds: the CAVA model (AST + CLIP, one
    global link) with the set's dataset and classes, the data of the CA2ST
    config of the same set."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    other = Config.fromfile(osp.join(ROOT, 'configs',
                                     name.replace('cava_', 'ca2st_')))
    assert list(cfg.model.backbone.experts) == ['clip', 'audio']
    assert len(cfg.model.backbone.links) == 1
    assert cfg.model.cls_head.num_classes == classes
    assert cfg.model.data_preprocessor.blending.num_classes == classes
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds, ref = cfg[loader].dataset, other[loader].dataset
        assert ds.dataset_type == dataset
        for key in ('ann_file', 'data_prefix', 'bad_sample', 'split'):
            assert ds.get(key) == ref.get(key), (loader, key)
