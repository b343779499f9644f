"""Vec2Face+ on the `identity_source: embeddings` route through the whole graph, with tiny random-weight models.

Documents render each identity's sampled vector (main model, AttrOP towards a frontal yaw); live images vary that
vector and render it with the LoRA pose generator at the yaws of the live-variation list, then AttrOP. The tiny
models never reach the quality target, so every image shows AttrOP's cap: two renders, then recorded as failed.
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
from synid_assets.definitions import build_definitions
from synid_assets.defs.partitions import identity_batches
from synid_assets.random_models.faces import build_pack
from synid_assets.random_models.vec2face_plus import build_tiny_vec2face_plus, tiny_options

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def vec2face_plus_profile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vec2face_plus_route")
    tiny = tiny_options(build_tiny_vec2face_plus(root / "vec2face_plus")) | {
        "batch_size": 4, "attrop_max_tries": 2, "quality_target": 1.0e6}
    profile = {
        "name": "tiny-vec2face-plus",
        "dataset": {"seed": 11, "batch_size": 3, "live_per_identity": 2, "min_good_live": 0,
                    "identity_source": "embeddings"},
        "identity_vectors": {"method": "gaussian", "max_similarity": 0.3},
        "document_generator": {"backend": "vec2face_plus", **tiny},
        "live_generator": {"backend": "vec2face_plus", "yaws": [45, -45], **tiny},
        "face_analyzer": {
            "backend": "insightface", "model_dir": str(build_pack(root / "insightface")), "fmr": 0.001,
            "thresholds": [{"fmr": 0.001, "value": 0.9999, "source": "test: tiny random recognizer"}],
        },
    }
    path = root / "tiny-vec2face-plus.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def test_vec2face_plus_renders_the_sampled_vectors_with_pose_targets_and_capped_attrop(
    vec2face_plus_profile: Path, synid_home: Path
) -> None:
    defs = build_definitions(str(vec2face_plus_profile))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    instance.add_dynamic_partitions(identity_batches.name, ["batch-00000"])
    result = defs.resolve_job_def("synid_batch").execute_in_process(
        partition_key="batch-00000", instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert result.success
    layout = DatasetLayout(synid_home)
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        rows = con.execute("SELECT identity_id, kind, generator, live_index, width, params FROM images "
                           "ORDER BY image_id").fetchall()
        licences = {r[0] for r in con.execute("SELECT license FROM models WHERE backend = 'vec2face_plus'").fetchall()}
    table = pl.read_parquet(layout.table("batch-00000", "identity_vectors"))
    vectors = {i: np.array(json.loads(v)) for i, v in zip(table["identity_id"], table["vector"], strict=True)}
    assert len(vectors) == 3 and {r[2] for r in rows} == {"vec2face_plus"} and {r[4] for r in rows} == {112}
    assert licences and all("Vec2Face_plus" in text for text in licences)
    documents = [r for r in rows if r[1] == "document"]
    live = [r for r in rows if r[1] == "live"]
    assert len(documents) == 3 and live, "the tiny recognizer's threshold accepts every identity"
    for identity, kind, _, live_index, _, params in rows:
        params = json.loads(params)
        assert params["vector_source"] == {"identity_id": identity, "source": "identity_vectors"}
        assert np.allclose(params["vector"], vectors[identity], atol=1e-7)
        expected_yaw = 0.0 if kind == "document" else [45.0, -45.0][live_index % 2]
        assert params["target_yaw"] == expected_yaw and params["pose_control"] is (kind == "live")
        # AttrOP ran and stopped at its cap; the failure is on the record, the image is kept
        assert params["attrop"]["tries"] == 2 and params["generation_status"] == "attrop_failed"
    # ...and the live images that missed their targets do not count for their identity
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        statuses = {r[0] for r in con.execute("SELECT live_status FROM images WHERE kind = 'live'").fetchall()}
    assert statuses == {"generation_failed"}
