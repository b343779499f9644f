"""lmdb: the Vec2Face/HSFace layout, one LMDB environment `train.lmdb/` (a dir holding data.mdb).

Key b"<i>" (i = 0..N-1, decimal ASCII) -> msgpack of [JPEG bytes, label]; b"__keys__" -> msgpack list of those
keys in order; b"__len__" -> msgpack N; b"__classnum__" -> msgpack C. This is what Vec2Face's `LMDB` dataset reads
(`msgpack.loads(txn.get(keys[index]))` -> image bytes, label). Written without a lock file and synced once, so the
same samples give the same data.mdb bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.export.samples import ExportPlan, encoded_samples

LMDB_DIR = "train.lmdb"
MAP_SIZE = 1 << 40  # address space only: the file grows with the data (no writemap)
COMMIT_EVERY = 1000


def write_lmdb(layout: DatasetLayout, plan: ExportPlan, directory: Path) -> dict[str, Any]:
    import lmdb
    import msgpack

    target = directory / LMDB_DIR
    target.mkdir()
    env = lmdb.open(str(target), map_size=MAP_SIZE, subdir=True, lock=False, sync=False, meminit=True)
    try:
        keys: list[bytes] = []
        txn = env.begin(write=True)
        for index, (sample, data, _) in enumerate(encoded_samples(layout, plan)):
            key = str(index).encode("ascii")
            txn.put(key, msgpack.packb((data, sample.label), use_bin_type=True))
            keys.append(key)
            if len(keys) % COMMIT_EVERY == 0:  # bounded transactions for large datasets
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"__keys__", msgpack.packb(keys, use_bin_type=True))
        txn.put(b"__len__", msgpack.packb(len(keys)))
        txn.put(b"__classnum__", msgpack.packb(len(plan.identities)))
        txn.commit()
        env.sync(True)
    finally:
        env.close()
    return {"lmdb": LMDB_DIR}
