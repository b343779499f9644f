"""The report asset: the dataset quality report ($SYNID_HOME/reports/quality.html and quality.duckdb)."""

import base64
from pathlib import Path
from typing import Any

import dagster as dg

from synid_assets.core.batch.report import write_quality_report
from synid_assets.defs.assets.common import EAGER, GROUP, clear_errors, synced_home
from synid_assets.defs.resources import DatasetResource, FaceAnalyzerResource, LanceDBResource

DEMOGRAPHIC_COLUMNS = ("identities", "acceptance_rate", "genuine_pairs", "mean_genuine", "impostor_pairs",
                       "impostor_fmr", "note")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    return str(value).replace("|", "/")


def _markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _gallery_markdown(summary: dict[str, Any], kind: str, title: str) -> str:
    sheet = summary["contact_sheets"].get(kind, b"")
    if not sheet:
        return "_no pairs_"
    pairs = [p for p in summary["gallery"] if p["kind"].startswith(kind)]
    listing = _markdown_table(pairs, ("identity_id", "other_identity_id", "similarity", "threshold"))
    return f"![{title}](data:image/jpeg;base64,{base64.b64encode(sheet).decode()})\n\n{listing}"


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb", "html"},
    deps=["dataset_manifest"],
    code_version="2",
    pool="duckdb",
    automation_condition=EAGER,
    description="Genuine/impostor scores, EER, DET curve, FNMR at FMR 1e-3/1e-4, U_class, C_intra, scores and "
    "filter acceptance per demographic group, galleries of the most similar accepted pairs and of rejections "
    "near the threshold, attribute balance, detection failures, and the latest FR evaluation per set "
    "($SYNID_HOME/evaluation.duckdb): $SYNID_HOME/reports/quality.html and quality.duckdb.",
)
def quality_report(
    context: dg.AssetExecutionContext,
    dataset: DatasetResource,
    face_analyzer: FaceAnalyzerResource,
    lancedb: LanceDBResource,
) -> dg.MaterializeResult:
    threshold = face_analyzer.operating_threshold()
    # The spec, and the document faces the galleries show (aligned crops, or the documents when there is none).
    pull = ["spec", "manifest.duckdb", "evaluation.duckdb", "batches/*/aligned_document", "batches/*/documents"]
    with synced_home(dataset, pull, ["reports", "quality.duckdb"]) as layout, clear_errors():
        summary = write_quality_report(
            layout, lancedb.store(), face_analyzer.model_id, threshold.value, threshold.fmr, dataset.seed
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
    demographics = [{"group": f"{r['attribute']}: {r['value']}", **r} for r in summary["demographics"]]
    evaluations = summary["fr_evaluations"]
    return dg.MaterializeResult(
        metadata={
            **figures,
            "status": dg.MetadataValue.json(summary["status"]),
            "report": dg.MetadataValue.path(summary["html"]),
            "dagster/uri": summary["html"],
            **plots,
            "demographics": dg.MetadataValue.md(_markdown_table(demographics, ("group", *DEMOGRAPHIC_COLUMNS))),
            "gallery_accepted": dg.MetadataValue.md(_gallery_markdown(summary, "accepted", "most similar accepted")),
            "gallery_rejected": dg.MetadataValue.md(_gallery_markdown(summary, "rejected", "rejected near threshold")),
            "fr_evaluation": dg.MetadataValue.md(
                _markdown_table(evaluations, ("set_name", "accuracy", "std", "threshold", "pairs", "checkpoint",
                                              "created")) if evaluations else summary["fr_evaluation"]
            ),
        }
    )
