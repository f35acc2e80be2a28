# Sourced by tools/slurm_train.sh and tools/slurm_test.sh: the srun options
# from PARTITION, JOB_NAME and the environment (GPUS, GPUS_PER_NODE,
# CPUS_PER_TASK, MASTER_PORT, SRUN_ARGS), PYTHONPATH and OMP_NUM_THREADS;
# sets PYTHON and the array SRUN_ARGS_ARRAY.
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
PYTHON=${PYTHON:-python}
for name in GPUS GPUS_PER_NODE CPUS_PER_TASK; do
    if ! [[ ${!name} =~ ^[0-9]+$ ]] || [ "${!name}" -lt 1 ]; then
        echo "$name must be a positive integer, got '${!name}'" >&2
        exit 2
    fi
done
export MASTER_PORT=${MASTER_PORT:-29500}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_TASK}
TASKS_PER_NODE=$(( GPUS < GPUS_PER_NODE ? GPUS : GPUS_PER_NODE ))
# shellcheck disable=SC2206  (SRUN_ARGS is split into words on purpose)
SRUN_ARGS_ARRAY=(-p "$PARTITION" --job-name="$JOB_NAME"
                 --gres=gpu:"$TASKS_PER_NODE" --ntasks="$GPUS"
                 --ntasks-per-node="$TASKS_PER_NODE"
                 --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1
                 ${SRUN_ARGS:-})
