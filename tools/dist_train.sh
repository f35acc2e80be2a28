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
# RDZV_BACKEND=c10d: torch's c10d rendezvous at MASTER_ADDR:MASTER_PORT
#   (job RDZV_ID, default "cast"; node ranks are given out by the
#   rendezvous) instead of the static one that follows NODE_RANK.
# MAX_RESTARTS=N (one node only): torchrun restarts all workers up to N
#   times after a failure; they resume from the latest checkpoint
#   (ElasticResumeHook).
# GPUS may also come from the environment (GPUS=8 tools/dist_train.sh CONFIG).
# docs/distributed.md
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,19p' "$0"; exit 1
fi
CONFIG=$1
shift
if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    GPUS=$1
    shift
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/_torchrun_args.sh
source "$ROOT/tools/_torchrun_args.sh"
exec "$PYTHON" -m torch.distributed.run "${TORCHRUN_ARGS[@]}" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
