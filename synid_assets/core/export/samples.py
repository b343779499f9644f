"""What an export holds: the accepted images in a fixed order, their labels, and each one's JPEG bytes.

Labels are 0..C-1 in identity order (identity ids sort as '<batch>-<index>', so batch by batch, index by index);
images follow within an identity in image id order (the document, then the live images). Every format writes the
same samples in this order with the same JPEG bytes, so exports are the same bytes twice.

Crops. `aligned` (the default) gives 112x112 crops on insightface's ArcFace template, what face-recognition
trainers expect:
- a stored aligned crop that is already 112x112 (the InsightFace analyzer's `norm_crop`, the FRS analyzers'
  template crop) is used as it is;
- a square crop of a multiple of 112 (the same template, scaled) is resized to 112x112;
- dlib's 150x150 chips are not on the ArcFace template (dlib's own mean face with 25% padding), so resizing them
  would put the eyes elsewhere than a trainer's test sets have them: the crop is made again from the full image
  with the two eye centres of dlib's 5 landmarks mapped onto the template's eyes, exactly as the FRS analyzer's
  dlib fallback does (alignment.align_face_eyes).
`full` gives the whole generated image at its own size.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from synid_assets.core.dataset.layout import DatasetLayout

CROPS = ("aligned", "full")
CROP_SIZE = 112
JPEG_QUALITY = 95  # fixed encoder settings: the same pixels always give the same bytes


class ExportError(ValueError):
    """An export cannot be made: a missing manifest or image, a refused target dir, a bad option."""


@dataclass(frozen=True)
class Sample:
    """One exported image: where it comes from and its label."""

    image_id: str
    identity_id: str
    label: int
    kind: str  # 'document' or 'live'
    path: str  # the full image, relative to SYNID_HOME
    aligned_path: str | None  # the analyzer's aligned crop, relative to SYNID_HOME
    model_id: str | None  # the face analyzer that made the crop and landmarks
    landmarks: str | None  # JSON: the analyzer's 5 landmark points
    sha256: str | None = None  # the full image's sha256, recorded when it was made
    aligned_sha256: str | None = None  # the aligned crop's, recorded by the embeddings step


@dataclass(frozen=True)
class ExportPlan:
    """Every sample of an export, in order, with the identity of each label and its attributes."""

    samples: list[Sample]
    identities: list[str]  # identities[label] = identity_id
    attributes: dict[str, dict[str, str]]  # identity_id -> {attribute class: value}
    crop: str

    @property
    def attribute_names(self) -> list[str]:
        return sorted({name for values in self.attributes.values() for name in values})

    def label_ranges(self) -> list[tuple[int, int]]:
        """(first, one past last) sample index of each label, in label order."""
        ranges, start = [], 0
        for label in range(len(self.identities)):
            end = start
            while end < len(self.samples) and self.samples[end].label == label:
                end += 1
            ranges.append((start, end))
            start = end
        return ranges


def plan_export(layout: DatasetLayout, crop: str = "aligned", include_incomplete: bool = False) -> ExportPlan:
    """Read the accepted set (`dataset_images`) from the manifest, read-only, and number its identities."""
    import duckdb

    if crop not in CROPS:
        raise ExportError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
    path = layout.manifest_path
    if not path.exists():
        raise ExportError(f"{path} does not exist; materialize dataset_manifest (or run `make demo`) first")
    # The incomplete identities' images, when asked for: their document and good live images, as the view has them.
    extra = (
        "UNION ALL SELECT m.* FROM images m JOIN identities i USING (identity_id) "
        "WHERE i.status = 'incomplete' AND (m.kind = 'document' OR m.live_status = 'ok')"
        if include_incomplete
        else ""
    )
    faces = _faces_sql(layout)
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.execute(
                f"""
                SELECT d.image_id, d.identity_id, d.kind, d.path, d.aligned_path, d.model_id, f.landmarks, d.sha256
                FROM (SELECT * FROM dataset_images {extra}) d
                LEFT JOIN ({faces}) f USING (image_id)
                ORDER BY d.identity_id, d.image_id
                """
            ).fetchall()
            attribute_rows = con.execute(
                "SELECT identity_id, attribute, value FROM identity_attributes ORDER BY identity_id, attribute"
            ).fetchall()
    except duckdb.Error as exc:
        raise ExportError(f"{path}: cannot read the accepted set: {exc}; re-materialize dataset_manifest") from None
    identities = sorted({row[1] for row in rows})
    label_of = {identity: label for label, identity in enumerate(identities)}
    crop_digests = _crop_digests(layout)
    samples = [
        Sample(image_id, identity, label_of[identity], kind, image_path, aligned, model_id, landmarks, sha,
               crop_digests.get(aligned) if aligned else None)
        for image_id, identity, kind, image_path, aligned, model_id, landmarks, sha in rows
    ]
    attributes: dict[str, dict[str, str]] = {identity: {} for identity in identities}
    for identity, attribute, value in attribute_rows:
        if identity in attributes:
            attributes[identity][attribute] = value
    return ExportPlan(samples, identities, attributes, crop)


def _faces_sql(layout: DatasetLayout) -> str:
    """Every batch's face analysis rows (image_id, landmarks); an empty relation when there are none."""
    parts = []
    for table in ("document_faces", "live_faces"):
        if any(layout.batches_dir.glob(f"*/{table}.parquet")):
            files = (layout.batches_dir / "*" / f"{table}.parquet").as_posix().replace("'", "''")
            parts.append(f"SELECT image_id, landmarks FROM read_parquet('{files}', union_by_name = true)")
    return " UNION ALL ".join(parts) or "SELECT NULL::VARCHAR image_id, NULL::VARCHAR landmarks WHERE false"


def _crop_digests(layout: DatasetLayout) -> dict[str, str]:
    from synid_assets.core.dataset.integrity import all_crop_digests

    try:
        return all_crop_digests(layout)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def crop_pixels(layout: DatasetLayout, sample: Sample, crop: str) -> np.ndarray:
    """The exported pixels of one sample: HxWx3 uint8 RGB (112x112 for `aligned`).

    Every file is decoded from bytes checked against its recorded sha256: a corrupted one stops the export
    (IntegrityError, an ImageReadError naming the file and both digests).
    """
    from synid_assets.core.dataset.integrity import load_verified_rgb

    if crop == "full":
        return load_verified_rgb(layout.absolute(sample.path), sample.sha256)
    if sample.aligned_path is None:
        raise ExportError(f"{layout.absolute(sample.path)}: image {sample.image_id} has no aligned face crop")
    aligned_file = layout.absolute(sample.aligned_path)
    aligned = load_verified_rgb(aligned_file, sample.aligned_sha256)
    height, width = aligned.shape[:2]
    if (height, width) == (CROP_SIZE, CROP_SIZE):
        return aligned
    if height == width and height % CROP_SIZE == 0:  # the ArcFace template scaled by an integer
        from PIL import Image

        return np.asarray(Image.fromarray(aligned).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR))
    from synid_assets.core.analysis.dlib_analyzer import DlibFaceAnalyzer

    if sample.model_id == DlibFaceAnalyzer.model_id and sample.landmarks:
        from synid_assets.core.analysis.alignment import align_face_eyes

        points = np.asarray(json.loads(sample.landmarks), dtype=np.float64)
        if points.shape == (5, 2):
            # dlib's 5 points: image-right eye corners (0, 1), image-left eye corners (2, 3), nose base (4).
            image = load_verified_rgb(layout.absolute(sample.path), sample.sha256)
            return align_face_eyes(image, points[2:4].mean(axis=0), points[0:2].mean(axis=0), CROP_SIZE)
    raise ExportError(
        f"{aligned_file}: a {width}x{height} crop by {sample.model_id or 'an unknown analyzer'} without dlib "
        f"landmarks cannot be put on the {CROP_SIZE}x{CROP_SIZE} ArcFace template; export with --crop full"
    )


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    """JPEG encoding with fixed settings (quality 95, 4:4:4, no optimisation passes)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False, progressive=False
    )
    return buffer.getvalue()


def encoded_samples(layout: DatasetLayout, plan: ExportPlan) -> Iterator[tuple[Sample, bytes, tuple[int, int]]]:
    """(sample, JPEG bytes, (height, width)) for every sample, in order, encoded one at a time."""
    for sample in plan.samples:
        pixels = crop_pixels(layout, sample, plan.crop)
        yield sample, jpeg_bytes(pixels), (int(pixels.shape[0]), int(pixels.shape[1]))


def sample_metadata(plan: ExportPlan, sample: Sample) -> dict[str, object]:
    """What each format stores beside an image: ids, label, kind and the identity's attributes."""
    return {
        "image_id": sample.image_id,
        "identity_id": sample.identity_id,
        "label": sample.label,
        "kind": sample.kind,
        "attributes": plan.attributes.get(sample.identity_id, {}),
    }


def identities_csv(plan: ExportPlan) -> bytes:
    """label,identity_id,images: the identity of each label, written beside every export's data."""
    counts = [end - start for start, end in plan.label_ranges()]
    lines = ["label,identity_id,images"]
    lines += [f"{label},{identity},{count}" for label, (identity, count) in enumerate(zip(plan.identities, counts,
                                                                                          strict=True))]
    return ("\n".join(lines) + "\n").encode()
