#!/usr/bin/env bash
# Training on a SLURM cluster: srun starts one task per GPU, and each runs
# tools/train.py --launcher slurm (MMEngine reads SLURM_PROCID, SLURM_NTASKS,
# SLURM_LOCALID and SLURM_NODELIST; node 0's address comes from scontrol).
#
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py options]
#
# Environment: GPUS (tasks in all, default 8), GPUS_PER_NODE (default 8),
# CPUS_PER_TASK (default 5), MASTER_PORT (default 29500), SRUN_ARGS (more
# srun options, e.g. "--time=2-00:00:00"), PYTHON (default python).
# e.g. 2 nodes x 8 GPUs:
#   GPUS=16 tools/slurm_train.sh gpu cast_ssv2 configs/cast_ssv2.py --amp
# docs/distributed.md
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,13p' "$0"; exit 1
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/_slurm_args.sh
source "$ROOT/tools/_slurm_args.sh"
exec srun "${SRUN_ARGS_ARRAY[@]}" \
    "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "$@"
