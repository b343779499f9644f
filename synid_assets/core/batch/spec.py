"""The spec steps of a batch: snapshot the attribute spec, fix a batch's size, sample its identities."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synid_assets.core.batch.common import MissingStepError, read_table, write_table
from synid_assets.core.dataset.layout import DatasetLayout, atomic_write_bytes
from synid_assets.core.dataset.schemas import ATTRIBUTES, IDENTITIES
from synid_assets.core.dataset.seeds import identity_id, identity_seed, rng_for
from synid_assets.core.generation.types import IdentityRecord


def snapshot_spec(layout: DatasetLayout, spec: Any) -> dict[str, Any]:
    """Copy the validated spec files into SYNID_HOME, so batches are sampled from exactly this version."""
    snapshot = layout.spec_snapshot_dir(spec.fingerprint)
    if not snapshot.exists():
        tmp = snapshot.with_name(snapshot.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path in sorted(Path(spec.directory).iterdir()):
            if path.is_file() and path.suffix in (".txt", ".json"):
                shutil.copy2(path, tmp / path.name)
        tmp.rename(snapshot)
    record = {
        "fingerprint": spec.fingerprint,
        "source_dir": str(Path(spec.directory).resolve()),
        "snapshot_dir": layout.relative(snapshot),
        "classes": [c.name for c in spec.classes],
    }
    atomic_write_bytes(layout.current_spec_file, json.dumps(record, indent=2).encode())
    return record


def load_current_spec(layout: DatasetLayout) -> Any:
    """The spec the attribute spec asset last validated (its snapshot, not the live directory)."""
    from synid_assets.core.spec.loading import load_attribute_spec

    if not layout.current_spec_file.exists():
        raise MissingStepError(
            f"{layout.current_spec_file} does not exist; materialize the attribute_spec asset first"
        )
    record = json.loads(layout.current_spec_file.read_text())
    return load_attribute_spec(layout.absolute(record["snapshot_dir"]))


def resolve_batch_size(layout: DatasetLayout, batch_id: str, requested: int | None, default: int) -> int:
    """A batch keeps the size it was first made with, so re-materializing it from the UI re-makes the same ids."""
    record = layout.batch_dir(batch_id) / "batch.json"
    if requested is None and record.exists():
        return int(json.loads(record.read_text())["batch_size"])
    size = requested or default
    if size < 1:
        raise ValueError(f"batch {batch_id}: batch size must be >= 1, got {size}")
    atomic_write_bytes(record, json.dumps({"batch_id": batch_id, "batch_size": size}).encode())
    return size


def sample_batch(
    layout: DatasetLayout, spec: Any, dataset_seed: int, batch_id: str, batch_size: int
) -> dict[str, Any]:
    """Sample the attributes of every identity of a batch from (dataset seed, batch key, index)."""
    from synid_assets.core.spec.sampling import sample_identity_attributes, subject_word

    identity_rows, attribute_rows = [], []
    for index in range(batch_size):
        seed = identity_seed(dataset_seed, batch_id, index)
        attributes = sample_identity_attributes(spec, rng_for(seed, "attributes"))
        ident = identity_id(batch_id, index)
        identity_rows.append(
            {
                "identity_id": ident,
                "batch_id": batch_id,
                "idx": index,
                "seed": seed,
                "subject": subject_word(spec, attributes),
                "attributes_json": json.dumps(attributes),
                "spec_fingerprint": spec.fingerprint,
                "dataset_seed": dataset_seed,
            }
        )
        attribute_rows += [{"identity_id": ident, "attribute": k, "value": v} for k, v in attributes.items()]
    write_table(layout, batch_id, IDENTITIES, identity_rows)
    write_table(layout, batch_id, ATTRIBUTES, attribute_rows)
    return {
        "identities": len(identity_rows),
        "attribute_rows": len(attribute_rows),
        "distribution": attribute_distribution(attribute_rows),
    }


def attribute_distribution(attribute_rows: Sequence[dict[str, str]]) -> dict[str, dict[str, int]]:
    """{class: {value: count}}, each class's values most frequent first."""
    counts: dict[str, Counter] = {}
    for row in attribute_rows:
        counts.setdefault(row["attribute"], Counter())[row["value"]] += 1
    return {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in sorted(counts.items())}


def read_identities(layout: DatasetLayout, batch_id: str, needed_by: str = "step") -> list[IdentityRecord]:
    """The identities a batch sampled, in index order."""
    columns = ("identity_id", "batch_id", "idx", "seed", "attributes_json", "subject")
    frame = read_table(layout, batch_id, IDENTITIES, needed_by, columns)
    return [
        IdentityRecord(
            identity_id=row["identity_id"],
            batch_id=row["batch_id"],
            index=row["idx"],
            seed=int(row["seed"]),
            attributes=json.loads(row["attributes_json"]),
            subject=row["subject"],
        )
        for row in frame.iter_rows(named=True)
    ]
