"""``PackRawFrames``: the last step of a training pipeline whose augmentation
runs on the training device (``DeviceAugmentPreprocessor``,
docs/device_augmentation.md).

It packs the decoded frames as they are: one uint8 tensor (F, H, W, 3) at
the decoded size (``F = num_clips x clip_len``), no resize, no float
conversion, so a worker only decodes and the copy to the device is a
quarter of a float32 clip. The label and meta keys are packed as
``PackActionInputs`` does, plus ``num_clips`` and ``clip_len`` (the
preprocessor splits the frames into clips with them).
"""
import numpy as np

from mmaction.datasets.transforms import PackActionInputs
from mmaction.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackRawFrames(PackActionInputs):
    """Pack ``results['imgs']`` (uint8 RGB frames (H, W, 3), a list or one
    (F, H, W, 3) array) as a uint8 (F, H, W, 3) tensor in ``inputs``.

    Args:
        meta_keys: keys copied to the data sample's metainfo.
    """

    def __init__(self,
                 meta_keys=('img_shape', 'img_key', 'video_id', 'timestamp',
                            'num_clips', 'clip_len')):
        super().__init__(meta_keys=meta_keys)

    def transform(self, results):
        if 'imgs' not in results:
            raise KeyError("PackRawFrames needs results['imgs']: put it "
                           'right after the decode step of the pipeline')
        imgs = results['imgs']
        shapes = {tuple(np.shape(f)) for f in imgs}
        dtypes = {np.asarray(f).dtype for f in imgs}
        if (len(shapes) != 1 or dtypes != {np.dtype(np.uint8)}
                or len(next(iter(shapes))) != 3
                or next(iter(shapes))[-1] != 3):
            raise ValueError(
                "PackRawFrames needs results['imgs'] as uint8 RGB frames of "
                f'one size (H, W, 3); got shapes {sorted(shapes)} and dtypes '
                f'{sorted(map(str, dtypes))}. Put it right after the decode '
                'step, before any transform that changes the frames.')
        whole = _stacked(imgs)
        results['imgs'] = (whole if whole is not None else
                           np.ascontiguousarray(np.stack(list(imgs))))
        return super().transform(results)


def _stacked(imgs):
    """The (F, H, W, 3) array whose frames ``imgs`` are, in order, or
    None. ``VideoDecode`` hands its reader's stacked array over as a list
    of views into it (what MMAction2's transforms expect); packing that
    array itself saves a copy of the clip (8.7 MB for 16 frames of
    568 x 320). Frames replaced, reordered or dropped since give None (then
    they are stacked)."""
    if isinstance(imgs, np.ndarray):
        return np.ascontiguousarray(imgs) if imgs.ndim == 4 else None
    base = getattr(imgs[0], 'base', None) if len(imgs) else None
    if not (isinstance(base, np.ndarray) and base.ndim == 4
            and base.shape[0] == len(imgs) and base.flags.c_contiguous):
        return None
    start = base.__array_interface__['data'][0]
    for i, f in enumerate(imgs):
        if not (isinstance(f, np.ndarray) and f.base is base
                and f.shape == base.shape[1:]
                and f.strides == base.strides[1:]
                and f.__array_interface__['data'][0] ==
                start + i * base.strides[0]):
            return None
    return base
