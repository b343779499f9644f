"""Per-step overhead of an s3:// SYNID_HOME against a local home, on one small batch of the embedded defaults.

    .venv/bin/python benchmarks/s3_overhead.py --identities 4 --live 1

The same `synid demo` runs twice, each in its own process: once on a local home, once on
s3://synid-bench/ds served by moto's S3 API server on 127.0.0.1 (started here, in this process), with an empty
local mirror. Each step's time is read from its Dagster event log (STEP_START to STEP_SUCCESS); the ratio is
s3 / local. An S3 step also pulls what it reads and pushes what it wrote, and LanceDB opens its tables over
HTTP; on a real store the round trips are longer than on 127.0.0.1, so read the ratio as a lower bound.

`measure_s3_overhead()` is what benchmarks/scale_out.py calls; it returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_SECRET = "synid-bench-secret"  # moto accepts any credentials; the real ones are never needed here


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _demo(identities: int, live: int, env: dict[str, str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SYNID_", "DAGSTER_HOME"))}
    result = subprocess.run(
        [sys.executable, "-m", "synid_assets.cli", "demo", "--identities", str(identities), "--live", str(live)],
        capture_output=True, text=True, env={**clean, **env}, cwd=REPO, timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"synid demo failed ({env.get('SYNID_HOME')}):\n{result.stderr[-3000:]}")


def step_seconds(dagster_home: Path) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS of every step of every run in a Dagster instance."""
    import dagster as dg
    from dagster._core.events import DagsterEventType

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    seconds: dict[str, float] = {}
    for run in instance.get_runs():
        started: dict[str, float] = {}
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                started[event.step_key] = record.timestamp
            elif event.event_type == DagsterEventType.STEP_SUCCESS and event.step_key in started:
                seconds[event.step_key] = seconds.get(event.step_key, 0.0) + record.timestamp - started[event.step_key]
    return seconds


@contextmanager
def local_s3_store(bucket: str = "synid-bench") -> Iterator[dict[str, str]]:
    """moto's S3 API server on a free 127.0.0.1 port with an empty `bucket`; yields the AWS_* variables for it."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        aws_env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": BENCH_SECRET,
                   "AWS_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key=BENCH_SECRET,
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield aws_env
    finally:
        server.stop()


def measure_s3_overhead(identities: int = 4, live: int = 1, workdir: str | Path | None = None) -> dict[str, Any]:
    """Step times of one batch on a local home and on an s3:// home (moto on 127.0.0.1), and their ratios.

    Returns {"steps": {step: {"local_s", "s3_s", "ratio"}}, "total_local_s", "total_s3_s", "ratio"}.
    """
    with tempfile.TemporaryDirectory(prefix="synid-s3-bench-", dir=workdir) as scratch:
        root = Path(scratch)
        local_home = root / "local"
        _demo(identities, live, {"SYNID_HOME": str(local_home)})
        local = step_seconds(local_home / "dagster")

        with local_s3_store() as aws_env:
            s3_env = {**aws_env, "SYNID_CACHE": str(root / "cache"), "SYNID_HOME": "s3://synid-bench/ds",
                      "DAGSTER_HOME": str(root / "s3-dagster")}
            (root / "s3-dagster").mkdir()
            (root / "s3-dagster" / "dagster.yaml").write_bytes((REPO / "dagster.yaml").read_bytes())
            _demo(identities, live, s3_env)
            remote = step_seconds(root / "s3-dagster")

    steps = {
        step: {
            "local_s": round(local[step], 3),
            "s3_s": round(remote[step], 3),
            "ratio": round(remote[step] / local[step], 2),
        }
        for step in local
        if step in remote and local[step] > 0
    }
    total_local, total_s3 = sum(local.values()), sum(remote.values())
    return {
        "identities": identities,
        "live": live,
        "steps": steps,
        "total_local_s": round(total_local, 2),
        "total_s3_s": round(total_s3, 2),
        "ratio": round(total_s3 / total_local, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--live", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = measure_s3_overhead(args.identities, args.live)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"one batch of {figures['identities']} identities x {figures['live']} live images; seconds per step")
    print(f"{'step':<40} {'local':>8} {'s3':>8} {'s3/local':>9}")
    for step, row in figures["steps"].items():
        print(f"{step:<40} {row['local_s']:>8.2f} {row['s3_s']:>8.2f} {row['ratio']:>9.2f}")
    print(f"{'all steps':<40} {figures['total_local_s']:>8.2f} {figures['total_s3_s']:>8.2f} {figures['ratio']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
