"""benchmarks/gpu_train.py runs its GPU code path on the CPU with a tiny IResNet (`--tiny`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_train_benchmark_tiny_reports_throughput_flops_and_hours() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_train.py"), "--tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(done.stdout[done.stdout.index("[") :])
    assert [r["batch"] for r in results] == [4, 8]
    for r in results:
        assert r["images_per_second"] > 0 and r["steps"] >= 1 and r["gflops_per_image"] > 0
        assert r["hours_for_0.5M_x_26_epochs"] == 500_000 * 26 / r["images_per_second"] / 3600
        assert r["percent_of_bf16_peak"] is None  # no peak for a CPU
