#!/usr/bin/env bash
# All GPU measurements of the real-generator issues, in one run on a bare GPU machine with PyTorch (about 7 min).
# That machine has no network: wheels it lacks (diffusers and importlib_metadata) are carried in .whl/, made here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl diffusers==0.42.1 importlib_metadata
# Output: the benchmarks' tables on stdout and, when $OUT is set, in $OUT/gpu_*.txt.
# Order: the cheap, short measurements first, so a slow FLUX compile cannot cost them.
set -uo pipefail
cd "$(dirname "$0")/.."
. benchmarks/gpu_prelude.sh
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
$PY - <<'EOF' 2>&1 | tee "$out/gpu_env.txt"
import importlib.metadata as md
import torch
names = ["torch", "diffusers", "transformers", "huggingface_hub", "peft", "accelerate", "safetensors", "numpy"]
print("; ".join(f"{n} {md.version(n)}" for n in names))
# The card's bf16 GEMM ceiling on random data, for reading the benchmarks' "% of peak" (data-sheet peak) columns.
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    a @ b
end.record()
torch.cuda.synchronize()
print(f"bf16 8192^3 matmul: {20 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12:.0f} TFLOP/s measured")
EOF
# Arc2Face UNet (25 DPM / 4 LCM steps) and IR-101: < 5 min on one H100.
timeout 240 $PY benchmarks/gpu_live.py 2>&1 | tee "$out/gpu_live.txt"
# FLUX.1-dev-sized transformer, default vs compiled, batches 1/2/4: < 8 min on one H100; here capped to fit one call.
timeout 330 $PY benchmarks/gpu_flux.py --budget-s 250 2>&1 | tee "$out/gpu_flux.txt"
# The FLUX document profiles as configured (LoRA, fp8 storage, offload): peak GPU memory and s/image, ~3 min.
timeout 240 $PY benchmarks/gpu_flux_memory.py 2>&1 | grep -v "No LoRA keys" | tee "$out/gpu_flux_memory.txt"
