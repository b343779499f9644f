"""The whole graph with real live-generator and face-analysis backends on tiny random weights.

Arc2Face (conditioned on the InsightFace embedding of each document face) and FLUX.1 Kontext make the live
images; an insightface-layout pack of tiny ONNX models (SCRFD and ArcFace signatures) analyzes every face.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.definitions import build_definitions
from synid_assets.defs.partitions import identity_batches
from synid_assets.random_models.arc2face import build_tiny_arc2face
from synid_assets.random_models.faces import build_pack
from synid_assets.random_models.flux import build_tiny_flux

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from diffusers import FluxKontextPipeline, FluxPipeline

    root = tmp_path_factory.mktemp("tiny_live")
    arc_dir, base_dir = build_tiny_arc2face(root / "arc2face")
    flux = FluxPipeline.from_pretrained(build_tiny_flux(root / "flux"))
    FluxKontextPipeline.from_pipe(flux).save_pretrained(root / "kontext")
    return {"root": root, "arc2face": arc_dir, "base": base_dir, "kontext": root / "kontext",
            "pack": build_pack(root / "insightface")}


def run_batch(profile: Path) -> None:
    defs = build_definitions(str(profile))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    instance.add_dynamic_partitions(identity_batches.name, ["batch-00000"])
    result = defs.resolve_job_def("synid_batch").execute_in_process(
        partition_key="batch-00000", instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert result.success


@pytest.fixture(scope="module")
def live_profile(tiny_models: dict[str, Path]) -> Path:
    root, arc_dir, base_dir, pack = tiny_models["root"], tiny_models["arc2face"], tiny_models["base"], \
        tiny_models["pack"]
    tiny = {"width": 32, "height": 32, "steps": 2, "dtype": "float32", "device": "cpu"}
    profile = {
        "name": "tiny-live",
        "dataset": {"seed": 11, "batch_size": 3, "live_per_identity": 2, "min_good_live": 1},
        "live_generator": {"generators": [
            {"backend": "arc2face", "count": 1, "model_id": str(arc_dir), "base_model_id": str(base_dir), **tiny},
            {"backend": "kontext", "count": 1, "model_id": str(root / "kontext"), **tiny},
        ]},
        "face_analyzer": {
            "backend": "insightface", "model_dir": str(pack), "fmr": 0.001,
            "thresholds": [{"fmr": 0.001, "value": 0.9999, "source": "test: tiny random recognizer"}],
        },
    }
    path = root / "tiny-live.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def test_graph_with_arc2face_kontext_and_insightface(live_profile: Path, synid_home: Path) -> None:
    run_batch(live_profile)
    with duckdb.connect(str(DatasetLayout(synid_home).manifest_path), read_only=True) as con:
        live = con.execute(
            "SELECT generator, live_index, params, model_id FROM images WHERE kind = 'live' ORDER BY image_id"
        ).fetchall()
        accepted = con.execute("SELECT count(*) FROM identities WHERE status IN ('accepted', 'incomplete')").fetchone()
        doc_models = {m for (m,) in con.execute("SELECT DISTINCT model_id FROM images").fetchall()}
    assert accepted[0] >= 1 and len(live) == 2 * accepted[0]
    assert {(g, i) for g, i, _, _ in live} == {("arc2face", 0), ("kontext", 1)}
    for generator, _, params, _ in live:
        params = json.loads(params)
        if generator == "arc2face":
            assert len(params["embedding"]) == 512 and params["prompt"] == "photo of a id person"
        else:
            assert params["instruction"].endswith("same facial features.")
    assert doc_models == {"insightface:tinypack/w_tiny"}


def test_graph_mixing_tiny_kontext_with_embedded_dlib(tiny_models: dict[str, Path], synid_home: Path) -> None:
    """Procedural documents and live images next to tiny Kontext edits, all analyzed by dlib."""
    local = yaml.safe_load((Path(__file__).resolve().parents[1] / "resources" / "local.yaml").read_text())
    profile = {
        **local,
        "dataset": {"seed": 4, "batch_size": 4, "live_per_identity": 1, "min_good_live": 1},
        "live_generator": {"generators": [
            {"backend": "procedural", "count": 1},
            {"backend": "kontext", "count": 1, "model_id": str(tiny_models["kontext"]), "width": 32, "height": 32,
             "steps": 2, "dtype": "float32", "device": "cpu"},
        ]},
    }
    path = tiny_models["root"] / "mixed.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    run_batch(path)
    with duckdb.connect(str(DatasetLayout(synid_home).manifest_path), read_only=True) as con:
        rows = con.execute("SELECT generator, live_status, width FROM images WHERE kind = 'live'").fetchall()
        models = {m for (m,) in con.execute("SELECT DISTINCT model_id FROM images").fetchall()}
    assert {g for g, _, _ in rows} == {"procedural", "kontext"}
    # Tiny random Kontext output is noise: dlib finds no face there, and says so per image.
    assert {(s, w) for g, s, w in rows if g == "kontext"} == {("no_face", 32)}
    assert models == {"dlib_face_recognition_resnet_model_v1"}


def test_embedding_space_generators_make_live_images_after_flux_documents(
    tiny_models: dict[str, Path], synid_home: Path
) -> None:
    """The attributes route with tiny FLUX documents, then Vec2Face and UIFace live images conditioned on each
    document face's embedding (as Arc2Face is), not on a sampled vector."""
    from synid_assets.random_models.uiface import build_tiny_uiface
    from synid_assets.random_models.vec2face import TINY_HEADS, build_tiny_vec2face

    root = tiny_models["root"]
    vec2face = build_tiny_vec2face(root / "vec2face" / "vec2face_generator.pth")
    uiface = build_tiny_uiface(root / "uiface")
    profile = {
        "name": "tiny-flux-then-vectors",
        "dataset": {"seed": 11, "batch_size": 3, "live_per_identity": 2, "min_good_live": 0},
        "document_generator": {"backend": "flux", "model_id": str(root / "flux"), "dtype": "float32",
                               "device": "cpu", "width": 32, "height": 32, "steps": 2, "batch_size": 3},
        "live_generator": {"generators": [
            {"backend": "vec2face", "count": 1, "model_id": str(vec2face), "num_heads": TINY_HEADS,
             "decoder_num_heads": TINY_HEADS, "device": "cpu"},
            {"backend": "uiface", "count": 1, "model_id": str(uiface), "steps": 6, "device": "cpu"},
        ]},
        "face_analyzer": {
            "backend": "insightface", "model_dir": str(tiny_models["pack"]), "fmr": 0.001,
            "thresholds": [{"fmr": 0.001, "value": 0.9999, "source": "test: tiny random recognizer"}],
        },
    }
    path = root / "tiny-flux-then-vectors.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    run_batch(path)
    with duckdb.connect(str(DatasetLayout(synid_home).manifest_path), read_only=True) as con:
        documents = con.execute("SELECT DISTINCT generator FROM images WHERE kind = 'document'").fetchall()
        live = con.execute("SELECT identity_id, generator, live_index, params FROM images WHERE kind = 'live' "
                           "ORDER BY image_id").fetchall()
        accepted = con.execute("SELECT count(*) FROM identities WHERE status IN ('accepted', 'incomplete')").fetchone()
    assert documents == [("flux",)]
    assert accepted[0] >= 1 and len(live) == 2 * accepted[0]
    assert {(g, i) for _, g, i, _ in live} == {("vec2face", 0), ("uiface", 1)}
    for identity, _, _, params in live:
        source = json.loads(params)["vector_source"]
        assert source["identity_id"] == identity and source["source"] != "identity_vectors", source
