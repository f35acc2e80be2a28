# The demo CAST (configs/cast_demo.py) trained with FSDP2 on CPUs: the
# parameters, gradients and AdamW states sharded over the processes (gloo).
#
#   python tools/data/make_synthetic_data.py demo_data     # or: make demo
#   tools/dist_train.sh configs/cast_demo_fsdp.py 2 --work-dir work_dirs/demo_fsdp
#   python tools/convert/consolidate_checkpoint.py \
#       work_dirs/demo_fsdp/epoch_20.pth work_dirs/demo_fsdp/epoch_20_full.pth
#   python tools/test.py configs/cast_demo.py work_dirs/demo_fsdp/epoch_20_full.pth
#
# Checkpoints are sharded folders (epoch_N.pth/); --resume reads them on any
# number of processes (docs/distributed.md).
_base_ = ['./cast_demo.py', './_base_/strategies/fsdp.py']

env_cfg = dict(dist_cfg=dict(backend='gloo'))
