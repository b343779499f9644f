"""The shared filter rules (strict and FMR), tested once against the dense n x n reference.

Both filters decide with the same rule code (synid_assets/core/filtering/rules.py): the incremental filter, batch
by batch over LanceDB-stored acceptances, and the scale filter, on exact or IVF candidate pairs. Each must keep
exactly the rows the dense reference keeps. The embeddings are face-like rather than isotropic: a low-rank cloud
whose covariance eigenvalues decay, a small noise floor, and planted near-duplicate groups, so above-threshold
pairs come both from planted groups and from the crowded leading directions, and degrees tie inside groups.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, EmbeddingStore
from synid_assets.core.filtering import scale as fs
from synid_assets.core.filtering.incremental import incremental_fmr_filter, strict_filter
from synid_assets.core.filtering.rules import CandidatePairs, fmr_rule, strict_rule
from synid_assets.core.filtering.similarity import cosine_similarity, dataset_fmr, unit_rows

MODEL = "test-model"


def face_like_embeddings(n: int, seed: int, dim: int = 64, duplicate_share: float = 0.25) -> np.ndarray:
    """Raw (not unit) rows: rank dim/2 with variances k^-1 plus a 0.03 noise floor; a quarter of the rows are
    replaced by a near-duplicate of another row (cosine ~0.75-0.98 to it, chains allowed)."""
    rng = np.random.default_rng(seed)
    rank = dim // 2
    std = np.arange(1, rank + 1) ** -0.5
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]

    def draw(k: int) -> np.ndarray:
        return (rng.normal(size=(k, rank)) * std) @ basis.T + 0.03 * rng.normal(size=(k, dim))

    x = draw(n)
    for row in rng.choice(n, int(n * duplicate_share), replace=False):
        x[row] = x[rng.integers(n)] + rng.uniform(0.2, 0.9) * draw(1)[0]
    return x.astype(np.float32)


def threshold_with_margin(unit: np.ndarray, near: float, margin: float = 1e-4) -> float:
    """A threshold near `near` with no pair similarity within `margin`, so float32 rounding differences between
    the dense product, the blocked search and LanceDB's distances cannot flip a pair."""
    sims = (unit.astype(np.float64) @ unit.T.astype(np.float64))[np.triu_indices(len(unit), 1)]
    window = np.sort(sims[(sims > near - 0.05) & (sims < near + 0.05)])
    edges = np.concatenate([[near - 0.05], window, [near + 0.05]])
    k = int(np.argmax(np.diff(edges)))
    threshold = float((edges[k] + edges[k + 1]) / 2)
    assert len(sims) == 0 or np.abs(sims - threshold).min() > margin
    return threshold


def dense_batched_fmr_keep(x: np.ndarray, threshold: float, target: float, batch_size: int) -> np.ndarray:
    """The incremental FMR rule written plainly on the dense adjacency: each batch's rows join the rows accepted
    before it (held fixed); while the FMR among them is above the target, the batch row with the most matches
    among them goes (ties: first), unless it has none."""
    unit = unit_rows(x, check=True)
    adj = (unit @ unit.T) > threshold
    np.fill_diagonal(adj, False)
    accepted = np.zeros(len(x), dtype=bool)
    for start in range(0, len(x), batch_size):
        batch = np.arange(start, min(len(x), start + batch_size))
        active = accepted.copy()
        active[batch] = True
        while True:
            members = int(active.sum())
            if dataset_fmr(members, int(adj[np.ix_(active, active)].sum()) // 2) <= target:
                break
            degrees = np.where(active[batch], adj[np.ix_(batch, active)].sum(axis=1), -1)
            worst = int(np.argmax(degrees))
            if degrees[worst] <= 0:
                break
            active[batch[worst]] = False
        accepted = active
    return accepted


def in_memory_batches(x: np.ndarray, threshold: float, batch_size: int, target: float | None) -> np.ndarray:
    """The incremental filter over batches, earlier acceptances searched by a plain numpy scan."""
    unit = unit_rows(x)
    ids = [f"id{i:04d}" for i in range(len(x))]
    accepted = np.zeros(len(x), dtype=bool)
    edges = 0
    for start in range(0, len(x), batch_size):
        rows = np.arange(start, min(len(x), start + batch_size))
        before = np.flatnonzero(accepted)
        sims = unit[rows] @ unit[before].T
        if target is None:
            def prior(queries: np.ndarray, sims: np.ndarray = sims, before: np.ndarray = before) -> list:
                if len(before) == 0:
                    return [(None, None)] * len(queries)
                best = sims.argmax(axis=1)
                return [(ids[before[b]], float(s[b])) for b, s in zip(best, sims, strict=True)]

            decisions = strict_filter([ids[r] for r in rows], x[rows], threshold, prior_search=prior)
        else:
            neighbours = [[(ids[b], float(s)) for b, s in zip(before, row, strict=True)] for row in sims]
            decisions, edges = incremental_fmr_filter(
                [ids[r] for r in rows], x[rows], threshold, target, neighbours, len(before), edges
            )
        accepted[rows] = [d.accepted for d in decisions]
    if target is not None:
        adj = (unit[accepted] @ unit[accepted].T) > threshold
        assert edges == (int(adj.sum()) - int(accepted.sum())) // 2  # the running pair count is exact
    return accepted


def lancedb_batches(store_dir, x: np.ndarray, threshold: float, batch_size: int, target: float | None) -> tuple:
    """The incremental filter as the batch step runs it: acceptances stored in LanceDB, each batch searching
    those of batches before it. Returns (kept mask, decisions, accepted identities, matching pairs among them)."""
    store = EmbeddingStore(store_dir)
    ids = [f"id{i:04d}" for i in range(len(x))]
    decisions: list = []
    accepted_total = edges = 0
    for batch, start in enumerate(range(0, len(x), batch_size)):
        batch_id = f"b{batch:03d}"
        rows = slice(start, start + batch_size)
        if target is None:
            decided = strict_filter(
                ids[rows], x[rows], threshold,
                prior_search=lambda q, b=batch_id: store.nearest(ACCEPTED_TABLE, q, MODEL, before_batch=b),
            )
        else:
            neighbours = store.neighbours(ACCEPTED_TABLE, x[rows], MODEL, batch_id, 1000)
            decided, edges = incremental_fmr_filter(
                ids[rows], x[rows], threshold, target, neighbours, accepted_total, edges
            )
        kept = [
            {"identity_id": d.identity_id, "image_id": d.identity_id, "batch_id": batch_id, "model_id": MODEL,
             "vector": x[rows][i]}
            for i, d in enumerate(decided)
            if d.accepted
        ]
        store.replace_batch(ACCEPTED_TABLE, batch_id, kept, x.shape[1])
        accepted_total += len(kept)
        decisions += decided
    return np.array([d.accepted for d in decisions]), decisions, accepted_total, edges


def scale_kept(x: np.ndarray, threshold: float, target: float | None, **search: object) -> np.ndarray:
    mode = "strict" if target is None else "fmr"
    result = fs.filter_vectors(x, threshold, mode=mode, target_fmr=target, **search)
    kept = np.zeros(len(x), dtype=bool)
    kept[result["kept"]] = True
    return kept


# ------------------------------------------------------------------------------------------- the data is face-like
def test_embeddings_have_a_decaying_spectrum_and_planted_pairs() -> None:
    unit = unit_rows(face_like_embeddings(600, seed=0))
    eigenvalues = np.linalg.eigvalsh(np.cov(unit.T))[::-1]
    assert eigenvalues[0] > 2 * eigenvalues[3] > 4 * eigenvalues[20]  # decays: not an isotropic cloud
    assert eigenvalues[0] > 100 * eigenvalues[-1]
    sims = (unit @ unit.T)[np.triu_indices(600, 1)]
    assert np.median(sims) < 0.1 and (sims > 0.9).sum() > 50  # mostly unrelated, plus near-duplicates


# ------------------------------------------------------------------------------------------- both filters vs dense
@pytest.mark.parametrize("seed", range(12))
def test_both_filters_keep_what_the_dense_reference_keeps(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 320))
    x = face_like_embeddings(n, seed)
    unit = unit_rows(x)
    removed = 0
    for near in (0.6, 0.8):
        threshold = threshold_with_margin(unit, near)
        dense = fs.dense_strict_keep(x, threshold)
        assert (scale_kept(x, threshold, None, method="exact", block=32, col_block=50) == dense).all()
        assert (in_memory_batches(x, threshold, n, None) == dense).all()  # one batch
        assert (in_memory_batches(x, threshold, 37, None) == dense).all()  # strict mode is order-stable
        removed += int((~dense).sum())
        for target in (0.0, 0.002, 0.02):
            dense = fs.dense_fmr_keep(x, threshold, target)
            assert (scale_kept(x, threshold, target, method="exact", block=32, col_block=50) == dense).all()
            assert (in_memory_batches(x, threshold, n, target) == dense).all()
            batched = dense_batched_fmr_keep(x, threshold, target, 37)
            assert (in_memory_batches(x, threshold, 37, target) == batched).all()
            removed += int((~dense).sum()) + int((~batched).sum())
    if n > 40:
        assert removed > n // 4  # the cases do real work


@pytest.mark.parametrize(("mode", "target"), [("strict", None), ("fmr", 0.0), ("fmr", 0.003)])
def test_incremental_filter_over_lancedb_batches(tmp_path, mode: str, target: float | None) -> None:
    x = face_like_embeddings(240, seed=7)
    threshold = threshold_with_margin(unit_rows(x), 0.7)
    kept, decisions, accepted_total, edges = lancedb_batches(tmp_path / "db", x, threshold, 80, target)
    if target is None:
        expected = fs.dense_strict_keep(x, threshold)
        assert (kept == expected).all()
        assert (kept == scale_kept(x, threshold, None)).all()
    else:
        expected = dense_batched_fmr_keep(x, threshold, target, 80)
        assert (kept == expected).all()
        unit = unit_rows(x)[kept]
        assert edges == (int(((unit @ unit.T) > threshold).sum()) - int(kept.sum())) // 2
        assert dataset_fmr(accepted_total, edges) <= target  # held after every batch
    assert 0 < int((~expected).sum()) < len(x)
    if target is None:  # every strict rejection names an acceptance above the threshold
        assert all(d.accepted or d.similarity > threshold for d in decisions)


def test_one_batch_fmr_is_fluxsynids_rule(tmp_path) -> None:
    """With no earlier batch the incremental FMR rule is FLUXSynID's rule over the whole set."""
    x = face_like_embeddings(150, seed=3)
    threshold = threshold_with_margin(unit_rows(x), 0.65)
    kept, _, _, _ = lancedb_batches(tmp_path / "db", x, threshold, 150, 0.001)
    assert (kept == fs.dense_fmr_keep(x, threshold, 0.001)).all()
    assert (kept == scale_kept(x, threshold, 0.001)).all()


def test_scale_filter_with_the_ivf_index() -> None:
    x = face_like_embeddings(1500, seed=11)
    unit = unit_rows(x)
    threshold = threshold_with_margin(unit, 0.75)
    exact, _, _ = fs.above_threshold_pairs(unit, threshold, method="exact")
    indexed, _, stats = fs.above_threshold_pairs(unit, threshold, method="index", seed=0, n_probe=6)
    assert stats["method"] == "index" and stats["candidates"] < 0.5 * 1500 * 1499 / 2  # it prunes
    assert indexed.tolist() == exact.tolist()
    assert (scale_kept(x, threshold, None, method="index") == fs.dense_strict_keep(x, threshold)).all()
    for target in (0.0, 0.001):
        assert (scale_kept(x, threshold, target, method="index") == fs.dense_fmr_keep(x, threshold, target)).all()


# ------------------------------------------------------------------------------------------- the rules by hand
def test_fmr_rule_ties_and_stop_rule() -> None:
    # path 0-1-2-3: degrees 1,2,2,1 and FMR 6/12; row 1 goes first (ties: lowest index, like argmax)
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    assert fs.fmr_keep(4, pairs, 0.5).all()  # FMR == target: checked before removing, nothing removed
    assert fs.fmr_keep(4, pairs, 0.49).tolist() == [True, False, True, True]  # then 2/6 <= 0.49
    assert fs.fmr_keep(4, pairs, 0.0).tolist() == [True, False, False, True]  # then 2 (tie with 3)
    # pairs given in any order, twice, or reversed decide the same
    assert fs.fmr_keep(4, np.array([[2, 1], [3, 2], [1, 0], [1, 2]]), 0.0).tolist() == [True, False, False, True]


def test_rules_hold_earlier_acceptances_fixed() -> None:
    # 10 earlier acceptances with 3 matching pairs among them; candidates 0-1 match, candidate 2 matches 2 of them
    candidates = CandidatePairs.from_pairs(3, np.array([[1, 0]]), np.array([0, 0, 2]), 10, 3)
    assert candidates.pairs.tolist() == [[0, 1]]
    assert strict_rule(candidates).tolist() == [True, False, False]
    # FMR 2 * 6 / (13 * 12): candidate 2 (degree 2) goes, then 0 (tie with 1), then nothing has a match left
    assert fmr_rule(candidates, 0.0).tolist() == [False, True, False]
    assert candidates.accepted_edges(np.array([False, True, False])) == 3  # the fixed pairs stay
    assert fmr_rule(candidates, dataset_fmr(13, 6)).all()
    assert fmr_rule(candidates, -1.0).tolist() == [False, True, False]  # an unreachable target still ends
    assert strict_rule(CandidatePairs.from_pairs(0, np.zeros((0, 2)))).tolist() == []


# ------------------------------------------------------------------------------------------- the shared helpers
def test_unit_rows_and_cosine_similarity() -> None:
    x = face_like_embeddings(20, seed=1).astype(np.float64)
    x[3] = 0.0
    unit = unit_rows(x)
    assert unit.dtype == np.float32 and unit.flags["C_CONTIGUOUS"]
    assert (unit[3] == 0).all()  # a zero row stays zero
    nonzero = np.delete(x.astype(np.float32), 3, 0)
    assert np.array_equal(np.delete(unit, 3, 0), nonzero / np.linalg.norm(nonzero, axis=1, keepdims=True))
    assert unit_rows(x, copy=True) is not x
    with pytest.raises(ValueError, match="row 3 is all zeros"):
        unit_rows(x, check=True)
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match="row 5 has a NaN"):
        unit_rows(x, check=True)
    with pytest.raises(ValueError, match="2-D"):
        unit_rows(np.ones(4))
    assert cosine_similarity(unit[0], unit[1]) == pytest.approx(float(unit[0] @ unit[1]), abs=1e-6)
    assert cosine_similarity(x[0], np.zeros(x.shape[1])) == 0.0


def test_dataset_fmr() -> None:
    assert dataset_fmr(0, 0) == dataset_fmr(1, 0) == 0.0
    assert dataset_fmr(4, 3) == 0.5  # 6 of 12 ordered pairs match
    assert dataset_fmr(1000, 1) == 2 / (1000 * 999)


def test_decisions_are_plain_values() -> None:
    """The incremental filter's decisions carry python floats and ids, as the batch step writes them."""
    x = face_like_embeddings(30, seed=2)
    decisions = strict_filter([f"i{k}" for k in range(30)], x, 0.8)
    for decision in decisions[1:]:
        fields = dataclasses.asdict(decision)
        assert isinstance(fields["similarity"], float) and isinstance(fields["accepted"], bool)
