"""parquet: `train-XXXXX-of-YYYYY.parquet` files with the image bytes, the label and the identity's attributes.

Columns: image (struct of bytes and path, the `datasets` Image layout), label, identity_id, image_id, kind and
attributes (a struct with one string per attribute class, NULL where the identity has none). The schema carries
the `datasets` features (image: Image, label: ClassLabel named by identity id), so
`datasets.load_dataset("parquet", data_files=...)` (or `load_dataset(DIR)`) decodes images and names labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.export.samples import ExportPlan, encoded_samples

ROWS_PER_FILE = 10_000
ROWS_PER_GROUP = 1_000


def _schema(plan: ExportPlan):
    import pyarrow as pa

    string = {"dtype": "string", "_type": "Value"}
    names = plan.attribute_names
    features: dict[str, Any] = {
        "image": {"_type": "Image"},
        "label": {"names": plan.identities, "_type": "ClassLabel"},
        "identity_id": string,
        "image_id": string,
        "kind": string,
    }
    fields = [
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
        pa.field("label", pa.int64()),
        pa.field("identity_id", pa.string()),
        pa.field("image_id", pa.string()),
        pa.field("kind", pa.string()),
    ]
    if names:  # Parquet has no empty struct
        fields.append(pa.field("attributes", pa.struct([pa.field(n, pa.string()) for n in names])))
        features["attributes"] = {n: string for n in names}
    metadata = {"huggingface": json.dumps({"info": {"features": features}}, sort_keys=True)}
    return pa.schema(fields, metadata=metadata)


def file_name(index: int, count: int) -> str:
    return f"train-{index:05d}-of-{count:05d}.parquet"


def write_parquet_files(layout: DatasetLayout, plan: ExportPlan, directory: Path,
                        rows_per_file: int = ROWS_PER_FILE) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(plan)
    names = plan.attribute_names
    count = max(1, -(-len(plan.samples) // rows_per_file))
    rows: list[dict[str, Any]] = []
    written = 0

    def flush() -> None:
        nonlocal rows, written
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, directory / file_name(written, count), row_group_size=ROWS_PER_GROUP,
                       compression="zstd", write_statistics=False)
        rows, written = [], written + 1

    for sample, data, _ in encoded_samples(layout, plan):
        row: dict[str, Any] = {
            "image": {"bytes": data, "path": f"{sample.image_id}.jpg"},
            "label": sample.label,
            "identity_id": sample.identity_id,
            "image_id": sample.image_id,
            "kind": sample.kind,
        }
        if names:
            values = plan.attributes.get(sample.identity_id, {})
            row["attributes"] = {n: values.get(n) for n in names}
        rows.append(row)
        if len(rows) == rows_per_file:
            flush()
    if rows or written == 0:
        flush()
    return {"files": written}
