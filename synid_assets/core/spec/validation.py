"""Checks on the decoded contents of spec files; each problem becomes a SpecProblem with its file and line.

The functions here take text or parsed JSON (``loading`` reads the bytes) and append to a shared
``problems`` list, so that every problem of a spec is reported at once rather than one per attempt.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from synid_assets.core.spec.model import (
    ATTRIBUTE_CLASHES,
    CLASS_SUFFIX,
    FILE_PROBABILITIES,
    AttributeClass,
    ClashRule,
    SpecProblem,
)

# FLUXSynID's own files sum to 1 within ~1e-9; 1e-4 tolerates hand-edited four-decimal files.
FRACTION_SUM_TOLERANCE = 1e-4
# The same relative tolerance for files that sum to 100 (with or without '%').
PERCENT_SUM_TOLERANCE = 0.01

_CLASH_KEYS = ("fixed_file", "fixed_attributes", "secondary_file", "secondary_attributes")


def safe_member(directory: Path, name: object, what: str) -> str | None:
    """Why ``name`` may not be used as a spec file name, or None when it is a plain file inside the spec dir.

    The JSON files name class files; they must never reach outside the spec directory.
    """
    if not isinstance(name, str) or not name:
        return f"{what} must be a non-empty file name string, got {name!r}"
    if "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
        return f"{what} {name!r} must be a plain file name inside the attributes directory (no paths)"
    if not name.endswith(CLASS_SUFFIX):
        return f"{what} {name!r} must name a {CLASS_SUFFIX} class file"
    target = directory / name
    if target.exists():
        try:
            target.resolve().relative_to(directory.resolve())
        except ValueError:
            return f"{what} {name!r} resolves outside the attributes directory"
    return None


def check_class_file(
    path: Path, text: str, problems: list[SpecProblem], notes: list[str]
) -> tuple[tuple[str, ...], tuple[float, ...]] | None:
    """Values and normalized probabilities of one class file, or None after recording its problems.

    Values are fractions summing to 1, or percents ('25%') summing to 100. FLUXSynID reads them as weights,
    so a file whose values have no '%' and sum to 100 is read as percents too, with a note saying so.
    """
    values: list[str] = []
    probs: list[float] = []
    first_line: dict[str, int] = {}
    kinds: set[bool] = set()  # True for a percent line, False for a fraction line
    raw_sum = 0.0
    n_before = len(problems)
    # Values without '%' above 1 are errors unless the whole file turns out to be percents without '%'.
    deferred: list[SpecProblem] = []
    # split("\n") rather than splitlines(): the latter also breaks on \x0b, \x1c, \u2028 ... and would
    # make our line numbers disagree with the user's editor.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        value, comma, number = line.rpartition(",")
        if not comma:
            problems.append(SpecProblem(path, lineno, f"expected 'value,probability', got {line!r}"))
            continue
        value = value.strip()
        number = number.strip()
        if not value:
            problems.append(SpecProblem(path, lineno, "empty value before the comma"))
            continue
        percent = number.endswith("%")
        if percent:
            number = number[:-1].strip()
        try:
            p = float(number)
        except ValueError:
            p = math.nan
        if not math.isfinite(p):
            problems.append(SpecProblem(path, lineno, f"probability of {value!r} is not a number: {number!r}"))
            continue
        if p < 0:
            problems.append(SpecProblem(path, lineno, f"probability of {value!r} is negative: {number}"))
            continue
        if percent and p > 100.0:
            problems.append(SpecProblem(path, lineno, f"probability of {value!r} is above 100%: {number}"))
            continue
        if value in first_line:
            problems.append(SpecProblem(path, lineno, f"duplicate value {value!r} (first on line {first_line[value]})"))
            continue
        if not percent and p > 1.0:
            deferred.append(SpecProblem(path, lineno, f"probability of {value!r} is above 1: {number}"))
            problems.append(deferred[-1])
        first_line[value] = lineno
        kinds.add(percent)
        raw_sum += p
        values.append(value)
        probs.append(p / 100.0 if percent else p)
    if len(problems) - n_before > len(deferred):
        return None  # the sum of a file with broken lines means nothing; don't add noise
    if not values:
        problems.append(SpecProblem(path, None, "class has no 'value,probability' lines"))
        return None
    if kinds == {False} and abs(raw_sum - 100.0) <= PERCENT_SUM_TOLERANCE:
        del problems[n_before:]  # only the deferred 'above 1' problems are there, and they do not apply
        probs = [p / 100.0 for p in probs]
        notes.append(f"{path}: values sum to 100 without '%': read as percents")
    elif deferred:
        if kinds == {False}:
            problems.append(
                SpecProblem(path, None, f"probabilities sum to {raw_sum:.10g}, expected 1 (or 100 for percents)")
            )
        return None
    elif kinds == {True}:
        if abs(raw_sum - 100.0) > PERCENT_SUM_TOLERANCE:
            problems.append(SpecProblem(path, None, f"probabilities sum to {raw_sum:g}%, expected 100%"))
            return None
    else:
        total = math.fsum(probs)
        if abs(total - 1.0) > FRACTION_SUM_TOLERANCE:
            problems.append(SpecProblem(path, None, f"probabilities sum to {total:.10g}, expected 1"))
            return None
    return tuple(values), normalize(probs)


def normalize(probs: Sequence[float]) -> tuple[float, ...]:
    """Scale to sum 1, then put the rounding residue on the largest entry so the sum is 1.0 in floats."""
    total = math.fsum(probs)
    out = [p / total for p in probs]
    big = max(range(len(out)), key=out.__getitem__)
    out[big] = max(0.0, 1.0 - math.fsum(out[:big] + out[big + 1 :]))
    return tuple(out)


def line_of_key(text: str, key: str) -> int | None:
    """Best-effort line of a JSON object key (json reports no positions for valid documents)."""
    match = re.search(re.escape(json.dumps(key)) + r"\s*:", text)
    if match is None:
        match = re.search(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:", text)
    return None if match is None else text.count("\n", 0, match.start()) + 1


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_file_probabilities(
    directory: Path, doc: object, text: str, problems: list[SpecProblem]
) -> dict[str, float] | None:
    """Usage probability per class file from parsed ``file_probabilities.json``; each entry is in [0, 1].

    The entries are independent (the chance that each class describes an identity), not a distribution, so
    they sum to nothing in particular and there is no percent reading here.
    """
    path = directory / FILE_PROBABILITIES
    if not isinstance(doc, dict):
        problems.append(SpecProblem(path, None, f"expected a JSON object of file -> probability, got {doc!r:.60}"))
        return None
    usage: dict[str, float] = {}
    for name, p in doc.items():
        line = line_of_key(text, name)
        why = safe_member(directory, name, "entry")
        if why is not None:
            problems.append(SpecProblem(path, line, why))
            continue
        if not (directory / name).is_file():
            problems.append(SpecProblem(path, line, f"entry {name!r} names a file that does not exist"))
            continue
        if not _is_number(p) or not math.isfinite(p):
            problems.append(SpecProblem(path, line, f"probability of {name!r} is not a number: {p!r}"))
            continue
        if not 0.0 <= p <= 1.0:
            problems.append(SpecProblem(path, line, f"probability of {name!r} is outside [0, 1]: {p!r}"))
            continue
        usage[name] = float(p)
    return usage


def check_clashes(
    directory: Path,
    doc: object,
    classes: Mapping[str, AttributeClass],
    known_files: set[str],
    problems: list[SpecProblem],
    warnings: list[str],
) -> list[ClashRule]:
    """Clash rules in file order from parsed ``attribute_clashes.json``.

    ``classes`` holds the classes that parsed cleanly; ``known_files`` every class file, broken or not.
    """
    path = directory / ATTRIBUTE_CLASHES
    if not isinstance(doc, list):
        problems.append(SpecProblem(path, None, f"expected a JSON list of clash rules, got {type(doc).__name__}"))
        return []
    rules: list[ClashRule] = []
    for i, rule in enumerate(doc):
        where = f"rule [{i}]"
        if not isinstance(rule, dict):
            problems.append(SpecProblem(path, None, f"{where}: expected an object, got {type(rule).__name__}"))
            continue
        missing = [k for k in _CLASH_KEYS if k not in rule]
        if missing:
            problems.append(SpecProblem(path, None, f"{where}: missing key(s) {', '.join(missing)}"))
            continue
        extra = sorted(set(rule) - set(_CLASH_KEYS))
        if extra:
            warnings.append(f"{path}: {where}: ignored unknown key(s) {', '.join(extra)}")
        ok = True
        sides: list[tuple[str, tuple[str, ...]]] = []
        for file_key, values_key in (
            ("fixed_file", "fixed_attributes"),
            ("secondary_file", "secondary_attributes"),
        ):
            name, values = rule[file_key], rule[values_key]
            why = safe_member(directory, name, f"{where}: {file_key}")
            if why is not None:
                problems.append(SpecProblem(path, None, why))
                ok = False
                continue
            if name not in known_files:
                problems.append(SpecProblem(path, None, f"{where}: {file_key} {name!r}: no such class file"))
                ok = False
                continue
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                problems.append(SpecProblem(path, None, f"{where}: {values_key} must be a list of strings"))
                ok = False
                continue
            if not values:
                warnings.append(f"{path}: {where}: {values_key} is empty; the rule never applies")
            cls = classes.get(name)
            if cls is None:
                ok = False  # the class file itself is broken and already reported
                continue
            for v in values:
                if v not in cls.values:
                    problems.append(
                        SpecProblem(path, None, f"{where}: {values_key} value {v!r} is not in class {name!r}")
                    )
                    ok = False
            sides.append((Path(name).stem, tuple(dict.fromkeys(values))))
        if ok and rule["fixed_file"] == rule["secondary_file"]:
            problems.append(SpecProblem(path, None, f"{where}: fixed_file and secondary_file are the same class"))
            ok = False
        if ok:
            (fixed, fixed_values), (secondary, secondary_values) = sides
            rules.append(ClashRule(fixed, fixed_values, secondary, secondary_values))
    return rules
