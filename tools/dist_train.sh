#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU.
#
#   tools/dist_train.sh CONFIG GPUS [train.py options]
#
# Multi-node: run the same command on every node with
#   NNODES (number of nodes), NODE_RANK (0 .. NNODES-1),
#   MASTER_ADDR (address of node 0), MASTER_PORT (a free port, same on all)
# e.g. 2 nodes x 8 GPUs (the published 16-GPU runs):
#   node 0: NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 tools/dist_train.sh configs/cast_ssv2.py 8
#   node 1: NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 tools/dist_train.sh configs/cast_ssv2.py 8
# GPUS may also come from the environment (GPUS=8 tools/dist_train.sh CONFIG).
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,13p' "$0"; exit 1
fi
CONFIG=$1
shift
if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    GPUS=$1
    shift
fi
GPUS=${GPUS:-1}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-${PORT:-29500}}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python}

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$MASTER_PORT" \
    --nproc_per_node="$GPUS" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
