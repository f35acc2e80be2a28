# CAST ViT-B/16 on SSv2 (configs/cast_ssv2.py) with FSDP2: parameters,
# gradients and optimizer states sharded across the ranks by FSDP2Strategy
# under MMEngine's FlexibleRunner (configs/_base_/strategies/fsdp.py). Same
# recipe, same launch:
#
#   tools/dist_train.sh configs/cast_ssv2_fsdp.py 8
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 tools/dist_train.sh configs/cast_ssv2_fsdp.py 8
#
# Mixed precision is FSDP2's: bf16 weights in forward / backward, gradients
# reduced and the AdamW step taken in fp32 (no loss scaler: bf16 has fp32's
# range). For fp16 (the authors' DeepSpeed setting) on GPUs without bf16,
# set param_dtype='fp16' and optim_wrapper.type='GuardedAmpOptimWrapper'
# with its loss_scale (not run here: no GPU). Checkpoints are sharded
# folders; tools/convert/consolidate_checkpoint.py makes one file of one
# for tools/test.py (docs/distributed.md).
_base_ = ['./cast_ssv2.py', './_base_/strategies/fsdp.py']

strategy = dict(mixed_precision=dict(param_dtype='bf16', reduce_dtype='fp32'))

# the recipe's optimizer, accumulation and non-finite guard, without the
# fp16 autocast / loss scaler (FSDP2 casts the weights itself)
optim_wrapper = dict(
    _delete_=True,
    type='GuardedOptimWrapper',
    accumulative_counts={{_base_.update_freq}},
    optimizer=dict(
        type='AdamW',
        lr={{_base_.base_lr}},
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay={{_base_.weight_decay}},
        fused=True),
    constructor='CASTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate={{_base_.layer_decay}}))
