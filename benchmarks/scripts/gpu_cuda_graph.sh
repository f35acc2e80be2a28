#!/usr/bin/env bash
# The recipe's training step and inference at batch 6 (fp16) captured as CUDA
# graphs (tools/benchmark.py --cuda-graph) against the same eager step, on a
# GPU, in one short device call (docs/benchmarks.md, GPU):
#
#   benchmarks/scripts/gpu_cuda_graph.sh OUT_DIR
#
# Writes graph_b6.json, eager_b6.json and graph.log into OUT_DIR; the graphed
# run first, each under its own time limit, so that a call cut short still
# returns the graphed figures.
set -u
OUT=${1:?usage: benchmarks/scripts/gpu_cuda_graph.sh OUT_DIR}
PY=${PYTHON:-python3}
. "$(dirname "$0")/timed_parts.sh"
open_log "$OUT" graph.log
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
} >> "$LOG" 2>&1
need_openmmlab
COMMON=(configs/cast_ssv2.py --device "${DEVICE:-cuda}" --amp fp16
        --batch-size 6 --steps 10 --warmup 3 --phases train,infer)
part graph 75 "$PY" tools/benchmark.py "${COMMON[@]}" --cuda-graph \
    --json "$OUT/graph_b6.json"
if [ "$FAILED" = 1 ]; then
    # if the capture failed inside an attention kernel: the same phases with
    # SDPA limited to the flash and memory-efficient kernels (no cuDNN), in
    # this process (benchmark.py's per-phase subprocess would not inherit the
    # context)
    for phase in train infer; do
        part "graph, flash/efficient SDPA only, $phase" 40 "$PY" -c '
import runpy, sys
from torch.nn.attention import SDPBackend, sdpa_kernel
sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]).__enter__()
sys.argv = ["tools/benchmark.py"] + sys.argv[1:]
runpy.run_path("tools/benchmark.py", run_name="__main__")' \
            "${COMMON[@]}" --cuda-graph --_phase "$phase"
    done
fi
part eager 60 "$PY" tools/benchmark.py "${COMMON[@]}" \
    --json "$OUT/eager_b6.json"
tail -n 60 "$LOG"
exit "$FAILED"
