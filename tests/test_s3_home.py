"""An s3:// SYNID_HOME against a real S3 API server on 127.0.0.1 (moto in server mode), never a mocked client.

The same `synid demo` on a local home and on an s3:// home gives the same manifest rows and image bytes; the
objects are in the bucket, whole; `synid query` reads the manifest from the store; LanceDB's tables are on S3.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from synid_assets.core.dataset.remote_home import RemoteHome, RemoteHomeError

REPO = Path(__file__).resolve().parents[1]
SECRET = "not-a-real-secret-5f3c"  # must never appear in an error message
ACCESS_KEY = "synid-test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's S3 API server on 127.0.0.1 in a thread of this process.

    stop() closes the HTTP server; the stored objects live in moto's backend in this process, so start()
    on the same port brings the same store back, as a restarted MinIO comes back with its disk.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@contextmanager
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def s3_env(endpoint: str, cache: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "SYNID_CACHE": str(cache),
    }


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )


def bucket_objects(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under the prefix, relative key -> bytes."""
    client = s3_client(endpoint)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            out[key[len(prefix) + 1 :]] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out


def synid(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SYNID_", "DAGSTER_HOME"))}
    return subprocess.run(
        [sys.executable, "-m", "synid_assets.cli", *args],
        capture_output=True, text=True, env={**clean, **env}, timeout=timeout,
    )


def manifest_rows(path: Path) -> dict[str, list[tuple]]:
    """The identities and images tables, every column, in a fixed order."""
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        return {
            table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in ("identities", "images", "identity_attributes")
        }


def batch_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files inside batch directories (batches/<key>/...): tables, records, images."""
    return {k: v for k, v in files.items() if k.startswith("batches/") and k.count("/") >= 2}


def image_hashes(files: dict[str, bytes]) -> dict[str, str]:
    """sha256 of every batch image (documents, live images, aligned crops)."""
    return {k: hashlib.sha256(v).hexdigest() for k, v in batch_files(files).items() if k.endswith(".png")}


def local_files(home: Path, under: str = "batches") -> dict[str, bytes]:
    return {p.relative_to(home).as_posix(): p.read_bytes() for p in sorted((home / under).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with s3_server() as running:
        yield running


@pytest.fixture
def env(server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = s3_env(server.endpoint, tmp_path / "cache")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def _bucket(server: S3Server, name: str) -> str:
    s3_client(server.endpoint).create_bucket(Bucket=name)
    return name


def test_push_and_pull_share_files_between_two_mirrors(env, server, tmp_path):
    bucket = _bucket(server, "mirrors")
    machine_a = RemoteHome(f"s3://{bucket}/home", cache_dir=tmp_path / "a")
    machine_b = RemoteHome(f"s3://{bucket}/home", cache_dir=tmp_path / "b")
    assert machine_a.local != machine_b.local
    batch = machine_a.local / "batches" / "batch-00000"
    (batch / "documents").mkdir(parents=True)
    (batch / "identities.parquet").write_bytes(b"table-1")
    (batch / "documents" / "x.png").write_bytes(os.urandom(200_000))
    (batch / "documents" / ".x.png.123.tmp").write_bytes(b"half")  # atomic_writer's temp file: never pushed
    assert machine_a.push("batches/batch-00000") == 2
    assert machine_a.push("batches/batch-00000") == 0  # unchanged files are not uploaded again

    stored = bucket_objects(server.endpoint, bucket, "home")
    assert sorted(stored) == ["batches/batch-00000/documents/x.png", "batches/batch-00000/identities.parquet"]
    assert stored["batches/batch-00000/documents/x.png"] == (batch / "documents" / "x.png").read_bytes()

    # Machine B: a pattern pulls only what it names; a directory pulls everything under it.
    assert machine_b.pull("batches/*/identities.parquet") == 1
    assert not (machine_b.local / "batches/batch-00000/documents/x.png").exists()
    assert machine_b.pull("batches/batch-00000") == 1
    pushed = {k: v for k, v in local_files(machine_a.local).items() if not k.endswith(".tmp")}
    assert local_files(machine_b.local) == pushed
    assert machine_b.pull("batches/batch-00000") == 0

    # A change on A reaches B; a file gone from the store leaves B's mirror; B's own unpushed file stays.
    (batch / "identities.parquet").write_bytes(b"table-2")
    assert machine_a.push("batches") == 1
    (machine_b.local / "batches/batch-00000/mine.json").write_text("{}")
    s3_client(server.endpoint).delete_object(Bucket=bucket, Key="home/batches/batch-00000/documents/x.png")
    assert machine_b.pull("batches/batch-00000") == 1
    assert (machine_b.local / "batches/batch-00000/identities.parquet").read_bytes() == b"table-2"
    assert not (machine_b.local / "batches/batch-00000/documents/x.png").exists()
    assert (machine_b.local / "batches/batch-00000/mine.json").exists()
    assert machine_b.fetch("missing.duckdb") is None


def test_bad_stores_fail_with_one_line_naming_the_url(env, server, tmp_path, monkeypatch):
    problems = {}
    with monkeypatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
        with pytest.raises(RemoteHomeError) as down:
            RemoteHome("s3://synid/x", cache_dir=tmp_path).pull("batches")
    problems["down"] = down.value
    with pytest.raises(RemoteHomeError) as missing:
        RemoteHome("s3://no-such-bucket/x", cache_dir=tmp_path).pull("batches")
    problems["missing"] = missing.value
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(RemoteHomeError) as no_credentials:
        RemoteHome("s3://synid/x", cache_dir=tmp_path).check()
    problems["credentials"] = no_credentials.value

    assert "cannot reach the endpoint" in str(problems["down"]) and problems["down"].retryable
    assert "bucket 'no-such-bucket' does not exist" in str(problems["missing"])
    assert "no credentials" in str(problems["credentials"])
    for problem in problems.values():
        assert str(problem).startswith("SYNID_HOME s3://") and "\n" not in str(problem)
        assert SECRET not in str(problem)

    # The commands say the same in one line, and exit 2.
    variables = {**env, "SYNID_HOME": "s3://no-such-bucket/demo"}
    for command in (("query", "SELECT 1"), ("demo", "--identities", "1", "--live", "0")):
        result = synid(*command, env=variables, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "s3://no-such-bucket/demo" in result.stderr and "does not exist" in result.stderr
        assert SECRET not in result.stdout + result.stderr


# Machine B: only the second batch, in a fresh Dagster instance with an empty mirror, so the first batch's
# filter decisions and state can only come from the store.
SECOND_BATCH_ONLY = """
import dagster as dg
from synid_assets.definitions import build_definitions
instance = dg.DagsterInstance.get()
instance.add_dynamic_partitions("identity_batches", ["batch-00000", "batch-00001"])
result = build_definitions().resolve_job_def("synid_batch").execute_in_process(
    instance=instance, partition_key="batch-00001", raise_on_error=False,
    run_config={"ops": {"identity_attributes": {"config": {"batch_size": 1}}}},
)
raise SystemExit(0 if result.success else 1)
"""


def test_demo_on_s3_home_matches_the_local_home(env, server, tmp_path):
    """`synid demo` unchanged with SYNID_HOME=s3://...: same manifest rows and image bytes as on a local disk.

    Two machines share the dataset: A runs the demo's first batch, B (its own mirror and Dagster instance)
    the second, whose order-stable filter reads A's decisions from the store.
    """
    import lancedb

    from synid_assets.core.dataset.remote_home import S3Settings

    bucket = _bucket(server, "synid")
    local_home = tmp_path / "local"
    two_batches = {"SYNID_BATCH_SIZE": "2", "SYNID_LIVE": "1"}  # batch-00000: 2 identities, batch-00001: 1
    local = synid("demo", "--identities", "3", "--live", "1", env={**two_batches, "SYNID_HOME": str(local_home)})
    assert local.returncode == 0, local.stderr
    home = {**two_batches, "SYNID_HOME": f"s3://{bucket}/ds"}
    remote = synid("demo", "--identities", "2", "--live", "1", env={**env, **home})
    assert remote.returncode == 0, remote.stderr
    assert f"manifest   s3://{bucket}/ds/manifest.duckdb" in remote.stdout
    assert SECRET not in remote.stdout + remote.stderr
    (tmp_path / "machine-b").mkdir()
    (tmp_path / "machine-b" / "dagster.yaml").write_bytes((REPO / "dagster.yaml").read_bytes())
    machine_b = {**env, **home, "SYNID_CACHE": str(tmp_path / "machine-b" / "cache"),
                 "DAGSTER_HOME": str(tmp_path / "machine-b")}
    second = subprocess.run(
        [sys.executable, "-c", SECOND_BATCH_ONLY], capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SYNID_"))}, **machine_b},
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert not list((tmp_path / "machine-b" / "cache").rglob("batch-00000/live/*.png"))  # B pulled A's records only

    stored = bucket_objects(server.endpoint, bucket, "ds")
    # Every batch file is in the bucket with the bytes the local run made, and nothing half-written is.
    assert image_hashes(stored) == image_hashes(local_files(local_home))
    assert len(image_hashes(stored)) >= 3 + 3  # documents and their aligned crops at least
    assert set(batch_files(stored)) == set(batch_files(local_files(local_home)))
    assert not [k for k in stored if "/." in k or k.endswith(".tmp")]
    assert {"manifest.duckdb", "quality.duckdb", "reports/quality.html", "spec/current.json"} <= set(stored)
    assert not [k for k in stored if k.startswith("dagster/")]  # the instance stays on the machine

    # `synid query` on another machine (an empty cache) downloads the manifest object and reads it.
    elsewhere = {**env, "SYNID_CACHE": str(tmp_path / "other-machine"), "SYNID_HOME": f"s3://{bucket}/ds"}
    query = synid("query", "SELECT count(*) AS n FROM identities", "--format", "csv", env=elsewhere, timeout=120)
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["n", "3"]
    cached = next((tmp_path / "other-machine").rglob("manifest.duckdb"))
    assert cached.read_bytes() == stored["manifest.duckdb"]
    assert manifest_rows(cached) == manifest_rows(local_home / "manifest.duckdb")
    import duckdb

    with duckdb.connect(str(cached), read_only=True) as con:  # the home as users name it, not the mirror's path
        recorded = con.execute("SELECT value FROM manifest_info WHERE key = 'synid_home'").fetchone()
    assert recorded == (f"s3://{bucket}/ds",)

    # `synid export` there too: it pulls what it reads and puts the export back in the store, file by file.
    export = synid("export", "--format", "imagefolder", env=elsewhere, timeout=300)
    assert export.returncode == 0, export.stderr
    local_export = synid("export", "--format", "imagefolder", env={"SYNID_HOME": str(local_home)}, timeout=300)
    assert local_export.returncode == 0, local_export.stderr
    exported = {k: v for k, v in bucket_objects(server.endpoint, bucket, "ds").items() if k.startswith("exports/")}
    on_disk_export = local_files(local_home, "exports")
    assert exported and {k: hashlib.sha256(v).hexdigest() for k, v in exported.items() if k.endswith(".png")} == {
        k: hashlib.sha256(v).hexdigest() for k, v in on_disk_export.items() if k.endswith(".png")}

    # LanceDB's tables are on S3 (no local copy), with the rows the local run has.
    options = S3Settings.from_env().lancedb_options()
    on_s3 = lancedb.connect(f"s3://{bucket}/ds/lancedb", storage_options=options)
    on_disk = lancedb.connect(str(local_home / "lancedb"))
    for table in ("document_embeddings", "accepted_identities", "live_embeddings"):
        rows = sorted(on_s3.open_table(table).to_arrow().select(["image_id", "batch_id"]).to_pylist(), key=str)
        assert rows and rows == sorted(
            on_disk.open_table(table).to_arrow().select(["image_id", "batch_id"]).to_pylist(), key=str
        )
    assert any(k.startswith("lancedb/document_embeddings.lance/") for k in stored)
    assert not list((tmp_path / "cache").rglob("*.lance"))
