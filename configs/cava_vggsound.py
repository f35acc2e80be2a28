# CAVA ViT-B/16 on VGGSound (309 classes): AST (audio) + CLIP (space) with
# bottleneck cross-attention between them in every layer, global windows
# (every audio patch sees every CLIP patch of the clip and vice versa).
# Architecture: joohyun7u/CA2ST models/ast_clip_cast.py
# (single_ast_clip_vit_base_patch16_224); tools/check_parity.py --config
# configs/cava_vggsound.py <cava dump> checks this file against it.
#
# The authors' audio training scripts are not public: the schedule below is
# CAST's published one (AdamW, lr 1e-3 x batch / 256, wd 0.05, cosine with 5
# warmup epochs, layer decay 0.75, label smoothing 0.1, mixup 0.8 / cutmix
# 1.0, fp16); the audio recipe (16 kHz mono, 128-bin Kaldi fbank, 1024
# frames, AudioSet normalisation, SpecAugment 2 x 70 frames / 2 x 20 bins) is
# the authors' VGGSound loader.
#
#   python tools/train.py configs/cava_vggsound.py
#   python tools/test.py configs/cava_vggsound.py work_dirs/.../best.pth
_base_ = ['_base_/default_runtime.py', '_base_/models/cava_vit_b.py']

# ---------------------------------------------------------------- paths ----
# Videos with their sound (mp4 with an audio track; the audio is decoded from
# the video). A list file holds "relative/path.mp4 label" per line, or use
# the official vggsound.csv (youtube_id,start_seconds,label,split) with
# video_path_tmpl naming the clip files. For separate audio files add
# data_prefix=dict(video=..., audio=<folder of <video stem>.wav>).
data_root = 'data/vggsound/videos'
ann_file_train = 'data/vggsound/vggsound.csv'
ann_file_val = 'data/vggsound/vggsound.csv'
label_map = 'data/vggsound/vggsound.csv'  # class names for tools/infer.py (the sorted labels)
video_path_tmpl = '{ytid}_{start:06d}.mp4'
# Experts: OpenAI CLIP ViT-B/16 (TorchScript) and the official AST AudioSet
# checkpoint (module.v.* keys; its 12 x 101 position grid is centre-cropped /
# resized to the 1024-frame input).
clip_weights = 'checkpoints/ViT-B-16.pt'
ast_weights = 'checkpoints/audioset_10_10_0.4593.pth'

# --------------------------------------------------------------- recipe ----
num_classes = 309
num_frames = 16
frame_interval = 4
img_size = 224
audio_frames = 1024  # 10.24 s of 10 ms fbank frames
num_mel_bins = 128
num_gpus = 16
batch_size = 6
update_freq = 4
total_batch = num_gpus * batch_size * update_freq
base_lr = 1e-3 * total_batch / 256
min_lr_ratio = 1e-3
warmup_epochs = 5
max_epochs = 30  # not published for the audio models: our choice
layer_decay = 0.75
drop_path = 0.2
label_smoothing = 0.1

# ---------------------------------------------------------------- model ----
# The CAVA ViT-B of _base_/models/cava_vit_b.py
# (= presets_av.cava_recognizer_cfg()) with this recipe's sizes and weights.
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
            audio=dict(input_fdim=num_mel_bins, input_tdim=audio_frames,
                       pretrained=ast_weights)),
        drop_path_rate=drop_path),
    cls_head=dict(num_classes=num_classes, label_smooth_eps=label_smoothing),
    data_preprocessor=dict(
        # one permutation and one weight for video, spectrogram and labels
        blending=dict(type='AudioVisualMixup', num_classes=num_classes,
                      mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                      switch_prob=0.5)))

# ----------------------------------------------------------------- data ----
audio_train = dict(type='LoadAudioFbank', sample_rate=16000,
                   num_mel_bins=num_mel_bins, target_length=audio_frames,
                   align='clip')
audio_test = dict(audio_train)
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1),
    dict(type='DecordDecode'),
    audio_train,
    dict(type='SpecAugment', time_mask=70, freq_mask=20, num_time_masks=2,
         num_freq_masks=2),
    dict(type='VideoRandAugment', config_str='rand-m7-n4-mstd0.5-inc1'),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
         aspect_ratio_range=(0.75, 1.3333)),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs')
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    audio_test,
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs')
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=2, test_mode=True),
    dict(type='DecordDecode'),
    audio_test,  # one spectrogram per clip, centred on it
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs')
]
# RobustDataset wraps the dataset (dataset_type); bad_sample per loader:
# training replaces an unreadable video (counted), validation scores it
# wrong (counted), testing stops naming it
dataset = dict(type='RobustDataset',
               dataset_type='VGGSoundDataset',
               data_prefix=dict(video=data_root),
               video_path_tmpl=video_path_tmpl)
train_dataloader = dict(
    batch_size=batch_size, num_workers=8, persistent_workers=True,
    drop_last=True, sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(dataset, bad_sample='replace', ann_file=ann_file_train,
                 split='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, bad_sample='flag', ann_file=ann_file_val,
                 split='test', pipeline=val_pipeline, test_mode=True))
test_dataloader = dict(
    batch_size=1, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, bad_sample='raise', ann_file=ann_file_val,
                 split='test', pipeline=test_pipeline, test_mode=True))
val_evaluator = dict(type='BadSampleAwareMetric', metric_type='AccMetric')
test_evaluator = val_evaluator

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_begin=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ------------------------------------------------------------ optimiser ----
optim_wrapper = dict(
    # fp16 ('GuardedOptimWrapper' on CPU); a NaN/inf loss skips the update
    type='GuardedAmpOptimWrapper',
    accumulative_counts=update_freq,
    optimizer=dict(type='AdamW', lr=base_lr, betas=(0.9, 0.999), eps=1e-8,
                   weight_decay=0.05,
                   fused=True),  # one kernel (docs/benchmarks.md)
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=layer_decay))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs,
         eta_min_ratio=min_lr_ratio, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True)
]
auto_scale_lr = dict(enable=False, base_batch_size=num_gpus * batch_size)
