"""Plots of compared entries: Monte Carlo estimates against 1/n, their fit and the prediction (the ``plot``
extra, matplotlib)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Panel", "plot_panels", "require_matplotlib"]


@dataclass
class Panel:
    """One compared entry for :func:`plot_panels`: Monte Carlo ``y`` +- ``se`` at ``x`` = 1/n, the fit
    as a function of x, the prediction, the fit's value at x = 0 with its standard error, and z."""

    label: str
    x: np.ndarray
    y: np.ndarray
    se: np.ndarray
    fit: object
    prediction: float
    intercept: float
    intercept_se: float
    z: float


def require_matplotlib():
    """matplotlib.pyplot with a non-interactive backend, or ImportError with the install line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'ntk-theory[plot]'") from None
    return plt


def plot_panels(panels, title: str, path=None, columns: int = 3):
    """A grid of :class:`Panel` plots (see :meth:`CheckReport.plot`); saved to ``path`` if given."""
    plt = require_matplotlib()
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, pn in zip(axes.ravel(), panels):
        xs = np.linspace(0.0, 1.05 * float(np.max(pn.x)), 100)
        ax.errorbar(pn.x, pn.y, yerr=pn.se, fmt="o", color="C0", ms=4, capsize=3, label="Monte Carlo ± SE")
        ax.plot(xs, [pn.fit(x) for x in xs], "-", color="C1", label="1/n fit")
        ax.errorbar([0.0], [pn.intercept], yerr=[pn.intercept_se], fmt="s", color="C1", ms=4, capsize=3)
        ax.axhline(pn.prediction, color="k", ls="--", lw=1, label="prediction")
        ax.set_title(f"{pn.label}   z = {pn.z:.2f}", fontsize=9)
        ax.set_xlabel("1/n")
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
