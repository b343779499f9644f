"""Reading image files for analysis, with one kind of error for every unreadable file."""

from __future__ import annotations

import os

import numpy as np


class ImageReadError(ValueError):
    """An image file could not be opened or decoded."""


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Open an image file as an RGB uint8 HxWx3 array; ImageReadError names the path and the problem."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read image {path}: file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"cannot read image {path}: not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt data surfaces as these
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
