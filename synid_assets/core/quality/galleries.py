"""What a reviewer looks at first: the most similar accepted pairs, and the rejections nearest the threshold.

- `accepted_most_similar`: the pairs of accepted identities whose documents are most alike (exact top pairs
  over all accepted documents, computed block by block): in strict mode they lie at or below the threshold.
- `rejected_near_threshold`: identities the filter rejected as too similar (not leaks), with the accepted
  identity they matched, in increasing order of similarity: the rejections nearest the threshold first.
Each pair shows both aligned document faces side by side with the similarity.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synid_assets.core.filtering.similarity import unit_rows

GALLERY_PAIRS = 8
ACCEPTED_KIND = "accepted_most_similar"
REJECTED_KIND = "rejected_near_threshold"


@dataclass(frozen=True)
class GalleryPair:
    kind: str
    rank: int
    identity_id: str
    other_identity_id: str
    similarity: float
    threshold: float
    image_path: str | None  # aligned document face (or the document image), relative to SYNID_HOME
    other_image_path: str | None

    def row(self) -> dict[str, Any]:
        return asdict(self)


def most_similar_pairs(
    identities: Sequence[str], vectors: np.ndarray, count: int = GALLERY_PAIRS, block: int | None = None
) -> list[tuple[str, str, float]]:
    """The `count` most similar pairs (a, b, cosine) of distinct rows, highest first (ties: by identity).

    Rows are compared `block` at a time against all rows; by default a block holds about 2**24 similarities
    (64 MB), so a dataset of 10^5 identities never needs its whole similarity matrix in memory.
    """
    n = len(identities)
    if n < 2 or count <= 0:
        return []
    block = block or max(1, min(n, 2**24 // n))
    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    best: list[tuple[float, int, int]] = []
    for start in range(0, n, block):
        # Rows start.. against columns start..: each unordered pair once (column > row), no self pairs.
        sims = unit[start : start + block] @ unit[start:].T
        width = sims.shape[1]
        sims[:, : len(sims)][np.tril_indices(len(sims))] = -np.inf
        flat = sims.ravel()
        # Only scores above the count-th best so far can enter: a cheap comparison before the partition.
        candidates = np.flatnonzero(flat >= best[-1][0]) if len(best) == count else np.flatnonzero(flat > -np.inf)
        take = min(count, candidates.size)
        if take == 0:
            continue
        top = candidates[np.argpartition(flat[candidates], candidates.size - take)[candidates.size - take :]]
        best += [(float(flat[k]), start + int(k) // width, start + int(k) % width) for k in top]
        best = sorted(best, key=lambda t: (-t[0], identities[t[1]], identities[t[2]]))[:count]
    return [(identities[a], identities[b], s) for s, a, b in best]


def accepted_gallery(
    pairs: list[tuple[str, str, float]], threshold: float, document_paths: Mapping[str, str]
) -> list[GalleryPair]:
    return [
        GalleryPair(ACCEPTED_KIND, rank, a, b, s, threshold, document_paths.get(a), document_paths.get(b))
        for rank, (a, b, s) in enumerate(pairs)
    ]


def rejected_gallery(
    decisions: Sequence[tuple[str, str | None, float | None, float, bool, bool]],
    document_paths: Mapping[str, str],
    count: int = GALLERY_PAIRS,
) -> list[GalleryPair]:
    """From filter decisions (identity, nearest, similarity, threshold, accepted, rejected_leak): the `count`
    rejections for similarity with the smallest margin above their threshold."""
    rejected = [
        (identity, nearest, float(similarity), float(threshold))
        for identity, nearest, similarity, threshold, accepted, leak in decisions
        if not accepted and not leak and nearest is not None and similarity is not None
    ]
    rejected.sort(key=lambda r: (r[2] - r[3], r[0]))
    return [
        GalleryPair(REJECTED_KIND, rank, identity, nearest, similarity, threshold,
                    document_paths.get(identity), document_paths.get(nearest))
        for rank, (identity, nearest, similarity, threshold) in enumerate(rejected[:count])
    ]


def _thumbnail(home: Path, path: str | None, size: int) -> Any:
    """A square thumbnail, or a grey tile when the image is missing or unreadable (never fails the report)."""
    from PIL import Image

    from synid_assets.core.analysis.images import ImageReadError, read_image

    if path is not None:
        try:
            return read_image(home / path).resize((size, size), Image.Resampling.BILINEAR)
        except ImageReadError:
            pass
    return Image.new("RGB", (size, size), (200, 200, 200))


def _pair_tile(home: Path, pair: GalleryPair, size: int, caption: bool) -> Any:
    from PIL import Image, ImageDraw

    strip = 12 if caption else 0
    tile = Image.new("RGB", (2 * size, size + strip), (255, 255, 255))
    tile.paste(_thumbnail(home, pair.image_path, size), (0, 0))
    tile.paste(_thumbnail(home, pair.other_image_path, size), (size, 0))
    if caption:
        ImageDraw.Draw(tile).text((2, size), f"{pair.similarity:.4f}", fill=(0, 0, 0))
    return tile


def _jpeg(image: Any, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def pair_jpeg(home: Path, pair: GalleryPair, size: int = 96) -> bytes:
    """Both document faces side by side (the HTML report writes the similarity beside it)."""
    return _jpeg(_pair_tile(home, pair, size, caption=False), quality=80)


def contact_sheet(home: Path, pairs: Sequence[GalleryPair], size: int = 48, columns: int = 4) -> bytes:
    """All pairs on one small JPEG (tens of KB), each with its similarity under it; b'' when there are none."""
    from PIL import Image

    if not pairs:
        return b""
    tiles = [_pair_tile(home, pair, size, caption=True) for pair in pairs]
    width, height = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (min(columns, len(tiles)) * (width + 4), rows * (height + 4)), (255, 255, 255))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * (width + 4), (k // columns) * (height + 4)))
    return _jpeg(sheet, quality=70)
