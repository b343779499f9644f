"""Checks that sampled identities follow their attribute spec."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from synid_assets.core.quality.stats import chi_square_goodness_of_fit

ABSENT = "<not used>"


def spec_expectations(spec: Any) -> dict[str, dict[str, float]]:
    """Per class, the exact probability of each value and of the class being absent (clashes included)."""
    from synid_assets.core.spec.sampling import expected_frequencies

    out: dict[str, dict[str, float]] = {}
    for name, probabilities in expected_frequencies(spec).items():
        probs = dict(probabilities)
        probs[ABSENT] = max(0.0, 1.0 - sum(probabilities.values()))
        out[name] = probs
    return out


def frequency_tests(spec: Any, samples: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Chi-square goodness of fit of sampled values against the spec's exact frequencies, one row per class."""
    results = []
    for name, expected in spec_expectations(spec).items():
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
