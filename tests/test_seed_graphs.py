"""IDiff-Face and UIFace on the `identity_source: embeddings` route through the whole graph, with tiny random-weight
models loaded through their real loading paths, and the filter in the generators' own space (a tiny
ElasticFace-Arc R100 in its released layout behind the FRS analyzer, as the shipped profiles use).

Both share one profile builder and one run: documents render each identity's sampled vector, live images are new
samples of that same vector (each from its own seed), and the manifest carries the generator's licence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.definitions import build_definitions
from synid_assets.random_models.faces import TINY_CHANNELS, TINY_UNITS, build_pack, tiny_frs_checkpoint
from synid_assets.random_models.idiff_face import build_tiny_idiff_face
from synid_assets.random_models.uiface import build_tiny_uiface
from tests.graph_helpers import QUIET, materialize_batch

IDENTITIES = 3


def seed_profile(root: Path, backend: str, generator_options: dict[str, Any]) -> Path:
    """A tiny embeddings-route profile: `backend` renders documents and live images, the FRS analyzer (tiny
    ElasticFace-Arc R100 behind the tiny SCRFD pack) embeds and filters, with a threshold that accepts everyone."""
    options = {**generator_options, "device": "cpu", "batch_size": IDENTITIES}
    profile = {
        "name": f"tiny-{backend}",
        "dataset": {"seed": 5, "batch_size": IDENTITIES, "live_per_identity": 1, "min_good_live": 0,
                    "identity_source": "embeddings"},
        "identity_vectors": {"method": "gaussian", "max_similarity": 0.3},
        "document_generator": {"backend": backend, **options},
        "live_generator": {"backend": backend, **options},
        "face_analyzer": {
            "backend": "frs", "frs": "elasticface-arc-r100", "device": "cpu",
            "checkpoint": str(tiny_frs_checkpoint("elasticface-arc-r100", root / "295672backbone.pth")),
            "detector_model_dir": str(build_pack(root / "insightface")),
            "units": list(TINY_UNITS), "channels": list(TINY_CHANNELS), "fmr": 0.001,
            "thresholds": [{"fmr": 0.001, "value": 0.9999, "source": "test: tiny random recognizer"}],
        },
    }
    path = root / f"tiny-{backend}.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def run_one_batch(profile: Path, home: Path) -> tuple[list[tuple[str, str, str, dict]], dict[str, np.ndarray], dict]:
    """Materialize the spec and batch-00000; (image rows, identity vectors by identity, licence by backend)."""
    defs = build_definitions(str(profile))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    assert materialize_batch(defs, instance, "batch-00000").success
    layout = DatasetLayout(home)
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        rows = [(i, k, g, json.loads(p)) for i, k, g, p in con.execute(
            "SELECT identity_id, kind, generator, params FROM images ORDER BY image_id").fetchall()]
        licences = dict(con.execute("SELECT backend, license FROM models WHERE role LIKE '%generator'").fetchall())
    table = pl.read_parquet(layout.table("batch-00000", "identity_vectors"))
    vectors = {i: np.array(json.loads(v)) for i, v in zip(table["identity_id"], table["vector"], strict=True)}
    return rows, vectors, licences


def tiny_idiff_face(root: Path) -> dict[str, Any]:
    return {"model_id": str(build_tiny_idiff_face(root / "idiff-face")), "scheduler": "ddim", "steps": 3}


def tiny_uiface(root: Path) -> dict[str, Any]:
    return {"model_id": str(build_tiny_uiface(root / "uiface")), "steps": 6}  # 2 stage-1 steps, then stage 2


@pytest.mark.parametrize(("backend", "build", "size", "licence"), [
    ("idiff_face", tiny_idiff_face, (128, 128), "CC BY-NC-SA 4.0"),
    ("uiface", tiny_uiface, (112, 112), "Apache-2.0"),
])
def test_documents_and_live_images_sample_the_identity_vectors(
    backend: str, build: Callable[[Path], dict[str, Any]], size: tuple[int, int], licence: str,
    tmp_path: Path, synid_home: Path,
) -> None:
    rows, vectors, licences = run_one_batch(seed_profile(tmp_path, backend, build(tmp_path)), synid_home)
    documents = [r for r in rows if r[1] == "document"]
    live = [r for r in rows if r[1] == "live"]
    assert len(vectors) == len(documents) == IDENTITIES and {r[2] for r in rows} == {backend}
    assert live, "the tiny recognizer's threshold accepts every identity, so live images are made"
    for identity, _, _, params in rows:
        # documents and live images alike are samples of the identity's own sampled vector
        assert params["vector_source"] == {"identity_id": identity, "source": "identity_vectors"}
        assert np.allclose(params["vector"], vectors[identity], atol=1e-7)
        assert (params["width"], params["height"]) == size and params["generator"] == backend
    assert len({(r[0], r[3]["seed"]) for r in rows}) == len(rows)  # each image its own noise
    if backend == "uiface":
        assert all(r[3]["identity_from_step"] in (664, 498) for r in rows)
    assert set(licences) == {backend} and licence in licences[backend]
