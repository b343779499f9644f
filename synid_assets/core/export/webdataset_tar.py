"""webdataset: tar shards `train-000000.tar` ..., each sample `<key>.jpg`, `<key>.cls`, `<key>.json`.

The key is the sample's index (zero-padded, no dots: WebDataset splits a member name at its first dot);
`.cls` is the label in decimal ASCII and `.json` the image id, identity id, label, kind and attributes. Members
have fixed owner, mode and mtime, so the same samples give the same tar bytes. Samples are in label order:
shuffle when training (`WebDataset(..., shardshuffle=True).shuffle(N)`).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.export.samples import ExportPlan, encoded_samples, sample_metadata

SAMPLES_PER_SHARD = 10_000


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def shard_name(index: int) -> str:
    return f"train-{index:06d}.tar"


def write_webdataset(layout: DatasetLayout, plan: ExportPlan, directory: Path,
                     samples_per_shard: int = SAMPLES_PER_SHARD) -> dict[str, Any]:
    shards = 0
    samples = enumerate(encoded_samples(layout, plan))
    item = next(samples, None)
    while item is not None:
        with tarfile.open(directory / shard_name(shards), "w", format=tarfile.USTAR_FORMAT) as tar:
            for _ in range(samples_per_shard):
                if item is None:
                    break
                index, (sample, data, _size) = item
                key = f"{index:09d}"
                _add(tar, f"{key}.jpg", data)
                _add(tar, f"{key}.cls", str(sample.label).encode("ascii"))
                metadata = json.dumps(sample_metadata(plan, sample), sort_keys=True, ensure_ascii=False)
                _add(tar, f"{key}.json", metadata.encode("utf-8"))
                item = next(samples, None)
        shards += 1
    return {"shards": shards, "pattern": f"train-{{000000..{shards - 1:06d}}}.tar"}
