"""Reading a spec directory in FLUXSynID's layout into an AttributeSpec, and fingerprinting it.

The files are read exactly as FLUXSynID publishes them (CRLF, missing final newline, UTF-8 BOM), and every
problem is reported at once, with its file and line, so that a user fixing a spec does not have to iterate
one error at a time. The checks themselves live in ``validation``.

Nothing here imports Dagster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synid_assets.core.spec.model import (
    ATTRIBUTE_CLASHES,
    CLASS_SUFFIX,
    FILE_PROBABILITIES,
    AttributeClass,
    AttributeSpec,
    AttributeSpecError,
    ClashRule,
    SpecProblem,
)
from synid_assets.core.spec.validation import (
    check_clashes,
    check_class_file,
    check_file_probabilities,
    line_of_key,
    safe_member,
)

_UTF8_BOM = b"\xef\xbb\xbf"


def _spec_file_names(directory: Path) -> list[str]:
    """The files that make up a spec: every class file plus the two JSON files, top level only."""
    names = []
    for p in directory.iterdir():
        is_spec_name = p.name in (FILE_PROBABILITIES, ATTRIBUTE_CLASHES) or p.suffix == CLASS_SUFFIX
        if is_spec_name and p.is_file():
            names.append(p.name)
    return sorted(names)


def _fingerprint(directory: Path, names: Sequence[str], contents: Mapping[str, bytes] | None = None) -> str:
    digest = hashlib.sha256()
    for name in sorted(names):
        data = contents[name] if contents is not None and name in contents else (directory / name).read_bytes()
        encoded = name.encode("utf-8")
        # Length-prefix both parts so that no two different file sets can produce the same byte stream.
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _check_directory(directory: Path) -> None:
    if not directory.exists():
        raise AttributeSpecError([SpecProblem(directory, None, "attributes directory does not exist")])
    if not directory.is_dir():
        raise AttributeSpecError([SpecProblem(directory, None, "attributes path is not a directory")])


def spec_fingerprint(directory: str | Path) -> str:
    """sha256 over (name, bytes) of every spec file, in name order; equals ``AttributeSpec.fingerprint``.

    Cheap (no parsing), so a sensor can poll it to notice an edited spec.
    """
    directory = Path(directory)
    _check_directory(directory)
    return _fingerprint(directory, _spec_file_names(directory))


def _decode(path: Path, data: bytes, problems: list[SpecProblem]) -> str | None:
    """UTF-8 text of a spec file (BOM dropped), or None after recording where decoding failed."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
        bom = len(_UTF8_BOM)
    else:
        bom = 0
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line = data.count(b"\n", 0, exc.start) + 1
        problems.append(
            SpecProblem(path, line, f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {offset}")
        )
        return None


def _load_json(path: Path, data: bytes, problems: list[SpecProblem]) -> tuple[Any, str] | None:
    """The parsed document and its text, or None after recording why it could not be parsed.

    Duplicate keys are recorded as problems (json.loads would silently keep the last one).
    """
    text = _decode(path, data, problems)
    if text is None:
        return None

    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                problems.append(SpecProblem(path, line_of_key(text, key), f"duplicate key {key!r}"))
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys), text
    except json.JSONDecodeError as exc:
        problems.append(SpecProblem(path, exc.lineno, f"malformed JSON: {exc.msg} (column {exc.colno})"))
        return None


def _read_class_files(
    directory: Path,
    class_files: Sequence[str],
    contents: Mapping[str, bytes],
    problems: list[SpecProblem],
    notes: list[str],
) -> dict[str, tuple[tuple[str, ...], tuple[float, ...]]]:
    """Values and probabilities per class file that parsed cleanly; the others' problems are recorded."""
    parsed: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
    for name in class_files:
        path = directory / name
        why = safe_member(directory, name, "class file")  # e.g. a symlink pointing outside the spec
        if why is not None:
            problems.append(SpecProblem(path, None, why))
            continue
        text = _decode(path, contents[name], problems)
        if text is None:
            continue
        result = check_class_file(path, text, problems, notes)
        if result is not None:
            parsed[name] = result
    return parsed


def load_attribute_spec(directory: str | Path) -> AttributeSpec:
    """Read and validate a spec directory; raises AttributeSpecError listing every problem found."""
    directory = Path(directory)
    _check_directory(directory)
    problems: list[SpecProblem] = []
    warnings: list[str] = []
    notes: list[str] = []

    names = _spec_file_names(directory)
    contents = {name: (directory / name).read_bytes() for name in names}
    class_files = [n for n in names if n.endswith(CLASS_SUFFIX)]
    parsed = _read_class_files(directory, class_files, contents, problems, notes)

    usage: dict[str, float] = {}
    if FILE_PROBABILITIES in contents:
        loaded = _load_json(directory / FILE_PROBABILITIES, contents[FILE_PROBABILITIES], problems)
        if loaded is not None:
            usage = check_file_probabilities(directory, *loaded, problems) or {}
    else:
        problems.append(
            SpecProblem(directory / FILE_PROBABILITIES, None, "missing (every spec needs one; see FLUXSynID)")
        )
    if not class_files:
        problems.append(SpecProblem(directory, None, f"no {CLASS_SUFFIX} attribute class files"))

    classes: dict[str, AttributeClass] = {}
    for name, (values, probs) in parsed.items():
        # Only reported when the spec is otherwise valid, so every listed name is in ``usage`` here.
        if name not in usage:
            warnings.append(f"{directory / name}: not listed in {FILE_PROBABILITIES}; the class is never used")
        classes[name] = AttributeClass(
            name=Path(name).stem,
            file=name,
            values=values,
            probabilities=probs,
            usage_probability=usage.get(name, 0.0),
        )

    clashes: list[ClashRule] = []
    if ATTRIBUTE_CLASHES in contents:
        loaded = _load_json(directory / ATTRIBUTE_CLASHES, contents[ATTRIBUTE_CLASHES], problems)
        if loaded is not None:
            clashes = check_clashes(directory, loaded[0], classes, set(class_files), problems, warnings)

    if problems:
        raise AttributeSpecError(problems)
    return AttributeSpec(
        directory=directory,
        classes=tuple(sorted(classes.values(), key=lambda c: c.name)),
        clashes=tuple(clashes),
        fingerprint=_fingerprint(directory, names, contents),
        warnings=tuple(warnings),
        notes=tuple(notes),
    )
