"""IDiff-Face and UIFace on the `identity_source: embeddings` route through the whole graph, with tiny random-weight
models loaded through their real loading paths, and the filter in the generators' own space (a tiny
ElasticFace-Arc R100 in its released layout behind the FRS analyzer, as the shipped profiles use).

Both share one profile builder and one run: documents render each identity's sampled vector, live images are new
samples of that same vector (each from its own seed), and the manifest carries the generator's licence.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synid_assets.random_models.faces import TINY_CHANNELS, TINY_UNITS, build_pack, tiny_frs_checkpoint
from synid_assets.random_models.idiff_face import build_tiny_idiff_face
from synid_assets.random_models.uiface import build_tiny_uiface
from tests.graph_helpers import embeddings_route_profile, run_embeddings_batch

IDENTITIES = 3


def seed_profile(root: Path, backend: str, generator_options: dict[str, Any]) -> Path:
    """`backend` on the embeddings route, embedded and filtered by the FRS analyzer (tiny ElasticFace-Arc R100
    behind the tiny SCRFD pack), as the shipped profiles are."""
    analyzer = {
        "backend": "frs", "frs": "elasticface-arc-r100", "device": "cpu",
        "checkpoint": str(tiny_frs_checkpoint("elasticface-arc-r100", root / "295672backbone.pth")),
        "detector_model_dir": str(build_pack(root / "insightface")),
        "units": list(TINY_UNITS), "channels": list(TINY_CHANNELS),
    }
    options = {**generator_options, "device": "cpu", "batch_size": IDENTITIES}
    return embeddings_route_profile(root, backend, options, analyzer=analyzer, batch_size=IDENTITIES)


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
    run = run_embeddings_batch(seed_profile(tmp_path, backend, build(tmp_path)), synid_home)
    rows, vectors, licences = run["rows"], run["vectors"], run["licences"]
    documents = [r for r in rows if r[1] == "document"]
    live = [r for r in rows if r[1] == "live"]
    assert len(vectors) == len(documents) == IDENTITIES and {r[2] for r in rows} == {backend}
    assert live, "the tiny recognizer's threshold accepts every identity, so live images are made"
    for identity, _, _, params, *_ in rows:
        # documents and live images alike are samples of the identity's own sampled vector
        assert params["vector_source"] == {"identity_id": identity, "source": "identity_vectors"}
        assert np.allclose(params["vector"], vectors[identity], atol=1e-7)
        assert (params["width"], params["height"]) == size and params["generator"] == backend
    assert len({(r[0], r[3]["seed"]) for r in rows}) == len(rows)  # each image its own noise
    if backend == "uiface":
        assert all(r[3]["identity_from_step"] in (664, 498) for r in rows)
    assert set(licences) == {backend} and licence in licences[backend]
