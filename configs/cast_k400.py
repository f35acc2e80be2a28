# CAST ViT-B/16 on Kinetics-400: the published recipe
# (KHU-VLL/CAST scripts/kinetics/k400.sh, dataset/kinetics.py,
# run_bidirection.py). Reported top-1: 85.3 (5 clips x 3 crops).
#
#   tools/dist_train.sh configs/cast_k400.py 8          # one node, 8 GPUs
#   tools/dist_test.sh configs/cast_k400.py CKPT 8
#
# See README.md, "Training and testing", for the data layout and multi-node runs.
_base_ = ['_base_/default_runtime.py', '_base_/models/cast_vit_b.py']

# ---------------------------------------------------------------- paths ----
# Videos resized to a short side of 320 px, split into a train and a val
# folder; list files hold "relative/path.mp4 label" per line (the authors'
# train.csv / val.csv are in this format). Paths are relative to the
# directory you run from.
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
ann_file_test = 'data/kinetics400/kinetics400_val_list_videos.txt'
label_map = 'data/kinetics400/label_map_k400.txt'  # class names for tools/infer.py; written by tools/prepare_k400.py
# Expert weights: OpenAI CLIP ViT-B/16 (TorchScript ViT-B-16.pt) and the
# official VideoMAE ViT-B/16 self-supervised K400 checkpoint ('model' dict,
# 'encoder.' keys).
clip_weights = 'checkpoints/ViT-B-16.pt'
vmae_weights = 'checkpoints/videomae_vit-b16_k400_pretrain.pth'

# --------------------------------------------------------------- recipe ----
num_classes = 400
num_frames = 16  # dense sampling: 16 frames, stride 4
frame_interval = 4
img_size = 224
num_gpus = 16  # the published runs: 16 GPUs x batch 6 x update_freq 6
batch_size = 6  # per GPU
update_freq = 6  # gradient accumulation
total_batch = num_gpus * batch_size * update_freq  # 576
base_lr = 1e-3 * total_batch / 256  # 2.25e-3
min_lr_ratio = 1e-3  # min lr 1e-6 x total_batch / 256 (per layer scale)
warmup_epochs = 5
max_epochs = 70
layer_decay = 0.75
weight_decay = 0.05
drop_path = 0.2
label_smoothing = 0.1
# timm Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5, switch_prob=0):
# the published scripts pass --mixup_switch_prob 0, so a mixed batch is
# always mixup (cutmix is configured but never chosen); set
# mixup_switch_prob=0.5 for timm's default even split.
mixup_alpha = 0.8
cutmix_alpha = 1.0
mixup_prob = 0.5
mixup_switch_prob = 0.0
rand_augment = 'rand-m7-n4-mstd0.5-inc1'
test_num_clips = 5
test_num_crops = 3  # ThreeCrop
# Video decoder (cast_mmaction/datasets/transforms/decoding.py): 'pyav',
# 'decord' or 'torchcodec' give identical frames (tests/test_decoding.py);
# PyAV, one thread per worker, is the fastest here (docs/data_pipeline.md).
video_backend = 'pyav'

# ---------------------------------------------------------------- model ----
# The ViT-B CAST of _base_/models/cast_vit_b.py (= presets.cast_recognizer_cfg())
# with this recipe's clip size, weights, classes and regularisation.
model = dict(
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups='cpu',
        num_frames=num_frames,
        img_size=img_size,
        experts=dict(
            clip=dict(pretrained=clip_weights),
            vmae=dict(pretrained=vmae_weights)),
        drop_path_rate=drop_path),
    cls_head=dict(num_classes=num_classes, label_smooth_eps=label_smoothing),
    data_preprocessor=dict(
        blending=dict(
            type='RandomBatchAugment',
            augments=[
                dict(type='MixupBlending', alpha=mixup_alpha,
                     num_classes=num_classes),
                dict(type='CutmixBlending', alpha=cutmix_alpha,
                     num_classes=num_classes),
            ],
            probs=[
                mixup_prob * (1 - mixup_switch_prob),
                mixup_prob * mixup_switch_prob
            ])))

# ----------------------------------------------------------------- data ----
dataset_type = 'VideoDataset'
train_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    # the authors' clip: 16 frames spread evenly over a random 64-frame span
    dict(type='DenseSpanSample', clip_len=num_frames,
         frame_interval=frame_interval),
    dict(type='VideoDecode'),
    dict(type='VideoRandAugment', config_str=rand_augment),
    dict(
        type='RandomResizedCrop',
        area_range=(0.08, 1.0),
        aspect_ratio_range=(0.75, 1.3333)),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    # the middle one of the test windows
    dict(type='DenseSpanSample', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1, test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    # the authors' test: every 4th frame cut into 5 windows of 16, the
    # first and the last at the ends of the video
    dict(type='DenseSpanSample', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=test_num_clips,
         test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    drop_last=True,
    # the same batches after a mid-epoch --resume
    sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(
        type='RobustDataset',
        bad_sample='replace',  # unreadable: another sample, counted
        dataset_type=dataset_type,
        ann_file=ann_file_train,
        data_prefix=dict(video=data_root),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=9,  # 1.5 x batch_size, as the authors
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RobustDataset',
        bad_sample='flag',  # unreadable: scored wrong and counted
        dataset_type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root_val),
        pipeline=val_pipeline,
        test_mode=True))
test_dataloader = dict(
    batch_size=1,  # one video = 5 clips x 3 crops
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RobustDataset',
        bad_sample='raise',  # unreadable: an error naming the file
        dataset_type=dataset_type,
        ann_file=ann_file_test,
        data_prefix=dict(video=data_root_val),
        pipeline=test_pipeline,
        test_mode=True))

# flagged (unreadable) samples count as wrong; acc/bad_samples counts them
val_evaluator = dict(type='BadSampleAwareMetric', metric_type='AccMetric')
test_evaluator = val_evaluator

train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_begin=1,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ------------------------------------------------------------ optimiser ----
optim_wrapper = dict(
    # fp16, as the authors' DeepSpeed runs; a NaN/inf loss skips the update
    # (nonfinite='skip', the default; 'stop' stops the run)
    type='GuardedAmpOptimWrapper',
    loss_scale=dict(init_scale=2.0**7, growth_interval=128),
    accumulative_counts=update_freq,
    optimizer=dict(
        type='AdamW',
        lr=base_lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=weight_decay,
        fused=True),  # one kernel for all tensors (docs/benchmarks.md)
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=layer_decay))

param_scheduler = [dict(
    # the authors' cosine_scheduler step for step: linear warm-up from
    # exactly 0 (both ends included), then cosine to min_lr (x layer scale),
    # advanced once per optimizer step (cast_mmaction/engine/schedulers.py)
    type='LinearWarmupCosineLR',
    warmup_epochs=warmup_epochs,
    start_factor=0.0,
    eta_min_ratio=min_lr_ratio,
    by_epoch=True,
    begin=0,
    end=max_epochs,
    convert_to_iter_based=True)]

# `tools/train.py --auto-scale-lr` rescales base_lr linearly to the GPUs x
# batch_size you run with (accumulation unchanged), as the authors' rule.
auto_scale_lr = dict(enable=False, base_batch_size=num_gpus * batch_size)
