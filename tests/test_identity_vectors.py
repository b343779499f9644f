"""The identity-vector samplers: the similarity bound, determinism, saturation, centres files, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synid_assets.cli import main
from synid_assets.cli.vectors import slot_seeds
from synid_assets.core.filtering.leakage import Gallery
from synid_assets.core.identity_vectors import (
    CentresError,
    PcaGaussian,
    SamplerSettings,
    VectorSettingsError,
    VectorSpaceFull,
    draw_seed,
    load_centres,
    max_pairwise_similarity,
    sample_vectors,
)
from synid_assets.core.identity_vectors.accepted import NEAREST_KEPT, AcceptedVectors


def exact_max(vectors: np.ndarray) -> float:
    """The largest similarity between two rows, by the dense float64 matrix (small sets only)."""
    rows = vectors.astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    sims = rows @ rows.T
    np.fill_diagonal(sims, -np.inf)
    return float(sims.max())


@pytest.fixture(scope="module")
def centres_file(tmp_path_factory) -> Path:
    """Anisotropic "real" centres in 24-d: most spread along a few axes, and a mean away from the origin."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((400, 24)) * np.linspace(2.0, 1.0, 24) + 0.5
    path = tmp_path_factory.mktemp("centres") / "centres.npy"
    np.save(path, centres.astype(np.float32))
    return path


@pytest.mark.parametrize("method", ["gaussian", "pca", "repulsion"])
def test_every_pair_respects_the_bound(method: str, centres_file: Path) -> None:
    settings = SamplerSettings(method=method, max_similarity=0.5,
                               centres=str(centres_file) if method == "pca" else None)
    placed = sample_vectors(slot_seeds(1, 300), 24, settings, block=64)
    assert placed.vectors.shape == (300, 24) and placed.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(placed.vectors, axis=1), 1.0, atol=1e-6)
    assert exact_max(placed.vectors) <= 0.5
    assert placed.candidates_drawn > 300  # in 24-d at 0.5 rejection happens: the redraws were exercised
    # the recorded nearest similarity is the largest similarity to any row before it
    rows = placed.vectors.astype(np.float64)
    for k in (1, 150, 299):
        assert np.isclose(placed.nearest_similarity[k], (rows[:k] @ rows[k]).max(), atol=1e-5)
        assert placed.nearest_row[k] == int(np.argmax(rows[:k] @ rows[k]))


def test_same_seed_same_vectors_whatever_the_block_size() -> None:
    settings = SamplerSettings(max_similarity=0.45)
    a = sample_vectors(slot_seeds(7, 200), 32, settings, block=2048)
    b = sample_vectors(slot_seeds(7, 200), 32, settings, block=17)
    assert np.array_equal(a.vectors, b.vectors) and np.array_equal(a.attempts, b.attempts)
    c = sample_vectors(slot_seeds(8, 200), 32, settings)
    assert not np.array_equal(a.vectors, c.vectors)
    # each vector is its slot's recorded draw: regenerate slot 5 from its seed alone
    regenerated = np.random.default_rng(a.draw_seeds[5]).standard_normal(32)
    assert a.draw_seeds[5] == draw_seed(slot_seeds(7, 200)[5], int(a.attempts[5]))
    assert np.allclose(a.vectors[5], regenerated / np.linalg.norm(regenerated), atol=1e-6)


def test_incremental_batches_hold_the_bound_against_earlier_ones() -> None:
    settings = SamplerSettings(max_similarity=0.4)
    first = sample_vectors(slot_seeds(1, 120), 32, settings)
    second = sample_vectors(slot_seeds(2, 120), 32, settings, prior=first.vectors)
    joined = np.concatenate([first.vectors, second.vectors])
    assert exact_max(joined) <= 0.4
    # a batch is not changed by what comes after it, and the later one really was constrained
    alone = sample_vectors(slot_seeds(2, 120), 32, settings)
    assert not np.array_equal(alone.vectors, second.vectors)
    assert exact_max(np.concatenate([first.vectors, alone.vectors])) > 0.4
    assert (second.nearest_row[:5] < 120).any()  # nearest rows index the earlier vectors first


@pytest.mark.parametrize("method", ["gaussian", "repulsion"])
def test_a_full_space_stops_with_the_count_placed(method: str) -> None:
    # In 3-d at most 6 vectors have pairwise cosine <= 0 (the signed axes): 50 cannot fit.
    with pytest.raises(VectorSpaceFull) as caught:
        sample_vectors(slot_seeds(0, 50), 3, SamplerSettings(method=method, max_similarity=0.0, max_attempts=300))
    error = caught.value
    assert 2 <= error.placed <= 6 and error.requested == 50
    assert f"placed {error.placed} of 50" in str(error) and "300 attempts" in str(error)


def test_leakage_gallery_is_kept_under_the_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    gallery_rows = rng.standard_normal((40, 8)).astype(np.float32)
    np.save(tmp_path / "gallery.npy", gallery_rows)
    placed = sample_vectors(slot_seeds(3, 30), 8, SamplerSettings(max_similarity=0.6),
                            gallery=Gallery(str(tmp_path / "gallery.npy")))
    gallery_unit = gallery_rows / np.linalg.norm(gallery_rows, axis=1, keepdims=True)
    assert (placed.vectors @ gallery_unit.T).max() <= 0.6
    assert all(m.startswith("row ") for m in placed.gallery_match) and np.all(placed.gallery_similarity <= 0.6)
    free = sample_vectors(slot_seeds(3, 30), 8, SamplerSettings(max_similarity=0.6))
    assert (free.vectors @ gallery_unit.T).max() > 0.6  # without the gallery, some would have leaked


def test_pca_draws_follow_the_centres(centres_file: Path) -> None:
    model = PcaGaussian.from_file(centres_file, 24)
    centres = np.load(centres_file).astype(np.float64)
    draws = model.transform(np.random.default_rng(0).standard_normal((20000, 24)))
    assert np.allclose(draws.mean(axis=0), centres.mean(axis=0), atol=0.1)
    assert np.allclose(np.cov(draws.T), np.cov(centres.T), atol=0.25)
    placed = sample_vectors(slot_seeds(1, 50), 24, SamplerSettings(method="pca", max_similarity=0.99,
                                                                   centres=str(centres_file)))
    centre_direction = centres.mean(axis=0) / np.linalg.norm(centres.mean(axis=0))
    assert (placed.vectors @ centre_direction).mean() > 0.15  # not isotropic: around the centres' mean


def test_repulsion_spreads_vectors_further_than_gaussian() -> None:
    seeds = slot_seeds(4, 64)
    gaussian = sample_vectors(seeds, 8, SamplerSettings(max_similarity=0.99))
    repelled = sample_vectors(seeds, 8, SamplerSettings(method="repulsion", max_similarity=0.99))
    assert max_pairwise_similarity(repelled.vectors)[0] < max_pairwise_similarity(gaussian.vectors)[0] - 0.1


def test_repulsion_vectors_do_not_depend_on_the_block_size() -> None:
    # repulsion moves fixed chunks of consecutive slots together, whatever block the caller checks in
    settings = SamplerSettings(method="repulsion", max_similarity=0.6, repulsion_steps=10)
    a = sample_vectors(slot_seeds(9, 600), 16, settings, block=64)
    b = sample_vectors(slot_seeds(9, 600), 16, settings, block=4096)
    assert np.array_equal(a.vectors, b.vectors) and exact_max(a.vectors) <= 0.6


@pytest.mark.parametrize("dim", [4, 64])
def test_nearest_accepted_row_is_exact_in_float64(dim: int) -> None:
    # bfloat16 scans, float64 re-scoring; in 4-d many rows lie within the bfloat16 margin of the best, beyond the
    # NEAREST_KEPT re-scored ones: the rescan path must find the exact best too
    rng = np.random.default_rng(dim)
    accepted = AcceptedVectors(dim, rng.standard_normal((5000, dim)), block=1024)
    queries = rng.standard_normal((300, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    best, rows = accepted.nearest(queries)
    exact = queries.astype(np.float64) @ accepted.rows.astype(np.float64).T
    # (float64 sums in another order: equal to the last bits)
    assert np.allclose(best, exact.max(axis=1), rtol=0, atol=1e-12) and np.array_equal(rows, exact.argmax(axis=1))
    upto_best, _ = accepted.nearest(queries, upto=NEAREST_KEPT // 2)  # fewer rows than are kept
    assert np.allclose(upto_best, exact[:, : NEAREST_KEPT // 2].max(axis=1), rtol=0, atol=1e-12)


def test_blocked_max_pairwise_is_exact() -> None:
    vectors = np.random.default_rng(2).standard_normal((1000, 6)).astype(np.float32)
    best, i, j = max_pairwise_similarity(vectors, block=128)
    assert i < j and np.isclose(best, exact_max(vectors), atol=1e-12)


def bad_file(tmp_path: Path, name: str, array) -> Path:
    path = tmp_path / name
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((20, 5), np.float32), "shape (20, 5); expected (n, 8)"),
        (np.zeros((20, 8), np.int64), "dtype int64; expected a float array"),
        (np.zeros((0, 8), np.float32), "zero rows"),
        (np.where(np.eye(20, 8) > 0, np.nan, 1.0), "8 row(s) hold NaN or inf (first: row 0)"),
        (np.random.default_rng(0).standard_normal((5, 8)), "5 rows, fewer than the 8 dimensions"),
    ],
)
def test_bad_centres_files_are_named_with_the_problem(tmp_path: Path, array, message: str) -> None:
    path = bad_file(tmp_path, "centres.npy", array)
    with pytest.raises(CentresError) as caught:
        load_centres(path, 8)
    assert str(caught.value).startswith(f"centres file {path}: ") and message in str(caught.value)


def test_bad_settings_are_named() -> None:
    with pytest.raises(VectorSettingsError, match="needs centres"):
        SamplerSettings(method="pca")
    with pytest.raises(VectorSettingsError, match="not one of"):
        SamplerSettings(method="uniform")
    with pytest.raises(VectorSettingsError, match="unknown option"):
        SamplerSettings.from_mapping({"method": "gaussian", "threshold": 0.3})


def test_cli_writes_unit_rows_atomically(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ids.npy"
    assert main(["vectors", "sample", "--n", "500", "--dim", "128", "--method", "gaussian", "--max-similarity",
                 "0.35", "--seed", "9", "--out", str(out)]) == 0
    vectors = np.load(out)
    assert vectors.shape == (500, 128) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6) and exact_max(vectors) <= 0.35
    assert "500 unit vectors in 128 dimensions" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["ids.npy"]  # no temp file left behind
    again = tmp_path / "again.npy"
    assert main(["vectors", "sample", "--n", "500", "--dim", "128", "--max-similarity", "0.35", "--seed", "9",
                 "--out", str(again)]) == 0
    assert np.load(again).tobytes() == vectors.tobytes()


def test_cli_full_space_and_bad_centres(tmp_path: Path, capsys) -> None:
    out = tmp_path / "full.npy"
    assert main(["vectors", "sample", "--n", "40", "--dim", "3", "--max-similarity", "0.0", "--seed", "1",
                 "--max-attempts", "200", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "placed" in err and "of 40" in err and "nothing written" in err and not out.exists()
    centres = bad_file(tmp_path, "few.npy", np.ones((3, 8), np.float32))
    assert main(["vectors", "sample", "--n", "4", "--dim", "8", "--method", "pca", "--centres", str(centres),
                 "--seed", "1", "--out", str(out)]) == 2
    assert f"centres file {centres}: 3 rows, fewer than the 8 dimensions" in capsys.readouterr().err
