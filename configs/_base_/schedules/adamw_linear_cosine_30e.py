# The schedule of the audio-visual recipes (CAVA, CA2ST). The authors' audio
# training scripts are not public: this is CAST's published optimiser (AdamW,
# lr 1e-3 x total batch / 256 for 16 GPUs x batch 6 x accumulation 4, wd
# 0.05, layer decay 0.75, fp16) with a linear warm-up from 1e-3 x lr over 5
# epochs, then cosine to 1e-3 x lr; 30 epochs (our choice), validation after
# every epoch.
num_gpus = 16
update_freq = 4
total_batch = num_gpus * 6 * update_freq
base_lr = 1e-3 * total_batch / 256
min_lr_ratio = 1e-3
warmup_epochs = 5
max_epochs = 30  # not published for the audio models: our choice
layer_decay = 0.75

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_begin=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

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
auto_scale_lr = dict(enable=False, base_batch_size=num_gpus * 6)
