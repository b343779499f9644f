"""Vec2Face+ on the `identity_source: embeddings` route through the whole graph, with tiny random-weight models.

Documents render each identity's sampled vector (main model, AttrOP towards a frontal yaw); live images vary that
vector and render it with the LoRA pose generator at the yaws of the live-variation list, then AttrOP. The tiny
models never reach the live images' quality target, so they show AttrOP's cap: two renders, then recorded as failed;
the documents get targets they meet (first run) or the same unreachable one (second run: every identity is rejected
by the filter as 'generation_failed', and no live image is made).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synid_assets.random_models.vec2face_plus import build_tiny_vec2face_plus, tiny_options
from tests.graph_helpers import embeddings_route_profile, run_embeddings_batch


@pytest.fixture(scope="module")
def vec2face_plus_profile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vec2face_plus_route")
    tiny = tiny_options(build_tiny_vec2face_plus(root / "vec2face_plus")) | {"batch_size": 4, "attrop_max_tries": 2}
    reachable = {"quality_target": -1.0e6, "identity_margin": 2.0, "yaw_tolerance": 180.0}  # any render passes
    return embeddings_route_profile(root, "vec2face_plus", tiny | reachable,
                                    live_options={"yaws": [45, -45], "quality_target": 1.0e6, "identity_margin": 0.3,
                                                  "yaw_tolerance": 5.0},
                                    seed=11, batch_size=3, live_per_identity=2)


@pytest.fixture(scope="module")
def failing_documents_profile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vec2face_plus_failing")
    tiny = tiny_options(build_tiny_vec2face_plus(root / "vec2face_plus")) | {
        "batch_size": 4, "attrop_max_tries": 2, "quality_target": 1.0e6}
    return embeddings_route_profile(root, "vec2face_plus", tiny, live_options={"yaws": [45, -45]},
                                    seed=11, batch_size=3, live_per_identity=2)


def test_vec2face_plus_renders_the_sampled_vectors_with_pose_targets_and_capped_attrop(
    vec2face_plus_profile: Path, synid_home: Path
) -> None:
    run = run_embeddings_batch(vec2face_plus_profile, synid_home)
    rows, vectors, licences = run["rows"], run["vectors"], run["licences"]
    assert len(vectors) == 3 and {r[2] for r in rows} == {"vec2face_plus"} and {r[5] for r in rows} == {112}
    assert "Vec2Face_plus" in licences["vec2face_plus"]
    documents = [r for r in rows if r[1] == "document"]
    live = [r for r in rows if r[1] == "live"]
    assert len(documents) == 3 and live, "the tiny recognizer's threshold accepts every identity"
    for identity, kind, _, params, live_index, _, _ in rows:
        assert params["vector_source"] == {"identity_id": identity, "source": "identity_vectors"}
        assert np.allclose(params["vector"], vectors[identity], atol=1e-7)
        expected_yaw = 0.0 if kind == "document" else [45.0, -45.0][live_index % 2]
        assert params["target_yaw"] == expected_yaw and params["pose_control"] is (kind == "live")
        # AttrOP ran: documents passed at their first render; live images stopped at the cap, the failure is on
        # the record and the image is kept
        if kind == "document":
            assert params["attrop"]["tries"] == 1 and params["generation_status"] == "ok"
        else:
            assert params["attrop"]["tries"] == 2 and params["generation_status"] == "attrop_failed"
    # ...and the live images that missed their targets do not count for their identity
    assert {r[6] for r in live} == {"generation_failed"}


def test_documents_that_fail_attrop_are_rejected_as_generation_failed(
    failing_documents_profile: Path, synid_home: Path
) -> None:
    import duckdb

    from synid_assets.core.dataset.layout import DatasetLayout
    from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, EmbeddingStore

    run = run_embeddings_batch(failing_documents_profile, synid_home)
    rows = run["rows"]
    assert {r[1] for r in rows} == {"document"}, "no identity is accepted, so no live image is made"
    assert all(r[3]["attrop"]["tries"] == 2 and r[3]["generation_status"] == "attrop_failed" for r in rows)
    layout = DatasetLayout(synid_home)
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        statuses = dict(con.execute("SELECT identity_id, status FROM identities").fetchall())
        reasons = con.execute("SELECT accepted, rejection_reason, count(*) FROM filter_decisions GROUP BY 1, 2"
                              ).fetchall()
    assert set(statuses.values()) == {"generation_failed"} and len(statuses) == 3
    assert reasons == [(False, "generation_failed", 3)]
    assert len(EmbeddingStore(layout.lancedb_uri).vectors(ACCEPTED_TABLE)["identity_id"]) == 0
