# The MSCA authors' schedule (tamaki-lab/MSCA
# k400_attentionshift_div4_8x32_base_224.yml): SGD lr 0.1, momentum 0.9, no
# weight decay, gradient clip 1, accumulation 10, 18 epochs, lr x0.1 after
# epochs 10 and 15, validation after every epoch. For 2 GPUs x batch 21.
max_epochs = 18
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_begin=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='GuardedOptimWrapper',  # a NaN/inf loss skips the update
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    accumulative_counts=10)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[10, 15], gamma=0.1)
]
# `--auto-scale-lr` scales lr by (GPUs x batch_size) / 42: the authors'
# 2 x 21 clips per iteration (accumulation is kept at 10).
auto_scale_lr = dict(enable=False, base_batch_size=42)
