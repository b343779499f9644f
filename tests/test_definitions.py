"""The code location: loads fast without heavy imports, validates, and has every definition wired."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from synid_assets.definitions import build_definitions


def test_definitions_validate(synid_home) -> None:
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "attribute_spec", "identity_attributes", "identity_vectors", "prompts", "document_images",
        "document_embeddings", "identity_filter", "live_images", "live_embeddings", "dataset_manifest",
        "dataset_export", "quality_report", "fr_model", "fr_evaluation",
    }
    assert defs.resolve_job_def("synid_batch") is not None
    assert defs.resolve_schedule_def("daily_batch_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_sensor_def("attribute_spec_sensor") is not None


def test_pools_and_partitions(synid_home) -> None:
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    for key in ("document_images", "document_embeddings", "live_images", "live_embeddings", "fr_model",
                "fr_evaluation"):
        assert pools[key] == {"gpu"}
    assert pools["dataset_manifest"] == {"duckdb"} == pools["quality_report"]
    assert pools["identity_filter"] == {"identity_filter"}
    partitioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).partitions_def}
    assert partitioned == {"identity_attributes", "identity_vectors", "prompts", "document_images",
                           "document_embeddings", "identity_filter", "live_images", "live_embeddings"}


def test_code_location_imports_no_heavy_libraries(synid_home) -> None:
    code = (
        "import sys, synid_assets.definitions as d; "
        "heavy = [m for m in ('dlib', 'torch', 'diffusers', 'transformers', 'lancedb', 'duckdb', 'pyarrow', 'PIL', "
        "'polars', 'insightface', 'cv2', 'onnxruntime', 'scipy', 'skimage', 'lmdb', 'datasets', 'webdataset') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_profile_errors_name_the_file(tmp_path, synid_home) -> None:
    import pytest

    from synid_assets.core.config.profiles import ProfileError, load_profile

    bad = tmp_path / "bad.yaml"
    bad.write_text("face_analyzer:\n  thresholds:\n    - fmr: 0.001\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"bad\.yaml.*thresholds\[0\]"):
        load_profile(str(bad))
    with pytest.raises(ProfileError, match="profile not found"):
        load_profile("no_such_profile")
