"""The dataset-FMR rule as the Dagster filter applies it per batch, and `synid filter` on vectors alone.

The rule itself is checked against the dense reference in test_filter_rules.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synid_assets.cli import main
from synid_assets.core.filtering.incremental import incremental_fmr_filter
from synid_assets.core.filtering.scale import dense_fmr_keep, dense_strict_keep
from synid_assets.core.filtering.similarity import unit_rows


def planted(n: int, seed: int, dim: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = unit_rows(rng.normal(size=(max(1, n // 3), dim)))
    rows = base[rng.integers(0, len(base), size=n)] + 0.25 * rng.normal(size=(n, dim))
    return unit_rows(rows)


def test_batch_fmr_rule_counts_earlier_acceptances() -> None:
    vectors = planted(20, 1)
    ids = [f"id{i:02d}" for i in range(20)]
    alone, edges_alone = incremental_fmr_filter(ids, vectors, 0.7, 0.01, [[] for _ in ids], 0, 0)
    # The same batch after 1000 accepted identities with no lookalikes: the FMR denominator grows, so
    # the rule removes no more than before, and the running pair count includes the batch's kept pairs.
    later, edges_later = incremental_fmr_filter(ids, vectors, 0.7, 0.01, [[] for _ in ids], 1000, 0)
    assert sum(d.accepted for d in later) >= sum(d.accepted for d in alone)
    assert edges_later >= edges_alone
    # A candidate matching an earlier accepted identity above the threshold carries that neighbour.
    prior = [[("old-1", 0.95)]] + [[] for _ in ids[1:]]
    decided, _ = incremental_fmr_filter(ids, vectors, 0.7, 0.0, prior, 1000, 0)
    assert not decided[0].accepted and decided[0].nearest_identity_id in {"old-1", *ids}


def test_synid_filter_command(tmp_path, capsys) -> None:
    vectors = planted(40, 3)
    path = tmp_path / "v.npy"
    np.save(path, vectors)
    out = tmp_path / "kept.json"
    assert main(["filter", "--vectors", str(path), "--threshold", "0.8", "--mode", "strict", "--out", str(out)]) == 0
    kept = json.loads(out.read_text())["kept"]
    assert kept == sorted(kept) == list(np.flatnonzero(dense_strict_keep(vectors, 0.8)))
    assert main(["filter", "--vectors", str(path), "--threshold", "0.8", "--mode", "fmr", "--target-fmr", "0.01",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["kept"] == list(np.flatnonzero(dense_fmr_keep(vectors, 0.8, 0.01)))
    assert main(["filter", "--vectors", str(path), "--threshold", "0.8", "--mode", "fmr", "--out", str(out)]) == 2
    np.save(path, np.zeros((3, 4)))
    assert main(["filter", "--vectors", str(path), "--threshold", "0.8", "--out", str(out)]) == 2
    assert "v.npy" in capsys.readouterr().err


def test_leak_gallery_from_npy_and_lancedb(tmp_path) -> None:
    import lancedb
    import pyarrow as pa

    from synid_assets.core.filtering.leakage import Gallery, GalleryError

    rng = np.random.default_rng(0)
    real = unit_rows(rng.normal(size=(50, 16)))
    queries = np.stack([real[7] + 0.01 * rng.normal(size=16), rng.normal(size=16)])
    np.save(tmp_path / "gallery.npy", real)
    by_npy = Gallery(str(tmp_path / "gallery.npy")).nearest(queries, block=8)  # several blocks
    assert by_npy[0][0] == "row 7" and by_npy[0][1] > 0.99 and by_npy[1][1] < 0.9
    table = pa.table({"id": [f"face-{i}" for i in range(50)],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(real.ravel(), pa.float32()), 16)})
    lancedb.connect(tmp_path / "db").create_table("real_faces", table)
    by_lance = Gallery(f"{tmp_path / 'db'}::real_faces").nearest(queries)
    assert by_lance[0][0] == "face-7" and abs(by_lance[0][1] - by_npy[0][1]) < 1e-4
    with pytest.raises(GalleryError, match="dimensions"):
        Gallery(str(tmp_path / "gallery.npy")).nearest(np.ones((1, 8)))
    with pytest.raises(GalleryError, match="no table"):
        Gallery(f"{tmp_path / 'db'}::missing")
