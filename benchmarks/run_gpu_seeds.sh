#!/usr/bin/env bash
# Issue 10's GPU figures in one short run (about 5 min): images/s of Vec2Face (incl. batch 256), Vec2Face+,
# IDiff-Face and UIFace at their released sizes with random weights, and % of bf16 peak for the diffusion UNets.
# Wheels the bare machine lacks (diffusers, peft, importlib_metadata) go in .whl/ (see benchmarks/gpu_prelude.sh):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       diffusers==0.42.1 peft==0.21.2 importlib_metadata
# Output: the table on stdout and, when $OUT is set, in $OUT/gpu_seeds.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_prelude.sh
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 300 $PY benchmarks/gpu_seeds.py --out "$out/gpu_seeds.txt" 2>&1 | tee "$out/gpu_seeds.log"
