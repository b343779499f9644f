"""The whole graph on a profile of real model backends (LLM prompts, FLUX documents) with tiny random weights.

The tiny models are built from configs and saved with save_pretrained, then loaded through exactly the code
path that loads Qwen2.5 and FLUX.1-dev: only their size differs.
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
from synid_assets.random_models.flux import build_tiny_flux
from synid_assets.random_models.llm import build_tiny_chat_model

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_models")
    llm_dir = build_tiny_chat_model(root / "tiny-qwen")
    flux_dir = build_tiny_flux(root / "tiny-flux")
    local = yaml.safe_load((Path(__file__).resolve().parents[1] / "resources" / "local.yaml").read_text())
    profile = {
        **local,
        "name": "tiny",
        "dataset": {"seed": 5, "batch_size": 3, "live_per_identity": 1},
        "prompt_writer": {"backend": "llm", "model_id": str(llm_dir), "dtype": "float32", "device": "cpu",
                          "max_new_tokens": 12, "max_retries": 1, "batch_size": 3},
        "document_generator": {"backend": "flux", "model_id": str(flux_dir), "dtype": "float32", "device": "cpu",
                               "width": 32, "height": 32, "steps": 2, "batch_size": 2},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def test_whole_graph_on_tiny_real_backends(tiny_profile: Path, synid_home: Path) -> None:
    defs = build_definitions(str(tiny_profile))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    instance.add_dynamic_partitions(identity_batches.name, ["batch-00000"])
    result = defs.resolve_job_def("synid_batch").execute_in_process(
        partition_key="batch-00000", instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert result.success
    with duckdb.connect(str(DatasetLayout(synid_home).manifest_path), read_only=True) as con:
        prompts = con.execute("SELECT prompt, prompt_writer, prompt_params, raw_output FROM identities").fetchall()
        images = con.execute("SELECT generator, width, params FROM images WHERE kind = 'document'").fetchall()
        models = dict(con.execute("SELECT role, model_id FROM models").fetchall())
    assert len(prompts) == 3
    for prompt, writer, params, raw in prompts:
        params = json.loads(params)
        assert writer == "llm" and params["model_id"].endswith("tiny-qwen") and raw is not None
        assert prompt.startswith("Photograph of a")
    assert len(images) == 3
    for generator, width, params in images:
        params = json.loads(params)
        assert (generator, width) == ("flux", 32)
        assert 1.7 <= params["guidance"] <= 2.5 and params["steps"] == 2 and params["prompt"]
    assert models["prompt_writer"].endswith("tiny-qwen")
    assert models["document_generator"].endswith("tiny-flux")
