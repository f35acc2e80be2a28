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
        results['imgs'] = np.ascontiguousarray(np.stack(list(imgs)))
        return super().transform(results)
