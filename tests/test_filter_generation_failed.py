"""A document whose generator recorded a failure (Vec2Face+'s `generation_status: attrop_failed`, or any status other
than 'ok') is rejected by the identity filter as 'generation_failed', on the record and out of the accepted vectors.

A real batch with the embedded defaults (procedural documents, real Parquet tables and LanceDB), then one accepted
identity's document params get the status a generator records when it gives up, and the batch is decided again.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from synid_assets.core.batch.common import generation_failed, write_table
from synid_assets.core.batch.filter import FilterSettings, filter_batch
from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.dataset.manifest import build_manifest
from synid_assets.core.dataset.schemas import DOCUMENTS, FILTER_DECISIONS
from synid_assets.core.dataset.vectorstore import ACCEPTED_TABLE, DOCUMENT_TABLE, EmbeddingStore
from synid_assets.core.quality.report import build_quality_report
from tests.graph_helpers import QUIET, build, materialize_batch

BATCH = "batch-00000"


@pytest.fixture(scope="module")
def redecided(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("generation_failed") / "home"
    defs = build(home, live=1)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    assert materialize_batch(defs, instance, BATCH, size=4).success
    layout = DatasetLayout(home)
    first = pl.read_parquet(layout.table(BATCH, FILTER_DECISIONS.name))
    accepted_before = first.filter(first["accepted"]).sort("decision_order")["identity_id"].to_list()
    assert len(accepted_before) >= 2, "the default threshold accepts most procedural identities"
    failed_identity = accepted_before[0]
    # what Vec2Face+ records for a document still off its targets after AttrOP's last try
    documents = pl.read_parquet(layout.table(BATCH, DOCUMENTS.name))
    rows = documents.to_dicts()
    for row in rows:
        if row["identity_id"] == failed_identity:
            row["params"] = json.dumps(json.loads(row["params"]) | {"generation_status": "attrop_failed"})
    write_table(layout, BATCH, DOCUMENTS, rows)
    decision = first.row(0, named=True)
    settings = FilterSettings(model_id=decision["model_id"], threshold=decision["threshold"],
                              threshold_fmr=decision["threshold_fmr"], threshold_source=decision["threshold_source"])
    store = EmbeddingStore(layout.lancedb_uri)
    summary = filter_batch(layout, BATCH, store, settings)
    build_manifest(layout)
    report = build_quality_report(layout, store, settings.model_id, settings.threshold, settings.threshold_fmr)
    return {"layout": layout, "store": store, "settings": settings, "failed": failed_identity,
            "accepted_before": accepted_before, "summary": summary, "report": report}


def test_generation_status_other_than_ok_is_a_failure() -> None:
    assert generation_failed(json.dumps({"generation_status": "attrop_failed"})) == "attrop_failed"
    assert generation_failed(json.dumps({"generation_status": "no_converge"})) == "no_converge"
    assert generation_failed(json.dumps({"generation_status": "ok"})) is None
    assert generation_failed(json.dumps({"seed": 3})) is None and generation_failed(None) is None


def test_failed_document_is_rejected_with_its_reason(redecided: dict) -> None:
    layout, failed = redecided["layout"], redecided["failed"]
    decisions = pl.read_parquet(layout.table(BATCH, FILTER_DECISIONS.name))
    row = decisions.filter(decisions["identity_id"] == failed).row(0, named=True)
    assert (row["accepted"], row["rejection_reason"], row["rejected_leak"]) == (False, "generation_failed", False)
    assert row["decision_order"] is None and row["nearest_identity_id"] is None
    others = decisions.filter(decisions["identity_id"] != failed)
    assert set(others.filter(others["accepted"])["identity_id"]) == set(redecided["accepted_before"]) - {failed}
    assert set(others["rejection_reason"].drop_nulls()) <= {"similar", "leak"}
    summary = redecided["summary"]
    assert summary["rejected_generation_failed"] == 1 and summary["accepted"] == len(redecided["accepted_before"]) - 1


def test_failed_identity_is_no_accepted_vector_for_later_batches(redecided: dict) -> None:
    store, settings, failed = redecided["store"], redecided["settings"], redecided["failed"]
    assert failed not in set(store.vectors(ACCEPTED_TABLE)["identity_id"])
    documents = store.vectors(DOCUMENT_TABLE, batch_id=BATCH, model_id=settings.model_id)
    own = np.stack([v for i, v in zip(documents["identity_id"], documents["vector"], strict=True) if i == failed])
    # a later batch's filter searches the accepted vectors of earlier batches: the failed face is not among them
    nearest, similarity = store.nearest(ACCEPTED_TABLE, own, settings.model_id, before_batch="batch-00001")[0]
    assert nearest != failed and similarity < 0.999


def test_manifest_and_report_show_why(redecided: dict) -> None:
    layout, failed = redecided["layout"], redecided["failed"]
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        status = dict(con.execute("SELECT identity_id, status FROM identities").fetchall())
        reason = con.execute("SELECT rejection_reason FROM filter_decisions WHERE identity_id = ?", [failed]).fetchone()
    assert status[failed] == "generation_failed" and reason == ("generation_failed",)
    assert sum(s in ("accepted", "incomplete") for s in status.values()) == len(redecided["accepted_before"]) - 1
    report = redecided["report"]
    assert report["status"]["generation_failed"] == 1 and report["generation_failed"] == 1
    assert report["status"].get("accepted", 0) + report["status"].get("incomplete", 0) == len(
        redecided["accepted_before"]) - 1
    assert sum(report["status"].values()) == report["identities"] == len(status)


def test_schema_documents_the_reason() -> None:
    assert "generation_failed" in FILTER_DECISIONS["rejection_reason"].doc
