"""The attribute spec as data: its classes, clash rules, the problems a spec file can have, and the file names.

A spec is a directory holding one ``<class>.txt`` per attribute class (``value,probability`` lines),
``file_probabilities.json`` (class file -> probability that the class is used for an identity) and,
optionally, ``attribute_clashes.json`` (rules that forbid value combinations): FLUXSynID's layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

FILE_PROBABILITIES = "file_probabilities.json"
ATTRIBUTE_CLASHES = "attribute_clashes.json"
CLASS_SUFFIX = ".txt"

# FLUXSynID decides the prompt's subject from the class whose file stem is one of these.
GENDER_CLASS_STEMS = frozenset({"gender", "genders", "sex", "sexes"})


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
class SamplingTables:
    """Lookup tables derived once per spec so that sampling an identity stays cheap."""

    index: dict[str, int]
    cumulative: tuple[tuple[float, ...], ...]
    value_index: tuple[dict[str, int], ...]
    # Per rule: (fixed class index, fixed value set, secondary class index, secondary value set).
    rules: tuple[tuple[int, frozenset[str], int, frozenset[str]], ...]


@dataclass(frozen=True)
class AttributeSpec:
    """A validated attribute spec. Classes are sorted by name so that sampling order is deterministic.

    ``warnings`` are problems that do not stop the spec from being used (a class never used, a clash rule
    that never applies); ``notes`` say how a file was read where that is not the plain reading (a class
    file whose values sum to 100 without '%' is read as percents).
    """

    directory: Path
    classes: tuple[AttributeClass, ...]
    clashes: tuple[ClashRule, ...]
    fingerprint: str
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    tables: SamplingTables = field(init=False, repr=False, compare=False, hash=False)

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
        tables = SamplingTables(
            index=index,
            cumulative=tuple(tuple(itertools.accumulate(c.probabilities)) for c in self.classes),
            value_index=tuple({v: i for i, v in enumerate(c.values)} for c in self.classes),
            rules=tuple(rules),
        )
        object.__setattr__(self, "tables", tables)  # frozen: the only way to attach derived data

    def class_named(self, name: str) -> AttributeClass:
        """The class with this file stem; KeyError if there is none."""
        try:
            return self.classes[self.tables.index[name]]
        except KeyError:
            raise KeyError(f"no attribute class named {name!r} in {self.directory}") from None

    @property
    def gender_class(self) -> str | None:
        """The class that decides the subject word (stem gender/genders/sex/sexes), if any."""
        for c in self.classes:
            if c.name.lower() in GENDER_CLASS_STEMS:
                return c.name
        return None
