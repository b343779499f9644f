"""Shared by the training tests: a small rendered dataset, its imagefolder and a verification .bin."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
from PIL import Image

from tests.graph_helpers import QUIET, build, materialize_batch


def rendered_dataset(home: Path, identities: int, live: int, seed: int) -> Path:
    """One batch of the embedded-default graph (renderer + dlib), with its manifest, under `home`."""
    defs = build(home, live=live, seed=seed)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("attribute_spec_job").execute_in_process(instance=instance, run_config=QUIET).success
    assert materialize_batch(defs, instance, "batch-00000", size=identities).success
    return home


def write_imagefolder_from_manifest(home: Path, out: Path) -> int:
    """`<label>/<image_id>.jpg` of the accepted set's aligned crops, labels in identity order; returns classes.

    The same layout as `synid export --format imagefolder`, written from the manifest alone so the training
    tests do not depend on the export code.
    """
    from synid_assets.core.training.pairs import accepted_faces

    faces = accepted_faces(home)
    for label, identity_id in enumerate(sorted(faces)):
        folder = out / f"{label:06d}"
        folder.mkdir(parents=True)
        for path in faces[identity_id]:
            buffer = io.BytesIO()
            with Image.open(path) as img:
                img.convert("RGB").save(buffer, format="JPEG", quality=95)
            (folder / f"{path.stem}.jpg").write_bytes(buffer.getvalue())
    return len(faces)
