# CAST ViT-B/16 on EPIC-KITCHENS-100 verb / noun / action recognition.
# Published recipe (KHU-VLL/CAST scripts/ek100/ek100.sh; REFERENCE.md):
# 16 GPUs x batch 6, update_freq 4 (effective batch 384), 50 epochs, AdamW
# lr 1e-3 x 384 / 256, wd 0.05, cosine with 5 warmup epochs, min lr 1e-6 x
# 384 / 256, layer decay 0.75, drop path 0.2, Mixup alpha 0.8 with prob 0.9
# (switch prob 0: no CutMix), label smoothing 0.1, RandAugment m7 n4, fp16,
# TSN 16 segments, test 2 clips x 3 crops. Reported: verb 72.5 / noun 60.9 /
# action 49.3 top-1 on the validation split.
#
# Train:  python tools/train.py configs/cast_ek100.py   (docs/ek100.md)
# Submit: python tools/analysis_tools/ek100_submission.py configs/cast_ek100.py CKPT ...
# bad samples counted, exact --resume, start-up checks (docs/reliability.md)
_base_ = ['_base_/reliability.py', '_base_/models/cast_vit_b_verb_noun.py',
          '_base_/datasets/ek100.py']
custom_imports = dict(imports=['cast_mmaction'], allow_failed_imports=False)
default_scope = 'mmaction'

# ---- data: _base_/datasets/ek100.py (the paths of your files are set there,
# for every EK100 recipe) ---------------------------------------------------

# ---- weights -----------------------------------------------------------------
# Experts: OpenAI CLIP ViT-B/16 (TorchScript ViT-B-16.pt) and the VideoMAE
# ViT-B/16 the authors self-supervised on EK100 (their README, "Expert model
# preparation"); a K400 VideoMAE checkpoint works too.
clip_weights = 'checkpoints/ViT-B-16.pt'
vmae_weights = 'checkpoints/videomae_vit_b_ek100_pretrain.pth'

num_gpus = 16          # x batch 6 per GPU (_base_/datasets/ek100.py)
update_freq = 4         # gradient accumulation
max_epochs = 50
warmup_epochs = 5
base_lr = 1e-3 * 6 * num_gpus * update_freq / 256   # 1.5e-3
min_lr = 1e-6 * 6 * num_gpus * update_freq / 256
layer_decay = 0.75

# ---- model: the CAST ViT-B of _base_/models/cast_vit_b_verb_noun.py
# (= presets.cast_recognizer_cfg(composition=True)): noun from the spatial
# (CLIP) stream, verb from the temporal (VideoMAE) stream
model = dict(
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups=dict(preset='cpu'),
        num_frames={{_base_.num_segments}},
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
auto_scale_lr = dict(enable=False, base_batch_size=6 * num_gpus)

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
