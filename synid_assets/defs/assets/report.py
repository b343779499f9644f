"""The report asset: the dataset quality report ($SYNID_HOME/reports/quality.html and quality.duckdb)."""

import base64
from pathlib import Path

import dagster as dg

from synid_assets.core.batch.report import write_quality_report
from synid_assets.defs.assets.common import EAGER, GROUP, clear_errors
from synid_assets.defs.resources import DatasetResource, FaceAnalyzerResource, LanceDBResource


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "html"},
    deps=["dataset_manifest"],
    code_version="1",
    pool="duckdb",
    automation_condition=EAGER,
    description="Genuine/impostor scores, EER, FNMR at FMR 1e-3/1e-4, U_class, C_intra, attribute balance, "
    "detection failures: $SYNID_HOME/reports/quality.html and quality.duckdb.",
)
def quality_report(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    face_analyzer: FaceAnalyzerResource,
    lancedb: LanceDBResource,
) -> dg.MaterializeResult:
    threshold = face_analyzer.operating_threshold()
    with clear_errors():
        summary = write_quality_report(
            dataset.layout(), lancedb.store(), face_analyzer.model_id, threshold.value, threshold.fmr, dataset.seed
        )
    plots = {
        f"plot_{name}": dg.MetadataValue.md(
            f"![{name}](data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()})"
        )
        for name, path in summary["plots"].items()
    }
    figures = {
        k: v
        for k, v in summary.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # drop NaN: no data for it
    }
    return dg.MaterializeResult(
        metadata={
            **figures,
            "status": dg.MetadataValue.json(summary["status"]),
            "report": dg.MetadataValue.path(summary["html"]),
            "dagster/uri": summary["html"],
            **plots,
        }
    )
