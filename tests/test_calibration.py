"""Score statistics with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from synid_assets.core.quality.calibration import attribute_sampler, eer, impostor_thresholds


def test_impostor_thresholds_known_answers():
    scores = np.arange(1, 10001) / 10000.0  # 0.0001 .. 1.0
    th = impostor_thresholds(scores, (1e-3, 1e-4))
    # FMR 1e-3 of 10000 scores: 10 may lie above t -> t is the 11th largest.
    assert th[1e-3] == pytest.approx(0.9990)
    assert th[1e-4] == pytest.approx(0.9999)
    for fmr, t in th.items():
        assert np.mean(scores > t) <= fmr
        # the smallest such t: one score lower would break it
        lower = np.sort(scores)[np.searchsorted(np.sort(scores), t) - 1]
        assert np.mean(scores > lower) > fmr


def test_impostor_thresholds_small_sample_uses_max():
    assert impostor_thresholds(np.array([0.1, 0.5, 0.3]), (1e-3,))[1e-3] == 0.5


def test_eer_separable_and_overlapping():
    e, t = eer(np.array([0.8, 0.9, 0.95]), np.array([0.1, 0.2, 0.3]))
    assert e == 0.0 and 0.3 <= t < 0.8
    g = np.array([0.4, 0.6, 0.7, 0.8, 0.9])
    i = np.array([0.1, 0.2, 0.3, 0.5, 0.65])
    e, t = eer(g, i)
    assert e == pytest.approx(0.2)


def test_eer_gaussians():
    rng = np.random.default_rng(0)
    g = rng.normal(1.0, 1.0, 20000)
    i = rng.normal(-1.0, 1.0, 20000)
    e, t = eer(g, i)
    assert e == pytest.approx(0.1587, abs=0.01) and abs(t) < 0.05


def test_sampler_is_the_spec_sampler_and_deterministic():
    sample = attribute_sampler()
    a = sample(np.random.default_rng(3))
    assert a == sample(np.random.default_rng(3))
    assert "genders" in a and "origins" in a and "ages" in a  # inclusion probability 1.0
