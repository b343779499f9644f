"""Vec2Face+ on the `identity_source: embeddings` route through the whole graph, with tiny random-weight models.

Documents render each identity's sampled vector (main model, AttrOP towards a frontal yaw); live images vary that
vector and render it with the LoRA pose generator at the yaws of the live-variation list, then AttrOP. The tiny
models never reach the quality target, so every image shows AttrOP's cap: two renders, then recorded as failed.
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
        # AttrOP ran and stopped at its cap; the failure is on the record, the image is kept
        assert params["attrop"]["tries"] == 2 and params["generation_status"] == "attrop_failed"
    # ...and the live images that missed their targets do not count for their identity
    assert {r[6] for r in live} == {"generation_failed"}
