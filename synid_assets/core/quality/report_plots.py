"""The quality report's plots as PNG bytes (matplotlib, Agg backend, no timestamp in the file)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from synid_assets.core.quality.demographics import demographics_plot
from synid_assets.core.quality.det import det_plot


def plot_png(draw: Callable[[Any], None], panels: int = 1, size: tuple[float, float] = (5.0, 3.0)) -> bytes:
    """One figure of `panels` axes side by side, drawn by `draw(ax)` (or `draw(axes)` for several)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=size, dpi=80, sharey=panels > 1)
    draw(axes)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def score_plot(scores: dict[str, np.ndarray], threshold: float) -> bytes:
    def draw(ax) -> None:
        for label, values in scores.items():
            if values.size:
                ax.hist(values, bins=60, density=True, histtype="step", label=f"{label} (n={values.size})")
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
        ax.set_xlabel("cosine similarity")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)

    return plot_png(draw)


def attribute_plot(rows: list[dict[str, Any]]) -> bytes:
    classes = sorted({r["attribute"] for r in rows})

    def draw(ax) -> None:
        gaps = [
            max((abs(r["accepted_share"] - r["expected"]) for r in rows if r["attribute"] == c), default=0.0)
            for c in classes
        ]
        ax.barh(classes, gaps)
        ax.set_xlabel("largest |accepted share - spec probability|")
        ax.tick_params(labelsize=7)

    return plot_png(draw)


def det_png(rows: list[dict[str, Any]], threshold: float, genuine: int, impostor: int) -> bytes:
    return plot_png(lambda ax: det_plot(ax, rows, threshold, genuine, impostor), size=(5.0, 4.0))


def demographics_png(rows: list[dict[str, Any]]) -> bytes:
    return plot_png(lambda axes: demographics_plot(axes, rows), panels=3, size=(9.0, 1.0 + 0.16 * len(rows)))
