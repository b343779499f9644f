"""Small previews for the Dagster UI: a contact sheet of tens of KB, and a markdown distribution table."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path


def contact_sheet_jpeg(paths: Sequence[Path], thumb: int = 64, columns: int = 8, limit: int = 32) -> bytes:
    """Thumbnails of the first `limit` images on a grid, as a small JPEG."""
    from PIL import Image

    from synid_assets.core.analysis.images import ImageReadError, read_image

    chosen = list(paths)[:limit]
    if not chosen:
        return b""
    rows = (len(chosen) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * thumb, rows * thumb), (255, 255, 255))
    for i, path in enumerate(chosen):
        try:
            tile = read_image(path).resize((thumb, thumb), Image.Resampling.BILINEAR)
        except ImageReadError:
            continue  # a missing thumbnail must not fail the materialization that made the images
        sheet.paste(tile, ((i % columns) * thumb, (i // columns) * thumb))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def contact_sheet_markdown(paths: Sequence[Path], title: str = "contact sheet") -> str:
    data = contact_sheet_jpeg(paths)
    if not data:
        return "_no images_"
    return f"![{title}](data:image/jpeg;base64,{base64.b64encode(data).decode()})"


def distribution_markdown(distribution: Mapping[str, Mapping[str, int]], top: int = 6) -> str:
    """One line per attribute class: its most frequent values with counts."""
    lines = ["| attribute | values (count) |", "|---|---|"]
    for attribute, counts in distribution.items():
        items = list(counts.items())
        shown = ", ".join(f"{v} ({n})" for v, n in items[:top])
        if len(items) > top:
            shown += f", … {len(items) - top} more"
        lines.append(f"| {attribute} | {shown} |")
    return "\n".join(lines)
