"""The whole asset graph, materialized for real into a temporary SYNID_HOME, checked through the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.defs.partitions import identity_batches
from tests.graph_helpers import QUIET, REPO_ATTRIBUTES, build, materialize_batch


def run_graph(home: Path, batches: list[str], live: int = 2, seed: int = 7) -> dg.DagsterInstance:
    defs = build(home, live=live, seed=seed)
    instance = dg.DagsterInstance.ephemeral()
    spec_run = defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET)
    assert spec_run.success
    for key in batches:
        assert materialize_batch(defs, instance, key).success
    return instance


def query(home: Path, sql: str):
    with duckdb.connect(str(DatasetLayout(home).manifest_path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("graph")
    run_graph(home, ["batch-00000", "batch-00001"])
    return home


def test_manifest_contract_tables_and_columns(two_batches: Path) -> None:
    required = {
        "identities": {"identity_id": "VARCHAR", "batch_id": "VARCHAR", "seed": "UBIGINT", "prompt": "VARCHAR",
                       "status": "VARCHAR"},
        "identity_attributes": {"identity_id": "VARCHAR", "attribute": "VARCHAR", "value": "VARCHAR"},
        "images": {"image_id": "VARCHAR", "identity_id": "VARCHAR", "kind": "VARCHAR", "path": "VARCHAR",
                   "sha256": "VARCHAR", "width": "INTEGER", "height": "INTEGER", "face_detected": "BOOLEAN",
                   "similarity_to_document": "DOUBLE"},
        "filter_decisions": {"identity_id": "VARCHAR", "nearest_identity_id": "VARCHAR", "similarity": "DOUBLE",
                             "threshold": "DOUBLE", "accepted": "BOOLEAN"},
    }
    for table, columns in required.items():
        found = dict(query(two_batches, f"SELECT column_name, data_type FROM duckdb_columns() "
                                        f"WHERE table_name = '{table}'"))
        for column, dtype in columns.items():
            assert found.get(column) == dtype, (table, column, found.get(column))


def test_manifest_rows_are_consistent_with_files(two_batches: Path) -> None:
    assert query(two_batches, "SELECT count(*), count(DISTINCT batch_id) FROM identities") == [(12, 2)]
    statuses = {s for (s,) in query(two_batches, "SELECT DISTINCT status FROM identities")}
    assert statuses <= {"accepted", "incomplete", "rejected_similar", "no_face"}
    assert "accepted" in statuses
    # Every sampled class of every identity is a row; attribute names are class file stems.
    attributes = {a for (a,) in query(two_batches, "SELECT DISTINCT attribute FROM identity_attributes")}
    assert {"ages", "genders", "origins"} <= attributes
    # Each image file exists and has the recorded hash and size.
    layout = DatasetLayout(two_batches)
    for path, sha, width, height in query(two_batches, "SELECT path, sha256, width, height FROM images"):
        data = layout.absolute(path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        assert (width, height) == (256, 256)
    # Documents: one per identity, no similarity; live: only for accepted identities, two each.
    assert query(two_batches, "SELECT count(*) FROM images WHERE kind = 'document' "
                              "AND similarity_to_document IS NULL") == [(12,)]
    live = query(two_batches, "SELECT count(*) FROM images m JOIN identities i USING (identity_id) "
                              "WHERE kind = 'live' AND i.status IN ('accepted', 'incomplete')")[0][0]
    accepted = query(two_batches, "SELECT count(*) FROM identities WHERE status IN ('accepted', 'incomplete')")[0][0]
    assert live == 2 * accepted == query(two_batches, "SELECT count(*) FROM images WHERE kind = 'live'")[0][0]
    # A live image is 'ok' only with a detected face above the threshold; incomplete means no 'ok' one.
    for status, detected, similarity, threshold in query(
        two_batches, "SELECT m.live_status, m.face_detected, m.similarity_to_document, d.threshold FROM images m "
                     "JOIN filter_decisions d USING (identity_id) WHERE kind = 'live'"):
        assert status == ("no_face" if not detected else "ok" if similarity > threshold else "below_threshold")
    assert query(two_batches, "SELECT count(*) FROM dataset_images WHERE kind = 'live' AND live_status <> 'ok'") \
        == [(0,)]
    assert query(two_batches, "SELECT count(DISTINCT identity_id) FROM dataset_images") == query(
        two_batches, "SELECT count(*) FROM identities WHERE status = 'accepted'")
    assert query(two_batches, "SELECT count(*) FROM identities i WHERE status = 'incomplete' AND EXISTS (SELECT 1 "
                              "FROM images m WHERE m.identity_id = i.identity_id AND live_status = 'ok')") == [(0,)]
    # Detected live faces carry their similarity to the document.
    assert query(two_batches, "SELECT count(*) FROM images WHERE kind = 'live' AND face_detected "
                              "AND similarity_to_document IS NULL") == [(0,)]


def test_filter_decisions_follow_threshold_and_status(two_batches: Path) -> None:
    rows = query(two_batches, "SELECT d.accepted, d.similarity, d.threshold, i.status FROM filter_decisions d "
                              "JOIN identities i USING (identity_id)")
    assert rows
    for accepted, similarity, threshold, status in rows:
        assert accepted == (similarity is None or similarity <= threshold)
        assert status in (("accepted", "incomplete") if accepted else ("rejected_similar",))
    # Identities with no document face are never decided by the filter.
    assert query(two_batches, "SELECT count(*) FROM identities i JOIN filter_decisions USING (identity_id) "
                              "WHERE status = 'no_face'") == [(0,)]


def test_parameters_recorded_for_regeneration(two_batches: Path) -> None:
    from PIL import Image

    from synid_assets.core.dataset.layout import png_bytes
    from synid_assets.core.generation import render

    (params,) = query(two_batches, "SELECT params FROM images WHERE kind = 'live' LIMIT 1")[0]
    params = json.loads(params)
    image = render.render_live(params["attributes"], params["identity_seed"], params["variation"], params["size"])
    (sha,) = query(two_batches, f"SELECT sha256 FROM images WHERE kind = 'live' AND seed = {params['seed']}")[0]
    assert hashlib.sha256(png_bytes(image)).hexdigest() == sha
    assert isinstance(image, Image.Image)


def test_same_seed_same_bytes_different_seed_differs(two_batches: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    run_graph(again, ["batch-00000"])
    first = query(two_batches, "SELECT image_id, sha256 FROM images WHERE batch_id = 'batch-00000' ORDER BY 1")
    assert query(again, "SELECT image_id, sha256 FROM images ORDER BY 1") == first
    assert query(again, "SELECT identity_id, prompt, seed FROM identities ORDER BY 1") == query(
        two_batches, "SELECT identity_id, prompt, seed FROM identities WHERE batch_id = 'batch-00000' ORDER BY 1"
    )
    other = tmp_path / "other"
    run_graph(other, ["batch-00000"], seed=8, live=0)
    assert query(other, "SELECT sha256 FROM images ORDER BY image_id") != [(s,) for _, s in first if True][:6]
    assert query(other, "SELECT count(*) FROM images WHERE kind = 'live'") == [(0,)]


def test_rematerializing_a_batch_is_idempotent_and_resumes(two_batches: Path) -> None:
    layout = DatasetLayout(two_batches)
    before = query(two_batches, "SELECT image_id, sha256, face_detected FROM images ORDER BY 1")
    decisions = query(two_batches, "SELECT * FROM filter_decisions ORDER BY identity_id")
    # A killed run left a half-written temp file and lost one image: the next run must not care.
    victim = layout.image_path("batch-00000", "documents", "batch-00000-0001-doc")
    victim.unlink()
    (victim.parent / ".junk.png.tmp").write_bytes(b"\x89PNG partial")
    defs = build(two_batches)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(identity_batches.name, ["batch-00000"])
    result = dg.materialize(
        [a for a in defs.assets if a.key.path[-1] in {"document_images"}],
        partition_key="batch-00000",
        instance=instance,
        resources=defs.resources,
    )
    assert result.success
    metadata = result.asset_materializations_for_node("document_images")[0].metadata
    assert metadata["reused_from_earlier_run"].value == 5
    assert victim.exists()
    assert materialize_batch(defs, instance, "batch-00000").success
    assert query(two_batches, "SELECT image_id, sha256, face_detected FROM images ORDER BY 1") == before
    assert query(two_batches, "SELECT * FROM filter_decisions ORDER BY identity_id") == decisions


def test_batch_materialization_metadata_and_checks(synid_home: Path) -> None:
    defs = build(synid_home, live=1)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    result = materialize_batch(defs, instance, "batch-00000", size=4)
    assert result.success
    docs = result.asset_materializations_for_node("document_images")[0].metadata
    sheet = docs["contact_sheet"].value
    assert sheet.startswith("![documents](data:image/jpeg;base64,")
    assert 1_000 < len(sheet) < 100_000  # tens of KB, not MB
    attrs = result.asset_materializations_for_node("identity_attributes")[0].metadata
    assert attrs["identities"].value == 4
    assert "| genders |" in attrs["attribute_distribution"].value
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {"attribute_frequencies", "document_detection_rate", "live_detection_rate",
            "live_identity_consistency"} <= set(checks)
    assert checks["attribute_frequencies"].passed
    # The recorded batch size sticks: a re-run without config re-makes the same four identities.
    assert materialize_batch(defs, instance, "batch-00000").success
    assert query(synid_home, "SELECT count(*) FROM identities") == [(4,)]


def test_invalid_spec_fails_spec_asset_and_writes_nothing(synid_home: Path, attributes_copy: Path) -> None:
    (attributes_copy / "ages.txt").write_text("15-19,0.5\n20-29,0.4\n", encoding="utf-8")
    defs = build(synid_home, attributes=attributes_copy)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("attribute_spec_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "ages.txt" in message and "sum" in message.lower()
    assert not DatasetLayout(synid_home).current_spec_file.exists()
    # Downstream batches refuse to run without a validated spec, with a message saying what to do.
    batch = materialize_batch(defs, instance, "batch-00000")
    assert not batch.success
    text = next(e for e in batch.all_events if e.is_step_failure).step_failure_data.user_failure_data.description
    assert "attribute_spec" in text
    assert not DatasetLayout(synid_home).table("batch-00000", "identities").exists()


def test_percent_weights_file_materializes_with_a_note(synid_home: Path, attributes_copy: Path) -> None:
    # FLUXSynID reads class values as weights: a file summing to 100 works there and must work here.
    (attributes_copy / "genders.txt").write_text("Male,45\nFemale,45\nNon-binary,10\n", encoding="utf-8")
    defs = build(synid_home, attributes=attributes_copy)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET)
    assert result.success
    metadata = result.asset_materializations_for_node("attribute_spec")[0].metadata
    assert "genders.txt" in metadata["notes"].value and "percents" in metadata["notes"].value


def test_filter_refuses_a_batch_before_its_predecessors(synid_home: Path) -> None:
    defs = build(synid_home, live=0)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    instance.add_dynamic_partitions(identity_batches.name, ["batch-00000", "batch-00001"])
    upstream = [a for a in defs.assets if a.key.path[-1] in {"identity_attributes", "prompts", "document_images",
                                                            "document_embeddings"}]
    for key in ("batch-00000", "batch-00001"):
        assert dg.materialize(upstream, partition_key=key, instance=instance, resources=defs.resources).success
    # batch-00001 before batch-00000 would let two lookalikes in: refused with a message saying why.
    result = materialize_batch(defs, instance, "batch-00001")
    assert not result.success
    text = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data.description
    assert "batch-00000" in text and "key order" in text
    assert materialize_batch(defs, instance, "batch-00000").success
    assert materialize_batch(defs, instance, "batch-00001").success


def test_batches_from_an_older_spec_become_stale(synid_home: Path, attributes_copy: Path) -> None:
    """Dagster marks a batch stale when the spec's data version differs from the one it was sampled from."""
    defs = build(synid_home, attributes=attributes_copy, live=0)
    # Not `with`: DagsterInstance.__exit__ leaves its defs-state context var set (dagster 1.13).
    instance = dg.DagsterInstance.get()
    try:
        spec_job = defs.resolve_job_def("attribute_spec_job")
        assert spec_job.execute_in_process(instance=instance, run_config=QUIET).success
        instance.add_dynamic_partitions(identity_batches.name, ["batch-00000"])
        assert dg.materialize(
            [a for a in defs.assets if a.key.path[-1] == "identity_attributes"],
            partition_key="batch-00000", instance=instance, resources=defs.resources,
            run_config={"ops": {"identity_attributes": {"config": {"batch_size": 2}}}},
        ).success

        def versions() -> tuple[str, str]:
            batch = instance.get_latest_materialization_event(dg.AssetKey("identity_attributes"))
            spec = instance.get_latest_materialization_event(dg.AssetKey("attribute_spec"))
            return (batch.asset_materialization.tags["dagster/input_data_version/attribute_spec"],
                    spec.asset_materialization.tags["dagster/data_version"])

        sampled_from, current = versions()
        assert sampled_from == current
        with open(attributes_copy / "eyewear.txt", "a", encoding="utf-8") as handle:
            handle.write("\n# edited\n")
        assert spec_job.execute_in_process(instance=instance, run_config=QUIET).success
        sampled_from, current = versions()
        assert sampled_from != current
    finally:
        instance.dispose()


def test_fmr_mode_and_leak_gallery(synid_home: Path, tmp_path: Path) -> None:
    import numpy as np

    from synid_assets.core.dataset.vectorstore import DOCUMENT_TABLE, EmbeddingStore

    defs = build(synid_home, live=0)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    # First pass (strict) just to get the document embeddings of the batch.
    assert materialize_batch(defs, instance, "batch-00000", size=6).success
    store = EmbeddingStore(DatasetLayout(synid_home).lancedb_uri)
    docs = store.vectors(DOCUMENT_TABLE, batch_id="batch-00000")
    leaked = docs["identity_id"][0]
    gallery = tmp_path / "gallery.npy"
    np.save(gallery, np.stack([docs["vector"][0] * 2.0, np.ones_like(docs["vector"][0])]))

    from synid_assets.core.config.profiles import load_profile
    from synid_assets.defs.resources import resources_from_profile

    profile = load_profile("local")
    profile["dataset"].update(seed=7, live_per_identity=0, batch_size=6)
    profile["filter"].update(mode="fmr", target_fmr=1.0, leak_gallery=str(gallery))
    resources = resources_from_profile(profile, str(synid_home), str(REPO_ATTRIBUTES))
    defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, resources=resources,
                          executor=dg.in_process_executor)
    assert materialize_batch(defs, instance, "batch-00000").success
    rows = dict(query(synid_home, "SELECT identity_id, status FROM identities"))
    assert rows[leaked] == "rejected_leak"
    # A target FMR of 1 lets every other detected identity in; the mode is recorded per decision.
    detected = {i for (i,) in query(synid_home, "SELECT identity_id FROM images WHERE kind = 'document' "
                                                "AND face_detected")}
    assert {i for i, s in rows.items() if s == "accepted"} == detected - {leaked}
    assert query(synid_home, "SELECT DISTINCT mode, target_fmr FROM filter_decisions") == [("fmr", 1.0)]
    (match, similarity) = query(synid_home, f"SELECT leak_match, leak_similarity FROM filter_decisions "
                                            f"WHERE identity_id = '{leaked}'")[0]
    assert match == "row 0" and similarity > 0.999
