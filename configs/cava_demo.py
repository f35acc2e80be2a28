# A tiny CAVA on the synthetic audio-visual clips (mp4 with sound).
#
#   python tools/data/make_synthetic_av_data.py demo_av_data
#   python tools/train.py configs/cava_demo.py --work-dir work_dirs/cava_demo
#   python tools/test.py configs/cava_demo.py work_dirs/cava_demo/epoch_12.pth
#
# 4 classes = {red, blue} square x {low, high} tone: the model must use the
# video AND the audio stream. Runs on a CPU in minutes.
_base_ = ['_base_/default_runtime.py', '_base_/models/cava_vit_b.py']

data_root = 'demo_av_data'
ann_file_train = 'demo_av_data/train_list.txt'
ann_file_val = 'demo_av_data/val_list.txt'
label_map = 'demo_av_data/label_map.txt'

num_classes = 4
num_frames = 8
frame_interval = 2
img_size = 32
audio_frames = 200  # 2 s
width = 64
depth = 2
heads = 4
batch_size = 8
base_lr = 1e-3
max_epochs = 12
warmup_epochs = 1
# random (not pretrained) experts: train them (the published models freeze
# their pretrained experts; set expert_frozen = True to see that split)
expert_frozen = False

# The CAVA of _base_/models/cava_vit_b.py at this tiny size.
model = dict(
    backbone=dict(
        num_frames=num_frames,
        img_size=img_size,
        experts=dict(
            clip=dict(embed_dim=width, depth=depth, num_heads=heads,
                      frozen=expert_frozen),
            audio=dict(embed_dim=width, depth=depth, num_heads=heads,
                       input_tdim=audio_frames, frozen=expert_frozen))),
    cls_head=dict(num_classes=num_classes, in_channels=width,
                  label_smooth_eps=0.1),
    data_preprocessor=dict(
        blending=dict(type='AudioVisualMixup', num_classes=num_classes,
                      mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5)))

audio = dict(type='LoadAudioFbank', sample_rate=16000, num_mel_bins=128,
             target_length=audio_frames, align='clip')
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1),
    dict(type='DecordDecode'),
    audio,
    dict(type='SpecAugment', time_mask=20, freq_mask=8),
    dict(type='RandomResizedCrop', area_range=(0.6, 1.0)),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    audio,
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
# RobustDataset wraps the dataset (dataset_type); bad_sample per loader
dataset = dict(type='RobustDataset',
               dataset_type='AudioVisualDataset',
               data_prefix=dict(video=data_root))
train_dataloader = dict(
    batch_size=batch_size, num_workers=1, persistent_workers=True,
    drop_last=True, sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(dataset, bad_sample='replace', ann_file=ann_file_train,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, bad_sample='flag', ann_file=ann_file_val,
                 pipeline=test_pipeline, test_mode=True))
test_dataloader = dict(val_dataloader, dataset=dict(
    val_dataloader['dataset'], bad_sample='raise'))
val_evaluator = dict(type='BadSampleAwareMetric', metric_type='AccMetric')
test_evaluator = val_evaluator

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_begin=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='GuardedOptimWrapper',  # a NaN/inf loss skips the update
    optimizer=dict(type='AdamW', lr=base_lr, betas=(0.9, 0.999),
                   weight_decay=0.05),
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs,
         eta_min_ratio=1e-2, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None))
randomness = dict(seed=0, diff_rank_seed=False)

# one process (CPU or one GPU) x batch_size: what --auto-scale-lr scales from
auto_scale_lr = dict(enable=False, base_batch_size=batch_size)
