"""Issue 13: the scale filter's promises on small anisotropic inputs, in the exact and the index paths.

strict keeps no pair above the threshold; fmr keeps exactly the set FLUXSynID's own filter
(dataset_filtering/find_similar_ids.py: greedy_mis_filter_optimized) keeps. The exact path runs the same torch
code a GPU runs (float16 / bfloat16 products, float64 re-scoring near the threshold), here on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from synid_assets.core.filtering import scale as fs
from synid_assets.core.filtering.exact import MARGINS, exact_pairs, query_pairs, rescore
from synid_assets.core.filtering.ivf import INDEX_COST_PER_PAIR
from synid_assets.core.filtering.pair_search import above_threshold_pairs, choose_method
from synid_assets.core.filtering.similarity import unit_rows
from synid_assets.core.filtering.synthetic import face_like_vectors, neighbour_share_threshold


def flux_reference_keep(x: np.ndarray, threshold: float, target_fmr: float) -> np.ndarray:
    """FLUXSynID's greedy filter, as its code does it: adjacency = similarity >= threshold (float32 products),
    degrees counted once and decremented as nodes go; while edges / (M (M - 1)) over the active nodes is above
    the target, remove the active node of highest degree (first on ties, as torch.max)."""
    sims = x @ x.T
    adj = (sims >= threshold).astype(np.int32)
    np.fill_diagonal(adj, 0)
    degrees = adj.sum(axis=1)
    active = np.ones(len(x), dtype=bool)
    while True:
        idx = np.flatnonzero(active)
        m = len(idx)
        # removed nodes' rows and columns are zeroed, so the sum over all of adj is the sum over the active ones
        if m <= 1 or adj.sum() / (m * (m - 1)) <= target_fmr:
            break
        node = idx[int(np.argmax(degrees[idx]))]
        active[node] = False
        neighbours = np.flatnonzero(adj[node])
        adj[node, :] = 0
        adj[:, node] = 0
        degrees[neighbours[active[neighbours]]] -= 1
        degrees[node] = 0
    return active


def clear_threshold(x: np.ndarray, near: float) -> float:
    """A threshold near `near` with no pair within 1e-4 of it, so float32 and float64 scores agree on every pair."""
    sims = np.sort((x.astype(np.float64) @ x.T.astype(np.float64))[np.triu_indices(len(x), 1)])
    gaps = np.flatnonzero(np.diff(sims) > 3e-4)
    k = gaps[np.argmin(np.abs(sims[gaps] - near))]  # the clear gap closest to `near`
    threshold = float((sims[k] + sims[k + 1]) / 2)
    assert np.abs(sims - threshold).min() > 1e-4
    return threshold


SHAPES = [("k0.5", 0.2), ("k1", 0.1), ("k1.5", 0.05)]


@pytest.fixture(scope="module", params=SHAPES, ids=[s for s, _ in SHAPES])
def shaped(request) -> tuple[np.ndarray, float]:
    name, share = request.param
    x, members = face_like_vectors(2500, 64, name, seed=3)
    assert len(members) > 0.08 * len(x)
    return x, clear_threshold(x, neighbour_share_threshold(x, share, queries=2500))


@pytest.mark.parametrize("method", ["exact", "index"])
def test_strict_keeps_no_pair_above_threshold(shaped, method: str) -> None:
    x, threshold = shaped
    result = fs.filter_vectors(x, threshold, mode="strict", method=method, n_cells=24, recall_rows=len(x))
    kept = np.array(result["kept"])
    sims = x[kept].astype(np.float64) @ x[kept].T.astype(np.float64)
    np.fill_diagonal(sims, -1)
    assert result["edges"] > 20 and sims.max() <= threshold
    assert result["kept"] == np.flatnonzero(fs.dense_strict_keep(x, threshold)).tolist()
    assert result["method"] == method and result["figures"] == ("exact" if method == "exact" else "estimate")
    if method == "index":
        recall = result["recall"]
        assert recall["rows"] == len(x) and recall["estimate"] == 1.0 and recall["missed"] == 0
        assert result["kept_pairs_sampled"] == 0 and result["fmr_after_sampled"] == 0.0


@pytest.mark.parametrize("method", ["exact", "index"])
def test_fmr_keeps_fluxsynid_set(shaped, method: str) -> None:
    x, threshold = shaped
    n_pairs = int(np.triu((x @ x.T) > threshold, 1).sum())
    before = 2 * n_pairs / (len(x) * (len(x) - 1))
    search = above_threshold_pairs(x, threshold, method=method, n_cells=24)
    for target in (0.0, before / 4, before / 2):
        result = fs.filter_vectors(
            x, threshold, mode="fmr", target_fmr=target, normalized=True, precomputed=search, recall_rows=len(x)
        )
        assert result["kept"] == np.flatnonzero(flux_reference_keep(x, threshold, target)).tolist()
        assert result["fmr_before"] == pytest.approx(before) and result["fmr_after"] <= target
        if method == "index":  # the sampled estimate saw every row here: it is the true rate
            assert result["fmr_after_sampled"] == pytest.approx(result["fmr_after"])


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_exact_search_precisions_give_identical_pairs(shaped, precision: str) -> None:
    """The GPU path's code on the CPU: rounded products, then float64 re-scoring within the margin."""
    x, threshold = shaped
    pairs, sims, stats = exact_pairs(x, threshold, device="cpu", precision=precision, block=512, col_block=700)
    truth = np.argwhere(np.triu((x.astype(np.float64) @ x.T.astype(np.float64)) > threshold, 1))
    assert pairs.tolist() == truth.tolist()
    assert np.array_equal(sims, rescore(x, truth))
    assert stats["precision"] == precision and stats["margin"] == MARGINS[precision]
    assert stats["rescored"] >= len(pairs)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("cut", [0.347, 0.3515625, 0.5 + 1e-9, 1e-30, -0.25])
def test_block_hits_keep_every_entry_above_the_cut(dtype: str, cut: float) -> None:
    """The thresholding of the product blocks compares bit patterns as integers: it must keep exactly the entries
    above the (unrounded) cut, including those between the cut and its nearest value in the block's precision
    (0.347 lies between two bfloat16 values, and rounds to the upper one)."""
    import torch

    from synid_assets.core.filtering.exact import block_hits

    grid = torch.linspace(-1, 1, 40_001, dtype=torch.float64)
    near = torch.tensor([cut, 0.3515625, 0.5, 1e-30, -0.25], dtype=torch.float64)
    sims = torch.cat([grid, near, near.nextafter(torch.tensor(2.0, dtype=torch.float64))]).to(getattr(torch, dtype))
    sims = sims[torch.randperm(len(sims), generator=torch.Generator().manual_seed(0))]
    padded = torch.cat([sims, sims.new_zeros(-len(sims) % 101)]).view(-1, 101)
    truth = torch.nonzero(padded.double() > cut)
    found = block_hits(padded, cut)
    assert sorted(map(tuple, found.tolist())) == sorted(map(tuple, truth.tolist()))
    assert len(truth) > 0


def test_pairs_within_the_margin_are_decided_in_float64() -> None:
    """Pairs scored at the threshold +- 1e-6: float16 products cannot tell them apart, the float64 re-score does."""
    rng = np.random.default_rng(0)
    x = unit_rows(rng.normal(size=(40, 32)))
    threshold = 0.8
    for i in range(0, 40, 2):  # row i+1 at cosine threshold +- tiny to row i
        offset = unit_rows((x[i + 1] - (x[i + 1] @ x[i]) * x[i])[None])[0]
        cos = threshold + (1e-6 if i % 4 == 0 else -1e-6)
        x[i + 1] = cos * x[i] + np.sqrt(1 - cos**2) * offset
    x = unit_rows(x)
    sims64 = x.astype(np.float64) @ x.T.astype(np.float64)
    truth = np.argwhere(np.triu(sims64 > threshold, 1)).tolist()
    assert 5 <= len(truth) <= 15
    for precision in ("float32", "float16", "bfloat16"):
        assert exact_pairs(x, threshold, device="cpu", precision=precision)[0].tolist() == truth
    assert above_threshold_pairs(x, threshold, method="index", n_cells=4)[0].tolist() == truth
    assert query_pairs(x, np.arange(40), threshold).tolist() == truth
    dense = fs.dense_strict_keep(x, threshold)
    assert fs.filter_vectors(x, threshold, method="exact")["kept"] == np.flatnonzero(dense).tolist()


def test_a_pair_at_the_threshold_counts_in_fluxsynid_not_in_synid() -> None:
    """SynID counts a pair above the threshold (>), FLUXSynID at or above it (>=). SynID's calibrated threshold
    is the smallest impostor score t with share(scores > t) <= fmr, so a pair scored exactly t is a non-match."""
    x = unit_rows(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    t = float(rescore(x, np.array([[0, 1]]))[0])
    assert fs.filter_vectors(x, t, mode="strict", normalized=True)["kept"] == [0, 1, 2]  # not a match in SynID
    assert fs.filter_vectors(x, t, mode="fmr", target_fmr=0.0, normalized=True)["kept"] == [0, 1, 2]
    assert flux_reference_keep(x, np.float32(t), 0.0).tolist() == [False, True, True]  # a match in FLUXSynID
    below = float(np.nextafter(t, -np.inf))  # FLUXSynID's set at t is SynID's at the next value below t
    assert fs.filter_vectors(x, below, mode="fmr", target_fmr=0.0, normalized=True)["kept"] == [1, 2]


def test_auto_chooses_exact_where_it_fits_the_time() -> None:
    assert choose_method(5000, 512, 0.0)[0] == "exact"  # small: always exact
    assert choose_method(10_000_000, 512, 60.0)[0] == "index"  # days of exact products on a CPU
    method, why = choose_method(50_000, 512, 1e9)
    assert method == "exact" and "budget" in why
    assert choose_method(10_000_000, 512, 0.0, device="cuda")[0] == "exact"  # a GPU: always exact
    # over the budget: the index, unless the probes it plans from its calibration sample cost more than exact
    x, _ = face_like_vectors(30_000, 64, "k1", seed=1)
    stats = above_threshold_pairs(x, neighbour_share_threshold(x, 0.05), method="auto", exact_budget_s=0.0)[2]
    assert stats["method"] == "index" and "budget" in stats["auto"] and stats["plan"]["share_of_pairs"] < 0.7
    x, _ = face_like_vectors(30_000, 64, "k0.5", seed=1)
    threshold = neighbour_share_threshold(x, 0.2)
    pairs, _, stats = above_threshold_pairs(x, threshold, method="auto", exact_budget_s=0.0, n_cells=64)
    assert stats["method"] == "exact" and "costs more than scoring every pair" in stats["auto"]
    assert stats["index_plan"]["plan"]["share_of_pairs"] * INDEX_COST_PER_PAIR >= 1
    assert pairs.tolist() == exact_pairs(x, threshold)[0].tolist()


def test_index_reports_its_sampled_recall_and_true_rate() -> None:
    """On a shape the index does miss pairs on, the report says so: recall below 1 and the kept set's rate from
    the exact search of the sampled rows."""
    x, _ = face_like_vectors(6000, 64, "k1", seed=5)
    threshold = neighbour_share_threshold(x, 0.2)
    result = fs.filter_vectors(x, threshold, mode="strict", method="index", n_cells=64, n_probe=1,
                               spaces=("raw",), closure=0, recall_rows=6000)
    truth = query_pairs(x, np.arange(6000), threshold)
    assert result["recall"]["pairs"] == len(truth) and result["recall"]["missed"] > 0
    assert result["recall"]["estimate"] == pytest.approx(result["edges"] / len(truth))
    kept = np.zeros(6000, bool)
    kept[result["kept"]] = True
    left = int((kept[truth[:, 0]] & kept[truth[:, 1]]).sum())
    assert left > 0 and result["kept_pairs_sampled"] == left  # all rows sampled: the true count
    m = int(kept.sum())
    assert result["fmr_after_sampled"] == pytest.approx(2 * left / (m * (m - 1)))
    assert result["fmr_after"] == 0.0  # what the found pairs alone would claim
