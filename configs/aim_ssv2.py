# AIM ViT-B/16 on Something-Something-V2 (Yang et al., ICLR 2023;
# taoyang1122/adapt-image-models): their SSv2 settings, num_tadapter=2,
# adapter_scale=1, 8 frames, label smoothing 0.1, RandAugment (n=4, m=7) and
# random erasing, 1 temporal x 3 spatial test views. Optimiser and schedule
# as their configs (AdamW 3e-4, weight decay 0.05, linear warm-up 2.5
# epochs, cosine to 0, 50 epochs); the 8 GPUs x 8 clips batch is our
# reading of their training setup, not checked against a released log.
#
#   tools/dist_train.sh configs/aim_ssv2.py 8
#   python tools/convert/convert_checkpoint.py RELEASE.pth aim_ssv2.pth --config configs/aim_ssv2.py
_base_ = ['_base_/default_runtime.py', '_base_/models/aim_vit_b.py',
          '_base_/datasets/video_loaders.py',
          '_base_/schedules/adamw_warmup_cosine_peft.py']

# ---------------------------------------------------------------- paths ----
data_root = 'data/sthv2/videos'
data_root_val = 'data/sthv2/videos'
ann_file_train = 'data/sthv2/sthv2_train_list_videos.txt'
ann_file_val = 'data/sthv2/sthv2_val_list_videos.txt'
ann_file_test = 'data/sthv2/sthv2_val_list_videos.txt'
label_map = 'data/sthv2/annotations/something-something-v2-labels.json'
clip_weights = 'checkpoints/ViT-B-16.pt'  # OpenAI CLIP (TorchScript)

# --------------------------------------------------------------- recipe ----
num_classes = 174
num_frames = 8  # one frame from each of 8 segments (frame_uniform)
img_size = 224
num_gpus = 8
batch_size = 8
base_lr = 3e-4
weight_decay = 0.05
warmup_epochs = 2.5
max_epochs = 50
drop_path = 0.2
label_smoothing = 0.1
rand_augment = 'rand-m7-n4-mstd0.5-inc1'
test_num_crops = 3  # 1 temporal x 3 spatial views
video_backend = 'pyav'

# ---------------------------------------------------------------- model ----
model = dict(
    backbone=dict(num_frames=num_frames, img_size=img_size,
                  expert=dict(pretrained=clip_weights), num_tadapter=2,
                  adapter_scale=1.0, drop_path_rate=drop_path),
    cls_head=dict(num_classes=num_classes, label_smooth_eps=label_smoothing))

# ----------------------------------------------------------------- data ----
train_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='SegmentSample', num_segments=num_frames),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='RandomResizedCrop'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='VideoRandAugment', config_str=rand_augment),
    dict(type='RandomErasing', erase_prob=0.25),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='SegmentSample', num_segments=num_frames, test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, 256)),  # their val: short side 256
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='SegmentSample', num_segments=num_frames, test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(ann_file=ann_file_train, data_prefix=dict(video=data_root),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    dataset=dict(ann_file=ann_file_val, data_prefix=dict(video=data_root_val),
                 pipeline=val_pipeline))
test_dataloader = dict(
    dataset=dict(ann_file=ann_file_test,
                 data_prefix=dict(video=data_root_val),
                 pipeline=test_pipeline))

# ------------------------------------------------------------ optimiser ----
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=base_lr, weight_decay=weight_decay))
param_scheduler = [dict(
    type='LinearWarmupCosineLR', warmup_epochs=warmup_epochs,
    start_factor=0.0, eta_min_ratio=0.0, by_epoch=True, begin=0,
    end=max_epochs, convert_to_iter_based=True)]
auto_scale_lr = dict(enable=False, base_batch_size=num_gpus * batch_size)
