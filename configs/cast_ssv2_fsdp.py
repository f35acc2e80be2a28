# CAST ViT-B/16 on SSv2 (configs/cast_ssv2.py) with FSDP: parameters,
# gradients and optimizer states sharded across the GPUs by MMEngine's
# FlexibleRunner (configs/_base_/strategies/fsdp.py). Same recipe, same
# launch:
#
#   tools/dist_train.sh configs/cast_ssv2_fsdp.py 8
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 tools/dist_train.sh configs/cast_ssv2_fsdp.py 8
#
# FSDP needs GPUs (PyTorch refuses it on CPU-only hosts; there, use DDP).
# Checkpoints are full state dicts written by rank 0, so tools/test.py reads
# them as usual. See docs/benchmarks.md.
_base_ = ['./cast_ssv2.py', './_base_/strategies/fsdp.py']

# fp16 with a sharded gradient scaler
optim_wrapper = dict(use_fsdp=True)
