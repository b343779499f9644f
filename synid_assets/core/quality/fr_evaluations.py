"""The face-recognition evaluations for the quality report: the latest one per verification set.

The training code writes $SYNID_HOME/evaluation.duckdb (table `fr_evaluations`, one row per model dir,
checkpoint and set); the report opens it read-only and never writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVALUATION_FILE = "evaluation.duckdb"
EVALUATION_TABLE = "fr_evaluations"
REQUIRED_COLUMNS = ("model_dir", "checkpoint", "set_name", "accuracy", "std", "threshold", "pairs", "created")
NO_EVALUATION = "no FR evaluation yet"


class EvaluationFileError(ValueError):
    """evaluation.duckdb lacks the table or a column the report shows; the message names the file."""


@dataclass
class FrEvaluations:
    """The latest row per set (all of the file's columns), or none with a note saying why."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    note: str = NO_EVALUATION


def latest_fr_evaluations(home: Path) -> FrEvaluations:
    """Read $SYNID_HOME/evaluation.duckdb read-only: the newest evaluation of each set, sets in name order."""
    import duckdb

    path = Path(home) / EVALUATION_FILE
    if not path.exists():
        return FrEvaluations()
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:  # a writer holds the file right now: the next report shows it
        return FrEvaluations(note=f"{path} could not be read now ({str(exc).splitlines()[0]})")
    with con:
        found = {name for (name,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [EVALUATION_TABLE]).fetchall()}
        if not found:
            raise EvaluationFileError(f"{path}: no table {EVALUATION_TABLE}")
        missing = [c for c in REQUIRED_COLUMNS if c not in found]
        if missing:
            raise EvaluationFileError(f"{path}: table {EVALUATION_TABLE} lacks column(s) {', '.join(missing)}")
        relation = con.sql(
            f"SELECT * EXCLUDE (newest) FROM (SELECT *, row_number() OVER (PARTITION BY set_name "
            f"ORDER BY created DESC, model_dir, checkpoint) AS newest FROM {EVALUATION_TABLE}) "
            "WHERE newest = 1 ORDER BY set_name"
        )
        columns = list(relation.columns)
        rows = [dict(zip(columns, row, strict=True)) for row in relation.fetchall()]
    if not rows:
        return FrEvaluations(columns=columns)
    return FrEvaluations(rows=rows, columns=columns, note=f"latest evaluation of each set in {path}")
