# MSCA-KV (Hashiguchi & Tamaki, ACCV 2022 workshops) on Kinetics-400:
# frame-wise ViT-B/16 (ImageNet-21k) whose attention heads 0 / 11 take their
# keys and values from frame t+1 / t-1 in every block (shift_div 12).
# Published recipe (tamaki-lab/MSCA k400_attentionshift_div4_8x32_base_224.yml;
# the file name says div4 but SHIFT_DIV is 12): 8 frames x stride 32,
# mean/std 0.5, SGD lr 0.1 momentum 0.9 wd 0, 18 epochs, x0.1 at 10 and 15,
# gradient clip 1, label smoothing 0.1 (their LABEL_SMOOTH flag switches on a
# LabelSmoothingCrossEntropy(0.1)), flip + short side 224-330 + random 224
# crop + light colour jitter; test 10 clips x 3 crops, logits averaged.
# tokshift_k400.py, vit_framewise_k400.py and msca_ssv2.py inherit from here.
#
#   python tools/train.py configs/msca_k400.py
#   tools/dist_train.sh configs/msca_k400.py 2    # the authors' 2 GPUs
_base_ = ['_base_/default_runtime.py', '_base_/models/msca_vit_b.py',
          '_base_/schedules/sgd_multistep_18e.py']

# ImageNet-21k ViT-B/16: timm vit_base_patch16_224.orig_in21k
# (model.safetensors or pytorch_model.bin from its hub page) or the original
# JAX imagenet21k/ViT-B_16.npz (the ViT-B_16_Img21.npz of the authors' README)
vit_weights = 'checkpoints/vit_base_patch16_224.orig_in21k.safetensors'
# class names for tools/infer.py; written by tools/data/prepare_k400.py
label_map = 'data/kinetics400/label_map_k400.txt'

num_frames = 8
frame_interval = 32
img_size = 224

# The MSCA-KV ViT-B/16 of _base_/models/msca_vit_b.py with its weights.
model = dict(
    backbone=dict(img_size=img_size, pretrained=vit_weights))

dataset_type = 'VideoDataset'
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
ann_file_test = 'data/kinetics400/kinetics400_val_list_videos.txt'


def _jitter(**kw):
    """One colour change applied with probability 0.1, as the authors'
    clip_random_{brightness,saturation,hue} (gamma has no MMAction2
    transform; saturation is capped at 2, ColorJitter's limit)."""
    args = dict(brightness=(1.0, 1.0), contrast=(1.0, 1.0),
                saturation=(1.0, 1.0), hue=(0.0, 0.0))
    args.update(kw)
    return dict(type='mmcv.RandomApply', prob=0.1,
                transforms=[dict(type='ColorJitter', **args)])


train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='RandomRescale', scale_range=(224, 330)),
    dict(type='RandomCrop', size=img_size),
    _jitter(brightness=(0.5, 2.0)),
    _jitter(saturation=(0.5, 2.0)),
    _jitter(hue=(-0.5, 0.5)),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
# validation during training: 1 clip x 3 crops (the authors' VAL_SAMPLE_TIMES 1)
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=10, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]

# The authors: 2 GPUs x 21 clips, gradients accumulated over 10 iterations
# (420 clips per SGD step) for lr 0.1.
train_dataloader = dict(
    batch_size=21,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(type='RobustDataset',
                 bad_sample='replace',  # unreadable: another sample, counted
                 dataset_type=dataset_type,
                 ann_file=ann_file_train,
                 data_prefix=dict(video=data_root), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='RobustDataset',
                 bad_sample='flag',  # unreadable: scored wrong, counted
                 dataset_type=dataset_type,
                 ann_file=ann_file_val,
                 data_prefix=dict(video=data_root_val),
                 pipeline=val_pipeline, test_mode=True))
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='RobustDataset',
                 bad_sample='raise',  # unreadable: an error naming it
                 dataset_type=dataset_type,
                 ann_file=ann_file_test,
                 data_prefix=dict(video=data_root_val),
                 pipeline=test_pipeline, test_mode=True))

val_evaluator = dict(type='BadSampleAwareMetric', metric_type='AccMetric')
test_evaluator = val_evaluator

# schedule: _base_/schedules/sgd_multistep_18e.py (the authors', as published)
