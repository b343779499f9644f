"""Verification `.bin` files made from a SynID dataset: pairs of its accepted faces (aligned crops).

Real verification sets (LFW, CFP-FP, ...) cannot be downloaded here; a `.bin` of another dataset seed's
identities, which a model never saw in training, shows whether it learned identity at all.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from synid_assets.core.training.config import TrainingError


def accepted_faces(home: str | Path) -> dict[str, list[Path]]:
    """identity_id -> its accepted images' aligned crops (documents first), from the manifest's dataset_images."""
    import duckdb

    from synid_assets.core.dataset.layout import DatasetLayout

    layout = DatasetLayout(home)
    if not layout.manifest_path.exists():
        raise TrainingError(f"{layout.manifest_path}: no manifest (run `synid demo` or materialize dataset_manifest)")
    with duckdb.connect(str(layout.manifest_path), read_only=True) as con:
        rows = con.execute(
            "SELECT identity_id, aligned_path FROM dataset_images WHERE aligned_path IS NOT NULL "
            "ORDER BY identity_id, kind, live_index"
        ).fetchall()
    faces: dict[str, list[Path]] = {}
    for identity_id, aligned in rows:
        faces.setdefault(identity_id, []).append(layout.absolute(aligned))
    return faces


def sample_pairs(faces: dict[str, list[Path]], n_pairs: int, seed: int = 0) -> list[tuple[Path, Path, bool]]:
    """n_pairs pairs, alternating genuine (two images of one identity) and impostor (two identities)."""
    rng = random.Random(seed)
    identities = sorted(faces)
    several = [i for i in identities if len(faces[i]) >= 2]
    if not several or len(identities) < 2:
        raise TrainingError("need two identities and one with two images or more to make verification pairs")
    pairs: list[tuple[Path, Path, bool]] = []
    seen: set[tuple[Path, Path]] = set()
    attempts = 0
    while len(pairs) < n_pairs:
        attempts += 1
        if attempts > 100 * n_pairs:
            raise TrainingError(f"only {len(pairs)} distinct pairs in {len(identities)} identities, {n_pairs} asked")
        if len(pairs) % 2 == 0:
            a, b = rng.sample(faces[rng.choice(several)], 2)
            same = True
        else:
            first, second = rng.sample(identities, 2)
            a, b = rng.choice(faces[first]), rng.choice(faces[second])
            same = False
        if (a, b) in seen or (b, a) in seen:
            continue
        seen.add((a, b))
        pairs.append((a, b, same))
    return pairs


def write_bin_from_dataset(home: str | Path, out: str | Path, n_pairs: int = 600, seed: int = 0) -> dict[str, Any]:
    """Write an InsightFace `.bin` of `n_pairs` pairs of the dataset's aligned crops (JPEG, quality 95)."""
    from PIL import Image

    from synid_assets.core.analysis.images import ImageReadError
    from synid_assets.core.dataset.integrity import all_crop_digests, load_verified_rgb
    from synid_assets.core.dataset.layout import DatasetLayout
    from synid_assets.core.training.verification import write_bin

    faces = accepted_faces(home)
    pairs = sample_pairs(faces, n_pairs, seed)
    layout = DatasetLayout(home)
    digests = all_crop_digests(layout)  # crops whose bytes changed since the embeddings step are refused
    encoded: list[bytes] = []
    for a, b, _ in pairs:
        for path in (a, b):
            buffer = io.BytesIO()
            try:
                pixels = load_verified_rgb(path, digests.get(layout.relative(path)))
            except ImageReadError as exc:  # IntegrityError included: it names the file and both digests
                raise TrainingError(f"{exc}; rerun the batch's embeddings step to make its crops again") from None
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
            encoded.append(buffer.getvalue())
    write_bin(out, encoded, [same for _, _, same in pairs])
    return {"bin": str(out), "pairs": len(pairs), "identities": len(faces),
            "genuine": sum(1 for p in pairs if p[2]), "images": sum(len(v) for v in faces.values())}
