#!/usr/bin/env bash
# The training step on a GPU beyond the recipe's batch: ours at batch 12, 24
# and 48 (fp16), the GPU's matmul rate at the model's shapes, and
# torch.compile's training step at the recipe's batch of 6. A second device
# call after tools/benchmark/gpu_figures.sh, to see whether the batch-6 step
# is set by the GPU's arithmetic (docs/benchmarks.md, GPU):
#
#   benchmarks/scripts/gpu_batch_sweep.sh OUT_DIR
#
# Writes gpu_b{12,24,48}.json, gpu_peak_b6.json, gpu_compile_b6.json and
# sweep.log into OUT_DIR; each part under its own time limit (410 s together).
set -u
OUT=${1:?usage: benchmarks/scripts/gpu_batch_sweep.sh OUT_DIR}
PY=${PYTHON:-python3}
. "$(dirname "$0")/timed_parts.sh"
open_log "$OUT" sweep.log
need_openmmlab
DEV=${DEVICE:-cuda}
for spec in 12:60 24:70 48:90; do
    b=${spec%:*}
    part "batch $b" "${spec#*:}" "$PY" tools/benchmark.py configs/cast_ssv2.py \
        --device "$DEV" --amp fp16 --batch-size "$b" --steps 5 --warmup 2 \
        --phases train,infer --json "$OUT/gpu_b$b.json"
done
part "peak" 40 "$PY" tools/benchmark.py configs/cast_ssv2.py --device "$DEV" \
    --amp fp16 --batch-size 6 --phases peak --json "$OUT/gpu_peak_b6.json"
part "compile" 150 "$PY" tools/benchmark.py configs/cast_ssv2.py \
    --device "$DEV" --amp fp16 --batch-size 6 --steps 5 --warmup 3 --compile \
    --phases train --json "$OUT/gpu_compile_b6.json"
tail -n 40 "$LOG"
exit "$FAILED"
