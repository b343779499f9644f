"""Exports of a real materialized dataset, read back by readers SynID did not write.

One embedded-default batch is materialized once; the dataset_export asset writes every format, and each is read
back: imagefolder by the ImageFolder convention (torchvision's own class when it imports), recordio by a reader
written here from the format's description, lmdb with lmdb + msgpack as Vec2Face reads it, webdataset with the
`webdataset` package, parquet with `datasets.load_dataset`. Every image and label is compared with the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from PIL import Image

from synid_assets.core.dataset.layout import DatasetLayout
from synid_assets.core.export import FORMATS
from tests.graph_helpers import QUIET, build, materialize_batch


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One batch of six identities, two live images each, with the embedded defaults (procedural + dlib)."""
    home = tmp_path_factory.mktemp("export") / "home"
    defs = build(home, live=2)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    assert materialize_batch(defs, instance, "batch-00000", size=6).success
    return home


@pytest.fixture(scope="module")
def asset_exports(home: Path) -> dict[str, Path]:
    """The dataset_export asset, run with every format."""
    from synid_assets.core.config.profiles import default_attributes_dir, load_profile
    from synid_assets.defs.assets import dataset_export
    from synid_assets.defs.resources import resources_from_profile

    resources = resources_from_profile(load_profile("local"), str(home), str(default_attributes_dir()))
    result = dg.materialize(
        [dataset_export],
        resources={"dataset": resources["dataset"]},
        run_config={**QUIET, "ops": {"dataset_export": {"config": {"formats": list(FORMATS)}}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("dataset_export")[0].metadata
    paths = {name: Path(entry["path"]) for name, entry in metadata["exports"].value.items()}
    assert set(paths) == set(FORMATS)
    assert all(path.parent == home / "exports" for path in paths.values())
    return paths


def expected_samples(home: Path) -> list[dict]:
    """The accepted set in identity order, labels 0..C-1, each with its expected 112x112 ArcFace crop."""
    from synid_assets.core.analysis.alignment import align_face_eyes

    with duckdb.connect(str(home / "manifest.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT image_id, identity_id, path FROM dataset_images ORDER BY identity_id, image_id"
        ).fetchall()
        faces = dict(
            con.execute(
                f"SELECT image_id, landmarks FROM read_parquet('{home}/batches/*/*_faces.parquet', union_by_name=true)"
            ).fetchall()
        )
    identities = sorted({identity for _, identity, _ in rows})
    samples = []
    for image_id, identity, path in rows:
        full = np.asarray(Image.open(home / path).convert("RGB"))
        points = np.asarray(json.loads(faces[image_id]))
        # dlib's 5 points: image-right eye corners 0-1, image-left eye corners 2-3: eye centres onto the template.
        aligned = align_face_eyes(full, points[2:4].mean(axis=0), points[0:2].mean(axis=0), 112)
        samples.append({"image_id": image_id, "identity_id": identity, "label": identities.index(identity),
                        "full": full, "aligned": aligned})
    return samples


def assert_same_pixels(jpeg: bytes | Image.Image, expected: np.ndarray, what: str) -> None:
    image = jpeg if isinstance(jpeg, Image.Image) else Image.open(io.BytesIO(jpeg))
    pixels = np.asarray(image.convert("RGB")).astype(np.int16)
    assert pixels.shape == expected.shape, what
    # JPEG at quality 95, 4:4:4: close to the source, not equal to it.
    assert np.abs(pixels - expected).mean() < 2.5, what


def identities_file(directory: Path) -> list[str]:
    lines = (directory / "identities.csv").read_text().splitlines()
    assert lines[0] == "label,identity_id,images"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    return [r[1] for r in rows]


# ---------------------------------------------------------------- readers SynID did not write


def read_imagefolder(root: Path) -> list[tuple[str, bytes, int]]:
    """torchvision's ImageFolder rule: classes are the sorted dir names, indexed 0..; files sorted in each."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    class_to_idx = {name: index for index, name in enumerate(classes)}
    samples = []
    for name in sorted(class_to_idx):
        for dirpath, _, files in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith((".jpg", ".jpeg", ".png")):
                    samples.append((Path(file).stem, (Path(dirpath) / file).read_bytes(), class_to_idx[name]))
    return samples


def read_recordio(root: Path) -> tuple[list[tuple[bytes, int]], list[tuple[int, int]], str]:
    """MXNet's indexed RecordIO, as arcface_torch's MXFaceDataset reads it, from the format's description.

    A record: uint32 magic 0xced7230a, uint32 (cflag << 29 | length), payload, padding to 4 bytes. A payload:
    IRHeader struct 'IfQQ' (flag, label, id, id2), `flag` float32 labels when flag > 0, then the image.
    """
    data = (root / "train.rec").read_bytes()
    offsets = {int(k): int(v) for k, v in (line.split("\t") for line in (root / "train.idx").read_text().splitlines())}
    end_of_previous = 0
    for key in sorted(offsets):  # records follow one another, each padded to 4 bytes
        assert offsets[key] == end_of_previous
        (length_record,) = struct.unpack_from("<I", data, offsets[key] + 4)
        end_of_previous = offsets[key] + 8 + ((length_record & ((1 << 29) - 1)) + 3) // 4 * 4
    assert end_of_previous == len(data)

    def unpack(index: int):
        magic, length_record = struct.unpack_from("<II", data, offsets[index])
        assert magic == 0xCED7230A and length_record >> 29 == 0
        payload = data[offsets[index] + 8 : offsets[index] + 8 + (length_record & ((1 << 29) - 1))]
        flag, label, _, _ = struct.unpack_from("IfQQ", payload)
        body = payload[struct.calcsize("IfQQ") :]
        if flag > 0:
            labels = struct.unpack_from(f"{flag}f", body)
            return labels, body[4 * flag :]
        return label, body

    header, _ = unpack(0)
    images = []
    for index in range(1, int(header[0])):  # arcface_torch: imgidx = range(1, header0[0])
        label, image = unpack(index)
        images.append((image, int(label)))
    ranges = [tuple(int(v) for v in unpack(index)[0]) for index in range(int(header[0]), int(header[1]))]
    return images, ranges, (root / "property").read_text()


def read_lmdb(root: Path) -> tuple[list[tuple[bytes, int]], int]:
    """Vec2Face's LMDB dataset: __len__, __keys__, __classnum__, and msgpack (image bytes, label) per key."""
    import lmdb
    import msgpack

    env = lmdb.open(str(root), subdir=os.path.isdir(root), readonly=True, lock=False, readahead=False, meminit=False)
    try:
        with env.begin(write=False) as txn:
            length = msgpack.loads(txn.get(b"__len__"))
            keys = msgpack.loads(txn.get(b"__keys__"))
            classnum = msgpack.loads(txn.get(b"__classnum__"))
            assert len(keys) == length
            samples = [tuple(msgpack.loads(txn.get(keys[i]))) for i in range(length)]
    finally:
        env.close()
    return [(bytes(image), int(label)) for image, label in samples], classnum


# ---------------------------------------------------------------- tests


def test_every_format_reads_back_with_every_image_and_label(home: Path, asset_exports: dict[str, Path]) -> None:
    expected = expected_samples(home)
    identities = sorted({s["identity_id"] for s in expected})
    assert len(expected) >= 6 and len(identities) >= 2
    labels = [s["label"] for s in expected]
    jpegs: dict[str, list[bytes]] = {}
    for export_format, path in asset_exports.items():
        assert identities_file(path) == identities, export_format
        marker = json.loads((path / "synid_export.json").read_text())
        assert (marker["format"], marker["crop"], marker["images"]) == (export_format, "aligned", len(expected))

    folder = read_imagefolder(asset_exports["imagefolder"])
    assert [(image_id, label) for image_id, _, label in folder] == [(s["image_id"], s["label"]) for s in expected]
    jpegs["imagefolder"] = [data for _, data, _ in folder]

    records, ranges, prop = read_recordio(asset_exports["recordio"])
    assert [label for _, label in records] == labels
    assert prop == f"{len(identities)},112,112"
    for label, (first, end) in enumerate(ranges):  # each identity's record range holds exactly its images
        assert {records[i - 1][1] for i in range(first, end)} == {label}
    assert sum(end - first for first, end in ranges) == len(expected)
    jpegs["recordio"] = [data for data, _ in records]

    lmdb_samples, classnum = read_lmdb(asset_exports["lmdb"] / "train.lmdb")
    assert classnum == len(identities) and [label for _, label in lmdb_samples] == labels
    jpegs["lmdb"] = [data for data, _ in lmdb_samples]

    import webdataset as wds

    shards = sorted(str(p) for p in asset_exports["webdataset"].glob("train-*.tar"))
    raw = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
    decoded = list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("jpg", "cls", "json"))
    assert [label for _, label, _ in decoded] == labels
    assert [meta["image_id"] for _, _, meta in decoded] == [s["image_id"] for s in expected]
    assert [meta["identity_id"] for _, _, meta in decoded] == [s["identity_id"] for s in expected]
    assert all(meta["attributes"] for _, _, meta in decoded)
    for (image, _, _), sample in zip(decoded, expected, strict=True):
        assert_same_pixels(image, sample["aligned"], f"webdataset {sample['image_id']}")
    jpegs["webdataset"] = [sample["jpg"] for sample in raw]

    from datasets import Image as HFImage
    from datasets import load_dataset

    files = sorted(str(p) for p in asset_exports["parquet"].glob("*.parquet"))
    table = load_dataset("parquet", data_files=files, split="train", cache_dir=str(home.parent / "hf_cache"))
    assert table.features["label"].names == identities
    assert table["label"] == labels and table["image_id"] == [s["image_id"] for s in expected]
    assert table[0]["attributes"]["genders"] is not None
    for row, sample in zip(table, expected, strict=True):
        assert_same_pixels(row["image"], sample["aligned"], f"parquet {sample['image_id']}")
    jpegs["parquet"] = [row["image"]["bytes"] for row in table.cast_column("image", HFImage(decode=False))]

    # Every format carries the same JPEG bytes, and they are the expected ArcFace crops.
    for export_format, data in jpegs.items():
        assert data == jpegs["imagefolder"], export_format
    for data, sample in zip(jpegs["imagefolder"], expected, strict=True):
        assert_same_pixels(data, sample["aligned"], sample["image_id"])


def test_exports_table_and_profile_choice(home: Path, asset_exports: dict[str, Path]) -> None:
    from synid_assets.core.config.profiles import default_attributes_dir, load_profile
    from synid_assets.defs.assets import dataset_export
    from synid_assets.defs.resources import resources_from_profile

    with duckdb.connect(str(home / "exports.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT format, path, crop, images, identities, created FROM exports").fetchall()
    recorded = {row[0]: row for row in rows if Path(row[1]).parent == home / "exports"}
    assert set(recorded) == set(FORMATS)
    assert {(crop, images, identities) for _, _, crop, images, identities, _ in recorded.values()} == {
        ("aligned", len(expected_samples(home)), len(identities_file(asset_exports["lmdb"])))
    }
    # Without run config the asset takes the formats and crop of the profile's `export:` section.
    profile = load_profile("local")
    profile["export"] = {"formats": ["lmdb"], "crop": "full"}
    resources = resources_from_profile(profile, str(home), str(default_attributes_dir()))
    assert dg.materialize([dataset_export], resources={"dataset": resources["dataset"]}, run_config=QUIET).success
    marker = json.loads((home / "exports" / "lmdb-full" / "synid_export.json").read_text())
    assert (marker["format"], marker["crop"]) == ("lmdb", "full")


def test_torchvision_image_folder_agrees_when_it_imports(home: Path, asset_exports: dict[str, Path]) -> None:
    try:
        from torchvision.datasets import ImageFolder
    except Exception as exc:  # torchvision's wheel does not import beside this torch build
        pytest.skip(f"torchvision does not import here: {exc}")
    dataset = ImageFolder(str(asset_exports["imagefolder"]))
    assert [(Path(p).stem, label) for p, label in dataset.samples] == [
        (image_id, label) for image_id, _, label in read_imagefolder(asset_exports["imagefolder"])
    ]


def test_full_images_and_the_cli(home: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from synid_assets.cli import main

    monkeypatch.setenv("SYNID_HOME", str(home))
    out = tmp_path / "full"
    assert main(["export", "--format", "imagefolder", "--out", str(out), "--crop", "full"]) == 0
    assert "exported" in capsys.readouterr().out
    expected = expected_samples(home)
    folder = read_imagefolder(out)
    assert [(image_id, label) for image_id, _, label in folder] == [(s["image_id"], s["label"]) for s in expected]
    for (_, data, _), sample in zip(folder, expected, strict=True):
        assert_same_pixels(data, sample["full"], sample["image_id"])
    assert main(["export", "--format", "recordio", "--out", str(tmp_path / "rec"), "--crop", "full"]) == 0
    height, width = expected[0]["full"].shape[:2]
    assert read_recordio(tmp_path / "rec")[2] == f"{len({s['label'] for s in expected})},{height},{width}"

    # Recorded, and `synid query` sees the table.
    capsys.readouterr()
    assert main(["query", "SELECT format, crop, images FROM exports.exports WHERE path = '" + str(out) + "'",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"format": "imagefolder", "crop": "full", "images": len(expected)}]


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_exports_are_deterministic_and_replace_only_their_own_format(home: Path, tmp_path: Path) -> None:
    from synid_assets.core.export import ExportError, export_dataset

    layout = DatasetLayout(home)
    for export_format in FORMATS:
        first = export_dataset(layout, export_format, tmp_path / "a" / export_format)
        second = export_dataset(layout, export_format, tmp_path / "b" / export_format)
        assert tree_digest(first.path) == tree_digest(second.path), export_format
        # Again into the same dir: an earlier export of the same format is replaced, with the same bytes.
        again = export_dataset(layout, export_format, first.path)
        assert tree_digest(again.path) == tree_digest(second.path), export_format
    # No temp dir is left beside the targets.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(FORMATS)

    with pytest.raises(ExportError, match="holds a SynID 'lmdb' export, not 'parquet'"):
        export_dataset(layout, "parquet", tmp_path / "a" / "lmdb")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not mine")
    with pytest.raises(ExportError, match=r"photos: not empty and not a SynID export"):
        export_dataset(layout, "imagefolder", foreign)
    assert (foreign / "holiday.jpg").read_bytes() == b"not mine"
    with pytest.raises(ExportError, match="unknown export format 'tfrecord'"):
        export_dataset(layout, "tfrecord", tmp_path / "tf")


def test_cli_refuses_a_foreign_dir_with_a_message(home: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from synid_assets.cli import main

    monkeypatch.setenv("SYNID_HOME", str(home))
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["export", "--format", "lmdb", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"synid export: {tmp_path}: not empty and not a SynID export") and err.count("\n") == 1
    assert main(["export", "--format", "lmdb", "--home", str(tmp_path / "nothing")]) == 1
    assert "manifest.duckdb does not exist" in capsys.readouterr().err


def test_a_failed_export_leaves_the_earlier_one_in_place(home: Path, tmp_path: Path) -> None:
    import shutil

    from synid_assets.core.analysis.images import ImageReadError
    from synid_assets.core.export import export_dataset

    copy = tmp_path / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("exports", "exports.duckdb", "lancedb", "dagster"))
    layout = DatasetLayout(copy)
    target = tmp_path / "out"
    before = tree_digest(export_dataset(layout, "webdataset", target).path)
    with duckdb.connect(str(copy / "manifest.duckdb"), read_only=True) as con:
        (relative,) = con.execute("SELECT aligned_path FROM dataset_images ORDER BY identity_id DESC, image_id DESC "
                                  "LIMIT 1").fetchone()
    last = copy / relative
    last.write_bytes(b"truncated")  # the last crop of the export no longer decodes
    with pytest.raises(ImageReadError, match=last.name):
        export_dataset(layout, "webdataset", target)
    assert tree_digest(target) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_offers_every_format() -> None:
    from synid_assets.cli.export import FORMAT_NAMES

    assert FORMAT_NAMES == FORMATS
