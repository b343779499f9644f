"""Reading image files, with one kind of error for every unreadable file.

Every place SynID opens an image file goes through `read_image` (a PIL image) or `load_rgb` (an array), so all
readers share the same rules: the pixels come back upright (the EXIF orientation tag applied, as a phone photo
stored sideways needs), an image above the pixel limit is refused before it is decoded, and any failure is one
`ImageReadError` line naming the file and the problem.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

MAX_PIXELS_ENV = "SYNID_MAX_IMAGE_PIXELS"
# Pillow's own default decompression-bomb limit (1024 * 1024 * 1024 // 4 // 3, about 89.5 megapixels).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class ImageReadError(ValueError):
    """An image file could not be opened or decoded."""


def max_image_pixels() -> int:
    """The largest image (width x height) SynID decodes: $SYNID_MAX_IMAGE_PIXELS, else Pillow's default."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        given = os.environ[MAX_PIXELS_ENV]
        raise ImageReadError(f"{MAX_PIXELS_ENV}={given!r} is not a positive whole number of pixels")
    return int(raw)


def _too_large(path: str | os.PathLike[str], pixels: int | None, limit: int) -> ImageReadError:
    size = f"{pixels:,} pixels" if pixels is not None else "more pixels than the limit"
    return ImageReadError(
        f"cannot read image {path}: {size} is above the limit of {limit:,} pixels "
        f"(a possible decompression bomb; to read it, raise the limit with {MAX_PIXELS_ENV}=<pixels>)"
    )


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as an upright RGB PIL image, fully decoded; ImageReadError names the path and problem."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = max_image_pixels()
    # Pillow checks sizes against its module-wide limit while opening (error above twice it, a warning above it)
    # and in some decoders while loading; SynID's limit replaces Pillow's so a user can raise it, and the warning
    # is made an error so that every image over the limit is refused, not only those over twice the limit.
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > limit:
                    raise _too_large(path, img.width * img.height, limit)
                img.load()
                upright = _upright(img, ImageOps)
                return upright if upright.mode == "RGB" else upright.convert("RGB")
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, int(found.group(1)) if found else None, limit) from exc
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read image {path}: file not found") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"cannot read image {path}: is a directory, not a file") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"cannot read image {path}: not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated / corrupt data surfaces as these
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def _upright(img: Image.Image, image_ops) -> Image.Image:
    """A copy turned as the EXIF orientation tag says; as stored when the EXIF block itself is unreadable."""
    try:
        return image_ops.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, EOFError):
        # A malformed EXIF block says nothing reliable about orientation; the pixels themselves decoded fine.
        return img.copy()  # a copy: closing the file releases the opened image's pixels


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Open an image file as an upright RGB uint8 HxWx3 array; ImageReadError names the path and the problem."""
    return np.array(read_image(path), dtype=np.uint8)  # a writable copy
