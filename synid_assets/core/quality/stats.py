"""Small statistics used by checks and benchmarks (no scipy dependency)."""

from __future__ import annotations

import math
from collections.abc import Mapping


def chi_square_p_value(statistic: float, df: int) -> float:
    """Upper tail of the chi-square distribution via the Wilson–Hilferty normal approximation.

    Accurate to about 1e-3 in p for df >= 1 in the tail that matters here (p between 1e-6 and 0.5).
    """
    if df <= 0:
        return 1.0
    if statistic <= 0:
        return 1.0
    h = 2.0 / (9.0 * df)
    z = ((statistic / df) ** (1.0 / 3.0) - (1.0 - h)) / math.sqrt(h)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def chi_square_goodness_of_fit(
    observed: Mapping[str, int], expected_probabilities: Mapping[str, float], min_expected: float = 5.0
) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of observed counts against expected probabilities.

    Categories whose expected count is below `min_expected` are pooled into one, since the chi-square
    approximation needs expected counts of about five or more.
    """
    total = sum(observed.values())
    if total == 0:
        return 0.0, 0, 1.0
    unknown = set(observed) - set(expected_probabilities)
    if any(observed[k] for k in unknown):
        return math.inf, 1, 0.0  # a value the spec cannot produce was observed
    cells: list[tuple[float, float]] = []
    pooled_obs = pooled_exp = 0.0
    for key, probability in expected_probabilities.items():
        expected = probability * total
        if expected < min_expected:
            pooled_obs += observed.get(key, 0)
            pooled_exp += expected
        else:
            cells.append((observed.get(key, 0), expected))
    if pooled_exp > 0:
        cells.append((pooled_obs, pooled_exp))
    cells = [c for c in cells if c[1] > 0]
    if len(cells) < 2:
        return 0.0, 0, 1.0
    statistic = sum((o - e) ** 2 / e for o, e in cells)
    df = len(cells) - 1
    return statistic, df, chi_square_p_value(statistic, df)
