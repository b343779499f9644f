"""Checks that sampled identities follow their attribute spec."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from synid_assets.core.stats import chi_square_goodness_of_fit

ABSENT = "<not used>"


def unclashed_expectations(spec: Any) -> dict[str, dict[str, float]]:
    """Exact marginals of the classes that no clash rule edits: P(absent) and usage * P(value).

    Clash rules redraw secondary classes, so their marginals have no closed form; they are left out.
    """
    secondary = {rule.secondary_class for rule in spec.clashes}
    out: dict[str, dict[str, float]] = {}
    for cls in spec.classes:
        if cls.name in secondary:
            continue
        probs = {v: cls.usage_probability * p for v, p in zip(cls.values, cls.probabilities, strict=True)}
        probs[ABSENT] = 1.0 - cls.usage_probability
        out[cls.name] = probs
    return out


def frequency_tests(spec: Any, samples: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Chi-square goodness of fit of sampled values against the spec, one row per unclashed class."""
    results = []
    for name, expected in unclashed_expectations(spec).items():
        observed = Counter(sample.get(name, ABSENT) for sample in samples)
        statistic, df, p_value = chi_square_goodness_of_fit(observed, expected)
        results.append({"attribute": name, "statistic": statistic, "df": df, "p_value": p_value})
    return results


def clash_violations(spec: Any, samples: Sequence[Mapping[str, str]]) -> int:
    """How many samples hold a fixed value together with one of its clashing secondary values."""
    count = 0
    for sample in samples:
        for rule in spec.clashes:
            if sample.get(rule.fixed_class) in rule.fixed_values and (
                sample.get(rule.secondary_class) in rule.secondary_values
            ):
                count += 1
                break
    return count
