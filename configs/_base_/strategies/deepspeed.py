# DeepSpeed through MMEngine's FlexibleRunner (the authors trained CAST with
# DeepSpeed: fp16, dynamic loss scale 2^7 with window 128).
#
# DeepSpeed is not a dependency of cast_mmaction (it is not installed in the
# test environment): `pip install deepspeed` on the GPU nodes first.
# Use as a second base of a recipe, e.g. configs/cast_ssv2_deepspeed.py:
#   _base_ = ['./cast_ssv2.py', './_base_/strategies/deepspeed.py']
#   optim_wrapper = dict(_delete_=True, type='DeepSpeedOptimWrapper',
#                        optimizer=..., constructor=..., paramwise_cfg=...)
# and launch with tools/dist_train.sh as usual. Gradient accumulation is
# DeepSpeed's gradient_accumulation_steps (set it to the recipe's
# update_freq); the optim wrapper's accumulative_counts is not used.
runner_type = 'FlexibleRunner'
strategy = dict(
    type='DeepSpeedStrategy',
    fp16=dict(
        enabled=True,
        fp16_master_weights_and_grads=False,
        loss_scale=0,  # dynamic
        initial_scale_power=7,
        loss_scale_window=128,
        hysteresis=2,
        min_loss_scale=1),
    inputs_to_half=['inputs'],  # the clip, after the data preprocessor
    zero_optimization=dict(
        stage=2,  # shard optimizer states and gradients
        allgather_partitions=True,
        reduce_scatter=True,
        allgather_bucket_size=int(5e8),
        reduce_bucket_size=int(5e8),
        overlap_comm=True,
        contiguous_gradients=True,
        cpu_offload=False),
    # the frozen experts are left out of DeepSpeed checkpoints
    exclude_frozen_parameters=True)
