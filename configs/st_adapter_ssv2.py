# ST-Adapter ViT-B/16 24x384 on Something-Something-V2 (Pan et al., NeurIPS
# 2022): the released recipe (linziyi96/st-adapter scripts/train_ssv2_clip_
# vit_b16_adapter24x384.sh, main.py). Their README reports 66.9 top-1 (8
# frames x 1 temporal x 3 spatial views); that is the paper's number, not
# ours (docs/baselines.md).
#
#   tools/dist_train.sh configs/st_adapter_ssv2.py 4
#   python tools/convert/convert_checkpoint.py RELEASE.pth st_adapter_ssv2.pth \
#       --tower checkpoints/ViT-B-16.pt --config configs/st_adapter_ssv2.py
_base_ = ['_base_/default_runtime.py', '_base_/models/st_adapter_vit_b.py',
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
num_frames = 8  # --sampling_rate 0: one frame from each of 8 segments
img_size = 224
num_gpus = 4  # the released script: 4 GPUs x batch 64
batch_size = 64
base_lr = 1e-3 * num_gpus * batch_size / 256  # --blr 1e-3 per 256: 1e-3
weight_decay = 0.01  # main.py default; biases without decay
warmup_epochs = 2
max_epochs = 50
rand_augment = 'rand-m7-n4-mstd0.5-inc1'  # --auto_augment
test_num_crops = 3  # 1 temporal x 3 spatial views
video_backend = 'pyav'

# ---------------------------------------------------------------- model ----
model = dict(
    backbone=dict(num_frames=num_frames, img_size=img_size,
                  expert=dict(pretrained=clip_weights),
                  adapter_pre_attn=True, adapter_pre_mlp=True),  # 24x384
    cls_head=dict(num_classes=num_classes))

# ----------------------------------------------------------------- data ----
train_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='STAdapterSample', num_frames=num_frames, sampling_rate=0),
    dict(type='VideoDecode'),
    dict(type='VideoRandAugment', config_str=rand_augment),
    # random_resized_crop (area 0.08..1), no --mirror
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
         aspect_ratio_range=(0.75, 1.3333)),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False,
         interpolation='bicubic'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='STAdapterSample', num_frames=num_frames, sampling_rate=0,
         test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size), interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='STAdapterSample', num_frames=num_frames, sampling_rate=0,
         test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size), interpolation='bicubic'),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(ann_file=ann_file_train, data_prefix=dict(video=data_root),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
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
