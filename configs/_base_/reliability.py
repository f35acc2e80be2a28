# What a run does with unreadable videos, interruptions and checkpoints that
# do not fit the model: hooks that every runner builds from the config, so
# MMAction2's own tools/train.py and tools/test.py (what `mim train` runs),
# this package's tools and a plain Runner.from_cfg(cfg) behave the same
# (docs/reliability.md). Inherited by default_runtime.py; needs
# custom_imports = dict(imports=['cast_mmaction']).
#
# The hooks are named entries of default_hooks (not custom_hooks) so that
# a recipe or user config that sets its own custom_hooks list keeps them,
# and each is overridden by name, e.g.
#   --cfg-options default_hooks.bad_samples.max_bad_fraction=0.05
# The other half of the wiring is in each recipe: its datasets wrapped in
# RobustDataset (bad_sample='replace' / 'flag' / 'raise'), the training
# sampler ReproducibleSampler, the metrics in BadSampleAwareMetric and the
# optimiser wrapper GuardedOptimWrapper / GuardedAmpOptimWrapper
# (nonfinite='skip' | 'stop').
default_hooks = dict(
    # counts and logs the training samples RobustDataset replaced; more than
    # max_bad_fraction of the training set unreadable stops the run
    bad_samples=dict(type='BadSampleHook', max_bad_fraction=0.01),
    # random states in every checkpoint; --resume continues mid-epoch at the
    # right batch (with ReproducibleSampler and RobustDataset(reseed=True))
    resume_state=dict(type='ResumeStateHook'),
    # expert widths vs head, checkpoint vs model (tools/test.py, load_from,
    # --resume), dataset label bound vs head, before the first iteration
    startup_check=dict(type='StartupCheckHook'),
    # distributed runs: a rank without a heartbeat for `timeout` s is named
    # ("rank 1 (node 1) lost: ...") on every other rank, which then stop
    # (docs/distributed.md); nothing happens in a single process
    rank_watchdog=dict(type='RankWatchdogHook', interval=5, timeout=60),
    # workers restarted by torchrun --max-restarts resume from the work
    # dir's latest checkpoint (resume=True); the first attempt is left alone
    elastic_resume=dict(type='ElasticResumeHook'))
