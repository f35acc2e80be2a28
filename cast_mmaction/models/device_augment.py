"""Training augmentation on the training device, batched over a clip's frames.

``DeviceAugmentPreprocessor`` is MMAction2's ``ActionDataPreprocessor`` with
the augmentation of the CAST training pipelines moved in front of it: the
data loader only decodes (``PackRawFrames`` packs the decoded uint8 frames,
(F, H, W, 3), at the decoded size) and the preprocessor, on the model's
device, applies per clip and batched over its frames

1. RandAugment with the plan of ``VideoRandAugment`` (drawn by the same
   ``VideoRandAugment.sample``; one plan per clip, the same transform on
   every frame), each op re-implemented in torch with Pillow's arithmetic
   (docs/device_augmentation.md states what is exact);
2. ``RandomResizedCrop`` (MMAction2's box sampling: 10 tries of a
   log-uniform aspect ratio and a uniform area, the first box that fits,
   else the centre square) and the resize to ``crop_size`` with OpenCV's
   uint8 ``INTER_LINEAR`` arithmetic (what MMAction2's ``Resize`` runs);
3. an optional horizontal flip (K400);

then rounds to uint8 values, as the CPU pipeline's uint8 frames, and hands
the clips, (num_clips, 3, T, S, S), to ``ActionDataPreprocessor``: stacking,
mean / std and Mixup / CutMix blending are MMAction2's code, unchanged.

Randomness: a ``torch.Generator`` on the CPU, reseeded at every call from
(``seed``, rank, iteration, repeat): ``seed`` defaults to
``torch.initial_seed()``, which MMEngine's runner sets from
``randomness.seed`` (+ rank when ``diff_rank_seed``); the iteration is the
runner's (``MessageHub`` ``'iter'``, set by ``RuntimeInfoHook``), so a
resumed run draws what the uninterrupted run drew; ``repeat`` counts calls
within one iteration (outside a runner: every call). The draws are the same
on CPU and CUDA; only the pixels are computed on the device.
"""
import math

import numpy as np
import torch
from mmaction.models.data_preprocessors import ActionDataPreprocessor
from mmaction.registry import MODELS
from mmengine.dist import get_rank
from mmengine.logging import MessageHub
from PIL import Image

from ..datasets.transforms.rand_augment import (TorchRandomState,
                                                VideoRandAugment)

_RESAMPLE = {Image.NEAREST: 'nearest', Image.BILINEAR: 'bilinear',
             Image.BICUBIC: 'bicubic'}


# --------------------------------------------------------- colour ops -----
def _blend(degenerate, img, factor):
    """Pillow's ``Image.blend(degenerate, img, factor)`` on uint8 values:
    float32 ``d + factor * (i - d)``, truncated, clipped to 0..255."""
    f = torch.tensor(float(factor), dtype=torch.float32, device=img.device)
    out = (img - degenerate) * f + degenerate
    return out.trunc_().clamp_(0, 255)


def _luma(x):
    """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 0x8000) >> 16;
    ``x``: (F, 3, H, W) float of integer values -> (F, 1, H, W)."""
    xi = x.to(torch.int32)
    y = (xi[:, 0] * 19595 + xi[:, 1] * 38470 + xi[:, 2] * 7471 + 0x8000)
    return (y >> 16).unsqueeze(1).to(x.dtype)


def _smooth(x):
    """Pillow's ``ImageFilter.SMOOTH`` (3x3, weights 1 / 13, centre 5 / 13,
    float32 sums in Pillow's order, rounded); border pixels kept."""
    k1 = torch.tensor(1.0, dtype=torch.float32) / 13.0
    k5 = torch.tensor(5.0, dtype=torch.float32) / 13.0
    k1, k5 = k1.to(x.device), k5.to(x.device)

    def row(r, centre):
        left, mid, right = r[..., :-2], r[..., 1:-1], r[..., 2:]
        return (left * k1 + mid * centre) + right * k1

    below = row(x[..., 2:, :], k1)
    here = row(x[..., 1:-1, :], k5)
    above = row(x[..., :-2, :], k1)
    ss = ((torch.zeros_like(here) + below) + here) + above
    out = x.clone()
    out[..., 1:-1, 1:-1] = (ss + 0.5).floor_().clamp_(0, 255)
    return out


def _lut(x, lut):
    """Apply per-(frame, channel) tables ``lut`` (F, 3, 256) to ``x``."""
    f, c, h, w = x.shape
    idx = x.to(torch.int64).reshape(f * c, h * w)
    out = torch.gather(lut.reshape(f * c, 256).to(x.dtype), 1, idx)
    return out.view(f, c, h, w)


def _autocontrast(x):
    lo = x.amin(dim=(2, 3), keepdim=True).to(torch.float64)
    hi = x.amax(dim=(2, 3), keepdim=True).to(torch.float64)
    ramp = torch.arange(256, dtype=torch.float64, device=x.device)
    span = (hi - lo).clamp_(min=1.0)
    scale = 255.0 / span
    offset = -lo * scale
    lut = (ramp * scale + offset).trunc_().clamp_(0, 255)
    lut = torch.where(hi > lo, lut, ramp)  # flat channel: identity
    return _lut(x, lut)


def _equalize(x):
    f, c, h, w = x.shape
    rows = torch.arange(f * c, device=x.device).unsqueeze(1) * 256
    idx = x.to(torch.int64).reshape(f * c, h * w) + rows
    hist = torch.bincount(idx.view(-1), minlength=f * c * 256)
    hist = hist.view(f * c, 256)
    nonzero = hist > 0
    ramp = torch.arange(256, device=x.device)
    last = torch.where(nonzero, ramp, -1).amax(dim=1, keepdim=True)
    last_count = torch.gather(hist, 1, last.clamp(min=0))
    step = (hist.sum(1, keepdim=True) - last_count) // 255
    n = step // 2 + torch.cumsum(hist, 1) - hist  # exclusive cumsum
    lut = torch.div(n, step.clamp(min=1), rounding_mode='floor')
    lut = lut.clamp_(max=255)
    keep = (nonzero.sum(1, keepdim=True) <= 1) | (step == 0)
    lut = torch.where(keep, ramp, lut)
    return _lut(x, lut.view(f, c, 256))


# ----------------------------------------------------------- geometry -----
def _rotate_matrix(angle, w, h):
    """Pillow's ``Image.rotate`` inverse matrix (about the centre)."""
    a = -math.radians(angle)
    m = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0,
         round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]
    cx, cy = w / 2, h / 2
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy
    return m


def _affine_matrix(name, arg, w, h):
    if name == 'Rotate':
        return _rotate_matrix(arg, w, h)
    if name == 'ShearX':
        return [1, arg, 0, 0, 1, 0]
    if name == 'ShearY':
        return [1, 0, 0, arg, 1, 0]
    if name == 'TranslateXRel':
        return [1, 0, arg * w, 0, 1, 0]
    if name == 'TranslateYRel':
        return [1, 0, 0, 0, 1, arg * h]
    raise KeyError(name)


def _cubic(v1, v2, v3, v4, d):
    """Pillow's transform bicubic (cubic convolution, a = -1) in its
    Horner form and order of operations, exact on flat regions."""
    p4 = (v2 - v1).sub_(v3).add_(v4)
    p3 = (v1 - v2).mul_(2).add_(v3).sub_(v4)
    p2 = v3 - v1
    return p4.mul_(d).add_(p3).mul_(d).add_(p2).mul_(d).add_(v2)


def _linear(v1, v2, d):
    """Pillow's transform bilinear step ``a + (b - a) d``."""
    return (v2 - v1).mul_(d).add_(v1)


def _affine(x, matrix, resample, fill, dtype=torch.float64):
    """Pillow's ``Image.transform(size, AFFINE, matrix, resample,
    fillcolor=fill)``: output pixel centre (x + .5, y + .5) maps to input
    (a x + b y + c, d x + e y + f); outside the frame: ``fill``; inside:
    clamped neighbours (Pillow's taps and formulas); the result truncated to
    uint8 values. Interpolated in ``dtype``: float64 (Pillow computes in
    double) gives Pillow's values exactly, float32 within 1 grey level."""
    out_dtype = x.dtype
    x = x.to(dtype)
    f, c, h, w = x.shape
    dev = x.device
    a, b, cc, d, e, ff = (float(v) for v in matrix)
    xs = torch.arange(w, dtype=torch.float64, device=dev) + 0.5
    ys = torch.arange(h, dtype=torch.float64, device=dev).unsqueeze(1) + 0.5
    xin = a * xs + b * ys + cc
    yin = d * xs + e * ys + ff
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    # pixels as rows of (F x C) values: a tap is one contiguous row copy
    flat = x.permute(2, 3, 0, 1).reshape(h * w, f * c)
    if resample == 'nearest':
        ix = xin.floor().clamp(0, w - 1).long()
        iy = yin.floor().clamp(0, h - 1).long()
        out = flat.index_select(0, (iy * w + ix).view(-1))
    else:
        u, v = xin - 0.5, yin - 0.5
        x0, y0 = u.floor(), v.floor()
        dx = (u - x0).to(x.dtype).view(-1, 1)
        dy = (v - y0).to(x.dtype).view(-1, 1)
        x0, y0 = x0.long(), y0.long()
        offs, interp = (((-1, 0, 1, 2), _cubic) if resample == 'bicubic'
                        else ((0, 1), _linear))
        cols = [(x0 + ox).clamp(0, w - 1) for ox in offs]
        rows = []
        for oy in offs:
            iy = (y0 + oy).clamp(0, h - 1) * w
            taps = [flat.index_select(0, (iy + col).view(-1))
                    for col in cols]
            rows.append(interp(*taps, dx))
        out = interp(*rows, dy)
        out = out.floor_().clamp_(0, 255)
    out = out.view(h, w, f, c).permute(2, 3, 0, 1).contiguous()
    fill_t = torch.tensor(fill, dtype=x.dtype, device=dev).view(1, c, 1, 1)
    return torch.where(inside.view(1, 1, h, w), out, fill_t).to(out_dtype)


# --------------------------------------------------------------- ops ------
def apply_op(x, name, arg, resample='bicubic', fill=(128, 128, 128),
             geometry_dtype=torch.float64):
    """One RandAugment op (``rand_augment.apply_op``'s names and
    arguments) on ``x``: (F, 3, H, W) float holding uint8 values;
    ``geometry_dtype``: the interpolation dtype of the geometric ops."""
    if name == 'AutoContrast':
        return _autocontrast(x)
    if name == 'Equalize':
        return _equalize(x)
    if name == 'Invert':
        return 255 - x
    if name in ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel',
                'TranslateYRel'):
        if name == 'Rotate' and arg % 360.0 == 0:
            return x  # Pillow returns a copy
        h, w = x.shape[-2:]
        return _affine(x, _affine_matrix(name, arg, w, h), resample, fill,
                       geometry_dtype)
    if name in ('Posterize', 'PosterizeIncreasing'):
        if arg >= 8:
            return x
        if arg <= 0:
            return torch.zeros_like(x)
        mask = ~(2**(8 - int(arg)) - 1) & 0xFF
        return (x.to(torch.int32) & mask).to(x.dtype)
    if name in ('Solarize', 'SolarizeIncreasing'):
        return torch.where(x < arg, x, 255 - x)
    if name == 'SolarizeAdd':
        return torch.where(x < 128, (x + arg).clamp_(max=255), x)
    base = name[:-len('Increasing')] if name.endswith('Increasing') else name
    if base == 'Brightness':
        return _blend(torch.zeros_like(x), x, arg)
    if base == 'Color':
        return _blend(_luma(x), x, arg)
    if base == 'Contrast':
        luma = _luma(x)
        mean = luma.to(torch.float64).mean(dim=(1, 2, 3), keepdim=True)
        return _blend((mean + 0.5).floor().to(x.dtype), x, arg)
    if base == 'Sharpness':
        return _blend(_smooth(x), x, arg)
    raise KeyError(f'unknown RandAugment op {name!r}')


def apply_plan(x, plan, fill=(128, 128, 128), geometry_dtype=torch.float64):
    """Apply a ``VideoRandAugment.sample`` plan to every frame of ``x``."""
    for name, arg, resample in plan:
        x = apply_op(x, name, arg, _RESAMPLE.get(resample, resample), fill,
                     geometry_dtype)
    return x


# -------------------------------------------------------------- crop ------
def sample_crop_box(img_shape, area_range=(0.08, 1.0),
                    aspect_ratio_range=(3 / 4, 4 / 3), generator=None,
                    max_attempts=10):
    """MMAction2's ``RandomResizedCrop.get_crop_bbox`` drawn from a torch
    generator: ``max_attempts`` log-uniform aspect ratios and uniform areas,
    the first box that fits (random offset), else the centre square.
    Returns ``(left, top, right, bottom)``."""
    img_h, img_w = int(img_shape[0]), int(img_shape[1])
    area = img_h * img_w
    lo, hi = math.log(aspect_ratio_range[0]), math.log(aspect_ratio_range[1])
    u = torch.rand(2, max_attempts, generator=generator,
                   dtype=torch.float64)
    ratios = torch.exp(lo + (hi - lo) * u[0])
    areas = (area_range[0] + (area_range[1] - area_range[0]) * u[1]) * area
    ws = torch.round(torch.sqrt(areas * ratios)).long().tolist()
    hs = torch.round(torch.sqrt(areas / ratios)).long().tolist()
    for crop_w, crop_h in zip(ws, hs):
        if crop_h <= img_h and crop_w <= img_w:
            x0 = int(torch.randint(img_w - crop_w + 1, (),
                                   generator=generator))
            y0 = int(torch.randint(img_h - crop_h + 1, (),
                                   generator=generator))
            return x0, y0, x0 + crop_w, y0 + crop_h
    size = min(img_h, img_w)
    x0, y0 = (img_w - size) // 2, (img_h - size) // 2
    return x0, y0, x0 + size, y0 + size


def _linear_taps(src, dst, clamp):
    """OpenCV ``INTER_LINEAR`` taps of one axis: source indices (i0, i1)
    and 11-bit fixed-point weights (w0, w1), computed as OpenCV does
    (float32 offsets; the horizontal axis clamps weights at the borders,
    the vertical axis only the indices)."""
    scale = 1.0 / (dst / src)
    pos = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5)
    pos = pos.to(torch.float32)
    i0 = pos.floor()
    frac = pos - i0
    i0 = i0.long()
    if clamp:
        low, high = i0 < 0, i0 >= src - 1
        frac = torch.where(low | high, torch.zeros_like(frac), frac)
        i0 = torch.where(low, torch.zeros_like(i0), i0)
        i0 = torch.where(high, torch.full_like(i0, src - 1), i0)
    one = torch.tensor(1.0, dtype=torch.float32)
    w0 = ((one - frac) * 2048).round().to(torch.int32)
    w1 = (frac * 2048).round().to(torch.int32)
    return (i0.clamp(0, src - 1), (i0 + 1).clamp(0, src - 1), w0, w1)


def crop_resize(x, box, size):
    """Crop ``box`` (left, top, right, bottom) of ``x`` (F, C, H, W, uint8
    values) and resize it to ``size`` (h, w) as MMAction2's ``Resize``
    (``cv2.resize``, ``INTER_LINEAR``, uint8) does: 11-bit fixed-point
    weights, a horizontal pass in int32, then OpenCV's vectorised vertical
    pass ``((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16) + 2 >> 2``."""
    left, top, right, bottom = (int(v) for v in box)
    x = x[..., top:bottom, left:right]
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    dev, dtype = x.device, x.dtype
    xi = x.to(torch.int32)
    c0, c1, a0, a1 = (t.to(dev) for t in _linear_taps(w, size[1], True))
    rows = xi[..., c0] * a0 + xi[..., c1] * a1
    r0, r1, b0, b1 = (t.to(dev) for t in _linear_taps(h, size[0], False))
    top_rows = ((rows[..., r0, :] >> 4) * b0.view(-1, 1)) >> 16
    bottom_rows = ((rows[..., r1, :] >> 4) * b1.view(-1, 1)) >> 16
    return ((top_rows + bottom_rows + 2) >> 2).clamp_(0, 255).to(dtype)


# ------------------------------------------------------- preprocessor -----
@MODELS.register_module()
class DeviceAugmentPreprocessor(ActionDataPreprocessor):
    """``ActionDataPreprocessor`` that first augments raw training clips on
    the device (see the module docstring).

    Training batches from ``PackRawFrames`` (uint8 (F, H, W, 3) tensors,
    any H, W per clip) are augmented; validation / test batches from the
    usual pipelines (``FormatShape`` + ``PackActionInputs``) pass straight
    to ``ActionDataPreprocessor``.

    Args:
        rand_augment (dict | None): ``VideoRandAugment`` arguments (e.g.
            ``dict(config_str='rand-m7-n4-mstd0.5-inc1')``); None: none.
        crop_size (int | tuple): output (h, w) of the crop + resize.
        area_range, aspect_ratio_range: ``RandomResizedCrop``'s.
        flip_ratio (float): probability of a horizontal flip per clip.
        seed (int | None): base seed; None: ``torch.initial_seed()``
            (set by MMEngine's runner from ``randomness.seed``).
        exact_geometry (bool): interpolate Rotate / Shear / Translate in
            float64 as Pillow does (its values exactly); False: float32
            (within 1 grey level; for GPUs with slow float64).
        **kwargs: ``ActionDataPreprocessor``'s (mean, std, blending, ...);
            ``format_shape`` must be ``'NCTHW'``.

    After a training call, ``last`` holds one ``dict(plan, box, flip)``
    per clip.
    """

    def __init__(self,
                 rand_augment=dict(config_str='rand-m7-n4-mstd0.5-inc1'),
                 crop_size=224,
                 area_range=(0.08, 1.0),
                 aspect_ratio_range=(3 / 4, 4 / 3),
                 flip_ratio=0.0,
                 seed=None,
                 exact_geometry=True,
                 format_shape='NCTHW',
                 **kwargs):
        if format_shape != 'NCTHW':
            raise ValueError(f'DeviceAugmentPreprocessor.format_shape='
                             f"{format_shape!r}: only 'NCTHW' (video clips)")
        super().__init__(format_shape=format_shape, **kwargs)
        self.rand_augment = (VideoRandAugment(**rand_augment)
                             if rand_augment is not None else None)
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.crop_size = tuple(int(s) for s in crop_size)
        self.area_range = tuple(float(a) for a in area_range)
        self.aspect_ratio_range = tuple(float(a) for a in aspect_ratio_range)
        if not 0 < self.area_range[0] <= self.area_range[1] <= 1:
            raise ValueError(f'DeviceAugmentPreprocessor.area_range='
                             f'{area_range}: need 0 < min <= max <= 1')
        if not 0 < self.aspect_ratio_range[0] <= self.aspect_ratio_range[1]:
            raise ValueError(f'DeviceAugmentPreprocessor.aspect_ratio_range='
                             f'{aspect_ratio_range}: need 0 < min <= max')
        if not 0 <= flip_ratio <= 1:
            raise ValueError(f'DeviceAugmentPreprocessor.flip_ratio='
                             f'{flip_ratio} must be in [0, 1]')
        self.flip_ratio = float(flip_ratio)
        if seed is not None and int(seed) < 0:
            raise ValueError('DeviceAugmentPreprocessor.seed must be >= 0')
        self.seed = None if seed is None else int(seed)
        self.geometry_dtype = (torch.float64 if exact_geometry
                               else torch.float32)
        self._last_iter, self._repeat = None, -1
        self.last = None

    # -- randomness ------------------------------------------------------
    def generator(self):
        """The CPU generator of this call, seeded from (seed, rank,
        iteration, repeat)."""
        base = self.seed if self.seed is not None else torch.initial_seed()
        it = MessageHub.get_current_instance().get_info('iter')
        it = -1 if it is None else int(it)
        self._repeat = self._repeat + 1 if it == self._last_iter else 0
        self._last_iter = it
        key = [int(base), get_rank(), it + 1, self._repeat]
        state = np.random.SeedSequence(key).generate_state(1, np.uint64)[0]
        g = torch.Generator()
        g.manual_seed(int(state) & (2**63 - 1))
        return g

    # -- one clip --------------------------------------------------------
    def augment_clip(self, frames, generator, num_clips=1):
        """(F, H, W, 3) uint8 frames -> (num_clips, 3, F / num_clips, h, w)
        uint8 and the draws ``dict(plan, box, flip)``."""
        rng = TorchRandomState(generator)
        plan = self.rand_augment.sample(rng) if self.rand_augment else []
        h, w = frames.shape[1:3]
        box = sample_crop_box((h, w), self.area_range,
                              self.aspect_ratio_range, generator)
        flip = bool(self.flip_ratio > 0 and torch.rand(
            (), generator=generator).item() < self.flip_ratio)
        x = frames.permute(0, 3, 1, 2).to(torch.float32)
        if plan:
            x = apply_plan(x, plan, self.rand_augment.fill,
                           self.geometry_dtype)
        x = crop_resize(x, box, self.crop_size)
        if flip:
            x = x.flip(-1)
        x = x.to(torch.uint8)
        n = int(num_clips)
        x = x.reshape(n, x.shape[0] // n, *x.shape[1:]).transpose(1, 2)
        return x.contiguous(), dict(plan=plan, box=box, flip=flip)

    @staticmethod
    def _is_raw(inputs):
        return (isinstance(inputs, (list, tuple)) and len(inputs) > 0
                and all(torch.is_tensor(t) and t.ndim == 4
                        and t.shape[-1] == 3 and t.dtype == torch.uint8
                        for t in inputs))

    def preprocess(self, inputs, data_samples, training=False):
        if not self._is_raw(inputs):
            return super().preprocess(inputs, data_samples, training)
        if not training:
            raise ValueError(
                'DeviceAugmentPreprocessor got raw (F, H, W, 3) clips with '
                'training=False: validation / test pipelines must end in '
                "FormatShape + PackActionInputs (only the training pipeline "
                "ends in 'PackRawFrames')")
        g = self.generator()
        clips, draws = [], []
        for i, (frames, ds) in enumerate(zip(inputs, data_samples)):
            n = int(ds.metainfo.get('num_clips', 1)) if ds is not None else 1
            if frames.shape[0] % n:
                raise ValueError(f'DeviceAugmentPreprocessor: clip {i} has '
                                 f'{frames.shape[0]} frames, not a multiple '
                                 f'of num_clips={n}')
            clip, drawn = self.augment_clip(frames, g, n)
            if ds is not None:
                ds.set_metainfo(dict(img_shape=self.crop_size))
            clips.append(clip)
            draws.append(drawn)
        self.last = draws
        return super().preprocess(clips, data_samples, training)
