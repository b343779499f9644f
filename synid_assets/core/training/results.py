"""$SYNID_HOME/evaluation.duckdb: the `fr_evaluations` table (schemas.FR_EVALUATIONS); this module is its only writer.

Rows are keyed by (model_dir, checkpoint, set_name): evaluating the same checkpoint on the same set again
replaces its row. Writers take an exclusive lock on `evaluation.duckdb.lock`, so the CLI and the asset never
open the file for writing at the same time; readers (`synid query`, the quality report) attach it read-only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synid_assets.core.dataset.schemas import FR_EVALUATIONS

EVALUATION_DB = "evaluation.duckdb"


def evaluation_db_path(home: str | Path) -> Path:
    return Path(home) / EVALUATION_DB


@contextlib.contextmanager
def _writer_lock(db_path: Path) -> Iterator[None]:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with open(db_path.with_name(db_path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_evaluations(home: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Insert (or replace) evaluation rows; each row has FR_EVALUATIONS' columns (`created` filled if absent)."""
    import duckdb

    path = evaluation_db_path(home)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    names = FR_EVALUATIONS.names
    values = []
    for row in rows:
        unknown = set(row) - set(names)
        if unknown:
            raise ValueError(f"fr_evaluations has no column(s) {sorted(unknown)}")
        values.append(tuple(row.get(name, now if name == "created" else None) for name in names))
    with _writer_lock(path), duckdb.connect(str(path)) as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [FR_EVALUATIONS.name]
        ).fetchone()[0]
        if not exists:
            con.execute(FR_EVALUATIONS.create_sql())
            con.execute(f"COMMENT ON TABLE {FR_EVALUATIONS.name} IS '{_sql_text(FR_EVALUATIONS.doc)}'")
            for column in FR_EVALUATIONS.columns:
                con.execute(f"COMMENT ON COLUMN {FR_EVALUATIONS.name}.{column.name} IS '{_sql_text(column.doc)}'")
        con.execute("BEGIN")
        con.executemany(
            "DELETE FROM fr_evaluations WHERE model_dir = ? AND checkpoint = ? AND set_name = ?",
            [(v[names.index("model_dir")], v[names.index("checkpoint")], v[names.index("set_name")]) for v in values],
        )
        placeholders = ", ".join("?" for _ in names)
        con.executemany(f"INSERT INTO fr_evaluations ({', '.join(names)}) VALUES ({placeholders})", values)
        con.execute("COMMIT")
    return path


def read_evaluations(home: str | Path) -> list[dict[str, Any]]:
    """Every row of fr_evaluations (newest first); [] when no evaluation has run."""
    import duckdb

    path = evaluation_db_path(home)
    if not path.exists():
        return []
    with duckdb.connect(str(path), read_only=True) as con:
        relation = con.sql("SELECT * FROM fr_evaluations ORDER BY created DESC, model_dir, set_name")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def _sql_text(text: str) -> str:
    return text.replace("'", "''")
