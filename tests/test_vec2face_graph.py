"""Vec2Face on the `identity_source: embeddings` route through the whole graph, with a tiny random-weight model.

Documents render each identity's sampled vector; live images are Vec2Face's variations of that same vector (not of
the document face's embedding), as the published sampling does.
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
from synid_assets.random_models.vec2face import TINY_HEADS, build_tiny_vec2face

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def vec2face_profile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vec2face_route")
    checkpoint = build_tiny_vec2face(root / "vec2face" / "vec2face_generator.pth")
    tiny = {"model_id": str(checkpoint), "num_heads": TINY_HEADS, "decoder_num_heads": TINY_HEADS,
            "device": "cpu", "batch_size": 4}
    profile = {
        "name": "tiny-vec2face",
        "dataset": {"seed": 11, "batch_size": 4, "live_per_identity": 2, "min_good_live": 0,
                    "identity_source": "embeddings"},
        "identity_vectors": {"method": "gaussian", "max_similarity": 0.3},
        "document_generator": {"backend": "vec2face", **tiny},
        "live_generator": {"backend": "vec2face", **tiny},
        "face_analyzer": {
            "backend": "insightface", "model_dir": str(build_pack(root / "insightface")), "fmr": 0.001,
            "thresholds": [{"fmr": 0.001, "value": 0.9999, "source": "test: tiny random recognizer"}],
        },
    }
    path = root / "tiny-vec2face.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def test_vec2face_documents_and_live_images_come_from_the_sampled_vectors(
    vec2face_profile: Path, synid_home: Path
) -> None:
    defs = build_definitions(str(vec2face_profile))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    instance.add_dynamic_partitions(identity_batches.name, ["batch-00000"])
    result = defs.resolve_job_def("synid_batch").execute_in_process(
        partition_key="batch-00000", instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert result.success
    layout = DatasetLayout(synid_home)
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        rows = con.execute("SELECT identity_id, kind, generator, params FROM images ORDER BY image_id").fetchall()
        identities = {i for (i,) in con.execute("SELECT identity_id FROM identities").fetchall()}
    table = pl.read_parquet(layout.table("batch-00000", "identity_vectors"))
    vectors = {i: np.array(json.loads(v)) for i, v in zip(table["identity_id"], table["vector"], strict=True)}
    assert set(vectors) == identities and len(vectors) == 4
    documents = [r for r in rows if r[1] == "document"]
    live = [r for r in rows if r[1] == "live"]
    assert len(documents) == 4 and {r[2] for r in rows} == {"vec2face"}
    assert live, "the tiny recognizer's threshold accepts every identity, so live images are made"
    for identity, kind, _, params in rows:
        params = json.loads(params)
        # Both kinds start from the identity's own sampled vector (unit vector recorded, before scaling and noise).
        assert params["vector_source"] == {"identity_id": identity, "source": "identity_vectors"}
        assert np.allclose(params["vector"], vectors[identity], atol=1e-7)
        assert params["varies"] is (kind == "live")
    # Each live image of an identity draws its own noise and mask, from its own seed.
    seeds = [(identity, json.loads(params)["seed"]) for identity, _, _, params in live]
    assert len(set(seeds)) == len(seeds)
