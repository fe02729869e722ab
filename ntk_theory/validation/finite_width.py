r"""Validation of the finite-width predictions against the reference network's Monte Carlo.

:func:`check_finite_width` computes the predictions of :mod:`ntk_theory.finite_width` (the recursions) and,
independently, the Monte Carlo fits of :func:`ntk_theory.validation.fits.fit_inverse_width` (the
variance-reduced estimators of :mod:`ntk_theory.montecarlo.finite_width` on finite networks at several
widths, fitted in 1/n with the infinite-width K and Theta fixed to the recursion), and compares every
distinct entry of K1 (``nngp_correction``), Theta1 (``ntk_correction``) and the readout tensors V, A, B, D,
F: z = (fit - prediction) / SE; the check passes when every entry has |z| < ``sigmas``
(:mod:`ntk_theory.validation.verdict`: an entry whose standard error is 0 or not finite fails).
:meth:`FiniteWidthCheck.plot` draws each compared entry's per-width Monte Carlo values against 1/n with
the fit and the prediction (for K1 and Theta1 the scaled deviations n (E[z z] - K) and n (E[Theta] - Theta),
whose fit K1 + K2/n reaches K1 at 1/n = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..docstrings import filled
from ..finite_width import finite_width
from ..montecarlo import distinct_entries, symmetry_of
from .fits import fit_inverse_width
from .plot import PLOT_SECTIONS, Panel, plot_panels
from .verdict import CHECK_PARAMETERS, outcome, passes, z_score

#: Monte Carlo name -> prediction attribute
COMPARED = {"K1": "nngp_correction", "ntk1": "ntk_correction", "V": "V", "A": "A", "B": "B", "D": "D", "F": "F"}


@dataclass
class FiniteWidthCheck:
    """The result of :func:`check_finite_width`: one row per compared entry and the fit behind them.

    Parameters
    ----------
    rows : list of tuple
        ``(name, entry, prediction, estimate, stderr, z)``, name a key of :data:`COMPARED`.
    sigmas : float
        The verdict's threshold.
    info : dict
        The set-up (description, samples, widths, seconds).
    fit : WidthFit
        The per-width runs and fitted coefficients.

    Examples
    --------
    See :func:`check_finite_width`.
    """

    rows: list  # (name, entry, prediction, estimate, stderr, z)
    sigmas: float
    info: dict = field(default_factory=dict)
    fit: object = field(default=None, repr=False)  # the WidthFit (per-width runs and fitted coefficients)

    @property
    def passed(self) -> bool:
        """There are rows and every one has ``|z| < sigmas``."""
        return bool(self.rows) and all(passes(r[5], self.sigmas) for r in self.rows)

    @property
    def max_abs_z(self) -> float:
        """The largest |z| over the compared entries; NaN if an entry has no z-score."""
        return max((abs(r[5]) if np.isfinite(r[5]) else np.inf for r in self.rows), default=np.nan)

    def table(self, max_rows: int | None = None) -> str:
        """Every compared entry (``max_rows``: at most that many rows per quantity, the failing ones and the
        largest |z| first, and a line counting the rest, which were compared all the same).

        Parameters
        ----------
        max_rows : int, optional
            Rows per quantity (default: all).

        Returns
        -------
        str

        Examples
        --------
        See :func:`check_finite_width`.
        """
        i = self.info
        counts = {}
        for r in self.rows:
            counts[r[0]] = counts.get(r[0], 0) + 1
        lines = [f"finite-width check: {i.get('description')}; Monte Carlo {i.get('samples')} networks at each "
                 f"width {i.get('widths')}, 1/n fits ({i.get('seconds', 0):.0f} s); every distinct entry compared: "
                 + ", ".join(f"{name} {k}" for name, k in counts.items()),
                 f"{'quantity':<16}{'entry':>9}{'prediction':>14}{'Monte Carlo fit':>26}{'z':>8}  result"]
        for name, count in counts.items():
            rows = [r for r in self.rows if r[0] == name]
            if max_rows is not None and count > max_rows:
                shown = sorted(rows, key=lambda r: -(abs(r[5]) if np.isfinite(r[5]) else np.inf))[:max_rows]
                rows = [r for r in rows if r in shown]
            for _, idx, p, v, se, z in rows:
                lines.append(f"{name:<16}{','.join(map(str, idx)):>9}{p:>14.6g}{v:>16.6g} ± {se:<8.2g}{z:>8.2f}  "
                             + outcome(z, self.sigmas, v, p, se))
            if len(rows) < count:
                lines.append(f"{'':<16}... {count - len(rows)} more {name} entries compared, with smaller |z|")
        failed = sum(not passes(r[5], self.sigmas) for r in self.rows)
        lines.append(f"{len(self.rows)} entries, max |z| = {self.max_abs_z:.2f}: "
                     + (f"all within {self.sigmas} standard errors: PASS" if self.passed
                        else f"{failed} FAIL"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    @filled(plot=PLOT_SECTIONS)
    def plot(self, path=None):
        """One panel per compared entry (module docstring); matplotlib (the ``plot`` extra) needed;
        saved to ``path`` if given; returns the figure.

        %(plot)s
        With matplotlib (the ``plot`` extra), after :func:`check_finite_width`: ``report.plot("check.png")``.
        """
        fit = self.fit
        x = 1.0 / np.asarray(fit.widths, dtype=float)
        panels = []
        for name, idx, p, v, se, z in self.rows:
            label = f"{name} {','.join(map(str, idx))}"
            if name in ("K1", "ntk1"):
                base = name[:-1]
                inf = float(fit[base].value[idx])
                y = np.array([(r[base].value[idx] - inf) / xi for r, xi in zip(fit.runs, x)])
                e = np.array([r[base].stderr[idx] / xi for r, xi in zip(fit.runs, x)])
                c2 = float(fit[base + "2"].value[idx]) if base + "2" in fit.estimates else 0.0
                label += f"  n (E - {'K' if base == 'K' else 'Theta'})"
                f = (lambda xx, v=v, c2=c2: v + c2 * xx)
            else:
                y = np.array([r[name].value[idx] for r in fit.runs])
                e = np.array([r[name].stderr[idx] for r in fit.runs])
                slope = float(fit[name + "_slope"].value[idx]) if name + "_slope" in fit.estimates else 0.0
                f = (lambda xx, v=v, slope=slope: v + slope * xx)
            panels.append(Panel(label, x, y, e, f, p, v, se, z))
        return plot_panels(panels, self.table().splitlines()[0], path, columns=4)


@filled(**CHECK_PARAMETERS)
def check_finite_width(activation, X, depth: int, *, C_W=2.0, C_b=0.0, param: str = "ntk",
                       widths=(32, 64, 128, 256), samples: int = 20_000, seed: int = 0, sigmas: float = 4.0,
                       progress: bool | None = None) -> FiniteWidthCheck:
    """Predictions vs Monte Carlo 1/n fits for every quantity (see the module docstring).

    ``progress``: True, False or None (bars when standard error is a terminal).

    Parameters
    ----------
    activation : str
        A library activation name or an expression in x.
    X : array_like
        Inputs (N, n_0).
    depth : int
        Hidden layers L.
    %(variances)s
    widths : sequence of int, default (32, 64, 128, 256)
        The hidden widths of the Monte Carlo (at least the number of fitted coefficients, 2).
    samples : int, default 20000
        Networks per width.
    %(run)s

    Returns
    -------
    FiniteWidthCheck

    Examples
    --------
    One ReLU hidden layer at C_W = 2, C_b = 0 and x = (1, 0): the first layer is exactly Gaussian, z1 ~ N(0, 1),
    so K1 = 0 and the readout vertex is V = C_W^2 (E[relu^4] - E[relu^2]^2) = 4 (3/2 - 1/4) = 5:

    >>> import numpy as np
    >>> report = check_finite_width("relu", np.array([[1.0, 0.0]]), 1, widths=(8, 16, 32), samples=2000,
    ...                             progress=False)
    >>> {name: p for name, _, p, *_ in report.rows if name in ("K1", "V")}
    {'K1': 0.0, 'V': 5.0}
    >>> report.passed, bool(report.max_abs_z < 4)
    (True, True)
    """
    import time

    t0 = time.perf_counter()
    pred = finite_width(activation, X, depth, C_W=C_W, C_b=C_b, param=param, progress=progress)
    fit = fit_inverse_width(activation, X, depth, widths, C_W=C_W, C_b=C_b, param=param, samples=samples, seed=seed,
                            infinite=(pred.nngp, pred.ntk), progress=progress)
    rows = []
    for name, attr in COMPARED.items():
        est = fit[name]
        P = getattr(pred, attr)
        for idx in distinct_entries(est.value.shape, symmetry_of(name)):
            v, se, p = float(est.value[idx]), float(est.stderr[idx]), float(P[idx])
            rows.append((name, idx, p, v, se, z_score(v, p, se)))
    info = {"description": pred.description, "samples": samples, "widths": list(widths),
            "seconds": time.perf_counter() - t0}
    return FiniteWidthCheck(rows, sigmas, info, fit)
