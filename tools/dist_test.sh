#!/usr/bin/env bash
# Distributed testing with torchrun, one process per GPU.
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
#
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (and
# optionally RDZV_BACKEND=c10d) on every node as for tools/dist_train.sh.
# GPUS may also come from the environment. docs/distributed.md
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,8p' "$0"; exit 1
fi
CONFIG=$1
CHECKPOINT=$2
shift 2
if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    GPUS=$1
    shift
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/_torchrun_args.sh
source "$ROOT/tools/_torchrun_args.sh"
exec "$PYTHON" -m torch.distributed.run "${TORCHRUN_ARGS[@]}" \
    "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
