# CAST ViT-B/16 on SSv2 (configs/cast_ssv2.py) with DeepSpeed ZeRO-2 and
# fp16, as the authors trained it, through MMEngine's FlexibleRunner
# (configs/_base_/strategies/deepspeed.py). DeepSpeed is not a dependency of
# cast_mmaction: `pip install deepspeed` first. Launch as usual:
#
#   tools/dist_train.sh configs/cast_ssv2_deepspeed.py 8
#
# See docs/benchmarks.md.
_base_ = ['./cast_ssv2.py', './_base_/strategies/deepspeed.py']

# DeepSpeed does the accumulation (the recipe's update_freq)
strategy = dict(gradient_accumulation_steps={{_base_.update_freq}})

# DeepSpeed's own fp16 loss scaler skips the steps whose gradients overflow
# (the recipe's GuardedAmpOptimWrapper does not apply to DeepSpeed)
optim_wrapper = dict(
    _delete_=True,
    type='DeepSpeedOptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr={{_base_.base_lr}},
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay={{_base_.weight_decay}}),
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate={{_base_.layer_decay}}))
