"""The synid command as a user runs it: demo across several batches, read-only query, spec validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synid_assets.cli import main


def synid(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synid_assets.cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600,
    )


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("demo")
    # More identities than one batch holds: the demo adds and materializes as many batches as it needs.
    done = synid("demo", "--identities", "5", "--live", "1", "--seed", "3",
                 env={"SYNID_HOME": str(home), "SYNID_BATCH_SIZE": "2", "DAGSTER_HOME": ""})
    assert done.returncode == 0, done.stderr
    assert "identities by status" in done.stdout and "make ui" in done.stdout
    return home


def test_demo_makes_batches_and_a_queryable_manifest(demo_home: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SYNID_HOME", str(demo_home))
    assert main(["query", "SELECT batch_id, count(*) n FROM identities GROUP BY 1 ORDER BY 1"]) == 0
    out = capsys.readouterr().out
    assert "batch-00000 | 2" in out and "batch-00002 | 1" in out and "(3 rows)" in out
    # The Dagster instance under $SYNID_HOME/dagster recorded the runs and the partitions, for `make ui`.
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(demo_home / "dagster"))
    # Not `with`: DagsterInstance.__exit__ leaves its defs-state context var set (dagster 1.13).
    instance = dg.DagsterInstance.get()
    try:
        assert instance.get_dynamic_partitions("identity_batches") == ["batch-00000", "batch-00001", "batch-00002"]
        assert len(instance.get_runs()) == 4
    finally:
        instance.dispose()


def test_query_is_read_only(demo_home: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SYNID_HOME", str(demo_home))
    assert main(["query", "DELETE FROM identities"]) == 1
    assert "read-only" in capsys.readouterr().err
    assert main(["query", "COPY identities TO '/tmp/synid-leak.csv'"]) == 1
    assert not Path("/tmp/synid-leak.csv").exists()
    assert main(["query", "SELECT count(*) c FROM identities", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["c", "5"]


def test_query_without_manifest_says_what_to_do(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SYNID_HOME", str(tmp_path))
    assert main(["query", "SELECT 1"]) == 2
    assert "make demo" in capsys.readouterr().err


def test_attributes_validate(tmp_path, capsys, attributes_copy) -> None:
    assert main(["attributes", "validate", str(attributes_copy)]) == 0
    assert "14 classes" in capsys.readouterr().out
    (attributes_copy / "genders.txt").write_bytes(b"Male,0.5\r\nFemale 0.5\r\n")
    assert main(["attributes", "validate", str(attributes_copy)]) == 1
    err = capsys.readouterr().err
    assert "genders.txt:2" in err


def test_demo_with_invalid_spec_writes_nothing(tmp_path, attributes_copy) -> None:
    (attributes_copy / "file_probabilities.json").write_text('{"ages.txt": 1.0, "missing.txt": 0.5}')
    home = tmp_path / "home"
    done = synid("demo", "--identities", "2", "--attributes", str(attributes_copy),
                 env={"SYNID_HOME": str(home), "DAGSTER_HOME": ""})
    assert done.returncode == 1
    assert "missing.txt" in done.stderr and "file_probabilities.json" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (home / "batches").exists() and not (home / "manifest.duckdb").exists()


def test_regenerate_reproduces_manifest_bytes(demo_home: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SYNID_HOME", str(demo_home))
    assert main(["regenerate", "batch-00000-0000-doc"]) == 0
    assert "identical" in capsys.readouterr().out
    assert (demo_home / "regenerated" / "batch-00000-0000-doc.png").exists()
    assert main(["regenerate", "no-such-image"]) == 2
