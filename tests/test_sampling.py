"""Sampling identities from attribute specs: distributions, clash rules, determinism, expected frequencies."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from synid_assets.core.spec import sampling as sampling_module
from synid_assets.core.spec.loading import load_attribute_spec
from synid_assets.core.spec.model import AttributeSpec
from synid_assets.core.spec.sampling import expected_frequencies, sample_identity_attributes

SHIPPED = Path(__file__).resolve().parents[1] / "attributes"


def write_spec(
    root: Path,
    classes: dict[str, str],
    usage: dict[str, float] | None = None,
    clashes: list[dict[str, object]] | None = None,
) -> Path:
    """A spec directory on disk; ``usage`` defaults to 1.0 for every class."""
    root.mkdir(parents=True, exist_ok=True)
    for name, body in classes.items():
        (root / name).write_bytes(body.encode("utf-8"))
    usage = dict.fromkeys(classes, 1.0) if usage is None else usage
    (root / "file_probabilities.json").write_text(json.dumps(usage, indent=4))
    if clashes is not None:
        (root / "attribute_clashes.json").write_text(json.dumps(clashes, indent=4))
    return root


def clash(
    fixed: str, fixed_values: list[str], secondary: str, secondary_values: list[str]
) -> dict[str, object]:
    return {
        "fixed_file": fixed,
        "fixed_attributes": fixed_values,
        "secondary_file": secondary,
        "secondary_attributes": secondary_values,
    }


# Upper 0.1% points of the chi-square distribution (p = 0.001) by degrees of freedom, from standard tables
# (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.4; each checked to give survival 0.001000 via the regularized
# gamma function), used when scipy is not installed. At p = 0.001 a correct sampler fails one test in a
# thousand; the seeds below are fixed, so every outcome is reproducible anyway.
CHI2_CRITICAL_P001 = {
    1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322, 8: 26.124, 9: 27.877,
    10: 29.588, 11: 31.264, 12: 32.909, 13: 34.528, 14: 36.123, 15: 37.697, 16: 39.252, 17: 40.790,
    18: 42.312, 19: 43.820, 20: 45.315,
}  # fmt: skip


def chi2_critical(df: int) -> float:
    try:
        from scipy.stats import chi2
    except ImportError:
        return CHI2_CRITICAL_P001[df]
    return float(chi2.ppf(0.999, df))


def assert_fits(observed: Sequence[int], probabilities: Sequence[float], label: str) -> None:
    """Pearson chi-square goodness of fit; zero-probability cells must be empty and are left out."""
    n = sum(observed)
    cells = [(o, p) for o, p in zip(observed, probabilities, strict=True) if p > 0]
    assert all(o == 0 for o, p in zip(observed, probabilities, strict=True) if p == 0), label
    assert all(n * p >= 5 for _, p in cells), f"{label}: expected counts too small for chi-square"
    statistic = sum((o - n * p) ** 2 / (n * p) for o, p in cells)
    df = len(cells) - 1
    assert statistic < chi2_critical(df), f"{label}: chi2={statistic:.2f} with df={df}, counts {observed}"


def draw(spec: AttributeSpec, n: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    return [sample_identity_attributes(spec, rng) for _ in range(n)]


SMALL = {
    "color.txt": "Red,0.1\nGreen,0.2\nBlue,0.3\nBlack,0.4\n",
    "size.txt": "S,25%\nM,50%\nL,25%\nXXL,0%\n",
    "single.txt": "Only,1\n",
    "shape.txt": "Round,0.7\r\nSquare,0.3",
}
SMALL_USAGE = {"color.txt": 1.0, "size.txt": 0.6, "single.txt": 0.3, "shape.txt": 0.0}


@pytest.fixture
def small_spec(tmp_path: Path) -> AttributeSpec:
    return load_attribute_spec(write_spec(tmp_path, SMALL, usage=SMALL_USAGE))


# -------------------------------------------------------------------------------- goodness of fit


def test_values_and_usage_match_probabilities(small_spec: AttributeSpec) -> None:
    n = 20_000
    samples = draw(small_spec, n, seed=1234)
    for cls in small_spec.classes:
        used = [s[cls.name] for s in samples if cls.name in s]
        # Usage: a two-cell chi-square (used / not used), i.e. a binomial test.
        if 0 < cls.usage_probability < 1:
            assert_fits(
                [len(used), n - len(used)], [cls.usage_probability, 1 - cls.usage_probability], cls.name
            )
        else:
            assert len(used) == n * cls.usage_probability, cls.name
        if len(cls.values) > 1 and used:
            counts = Counter(used)
            assert set(counts) <= set(cls.values)
            assert_fits([counts[v] for v in cls.values], cls.probabilities, cls.name)


def test_output_follows_spec_class_order(small_spec: AttributeSpec) -> None:
    order = [c.name for c in small_spec.classes]
    for sample in draw(small_spec, 200, seed=5):
        assert list(sample) == [name for name in order if name in sample]


# --------------------------------------------------------------------------------------- clashes


def violations(spec: AttributeSpec, sample: dict[str, str]) -> list[int]:
    return [
        i
        for i, r in enumerate(spec.clashes)
        if sample.get(r.fixed_class) in r.fixed_values and sample.get(r.secondary_class) in r.secondary_values
    ]


def test_shipped_clashes_never_co_occur() -> None:
    spec = load_attribute_spec(SHIPPED)
    samples = draw(spec, 20_000, seed=7)
    assert all(not violations(spec, s) for s in samples)
    old_hair = {"Black", "Brown", "Blonde", "Red"}
    for s in samples:
        if s["genders"] == "Female":
            assert "facial_hair" not in s  # every facial_hair value clashes with Female: the class is dropped
            assert s.get("hair_styles") not in {"Bald", "Buzzed"}
            assert s.get("headwear") != "Kippah"
        if s["genders"] == "Male":
            assert s.get("headwear") != "Hijab"
        if s["ages"] in {"70-79", "80+"}:
            assert s.get("hair_colors") not in old_hair
            assert s.get("skin_type") != "Smooth and clear"
        if s.get("hair_styles") == "Bald":
            assert "hair_colors" not in s
    # The rules really were exercised, and the fixed side kept its values.
    genders = Counter(s["genders"] for s in samples)
    assert_fits([genders[v] for v in ("Male", "Female", "Non-binary")], [0.49, 0.49, 0.02], "genders")
    assert any(s.get("hair_styles") == "Bald" for s in samples)
    assert any(s["ages"] == "80+" and s.get("hair_colors") == "Gray" for s in samples)


def test_clash_redraw_keeps_proportions(tmp_path: Path) -> None:
    d = write_spec(
        tmp_path,
        {
            "genders.txt": "Male,0.5\nFemale,0.5\n",
            "hair.txt": "Bald,0.2\nShort,0.3\nLong,0.5\n",
            "color.txt": "Black,0.5\nGray,0.5\n",
        },
        clashes=[
            clash("genders.txt", ["Female"], "hair.txt", ["Bald"]),
            clash("hair.txt", ["Bald"], "color.txt", ["Black", "Gray"]),
        ],
    )
    spec = load_attribute_spec(d)
    # Exact: women redraw Bald among Short/Long at 0.3:0.5; bald identities lose their hair color.
    expected = {
        "genders": {"Male": 0.5, "Female": 0.5},
        "hair": {"Bald": 0.1, "Short": 0.15 + 0.5 * 0.3 / 0.8, "Long": 0.25 + 0.5 * 0.5 / 0.8},
        "color": {"Black": 0.45, "Gray": 0.45},
    }
    exact = expected_frequencies(spec)
    for name, per in expected.items():
        assert exact[name] == pytest.approx(per, abs=1e-12)

    samples = draw(spec, 20_000, seed=99)
    assert all(not violations(spec, s) for s in samples)
    hair = Counter(s["hair"] for s in samples)
    assert_fits([hair[v] for v in ("Bald", "Short", "Long")], list(expected["hair"].values()), "hair")
    women_hair = Counter(s["hair"] for s in samples if s["genders"] == "Female")
    assert women_hair["Bald"] == 0
    assert_fits([women_hair["Short"], women_hair["Long"]], [0.375, 0.625], "women's hair")
    color = Counter(s.get("color", "<dropped>") for s in samples)
    assert_fits([color["Black"], color["Gray"], color["<dropped>"]], [0.45, 0.45, 0.1], "color")


def test_rules_are_reapplied_until_stable(tmp_path: Path) -> None:
    # Rule 0 can only fire after rule 1 has redrawn the hair: a single pass would leave Bald + Black.
    d = write_spec(
        tmp_path,
        {
            "genders.txt": "Male,0.5\nFemale,0.5\n",
            "hair.txt": "Bald,0.5\nShort,0.5\n",
            "color.txt": "Black,0.5\nRed,0.5\n",
        },
        clashes=[
            clash("hair.txt", ["Bald"], "color.txt", ["Black"]),
            clash("genders.txt", ["Female"], "hair.txt", ["Short"]),
        ],
    )
    spec = load_attribute_spec(d)
    samples = draw(spec, 2_000, seed=17)
    assert all(not violations(spec, s) for s in samples)
    women = [s for s in samples if s["genders"] == "Female"]
    assert women and all(s["hair"] == "Bald" and s["color"] == "Red" for s in women)
    assert expected_frequencies(spec)["color"] == pytest.approx({"Black": 0.125, "Red": 0.875})


def test_cyclic_rules_terminate_and_match_exact(tmp_path: Path) -> None:
    # a=x pushes b off x; b=y then pushes a off x; a=y then pushes b off y, leaving b nothing: b is dropped.
    d = write_spec(
        tmp_path,
        {"a.txt": "x,0.5\ny,0.5\n", "b.txt": "x,0.5\ny,0.5\n"},
        clashes=[
            clash("a.txt", ["x"], "b.txt", ["x"]),
            clash("b.txt", ["y"], "a.txt", ["x"]),
            clash("a.txt", ["y"], "b.txt", ["y"]),
        ],
    )
    spec = load_attribute_spec(d)
    samples = draw(spec, 4_000, seed=3)
    assert all(not violations(spec, s) for s in samples)
    exact = expected_frequencies(spec)
    combos = Counter((s.get("a"), s.get("b")) for s in samples)
    for name in ("a", "b"):
        observed = Counter(s.get(name) for s in samples)
        probs = [exact[name]["x"], exact[name]["y"], 1 - exact[name]["x"] - exact[name]["y"]]
        cells = [(observed["x"], probs[0]), (observed["y"], probs[1]), (observed[None], probs[2])]
        kept = [(o, p) for o, p in cells if p > 1e-12]
        assert all(o == 0 for o, p in cells if p <= 1e-12), (name, combos)
        if len(kept) > 1:
            assert_fits([o for o, _ in kept], [p / sum(p for _, p in kept) for _, p in kept], name)
    # Worked by hand: every start ends with a=y (and b=x, or b dropped when it started at x,x).
    assert exact["a"] == pytest.approx({"x": 0.0, "y": 1.0})
    assert exact["b"] == pytest.approx({"x": 0.75, "y": 0.0})
    assert set(combos) == {("y", "x"), ("y", None)}


# ------------------------------------------------------------------------------------- determinism


def test_same_seed_same_attributes() -> None:
    spec = load_attribute_spec(SHIPPED)
    assert draw(spec, 500, seed=42) == draw(spec, 500, seed=42)
    assert draw(spec, 500, seed=42) != draw(spec, 500, seed=43)


def test_only_the_passed_rng_is_used() -> None:
    spec = load_attribute_spec(SHIPPED)
    random.seed(1)
    np.random.seed(1)
    py_state, np_state = random.getstate(), np.random.get_state()
    draw(spec, 100, seed=0)
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state, strict=True))


def test_usage_change_does_not_shift_other_classes(tmp_path: Path) -> None:
    # Each class consumes a fixed number of uniforms, so editing one usage leaves other classes' draws alone.
    base = load_attribute_spec(write_spec(tmp_path / "a", SMALL, usage=SMALL_USAGE))
    edited = load_attribute_spec(write_spec(tmp_path / "b", SMALL, usage={**SMALL_USAGE, "color.txt": 0.0}))
    for x, y in zip(draw(base, 300, seed=8), draw(edited, 300, seed=8), strict=True):
        assert "color" not in y
        assert {k: v for k, v in x.items() if k != "color"} == y


def test_usage_zero_and_one_are_exact(small_spec: AttributeSpec) -> None:
    samples = draw(small_spec, 2_000, seed=11)
    assert all("color" in s and "shape" not in s for s in samples)
    assert all(s.get("size") != "XXL" for s in samples)


# ---------------------------------------------------------------------------- expected frequencies


def test_expected_frequencies_without_clashes(small_spec: AttributeSpec) -> None:
    exact = expected_frequencies(small_spec)
    assert exact["color"] == pytest.approx({"Red": 0.1, "Green": 0.2, "Blue": 0.3, "Black": 0.4})
    assert exact["size"] == pytest.approx({"S": 0.15, "M": 0.3, "L": 0.15, "XXL": 0.0})
    assert exact["single"] == pytest.approx({"Only": 0.3})
    assert exact["shape"] == {"Round": 0.0, "Square": 0.0}


def test_expected_frequencies_shipped_exact_matches_sampler() -> None:
    spec = load_attribute_spec(SHIPPED)
    exact = expected_frequencies(spec)
    assert exact["genders"] == pytest.approx({"Male": 0.49, "Female": 0.49, "Non-binary": 0.02})
    assert sum(exact["facial_hair"].values()) == pytest.approx(0.7 * 0.51)  # dropped for every woman
    assert exact["hair_styles"]["Bald"] == pytest.approx(0.7 * 0.08 * 0.51)
    # Men lose Hijab; women redraw Kippah among Hijab/Turban at 0.334:0.333.
    hijab = 0.01 * (0.51 * 0.334 + 0.49 * 0.333 * 0.334 / 0.667)
    assert exact["headwear"]["Hijab"] == pytest.approx(hijab)
    n = 20_000
    counts: dict[str, Counter[str]] = {c.name: Counter() for c in spec.classes}
    for s in draw(spec, n, seed=2024):
        for name, value in s.items():
            counts[name][value] += 1
    # Per class: a chi-square over its values plus the "not described" cell. Impossible cells must be
    # empty; rare cells are pooled (and a still-rare pool joins the rarest common cell) so that every
    # expected count is at least 5, as the chi-square approximation needs.
    for cls in spec.classes:
        cells = [(counts[cls.name][v], exact[cls.name][v]) for v in cls.values]
        cells.append((n - sum(counts[cls.name].values()), max(0.0, 1.0 - sum(exact[cls.name].values()))))
        assert all(o == 0 for o, p in cells if p < 1e-12), cls.name
        cells = sorted((c for c in cells if p_of(c) >= 1e-12), key=p_of)
        rare = [c for c in cells if n * p_of(c) < 5]
        common = [c for c in cells if n * p_of(c) >= 5]
        if rare:
            pool = (sum(o for o, _ in rare), sum(p for _, p in rare))
            if n * pool[1] < 5 and common:
                o, p = common.pop(0)
                pool = (pool[0] + o, pool[1] + p)
            common.append(pool)
        if len(common) > 1:
            assert_fits([o for o, _ in common], [p for _, p in common], cls.name)


def p_of(cell: tuple[int, float]) -> float:
    return cell[1]


def test_expected_frequencies_monte_carlo_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_attribute_spec(SHIPPED)
    exact = expected_frequencies(spec)
    monkeypatch.setattr(sampling_module, "_EXACT_STATE_LIMIT", 0)
    estimate = expected_frequencies(spec, n_draws=20_000, seed=1)
    assert estimate == expected_frequencies(spec, n_draws=20_000, seed=1)  # seeded: reproducible
    for name, per in exact.items():
        for value, p in per.items():
            # 5 standard errors of a binomial proportion, plus a floor for p close to 0.
            tolerance = 5 * (p * (1 - p) / 20_000) ** 0.5 + 1e-3
            assert abs(estimate[name][value] - p) < tolerance, (name, value)
