# ST-Adapter ViT-B/16 12x384 on Kinetics-400 (Pan et al., NeurIPS 2022): the
# released recipe (linziyi96/st-adapter scripts/train_k400_clip_vit_b16_
# adapter12x384.sh, main.py). Their README reports 82.2 top-1 (8 frames x 3
# temporal x 1 spatial views); that is the paper's number, not ours
# (docs/baselines.md).
#
#   tools/dist_train.sh configs/st_adapter_k400.py 3
#   python tools/convert/convert_checkpoint.py RELEASE.pth st_adapter_k400.pth \
#       --tower checkpoints/ViT-B-16.pt --config configs/st_adapter_k400.py
_base_ = ['_base_/default_runtime.py', '_base_/models/st_adapter_vit_b.py',
          '_base_/datasets/video_loaders.py',
          '_base_/schedules/adamw_warmup_cosine_peft.py']

# ---------------------------------------------------------------- paths ----
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
ann_file_test = 'data/kinetics400/kinetics400_val_list_videos.txt'
label_map = 'data/kinetics400/label_map_k400.txt'
clip_weights = 'checkpoints/ViT-B-16.pt'  # OpenAI CLIP (TorchScript)

# --------------------------------------------------------------- recipe ----
num_classes = 400
num_frames = 8
frame_interval = 16  # --sampling_rate 16
img_size = 224
num_gpus = 3  # the released script: 3 GPUs x batch 64
batch_size = 64
base_lr = 1e-3 * num_gpus * batch_size / 256  # --blr 1e-3 per 256: 7.5e-4
weight_decay = 0.01  # main.py default; biases without decay
warmup_epochs = 2
max_epochs = 12
test_num_clips = 3  # 3 temporal x 1 spatial views
video_backend = 'pyav'

# ---------------------------------------------------------------- model ----
model = dict(
    backbone=dict(num_frames=num_frames, img_size=img_size,
                  expert=dict(pretrained=clip_weights),
                  adapter_pre_attn=False, adapter_pre_mlp=True),
    cls_head=dict(num_classes=num_classes))

# ----------------------------------------------------------------- data ----
train_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='STAdapterSample', num_frames=num_frames,
         sampling_rate=frame_interval),
    dict(type='VideoDecode'),
    # random_short_side_scale_jitter, --scale_range 1.0 1.15: short side in
    # [224, 257], then a random 224 crop; --mirror
    dict(type='RandomRescale', scale_range=(img_size, round(img_size * 1.15)),
         interpolation='bicubic'),
    dict(type='RandomCrop', size=img_size),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='STAdapterSample', num_frames=num_frames,
         sampling_rate=frame_interval, test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size), interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    # their temporal views: evenly from the start to the end of the video
    dict(type='STAdapterSample', num_frames=num_frames,
         sampling_rate=frame_interval, num_clips=test_num_clips,
         test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size), interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
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
