r"""The order/chaos phase diagram of an activation over (C_W, C_b).

For every grid point the stable fixed point K* of K' = C_b + C_W <s^2>_K is found by iterating the map
(from K = 1, up to 3000 layers) with <s^2>_K and <s'^2>_K interpolated in log K from a table of float64
quadratures (K in 1e-8 .. 1e8); the colour is log chi_perp(K*) = log(C_W <s'^2>_K*): ordered (< 0) or
chaotic (> 0); the critical line of :func:`.critical.critical_line` is drawn over it.  Where K runs off
the table (ReLU-like activations with C_W above critical) the point is marked as diverging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..docstrings import FIGURE, filled
from .critical import critical_line
from .moments import Moments


@dataclass
class PhaseDiagram:
    """``log_chi_perp``, ``K_star`` and the ``diverging`` mask on the grid (len(C_W), len(C_b)); ``line``: the
    critical line ``(C_W, C_b, K*)`` of :func:`~ntk_theory.criticality.critical_line`.

    Made by :func:`phase_diagram`.

    Parameters
    ----------
    activation : str
        The activation's name.
    C_W, C_b : numpy.ndarray
        The grid's axes.
    K_star, log_chi_perp : numpy.ndarray
        (len(C_W), len(C_b)): the variance reached and log chi_perp there.
    diverging : numpy.ndarray
        (len(C_W), len(C_b)) bool: the variance grew past 1e8 (no finite fixed point).
    line : tuple of numpy.ndarray
        The critical line ``(C_W, C_b, K*)``.

    Examples
    --------
    >>> import numpy as np
    >>> from ntk_theory.criticality import phase_diagram
    >>> pd = phase_diagram("relu", C_W=np.array([1.0, 3.0]), C_b=np.array([0.0, 0.5]), iterations=300)
    >>> pd.diverging.tolist()           # ReLU at C_W > 2: K grows by C_W / 2 per layer, without bound
    [[False, False], [True, True]]
    """

    activation: str
    C_W: np.ndarray
    C_b: np.ndarray
    K_star: np.ndarray
    log_chi_perp: np.ndarray
    diverging: np.ndarray
    line: tuple

    def __repr__(self) -> str:
        frac = float(np.mean(self.log_chi_perp[~self.diverging] > 0)) if (~self.diverging).any() else float("nan")
        return (f"PhaseDiagram({self.activation}: {self.C_W.size} x {self.C_b.size} grid, chaotic fraction {frac:.2f}, "
                f"{int(self.diverging.sum())} diverging)")

    @filled(figure=FIGURE)
    def plot(self, path=None, ax=None):
        """Draw (matplotlib, the optional ``plot`` extra) and save to ``path`` if given; returns the figure.

        Parameters
        ----------
        path : str, path or None, default None
            Where to save a PNG (None: not saved).
        ax : matplotlib.axes.Axes or None, default None
            The axes to draw into (None: a new figure).

        %(figure)s

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.criticality import phase_diagram
        >>> pd = phase_diagram("relu", C_W=np.array([1.0, 3.0]), C_b=np.array([0.0, 0.5]), iterations=300)
        >>> try:
        ...     fig = pd.plot()
        ...     labels = fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
        ... except ImportError:                  # without the plot extra
        ...     labels = ("$C_b$", "$C_W$")
        >>> labels
        ('$C_b$', '$C_W$')
        """
        try:
            import matplotlib

            if ax is None and path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # pragma: no cover
            raise ImportError("the phase diagram needs matplotlib: pip install 'ntk-theory[plot]'") from None
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 4.2))
        data = np.ma.masked_where(self.diverging, self.log_chi_perp)
        lim = float(np.nanmax(np.abs(data))) if data.count() else 1.0
        mesh = ax.pcolormesh(self.C_b, self.C_W, data, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
        fig.colorbar(mesh, ax=ax, label=r"$\log \chi_\perp(K^*)$  (<0 ordered, >0 chaotic)")
        if self.diverging.any():
            ax.contourf(self.C_b, self.C_W, self.diverging.astype(float), levels=[0.5, 1.5], colors="0.6")
        cw, cb, _ = self.line
        ax.plot(cb, cw, "k-", lw=2, label=r"critical line $\chi_\perp = 1$")
        ax.set_xlim(self.C_b[0], self.C_b[-1])
        ax.set_ylim(self.C_W[0], self.C_W[-1])
        ax.set_xlabel("$C_b$")
        ax.set_ylabel("$C_W$")
        ax.set_title(f"{self.activation}: order / chaos")
        ax.legend(loc="lower right", fontsize=8)
        if path is not None:
            fig.savefig(path, dpi=120, bbox_inches="tight")
        return fig


def phase_diagram(act, *, C_W=np.linspace(0.05, 4.0, 80), C_b=np.linspace(0.0, 1.0, 41), iterations: int = 3000) -> PhaseDiagram:
    """Order and chaos on a (C_W, C_b) grid: K* by iterating K -> C_b + C_W <s^2>_K from K = 1, then
    log chi_perp = log(C_W <s'^2>_K*).

    Parameters
    ----------
    act : str, sympy.Expr, Activation or Moments
        A continuous activation.
    C_W, C_b : array_like
        The grid's axes (keyword-only).
    iterations : int, default 3000
        Iterations of the variance map.

    Returns
    -------
    PhaseDiagram
        K*, log chi_perp and the diverging mask on the grid, and the critical line.

    Raises
    ------
    ValueError
        If the activation is unknown or discontinuous.

    Notes
    -----
    <s^2> and <s'^2> are tabulated at 161 variances from 1e-8 to 1e8 and interpolated linearly in
    log-log (exact for power laws such as ReLU's); K is clipped to that range and entries reaching its top
    are marked diverging.  Where the map converges slowly (chi_parallel near 1) ``iterations`` bounds the
    accuracy of K*.

    Examples
    --------
    ReLU: K* = C_b / (1 - C_W / 2) and chi_perp = C_W / 2 for C_W < 2:

    >>> import numpy as np
    >>> from ntk_theory.criticality import phase_diagram
    >>> C_W, C_b = np.array([0.5, 1.0, 1.5]), np.array([0.1, 0.5])
    >>> pd = phase_diagram("relu", C_W=C_W, C_b=C_b, iterations=300)
    >>> bool(np.allclose(pd.K_star, C_b[None, :] / (1 - C_W[:, None] / 2), rtol=1e-12))
    True
    >>> bool(np.allclose(pd.log_chi_perp, np.log(C_W / 2)[:, None], rtol=1e-12))
    True
    """
    m = act if isinstance(act, Moments) else Moments(act)
    table_K = np.geomspace(1e-8, 1e8, 161)
    tab = np.array([m.f64(k)[:2] for k in table_K])
    lk = np.log(table_K)
    with np.errstate(divide="ignore"):
        ls2, lds2 = np.log(np.maximum(tab[:, 0], 1e-300)), np.log(np.maximum(tab[:, 1], 1e-300))
    s2 = lambda K: np.exp(np.interp(np.log(K), lk, ls2))
    ds2 = lambda K: np.exp(np.interp(np.log(K), lk, lds2))
    CB, CW = np.meshgrid(np.asarray(C_b, float), np.asarray(C_W, float))
    K = np.ones_like(CB)
    for _ in range(iterations):
        K = np.clip(CB + CW * s2(K), table_K[0], table_K[-1])
    diverging = K >= table_K[-1] * 0.999
    chi = CW * ds2(K)
    with np.errstate(divide="ignore"):
        log_chi = np.log(chi)
    line = critical_line(m, np.geomspace(1e-3, 1e3, 61))
    return PhaseDiagram(m.activation.name, C_W=np.asarray(C_W, float), C_b=np.asarray(C_b, float), K_star=K,
                        log_chi_perp=log_chi, diverging=diverging, line=line)
