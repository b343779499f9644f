"""Shared by the graph tests: a Definitions object on the embedded defaults, one batch materialized, and the
`identity_source: embeddings` route with a tiny generator (profile and one batch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from synid_assets.defs.partitions import identity_batches

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
REPO_ATTRIBUTES = Path(__file__).resolve().parents[1] / "attributes"


def build(home: Path, attributes: Path | None = None, live: int = 2, seed: int = 7):
    from synid_assets.core.config.profiles import default_attributes_dir, load_profile
    from synid_assets.defs.assets import ALL_ASSETS, ALL_CHECKS
    from synid_assets.defs.automation import attribute_spec_job, batch_job
    from synid_assets.defs.resources import resources_from_profile

    profile = load_profile("local")
    profile["dataset"].update(seed=seed, live_per_identity=live, batch_size=6)
    resources = resources_from_profile(profile, str(home), str(attributes or default_attributes_dir()))
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[attribute_spec_job, batch_job],
        resources=resources,
        executor=dg.in_process_executor,
    )


def materialize_batch(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, size: int | None = None):
    instance.add_dynamic_partitions(identity_batches.name, [key])
    config = {**QUIET}
    if size is not None:
        config["ops"] = {"identity_attributes": {"config": {"batch_size": size}}}
    return defs.resolve_job_def("synid_batch").execute_in_process(
        partition_key=key, instance=instance, run_config=config, raise_on_error=False
    )


def embeddings_route_profile(root: Path, backend: str, generator_options: dict[str, Any],
                             live_options: dict[str, Any] | None = None, analyzer: dict[str, Any] | None = None,
                             **dataset: Any) -> Path:
    """A tiny embeddings-route profile: `backend` renders documents and live images (live images also get
    `live_options`); `analyzer` embeds and filters (default: the tiny InsightFace pack) with a threshold that
    accepts everyone. `dataset` overrides the dataset section (seed, batch_size, live_per_identity)."""
    import yaml

    from synid_assets.random_models.faces import build_pack

    analyzer = analyzer or {"backend": "insightface", "model_dir": str(build_pack(root / "insightface"))}
    profile = {
        "name": f"tiny-{backend}",
        "dataset": {"seed": 5, "batch_size": 3, "live_per_identity": 1, "min_good_live": 0,
                    "identity_source": "embeddings", **dataset},
        "identity_vectors": {"method": "gaussian", "max_similarity": 0.3},
        "document_generator": {"backend": backend, **generator_options},
        "live_generator": {"backend": backend, **generator_options, **(live_options or {})},
        "face_analyzer": {**analyzer, "fmr": 0.001,
                          "thresholds": [{"fmr": 0.001, "value": 0.9999, "source": "test: tiny random recognizer"}]},
    }
    path = root / f"tiny-{backend}.yaml"
    path.write_text(yaml.safe_dump(profile), encoding="utf-8")
    return path


def run_embeddings_batch(profile: Path, home: Path) -> dict[str, Any]:
    """Materialize the spec and batch-00000 with `profile`; what the manifest says of them: image rows
    (identity_id, kind, generator, params dict, live_index, width, live_status), identity ids, sampled vectors by
    identity, and the generators' licences by backend."""
    import duckdb
    import numpy as np
    import polars as pl

    from synid_assets.core.dataset.layout import DatasetLayout
    from synid_assets.definitions import build_definitions

    defs = build_definitions(str(profile))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    assert materialize_batch(defs, instance, "batch-00000").success
    layout = DatasetLayout(home)
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        rows = [(i, k, g, json.loads(p), li, w, st) for i, k, g, p, li, w, st in con.execute(
            "SELECT identity_id, kind, generator, params, live_index, width, live_status FROM images "
            "ORDER BY image_id").fetchall()]
        identities = {i for (i,) in con.execute("SELECT identity_id FROM identities").fetchall()}
        licences = dict(con.execute("SELECT backend, license FROM models WHERE role LIKE '%generator'").fetchall())
    table = pl.read_parquet(layout.table("batch-00000", "identity_vectors"))
    vectors = {i: np.array(json.loads(v)) for i, v in zip(table["identity_id"], table["vector"], strict=True)}
    return {"rows": rows, "identities": identities, "vectors": vectors, "licences": licences}
