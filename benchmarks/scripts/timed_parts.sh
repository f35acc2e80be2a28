# Sourced by the device scripts beside it (gpu_batch_sweep.sh,
# gpu_cuda_graph.sh): `part NAME LIMIT CMD...` runs CMD under `timeout LIMIT`
# with its output appended to "$LOG", logs its exit status and time, and sets
# FAILED=1 when it fails, so that one part failing or running out of time
# leaves the next one to run. `open_log OUT_DIR NAME` sets it up first.
FAILED=0

# open_log OUT_DIR NAME: OUT the absolute path of OUT_DIR (made; relative to
# the caller), the repository root the working directory, LOG=OUT/NAME empty
open_log() {
    mkdir -p "$1" && OUT=$(cd "$1" && pwd) || exit 2
    cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
    LOG="$OUT/$2"
    : > "$LOG"
}

part() {
    local name=$1 limit=$2 t0 rc
    shift 2
    echo "== $name: $*" | tee -a "$LOG"
    t0=$(date +%s)
    timeout "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
    [ "$rc" = 0 ] || FAILED=1
}

# need_openmmlab: stop at once (exit 2) where "$PY" cannot import MMEngine and
# MMAction2, saying what to do, instead of every part failing the same way: a
# lent GPU machine has PyTorch and no network.
need_openmmlab() {
    "$PY" -c 'import mmengine, mmaction' >> "$LOG" 2>&1 && return 0
    echo "MMEngine / MMAction2 do not import with $PY ($LOG has the error):" \
         "on a GPU host without them and without a network, run" \
         "benchmarks/scripts/device_wheels.sh where pip works, bring .whl" \
         "along and install it first (benchmarks/README.md)" | tee -a "$LOG"
    exit 2
}
