"""Readers of SynID's exports and the training augmentations, in plain torch (no torchvision).

imagefolder: `<label>/<image_id>.jpg` (or .png), labels 0..C-1 as directory names, as torchvision's ImageFolder
reads it. Images come out as uint8 CHW tensors at the training size; `augment` flips, normalises to [-1, 1]
and erases on the whole batch, on the training device.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from synid_assets.core.training.config import TrainingError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_imagefolder(root: str | Path) -> tuple[list[Path], list[int]]:
    """Every image under `root/<label>/` with its label; labels must be the integers 0..C-1."""
    root = Path(root)
    if not root.is_dir():
        raise TrainingError(f"{root}: export dir not found")
    label_dirs = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if not child.name.isdigit():
            raise TrainingError(f"{child}: an imagefolder export's class dirs are labels 0..C-1, not {child.name!r}")
        label_dirs[int(child.name)] = child
    if not label_dirs:
        raise TrainingError(f"{root}: no class dirs (<label>/<image>.jpg): not an imagefolder export")
    missing = sorted(set(range(len(label_dirs))) - set(label_dirs))
    if missing:
        raise TrainingError(f"{root}: labels are not 0..{len(label_dirs) - 1}: missing {missing[:5]}")
    paths, labels = [], []
    for label in range(len(label_dirs)):
        files = sorted(p for p in label_dirs[label].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TrainingError(f"{label_dirs[label]}: class dir without images")
        paths += files
        labels += [label] * len(files)
    return paths, labels


def read_face(path: Path, image_size: int) -> torch.Tensor:
    """One image as a uint8 (3, image_size, image_size) tensor; TrainingError names an unreadable file."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: cannot read the image: {exc}") from None
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class ImageFolderFaces:
    """A map-style dataset of an imagefolder export: item i -> (uint8 CHW tensor, label)."""

    def __init__(self, root: str | Path, image_size: int = 112, cache: bool = False) -> None:
        import torch

        self.root = Path(root)
        self.image_size = int(image_size)
        self.paths, labels = find_imagefolder(self.root)
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.num_classes = int(self.labels.max()) + 1
        self.images: torch.Tensor | None = None
        if cache:  # small datasets: decode once, then batches are a tensor index
            self.images = torch.stack([read_face(p, self.image_size) for p in self.paths])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[index], int(self.labels[index])
        return read_face(self.paths[index], self.image_size), int(self.labels[index])


def open_export(path: str | Path, image_size: int, cache: bool) -> ImageFolderFaces:
    """The training images of an export dir (the imagefolder format, or the `imagefolder/` dir inside one)."""
    path = Path(path)
    if (path / "imagefolder").is_dir() and not (path / "0").is_dir():
        path = path / "imagefolder"
    return ImageFolderFaces(path, image_size, cache)


def normalize(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float in [-1, 1], as ToTensor + Normalize(0.5, 0.5) (and SynID's FRS input)."""
    return batch_uint8.float().sub_(127.5).div_(127.5)


def augment(
    batch_uint8: torch.Tensor,
    generator: torch.Generator,
    flip: bool = True,
    random_erasing: bool = True,
    erase_p: float = 0.5,
    erase_scale: tuple[float, float] = (0.02, 0.33),
    erase_ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Normalised batch with a random horizontal flip (p 0.5) and torchvision's RandomErasing defaults.

    RandomErasing, as torchvision applies it after Normalize: with probability `erase_p`, a rectangle of area
    `erase_scale` of the image and aspect `erase_ratio` (log-uniform) is set to 0; up to 10 tries to fit one,
    else nothing is erased. Random draws come from `generator` (CPU) so a resumed epoch repeats them.
    """
    import torch

    n, _, height, width = batch_uint8.shape
    x = normalize(batch_uint8)
    if flip:
        flipped = torch.rand(n, generator=generator) < 0.5
        if flipped.any():
            rows = flipped.nonzero().squeeze(1).to(x.device)
            x[rows] = x[rows].flip(3)
    if random_erasing:
        tries = 10
        erase = torch.rand(n, generator=generator) < erase_p
        area = height * width * torch.empty(n, tries).uniform_(*erase_scale, generator=generator)
        log_ratio = torch.empty(n, tries).uniform_(math.log(erase_ratio[0]), math.log(erase_ratio[1]),
                                                   generator=generator)
        aspect = log_ratio.exp()
        box_h = (area * aspect).sqrt().round().long()
        box_w = (area / aspect).sqrt().round().long()
        fits = (box_h < height) & (box_w < width)
        first = fits.float().argmax(dim=1)  # the first try that fits, as torchvision loops
        erase &= fits.any(dim=1)
        pick = torch.arange(n)
        box_h, box_w = box_h[pick, first], box_w[pick, first]
        top = (torch.rand(n, generator=generator) * (height - box_h + 1).float()).long()
        left = (torch.rand(n, generator=generator) * (width - box_w + 1).float()).long()
        # Only the box parameters are drawn on the CPU; the masks are built where the batch is.
        top, left, box_h, box_w, erase = (t.to(x.device) for t in (top, left, box_h, box_w, erase))
        ys = torch.arange(height, device=x.device)[None, :]
        xs = torch.arange(width, device=x.device)[None, :]
        in_rows = (ys >= top[:, None]) & (ys < (top + box_h)[:, None])
        in_cols = (xs >= left[:, None]) & (xs < (left + box_w)[:, None])
        mask = (in_rows[:, :, None] & in_cols[:, None, :]) & erase[:, None, None]
        x = x.masked_fill(mask[:, None], 0.0)
    return x
