"""Fault 5, object-store part: the S3 server restarted during a batch.

What is real here: `synid demo` runs in its own process against moto's S3 API server on 127.0.0.1; the test
stops that HTTP server while the first of two batches is being made (its document images are in the bucket)
and keeps it down until the run has ended. The run fails cleanly: exit status 1 and the one-line message that
the endpoint cannot be reached, naming the s3:// home, no traceback, no secret. The server is then started
again on the same port with the same objects (moto keeps them in this test process, as MinIO keeps them on its
disk), and the demo is rerun from an empty cache, as on another machine: everything it reads, the earlier
batch's filter decisions and state included, comes from the store. The result equals an uninterrupted run on a
local home: the same manifest rows, the same image sha256s, the same LanceDB rows (none twice), no temp object.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_s3_home import (
    SECRET,
    batch_files,
    bucket_objects,
    image_hashes,
    local_files,
    manifest_rows,
    s3_client,
    s3_env,
    s3_server,
    synid,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

DEMO = ("demo", "--identities", "4", "--live", "1")
SETTINGS = {"SYNID_BATCH_SIZE": "2"}  # two batches: the second one's filter reads the first one's state


def _wait_for_object(endpoint: str, bucket: str, prefix: str, process: subprocess.Popen, timeout: float) -> bool:
    """True once an object under `prefix` exists; False if the process ended or the time ran out first."""
    client = s3_client(endpoint)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0):
            return True
        time.sleep(0.05)
    return False


def _lancedb_rows(uri: str, options: dict[str, str] | None = None) -> dict[str, list[tuple[str, str]]]:
    import lancedb

    db = lancedb.connect(uri, storage_options=options) if options else lancedb.connect(uri)
    rows = {}
    for table in ("document_embeddings", "accepted_identities", "live_embeddings"):
        arrow = db.open_table(table).to_arrow()
        rows[table] = sorted(zip(arrow["image_id"].to_pylist(), arrow["batch_id"].to_pylist(), strict=True))
    return rows


def test_s3_restart_mid_batch_fails_cleanly_and_a_rerun_elsewhere_completes_identically(tmp_path: Path) -> None:
    from synid_assets.core.dataset.remote_home import S3Settings

    local_home = tmp_path / "local"
    reference = synid(*DEMO, env={**SETTINGS, "SYNID_HOME": str(local_home)})
    assert reference.returncode == 0, reference.stderr

    bucket, prefix = "synid-fault", "ds"
    home = f"s3://{bucket}/{prefix}"
    with s3_server() as server:
        s3_client(server.endpoint).create_bucket(Bucket=bucket)
        machine_a = {**s3_env(server.endpoint, tmp_path / "machine-a"), **SETTINGS, "SYNID_HOME": home}
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SYNID_", "DAGSTER"))}
        run = subprocess.Popen(
            [sys.executable, "-m", "synid_assets.cli", *DEMO],
            env={**clean, **machine_a}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            mid_batch = _wait_for_object(server.endpoint, bucket, f"{prefix}/batches/batch-00000/documents/", run, 300)
            server.stop()  # the store goes away while batch-00000 is being made, and stays away until the run ends
            out, err = run.communicate(timeout=420)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert mid_batch, f"the run ended before its first documents were stored:\n{out}{err}"
        assert run.returncode == 1, out + err
        assert f"SYNID_HOME {home}" in err and f"cannot reach the endpoint {server.endpoint}" in err, err
        assert "Traceback" not in err and SECRET not in out + err
        print(f"the interrupted run's stderr:\n{err}")  # shown with pytest -rP

        server.start()  # same port, same objects
        machine_b = {**s3_env(server.endpoint, tmp_path / "machine-b"), **SETTINGS, "SYNID_HOME": home}
        rerun = synid(*DEMO, env=machine_b)
        assert rerun.returncode == 0, rerun.stderr

        stored = bucket_objects(server.endpoint, bucket, prefix)
        local = local_files(local_home)
        assert image_hashes(stored) == image_hashes(local)
        assert set(batch_files(stored)) == set(batch_files(local))
        assert not [k for k in stored if "/." in k or k.endswith(".tmp")]
        manifest = tmp_path / "stored-manifest.duckdb"
        manifest.write_bytes(stored["manifest.duckdb"])
        assert manifest_rows(manifest) == manifest_rows(local_home / "manifest.duckdb")
        options = S3Settings(
            endpoint=server.endpoint, region="us-east-1", access_key_id=machine_b["AWS_ACCESS_KEY_ID"],
            secret_access_key=SECRET,
        ).lancedb_options()
        assert _lancedb_rows(f"{home}/lancedb", options) == _lancedb_rows(str(local_home / "lancedb"))
