#!/usr/bin/env bash
# Every GPU figure the docs leave open, in one run on one GPU. Each part has its
# own time limit: check, bench, graph, multiview and augment 570 s together,
# inside a 10-minute call; loop and decode (where their packages import) up to
# 390 s more, so where a call is limited to 10 minutes run them in a second
# call (PARTS=loop,decode):
#
#   tools/benchmark/gpu_figures.sh OUT_DIR [AUTHORS_CHECKOUT]
#
#   gpu_check.json        tools/gpu_check.py: AMP training steps, fp32 / fp16 /
#                         bf16 agreement, the SDPA kernels, the CUDA-graph
#                         training loop against the eager one, FSDP /
#                         DeepSpeed
#   benchmark_cuda.json   tools/benchmark.py, CAST ViT-B SSv2, batch 6, fp16:
#                         ours, and the authors' side by side when
#                         AUTHORS_CHECKOUT (a checkout of KHU-VLL/CAST) is given
#   benchmark_cuda_graph.json  tools/benchmark.py --cuda-graph, ours alone, the
#                         same model, batch and fp16: the training step's
#                         forward + backward and the inference replayed as
#                         CUDA graphs (what the step costs without the host
#                         launching each kernel)
#   multiview_cuda.json   tools/benchmark/bench_multiview.py at ViT-B size:
#                         K400 5x3 and SSv2 2x3 views batched vs one at a time
#   device_augment.jsonl  tools/benchmark/bench_device_augment.py on the GPU
#   test_loop_cuda.json   tools/benchmark/bench_test_loop.py --loop: the whole
#                         multi-view test loop, ours against the authors'
#                         (loader + model, fp16), with AUTHORS_CHECKOUT and
#                         where PyAV, decord and pandas import (else skipped)
#   decode_cuda.json      tools/benchmark/bench_pipeline.py, the K400 recipe's
#                         pipeline with torchcodec's CUDA decoder (NVDEC) on
#                         prepared K400-like files; skipped (not failed) where
#                         PyAV or torchcodec cannot be imported
#   session.log           what ran, each part's exit status and time, the
#                         machine (nvidia-smi, torch, CPU)
#
# At most eight files, so that the lot comes back from a machine that returns
# few (docs/benchmarks.md, "GPU"). A part that fails or runs out of time is
# logged and the next one runs; the exit status is 1 when any part failed.
# Where torch sees no usable CUDA device for DEVICE (cast_mmaction.utils.
# device_problem, as the tools check --device), the script stops before the
# first part with one message and exit status 2.
#
# PARTS=check,bench,graph,multiview,augment,loop,decode selects parts (default:
# all).
# DEVICE=cpu runs every part at a tiny size on the CPU: a test of this script
# (tests/test_gpu_figures.py), not a figure. PYTHON names the interpreter.
set -u
OUT=${1:?usage: tools/benchmark/gpu_figures.sh OUT_DIR [AUTHORS_CHECKOUT]}
REF=${2:-}
PY=${PYTHON:-$(command -v python || command -v python3)}
DEVICE=${DEVICE:-cuda}
PARTS=${PARTS:-check,bench,graph,multiview,augment,loop,decode}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2  # relative to the caller
if [ -n "$REF" ]; then REF=$(cd "$REF" && pwd) || exit 2; fi
cd "$ROOT" || exit 2
LOG="$OUT/session.log"
: > "$LOG"
FAILED=0

say() { echo "$@" | tee -a "$LOG"; }

selected() { case ",$PARTS," in *",$1,"*) return 0 ;; esac; return 1; }

# part NAME SECONDS CMD...: run CMD under a time limit, its output into the log
part() {
    local name=$1 limit=$2 t0 rc
    shift 2
    selected "$name" || { say "== $name: not selected"; return; }
    say "== $name: $*"
    t0=$(date +%s)
    timeout "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    say "== $name: exit $rc after $(( $(date +%s) - t0 )) s (limit $limit s)"
    [ "$rc" = 0 ] || FAILED=1
}

if ! "$PY" -c 'import mmengine, mmaction' >> "$LOG" 2>&1; then
    # a lent GPU machine has PyTorch and no network: say what to do at once
    # rather than let every part fail on the same import
    say "MMEngine / MMAction2 do not import with $PY ($LOG has the error): on a GPU host" \
        "without them and without a network, run benchmarks/scripts/device_wheels.sh where" \
        "pip works, bring .whl along and install it first (benchmarks/README.md)"
    exit 2
fi
if [ "$DEVICE" != cpu ]; then
    # every part would fail on its own, one after another, with the same cause
    if PROBLEM=$("$PY" -c 'import sys
from cast_mmaction.utils import device_problem
print(device_problem(sys.argv[1]) or "")' "$DEVICE" 2>> "$LOG"); then
        PROBLEM=${PROBLEM##*$'\n'}  # the last line: the answer
    else
        PROBLEM="cannot check it: $PY cannot import cast_mmaction.utils ($LOG has the error)"
    fi
    if [ -n "$PROBLEM" ]; then
        say "DEVICE=$DEVICE: $PROBLEM; no part was run (DEVICE=cpu runs only the script's own test, at a tiny size)"
        exit 2
    fi
fi
say "# tools/benchmark/gpu_figures.sh $OUT ${REF:-'(no authors checkout)'}; DEVICE=$DEVICE PARTS=$PARTS"
say "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ "$DEVICE" != cpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
        --format=csv >> "$LOG" 2>&1 || say "nvidia-smi: not available"
fi
"$PY" - >> "$LOG" 2>&1 <<'EOF'
import os, platform, torch
print('python', platform.python_version(), 'torch', torch.__version__,
      'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(),
      'cpus', os.cpu_count())
from cast_mmaction.utils import cpu_facts
print('cpu', cpu_facts())
EOF

if [ "$DEVICE" = cpu ]; then  # the script's own test: tiny sizes, CPU
    part check 300 "$PY" tools/gpu_check.py --device cpu --tiny --steps 1 \
        --checks amp_train --out "$OUT/gpu_check.json"
    part bench 300 "$PY" tools/benchmark.py configs/cast_demo.py --device cpu \
        --batch-size 1 --steps 1 --warmup 0 --phases train,infer \
        --json "$OUT/benchmark_cuda.json"
    if selected graph; then
        say "== graph: skipped: --cuda-graph captures CUDA graphs; DEVICE=cpu has none"
    fi
    part multiview 300 "$PY" tools/benchmark/bench_multiview.py --device cpu \
        --embed-dim 32 --depth 1 --heads 2 --frames 4 --img-size 32 \
        --num-classes 5 --videos 1 --warmup 0 --json "$OUT/multiview_cuda.json"
    part augment 300 bash -c "'$PY' tools/benchmark/bench_device_augment.py \
        --device cpu --clips 1 --sizes ssv2 > '$OUT/device_augment.jsonl'"
    if selected decode && ! "$PY" -c 'import av' >> "$LOG" 2>&1; then
        say "== decode: skipped: PyAV is needed"
    else
        part decode 300 "$PY" tools/benchmark/bench_pipeline.py \
            --config configs/cast_k400_device_aug.py --video-kind k400 --clips 2 \
            --videos 2 --warmup 0 --prepare-short 320 --prepare-keyint 32 \
            --decoder pyav --workdir "$OUT/.decode_videos" --json "$OUT/decode_cuda.json"
        rm -rf "$OUT/.decode_videos"
    fi
else
    part check 150 "$PY" tools/gpu_check.py --device "$DEVICE" \
        --out "$OUT/gpu_check.json"
    if [ -n "$REF" ]; then
        part bench 210 "$PY" tools/benchmark.py configs/cast_ssv2.py \
            --device "$DEVICE" --batch-size 6 --amp fp16 --steps 5 --warmup 2 \
            --phases train,infer,flops --reference-repo "$REF" --side-by-side \
            --reference-amp fp16 --runs 1 --json "$OUT/benchmark_cuda.json"
    else
        part bench 150 "$PY" tools/benchmark.py configs/cast_ssv2.py \
            --device "$DEVICE" --batch-size 6 --amp fp16 --steps 5 --warmup 2 \
            --phases train,infer,flops --json "$OUT/benchmark_cuda.json"
    fi
    part graph 60 "$PY" tools/benchmark.py configs/cast_ssv2.py \
        --device "$DEVICE" --batch-size 6 --amp fp16 --steps 10 --warmup 3 \
        --phases train,infer --cuda-graph --json "$OUT/benchmark_cuda_graph.json"
    part multiview 90 "$PY" tools/benchmark/bench_multiview.py \
        --device "$DEVICE" --amp fp16 --embed-dim 768 --depth 12 --heads 12 \
        --img-size 224 --videos 3 --warmup 1 --json "$OUT/multiview_cuda.json"
    part augment 60 bash -c "'$PY' tools/benchmark/bench_device_augment.py \
        --device '$DEVICE' --clips 48 > '$OUT/device_augment.jsonl'"
    if ! selected loop; then
        say "== loop: not selected"
    elif [ -z "$REF" ]; then
        say "== loop: skipped: needs AUTHORS_CHECKOUT"
    elif ! "$PY" -c 'import av, decord, pandas' >> "$LOG" 2>&1; then
        say "== loop: skipped: PyAV (ours), decord and pandas (the authors' loader) are needed"
    else
        part loop 150 "$PY" tools/benchmark/bench_test_loop.py \
            --reference-repo "$REF" --kinds k400 ssv2 --videos 4 --warmup 1 \
            --threads 4 --loop --device "$DEVICE" --amp fp16 \
            --workdir "$OUT/.loop_videos" --json "$OUT/test_loop_cuda.json"
        rm -rf "$OUT/.loop_videos"
    fi
    if ! selected decode; then
        say "== decode: not selected"
    elif ! "$PY" -c 'import av, torchcodec' >> "$LOG" 2>&1; then
        say "== decode: skipped: PyAV and torchcodec (a CUDA build, with FFmpeg's shared libraries) are needed"
    else
        part decode 240 "$PY" tools/benchmark/bench_pipeline.py \
            --config configs/cast_k400_device_aug.py --video-kind k400 \
            --clips 32 --videos 8 --prepare-short 320 --prepare-keyint 32 \
            --decoder torchcodec --decode-device "$DEVICE" \
            --workdir "$OUT/.decode_videos" --json "$OUT/decode_cuda.json"
        rm -rf "$OUT/.decode_videos"
    fi
fi
say "# done: $([ "$FAILED" = 0 ] && echo 'every selected part passed' || echo 'a part failed (above)')"
exit "$FAILED"
