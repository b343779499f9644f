"""The shared image reader: decompression bombs and the pixel limit, EXIF orientation, and every reader using it."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synid_assets.cli import main
from synid_assets.core.analysis.dlib_analyzer import DlibFaceAnalyzer
from synid_assets.core.analysis.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    ImageReadError,
    load_rgb,
    read_image,
)
from synid_assets.core.generation import render

ATTRS = {"genders": "Male", "origins": "West European", "hair_colors": "Brown", "hair_styles": "Straight"}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def claimed_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose IHDR claims width x height RGB pixels (the data itself is empty)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


@pytest.mark.parametrize(
    "width,height",
    [(20000, 20000), (10000, 10000)],  # over twice Pillow's limit (its error), and between (its warning)
)
def test_decompression_bomb_is_one_line_naming_file_pixels_and_limit(tmp_path: Path, width: int, height: int) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(claimed_png(width, height))
    assert bomb.stat().st_size < 500
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape either
        with pytest.raises(ImageReadError) as caught:
            load_rgb(bomb)
    message = str(caught.value)
    assert "\n" not in message and str(bomb) in message
    assert f"{width * height:,} pixels" in message and f"{DEFAULT_MAX_IMAGE_PIXELS:,} pixels" in message
    assert MAX_PIXELS_ENV in message  # says how to raise the limit


def test_the_limit_can_be_lowered_and_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "doc.png"
    render.render_document(ATTRS, 3, size=64).save(photo)
    assert load_rgb(photo).shape == (64, 64, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "4000")
    with pytest.raises(ImageReadError, match=r"doc\.png: 4,096 pixels is above the limit of 4,000 pixels"):
        load_rgb(photo)
    # 3000 x 3000 is refused at 1M and passes the size check at 10M (then fails as the truncated file it is).
    claimed = tmp_path / "claimed.png"
    claimed.write_bytes(claimed_png(3000, 3000))
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000000")
    with pytest.raises(ImageReadError, match="9,000,000 pixels is above the limit of 1,000,000"):
        load_rgb(claimed)
    monkeypatch.setenv(MAX_PIXELS_ENV, "10_000_000")
    with pytest.raises(ImageReadError, match=r"claimed\.png") as caught:
        load_rgb(claimed)
    assert "truncated" in str(caught.value) and "above the limit" not in str(caught.value)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageReadError, match=f"{MAX_PIXELS_ENV}='lots' is not a positive whole number"):
        load_rgb(photo)


def test_calibrate_reports_a_bomb_as_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "bomb.png").write_bytes(claimed_png(20000, 20000))
    render.render_document(ATTRS, 1).save(tmp_path / "doc.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("path1,path2,label\ndoc.png,bomb.png,different\n")
    code = main(["calibrate", "--embedder", "dlib", "--pairs", str(pairs), "--images", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "bomb.png" in err and "400,000,000 pixels" in err and MAX_PIXELS_ENV in err


def test_kontext_reads_its_document_through_the_shared_reader(tmp_path: Path) -> None:
    """An oversized document fails as ImageReadError before any model is loaded."""
    from synid_assets.core.generation.kontext import KontextLiveGenerator
    from synid_assets.core.generation.types import IdentityRecord, LiveRequest

    bomb = tmp_path / "document.png"
    bomb.write_bytes(claimed_png(20000, 20000))
    identity = IdentityRecord("id-0", "batch", 0, 7, dict(ATTRS), "man")
    request = LiveRequest(identity, "a photo", 0, 11, str(bomb))
    with pytest.raises(ImageReadError, match=r"document\.png: 400,000,000 pixels"):
        KontextLiveGenerator(device="cpu", dtype="float32").generate([request])


@pytest.fixture(scope="module")
def sideways_photo(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A rendered face stored turned 90 degrees anticlockwise with EXIF orientation 6 ("turn clockwise to view"),
    as a phone held upright writes it; and the upright pixels."""
    upright = render.render_document(ATTRS, 1)
    path = tmp_path_factory.mktemp("exif") / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.rotate(90, expand=True).save(path, quality=95, exif=exif)
    return path, np.asarray(upright)


def test_exif_orientation_makes_pixels_upright(sideways_photo: tuple[Path, np.ndarray]) -> None:
    path, upright = sideways_photo
    with Image.open(path) as stored:
        assert stored.getexif()[0x0112] == 6 and stored.size == (upright.shape[0], upright.shape[1])
    pixels = load_rgb(path)
    assert pixels.shape == upright.shape
    assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 3  # JPEG noise only
    assert read_image(path).size == (upright.shape[1], upright.shape[0])


def test_a_sideways_phone_photo_has_a_face_only_when_turned(sideways_photo: tuple[Path, np.ndarray]) -> None:
    path, _ = sideways_photo
    analyzer = DlibFaceAnalyzer()
    analyzer.load()
    with Image.open(path) as stored:
        as_stored = np.asarray(stored.convert("RGB"))
    assert not analyzer.analyze(as_stored).detected
    assert analyzer.analyze(load_rgb(path)).detected


def test_modes_other_than_rgb_come_back_rgb(tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.new("L", (8, 6), 77).save(gray)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 6), (1, 2, 3, 4)).save(rgba)
    assert load_rgb(gray).shape == (6, 8, 3) and int(load_rgb(gray)[0, 0, 0]) == 77
    assert read_image(rgba).mode == "RGB" and tuple(load_rgb(rgba)[0, 0]) == (1, 2, 3)
    with pytest.raises(ImageReadError, match="is a directory"):
        load_rgb(tmp_path)
