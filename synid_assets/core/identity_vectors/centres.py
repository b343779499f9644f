"""Real identity centres for the `pca` sampler: loading them (with one-line errors) and the Gaussian fitted on them.

Vec2Face's author (issues #10 and #11) fits `PCA(512)` on real identity centres (the paper: MS1MV2 centres, so that
no WebFace4M identity leaks) and draws new identities from `multivariate_normal(mean, cov)`. The same Gaussian is
drawn here through its principal axes: mean + (z * sqrt(eigenvalue)) @ axes, for z a standard normal vector.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CentresError(ValueError):
    """A centres file that cannot be used; the message names the file and the problem."""


def load_centres(path: str | Path, dim: int, for_pca: bool = True) -> np.ndarray:
    """An (m, dim) float64 array of identity centres from a .npy file, checked row by row."""
    path = Path(path)
    if not path.is_file():
        raise CentresError(f"centres file {path}: does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CentresError(f"centres file {path}: not a .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise CentresError(f"centres file {path}: holds several arrays; expected one (n, {dim}) array")
    if not np.issubdtype(array.dtype, np.floating):
        raise CentresError(f"centres file {path}: dtype {array.dtype}; expected a float array (float16/32/64)")
    if array.ndim != 2 or array.shape[1] != dim:
        raise CentresError(f"centres file {path}: shape {array.shape}; expected (n, {dim})")
    if array.shape[0] == 0:
        raise CentresError(f"centres file {path}: zero rows")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        first = int(bad.argmax())
        raise CentresError(f"centres file {path}: {int(bad.sum())} row(s) hold NaN or inf (first: row {first})")
    if for_pca and array.shape[0] < dim:
        raise CentresError(
            f"centres file {path}: {array.shape[0]} rows, fewer than the {dim} dimensions: a PCA Gaussian in {dim} "
            f"dimensions needs at least {dim} centres"
        )
    return array.astype(np.float64)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class PcaGaussian:
    """The Gaussian of a set of centres, held as its mean, principal axes and per-axis standard deviations."""

    mean: np.ndarray  # (d,)
    axes: np.ndarray  # (d, d): rows are the principal axes
    scales: np.ndarray  # (d,): the standard deviation along each axis
    source: str = ""
    sha256: str = ""

    @classmethod
    def fit(cls, centres: np.ndarray, source: str = "", sha256: str = "") -> PcaGaussian:
        centres = np.asarray(centres, dtype=np.float64)
        mean = centres.mean(axis=0)
        _, singular, axes = np.linalg.svd(centres - mean, full_matrices=False)
        scales = singular / np.sqrt(max(len(centres) - 1, 1))  # the sample covariance's eigenvalues, square-rooted
        if not np.any(scales > 0):
            raise CentresError(f"centres file {source or '(array)'}: all rows are equal; there is no spread to fit")
        return cls(mean=mean, axes=axes, scales=scales, source=source, sha256=sha256)

    @classmethod
    def from_file(cls, path: str | Path, dim: int) -> PcaGaussian:
        return cls.fit(load_centres(path, dim, for_pca=True), source=str(path), sha256=file_sha256(path))

    def transform(self, normals: np.ndarray) -> np.ndarray:
        """Standard normal draws (n, d) -> draws of this Gaussian (n, d)."""
        k = len(self.scales)
        return self.mean + (np.asarray(normals, dtype=np.float64)[:, :k] * self.scales) @ self.axes
