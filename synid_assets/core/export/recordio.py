"""recordio: InsightFace's `train.rec`, `train.idx` and `property`, as arcface_torch's MXFaceDataset reads them.

Written with `struct` (mxnet does not install on current numpy). The format, from mxnet's recordio.py and
dmlc-core's recordio.h:
- each record in train.rec is uint32 magic 0xced7230a, uint32 lrecord = (cflag << 29) | length, then `length`
  bytes of payload and zero padding to a multiple of 4 (cflag 0: the whole payload in one record);
- a payload is mxnet's IRHeader, struct 'IfQQ' (flag, label, id, id2), then, when flag > 0, `flag` float32 labels,
  then the image bytes (JPEG);
- train.idx has one line `<record index>\t<byte offset in train.rec>` per record.
Record 0 is InsightFace's header: labels (N + 1, N + 1 + C) for N images and C identities, so a reader takes the
images from records 1..N; record N + 1 + c holds identity c's image range (first, one past last record).
Image records carry the label as a scalar (flag 0). `property` is `num_classes,height,width`.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.export.samples import ExportPlan, encoded_samples

RECORD_MAGIC = 0xCED7230A
IR_FORMAT = "<IfQQ"  # mxnet's IRHeader, 'IfQQ' on the little-endian machines it runs on


def pack_payload(flag_labels: list[float] | None, label: float, record_id: int, data: bytes) -> bytes:
    """mxnet.recordio.pack: an IRHeader (scalar label, or `flag_labels` as float32 after the header) and data."""
    if flag_labels is None:
        return struct.pack(IR_FORMAT, 0, float(label), record_id, 0) + data
    header = struct.pack(IR_FORMAT, len(flag_labels), 0.0, record_id, 0)
    return header + struct.pack(f"<{len(flag_labels)}f", *flag_labels) + data


def frame_record(payload: bytes) -> bytes:
    """One dmlc record: magic, (cflag 0 << 29) | length, payload, zero padding to 4 bytes."""
    if len(payload) >= 1 << 29:
        raise ValueError(f"a record of {len(payload)} bytes is above RecordIO's 2^29 - 1 limit")
    return struct.pack("<II", RECORD_MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)


def write_recordio(layout: DatasetLayout, plan: ExportPlan, directory: Path) -> dict[str, Any]:
    images, classes = len(plan.samples), len(plan.identities)
    offsets: list[tuple[int, int]] = []
    height = width = 0
    with open(directory / "train.rec", "wb") as rec:

        def write(index: int, payload: bytes) -> None:
            offsets.append((index, rec.tell()))
            rec.write(frame_record(payload))

        write(0, pack_payload([float(images + 1), float(images + 1 + classes)], 0.0, 0, b""))
        for index, (sample, data, (h, w)) in enumerate(encoded_samples(layout, plan), start=1):
            write(index, pack_payload(None, float(sample.label), index, data))
            height, width = max(height, h), max(width, w)
        for label, (first, end) in enumerate(plan.label_ranges()):
            index = images + 1 + label
            write(index, pack_payload([float(first + 1), float(end + 1)], 0.0, index, b""))
    (directory / "train.idx").write_text("".join(f"{index}\t{offset}\n" for index, offset in offsets))
    # Full images may differ in size; the property gives the largest (arcface_torch reads only num_classes).
    (directory / "property").write_text(f"{classes},{height},{width}")
    return {"records": len(offsets)}
