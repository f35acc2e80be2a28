# The CAST authors' schedule (KHU-VLL/CAST run_bidirection.py,
# scripts/ssv2/ssv2.sh): AdamW with layer-wise lr decay 0.75, fp16, lr
# 1e-3 x total batch / 256 for 16 GPUs x batch 6 x accumulation 4 (384),
# linear warm-up from 0 for 5 epochs, then cosine to min lr, advanced once
# per optimizer step; 50 epochs, validation after every epoch.
#
# A recipe with another accumulation or length overrides what differs:
#   optim_wrapper = dict(accumulative_counts=..., optimizer=dict(lr=...))
#   train_cfg = dict(max_epochs=...)
#   param_scheduler = [...]   (a list: written whole)
#   auto_scale_lr = dict(base_batch_size=...)   (GPUs x per-GPU batch)
num_gpus = 16  # the published runs: 16 GPUs x batch 6 x update_freq 4
update_freq = 4  # gradient accumulation
total_batch = num_gpus * 6 * update_freq  # 384
base_lr = 1e-3 * total_batch / 256  # 1.5e-3
min_lr_ratio = 1e-3  # min lr 1e-6 x total_batch / 256 (per layer scale)
warmup_epochs = 5
max_epochs = 50
layer_decay = 0.75
weight_decay = 0.05

train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_begin=1,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

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
        # one multi-tensor kernel instead of a Python loop over the ~300
        # trainable tensors (one launch per step on GPU; 0.03 s vs 0.08 s
        # per step on a 2-core CPU, docs/benchmarks.md); torch >= 2.4
        fused=True),
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
auto_scale_lr = dict(enable=False, base_batch_size=num_gpus * 6)
