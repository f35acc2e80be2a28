#!/usr/bin/env bash
# Testing on a SLURM cluster, one task per GPU (tools/test.py --launcher
# slurm).
#
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]
#
# Environment as tools/slurm_train.sh. docs/distributed.md
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,7p' "$0"; exit 1
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/_slurm_args.sh
source "$ROOT/tools/_slurm_args.sh"
exec srun "${SRUN_ARGS_ARRAY[@]}" \
    "$PYTHON" -u "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher slurm "$@"
