# CA2ST ViT-B/16 on EPIC-KITCHENS-100 verb / noun / action recognition with
# the audio of the videos. Model: compo_cast_single_ast_Bsquare_CA9 of
# joohyun7u/CA2ST (checked by the ca2st_composition dump):
#   noun = head_noun(adapter(clip) + audio_adapter(audio)),
#   verb = head_verb(adapter(vmae) + audio_adapter(audio)).
# Data and schedule: the CAST EK100 recipe (configs/cast_ek100.py: TSN 16
# segments inside the annotated segment, 50 epochs, AdamW 1.5e-3, layer decay
# 0.75, mixup 0.8 with prob 0.9, label smoothing 0.1, 2 clips x 3 crops);
# audio: a 400-frame (4 s) spectrogram centred on the sampled frames, cut
# inside the segment from the video's audio track.
#
#   python tools/train.py configs/ca2st_ek100.py
_base_ = ['_base_/default_runtime.py',
          '_base_/models/ca2st_vit_b_verb_noun.py', '_base_/datasets/ek100.py']

# ---- data: _base_/datasets/ek100.py (the paths of your files are set there,
# for every EK100 recipe), with the audio pipelines below

# ---- weights -----------------------------------------------------------------
clip_weights = 'checkpoints/ViT-B-16.pt'
vmae_weights = 'checkpoints/videomae_vit_b_ek100_pretrain.pth'
ast_weights = 'checkpoints/audioset_10_10_0.4593.pth'

audio_frames = 400
num_gpus = 16  # x batch 6 per GPU (_base_/datasets/ek100.py)
update_freq = 4
max_epochs = 50
warmup_epochs = 5
base_lr = 1e-3 * 6 * num_gpus * update_freq / 256
min_lr = 1e-6 * 6 * num_gpus * update_freq / 256
layer_decay = 0.75

# The CA2ST ViT-B of _base_/models/ca2st_vit_b_verb_noun.py
# (= presets_av.ca2st_recognizer_cfg(composition=True)).
model = dict(
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups=dict(preset='cpu'),
        num_frames={{_base_.num_segments}},
        experts=dict(
            clip=dict(pretrained=clip_weights),
            vmae=dict(pretrained=vmae_weights),
            audio=dict(input_tdim=audio_frames, pretrained=ast_weights)),
        drop_path_rate=0.2),
    cls_head=dict(label_smooth_eps=0.1),
    data_preprocessor=dict(
        blending=dict(type='AudioVisualMixup', num_verbs=97, num_nouns=300,
                      mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.9,
                      switch_prob=0.0)))

# ---- data ---------------------------------------------------------------------
audio = dict(type='LoadAudioFbank', sample_rate=16000, num_mel_bins=128,
             target_length=audio_frames, align='clip')
train_pipeline = [
    dict(type='EpicVideoInit', backend={{_base_.video_backend}}),
    dict(type='EpicSampleFrames', num_segments={{_base_.num_segments}}),
    dict(type='EpicDecode'),
    audio,
    dict(type='SpecAugment', time_mask=70, freq_mask=20),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='VideoRandAugment', config_str='rand-m7-n4-mstd0.5-inc1'),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
         aspect_ratio_range=(3 / 4, 4 / 3)),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
val_pipeline = [
    dict(type='EpicVideoInit', backend={{_base_.video_backend}}),
    dict(type='EpicSampleFrames', num_segments={{_base_.num_segments}},
         num_clips=1, test_mode=True),
    dict(type='EpicDecode'),
    audio,
    dict(type='Resize', scale=(-1, 224)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
test_pipeline = [
    dict(type='EpicVideoInit', backend={{_base_.video_backend}}),
    dict(type='EpicSampleFrames', num_segments={{_base_.num_segments}},
         num_clips={{_base_.num_test_clips}}, test_mode=True),
    dict(type='EpicDecode'),
    audio,
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

# ---- schedule -----------------------------------------------------------------
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_begin=1, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='GuardedAmpOptimWrapper',  # a NaN/inf loss skips the update
    accumulative_counts=update_freq,
    optimizer=dict(type='AdamW', lr=base_lr, betas=(0.9, 0.999),
                   weight_decay=0.05,
                   fused=True),  # one kernel (docs/benchmarks.md)
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=layer_decay))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs,
         eta_min=min_lr, by_epoch=True, begin=warmup_epochs, end=max_epochs,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=6 * num_gpus)
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=5, max_keep_ckpts=3,
                    save_best='ek100/action_top1', rule='greater'))
