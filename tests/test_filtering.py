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


def test_batch_filters_decide_pairs_at_the_threshold_in_float64() -> None:
    """Pairs scored within rounding of the threshold: float32 products cannot tell them apart; the batch filters
    re-score them in float64 (exact.similarity_block), as the scale filter does, so both keep the same rows."""
    from synid_assets.core.filtering import scale as fs
    from synid_assets.core.filtering.incremental import incremental_fmr_filter
    from synid_assets.core.filtering.similarity import unit_rows

    rng = np.random.default_rng(0)
    x = unit_rows(rng.normal(size=(80, 256)))
    threshold = 0.8
    for i in range(0, 80, 2):  # row i+1 at cosine threshold +- 3e-8 to row i
        offset = unit_rows((x[i + 1] - (x[i + 1] @ x[i]) * x[i])[None])[0]
        cos = threshold + (3e-8 if i % 4 == 0 else -3e-8)
        x[i + 1] = cos * x[i] + np.sqrt(1 - cos**2) * offset
    seen = unit_rows(x)  # the rows the filters see (each normalizes its input)
    sims64 = seen.astype(np.float64) @ seen.T.astype(np.float64)
    truth = np.argwhere(np.triu(sims64 > threshold, 1))
    float32_flips = int((np.triu(seen @ seen.T > threshold, 1) != np.triu(sims64 > threshold, 1)).sum())
    assert 5 <= len(truth) <= 35 and float32_flips > 0  # float32 alone would decide some pairs wrongly
    ids = [f"id{i}" for i in range(len(x))]
    strict = [d.accepted for d in strict_filter(ids, x, threshold)]
    assert strict == fs.strict_keep(len(x), truth).tolist() == fs.dense_strict_keep(x, threshold).tolist()
    decisions, edges = incremental_fmr_filter(ids, x, threshold, 1e-3, [[] for _ in ids], 0, 0)
    kept = fs.fmr_keep(len(x), truth, 1e-3)
    assert [d.accepted for d in decisions] == kept.tolist()
    assert edges == int((kept[truth[:, 0]] & kept[truth[:, 1]]).sum())
