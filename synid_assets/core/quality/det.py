"""The DET curve: FNMR against FMR over thresholds, from genuine and impostor similarity scores.

Conventions as in calibration.py: a pair matches when its similarity is strictly above the threshold, so
FMR(t) = share(impostor > t) and FNMR(t) = share(genuine <= t).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DET_POINTS = 120  # per score set; the union is at most twice this (plus the two ends)


def _log_ranks(n: int, points: int) -> np.ndarray:
    """Ranks 1..n spaced evenly on a log scale: as many thresholds at FMR 1e-4..1e-3 as at 0.1..1."""
    return np.unique(np.round(np.logspace(0.0, np.log10(n), points)).astype(np.int64).clip(1, n))


def det_curve(
    genuine: np.ndarray, impostor: np.ndarray, points: int = DET_POINTS, also_at: tuple[float, ...] = ()
) -> list[dict[str, Any]]:
    """Rows (threshold, fmr, fnmr, false_matches, false_non_matches) sorted by increasing threshold.

    Thresholds are observed scores: the k-th highest impostor score for log-spaced k (so the low-FMR end is
    sampled as finely as the rest on log axes), the k-th lowest genuine score likewise for the low-FNMR end,
    the lowest and highest score of all, and the thresholds in `also_at` (the operating one). FMR never rises
    and FNMR never falls along the rows.
    """
    g = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    i = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    if g.size == 0 or i.size == 0:
        return []
    thresholds = np.unique(np.concatenate([
        i[::-1][_log_ranks(i.size, points) - 1],
        g[_log_ranks(g.size, points) - 1],
        [min(g[0], i[0]), max(g[-1], i[-1]), *also_at],
    ]))
    false_non_matches = np.searchsorted(g, thresholds, side="right")  # genuine <= t
    false_matches = i.size - np.searchsorted(i, thresholds, side="right")  # impostor > t
    return [
        {
            "threshold": float(t),
            "fmr": float(fm / i.size),
            "fnmr": float(fnm / g.size),
            "false_matches": int(fm),
            "false_non_matches": int(fnm),
        }
        for t, fm, fnm in zip(thresholds, false_matches, false_non_matches, strict=True)
    ]


def det_plot(ax: Any, rows: list[dict[str, Any]], threshold: float, genuine: int, impostor: int) -> None:
    """FNMR against FMR on log axes; zero rates cannot be drawn on a log axis, so they sit at 1/(pairs) / 2."""
    if not rows:
        ax.text(0.5, 0.5, "no genuine or no impostor scores", ha="center", va="center", transform=ax.transAxes)
        return
    fmr_floor, fnmr_floor = 0.5 / max(impostor, 1), 0.5 / max(genuine, 1)
    fmr = np.array([max(r["fmr"], fmr_floor) for r in rows])
    fnmr = np.array([max(r["fnmr"], fnmr_floor) for r in rows])
    ax.loglog(fmr, fnmr, drawstyle="steps-post", label="DET")
    at = min(rows, key=lambda r: abs(r["threshold"] - threshold))
    ax.plot([max(at["fmr"], fmr_floor)], [max(at["fnmr"], fnmr_floor)], "ko",
            label=f"threshold {threshold:.3f}: FMR {at['fmr']:.2g}, FNMR {at['fnmr']:.2g}")
    ax.axvline(fmr_floor, color="0.7", linewidth=0.8, linestyle=":")
    ax.axhline(fnmr_floor, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xlabel(f"FMR ({impostor} impostor pairs)")
    ax.set_ylabel(f"FNMR ({genuine} genuine pairs)")
    ax.legend(fontsize=7)
