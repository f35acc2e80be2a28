# Sourced by tools/dist_train.sh and tools/dist_test.sh: the torchrun
# arguments from the environment (GPUS, NNODES, NODE_RANK, MASTER_ADDR,
# MASTER_PORT or PORT, RDZV_BACKEND, RDZV_ID, MAX_RESTARTS), PYTHONPATH and
# OMP_NUM_THREADS; sets PYTHON and the array TORCHRUN_ARGS.
GPUS=${GPUS:-1}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-${PORT:-29500}}
RDZV_BACKEND=${RDZV_BACKEND:-static}
MAX_RESTARTS=${MAX_RESTARTS:-0}
PYTHON=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "$MAX_RESTARTS" != 0 ] && [ "$NNODES" != 1 ]; then
    echo "MAX_RESTARTS=$MAX_RESTARTS needs NNODES=1: the torchrun agents of" \
         "several nodes count restarts differently, and restarted workers" \
         "would not find each other; on several nodes resubmit the job with" \
         "--resume (docs/distributed.md#a-lost-rank)" >&2
    exit 2
fi
TORCHRUN_ARGS=(--nnodes="$NNODES" --nproc_per_node="$GPUS"
               --max_restarts="$MAX_RESTARTS")
case "$RDZV_BACKEND" in
    static)
        TORCHRUN_ARGS+=(--node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR"
                        --master_port="$MASTER_PORT") ;;
    c10d)
        TORCHRUN_ARGS+=(--rdzv_backend=c10d
                        --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT"
                        --rdzv_id="${RDZV_ID:-cast}") ;;
    *)
        echo "RDZV_BACKEND must be static or c10d, got '$RDZV_BACKEND'" >&2
        exit 2 ;;
esac
