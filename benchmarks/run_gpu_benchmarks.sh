#!/usr/bin/env bash
# All GPU measurements of the real-generator issues, in one run on a bare GPU machine with PyTorch.
# That machine has no network: wheels it lacks (diffusers, for one) are carried in .whl/, prepared here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl/ diffusers==0.42.1
# Output: benchmarks' tables on stdout and, when $OUT is set, in $OUT/gpu_*.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install --quiet --no-index --no-deps .whl/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
out=${OUT:-/tmp}
# FLUX.1-dev-sized transformer: < 8 min on one H100; Arc2Face UNet + IR-101: < 5 min.
timeout 480 $PY benchmarks/gpu_flux.py --budget-s 420 2>&1 | tee "$out/gpu_flux.txt"
timeout 300 $PY benchmarks/gpu_live.py 2>&1 | tee "$out/gpu_live.txt"
