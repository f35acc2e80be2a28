"""EPIC-KITCHENS-100: dataset, segment sampling, mixup, metric, submission,
recipe, and an end-to-end train + test + submission run on CPU.

The videos are tiny untrimmed mp4 files written here: every frame shows its
frame number as 12 black/white 16 x 16 blocks, so a test can read back which
frames of the long video were sampled.
"""
import copy
import importlib.util
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from cast_mmaction.datasets.epic_kitchens import (EpicAnnotationError,
                                                  EpicKitchens100Dataset,
                                                  EpicSegmentError,
                                                  parse_timestamp,
                                                  read_epic_csv,
                                                  resolve_segment)
from cast_mmaction.datasets.transforms.epic import PyAVVideoReader
from cast_mmaction.evaluation.epic_metric import (EpicKitchensMetric,
                                                  action_topk_correct,
                                                  epic_metrics, load_scores,
                                                  topk_correct,
                                                  save_scores)
from _tools import tool_path

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'cast_ek100.py')
W, H = 64, 48

HEADER = ('narration_id,participant_id,video_id,narration_timestamp,'
          'start_timestamp,stop_timestamp,start_frame,stop_frame,narration,'
          'verb,verb_class,noun,noun_class,all_nouns,all_noun_classes')


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'ek100_submission', tool_path('ek100_submission'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------
# tiny media
# ---------------------------------------------------------------------------
def counter_frame(value):
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(12):
        r, c = divmod(b, 4)
        if (value >> b) & 1:
            img[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = 255
    return img


def read_counter(img):
    value = 0
    for b in range(12):
        r, c = divmod(b, 4)
        block = img[r * 16 + 4:(r + 1) * 16 - 4, c * 16 + 4:(c + 1) * 16 - 4]
        if block.mean() > 127:
            value |= 1 << b
    return value


def write_video(path, values, fps):
    os.makedirs(osp.dirname(path), exist_ok=True)
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (W, H))
    for v in values:
        w.write(counter_frame(int(v)))
    w.release()


def ts(sec):
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    return f'{int(h):02d}:{int(m):02d}:{s:05.2f}'


def seg_row(nid, vid, start, stop, verb, noun, fps=50):
    """An official-layout row; frames = round(timestamp x fps)."""
    return (f'{nid},{vid.split("_")[0]},{vid},{ts(start)},{ts(start)},'
            f'{ts(stop)},{round(start * fps)},{round(stop * fps)},'
            f'"take, then open",take,{verb},jar,{noun},"[\'jar\']",[{noun}]')


@pytest.fixture(scope='module')
def ek(tmp_path_factory):
    """Untrimmed videos + official-style train / val / test CSVs.

    P01_01: the original, 50 fps, 400 frames (frame k shows k).
    P02_01: a re-encode at 25 fps of a 50 fps original, 200 frames; frame
            j shows the original frame number 2 j.
    P03_01: 50 fps but only 150 frames (a truncated copy).
    """
    root = tmp_path_factory.mktemp('ek100')
    videos = root / 'videos'
    write_video(str(videos / 'P01/videos/P01_01.MP4'), range(400), 50)
    write_video(str(videos / 'P02/videos/P02_01.MP4'),
                [2 * j for j in range(200)], 25)
    write_video(str(videos / 'P03/videos/P03_01.MP4'), range(150), 50)
    rows = [
        seg_row('P01_01_0', 'P01_01', 0.6, 1.5, 3, 12),     # 30..75
        seg_row('P01_01_1', 'P01_01', 2.0, 2.4, 5, 7),      # 100..120
        seg_row('P01_01_2', 'P01_01', 5.0, 7.9, 1, 299),    # 250..395
        seg_row('P02_01_0', 'P02_01', 1.0, 3.0, 96, 0),     # 50..150
        seg_row('P02_01_1', 'P02_01', 5.02, 7.5, 0, 1),     # 251..375
        seg_row('P03_01_0', 'P03_01', 2.0, 3.6, 2, 2),      # 100..180 > 149
    ]
    train = root / 'train.csv'
    train.write_text('\n'.join([HEADER] + rows) + '\n')
    val = root / 'val.csv'
    val.write_text('\n'.join([HEADER] + rows[:5]) + '\n')
    test = root / 'test.csv'
    lines = ['uid,narration_id,participant_id,video_id,narration_timestamp,'
             'start_timestamp,stop_timestamp,start_frame,stop_frame']
    for uid, (nid, vid, a, b) in enumerate([
            ('P01_01_100', 'P01_01', 0.2, 1.0), ('P01_01_101', 'P01_01',
                                                 3.0, 4.0),
            ('P02_01_100', 'P02_01', 0.5, 2.5)]):
        lines.append(f'{uid},{nid},{vid.split("_")[0]},{vid},{ts(a)},{ts(a)},'
                     f'{ts(b)},{round(a * 50)},{round(b * 50)}')
    test.write_text('\n'.join(lines) + '\n')
    return dict(root=str(root), videos=str(videos), train=str(train),
                val=str(val), test=str(test))


def frames_pipeline(num_segments=16, num_clips=1, test_mode=False,
                    backend='decord'):
    return [dict(type='EpicVideoInit', backend=backend),
            dict(type='EpicSampleFrames', num_segments=num_segments,
                 num_clips=num_clips, test_mode=test_mode),
            dict(type='EpicDecode')]


def counters(results):
    return [read_counter(img) for img in results['imgs']]


# ---------------------------------------------------------------------------
# annotations
# ---------------------------------------------------------------------------
def test_official_csv_is_parsed(ek):
    items = read_epic_csv(ek['train'])
    assert [i['narration_id'] for i in items][:2] == ['P01_01_0', 'P01_01_1']
    first = items[0]
    assert (first['start_frame'], first['stop_frame']) == (30, 75)
    assert first['start_sec'] == pytest.approx(0.6)
    assert (first['verb_label'], first['noun_label']) == (3, 12)
    assert first['narration'] == 'take, then open'  # quoted comma kept
    assert first['csv_line'] == 2
    test = read_epic_csv(ek['test'])
    assert 'verb_label' not in test[0] and test[0]['uid'] == '0'
    assert parse_timestamp('01:02:03.50') == pytest.approx(3723.5)


def test_dataset_builds_paths_and_needs_test_mode_without_labels(ek):
    ds = EpicKitchens100Dataset(ek['train'], pipeline=[],
                                data_prefix=dict(video=ek['videos']))
    assert len(ds) == 6
    info = ds.get_data_info(3)
    assert info['filename'] == osp.join(ek['videos'],
                                        'P02/videos/P02_01.MP4')
    with pytest.raises(EpicAnnotationError, match='test_mode=True'):
        EpicKitchens100Dataset(ek['test'], pipeline=[],
                               data_prefix=dict(video=ek['videos']))
    assert len(EpicKitchens100Dataset(ek['test'], pipeline=[],
                                      data_prefix=dict(video=ek['videos']),
                                      test_mode=True)) == 3
    with pytest.raises(FileNotFoundError, match='video_path_tmpl'):
        EpicKitchens100Dataset(ek['train'], pipeline=[],
                               data_prefix=dict(video=ek['videos']),
                               video_path_tmpl='{video_id}.mp4')


BAD_ROWS = [
    ('P01_01_0,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,50,100,x,x,'
     '1,y', 'expected 15 fields'),
    ('P01_01_0,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,50,100,x,x,'
     'one,y,2,[],[]', r'verb_class must be an integer.*\'one\''),
    ('P01_01_0,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,50,100,x,x,'
     '97,y,2,[],[]', r'verb_class 97 is outside \[0, 96\]'),
    ('P01_01_0,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,50,100,x,x,'
     '1,y,300,[],[]', r'noun_class 300 is outside \[0, 299\]'),
    ('P01_01_0,P01,P01_01,00:00:01.00,00:00:02.00,00:00:01.00,100,50,x,x,'
     '1,y,2,[],[]', 'start_frame 100 is after stop_frame 50'),
    ('P01_01_0,P01,P01_01,00:00:01.00,00:00:aa,00:00:02.00,50,100,x,x,'
     '1,y,2,[],[]', 'start_timestamp: invalid timestamp'),
    ('P01_01_0,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,-5,100,x,x,'
     '1,y,2,[],[]', 'start_frame must be a non-negative integer'),
    ('P01_01_9,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,50,100,x,x,'
     '1,y,2,[],[]', "narration_id 'P01_01_9' repeats line 2"),
]


@pytest.mark.parametrize('row,msg', BAD_ROWS)
def test_malformed_rows_name_file_and_line(tmp_path, row, msg):
    good = ('P01_01_9,P01,P01_01,00:00:01.00,00:00:01.00,00:00:02.00,50,100,'
            'x,x,1,y,2,[],[]')
    path = tmp_path / 'bad.csv'
    path.write_text('\n'.join([HEADER, good, '', row]) + '\n')
    with pytest.raises(EpicAnnotationError,
                       match=rf'bad\.csv, line 4: {msg}'):
        read_epic_csv(str(path))


def test_malformed_headers_and_clip_lists(tmp_path):
    p = tmp_path / 'nohdr.csv'
    p.write_text('narration_id,participant_id,start_frame,stop_frame\n'
                 'a,P01,1,2\n')
    with pytest.raises(EpicAnnotationError,
                       match=r"nohdr\.csv, line 1: header lacks.*video_id"):
        read_epic_csv(str(p))
    p = tmp_path / 'clips.csv'
    p.write_text('P20_01_0,6,0\nP20_01_1,2,11,4\n')
    with pytest.raises(EpicAnnotationError,
                       match=r'clips\.csv, line 2: expected 3 fields'):
        read_epic_csv(str(p))
    p.write_text('P20_01_0,6,0\nP20_01_1,x,11\n')
    with pytest.raises(EpicAnnotationError,
                       match=r"clips\.csv, line 2: verb_class must be"):
        read_epic_csv(str(p))
    p = tmp_path / 'what.csv'
    p.write_text('a;b;c\n')
    with pytest.raises(EpicAnnotationError, match=r'what\.csv, line 1'):
        read_epic_csv(str(p))
    p = tmp_path / 'empty.csv'
    p.write_text('\n')
    with pytest.raises(EpicAnnotationError, match='empty'):
        read_epic_csv(str(p))


def test_authors_clip_list(tmp_path):
    clips = tmp_path / 'train'
    write_video(str(clips / 'P20_01_0.mp4'), range(500, 530), 30)
    write_video(str(clips / 'P20_01_1.mp4'), range(700, 712), 30)
    ann = tmp_path / 'train.csv'
    ann.write_text('P20_01_0,6,0\nP20_01_1,2,11\n')
    ds = EpicKitchens100Dataset(str(ann), frames_pipeline(16),
                                data_prefix=dict(video=str(clips)))
    info = ds.get_data_info(1)
    assert (info['narration_id'], info['video_id']) == ('P20_01_1', 'P20_01')
    assert (info['verb_label'], info['noun_label']) == (2, 11)
    out = ds[1]
    got = counters(out)
    assert out['segment_policy'] == 'whole'
    assert len(got) == 16 and all(700 <= c <= 711 for c in got)
    assert got == sorted(got)  # TSN: one frame per ordered part


# ---------------------------------------------------------------------------
# segment resolution and sampling
# ---------------------------------------------------------------------------
def test_resolve_segment_by_hand():
    # the file agrees with the annotation: frames as annotated
    assert resolve_segment(1000, 50.0, 100, 200, 2.0, 4.0) == (100, 200,
                                                               'frames')
    # re-encoded at 25 fps: through the timestamps
    assert resolve_segment(500, 25.0, 100, 200, 2.0, 4.0) == (50, 100,
                                                              'timestamps')
    # 59.94 fps annotation, 60 fps copy: 60 frames apart after 1000 s
    f0, f1 = round(1000 * 59.94), round(1002 * 59.94)
    assert resolve_segment(70000, 60.0, f0, f1, 1000.0, 1002.0)[:2] == (
        60000, 60120)
    # frames only: with ann_fps they are converted, without they are trusted
    assert resolve_segment(500, 25.0, 100, 200, ann_fps=50.0)[:2] == (50, 100)
    assert resolve_segment(500, 25.0, 100, 200)[:2] == (100, 200)
    # no segment: the whole clip
    assert resolve_segment(30, 30.0) == (0, 29, 'whole')
    # a segment shorter than one frame of the file still gets one frame
    assert resolve_segment(100, 10.0, None, None, 1.01, 1.04)[:2] == (10, 10)
    # the file ends inside the segment: clamped; starts after it: error
    assert resolve_segment(150, 50.0, 100, 180, 2.0, 3.6) == (
        100, 149, 'frames+clamped')
    with pytest.raises(EpicSegmentError, match=r'P03\.MP4.*after the end'):
        resolve_segment(150, 50.0, 300, 320, 6.0, 6.4, name='P03.MP4')


@pytest.mark.parametrize('backend', ['decord', 'pyav'])
def test_training_sampling_stays_inside_the_segment(ek, backend):
    ds = EpicKitchens100Dataset(ek['train'], frames_pipeline(16,
                                                             backend=backend),
                                data_prefix=dict(video=ek['videos']))
    np.random.seed(0)
    for idx in range(len(ds)):
        info = ds.get_data_info(idx)
        lo, hi = info['start_frame'], info['stop_frame']
        for _ in range(2):
            out = ds[idx]
            got = counters(out)
            assert len(got) == 16
            if info['video_id'] == 'P03_01':  # truncated copy: clamped
                assert out['segment_policy'] == 'frames+clamped'
                hi = 149
            assert all(lo <= c <= hi for c in got), (info['narration_id'],
                                                     got)
            assert got == sorted(got)
            if info['video_id'] == 'P02_01':  # re-encoded at 25 fps
                assert out['segment_policy'] == 'timestamps'
                assert out['avg_fps'] == pytest.approx(25.0)
            else:
                # the authors' TSN: frame i lies in the i-th part of
                # n // 16 frames (the last n % 16 frames are never drawn)
                n = hi - lo + 1
                part = n // 16
                for i, c in enumerate(got):
                    assert lo + i * part <= c <= lo + (i + 1) * part - 1 \
                        or n < 16


def test_test_views_are_fixed_starts_and_middles(ek):
    ds = EpicKitchens100Dataset(ek['val'], frames_pipeline(8, 2, True),
                                data_prefix=dict(video=ek['videos']),
                                test_mode=True)
    out = ds[2]  # P01_01_2: frames 250..395, 146 frames, tick 18.25
    tick = 146 / 8
    starts = [250 + int(np.floor(tick * i)) for i in range(8)]
    middles = [250 + int(np.floor(tick * (i + 0.5))) for i in range(8)]
    assert counters(out) == starts + middles
    assert (out['num_clips'], out['clip_len']) == (2, 8)
    again = ds[2]
    assert counters(again) == counters(out)
    # the re-encoded video: views inside 50..150 in original frame numbers
    got = counters(ds[3])
    assert all(50 <= c <= 150 for c in got) and len(got) == 16


def test_pyav_seeks_instead_of_decoding_the_whole_video(ek):
    path = osp.join(ek['videos'], 'P01/videos/P01_01.MP4')

    class Counting(PyAVVideoReader):
        decoded = 0

        def _seek(self, index):
            for frame in super()._seek(index):
                Counting.decoded += 1
                yield frame

    reader = Counting(path)
    assert (reader.num_frames, reader.fps) == (400, 50.0)
    wanted = [300, 305, 310, 390]
    frames = reader.get_frames(wanted)
    assert [read_counter(f) for f in frames] == wanted
    assert Counting.decoded < 200  # the first 300 frames were skipped
    reader.close()


def test_segment_past_the_end_of_the_video_is_an_error(ek, tmp_path):
    ann = tmp_path / 'late.csv'
    ann.write_text(HEADER + '\n' + seg_row('P03_01_7', 'P03_01', 6.0, 6.4, 1,
                                           1) + '\n')
    ds = EpicKitchens100Dataset(str(ann), frames_pipeline(4),
                                data_prefix=dict(video=ek['videos']))
    with pytest.raises(EpicSegmentError,
                       match=r'P03_01\.MP4 \(narration P03_01_7, .*late\.csv '
                       r'line 2\).*after the end of the video'):
        ds[0]


def test_pack_sets_verb_and_noun(ek):
    ds = EpicKitchens100Dataset(
        ek['train'], frames_pipeline(4) + [
            dict(type='Resize', scale=(32, 32), keep_ratio=False),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackEpicInputs')],
        data_prefix=dict(video=ek['videos']))
    out = ds[0]
    sample = out['data_samples']
    assert out['inputs'].shape == (1, 3, 4, 32, 32)
    assert int(sample.gt_verb) == 3 and int(sample.gt_noun) == 12
    assert sample.metainfo['narration_id'] == 'P01_01_0'


# ---------------------------------------------------------------------------
# mixup / cutmix on both labels
# ---------------------------------------------------------------------------
def _batch(b=4):
    from mmaction.structures import ActionDataSample
    imgs = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1, 1, 1)
    imgs = imgs.expand(b, 1, 3, 2, 8, 8).clone()
    samples = []
    for i in range(b):
        s = ActionDataSample()
        s.set_field(torch.tensor(i), 'gt_verb')
        s.set_field(torch.tensor(10 + i), 'gt_noun')
        samples.append(s)
    return imgs, samples


def _pairs(vec, offset):
    """{source sample: weight} from a mixed soft label."""
    nz = torch.nonzero(vec > 1e-6).reshape(-1).tolist()
    return {c - offset: float(vec[c]) for c in nz}


@pytest.mark.parametrize('mode', ['mixup', 'cutmix'])
def test_blending_mixes_both_labels_with_same_permutation_and_weight(mode):
    from cast_mmaction.models.data_preprocessors import VerbNounMixupCutmix
    blend = VerbNounMixupCutmix(
        num_verbs=5, num_nouns=20, prob=1.0,
        mixup_alpha=0.8 if mode == 'mixup' else 0.0,
        cutmix_alpha=1.0 if mode == 'cutmix' else 0.0)
    torch.manual_seed(3)
    mixed_any = False
    for _ in range(5):
        imgs, samples = _batch()
        out, samples = blend(imgs, samples)
        assert blend.last['mode'] == mode
        for i, s in enumerate(samples):
            assert s.gt_verb.shape == (5, ) and s.gt_noun.shape == (20, )
            verb = _pairs(s.gt_verb, 0)
            noun = _pairs(s.gt_noun, 10)
            assert verb.keys() == noun.keys()  # same partner
            for src in verb:
                assert verb[src] == pytest.approx(noun[src], abs=1e-6)
            assert sum(verb.values()) == pytest.approx(1.0)
            # the clip is made of the same sources in the same proportion
            x = out[i]
            if mode == 'mixup':
                expect = sum(w * (src + 1) for src, w in verb.items())
                assert torch.allclose(x, torch.full_like(x, expect),
                                      atol=1e-5)
            else:
                for src, w in verb.items():
                    frac = float((x == src + 1).float().mean())
                    assert frac == pytest.approx(w, abs=1e-6)
            mixed_any |= len(verb) == 2
    assert mixed_any


def test_blending_probability_and_head_loss_on_soft_labels():
    from cast_mmaction.models.data_preprocessors import VerbNounMixupCutmix
    from cast_mmaction.utils import build_model
    off = VerbNounMixupCutmix(num_verbs=5, num_nouns=20, prob=0.0)
    imgs, samples = _batch()
    out, samples = off(imgs, samples)
    assert off.last['mode'] == 'none' and torch.equal(out, imgs)
    assert [int(s.gt_verb.argmax()) for s in samples] == [0, 1, 2, 3]
    assert all(float(s.gt_noun.max()) == 1.0 for s in samples)
    # smoothed CE on soft labels, verb and noun
    head = build_model(dict(type='CASTVerbNounHead', num_verbs=5,
                            num_nouns=20, in_channels=8,
                            label_smooth_eps=0.1))
    torch.manual_seed(0)
    feats = (torch.randn(4, 8), torch.randn(4, 8))
    mix = VerbNounMixupCutmix(num_verbs=5, num_nouns=20, prob=1.0,
                              cutmix_alpha=0.0)
    _, samples = mix(*_batch())
    losses = head.loss(feats, samples)
    verb, noun = head(feats)
    tv = torch.stack([s.gt_verb for s in samples]) * 0.9 + 0.1 / 5
    tn = torch.stack([s.gt_noun for s in samples]) * 0.9 + 0.1 / 20
    ref_v = -(tv * verb.log_softmax(-1)).sum(-1).mean()
    ref_n = -(tn * noun.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(losses['loss_verb'], ref_v)
    assert torch.allclose(losses['loss_noun'], ref_n)


# ---------------------------------------------------------------------------
# metric, by hand
# ---------------------------------------------------------------------------
FLAT = [0.3, 0.25, 0.2, 0.15, 0.06, 0.04]
# sample A: verb 0 (rank 1), noun 1 (rank 1)
# sample B: verb 2 (rank 2), noun 0 (rank 1); pair 0.25 x 0.4 = 0.1 has one
#           better pair (0.3 x 0.4) -> in the action top-5
# sample C: verb 5 (rank 6), noun 4 (rank 5)
# sample D: verb 2 (rank 3), noun 2 (rank 3): both in their top-5, but 10
#           pairs beat 0.2 x 0.2 -> not in the action top-5
VERB = [[0.5, 0.2, 0.1, 0.1, 0.06, 0.04],
        [0.12, 0.3, 0.25, 0.2, 0.08, 0.05], FLAT, FLAT]
NOUN = [[0.05, 0.6, 0.15, 0.1, 0.06, 0.04],
        [0.4, 0.28, 0.12, 0.1, 0.06, 0.04], FLAT, FLAT]
YV, YN = [0, 2, 5, 2], [1, 0, 4, 2]
EXPECTED = dict(verb_top1=1 / 4, verb_top5=3 / 4, noun_top1=2 / 4,
                noun_top5=4 / 4, action_top1=1 / 4, action_top5=2 / 4,
                # verb classes {0: 1/1, 2: 0/2, 5: 0/1}
                verb_mean_class_acc=1 / 3,
                # noun classes {1: 1, 0: 1, 4: 0, 2: 0}
                noun_mean_class_acc=2 / 4)


def test_tools_test_headline_is_the_action_top1():
    """tools/test.py prints one top-1 line first: for EK100 the action
    top-1, not the verb top-1 (the first key of EpicKitchensMetric, which
    it printed as 'top-1 accuracy'); a plain AccMetric's acc/top1 as
    before."""
    from _tools import load_tool
    tool = load_tool('test')
    ek = {'ek100/verb_top1': 0.6, 'ek100/verb_top5': 0.9,
          'ek100/noun_top1': 0.5, 'ek100/noun_top5': 0.8,
          'ek100/action_top1': 0.4, 'ek100/action_top5': 0.7,
          'ek100/bad_samples': 0}
    lines = tool.summarise(ek)
    assert lines[0] == 'action top-1 accuracy: 40.00%'
    assert '  ek100/verb_top1: 0.6000' in lines
    assert tool.summarise({'acc/top1': 0.25, 'acc/top5': 1.0})[0] == \
        'top-1 accuracy: 25.00%'
    assert tool.summarise({'acc/mean1': 0.5})[0] == '  acc/mean1: 0.5000'


def test_metric_values_by_hand():
    got = epic_metrics(VERB, NOUN, YV, YN)
    assert got == pytest.approx(EXPECTED)
    assert action_topk_correct(VERB, NOUN, YV, YN, 5).tolist() == [
        True, True, False, False]
    # k = 11 admits sample D (10 better pairs) but not C (verb rank 6)
    assert action_topk_correct(VERB, NOUN, YV, YN, 11).tolist() == [
        True, True, False, True]


def _stable_rank_topk(scores, labels, k):
    """The reference: rank by a stable sort of -scores (ties: the lower
    index first)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1,
                       kind='stable')
    return np.array([list(o).index(y) < k for o, y in zip(order, labels)])


def test_ties_rank_as_a_stable_sort_and_nan_scores_count_as_wrong():
    """Equal scores rank the lower class index first, pairs the lower
    v * num_nouns + n (constant scores scored 100 % top-1 and top-5, since
    only strictly higher scores counted against a label); a sample with NaN
    scores is wrong (every comparison with NaN is False: a diverged model
    scored 100 %), and mean-class accuracy agrees."""
    rng = np.random.default_rng(0)
    # coarse values: many ties
    v = rng.integers(0, 4, (300, 7)).astype(np.float64) / 4
    n = rng.integers(0, 4, (300, 9)).astype(np.float64) / 4
    yv, yn = rng.integers(0, 7, 300), rng.integers(0, 9, 300)
    for k in (1, 2, 5):
        assert (topk_correct(v, yv, k) == _stable_rank_topk(v, yv, k)).all()
        pairs = (v[:, :, None] * n[:, None, :]).reshape(300, -1)
        want = _stable_rank_topk(pairs, yv * 9 + yn, k)
        assert (action_topk_correct(v, n, yv, yn, k) == want).all(), k
    flat = np.full((8, 10), 0.1)
    labels = np.arange(8)
    assert topk_correct(flat, labels, 1).tolist() == [True] + [False] * 7
    assert topk_correct(flat, labels, 5).mean() == 5 / 8
    got = epic_metrics(np.full((8, 10), np.nan), np.full((8, 12), np.nan),
                       labels, labels)
    assert all(value == 0 for value in got.values()), got
    one_bad = np.array(VERB, dtype=np.float64)
    one_bad[0, 0] = np.nan  # sample A was right on every metric
    got = epic_metrics(one_bad, NOUN, YV, YN)
    assert got['verb_top1'] == EXPECTED['verb_top1'] - 1 / 4
    assert got['action_top5'] == EXPECTED['action_top5'] - 1 / 4


def test_metric_through_data_samples_and_scores_file(tmp_path):
    path = str(tmp_path / 'scores.pkl')
    metric = EpicKitchensMetric(scores_file=path)
    samples = [dict(narration_id=f'P01_01_{i}', pred_verb=torch.tensor(v),
                    pred_noun=torch.tensor(n), gt_verb=torch.tensor(yv),
                    gt_noun=torch.tensor(yn))
               for i, (v, n, yv, yn) in enumerate(zip(VERB, NOUN, YV, YN))]
    metric.process({}, samples[:2])
    metric.process({}, samples[2:] + samples[:1])  # a padded duplicate
    res = metric.evaluate(size=5)
    assert res == pytest.approx({f'ek100/{k}': v
                                 for k, v in EXPECTED.items()})
    ids, verb, noun = load_scores(path)
    assert ids == [f'P01_01_{i}' for i in range(4)]
    assert np.allclose(verb, VERB) and np.allclose(noun, NOUN)
    # unlabelled: only scores
    metric = EpicKitchensMetric(scores_file=path)
    metric.process({}, [dict(narration_id='x', pred_verb=torch.ones(3),
                             pred_noun=torch.ones(4))])
    assert metric.evaluate(size=1) == {}
    assert load_scores(path)[0] == ['x']


def test_metric_without_results_names_the_problem(tmp_path):
    """An evaluation that saw no segment stops with a one-line error
    instead of NumPy's 'need at least one array to stack' (MMEngine's
    BaseMetric only warns and calls compute_metrics anyway); no scores file
    is written."""
    path = tmp_path / 'scores.pkl'
    metric = EpicKitchensMetric(scores_file=str(path))
    with pytest.raises(ValueError) as err:
        metric.evaluate(size=0)
    assert str(err.value) == (
        'EpicKitchensMetric: no segments to score (empty results): the '
        'evaluated dataloader yielded no samples; check the val / test '
        "dataloader's dataset (ann_file) and sampler")
    assert not path.exists()


# ---------------------------------------------------------------------------
# submission format
# ---------------------------------------------------------------------------
def test_submission_format_and_validation(tmp_path):
    tool = _load_tool()
    rng = np.random.default_rng(0)
    ids = ['P01_101_0', 'P01_101_1']
    verb, noun = rng.random((2, 97)), rng.random((2, 300))
    sub = tool.make_submission(ids, verb, noun, 2, 3, 4)
    assert (sub['version'], sub['challenge']) == ('0.2', 'action_recognition')
    assert (sub['sls_pt'], sub['sls_tl'], sub['sls_td']) == (2, 3, 4)
    entry = sub['results']['P01_101_1']
    assert sorted(entry['verb'], key=int) == [str(i) for i in range(97)]
    assert len(entry['noun']) == 300
    assert entry['noun']['299'] == pytest.approx(noun[1, 299], rel=1e-5)
    out = str(tmp_path / 'sub.json')
    paths = tool.write_submission(sub, out, ids, make_zip=True)
    assert tool.read_submission(paths[1], ids)['results'].keys() == set(ids)

    def broken(fn):
        bad = copy.deepcopy(sub)
        fn(bad)
        return bad

    cases = [
        (lambda s: s.update(version='0.1'), "'version' must be '0.2'"),
        (lambda s: s.update(challenge='action_anticipation'), 'challenge'),
        (lambda s: s.pop('sls_tl'), "'sls_tl' must be an integer 0-5"),
        (lambda s: s.update(sls_pt=6), "'sls_pt'"),
        (lambda s: s['results'].pop('P01_101_0'), '1 narration ids of the '
         'test split are missing'),
        (lambda s: s['results'].update(P09_1=s['results']['P01_101_0']),
         'not in the test split'),
        (lambda s: s['results']['P01_101_0']['verb'].pop('96'),
         r'\[\'verb\'\] must have one score for each class.*\'96\''),
        (lambda s: s['results']['P01_101_0']['noun'].update({'0': 'x'}),
         'must be a finite number'),
    ]
    for fn, msg in cases:
        bad_path = str(tmp_path / 'bad.json')
        with open(bad_path, 'w') as f:
            json.dump(broken(fn), f)
        with pytest.raises(tool.SubmissionError, match=msg):
            tool.read_submission(bad_path, ids)


def test_submission_tool_reports_bad_inputs_without_a_traceback(
        tmp_path, capsys):
    """A missing or malformed file given to the tool is one ``error:`` line
    naming the option and the file (exit 2), not a Python traceback."""
    tool = _load_tool()
    ids = ['P01_101_0', 'P01_101_1']
    csv_path = tmp_path / 'test.csv'
    csv_path.write_text(
        'narration_id,participant_id,video_id,narration_timestamp,'
        'start_timestamp,stop_timestamp,start_frame,stop_frame\n' +
        ''.join(f'{i},P01,P01_101,00:00:00.00,00:00:00.00,00:00:01.00,1,50\n'
                for i in ids))
    good = tool.make_submission(ids, np.zeros((2, 97)), np.zeros((2, 300)),
                                1, 1, 1)
    old = tmp_path / 'old.json'
    old.write_text(json.dumps(dict(good, version='0.1')))
    short = tmp_path / 'short.pkl'
    save_scores(str(short), ids[:1], np.zeros((1, 97)), np.zeros((1, 300)))
    sls = ['--sls-pt', '1', '--sls-tl', '1', '--sls-td', '1']
    missing = str(tmp_path / 'missing')
    cases = [
        (['--validate', missing + '.json'], ['--validate', 'missing.json']),
        (['--validate', str(old)], ['--validate', 'old.json',
                                    "'version' must be '0.2'"]),
        (['--validate', str(old), '--test-csv', missing + '.csv'],
         ['--test-csv', 'missing.csv', 'not found']),
        ([missing + '.py', '--validate', str(old)], ['CONFIG',
                                                     'missing.py']),
        (['--scores', missing + '.pkl', '--test-csv', str(csv_path)] + sls,
         ['--scores', 'missing.pkl', 'not found']),
        (['--scores', str(short), '--test-csv', str(csv_path),
          '--out', str(tmp_path / 'sub.json')] + sls, ['--scores', 'short.pkl', 'narration ids of the test split are '
          'missing']),
    ]
    for argv, words in cases:
        assert tool.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith('error: ') and 'Traceback' not in err, err
        for w in words:
            assert w in err, (argv, err)
    assert not osp.exists(tmp_path / 'sub.json')  # checked before writing


# ---------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------
def test_config_is_the_published_recipe():
    from mmengine.config import Config
    from cast_mmaction.models.presets import cast_recognizer_cfg
    cfg = Config.fromfile(CONFIG)
    model = cfg.model.to_dict()
    ref = cast_recognizer_cfg(
        composition=True, drop_path_rate=0.2, label_smooth_eps=0.1,
        clip_pretrained=cfg.clip_weights, vmae_pretrained=cfg.vmae_weights,
        data_preprocessor=model['data_preprocessor'])
    # plus the CPU speed-ups (a no-op on a GPU; models/speedups.py)
    ref['backbone']['speedups'] = dict(preset='cpu')
    assert json.loads(json.dumps(model)) == json.loads(json.dumps(ref))
    blend = model['data_preprocessor']['blending']
    assert (blend['prob'], blend['mixup_alpha'], blend['switch_prob']) == (
        0.9, 0.8, 0.0)
    assert cfg.train_cfg.max_epochs == 50
    assert cfg.optim_wrapper.accumulative_counts == 4
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1.5e-3)
    assert cfg.optim_wrapper.constructor == \
        'CASTLayerDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.75
    aug = [t for t in cfg.train_pipeline if t.type == 'VideoRandAugment']
    assert aug and aug[0].config_str.startswith('rand-m7-n4')
    samp = cfg.train_pipeline[1]
    assert (samp.type, samp.num_segments) == ('EpicSampleFrames', 16)
    tsamp = cfg.test_pipeline[1]
    assert (tsamp.num_clips, tsamp.test_mode) == (2, True)
    assert any(t.type == 'ThreeCrop' for t in cfg.test_pipeline)


def test_config_model_matches_cast_composition_dump():
    from mmengine.config import Config
    from cast_mmaction.parity import check_dump
    model = Config.fromfile(CONFIG).model.to_dict()
    rows = check_dump(osp.join(ROOT, 'tests', 'fixtures', 'cast_composition'),
                      model_cfg=model)
    names = {r[0] for r in rows}
    assert {'verb', 'noun'} <= names
    assert all(r[3] for r in rows), rows


# ---------------------------------------------------------------------------
# end to end: train + val + test + submission through the Runner on CPU
# ---------------------------------------------------------------------------
def _shrink(cfg, ek, work_dir):
    """The shipped config with a tiny CAST, tiny frames and the test data."""
    bb = cfg.model.backbone
    bb.update(num_frames=4, img_size=32)
    bb.experts.clip.update(embed_dim=32, depth=1, num_heads=2, pretrained=None)
    bb.experts.vmae.update(embed_dim=32, depth=1, num_heads=2,
                           pretrained=None)
    cfg.model.cls_head.in_channels = 32
    sizes = {(-1, 256): (-1, 40), (224, 224): (32, 32), (-1, 224): (-1, 32)}
    for pipe in (cfg.train_pipeline, cfg.val_pipeline, cfg.test_pipeline):
        for t in pipe:
            if t.get('num_segments'):
                t.num_segments = 4
            if 'scale' in t:
                t.scale = sizes[tuple(t.scale)]
            if t.get('crop_size') == 224:
                t.crop_size = 32
    for name, csv, pipe in (('train', ek['train'], cfg.train_pipeline),
                            ('val', ek['val'], cfg.val_pipeline),
                            ('test', ek['val'], cfg.test_pipeline)):
        dl = cfg[f'{name}_dataloader']
        dl.update(batch_size=2, num_workers=0, persistent_workers=False)
        dl.dataset.update(ann_file=csv, pipeline=pipe,
                          data_prefix=dict(video=ek['videos']))
    cfg.ek100_test_csv = ek['test']
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.optim_wrapper.type = 'OptimWrapper'  # no fp16 on CPU
    cfg.optim_wrapper.accumulative_counts = 2
    cfg.default_hooks.logger.interval = 1
    cfg.test_evaluator.scores_file = osp.join(work_dir, 'val_scores.pkl')
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    return cfg


def test_end_to_end_train_test_submission(ek, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    tool = _load_tool()
    work = str(tmp_path / 'work')
    cfg = _shrink(Config.fromfile(CONFIG), ek, work)
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    runner.train()
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    metrics = runner.test()
    assert set(metrics) >= {f'ek100/{k}' for k in EXPECTED}
    # the runner's numbers are the metric of the scores it wrote (2 clips x
    # 3 crops averaged into one distribution per segment) and the CSV labels
    ids, verb, noun = load_scores(osp.join(work, 'val_scores.pkl'))
    rows = read_epic_csv(ek['val'])
    assert ids == [r['narration_id'] for r in rows]
    assert np.allclose(verb.sum(1), 1, atol=1e-5)
    assert np.allclose(noun.sum(1), 1, atol=1e-5)
    again = epic_metrics(verb, noun, [r['verb_label'] for r in rows],
                         [r['noun_label'] for r in rows])
    # the recipe's BadSampleAwareMetric adds the count of unreadable videos
    assert metrics.pop('ek100/bad_samples') == 0
    assert metrics == pytest.approx({f'ek100/{k}': v
                                     for k, v in again.items()})

    cfg_path = str(tmp_path / 'tiny_ek100.py')
    cfg.dump(cfg_path)
    out = str(tmp_path / 'submission.json')
    assert tool.main([cfg_path, ckpt, '--sls-pt', '2', '--sls-tl', '3',
                      '--sls-td', '4', '--out', out, '--zip', '--work-dir',
                      str(tmp_path / 'sub_work')]) == 0
    ids = [r['narration_id'] for r in read_epic_csv(ek['test'])]
    sub = tool.read_submission(out, ids)
    assert set(sub['results']) == set(ids)
    for entry in sub['results'].values():
        # softmax averaged over 2 clips x 3 crops: a distribution
        assert sum(entry['verb'].values()) == pytest.approx(1.0, abs=1e-4)
        assert sum(entry['noun'].values()) == pytest.approx(1.0, abs=1e-4)
    assert tool.read_submission(out[:-5] + '.zip', ids)
    # the same submission from the score file that run wrote
    out2 = str(tmp_path / 'from_scores.json')
    assert tool.main(['--scores', str(tmp_path / 'sub_work' /
                                      'ek100_test_scores.pkl'),
                      '--test-csv', ek['test'], '--sls-pt', '2', '--sls-tl',
                      '3', '--sls-td', '4', '--out', out2]) == 0
    assert tool.read_submission(out2, ids) == sub
    with pytest.raises(SystemExit):  # the supervision levels are required
        tool.main(['--scores', str(tmp_path / 'sub_work' /
                                   'ek100_test_scores.pkl'),
                   '--test-csv', ek['test'], '--out', out2])
    assert tool.main(['--validate', out, '--test-csv', ek['test']]) == 0


def test_head_reads_gt_label_pairs_and_names_missing_labels():
    from mmaction.structures import ActionDataSample
    from cast_mmaction.utils import build_model
    head = build_model(dict(type='CASTVerbNounHead', num_verbs=5,
                            num_nouns=6, in_channels=4))
    feats = (torch.randn(2, 4), torch.randn(2, 4))
    pairs = [ActionDataSample().set_gt_label([1, 2]),
             ActionDataSample().set_gt_label([0, 3])]
    fields = []
    for v, n in ((1, 2), (0, 3)):
        s = ActionDataSample()
        s.set_field(torch.tensor(v), 'gt_verb')
        s.set_field(torch.tensor(n), 'gt_noun')
        fields.append(s)
    a, b = head.loss(feats, pairs), head.loss(feats, fields)
    assert torch.allclose(a['loss_verb'], b['loss_verb'])
    assert torch.allclose(a['loss_noun'], b['loss_noun'])
    with pytest.raises(KeyError, match="no 'gt_verb'.*PackEpicInputs"):
        head.loss(feats, [ActionDataSample(), ActionDataSample()])


def _verb_noun_runner(ek, dataset, num_verbs=97, num_nouns=300,
                      data_preprocessor=None):
    from types import SimpleNamespace
    from cast_mmaction.utils import build_model
    head = build_model(dict(type='CASTVerbNounHead', num_verbs=num_verbs,
                            num_nouns=num_nouns, in_channels=4))
    model = SimpleNamespace(cls_head=head)
    if data_preprocessor is not None:
        model.data_preprocessor = build_model(data_preprocessor)
    loader = SimpleNamespace(dataset=dataset)
    return SimpleNamespace(model=model,
                           train_dataloader=loader, test_dataloader=loader,
                           _val_loop=None)


def test_startup_check_compares_head_and_dataset_verb_noun_counts(ek):
    """The dataset bounds its labels by its own num_verbs / num_nouns; a
    head with fewer classes used to fail inside the loss (one_hot), one with
    more trained classes no sample has, silently. The start-up check now
    refuses either, naming both config fields."""
    from mmaction.registry import DATASETS
    from cast_mmaction.datasets.robust import RobustDataset
    from cast_mmaction.engine.hooks import StartupCheckHook
    hook = StartupCheckHook()
    args = dict(ann_file=ek['train'], pipeline=[],
                data_prefix=dict(video=ek['videos']), check_files=False)
    flat = RobustDataset(dataset_type='EpicKitchens100Dataset', **args)
    hook.before_train(_verb_noun_runner(ek, flat))  # 97 / 300 both sides
    with pytest.raises(ValueError) as err:  # head smaller than the labels
        hook.before_train(_verb_noun_runner(ek, flat, num_verbs=50))
    assert str(err.value) == (
        'model.cls_head.num_verbs=50 but train_dataloader.dataset.num_verbs'
        '=97 (EpicKitchens100Dataset checks its verb_class labels against '
        'it): set model.cls_head.num_verbs and train_dataloader.dataset.'
        'num_verbs to the same number of verb classes (EPIC-KITCHENS-100 '
        'has 97).')
    with pytest.raises(ValueError, match=r'model.cls_head.num_nouns=301 but '
                       r'test_dataloader.dataset.num_nouns=300 '):
        hook.before_test(_verb_noun_runner(ek, flat, num_nouns=301))
    # the nested form and MMEngine's wrappers name the nested field
    nested = DATASETS.build(dict(
        type='RepeatDataset', times=2, dataset=dict(
            type='RobustDataset', dataset=dict(
                type='EpicKitchens100Dataset', num_nouns=400, **args))))
    with pytest.raises(ValueError, match=r'model.cls_head.num_nouns=300 but '
                       r'train_dataloader.dataset.dataset.dataset.num_nouns='
                       r'400 '):
        hook.before_train(_verb_noun_runner(ek, nested))
    # an unwrapped dataset is checked as well
    bare = EpicKitchens100Dataset(num_verbs=120, **args)
    with pytest.raises(ValueError, match=r'train_dataloader.dataset.'
                       r'num_verbs=120'):
        hook.before_train(_verb_noun_runner(ek, bare))
    hook.before_train(_verb_noun_runner(ek, bare, num_verbs=120))


def test_head_smaller_than_the_dataset_stops_training_before_it_starts(
        ek, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = _shrink(Config.fromfile(CONFIG), ek, str(tmp_path / 'work'))
    cfg.model.cls_head.num_nouns = 200
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r'^model.cls_head.num_nouns=200 but '
                       r'train_dataloader.dataset.num_nouns=300 '):
        runner.train()
    assert runner.iter == 0


def _preprocessor(blending, av=False):
    if av:
        return dict(type='AudioVisualDataPreprocessor', blending=blending)
    return dict(type='ActionDataPreprocessor', format_shape='NCTHW',
                blending=blending)


def test_startup_check_compares_blending_and_head_verb_noun_counts(ek):
    """The verb / noun mixup one-hots the labels into vectors of its own
    num_verbs / num_nouns; a head with other counts used to fail only in
    the first iteration (one_hot, or a tensor-size error in the loss). The
    start-up check now refuses it before training, naming both fields."""
    from types import SimpleNamespace
    from cast_mmaction.engine.hooks import StartupCheckHook
    hook = StartupCheckHook()
    args = dict(ann_file=ek['train'], pipeline=[],
                data_prefix=dict(video=ek['videos']), check_files=False)
    ds = EpicKitchens100Dataset(**args)  # 97 / 300
    vn = dict(type='VerbNounMixupCutmix', num_verbs=97, num_nouns=300)
    hook.before_train(_verb_noun_runner(ek, ds, data_preprocessor=(
        _preprocessor(vn))))  # 97 / 300 everywhere
    small = dict(vn, num_verbs=50)
    runner = _verb_noun_runner(ek, ds, data_preprocessor=_preprocessor(small))
    with pytest.raises(ValueError) as err:
        hook.before_train(runner)
    assert str(err.value) == (
        'model.data_preprocessor.blending.num_verbs=50 but model.cls_head.'
        'num_verbs=97: set them to the same number of verb classes '
        '(EPIC-KITCHENS-100 has 97); VerbNounMixupCutmix turns the verb '
        'labels into vectors of its num_verbs, which the head\'s loss reads '
        'against its num_verbs scores.')
    # testing does not blend: a test run is not stopped for it
    hook.before_test(runner)
    # a wrapped model (DDP: .module) is read through
    from cast_mmaction.engine.hooks.startup_check_hook import check_blending
    with pytest.raises(ValueError, match=r'blending.num_verbs=50 '):
        check_blending(SimpleNamespace(module=runner.model))
    # the audio-visual mixup with verb / noun counts; a larger count too
    av = dict(type='AudioVisualMixup', num_verbs=97, num_nouns=301)
    with pytest.raises(ValueError, match=r'^model.data_preprocessor.blending'
                       r'.num_nouns=301 but model.cls_head.num_nouns=300: .*'
                       r'AudioVisualMixup turns the noun labels'):
        hook.before_train(_verb_noun_runner(
            ek, ds, data_preprocessor=_preprocessor(av, av=True)))
    # no blending, or no data preprocessor: nothing to compare
    hook.before_train(_verb_noun_runner(ek, ds, data_preprocessor=(
        _preprocessor(None))))
    hook.before_train(_verb_noun_runner(ek, ds))


def test_blending_unlike_the_head_stops_training_before_it_starts(
        ek, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = _shrink(Config.fromfile(CONFIG), ek, str(tmp_path / 'work'))
    cfg.model.data_preprocessor.blending.num_verbs = 50
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r'^model.data_preprocessor.blending'
                       r'.num_verbs=50 but model.cls_head.num_verbs=97: '):
        runner.train()
    assert runner.iter == 0


def test_startup_check_refuses_a_blending_of_the_other_label_kind(ek):
    """A single-label Mixup on a verb / noun head mixes gt_label only, not
    the gt_verb / gt_noun the head reads; a verb / noun mixup on a
    single-label head reads gt_verb / gt_noun the data lacks. Both failed
    only in the first iteration; the start-up check names the fields."""
    from types import SimpleNamespace
    from cast_mmaction.engine.hooks import StartupCheckHook
    from cast_mmaction.engine.hooks.startup_check_hook import check_blending
    from cast_mmaction.utils import build_model
    hook = StartupCheckHook()
    ds = EpicKitchens100Dataset(ann_file=ek['train'], pipeline=[],
                                data_prefix=dict(video=ek['videos']),
                                check_files=False)
    # CASTVerbNounHead's num_classes is its num_verbs: 97 is refused too
    mix = dict(type='MixupBlending', num_classes=97, alpha=0.8)
    with pytest.raises(ValueError) as err:
        hook.before_train(_verb_noun_runner(ek, ds, data_preprocessor=(
            _preprocessor(mix))))
    assert str(err.value) == (
        'model.data_preprocessor.blending.num_classes=97 (MixupBlending mixes '
        'single labels, gt_label) but model.cls_head (CASTVerbNounHead) '
        'predicts verbs and nouns (num_verbs=97 / num_nouns=300) from '
        'gt_verb / gt_noun, which MixupBlending does not mix: use '
        'VerbNounMixupCutmix (or AudioVisualMixup with num_verbs and '
        'num_nouns instead of num_classes) with the head\'s counts.')
    with pytest.raises(ValueError, match=r'^model.data_preprocessor.blending'
                       r'.num_classes=97 \(AudioVisualMixup mixes single'):
        hook.before_train(_verb_noun_runner(ek, ds, data_preprocessor=(
            _preprocessor(dict(type='AudioVisualMixup', num_classes=97),
                          av=True))))
    head = build_model(dict(type='CASTHead', num_classes=97, in_channels=4))
    vn = build_model(_preprocessor(dict(type='VerbNounMixupCutmix')))
    with pytest.raises(ValueError) as err:
        check_blending(SimpleNamespace(cls_head=head, data_preprocessor=vn))
    assert str(err.value) == (
        'model.data_preprocessor.blending (VerbNounMixupCutmix) mixes verb / '
        'noun labels (num_verbs=97 / num_nouns=300) but model.cls_head '
        '(CASTHead) is a single-label head (num_classes=97): give '
        'model.data_preprocessor.blending num_classes=97 instead '
        '(AudioVisualMixup, or MMAction2\'s MixupBlending / CutmixBlending), '
        'or use a verb / noun head (CASTVerbNounHead).')


def test_tools_test_dump_and_cfg_options_of_the_evaluator_together():
    """--dump (one more evaluator) with --cfg-options
    test_evaluator.scores_file=... (docs/ek100.md) for a submission and an
    ensemble from one test run: the override reaches the EPIC metric (it
    met the list --dump had made: TypeError)."""
    from mmengine.config import Config
    from _tools import load_tool
    tool = load_tool('test')
    args = tool.parse_args([CONFIG, 'ckpt.pth', '--dump', 'p.pkl',
                            '--cfg-options',
                            'test_evaluator.scores_file=v.pkl'])
    cfg = tool.merge_args(Config.fromfile(CONFIG), args)
    metric, dump = cfg.test_evaluator
    assert metric['scores_file'] == 'v.pkl'
    assert metric['metric_type'] == 'EpicKitchensMetric'
    assert dump == dict(type='DumpResults', out_file_path='p.pkl')
