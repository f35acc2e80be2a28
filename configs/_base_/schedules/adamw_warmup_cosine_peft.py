# The schedule of the CLIP-PEFT baselines' releases (ST-Adapter, AIM;
# docs/baselines.md): AdamW under fp16 autocast, no weight decay on biases
# and 1-D tensors, no layer decay; lr warm-up from 0 over `warmup_epochs`,
# then a cosine to 0, stepped per iteration; validation every 5 epochs.
# A recipe sets its numbers:
#   train_cfg = dict(max_epochs=...)
#   optim_wrapper = dict(optimizer=dict(lr=..., weight_decay=...))
#   param_scheduler = [dict(param_scheduler[0], warmup_epochs=..., end=...)]
max_epochs = 12
warmup_epochs = 2

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_begin=1, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='GuardedAmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=0.01),
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0))  # no layer decay
param_scheduler = [dict(
    type='LinearWarmupCosineLR', warmup_epochs=warmup_epochs,
    start_factor=0.0, eta_min_ratio=0.0, by_epoch=True, begin=0,
    end=max_epochs, convert_to_iter_based=True)]
