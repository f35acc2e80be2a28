# CAST ViT-B/16 on Kinetics-400: the published recipe
# (KHU-VLL/CAST scripts/kinetics/k400.sh, dataset/kinetics.py,
# run_bidirection.py). Reported top-1: 85.3 (5 clips x 3 crops).
#
#   tools/dist_train.sh configs/cast_k400.py 8          # one node, 8 GPUs
#   tools/dist_test.sh configs/cast_k400.py CKPT 8
#
# See docs/training.md for the data layout and multi-node runs.
_base_ = [
    '_base_/default_runtime.py', '_base_/models/cast_vit_b.py',
    '_base_/datasets/k400.py', '_base_/schedules/adamw_warmup_cosine_50e.py'
]

# Expert weights: OpenAI CLIP ViT-B/16 (TorchScript ViT-B-16.pt) and the
# official VideoMAE ViT-B/16 self-supervised K400 checkpoint ('model' dict,
# 'encoder.' keys).
clip_weights = 'checkpoints/ViT-B-16.pt'
vmae_weights = 'checkpoints/videomae_vit-b16_k400_pretrain.pth'

# ------------------------------------------------- what this recipe sets ----
# Data: _base_/datasets/k400.py (16 frames stride 4, 224 px, 5 clips x 3
# crops); schedule: _base_/schedules/adamw_warmup_cosine_50e.py with
# accumulation 6 and 70 epochs.
num_classes = 400
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
# the published runs: 16 GPUs x batch 6 x update_freq 6
update_freq = 6  # gradient accumulation
total_batch = 16 * 6 * update_freq  # 576
base_lr = 1e-3 * total_batch / 256  # 2.25e-3
max_epochs = 70

# ---------------------------------------------------------------- model ----
# The ViT-B CAST of _base_/models/cast_vit_b.py (= presets.cast_recognizer_cfg())
# with this recipe's clip size, weights, classes and regularisation.
model = dict(
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups=dict(preset='cpu'),
        num_frames={{_base_.num_frames}},
        img_size={{_base_.img_size}},
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

# ------------------------------------------------------------- schedule ----
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(accumulative_counts=update_freq,
                     optimizer=dict(lr=base_lr))
param_scheduler = [dict(
    type='LinearWarmupCosineLR',
    warmup_epochs={{_base_.warmup_epochs}},
    start_factor=0.0,
    eta_min_ratio={{_base_.min_lr_ratio}},
    by_epoch=True,
    begin=0,
    end=max_epochs,
    convert_to_iter_based=True)]
