# CAST ViT-B/16 on Kinetics-400 (configs/cast_k400.py) with the training
# augmentation on the training device: the data workers only decode; the
# model's data_preprocessor (DeviceAugmentPreprocessor) applies the recipe's
# RandAugment, RandomResizedCrop + resize to 224, horizontal flip,
# normalisation and Mixup, batched over each clip's frames. Same recipe,
# same draws in distribution; validation and test pipelines unchanged. See
# docs/device_augmentation.md.
#
#   tools/dist_train.sh configs/cast_k400_device_aug.py 8
_base_ = ['./cast_k400.py']

model = dict(
    data_preprocessor=dict(
        type='DeviceAugmentPreprocessor',
        rand_augment=dict(config_str={{_base_.rand_augment}}),
        crop_size={{_base_.img_size}},
        area_range=(0.08, 1.0),
        aspect_ratio_range=(0.75, 1.3333),
        flip_ratio=0.5))

train_pipeline = [
    dict(type='VideoInit', backend={{_base_.video_backend}}),
    dict(type='DenseSpanSample', clip_len={{_base_.num_frames}},
         frame_interval={{_base_.frame_interval}}),
    dict(type='VideoDecode'),
    # uint8 frames at the decoded size; augmented on the device
    dict(type='PackRawFrames')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
