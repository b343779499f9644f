"""The quality report: figures on known inputs, and the files it writes for a real materialized dataset."""

from __future__ import annotations

import duckdb
import numpy as np

from synid_assets.core.quality.report import fnmr_at, impostor_scores, u_class
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
        assert {"summary", "scores", "attribute_balance", "detection"} <= tables
        (detected_docs,) = con.execute("SELECT images - failures FROM detection WHERE kind = 'document'").fetchone()
        balance = con.execute("SELECT sum(sampled) FROM attribute_balance WHERE attribute = 'ages'").fetchone()[0]
    assert balance == 6  # every identity has an age
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM images WHERE kind = 'document' AND face_detected").fetchone()[0] \
            == detected_docs
