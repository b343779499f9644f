"""Fault test 3: an image changed on disk after it was made.

A real batch on the embedded defaults; then one document and one live image of accepted identities are
overwritten with other valid PNG bytes and with truncated bytes. Their recorded sha256 catches them before
anything uses them: the embeddings step reports them and embeds neither, the filter refuses to decide on a
corrupted document, an export refuses; the next run of the batch makes them again from their recorded seeds,
with the original bytes, and the manifest and the export equal those of the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from synid_assets.core.dataset.integrity import (
    IntegrityError,
    VerifiedBytes,
    is_corrupted_error,
    load_verified_rgb,
    read_verified,
)
from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.dataset.vectorstore import DOCUMENT_TABLE, LIVE_TABLE, EmbeddingStore
from synid_assets.core.export import export_dataset
from tests.graph_helpers import QUIET, build, materialize_batch

pytestmark = pytest.mark.fault

KEY = "batch-00000"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _image_hashes(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): _sha(p.read_bytes()) for p in sorted((home / "batches").rglob("*.png"))}


def _manifest(home: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(DatasetLayout(home).manifest_path), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def _export(home: Path, out: Path) -> dict[str, str]:
    export_dataset(DatasetLayout(home), "imagefolder", out)
    return {str(p.relative_to(out)): _sha(p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}


def _other_png(path: Path) -> bytes:
    """Different, valid PNG bytes of the same size: the image mirrored."""
    from PIL import Image, ImageOps

    buffer = io.BytesIO()
    with Image.open(path) as image:
        ImageOps.mirror(image.convert("RGB")).save(buffer, format="PNG")
    return buffer.getvalue()


def _truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


def _only(defs: dg.Definitions, instance: dg.DagsterInstance, *names: str) -> dg.ExecuteInProcessResult:
    assets = [a for a in defs.assets if a.key.path[-1] in names]
    return dg.materialize(assets, partition_key=KEY, instance=instance, resources=defs.resources,
                          run_config=QUIET, raise_on_error=False)


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted batch (4 identities, 2 live images each): its manifest, image hashes and export."""
    home = tmp_path_factory.mktemp("corrupted") / "home"
    defs = build(home, live=2)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    assert materialize_batch(defs, instance, KEY, size=4).success
    with duckdb.connect(str(DatasetLayout(home).manifest_path), read_only=True) as con:
        document, live = (
            con.execute(f"SELECT path, sha256 FROM dataset_images WHERE kind = '{kind}' ORDER BY image_id LIMIT 1")
            .fetchone()
            for kind in ("document", "live")
        )
    return {
        "home": home, "defs": defs, "instance": instance,
        "manifest": _manifest(home), "images": _image_hashes(home),
        "export": _export(home, home.parent / "export-before"),
        "document": (home / document[0], document[1]), "live": (home / live[0], live[1]),
    }


def test_corrupted_images_are_reported_not_used_and_regenerated(batch: dict, caplog: pytest.LogCaptureFixture) -> None:
    home, defs, instance = batch["home"], batch["defs"], batch["instance"]
    layout = DatasetLayout(home)
    (doc, doc_sha), (live, live_sha) = batch["document"], batch["live"]
    doc.write_bytes(_other_png(doc))  # another valid image
    live.write_bytes(_truncated(live))  # half a file
    corrupted = {str(doc): doc_sha, str(live): live_sha}

    # An export reads nothing it cannot vouch for: it refuses, naming the file and both digests.
    with pytest.raises(IntegrityError) as refused:
        export_dataset(layout, "imagefolder", home.parent / "export-corrupted")
    message = str(refused.value)
    assert "corrupted" in message and any(f"{p}:" in message and s in message for p, s in corrupted.items())
    assert not (home.parent / "export-corrupted").exists()

    # The embeddings steps report the corrupted images and embed neither.
    result = _only(defs, instance, "document_embeddings", "live_embeddings")
    assert result.success
    for node, (path, sha) in (("document_embeddings", batch["document"]), ("live_embeddings", batch["live"])):
        metadata = _metadata(result, node)
        assert metadata["corrupted_images"] == 1
        [entry] = metadata["corrupted_files"]
        assert entry["path"] == str(path) and entry["expected_sha256"] == sha
        assert entry["actual_sha256"] == _sha(path.read_bytes()) != sha
    logged = [r.user_message for r in instance.all_logs(result.run_id) if r.level >= logging.ERROR]
    assert any(str(doc) in m and doc_sha in m for m in logged) and any(str(live) in m for m in logged)
    store = EmbeddingStore(layout.lancedb_uri)
    doc_id, live_id = doc.stem, live.stem
    assert doc_id not in store.vectors(DOCUMENT_TABLE, batch_id=KEY)["image_id"]
    assert live_id not in store.vectors(LIVE_TABLE, batch_id=KEY)["image_id"]
    def face_row(table: str, image_id: str) -> dict:
        return pl.read_parquet(layout.table(KEY, table)).filter(pl.col("image_id") == image_id).row(0, named=True)

    doc_face = face_row("document_faces", doc_id)
    assert is_corrupted_error(doc_face["error"]) and not doc_face["face_detected"]
    live_face = face_row("live_faces", live_id)
    assert live_face["live_status"] == "corrupted"

    # The filter does not decide on a document it could not embed: 'no face' would be the wrong decision.
    refused_filter = _only(defs, instance, "identity_filter")
    assert not refused_filter.success
    text = next(e for e in refused_filter.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert doc_id in text.description and "corrupted" in text.description

    # The next run makes both again from their recorded seeds: the same bytes, the same dataset.
    with caplog.at_level(logging.WARNING, logger="synid_assets.core.batch.generation"):
        rerun = materialize_batch(defs, instance, KEY)
    assert rerun.success
    assert any(str(doc) in r.getMessage() and "regenerating" in r.getMessage() for r in caplog.records)
    assert any(str(live) in r.getMessage() and "regenerating" in r.getMessage() for r in caplog.records)
    assert _sha(doc.read_bytes()) == doc_sha and _sha(live.read_bytes()) == live_sha
    assert _image_hashes(home) == batch["images"]
    assert _manifest(home) == batch["manifest"]
    assert _export(home, home.parent / "export-after") == batch["export"]


def test_swapped_faults_are_regenerated_on_the_next_run(batch: dict) -> None:
    """Truncated document, other valid live bytes: a plain rerun restores both before anything reads them."""
    home, defs, instance = batch["home"], batch["defs"], batch["instance"]
    (doc, doc_sha), (live, live_sha) = batch["document"], batch["live"]
    doc.write_bytes(_truncated(doc))
    live.write_bytes(_other_png(live))
    rerun = materialize_batch(defs, instance, KEY)
    assert rerun.success
    generated = {**_metadata(rerun, "document_images"), **{f"live_{k}": v for k, v in
                                                             _metadata(rerun, "live_images").items()}}
    assert generated["dagster/row_count"] - generated["reused_from_earlier_run"] == 1
    assert generated["live_dagster/row_count"] - generated["live_reused_from_earlier_run"] == 1
    # ...and the run says so in each step's metadata, naming the file and whether its bytes were restored
    assert generated["regenerated_corrupted"] == 1 and generated["live_regenerated_corrupted"] == 1
    assert [e["restored"] for e in generated["regenerated_corrupted_files"]] == [True]
    assert str(doc).endswith(generated["regenerated_corrupted_files"][0]["path"])
    embedded = _metadata(rerun, "document_embeddings")
    assert embedded["corrupted_images"] == 0
    assert _sha(doc.read_bytes()) == doc_sha and _sha(live.read_bytes()) == live_sha
    assert _manifest(home) == batch["manifest"]
    assert _export(home, home.parent / "export-swapped") == batch["export"]


def test_verification_names_the_file_and_both_digests(tmp_path: Path) -> None:
    from PIL import Image

    from synid_assets.core.analysis.images import ImageReadError, load_rgb

    path = tmp_path / "face.png"
    Image.new("RGB", (8, 6), (10, 20, 30)).save(path)
    good = _sha(path.read_bytes())
    assert read_verified(path, good) == path.read_bytes()
    assert load_verified_rgb(path, good).shape == (6, 8, 3)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(IntegrityError) as caught:
        load_verified_rgb(path, good)
    assert str(path) in str(caught.value) and good in str(caught.value) and _sha(path.read_bytes()) in str(caught.value)
    assert caught.value.as_record() == {"path": str(path), "expected_sha256": good,
                                        "actual_sha256": _sha(path.read_bytes())}
    path.unlink()
    with pytest.raises(IntegrityError, match="the file is missing"):
        read_verified(path, good)
    # Bytes that match but do not decode still fail as an unreadable image, named by its path.
    with pytest.raises(ImageReadError, match=str(path)):
        load_rgb(VerifiedBytes(b"not a png", path))
