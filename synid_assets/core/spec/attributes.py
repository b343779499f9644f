"""Attribute specs in FLUXSynID's layout: loading, validation, and deterministic identity sampling.

A spec is a directory holding one ``<class>.txt`` per attribute class (``value,probability`` lines),
``file_probabilities.json`` (class file -> probability that the class is used for an identity) and,
optionally, ``attribute_clashes.json`` (rules that forbid value combinations). The files are read exactly
as FLUXSynID publishes them (CRLF, missing final newline), and every problem is reported at once, with its
file and line, so that a user fixing a spec does not have to iterate one error at a time.

Nothing here imports Dagster.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

FILE_PROBABILITIES = "file_probabilities.json"
ATTRIBUTE_CLASHES = "attribute_clashes.json"
CLASS_SUFFIX = ".txt"

# FLUXSynID decides the prompt's subject from the class whose file stem is one of these.
GENDER_CLASS_STEMS = frozenset({"gender", "genders", "sex", "sexes"})

# FLUXSynID's own files sum to 1 within ~1e-9; 1e-4 tolerates hand-edited four-decimal files.
FRACTION_SUM_TOLERANCE = 1e-4
PERCENT_SUM_TOLERANCE = 0.01

# Above this many joint starting states per clash component, expected_frequencies falls back to Monte-Carlo.
_EXACT_STATE_LIMIT = 200_000

_UTF8_BOM = b"\xef\xbb\xbf"
_CLASH_KEYS = ("fixed_file", "fixed_attributes", "secondary_file", "secondary_attributes")


# --------------------------------------------------------------------------------------------- errors


class SpecProblem(NamedTuple):
    """One problem in a spec file; ``line`` is 1-based, or None when it concerns the whole file."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class AttributeSpecError(ValueError):
    """A spec failed validation; ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems: list[SpecProblem] = list(problems)
        count = len(self.problems)
        header = f"invalid attribute spec ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([header, *(str(p) for p in self.problems)]))

    def __str__(self) -> str:
        return str(self.args[0])


# ------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class AttributeClass:
    """One attribute class (one ``.txt`` file)."""

    name: str
    file: str
    values: tuple[str, ...]
    probabilities: tuple[float, ...]
    usage_probability: float


@dataclass(frozen=True)
class ClashRule:
    """When ``fixed_class`` has one of ``fixed_values``, ``secondary_class`` must avoid ``secondary_values``.

    The fixed side always wins: the secondary class is redrawn without the clashing values (or dropped).
    """

    fixed_class: str
    fixed_values: tuple[str, ...]
    secondary_class: str
    secondary_values: tuple[str, ...]


@dataclass(frozen=True)
class _Compiled:
    """Lookup tables derived once per spec so that sampling an identity stays cheap."""

    index: dict[str, int]
    cumulative: tuple[tuple[float, ...], ...]
    value_index: tuple[dict[str, int], ...]
    # Per rule: (fixed class index, fixed value set, secondary class index, secondary value set).
    rules: tuple[tuple[int, frozenset[str], int, frozenset[str]], ...]


@dataclass(frozen=True)
class AttributeSpec:
    """A validated attribute spec. Classes are sorted by name so that sampling order is deterministic."""

    directory: Path
    classes: tuple[AttributeClass, ...]
    clashes: tuple[ClashRule, ...]
    fingerprint: str
    warnings: tuple[str, ...] = ()
    _compiled: _Compiled = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = {c.name: i for i, c in enumerate(self.classes)}
        if len(index) != len(self.classes):
            raise ValueError("attribute class names must be unique")
        rules = []
        for rule in self.clashes:
            if rule.fixed_class not in index or rule.secondary_class not in index:
                raise ValueError(f"clash rule names an unknown class: {rule}")
            rules.append(
                (
                    index[rule.fixed_class],
                    frozenset(rule.fixed_values),
                    index[rule.secondary_class],
                    frozenset(rule.secondary_values),
                )
            )
        compiled = _Compiled(
            index=index,
            cumulative=tuple(tuple(itertools.accumulate(c.probabilities)) for c in self.classes),
            value_index=tuple({v: i for i, v in enumerate(c.values)} for c in self.classes),
            rules=tuple(rules),
        )
        object.__setattr__(self, "_compiled", compiled)  # frozen: the only way to attach derived data

    def class_named(self, name: str) -> AttributeClass:
        """The class with this file stem; KeyError if there is none."""
        try:
            return self.classes[self._compiled.index[name]]
        except KeyError:
            raise KeyError(f"no attribute class named {name!r} in {self.directory}") from None

    @property
    def gender_class(self) -> str | None:
        """The class that decides the subject word (stem gender/genders/sex/sexes), if any."""
        for c in self.classes:
            if c.name.lower() in GENDER_CLASS_STEMS:
                return c.name
        return None


# ------------------------------------------------------------------------------------- fingerprint


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
        data = (
            contents[name] if contents is not None and name in contents else (directory / name).read_bytes()
        )
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


# ------------------------------------------------------------------------------------------ parsing


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


def _safe_member(directory: Path, name: object, what: str) -> str | None:
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


def _parse_class_file(
    path: Path, text: str, problems: list[SpecProblem]
) -> tuple[tuple[str, ...], tuple[float, ...]] | None:
    """Values and normalized probabilities of one class file, or None after recording its problems."""
    values: list[str] = []
    probs: list[float] = []
    first_line: dict[str, int] = {}
    kinds: set[bool] = set()  # True for a percent line, False for a fraction line
    raw_sum = 0.0
    n_before = len(problems)
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
            problems.append(
                SpecProblem(path, lineno, f"probability of {value!r} is not a number: {number!r}")
            )
            continue
        if p < 0:
            problems.append(SpecProblem(path, lineno, f"probability of {value!r} is negative: {number}"))
            continue
        if p > (100.0 if percent else 1.0):
            limit = "100%" if percent else "1"
            problems.append(SpecProblem(path, lineno, f"probability of {value!r} is above {limit}: {number}"))
            continue
        if value in first_line:
            problems.append(
                SpecProblem(path, lineno, f"duplicate value {value!r} (first on line {first_line[value]})")
            )
            continue
        first_line[value] = lineno
        kinds.add(percent)
        raw_sum += p
        values.append(value)
        probs.append(p / 100.0 if percent else p)
    if len(problems) > n_before:
        return None  # the sum of a file with broken lines means nothing; don't add noise
    if not values:
        problems.append(SpecProblem(path, None, "class has no 'value,probability' lines"))
        return None
    if kinds == {True}:
        if abs(raw_sum - 100.0) > PERCENT_SUM_TOLERANCE:
            problems.append(SpecProblem(path, None, f"probabilities sum to {raw_sum:g}%, expected 100%"))
            return None
    else:
        total = math.fsum(probs)
        if abs(total - 1.0) > FRACTION_SUM_TOLERANCE:
            problems.append(SpecProblem(path, None, f"probabilities sum to {total:.10g}, expected 1"))
            return None
    return tuple(values), _normalize(probs)


def _normalize(probs: Sequence[float]) -> tuple[float, ...]:
    """Scale to sum 1, then put the rounding residue on the largest entry so the sum is 1.0 in floats."""
    total = math.fsum(probs)
    out = [p / total for p in probs]
    big = max(range(len(out)), key=out.__getitem__)
    out[big] = max(0.0, 1.0 - math.fsum(out[:big] + out[big + 1 :]))
    return tuple(out)


def _line_of_key(text: str, key: str) -> int | None:
    """Best-effort line of a JSON object key (json reports no positions for valid documents)."""
    match = re.search(re.escape(json.dumps(key)) + r"\s*:", text)
    if match is None:
        match = re.search(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:", text)
    return None if match is None else text.count("\n", 0, match.start()) + 1


def _load_json(path: Path, data: bytes, problems: list[SpecProblem]) -> tuple[Any, str] | None:
    text = _decode(path, data, problems)
    if text is None:
        return None

    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                problems.append(SpecProblem(path, _line_of_key(text, key), f"duplicate key {key!r}"))
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys), text
    except json.JSONDecodeError as exc:
        problems.append(SpecProblem(path, exc.lineno, f"malformed JSON: {exc.msg} (column {exc.colno})"))
        return None


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _parse_file_probabilities(
    directory: Path, data: bytes, problems: list[SpecProblem]
) -> dict[str, float] | None:
    path = directory / FILE_PROBABILITIES
    loaded = _load_json(path, data, problems)
    if loaded is None:
        return None
    doc, text = loaded
    if not isinstance(doc, dict):
        problems.append(
            SpecProblem(path, None, f"expected a JSON object of file -> probability, got {doc!r:.60}")
        )
        return None
    usage: dict[str, float] = {}
    for name, p in doc.items():
        line = _line_of_key(text, name)
        why = _safe_member(directory, name, "entry")
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


def _parse_clashes(
    directory: Path,
    data: bytes,
    classes: Mapping[str, AttributeClass],
    known_files: set[str],
    problems: list[SpecProblem],
    warnings: list[str],
) -> list[ClashRule]:
    """Clash rules in file order.

    ``classes`` holds the classes that parsed cleanly; ``known_files`` every class file, broken or not.
    """
    path = directory / ATTRIBUTE_CLASHES
    loaded = _load_json(path, data, problems)
    if loaded is None:
        return []
    doc, _ = loaded
    if not isinstance(doc, list):
        problems.append(
            SpecProblem(path, None, f"expected a JSON list of clash rules, got {type(doc).__name__}")
        )
        return []
    rules: list[ClashRule] = []
    for i, rule in enumerate(doc):
        where = f"rule [{i}]"
        if not isinstance(rule, dict):
            problems.append(
                SpecProblem(path, None, f"{where}: expected an object, got {type(rule).__name__}")
            )
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
            why = _safe_member(directory, name, f"{where}: {file_key}")
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
            problems.append(
                SpecProblem(path, None, f"{where}: fixed_file and secondary_file are the same class")
            )
            ok = False
        if ok:
            (fixed, fixed_values), (secondary, secondary_values) = sides
            rules.append(ClashRule(fixed, fixed_values, secondary, secondary_values))
    return rules


def load_attribute_spec(directory: str | Path) -> AttributeSpec:
    """Read and validate a spec directory; raises AttributeSpecError listing every problem found."""
    directory = Path(directory)
    _check_directory(directory)
    problems: list[SpecProblem] = []
    warnings: list[str] = []

    names = _spec_file_names(directory)
    contents = {name: (directory / name).read_bytes() for name in names}
    class_files = [n for n in names if n.endswith(CLASS_SUFFIX)]

    parsed: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
    for name in class_files:
        path = directory / name
        why = _safe_member(directory, name, "class file")  # e.g. a symlink pointing outside the spec
        if why is not None:
            problems.append(SpecProblem(path, None, why))
            continue
        text = _decode(path, contents[name], problems)
        if text is None:
            continue
        result = _parse_class_file(path, text, problems)
        if result is not None:
            parsed[name] = result

    usage: dict[str, float] = {}
    if FILE_PROBABILITIES in contents:
        usage = _parse_file_probabilities(directory, contents[FILE_PROBABILITIES], problems) or {}
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
            warnings.append(
                f"{directory / name}: not listed in {FILE_PROBABILITIES}; the class is never used"
            )
        classes[name] = AttributeClass(
            name=Path(name).stem,
            file=name,
            values=values,
            probabilities=probs,
            usage_probability=usage.get(name, 0.0),
        )

    clashes: list[ClashRule] = []
    if ATTRIBUTE_CLASHES in contents:
        clashes = _parse_clashes(
            directory, contents[ATTRIBUTE_CLASHES], classes, set(class_files), problems, warnings
        )

    if problems:
        raise AttributeSpecError(problems)
    return AttributeSpec(
        directory=directory,
        classes=tuple(sorted(classes.values(), key=lambda c: c.name)),
        clashes=tuple(clashes),
        fingerprint=_fingerprint(directory, names, contents),
        warnings=tuple(warnings),
    )


# ----------------------------------------------------------------------------------------- sampling


def _draw(cumulative: Sequence[float], u: float) -> int:
    """Inverse-CDF draw; bisect_right skips zero-probability values, the clamp guards float round-off."""
    return min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(cumulative) - 1)


def sample_identity_attributes(spec: AttributeSpec, rng: np.random.Generator) -> dict[str, str]:
    """Draw one identity's attributes: class stem -> value, in spec class order (unused classes omitted).

    Each class consumes exactly two uniforms (keep?, value) whether or not it is kept, so editing one
    class's usage probability does not shift the draws of any other class. Clash rules are then applied
    until stable; their redraws consume further uniforms from the same ``rng``.
    """
    compiled = spec._compiled
    n = len(spec.classes)
    uniforms = rng.random(2 * n).tolist()
    current: list[int | None] = [None] * n  # value index per class; None = class not used
    for i, cls in enumerate(spec.classes):
        value = _draw(compiled.cumulative[i], uniforms[2 * i + 1])
        if uniforms[2 * i] < cls.usage_probability:  # u < 1 always, u < 0 never: exact for usage 0 and 1
            current[i] = value
    if compiled.rules:
        _resolve_clashes(spec, current, rng)
    return {
        cls.name: cls.values[idx] for cls, idx in zip(spec.classes, current, strict=True) if idx is not None
    }


def _resolve_clashes(spec: AttributeSpec, current: list[int | None], rng: np.random.Generator) -> None:
    """Apply clash rules in file order, pass after pass, until a pass changes nothing. Mutates ``current``.

    Termination: a rule fires only while the secondary value is one of its secondary values, and a value
    is only ever drawn from the not-yet-removed ones, so each firing removes at least one new value
    (or drops the class). Firings are therefore bounded by the total number of values.
    """
    compiled = spec._compiled
    removed: dict[int, set[str]] = {}
    max_firings = sum(len(c.values) for c in spec.classes)
    firings = 0
    changed = True
    while changed:
        changed = False
        for fixed, fixed_values, secondary, secondary_values in compiled.rules:
            f, s = current[fixed], current[secondary]
            if f is None or s is None:
                continue
            if spec.classes[fixed].values[f] not in fixed_values:
                continue
            cls = spec.classes[secondary]
            if cls.values[s] not in secondary_values:
                continue
            firings += 1
            if firings > max_firings:  # unreachable by the argument above; a guard against regressions
                raise RuntimeError("clash resolution did not terminate")
            gone = removed.setdefault(secondary, set())
            gone |= secondary_values
            keep = [j for j, v in enumerate(cls.values) if v not in gone and cls.probabilities[j] > 0]
            if keep:
                cumulative = list(itertools.accumulate(cls.probabilities[j] for j in keep))
                current[secondary] = keep[_draw(cumulative, rng.random())]
            else:
                current[secondary] = None  # nothing compatible is left: the class is not described
            changed = True


_SUBJECT_WORDS = {
    "male": "man",
    "man": "man",
    "men": "man",
    "female": "woman",
    "woman": "woman",
    "women": "woman",
    "non-binary": "non-binary person",
    "nonbinary": "non-binary person",
    "non binary": "non-binary person",
    "non-binary person": "non-binary person",
}


def subject_word(spec: AttributeSpec, attributes: Mapping[str, str]) -> str:
    """The prompt's subject noun: 'man', 'woman', 'non-binary person', or 'person' when gender is unknown.

    Deterministic and consumes no randomness: a missing gender gives the neutral 'person'.
    """
    gender = spec.gender_class
    if gender is None or gender not in attributes:
        return "person"
    return _SUBJECT_WORDS.get(attributes[gender].strip().lower(), "person")


# ---------------------------------------------------------------------------------- expected counts


def expected_frequencies(
    spec: AttributeSpec, n_draws: int = 200_000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """P(class is used and has value), per class and value, as produced by ``sample_identity_attributes``.

    Computed exactly: classes untouched by clash rules give usage * p; for the classes linked by rules,
    values are grouped into blocks that every rule treats alike, and the clash process is enumerated over
    blocks (within a block, redraws keep the original proportions). Only when a clash component has too
    many joint states does this fall back to Monte-Carlo with ``n_draws`` samples from ``seed``.
    """
    result = {
        c.name: {v: c.usage_probability * p for v, p in zip(c.values, c.probabilities, strict=True)}
        for c in spec.classes
    }
    for component in _clash_components(spec):
        exact = _exact_component(spec, component)
        if exact is None:
            return _monte_carlo_frequencies(spec, n_draws, seed)
        result.update(exact)
    return result


def _monte_carlo_frequencies(spec: AttributeSpec, n_draws: int, seed: int) -> dict[str, dict[str, float]]:
    counts = {c.name: dict.fromkeys(c.values, 0) for c in spec.classes}
    rng = np.random.default_rng(seed)
    for _ in range(n_draws):
        for name, value in sample_identity_attributes(spec, rng).items():
            counts[name][value] += 1
    return {name: {v: k / n_draws for v, k in per.items()} for name, per in counts.items()}


def _clash_components(spec: AttributeSpec) -> list[tuple[list[int], list[int]]]:
    """Groups of (class indices, rule indices) linked by clash rules; groups evolve independently."""
    parent = list(range(len(spec.classes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for fixed, _, secondary, _ in spec._compiled.rules:
        parent[root(fixed)] = root(secondary)
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for r, (fixed, _, _, _) in enumerate(spec._compiled.rules):
        groups.setdefault(root(fixed), ([], []))[1].append(r)
    for i in range(len(spec.classes)):
        if root(i) in groups:
            groups[root(i)][0].append(i)
    return list(groups.values())


def _exact_component(
    spec: AttributeSpec, component: tuple[list[int], list[int]]
) -> dict[str, dict[str, float]] | None:
    class_ids, rule_ids = component
    rules = [spec._compiled.rules[r] for r in rule_ids]
    local = {c: k for k, c in enumerate(class_ids)}

    # Blocks: values with the same membership in every rule's fixed/secondary sets behave identically.
    blocks: list[list[list[int]]] = []  # per local class: list of blocks, each a list of value indices
    block_of: list[list[int]] = []  # per local class: value index -> block index
    for c in class_ids:
        cls = spec.classes[c]
        by_signature: dict[tuple[object, ...], int] = {}
        cls_blocks: list[list[int]] = []
        owner = []
        for j, v in enumerate(cls.values):
            signature = tuple(
                (v in fv if f == c else None, v in sv if s == c else None) for f, fv, s, sv in rules
            )
            b = by_signature.setdefault(signature, len(cls_blocks))
            if b == len(cls_blocks):
                cls_blocks.append([])
            cls_blocks[b].append(j)
            owner.append(b)
        blocks.append(cls_blocks)
        block_of.append(owner)
    mass = [
        [math.fsum(spec.classes[c].probabilities[j] for j in blk) for blk in blocks[k]]
        for k, c in enumerate(class_ids)
    ]

    def block_set(k: int, values: frozenset[str]) -> frozenset[int]:
        cls = spec.classes[class_ids[k]]
        return frozenset(block_of[k][j] for j, v in enumerate(cls.values) if v in values)

    block_rules = [
        (local[f], block_set(local[f], fv), local[s], block_set(local[s], sv)) for f, fv, s, sv in rules
    ]

    # Starting distribution of each class: absent, or in a block; zero-probability options are pruned.
    options: list[list[tuple[int | None, float]]] = []
    for k, c in enumerate(class_ids):
        usage = spec.classes[c].usage_probability
        opts: list[tuple[int | None, float]] = [(None, 1.0 - usage)] if usage < 1.0 else []
        opts += [(b, usage * m) for b, m in enumerate(mass[k]) if usage > 0 and m > 0]
        options.append(opts)
    if math.prod(len(o) for o in options) > _EXACT_STATE_LIMIT:
        return None

    final = [[0.0] * len(blocks[k]) for k in range(len(class_ids))]
    for start in itertools.product(*options):
        state = tuple(b for b, _ in start)
        p0 = math.prod(p for _, p in start)
        for end, p in _walk_clashes(state, block_rules, mass, p0):
            for k, b in enumerate(end):
                if b is not None:
                    final[k][b] += p

    out: dict[str, dict[str, float]] = {}
    for k, c in enumerate(class_ids):
        cls = spec.classes[c]
        freqs = {}
        for j, v in enumerate(cls.values):
            b = block_of[k][j]
            freqs[v] = final[k][b] * cls.probabilities[j] / mass[k][b] if mass[k][b] > 0 else 0.0
        out[cls.name] = freqs
    return out


def _walk_clashes(
    start: tuple[int | None, ...],
    rules: Sequence[tuple[int, frozenset[int], int, frozenset[int]]],
    mass: Sequence[Sequence[float]],
    p0: float,
) -> Iterator[tuple[tuple[int | None, ...], float]]:
    """Every end state of the clash process from ``start`` with its probability (mirrors _resolve_clashes)."""
    empty: tuple[frozenset[int], ...] = tuple(frozenset() for _ in start)
    # Stack items: (state, removed blocks per class, next rule, changed in this pass, probability).
    stack = [(start, empty, 0, False, p0)]
    while stack:
        state, removed, i, changed, p = stack.pop()
        if i == len(rules):
            if changed:
                stack.append((state, removed, 0, False, p))
            else:
                yield state, p
            continue
        fixed, fixed_blocks, secondary, secondary_blocks = rules[i]
        f, s = state[fixed], state[secondary]
        if f is None or s is None or f not in fixed_blocks or s not in secondary_blocks:
            stack.append((state, removed, i + 1, changed, p))
            continue
        gone = removed[secondary] | secondary_blocks
        new_removed = (*removed[:secondary], gone, *removed[secondary + 1 :])
        keep = [b for b, m in enumerate(mass[secondary]) if b not in gone and m > 0]
        if not keep:
            new_state = (*state[:secondary], None, *state[secondary + 1 :])
            stack.append((new_state, new_removed, i + 1, True, p))
            continue
        total = math.fsum(mass[secondary][b] for b in keep)
        for b in keep:
            new_state = (*state[:secondary], b, *state[secondary + 1 :])
            stack.append((new_state, new_removed, i + 1, True, p * mass[secondary][b] / total))
