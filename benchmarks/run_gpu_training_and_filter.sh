#!/usr/bin/env bash
# The GPU measurements of issues 11 and 13 in one short run on a bare GPU machine with PyTorch (about 5 min):
# exact identity filter at 1M x 512 (target <= 2 min, checked against the CPU search on 1,000 rows) and IR-SE-50
# training throughput at batch 128 and 512. Needs only torch and numpy from the machine, and this checkout.
# Output: the tables on stdout and, when $OUT is set, in $OUT/gpu_filter.txt and $OUT/gpu_train.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# Exact 1M x 512 (k^-1 spectrum, common mean, planted near-duplicates), float16 products + float64 re-scoring.
timeout 240 $PY benchmarks/gpu_filter.py --n 1000000 --spectrum k1 2>&1 | tee "$out/gpu_filter.txt"
# IR-SE-50 + ArcFace training step throughput, % of bf16 peak, hours for 0.5M images x 26 epochs.
timeout 180 $PY benchmarks/gpu_train.py 2>&1 | tee "$out/gpu_train.txt"
