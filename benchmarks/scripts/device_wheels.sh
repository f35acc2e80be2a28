#!/usr/bin/env bash
# Prepare a run of tools/benchmark/gpu_figures.sh on a lent GPU machine that
# has PyTorch (Python 3.12) but neither the OpenMMLab packages nor a way to
# fetch them (this workplace's device tool: /work/.library/device/README.md).
#
#   benchmarks/scripts/device_wheels.sh [AUTHORS_CHECKOUT]
#
# Writes, in the repository root and ignored by git (.git/info/exclude):
#   .whl/      the wheels the package needs beyond such an image (pure Python,
#              ~2.5 MB: MMEngine, MMAction2, mmcv-lite (no compiled mmcv is
#              there to replace) and what they import at run time)
#   .authors/  the authors' checkout's Python files (for the side-by-side
#              benchmark), when AUTHORS_CHECKOUT is given
# WITH_PYAV=1 adds PyAV's wheel (35 MB, FFmpeg inside) to .whl, for
# benchmarks/scripts/gpu_graph_demo.sh (the demo's mp4 files); the working
# tree and .whl together must stay under the device tool's 64 MiB.
# Then, on the machine (both named in the call's carry):
#   python3 -m pip install -q --no-index --no-deps --no-compile \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD &&
#   PYTHON=python3 PYTHONUNBUFFERED=1 bash tools/benchmark/gpu_figures.sh \
#       $OUT .authors/CAST
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AUTHORS=
if [ $# -ge 1 ]; then AUTHORS=$(cd "$1" && pwd); fi  # relative to the caller
cd "$ROOT"
PY=${PYTHON:-python}
for d in /.whl/ /.authors/; do
    grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
rm -rf .whl && mkdir -p .whl
# versions: requirements.txt's where it pins them
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    mmengine==0.10.7 mmaction2==1.2.0 mmcv-lite==2.1.0 importlib_metadata==10.2.0 \
    addict yapf termcolor platformdirs lazy-importer
if [ "${WITH_PYAV:-0}" = 1 ]; then
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 -d .whl av==19.0.2
fi
ls -l .whl
if [ -n "$AUTHORS" ]; then
    rm -rf .authors && mkdir -p .authors/CAST
    (cd "$AUTHORS" && find . -name '*.py' -not -path './.git/*' -print0 |
        xargs -0 cp --parents -t "$ROOT/.authors/CAST")
    du -sh .authors
fi
