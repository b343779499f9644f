"""Vec2Face on the `identity_source: embeddings` route through the whole graph, with a tiny random-weight model.

Documents render each identity's sampled vector; live images are Vec2Face's variations of that same vector (not of
the document face's embedding), as the published sampling does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synid_assets.random_models.vec2face import TINY_HEADS, build_tiny_vec2face
from tests.graph_helpers import embeddings_route_profile, run_embeddings_batch


@pytest.fixture(scope="module")
def vec2face_profile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vec2face_route")
    checkpoint = build_tiny_vec2face(root / "vec2face" / "vec2face_generator.pth")
    tiny = {"model_id": str(checkpoint), "num_heads": TINY_HEADS, "decoder_num_heads": TINY_HEADS,
            "device": "cpu", "batch_size": 4}
    return embeddings_route_profile(root, "vec2face", tiny, seed=11, batch_size=4, live_per_identity=2)


def test_vec2face_documents_and_live_images_come_from_the_sampled_vectors(
    vec2face_profile: Path, synid_home: Path
) -> None:
    run = run_embeddings_batch(vec2face_profile, synid_home)
    rows, vectors = run["rows"], run["vectors"]
    assert set(vectors) == run["identities"] and len(vectors) == 4
    documents = [r for r in rows if r[1] == "document"]
    live = [r for r in rows if r[1] == "live"]
    assert len(documents) == 4 and {r[2] for r in rows} == {"vec2face"}
    assert live, "the tiny recognizer's threshold accepts every identity, so live images are made"
    for identity, kind, _, params, *_ in rows:
        # Both kinds start from the identity's own sampled vector (unit vector recorded, before scaling and noise).
        assert params["vector_source"] == {"identity_id": identity, "source": "identity_vectors"}
        assert np.allclose(params["vector"], vectors[identity], atol=1e-7)
        assert params["varies"] is (kind == "live")
    # Each live image of an identity draws its own noise and mask, from its own seed.
    seeds = [(identity, params["seed"]) for identity, _, _, params, *_ in live]
    assert len(set(seeds)) == len(seeds)
