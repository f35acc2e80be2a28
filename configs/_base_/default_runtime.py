# Runtime shared by the CAST recipes: MMAction2 scope, the plugin import,
# a checkpoint every epoch (the last `max_keep_ckpts` kept, plus the best
# on the validation metric), logging, distributed / worker settings, and
# the reliability hooks of reliability.py.
_base_ = ['./reliability.py']

default_scope = 'mmaction'
custom_imports = dict(imports=['cast_mmaction'], allow_failed_imports=False)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, ignore_last=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # CheckpointHook whose files survive a kill at any moment (atomic writes,
    # old ones removed after the new one is complete, --resume finds a
    # complete one); type='CheckpointHook' for MMEngine's own
    checkpoint=dict(
        type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3,
        save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    sync_buffers=dict(type='SyncBuffersHook'),
    # logs which CPU speed-ups (model.backbone.speedups) run and why, once;
    # writes it into every checkpoint's meta['speedups']
    speedups=dict(type='SpeedupsHook'))
# logs "parameters: trainable 45.21M of 217.23M" when a run starts
custom_hooks = [dict(type='ParameterCountHook')]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # timeout: seconds a collective may wait for the other ranks before it
    # fails (a hung rank ends the run after this; RankWatchdogHook names a
    # dead one within default_hooks.rank_watchdog.timeout)
    dist_cfg=dict(backend='nccl', timeout=1800))

# the authors seed every rank with seed + rank
randomness = dict(seed=0, diff_rank_seed=True)

log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ActionVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False

