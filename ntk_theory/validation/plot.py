"""Plots of compared entries: Monte Carlo estimates against 1/n, their fit and the prediction (the ``plot``
extra, matplotlib)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..docstrings import FIGURE, filled

__all__ = ["Panel", "plot_panels", "require_matplotlib"]

#: the Parameters/Returns sections of every check report's ``plot(path)`` (written once, filled in there)
PLOT_SECTIONS = """Parameters
----------
path : str or path-like, optional
    Where to save the figure.

Returns
-------
matplotlib.figure.Figure

Examples
--------"""


@dataclass
class Panel:
    """One compared entry for :func:`plot_panels`: Monte Carlo ``y`` +- ``se`` at ``x`` = 1/n, the fit
    as a function of x, the prediction, the fit's value at x = 0 with its standard error, and z.

    Parameters
    ----------
    label : str
        The panel's title (quantity and entry).
    x, y, se : ndarray
        1/n per width, the Monte Carlo values and their standard errors.
    fit : callable
        The fitted curve as a function of x = 1/n.
    prediction, intercept, intercept_se, z : float
        The prediction, the fit at x = 0, its standard error, and the entry's z-score.

    Examples
    --------
    >>> import numpy as np
    >>> p = Panel("K 0,0", np.array([1 / 8, 1 / 16]), np.array([1.2, 1.1]), np.array([0.05, 0.05]),
    ...           lambda x: 1.0 + 1.6 * x, 1.0, 1.0, 0.1, 0.0)
    >>> bool(np.allclose(p.fit(p.x), p.y))
    True
    """

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
    """matplotlib.pyplot with a non-interactive backend, or ImportError with the install line.

    Returns
    -------
    module
        ``matplotlib.pyplot``, the backend set to Agg.

    Raises
    ------
    ImportError
        Without matplotlib, naming ``pip install 'ntk-theory[plot]'``.

    Examples
    --------
    >>> try:
    ...     ok = require_matplotlib().get_backend().lower() == "agg"
    ... except ImportError as exc:           # without the plot extra
    ...     ok = "ntk-theory[plot]" in str(exc)
    >>> ok
    True
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'ntk-theory[plot]'") from None
    return plt


@filled(figure=FIGURE)
def plot_panels(panels, title: str, path=None, columns: int = 3):
    """A grid of :class:`Panel` plots (see :meth:`ntk_theory.validation.CheckReport.plot`); saved to ``path`` if given.

    Parameters
    ----------
    panels : list of Panel
        One panel per compared entry.
    title : str
        The figure's title.
    path : str or path-like, optional
        Where to save the figure (PNG at 110 dpi).
    columns : int, default 3
        Panels per row.

    %(figure)s

    Examples
    --------
    >>> import numpy as np
    >>> p = Panel("K 0,0", np.array([1 / 8, 1 / 16]), np.array([1.2, 1.1]), np.array([0.05, 0.05]),
    ...           lambda x: 1.0 + 1.6 * x, 1.0, 1.0, 0.1, 0.0)
    >>> try:
    ...     ok = len([ax for ax in plot_panels([p, p], "two panels").axes if ax.get_visible()]) == 2
    ... except ImportError:                  # without the plot extra
    ...     ok = True
    >>> ok
    True
    """
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
