# CAST ViT-B/16 on SSv2 (configs/cast_ssv2.py) with the training
# augmentation on the training device: the data workers only decode; the
# model's data_preprocessor (DeviceAugmentPreprocessor) applies the recipe's
# RandAugment, RandomResizedCrop + resize to 224 (no flip: SSv2 has
# left/right classes), normalisation and Mixup, batched over each clip's
# frames. Same recipe, same draws in distribution; validation and test
# pipelines unchanged. See docs/device_augmentation.md.
#
#   tools/dist_train.sh configs/cast_ssv2_device_aug.py 8
_base_ = ['./cast_ssv2.py']

model = dict(
    data_preprocessor=dict(
        type='DeviceAugmentPreprocessor',
        rand_augment=dict(config_str={{_base_.rand_augment}}),
        crop_size={{_base_.img_size}},
        area_range=(0.08, 1.0),
        aspect_ratio_range=(0.75, 1.3333),
        flip_ratio=0.0))

train_pipeline = [
    dict(type='VideoInit', backend={{_base_.video_backend}}),
    dict(type='SegmentSample', num_segments={{_base_.num_frames}}),
    dict(type='VideoDecode'),
    # uint8 frames at the decoded size; augmented on the device
    dict(type='PackRawFrames')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
