"""Deterministic identity sampling from an AttributeSpec, clash resolution, the subject word, and the exact
frequencies that sampling produces (for checking samples against the spec).

Nothing here imports Dagster.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from synid_assets.core.spec.model import AttributeSpec

# Above this many joint starting states per clash component, expected_frequencies falls back to Monte-Carlo.
_EXACT_STATE_LIMIT = 200_000


def _draw(cumulative: Sequence[float], u: float) -> int:
    """Inverse-CDF draw; bisect_right skips zero-probability values, the clamp guards float round-off."""
    return min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(cumulative) - 1)


def sample_identity_attributes(spec: AttributeSpec, rng: np.random.Generator) -> dict[str, str]:
    """Draw one identity's attributes: class stem -> value, in spec class order (unused classes omitted).

    Each class consumes exactly two uniforms (keep?, value) whether or not it is kept, so editing one
    class's usage probability does not shift the draws of any other class. Clash rules are then applied
    until stable; their redraws consume further uniforms from the same ``rng``.
    """
    tables = spec.tables
    n = len(spec.classes)
    uniforms = rng.random(2 * n).tolist()
    current: list[int | None] = [None] * n  # value index per class; None = class not used
    for i, cls in enumerate(spec.classes):
        value = _draw(tables.cumulative[i], uniforms[2 * i + 1])
        if uniforms[2 * i] < cls.usage_probability:  # u < 1 always, u < 0 never: exact for usage 0 and 1
            current[i] = value
    if tables.rules:
        _resolve_clashes(spec, current, rng)
    return {cls.name: cls.values[idx] for cls, idx in zip(spec.classes, current, strict=True) if idx is not None}


def _resolve_clashes(spec: AttributeSpec, current: list[int | None], rng: np.random.Generator) -> None:
    """Apply clash rules in file order, pass after pass, until a pass changes nothing. Mutates ``current``.

    Termination: a rule fires only while the secondary value is one of its secondary values, and a value
    is only ever drawn from the not-yet-removed ones, so each firing removes at least one new value
    (or drops the class). Firings are therefore bounded by the total number of values.
    """
    tables = spec.tables
    removed: dict[int, set[str]] = {}
    max_firings = sum(len(c.values) for c in spec.classes)
    firings = 0
    changed = True
    while changed:
        changed = False
        for fixed, fixed_values, secondary, secondary_values in tables.rules:
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


def expected_frequencies(spec: AttributeSpec, n_draws: int = 200_000, seed: int = 0) -> dict[str, dict[str, float]]:
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

    for fixed, _, secondary, _ in spec.tables.rules:
        parent[root(fixed)] = root(secondary)
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for r, (fixed, _, _, _) in enumerate(spec.tables.rules):
        groups.setdefault(root(fixed), ([], []))[1].append(r)
    for i in range(len(spec.classes)):
        if root(i) in groups:
            groups[root(i)][0].append(i)
    return list(groups.values())


def _exact_component(spec: AttributeSpec, component: tuple[list[int], list[int]]) -> dict[str, dict[str, float]] | None:
    class_ids, rule_ids = component
    rules = [spec.tables.rules[r] for r in rule_ids]
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
            signature = tuple((v in fv if f == c else None, v in sv if s == c else None) for f, fv, s, sv in rules)
            b = by_signature.setdefault(signature, len(cls_blocks))
            if b == len(cls_blocks):
                cls_blocks.append([])
            cls_blocks[b].append(j)
            owner.append(b)
        blocks.append(cls_blocks)
        block_of.append(owner)
    mass = [
        [math.fsum(spec.classes[c].probabilities[j] for j in blk) for blk in blocks[k]] for k, c in enumerate(class_ids)
    ]

    def block_set(k: int, values: frozenset[str]) -> frozenset[int]:
        cls = spec.classes[class_ids[k]]
        return frozenset(block_of[k][j] for j, v in enumerate(cls.values) if v in values)

    block_rules = [(local[f], block_set(local[f], fv), local[s], block_set(local[s], sv)) for f, fv, s, sv in rules]

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
