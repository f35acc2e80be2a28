"""VideoRandAugment: timm's rand-m7-n4-mstd0.5-inc1 drawn once per clip."""
import numpy as np
import pytest

from cast_mmaction.datasets.transforms.rand_augment import (
    RAND_INCREASING_OPS, RAND_OPS, VideoRandAugment, apply_op, level_to_arg,
    parse_config_str)
from mmaction.registry import TRANSFORMS

# ops that are the identity at magnitude 0
NEUTRAL_AT_ZERO = ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel',
                   'TranslateYRel', 'SolarizeIncreasing', 'SolarizeAdd',
                   'ColorIncreasing', 'ContrastIncreasing',
                   'BrightnessIncreasing', 'SharpnessIncreasing')


def clip(t=6, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    # different frames: the content moves to the right
    return [np.roll(base, k, axis=1) for k in range(t)]


def test_registered_and_published_policy():
    t = TRANSFORMS.build(dict(type='VideoRandAugment',
                              config_str='rand-m7-n4-mstd0.5-inc1'))
    assert isinstance(t, VideoRandAugment)
    assert (t.magnitude, t.num_layers, t.magnitude_std) == (7.0, 4, 0.5)
    assert t.ops == RAND_INCREASING_OPS and len(t.ops) == 15
    assert t.prob == 0.5 and t.interpolation == 'bicubic'
    assert t.fill == (128, 128, 128)
    assert parse_config_str('rand-m9-n2') == dict(
        magnitude=9.0, num_layers=2, magnitude_std=0.0, increasing=False)
    assert VideoRandAugment('rand-m9').ops == RAND_OPS


@pytest.mark.parametrize('bad', ['auto-m7', 'rand-m7-x3', 'rand-q'])
def test_bad_config_str(bad):
    with pytest.raises(ValueError, match='config_str'):
        VideoRandAugment(bad)


def test_bad_op_name_and_frames():
    with pytest.raises(KeyError, match='Rotat'):
        VideoRandAugment(ops=['Rotat'])
    t = VideoRandAugment(num_layers=1, prob=1.0)
    with pytest.raises(ValueError, match=r"results\['imgs'\]"):
        t(dict(imgs=[np.zeros((8, 8, 3), np.float32)]))


def test_level_mapping_is_timm():
    m = 7.0
    assert level_to_arg('Rotate', m, -1) == pytest.approx(-21.0)
    assert level_to_arg('ShearX', m) == pytest.approx(0.21)
    assert level_to_arg('TranslateYRel', m, -1) == pytest.approx(-0.315)
    assert level_to_arg('PosterizeIncreasing', m) == 4 - 2
    assert level_to_arg('Posterize', m) == 2
    assert level_to_arg('SolarizeIncreasing', m) == 256 - 179
    assert level_to_arg('Solarize', m) == 179
    assert level_to_arg('SolarizeAdd', m) == 77
    assert level_to_arg('ColorIncreasing', m, -1) == pytest.approx(0.37)
    assert level_to_arg('Contrast', m) == pytest.approx(1.36)
    assert level_to_arg('Invert', m) is None


def test_identical_frames_stay_identical():
    """The same ops, magnitudes and signs for every frame of a clip."""
    frame = clip(1)[0]
    t = VideoRandAugment('rand-m7-n4-mstd0.5-inc1')
    changed = 0
    for seed in range(25):
        np.random.seed(seed)
        out = t(dict(imgs=[frame.copy() for _ in range(5)]))['imgs']
        assert len(out) == 5
        for f in out[1:]:
            np.testing.assert_array_equal(f, out[0])
        changed += int(not np.array_equal(out[0], frame))
    assert changed > 15  # it does augment


def test_clip_equals_per_frame_with_one_draw():
    t = VideoRandAugment('rand-m9-n3-mstd0.5-inc1', prob=1.0)
    frames = clip()
    np.random.seed(3)
    plan = t.sample()
    np.random.seed(3)
    out = t(dict(imgs=[f.copy() for f in frames]))['imgs']
    assert len(plan) == 3
    for f, o in zip(frames, out):
        expect = t.apply([f], plan)[0]
        np.testing.assert_array_equal(o, expect)


def test_dtype_shape_and_container_kept():
    t = VideoRandAugment(prob=1.0)
    np.random.seed(0)
    out = t(dict(imgs=clip()))['imgs']
    assert isinstance(out, list) and len(out) == 6
    assert all(o.dtype == np.uint8 and o.shape == (24, 32, 3) for o in out)
    arr = np.stack(clip())
    out = t(dict(imgs=arr.copy()))['imgs']
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint8 and out.shape == arr.shape


def test_n0_is_identity():
    t = VideoRandAugment('rand-m9-n0')
    frames = clip()
    for seed in range(5):
        np.random.seed(seed)
        out = t(dict(imgs=[f.copy() for f in frames]))['imgs']
        for f, o in zip(frames, out):
            np.testing.assert_array_equal(f, o)


def test_magnitude0_neutral_ops_are_identity():
    t = VideoRandAugment('rand-m0-n4-mstd0', ops=NEUTRAL_AT_ZERO, prob=1.0)
    frames = clip()
    for seed in range(20):
        np.random.seed(seed)
        plan = t.sample()
        assert len(plan) == 4
        out = t.apply(frames, plan)
        for f, o in zip(frames, out):
            np.testing.assert_array_equal(f, o, err_msg=str(plan))


def test_magnitude_noise_and_clipping():
    t = VideoRandAugment('rand-m7-n1-mstd0.5', ops=['Rotate'], prob=1.0)
    np.random.seed(0)
    degs = np.array([abs(t.sample()[0][1]) for _ in range(2000)])
    mags = degs / 3.0  # Rotate: 30 degrees at magnitude 10
    assert abs(mags.mean() - 7.0) < 0.05
    assert abs(mags.std() - 0.5) < 0.05
    t = VideoRandAugment('rand-m10-n1-mstd2', ops=['Rotate'], prob=1.0)
    degs = np.array([abs(t.sample()[0][1]) for _ in range(500)])
    assert degs.max() <= 30.0 + 1e-9  # clipped to magnitude 10
    signs = np.sign([t.sample()[0][1] for _ in range(1000)])
    assert 0.4 < (signs > 0).mean() < 0.6


def test_prob_skips_about_half():
    t = VideoRandAugment('rand-m5-n1', ops=['Invert'], prob=0.5)
    np.random.seed(1)
    applied = np.mean([len(t.sample()) for _ in range(2000)])
    assert 0.45 < applied < 0.55


def test_op_effects():
    from PIL import Image
    img = np.full((10, 20, 3), 40, np.uint8)
    img[5, 4] = 250
    pil = Image.fromarray(img)
    inv = np.asarray(apply_op(pil, 'Invert', None))
    np.testing.assert_array_equal(inv, 255 - img)
    sol = np.asarray(apply_op(pil, 'SolarizeIncreasing',
                              level_to_arg('SolarizeIncreasing', 10.0)))
    np.testing.assert_array_equal(sol, 255 - img)  # threshold 0
    # +0.25 of the width = 5 pixels: content moves left (the bright pixel
    # at x=4 leaves the frame), grey fill enters on the right
    tr = np.asarray(apply_op(pil, 'TranslateXRel', 0.25, Image.NEAREST))
    assert not (tr == 250).any()
    assert (tr[:, 15:] == 128).all() and (tr[:, :15] == 40).all()
    shifted = np.asarray(apply_op(pil, 'TranslateXRel', -0.25,
                                  Image.NEAREST))
    assert tuple(shifted[5, 9]) == (250, 250, 250)
    assert tuple(shifted[0, 0]) == (128, 128, 128)
    add = np.asarray(apply_op(pil, 'SolarizeAdd', 77))
    assert add[0, 0, 0] == 40 + 77 and add[5, 4, 0] == 250
