#!/usr/bin/env bash
# The CUDA-graph training loop (cast_mmaction/engine/cuda_graph.py) on a GPU,
# in one short device call (docs/training.md, "CUDA-graph training"):
#
#   benchmarks/scripts/gpu_graph_loop.sh OUT_DIR
#
# 1. tests/test_cuda_graph.py: the captured graph replayed against
#    MMEngine's train_step and through MMEngine's Runner (tiny model);
# 2. tools/gpu_check.py --checks cuda_graph at the recipe's batch of 6 and at
#    12 (ViT-B, fp16, accumulation 4, Mixup, drop path 0.3): the graph loop's
#    weights against two eager runs', and the whole step's time (data
#    preprocessor, forward, backward, loss scaler, AdamW) eager vs replayed.
# Writes graph_loop.log, gpu_check_cuda_graph_b6.json and _b12.json.
set -u
OUT=${1:?usage: benchmarks/scripts/gpu_graph_loop.sh OUT_DIR}
PY=${PYTHON:-python3}
. "$(dirname "$0")/timed_parts.sh"
open_log "$OUT" graph_loop.log
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
      --format=csv,noheader
  "$PY" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
  grep -m1 'model name' /proc/cpuinfo; nproc
} >> "$LOG" 2>&1
need_openmmlab
part tests 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda_graph.py
part check_b6 200 "$PY" tools/gpu_check.py --checks cuda_graph --steps 16 \
    --batch 6 --out "$OUT/gpu_check_cuda_graph_b6.json"
part check_b12 150 "$PY" tools/gpu_check.py --checks cuda_graph --steps 12 \
    --batch 12 --out "$OUT/gpu_check_cuda_graph_b12.json"
exit "$FAILED"
