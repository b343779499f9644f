"""The strict identity filter: order-stable and incremental, on plain arrays and on a real LanceDB table."""

from __future__ import annotations

import numpy as np

from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, EmbeddingStore
from synid_assets.core.filtering.incremental import strict_filter
from synid_assets.core.filtering.similarity import unit_rows


def clustered_vectors(n_clusters: int, per_cluster: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Clusters of near-duplicates around random centres, shuffled, so the right answer is known."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(n_clusters, dim)))
    vectors = np.repeat(centres, per_cluster, axis=0) + 0.02 * rng.normal(size=(n_clusters * per_cluster, dim))
    return unit_rows(vectors[rng.permutation(len(vectors))])


def test_keeps_first_of_each_near_duplicate_cluster() -> None:
    vectors = clustered_vectors(10, 3)
    ids = [f"id{i:03d}" for i in range(len(vectors))]
    decisions = strict_filter(ids, vectors, threshold=0.9)
    accepted = [d for d in decisions if d.accepted]
    assert len(accepted) == 10
    sims = unit_rows(vectors) @ unit_rows(vectors).T
    kept = [i for i, d in enumerate(decisions) if d.accepted]
    assert (sims[np.ix_(kept, kept)] - np.eye(len(kept)) <= 0.9).all()
    # Every rejection names an earlier accepted identity above the threshold.
    for row, decision in enumerate(decisions):
        if not decision.accepted:
            assert decision.similarity > 0.9
            assert ids.index(decision.nearest_identity_id) < row
            assert decisions[ids.index(decision.nearest_identity_id)].accepted


def test_incremental_batches_equal_one_pass(tmp_path) -> None:
    vectors = clustered_vectors(12, 4, seed=3)
    ids = [f"b{i // 16}-{i % 16:02d}" for i in range(len(vectors))]
    one_pass = [d.accepted for d in strict_filter(ids, vectors, 0.9)]

    store = EmbeddingStore(tmp_path / "lancedb")
    incremental: list[bool] = []
    first_batch_decisions = None
    for batch in range(3):
        rows = slice(batch * 16, (batch + 1) * 16)
        batch_id = f"b{batch}"
        decisions = strict_filter(
            ids[rows],
            vectors[rows],
            0.9,
            prior_search=lambda q, b=batch_id: store.nearest(ACCEPTED_TABLE, q, "m", before_batch=b),
        )
        accepted_rows = [
            {"identity_id": d.identity_id, "image_id": d.identity_id, "batch_id": batch_id, "model_id": "m",
             "vector": vectors[rows][i]}
            for i, d in enumerate(decisions)
            if d.accepted
        ]
        store.replace_batch(ACCEPTED_TABLE, batch_id, accepted_rows, vectors.shape[1])
        incremental += [d.accepted for d in decisions]
        if batch == 0:
            first_batch_decisions = decisions
    assert incremental == one_pass
    # Re-deciding the first batch after later batches were accepted gives the same decisions.
    again = strict_filter(
        ids[:16], vectors[:16], 0.9,
        prior_search=lambda q: store.nearest(ACCEPTED_TABLE, q, "m", before_batch="b0"),
    )
    assert [(d.accepted, d.nearest_identity_id, d.similarity) for d in again] == [
        (d.accepted, d.nearest_identity_id, d.similarity) for d in first_batch_decisions
    ]


def test_empty_batch() -> None:
    assert strict_filter([], np.zeros((0, 8)), 0.5) == []
