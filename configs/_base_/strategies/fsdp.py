# FSDP2 (PyTorch's fully_shard, DTensor parameters) through MMEngine's
# FlexibleRunner: FSDP2Strategy (cast_mmaction/engine/fsdp2.py).
#
# Use as a second base of a recipe, e.g. configs/cast_ssv2_fsdp.py:
#   _base_ = ['./cast_ssv2.py', './_base_/strategies/fsdp.py']
# then launch as usual: tools/dist_train.sh configs/cast_ssv2_fsdp.py 8
#
# Every unit the experts, links and heads declare (fsdp_units(),
# cast_mmaction/engine/strategies.py) is sharded on its own, frozen experts
# included, then the root (embeddings, norms, adapters, head). Parameters,
# gradients and optimizer states are split over the ranks; a unit's weights
# are gathered for its forward / backward only. Runs on CPUs (gloo) and
# GPUs (nccl). Checkpoints are sharded folders (torch.distributed.checkpoint),
# resumable on any number of ranks; tools/convert/consolidate_checkpoint.py
# makes one ordinary file of one (docs/distributed.md).
#
# GPU options (refused on a CPU):
#   mixed_precision=dict(param_dtype='bf16', reduce_dtype='fp32')
#       bf16 compute, fp32 gradient reduction and fp32 master weights; no
#       loss scaler needed (use GuardedOptimWrapper, not the Amp wrapper)
#   cpu_offload=True: sharded parameters, gradients and the optimizer step
#       in host memory (CPUOffloadPolicy)
# MMEngine's own type='FSDPStrategy' (FSDP1) needs GPUs: PyTorch refuses it
# without an accelerator.
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDP2Strategy',
    # mixed_precision=dict(param_dtype='bf16', reduce_dtype='fp32'),  # GPUs
    cpu_offload=False,
    reshard_after_forward=True)
