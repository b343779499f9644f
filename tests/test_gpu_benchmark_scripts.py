"""The GPU benchmark scripts run their own code paths on the CPU with tiny models (`--tiny`), so a change that
breaks them shows here, not first on a lent GPU with minutes of device time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_tiny(script: str, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--tiny", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_flux_transformer_benchmark_counts_flops_and_fills_every_mode() -> None:
    out = run_tiny("gpu_flux.py")
    assert "(matches)" in out  # the analytic FLOP count agrees with the Linear-counting hook
    table = out[out.index("FLUX.1-dev transformer, ") :].splitlines()[3:]  # the rows under the header and rule
    rows = [r for r in table if r.split()[0] in ("default", "backend", "compiled")]
    assert len(rows) == 9 and all(" - " not in r for r in rows)  # every (mode, batch) was timed
    assert {(r.split()[0], next(t for t in r.split() if t.isdigit())) for r in rows} == {
        (m, b) for m in ("default", "backend", "compiled") for b in "124"
    }


@pytest.mark.parametrize("profile", ["flux-24gb", "flux-80gb"])
def test_flux_memory_benchmark_runs_each_shipped_profile_through_the_generator(profile: str) -> None:
    out = run_tiny("gpu_flux_memory.py", "--profiles", f"resources/{profile}.yaml", "--steps", "2",
                   "--batch-sizes", "1,2")  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.startswith(f"{profile}.yaml ")]
    assert [r[3] for r in rows] == ["1", "2"]  # one table row per batch size
    assert "FAILED" not in out


def test_live_benchmark_times_both_schedulers_and_the_frs() -> None:
    out = run_tiny("gpu_live.py")
    assert "DPMSolverMultistepScheduler" in out and "LCMScheduler" in out
    assert "images/s" in out and "IR-101" in out


def test_seed_generators_benchmark_times_all_four_and_counts_unet_flops() -> None:
    out = run_tiny("gpu_seeds.py", "--batches", "2")
    table = out[out.rindex("generator ") :].splitlines()[2:]
    rows = {r.split()[0]: r.split() for r in table if r.strip()}
    assert set(rows) == {"vec2face", "vec2face_plus", "idiff_face", "uiface"}
    assert all(r[1] == "2" and float(r[2]) > 0 for r in rows.values())  # batch 2 timed, images/s measured
    for name in ("idiff_face", "uiface"):  # FLOPs counted: achieved TFLOP/s of generate() and of the bare UNet
        assert float(rows[name][4]) > 0 and float(rows[name][6]) > 0
    assert "10.0 UNet passes/image" in " ".join(rows["uiface"])  # 6 steps: 2 stage-1 (1 pass each) + 4 x 2
