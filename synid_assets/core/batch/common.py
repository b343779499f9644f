"""What every batch step shares: the missing-input error, and reading and writing a step's Parquet table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout, write_parquet
from synid_assets.core.dataset.schemas import Table


class MissingStepError(RuntimeError):
    """A step's input files are missing: the upstream asset has not been materialized for this batch."""


def read_table(
    layout: DatasetLayout, batch_id: str, table: Table, needed_by: str, columns: Sequence[str] = ()
) -> Any:
    """A batch's table as a polars DataFrame; `columns` are the ones the reader uses, and must be there."""
    import polars as pl

    path = layout.table(batch_id, table.name)
    if not path.exists():
        raise MissingStepError(
            f"{needed_by}: {path} does not exist; materialize the upstream asset for batch {batch_id} first"
        )
    frame = pl.read_parquet(path)
    missing = [name for name in columns if table[name].name not in frame.columns]
    if missing:
        raise MissingStepError(
            f"{needed_by}: {path} has no column(s) {', '.join(missing)}; re-materialize the upstream asset "
            f"for batch {batch_id}"
        )
    return frame


def write_table(layout: DatasetLayout, batch_id: str, table: Table, rows: list[dict[str, Any]]) -> None:
    """Write a batch's table atomically, with exactly the columns and types of its schema."""
    import polars as pl

    write_parquet(pl.DataFrame(rows, schema=table.polars_schema()), layout.table(batch_id, table.name))


def generation_failed(params_json: str | None) -> str | None:
    """The failure a generator recorded in an image's params (`generation_status` other than 'ok'), else None.

    Vec2Face+ records 'attrop_failed' for an image still off its targets after AttrOP's last try; any backend
    may record its own failure status the same way.
    """
    status = json.loads(params_json or "{}").get("generation_status")
    return None if status in (None, "ok") else str(status)
