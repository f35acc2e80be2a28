# FSDP (fully sharded data parallel) through MMEngine's FlexibleRunner.
#
# Use as a second base of a recipe, e.g. configs/cast_ssv2_fsdp.py:
#   _base_ = ['./cast_ssv2.py', './_base_/strategies/fsdp.py']
#   optim_wrapper = dict(use_fsdp=True)   # AmpOptimWrapper: sharded scaler
# then launch as usual: tools/dist_train.sh configs/cast_ssv2_fsdp.py 8
#
# Parameters (frozen experts included) are sharded per unit across the
# ranks; the units are the experts' attention / MLP modules and the B-CA
# links (cast_fsdp_wrap_policy, cast_mmaction/engine/strategies.py), the
# modules whose forward the backbone calls. use_orig_params keeps per-
# parameter lr groups (layer decay) and frozen parameters inside a unit.
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        auto_wrap_policy=dict(type='cast_fsdp_wrap_policy',
                              min_num_params=0),
        use_orig_params=True),
    # 'full': rank 0 writes one ordinary state dict (tools/test.py,
    # TrainableCheckpointHook and DDP runs read it); 'local': per-rank shards
    state_dict_cfg='full')
