# CAST ViT-B/16 on EPIC-KITCHENS-100 verb / noun / action recognition.
# Published recipe (KHU-VLL/CAST scripts/ek100/ek100.sh; REFERENCE.md):
# 16 GPUs x batch 6, update_freq 4 (effective batch 384), 50 epochs, AdamW
# lr 1e-3 x 384 / 256, wd 0.05, cosine with 5 warmup epochs, min lr 1e-6 x
# 384 / 256, layer decay 0.75, drop path 0.2, Mixup alpha 0.8 with prob 0.9
# (switch prob 0: no CutMix), label smoothing 0.1, RandAugment m7 n4, fp16,
# TSN 16 segments, test 2 clips x 3 crops. Reported: verb 72.5 / noun 60.9 /
# action 49.3 top-1 on the validation split.
#
# Train:  python tools/train.py configs/cast_ek100.py   (README.md, "EPIC-KITCHENS-100")
# Submit: python tools/ek100_submission.py configs/cast_ek100.py CKPT ...
# bad samples counted, exact --resume, start-up checks (docs/reliability.md)
_base_ = ['_base_/reliability.py', '_base_/models/cast_vit_b_verb_noun.py']
custom_imports = dict(imports=['cast_mmaction'], allow_failed_imports=False)
default_scope = 'mmaction'

# ---- where your files are ---------------------------------------------------
# Videos: one file per video_id. The official release is
# <ek100_video_root>/P01/videos/P01_01.MP4; for a flat folder of re-encoded
# copies set ek100_video_path_tmpl = '{video_id}.mp4' (any CSV column can be
# used). For the authors' pre-trimmed clips, point the CSVs at their
# "clip_path,verb_class,noun_class" lists and ek100_video_root at the clips.
ek100_video_root = 'data/ek100/videos'
ek100_video_path_tmpl = '{participant_id}/videos/{video_id}.MP4'
ek100_ann_root = 'data/ek100/epic-kitchens-100-annotations'
ek100_train_csv = ek100_ann_root + '/EPIC_100_train.csv'
ek100_val_csv = ek100_ann_root + '/EPIC_100_validation.csv'
ek100_test_csv = ek100_ann_root + '/EPIC_100_test_timestamps.csv'
label_map = dict(verb=ek100_ann_root + '/EPIC_100_verb_classes.csv', noun=ek100_ann_root + '/EPIC_100_noun_classes.csv')  # tools/infer.py
# Experts: OpenAI CLIP ViT-B/16 (TorchScript ViT-B-16.pt) and the VideoMAE
# ViT-B/16 the authors self-supervised on EK100 (their README, "Expert model
# preparation"); a K400 VideoMAE checkpoint works too.
clip_weights = 'checkpoints/ViT-B-16.pt'
vmae_weights = 'checkpoints/videomae_vit_b_ek100_pretrain.pth'
video_backend = 'decord'  # or 'pyav'

num_segments = 16
num_test_clips = 2
batch_size = 6          # per GPU; 16 GPUs in the published run
num_gpus = 16
update_freq = 4         # gradient accumulation
max_epochs = 50
warmup_epochs = 5
base_lr = 1e-3 * batch_size * num_gpus * update_freq / 256   # 1.5e-3
min_lr = 1e-6 * batch_size * num_gpus * update_freq / 256
layer_decay = 0.75

# ---- model: the CAST ViT-B of _base_/models/cast_vit_b_verb_noun.py
# (= presets.cast_recognizer_cfg(composition=True)): noun from the spatial
# (CLIP) stream, verb from the temporal (VideoMAE) stream
model = dict(
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups='cpu',
        num_frames=num_segments,
        experts=dict(
            clip=dict(pretrained=clip_weights),
            vmae=dict(pretrained=vmae_weights)),
        drop_path_rate=0.2),
    cls_head=dict(label_smooth_eps=0.1),
    data_preprocessor=dict(
        # one lam and one permutation for the clips, the verbs and the nouns
        blending=dict(type='VerbNounMixupCutmix', num_verbs=97,
                      num_nouns=300, mixup_alpha=0.8, cutmix_alpha=1.0,
                      prob=0.9, switch_prob=0.0)))

# ---- data ---------------------------------------------------------------------
dataset_type = 'EpicKitchens100Dataset'
train_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments),
    dict(type='EpicDecode'),
    dict(type='Resize', scale=(-1, 256)),  # no-op on 256-px re-encodes
    dict(type='VideoRandAugment', config_str='rand-m7-n4-mstd0.5-inc1'),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
         aspect_ratio_range=(3 / 4, 4 / 3)),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackEpicInputs'),
]
val_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments, num_clips=1,
         test_mode=True),
    dict(type='EpicDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackEpicInputs'),
]
test_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments,
         num_clips=num_test_clips, test_mode=True),
    dict(type='EpicDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackEpicInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(type='RobustDataset',
                 bad_sample='replace',  # unreadable: another sample, counted
                 dataset_type=dataset_type,
                 ann_file=ek100_train_csv,
                 data_prefix=dict(video=ek100_video_root),
                 video_path_tmpl=ek100_video_path_tmpl,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='RobustDataset',
                 bad_sample='flag',  # unreadable: scored wrong, counted
                 dataset_type=dataset_type,
                 ann_file=ek100_val_csv,
                 data_prefix=dict(video=ek100_video_root),
                 video_path_tmpl=ek100_video_path_tmpl,
                 pipeline=val_pipeline, test_mode=True))
# 2 clips x 3 crops on the validation split; tools/ek100_submission.py
# swaps in ek100_test_csv (unlabelled) to write a challenge submission.
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='RobustDataset',
                 bad_sample='raise',  # unreadable: an error naming it
                 dataset_type=dataset_type,
                 ann_file=ek100_val_csv,
                 data_prefix=dict(video=ek100_video_root),
                 video_path_tmpl=ek100_video_path_tmpl,
                 pipeline=test_pipeline, test_mode=True))
# flagged (unreadable) samples count as wrong; ek100/bad_samples counts them
val_evaluator = dict(type='BadSampleAwareMetric',
                     metric_type='EpicKitchensMetric')
test_evaluator = dict(type='BadSampleAwareMetric',
                      metric_type='EpicKitchensMetric')

# ---- schedule -----------------------------------------------------------------
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_begin=1, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    # fp16 as published ('GuardedOptimWrapper' on CPU); a NaN/inf loss
    # skips the update (nonfinite='skip'; 'stop' stops the run)
    type='GuardedAmpOptimWrapper',
    accumulative_counts=update_freq,
    optimizer=dict(type='AdamW', lr=base_lr, betas=(0.9, 0.999),
                   weight_decay=0.05,
                   fused=True),  # one kernel (docs/benchmarks.md)
    # lr x 0.75 ** (13 - layer id); no weight decay on 1-D params, biases
    # and the B-CA position tables; frozen experts get no param group
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=layer_decay))
# the authors' cosine_scheduler step for step: linear warm-up from exactly 0
# (both ends included), then cosine to min_lr (x layer scale), advanced once
# per optimizer step (cast_mmaction/engine/schedulers.py)
param_scheduler = [dict(type='LinearWarmupCosineLR', warmup_epochs=warmup_epochs,
                       start_factor=0.0, eta_min_ratio=min_lr / base_lr,
                       by_epoch=True, begin=0, end=max_epochs,
                       convert_to_iter_based=True)]
# the lr above is for 16 GPUs x 6 clips; `--auto-scale-lr` rescales it
auto_scale_lr = dict(enable=False, base_batch_size=batch_size * num_gpus)

# ---- runtime -------------------------------------------------------------------
default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, ignore_last=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='AtomicCheckpointHook', interval=5, max_keep_ckpts=3,
                    save_best='ek100/action_top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    sync_buffers=dict(type='SyncBuffersHook'),
    # which CPU speed-ups run and why: logged once, in every checkpoint's meta
    speedups=dict(type='SpeedupsHook'))
custom_hooks = [dict(type='ParameterCountHook')]  # trainable / total params
env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ActionVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)  # authors: seed + rank
