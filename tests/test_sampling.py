"""Frame sampling as the authors' loaders sample (issue 13, part 3). Every
expected list below was worked out by hand from their formulas
(KHU-VLL/CAST dataset/kinetics.py, ssv2.py, epic.py), not computed by the
code under test."""
import numpy as np
import pytest

from cast_mmaction.datasets.transforms.epic import EpicSampleFrames
from cast_mmaction.datasets.transforms.sampling import (
    DenseSpanSample, SegmentSample, dense_test_indices, dense_train_indices,
    segment_indices)
from mmaction.registry import TRANSFORMS

# linspace(0, 64, 16) = 64 j / 15, truncated, the last clipped to 63
EXACT_64 = [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]


class _FixedRandint:
    """Stands in for np.random.randint: records the call, returns a value."""

    def __init__(self, value):
        self.value, self.calls = value, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.value


# -- Kinetics-400, training ---------------------------------------------------
def test_k400_train_short_video():
    # n = 20 <= 64: linspace(0, 20, 20 // 4 = 5) = 0, 5, 10, 15, 20, padded
    # with 11 x 20, clipped to 19
    assert dense_train_indices(20).tolist() == [0, 5, 10, 15, 19] + [19] * 11
    # n = 3 < stride: no linspace point, 16 x 3 clipped to 2
    assert dense_train_indices(3).tolist() == [2] * 16
    # n = 1
    assert dense_train_indices(1).tolist() == [0] * 16


def test_k400_train_exact_length(monkeypatch):
    # n = 64 = 16 x 4: the whole video, no random draw
    fake = _FixedRandint(None)
    monkeypatch.setattr(np.random, 'randint', fake)
    assert dense_train_indices(64).tolist() == EXACT_64
    assert not fake.calls


def test_k400_train_long_video(monkeypatch):
    # n = 300: end drawn from randint(64, 300); with end = 100 the span is
    # 36 .. 100: 36 + 64 j / 15, truncated, the last clipped to 99
    fake = _FixedRandint(100)
    monkeypatch.setattr(np.random, 'randint', fake)
    assert dense_train_indices(300).tolist() == [
        36, 40, 44, 48, 53, 57, 61, 65, 70, 74, 78, 82, 87, 91, 95, 99]
    assert fake.calls == [((64, 300), {})]
    # n = 65: the only end is 64, i.e. the first 64 frames
    monkeypatch.undo()
    np.random.seed(0)
    assert dense_train_indices(65).tolist() == EXACT_64


def test_k400_train_random_spans_stay_inside():
    np.random.seed(1)
    ends = set()
    for _ in range(300):
        idx = dense_train_indices(200)
        assert len(idx) == 16 and np.all(np.diff(idx) >= 4)
        assert 0 <= idx[0] and idx[-1] <= 199 and idx[-1] - idx[0] == 63
        ends.add(int(idx[-1]))
    assert min(ends) == 63 and max(ends) == 198  # end - 1 in [63, 198]


# -- Kinetics-400, testing ----------------------------------------------------
def test_k400_test_long_video():
    # n = 100: frames 0, 4, ..., 96 (25 of them); window starts
    # int(k x (25 - 16) / 4) = 0, 2, 4, 6, 9
    got = dense_test_indices(100, num_clips=5).reshape(5, 16)
    for k, s in enumerate([0, 2, 4, 6, 9]):
        assert got[k].tolist() == [4 * (s + j) for j in range(16)]
    assert got[0, 0] == 0 and got[-1, -1] == 96  # the ends of the video


def test_k400_test_exact_and_short():
    # n = 64: frames 0, 4, ..., 60 -> one window, five times
    assert dense_test_indices(64).reshape(5, 16).tolist() == [
        list(range(0, 64, 4))] * 5
    # n = 30: frames 0, 4, ..., 28 padded with 8 x 28
    assert dense_test_indices(30).reshape(5, 16).tolist() == [
        [0, 4, 8, 12, 16, 20, 24, 28] + [28] * 8] * 5
    assert dense_test_indices(1).tolist() == [0] * 80


def test_k400_one_view_is_the_middle_window():
    # n = 100, 25 frames at stride 4: start (25 - 16) // 2 = 4
    assert dense_test_indices(100, num_clips=1).tolist() == list(
        range(16, 77, 4))


def test_dense_span_sample_transform():
    t = TRANSFORMS.build(dict(type='DenseSpanSample', clip_len=16,
                              frame_interval=4, num_clips=5, test_mode=True))
    r = t(dict(total_frames=64, start_index=1, filename='v.mp4'))
    assert r['frame_inds'].tolist() == [i + 1 for i in range(0, 64, 4)] * 5
    assert (r['clip_len'], r['frame_interval'], r['num_clips']) == (16, 4, 5)
    r = DenseSpanSample()(dict(total_frames=64))
    assert r['frame_inds'].tolist() == EXACT_64 and r['num_clips'] == 1
    with pytest.raises(ValueError, match='test_mode'):
        DenseSpanSample(num_clips=5)
    with pytest.raises(ValueError, match='frame_interval=0'):
        DenseSpanSample(frame_interval=0)
    with pytest.raises(ValueError, match='no frames'):
        DenseSpanSample()(dict(total_frames=0, filename='empty.mp4'))


def test_k400_recipe_samples_like_the_authors():
    from mmengine.config import Config

    from conftest import ROOT
    cfg = Config.fromfile(f'{ROOT}/configs/cast_k400.py')
    for loader, clips, test in (('train_dataloader', 1, False),
                                ('val_dataloader', 1, True),
                                ('test_dataloader', 5, True)):
        s = cfg[loader].dataset.pipeline[1]
        assert s.type == 'DenseSpanSample'
        assert (s.clip_len, s.frame_interval) == (16, 4)
        assert s.get('num_clips', 1) == clips
        assert s.get('test_mode', False) == test


# -- SSv2 / EPIC-KITCHENS-100 segments ---------------------------------------
def test_segments_train(monkeypatch):
    # n = 50: part 50 // 16 = 3, frame 3 i + randint(3)
    offsets = np.array([0, 1, 2] * 5 + [2])
    fake = _FixedRandint(offsets)
    monkeypatch.setattr(np.random, 'randint', fake)
    assert segment_indices(50, 16).tolist() == [
        0, 4, 8, 9, 13, 17, 18, 22, 26, 27, 31, 35, 36, 40, 44, 47]
    assert fake.calls == [((3, ), dict(size=16))]
    monkeypatch.undo()
    np.random.seed(0)
    drawn = np.concatenate([segment_indices(50, 16) for _ in range(300)])
    assert drawn.max() == 47  # frames 48, 49 (50 % 16) are never drawn
    # n = 16: every frame; n = 10 < 16: frame 0 sixteen times (their loader)
    assert segment_indices(16, 16).tolist() == list(range(16))
    assert segment_indices(10, 16).tolist() == [0] * 16


STARTS_50 = [0, 3, 6, 9, 12, 15, 18, 21, 25, 28, 31, 34, 37, 40, 43, 46]
MIDDLES_50 = [1, 4, 7, 10, 14, 17, 20, 23, 26, 29, 32, 35, 39, 42, 45, 48]


def test_segments_test_views():
    # n = 50: tick 3.125; starts int(3.125 i), middles int(1.5625 + 3.125 i)
    assert segment_indices(50, 16, 2, True).reshape(2, 16).tolist() == [
        STARTS_50, MIDDLES_50]
    # n = 16: starts and middles are every frame
    assert segment_indices(16, 16, 2, True).reshape(2, 16).tolist() == [
        list(range(16))] * 2
    # n = 10: tick 0.625
    assert segment_indices(10, 16, 2, True).reshape(2, 16).tolist() == [
        [0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 6, 7, 8, 8, 9],
        [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 9, 9]]
    # one view (validation): the starts
    assert segment_indices(50, 16, 1, True).tolist() == STARTS_50


def test_ssv2_and_ek100_transforms_use_the_same_views():
    r = SegmentSample(16, num_clips=2, test_mode=True)(
        dict(total_frames=50, start_index=0))
    assert r['frame_inds'].tolist() == STARTS_50 + MIDDLES_50
    # EPIC: the same formula inside the action segment [first, last]
    e = EpicSampleFrames(16, num_clips=2, test_mode=True)
    got = e(dict(segment_frames=(1000, 1049)))['frame_inds']
    assert got.tolist() == [1000 + i for i in STARTS_50 + MIDDLES_50]
    np.random.seed(0)
    e = EpicSampleFrames(16)
    for _ in range(100):
        inds = e(dict(segment_frames=(1000, 1049)))['frame_inds'] - 1000
        assert np.all((inds >= 3 * np.arange(16))
                      & (inds <= 3 * np.arange(16) + 2))
