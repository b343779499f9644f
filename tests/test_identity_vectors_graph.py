"""The `identity_source: embeddings` route through the whole graph, with a tiny random-weight Arc2Face.

identity_vectors places a 512-d unit vector per identity under the bound (against earlier batches too), Arc2Face
renders each vector as the document, live images, embeddings, filter, manifest and report run unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.identity_vectors import max_pairwise_similarity
from synid_assets.definitions import build_definitions
from synid_assets.defs.partitions import identity_batches
from synid_assets.random_models.arc2face import build_tiny_arc2face
from synid_assets.random_models.faces import build_pack

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
BOUND = 0.3


@pytest.fixture(scope="module")
def embeddings_profile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vectors_route")
    arc_dir, base_dir = build_tiny_arc2face(root / "arc2face")
    tiny = {"model_id": str(arc_dir), "base_model_id": str(base_dir), "width": 32, "height": 32, "steps": 2,
            "dtype": "float32", "device": "cpu"}
    profile = {
        "name": "tiny-embeddings",
        "dataset": {"seed": 5, "batch_size": 3, "live_per_identity": 1, "min_good_live": 1,
                    "identity_source": "embeddings"},
        "identity_vectors": {"method": "gaussian", "max_similarity": BOUND},
        "document_generator": {"backend": "arc2face", **tiny},
        "live_generator": {"backend": "arc2face", **tiny},
        "face_analyzer": {
            "backend": "insightface", "model_dir": str(build_pack(root / "insightface")), "fmr": 0.001,
            "thresholds": [{"fmr": 0.001, "value": 0.9999, "source": "test: tiny random recognizer"}],
        },
    }
    path = root / "tiny-embeddings.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def run(defs: dg.Definitions, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInJobResult:
    instance.add_dynamic_partitions(identity_batches.name, [key])
    return defs.resolve_job_def("synid_batch").execute_in_process(
        partition_key=key, instance=instance, run_config=QUIET, raise_on_error=False
    )


def test_embeddings_route_renders_sampled_vectors(embeddings_profile: Path, synid_home: Path) -> None:
    defs = build_definitions(str(embeddings_profile))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    first = run(defs, instance, "batch-00000")
    assert first.success
    assert run(defs, instance, "batch-00001").success
    layout = DatasetLayout(synid_home)
    tables = [pl.read_parquet(layout.table(b, "identity_vectors")) for b in ("batch-00000", "batch-00001")]
    vectors = np.array([json.loads(v) for t in tables for v in t["vector"]], dtype=np.float32)
    assert vectors.shape == (6, 512) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert max_pairwise_similarity(vectors)[0] <= BOUND  # across batches too
    second = tables[1]
    assert set(second["vector_space"]) == {"FoivosPar/Arc2Face:arcface.onnx"} and set(second["method"]) == {"gaussian"}
    assert second["nearest_identity_id"][0].startswith("batch-00000")  # batch 1 was placed against batch 0
    metadata = first.asset_materializations_for_node("identity_vectors")[0].metadata
    assert metadata["dagster/row_count"].value == 3 and metadata["vector_space"].value.endswith("arcface.onnx")
    by_identity = {i: json.loads(v) for t in tables for i, v in zip(t["identity_id"], t["vector"], strict=True)}
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        documents = con.execute("SELECT identity_id, generator, params FROM images WHERE kind = 'document'").fetchall()
        live = con.execute("SELECT count(*) FROM images WHERE kind = 'live'").fetchone()[0]
        attributes = con.execute("SELECT count(DISTINCT identity_id) FROM identity_attributes").fetchone()[0]
        statuses = con.execute("SELECT count(*) FROM identities WHERE status != 'pending'").fetchone()[0]
    assert len(documents) == 6 and {g for _, g, _ in documents} == {"arc2face"}
    for identity, _, params in documents:  # each document is Arc2Face's rendering of the identity's own vector
        params = json.loads(params)
        assert np.allclose(params["embedding"], by_identity[identity], atol=1e-7)
        assert params["embedding_source"]["identity_vector"] == "identity_vectors" and "live_index" not in params
    assert attributes == 6 and statuses == 6  # attributes still sampled; the filter decided every identity
    accepted = {i for i, _, _ in documents}
    assert live >= 1 and len(accepted) == 6


def test_embeddings_route_needs_a_vector_generator(embeddings_profile: Path, synid_home: Path, tmp_path) -> None:
    profile = yaml.safe_load(embeddings_profile.read_text())
    profile["document_generator"] = {"backend": "procedural"}
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    defs = build_definitions(str(path))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    result = run(defs, instance, "batch-00000")
    assert not result.success
    text = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data.description
    assert "renders identity vectors" in text and "'procedural'" in text
