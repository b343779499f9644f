"""The quality report: figures on known inputs, and the files it writes for a real materialized dataset."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from synid_assets.core.quality.scores import fnmr_at, impostor_scores, u_class
from tests.graph_helpers import QUIET, build, materialize_batch


def test_u_class_counts_centres_without_a_neighbour_above_threshold() -> None:
    centres = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    # The first two are near-duplicates (cosine ~0.99); the other two are unique.
    assert u_class(centres, threshold=0.9) == 0.5
    assert u_class(centres, threshold=0.995) == 1.0


def test_impostor_scores_all_pairs_or_seeded_sample() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8))
    assert impostor_scores(vectors).size == 50 * 49 // 2
    sample = impostor_scores(vectors, seed=3, max_pairs=100)
    assert sample.size == 100 and np.array_equal(sample, impostor_scores(vectors, seed=3, max_pairs=100))
    assert fnmr_at(np.array([0.1, 0.5, 0.9]), 0.5) == 2 / 3


def test_report_files_and_tables(synid_home) -> None:
    import dagster as dg

    from synid_assets.core.dataset.layout import DatasetLayout

    defs = build(synid_home, live=2)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    result = materialize_batch(defs, instance, "batch-00000", size=6)
    assert result.success
    metadata = result.asset_materializations_for_node("quality_report")[0].metadata
    assert "u_class" in metadata and "c_intra" in metadata
    assert metadata["plot_scores"].value.startswith("![scores](data:image/png;base64,")
    layout = DatasetLayout(synid_home)
    page = (layout.reports_dir / "quality.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "http" not in page
    with duckdb.connect(str(synid_home / "quality.duckdb"), read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {"summary", "scores", "attribute_balance", "detection", "det", "demographics", "gallery",
                "fr_evaluations"} <= tables
        (detected_docs,) = con.execute("SELECT images - failures FROM detection WHERE kind = 'document'").fetchone()
        balance = con.execute("SELECT sum(sampled) FROM attribute_balance WHERE attribute = 'ages'").fetchone()[0]
    assert balance == 6  # every identity has an age
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM images WHERE kind = 'document' AND face_detected").fetchone()[0] \
            == detected_docs


def test_det_curve_on_known_scores() -> None:
    from synid_assets.core.quality.det import det_curve

    genuine = np.array([0.5, 0.7, 0.9, 0.95])
    impostor = np.array([0.1, 0.2, 0.3, 0.6, 0.8])
    rows = {r["threshold"]: (r["fmr"], r["fnmr"]) for r in det_curve(genuine, impostor, also_at=(0.65,))}
    assert rows[0.1] == (0.8, 0.0) and rows[0.95] == (0.0, 1.0)
    assert rows[0.65] == (0.2, 0.25)  # only 0.8 is a false match; only 0.5 a false non-match
    assert rows[0.8] == (0.0, 0.5)
    rng = np.random.default_rng(1)
    big = det_curve(rng.normal(0.8, 0.05, 5000), rng.normal(0.3, 0.1, 200_000), points=50)
    assert len(big) <= 102 and min(r["fmr"] for r in big if r["fmr"] > 0) <= 1e-4  # the low-FMR end is sampled


def test_most_similar_pairs_match_brute_force_across_blocks() -> None:
    from synid_assets.core.filtering.similarity import unit_rows
    from synid_assets.core.quality.galleries import most_similar_pairs

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(37, 6)).astype(np.float32)
    ids = [f"id-{k:02d}" for k in range(37)]
    sims = unit_rows(vectors) @ unit_rows(vectors).T
    rows, cols = np.triu_indices(37, k=1)
    expected = sorted(zip(sims[rows, cols], rows, cols, strict=True), reverse=True)[:5]
    found = most_similar_pairs(ids, vectors, count=5, block=8)
    assert [(a, b) for a, b, _ in found] == [(ids[r], ids[c]) for _, r, c in expected]
    assert [s for *_, s in found] == pytest.approx([s for s, *_ in expected], abs=1e-6)


def test_fr_evaluation_file_errors_name_the_file(tmp_path) -> None:
    from synid_assets.core.quality.fr_evaluations import EvaluationFileError, latest_fr_evaluations

    assert latest_fr_evaluations(tmp_path).note == "no FR evaluation yet"
    with duckdb.connect(str(tmp_path / "evaluation.duckdb")) as con:
        con.execute("CREATE TABLE fr_evaluations (model_dir VARCHAR, set_name VARCHAR, accuracy DOUBLE)")
    with pytest.raises(EvaluationFileError, match=r"evaluation\.duckdb: table fr_evaluations lacks column\(s\) "
                                                  r"checkpoint, std, threshold, pairs, created"):
        latest_fr_evaluations(tmp_path)
    with duckdb.connect(str(tmp_path / "evaluation.duckdb")) as con:
        con.execute("DROP TABLE fr_evaluations")
    with pytest.raises(EvaluationFileError, match=r"evaluation\.duckdb: no table fr_evaluations"):
        latest_fr_evaluations(tmp_path)
