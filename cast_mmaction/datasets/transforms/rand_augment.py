"""RandAugment for video clips with timm's semantics (``rand-m7-n4-...``).

The published CAST recipes augment training clips with timm's RandAugment
policy ``rand-m7-n4-mstd0.5-inc1`` applied *per clip*: the ops, their
magnitudes, signs and the apply/skip decisions are drawn once and the same
transformation is applied to every frame, so motion between frames is
kept. Semantics (as timm's ``auto_augment.py`` and the authors'
``util_tools/rand_augment.py``):

* ``n`` ops are drawn uniformly *with replacement* from the 15 ops of the
  policy (``inc1``: the "increasing" variants, whose strength grows with
  the magnitude);
* each op is applied with probability ``prob`` (0.5);
* its magnitude is ``m``, or ``N(m, mstd)`` when ``mstd > 0``, clipped to
  ``[0, 10]``; signed ops (rotate, shear, translate, increasing enhance)
  flip their sign with probability 0.5;
* geometric ops fill with grey (128, 128, 128) and resample bicubically
  (the authors' ``--train_interpolation bicubic``); translations are
  relative (up to 45% of the frame at magnitude 10).

Magnitude -> argument (``x = magnitude / 10``): Rotate ``±30x`` degrees,
ShearX/Y ``±0.3x``, TranslateX/YRel ``±0.45x`` of the width / height,
Posterize(Increasing) keeps ``int(4x)`` (``4 - int(4x)``) bits,
Solarize(Increasing) threshold ``int(256x)`` (``256 - int(256x)``),
SolarizeAdd adds ``int(110x)`` below 128, Color/Contrast/Brightness/
Sharpness factor ``1.8x + 0.1`` (increasing: ``1 ± 0.9x``), AutoContrast,
Equalize, Invert take no argument.

Frames are ``results['imgs']``: a list of (H, W, 3) uint8 RGB arrays (what
``DecordDecode`` / ``PyAVDecode`` give) or one (T, H, W, 3) uint8 array.
Place the transform after decoding and before cropping, as the authors do.
Randomness comes from NumPy's global generator (seeded per worker by
MMEngine). :meth:`VideoRandAugment.sample` draws a clip's plan from any
generator with NumPy's ``RandomState`` interface; :class:`TorchRandomState`
gives that interface to a ``torch.Generator``, so the batched device path
(``cast_mmaction.models.device_augment``) draws its plans with this same
code.
"""
import re

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform

MAX_LEVEL = 10.0

RAND_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize',
            'Solarize', 'SolarizeAdd', 'Color', 'Contrast', 'Brightness',
            'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel',
            'TranslateYRel')
RAND_INCREASING_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate',
                       'PosterizeIncreasing', 'SolarizeIncreasing',
                       'SolarizeAdd', 'ColorIncreasing',
                       'ContrastIncreasing', 'BrightnessIncreasing',
                       'SharpnessIncreasing', 'ShearX', 'ShearY',
                       'TranslateXRel', 'TranslateYRel')
_SIGNED = {'Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel',
           'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing',
           'SharpnessIncreasing'}
_INTERP = {'nearest': Image.NEAREST, 'bilinear': Image.BILINEAR,
           'bicubic': Image.BICUBIC}


def level_to_arg(name, magnitude, sign=1.0, translate_pct=0.45):
    """Argument of op ``name`` at ``magnitude`` (0..10); ``sign`` (+1/-1)
    is used by the signed ops only."""
    x = magnitude / MAX_LEVEL
    if name in ('AutoContrast', 'Equalize', 'Invert'):
        return None
    if name == 'Rotate':
        return sign * 30.0 * x
    if name in ('ShearX', 'ShearY'):
        return sign * 0.3 * x
    if name in ('TranslateXRel', 'TranslateYRel'):
        return sign * translate_pct * x
    if name == 'Posterize':
        return int(4 * x)
    if name == 'PosterizeIncreasing':
        return 4 - int(4 * x)
    if name == 'Solarize':
        return int(256 * x)
    if name == 'SolarizeIncreasing':
        return 256 - int(256 * x)
    if name == 'SolarizeAdd':
        return int(110 * x)
    if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
        return 1.8 * x + 0.1
    if name in ('ColorIncreasing', 'ContrastIncreasing',
                'BrightnessIncreasing', 'SharpnessIncreasing'):
        return 1.0 + sign * 0.9 * x
    raise KeyError(f'unknown RandAugment op {name!r}; known: '
                   f'{sorted(set(RAND_OPS) | set(RAND_INCREASING_OPS))}')


def _affine(img, matrix, resample, fill):
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample,
                         fillcolor=fill)


def apply_op(img, name, arg, resample=Image.BICUBIC, fill=(128, 128, 128)):
    """Apply one op with its argument to a PIL RGB image."""
    if name == 'AutoContrast':
        return ImageOps.autocontrast(img)
    if name == 'Equalize':
        return ImageOps.equalize(img)
    if name == 'Invert':
        return ImageOps.invert(img)
    if name == 'Rotate':
        return img.rotate(arg, resample=resample, fillcolor=fill)
    if name == 'ShearX':
        return _affine(img, (1, arg, 0, 0, 1, 0), resample, fill)
    if name == 'ShearY':
        return _affine(img, (1, 0, 0, arg, 1, 0), resample, fill)
    if name == 'TranslateXRel':
        return _affine(img, (1, 0, arg * img.size[0], 0, 1, 0), resample,
                       fill)
    if name == 'TranslateYRel':
        return _affine(img, (1, 0, 0, 0, 1, arg * img.size[1]), resample,
                       fill)
    if name in ('Posterize', 'PosterizeIncreasing'):
        if arg >= 8:
            return img
        if arg <= 0:  # keep 0 bits: black (Pillow >= 10 refuses bits=0)
            return Image.new(img.mode, img.size, 0)
        return ImageOps.posterize(img, arg)
    if name in ('Solarize', 'SolarizeIncreasing'):
        return ImageOps.solarize(img, arg)
    if name == 'SolarizeAdd':
        lut = [min(255, i + arg) if i < 128 else i for i in range(256)]
        return img.point(lut * len(img.getbands()))
    enhancer = {'Color': ImageEnhance.Color,
                'Contrast': ImageEnhance.Contrast,
                'Brightness': ImageEnhance.Brightness,
                'Sharpness': ImageEnhance.Sharpness}
    base = name[:-len('Increasing')] if name.endswith('Increasing') else name
    if base in enhancer:
        return enhancer[base](img).enhance(arg)
    raise KeyError(f'unknown RandAugment op {name!r}')


def parse_config_str(config_str):
    """``'rand-m7-n4-mstd0.5-inc1'`` -> dict(magnitude=7, num_layers=4,
    magnitude_std=0.5, increasing=True). Defaults as timm: m10, n2, mstd0,
    inc0."""
    parts = str(config_str).split('-')
    if parts[0] != 'rand':
        raise ValueError(f'RandAugment config_str {config_str!r} must start '
                         f"with 'rand' (e.g. 'rand-m7-n4-mstd0.5-inc1')")
    out = dict(magnitude=MAX_LEVEL, num_layers=2, magnitude_std=0.0,
               increasing=False)
    for part in parts[1:]:
        m = re.fullmatch(r'([a-z]+)(\d+(?:\.\d*)?)', part)
        if not m:
            raise ValueError(f'RandAugment config_str {config_str!r}: cannot '
                             f'read section {part!r}')
        key, val = m.groups()
        if key == 'm':
            out['magnitude'] = float(val)
        elif key == 'n':
            out['num_layers'] = int(float(val))
        elif key == 'mstd':
            out['magnitude_std'] = float(val)
        elif key == 'inc':
            out['increasing'] = bool(int(float(val)))
        else:
            raise ValueError(f'RandAugment config_str {config_str!r}: '
                             f'section {part!r} is not supported (m, n, '
                             f'mstd, inc)')
    return out


class TorchRandomState:
    """NumPy ``RandomState``'s ``randint`` / ``random_sample`` / ``normal``
    (the calls :meth:`VideoRandAugment.sample` makes) drawn from a
    ``torch.Generator``: the same plan code on either generator, the same
    distribution."""

    def __init__(self, generator):
        self.generator = generator

    def randint(self, high, size=None):
        shape = () if size is None else (int(size), )
        out = torch.randint(int(high), shape, generator=self.generator)
        return int(out) if size is None else out.tolist()

    def random_sample(self):
        return torch.rand((), generator=self.generator,
                          dtype=torch.float64).item()

    def normal(self, loc=0.0, scale=1.0):
        return loc + scale * torch.randn((), generator=self.generator,
                                         dtype=torch.float64).item()


@TRANSFORMS.register_module()
class VideoRandAugment(BaseTransform):
    """RandAugment with one draw per clip (see the module docstring).

    Required keys: ``imgs``. Modified keys: ``imgs`` (same type, shape and
    dtype).

    Args:
        config_str: timm policy string; the published recipe is
            ``'rand-m7-n4-mstd0.5-inc1'``.
        magnitude, num_layers, magnitude_std, increasing: override the
            corresponding part of ``config_str`` when not None.
        ops: op names to draw from (default: the 15 ops of the policy).
        prob: probability of applying each drawn op.
        translate_pct: translation at magnitude 10, as a fraction of the
            frame size.
        interpolation: 'bicubic' (the recipe), 'bilinear', 'nearest', or
            'random' (bilinear or bicubic, drawn per op and clip).
        fill: RGB fill of the area uncovered by geometric ops.
    """

    def __init__(self,
                 config_str='rand-m7-n4-mstd0.5-inc1',
                 magnitude=None,
                 num_layers=None,
                 magnitude_std=None,
                 increasing=None,
                 ops=None,
                 prob=0.5,
                 translate_pct=0.45,
                 interpolation='bicubic',
                 fill=(128, 128, 128)):
        cfg = parse_config_str(config_str)
        for key, value in (('magnitude', magnitude),
                           ('num_layers', num_layers),
                           ('magnitude_std', magnitude_std),
                           ('increasing', increasing)):
            if value is not None:
                cfg[key] = value
        self.config_str = config_str
        self.magnitude = float(cfg['magnitude'])
        self.num_layers = int(cfg['num_layers'])
        self.magnitude_std = float(cfg['magnitude_std'])
        if not 0 <= self.magnitude <= MAX_LEVEL:
            raise ValueError(f'VideoRandAugment.magnitude={self.magnitude} '
                             f'must be in [0, {MAX_LEVEL:g}]')
        if self.num_layers < 0 or self.magnitude_std < 0:
            raise ValueError('VideoRandAugment: num_layers and magnitude_std '
                             'must be >= 0')
        default_ops = RAND_INCREASING_OPS if cfg['increasing'] else RAND_OPS
        self.ops = tuple(ops) if ops is not None else default_ops
        if not self.ops:
            raise ValueError('VideoRandAugment.ops is empty')
        for name in self.ops:
            level_to_arg(name, 0.0)  # raises KeyError naming unknown ops
        if not 0 <= prob <= 1:
            raise ValueError(f'VideoRandAugment.prob={prob} must be in '
                             f'[0, 1]')
        self.prob = float(prob)
        self.translate_pct = float(translate_pct)
        if interpolation not in (*_INTERP, 'random'):
            raise ValueError(f'VideoRandAugment.interpolation='
                             f'{interpolation!r}; use one of '
                             f"{[*_INTERP, 'random']}")
        self.interpolation = interpolation
        self.fill = tuple(int(v) for v in fill)

    # -- one draw per clip -------------------------------------------------
    def sample(self, rng=np.random):
        """Draw the clip's transformation: a list of ``(name, arg,
        resample)`` for the ops that will be applied, in order.

        ``rng``: NumPy's global generator (the default), a
        ``np.random.RandomState``, or a :class:`TorchRandomState`; the one
        plan code for the CPU transform and the device preprocessor."""
        chosen = rng.randint(len(self.ops), size=self.num_layers)
        plan = []
        for idx in chosen:
            name = self.ops[idx]
            if self.prob < 1.0 and rng.random_sample() > self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = rng.normal(magnitude, self.magnitude_std)
            magnitude = min(MAX_LEVEL, max(0.0, magnitude))
            sign = 1.0
            if name in _SIGNED and rng.random_sample() > 0.5:
                sign = -1.0
            arg = level_to_arg(name, magnitude, sign, self.translate_pct)
            if self.interpolation == 'random':
                resample = (Image.BILINEAR, Image.BICUBIC)[rng.randint(2)]
            else:
                resample = _INTERP[self.interpolation]
            plan.append((name, arg, resample))
        return plan

    def apply(self, frames, plan):
        """Apply ``plan`` (from :meth:`sample`) to every frame."""
        out = []
        for frame in frames:
            img = Image.fromarray(frame)
            for name, arg, resample in plan:
                img = apply_op(img, name, arg, resample, self.fill)
            out.append(np.asarray(img))
        return out

    def transform(self, results):
        imgs = results['imgs']
        as_array = isinstance(imgs, np.ndarray)
        frames = list(imgs)
        for k, f in enumerate(frames):
            f = np.asarray(f)
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
                raise ValueError(
                    f"VideoRandAugment needs results['imgs'] as uint8 RGB "
                    f'frames (H, W, 3); frame {k} is {f.dtype} {f.shape}. '
                    f'Put it right after the decode step of the pipeline.')
        plan = self.sample()
        if not plan:
            return results
        frames = self.apply(frames, plan)
        results['imgs'] = np.stack(frames) if as_array else frames
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(config_str={self.config_str!r}, '
                f'magnitude={self.magnitude}, num_layers={self.num_layers}, '
                f'magnitude_std={self.magnitude_std}, prob={self.prob}, '
                f'ops={len(self.ops)}, interpolation={self.interpolation!r})')
