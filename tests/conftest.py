"""Shared fixtures: a temporary SYNID_HOME and DAGSTER_HOME per test, and a definitions builder."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

# Real PostgreSQL/Redis/Celery fixtures for the deployment tests, visible to every module.
from tests.deploy_helpers import celery_deployment, postgres_server, redis_server  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def synid_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "synid_home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("SYNID_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    for variable in ("SYNID_PROFILE", "SYNID_ATTRIBUTES", "SYNID_SEED", "SYNID_BATCH_SIZE", "SYNID_LIVE"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture
def instance_at() -> Iterator[Callable[[Path], dg.DagsterInstance]]:
    """Opens the Dagster instance of a SYNID_HOME (its `dagster/` dir); every one opened is disposed after."""
    opened: list[dg.DagsterInstance] = []

    def open_instance(home: Path) -> dg.DagsterInstance:
        # Not `with`: DagsterInstance.__exit__ leaves its defs-state context var set (dagster 1.13).
        opened.append(dg.DagsterInstance.from_config(str(home / "dagster")))
        return opened[-1]

    yield open_instance
    for instance in opened:
        instance.dispose()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module's tests (tiny models: threads cost more than the work)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def attributes_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped FLUXSynID attribute spec."""
    target = tmp_path / "attributes"
    shutil.copytree(REPO / "attributes", target)
    return target


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests where torch sees no CUDA device (torch is imported only if such tests exist)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)
