r"""Validation of a residual MLP's finite-width predictions against the Monte Carlo of finite residual networks.

:func:`check_residual_finite_width` reads a residual description (:func:`ntk_theory.finite_width.description.recursion_for`)
and, for each input x_a on its own (G0 = x_a . x_a / n_0: the one-input statistics, the diagonal a = b = c = d
of the several-input tensors; inputs of equal G0 have equal statistics and share the entry of the first),
compares the readout's

    K1 (``nngp_correction``), Theta1 (``ntk_correction``), A, B, D, F

of :meth:`ntk_theory.finite_width.residual.ResidualRecursion.one_input`, and every distinct entry of the readout's
four-point vertex V_(ab)(cd) and the off-diagonal K1_ab (a < b) at the (distinct) inputs of
:meth:`~ntk_theory.finite_width.residual.ResidualRecursion.tensors` against
:func:`ntk_theory.montecarlo.residual.sample_residual_tensors`, and the entries of A, B, D, F with more than one
input of :meth:`~ntk_theory.finite_width.residual.ResidualRecursion.ntk_tensors` (and, for smooth activations, the
off-diagonal Theta1_ab of :meth:`~ntk_theory.finite_width.residual.ResidualRecursion.ntk_correction`, for smooth and
piecewise-linear activations) against
:func:`ntk_theory.montecarlo.residual.sample_residual_ntk_tensors` (dense weights, Jacobians at every input), with 1/n fits
(:func:`.fits.weighted_fit`) of the Monte Carlo of finite residual networks at several widths:
:func:`ntk_theory.montecarlo.residual.sample_residual` (projected weights) for K,
:func:`ntk_theory.montecarlo.residual.sample_residual_ntk` (dense weights, backpropagated Jacobian rows) for
Theta, A, B, D, F.  V, A, B, D, F are fitted as c0 + c1/n (c0 compared); K and Theta as K + K1/n + K2/n^2
with the infinite-width K, Theta fixed to the recursion's (K1, Theta1 compared).  z = (fit - prediction) / SE;
the check passes when every entry has |z| < ``sigmas`` (:mod:`.verdict`).  The error model: the fits'
standard errors (jackknife over batches, propagated through the weighted least squares); the recursion is
the leading order in 1/n, so the fits' higher powers absorb the O(1/n^2) terms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import _checks
from ..docstrings import filled
from ..finite_width.description import description_of, recursion_for
from ..finite_width.residual import NotDerived, ResidualRecursion
from ..montecarlo import distinct_entries, symmetry_of
from ..montecarlo.residual import (sample_residual, sample_residual_ntk, sample_residual_ntk_tensors,
                                  sample_residual_tensors)
from .finite_width import FiniteWidthCheck
from .fits import weighted_fit
from .plot import PLOT_SECTIONS, Panel, plot_panels
from .verdict import CHECK_PARAMETERS, z_score

#: compared name -> (ResidualState field, Monte Carlo run ("nngp" or "ntk"), estimate, fitted powers), per input;
#: the vertex V is compared as the several-input tensor V_(ab)(cd) (every distinct entry)
RESIDUAL_COMPARED = {
    "K1": ("K1", "nngp", "K", (1, 2)),
    "ntk1": ("Th1", "ntk", "Th", (1, 2)),
    "A": ("A", "ntk", "A", (0, 1)),
    "B": ("B", "ntk", "B", (0, 1)),
    "D": ("D", "ntk", "D", (0, 1)),
    "F": ("F", "ntk", "F", (0, 1)),
}


@dataclass
class ResidualFiniteWidthCheck(FiniteWidthCheck):
    """Rows ``(name, entry, prediction, estimate, stderr, z)`` as :class:`.finite_width.FiniteWidthCheck` (entry
    (a, a) or (a, a, a, a) for input a); ``panels`` the per-width data of each row for :meth:`plot`.

    Parameters
    ----------
    rows, sigmas, info, fit
        As :class:`~ntk_theory.validation.FiniteWidthCheck`.
    panels : list of Panel
        One per row.

    Examples
    --------
    See :func:`check_residual_finite_width`.
    """

    panels: list = field(default_factory=list, repr=False)

    @filled(plot=PLOT_SECTIONS)
    def plot(self, path=None):
        """One panel per compared entry (Monte Carlo per width against 1/n, the fit, the prediction);
        matplotlib (the ``plot`` extra) needed; saved to ``path`` if given; returns the figure.

        %(plot)s
        With matplotlib (the ``plot`` extra), after :func:`check_residual_finite_width`: ``report.plot("check.png")``.
        """
        return plot_panels(self.panels, self.table().splitlines()[0], path, columns=4)


def _residual_recursion(network) -> ResidualRecursion:
    layer = description_of(network)
    if layer is None:
        raise ValueError(f"expected a network description (a stax network or a layer); got {type(network).__name__}")
    rec = recursion_for(layer)
    if not isinstance(rec, ResidualRecursion):
        raise NotDerived(f"{layer!r} is a plain MLP: use check_finite_width (its several-input tensors)")
    return rec


@filled(**CHECK_PARAMETERS)
def check_residual_finite_width(network, X, *, widths=(16, 32, 64, 128), samples: int = 20_000, ntk_samples=None,
                                seed: int = 0, sigmas: float = 4.0, progress: bool | None = None
                                ) -> ResidualFiniteWidthCheck:
    """Predictions vs Monte Carlo 1/n fits of a residual MLP's readout statistics at each input of X (N, d)
    on its own (module docstring).  ``samples`` networks per width for K and V; ``ntk_samples`` (default
    ``samples`` (16 / n)^(1/2) at width n, the dense Jacobians cost n^2 per layer) for the NTK quantities.

    Parameters
    ----------
    network : Layer or Network
        A residual MLP description (:func:`ntk_theory.finite_width.description.recursion_for`).
    X : array_like
        Inputs (N, d).
    widths : sequence of int, default (16, 32, 64, 128)
        At least three distinct hidden widths.
    samples : int, default 20000
        Networks per width for K and V.
    ntk_samples : int or sequence of int, optional
        Networks per width for the NTK quantities.
    %(run)s

    Returns
    -------
    ResidualFiniteWidthCheck

    Raises
    ------
    ValueError
        If the description is not a residual MLP, or fewer than three distinct widths are given.

    Examples
    --------
    One ReLU residual block at criticality; the 1/n fits of a few hundred networks per width agree with the
    recursion's K1, Theta1, A, B, D, F and V (its first run compiles the Monte Carlo's kernels, so it is
    not run as a doctest):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> block = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(),
    ...                     stax.serial(stax.Relu(), stax.Dense(8, W_std=2 ** 0.5))), stax.FanInSum())
    >>> net = stax.serial(stax.Dense(8), block, stax.Relu(), stax.Dense(1, W_std=2 ** 0.5))
    >>> report = check_residual_finite_width(net, np.array([[1.0, 0.0]]), widths=(4, 8, 16), samples=400,
    ...                                      progress=False)        # doctest: +SKIP
    >>> report.passed                                               # doctest: +SKIP
    True
    """
    rec = _residual_recursion(network)
    X = _checks.inputs(X, "X")
    widths = [_checks.positive_int("widths", n) for n in widths]
    if len(widths) < 3 or len(set(widths)) != len(widths):
        raise ValueError(f"widths must be at least 3 distinct widths (fits with two coefficients); got {widths}")
    samples = _checks.positive_int("samples", samples)
    t0 = time.perf_counter()
    L = rec.depth
    common = dict(C_W=list(rec.C_W), C_b=list(rec.C_b), xi=list(rec.xi), gamma=list(rec.gamma))
    x = 1.0 / np.asarray(widths, dtype=float)
    rows, panels = [], []
    G0s = [float(xa @ xa) / X.shape[1] for xa in X]
    first = {G0: a for a, G0 in reversed(list(enumerate(G0s)))}  # inputs of equal x.x / n0 share one entry
    for G0, a in sorted(first.items(), key=lambda item: item[1]):
        top = rec.one_input(G0=G0)[-1]
        runs = {
            "nngp": [sample_residual(rec.activation, G0, L, n, **common, samples=samples, seed=seed + 7919 * a + n,
                                     progress=progress) for n in widths],
            "ntk": [sample_residual_ntk(rec.activation, G0, L, n, **common, param=rec.param,
                                        samples=int(ntk_samples or max(2000, samples * (16 / n) ** 0.5)),
                                        seed=seed + 7919 * a + n + 1, progress=progress) for n in widths],
        }
        for name, (attr, kind, est, powers) in RESIDUAL_COMPARED.items():
            vals = np.array([r[est].value[L] for r in runs[kind]])
            errs = np.array([r[est].stderr[L] for r in runs[kind]])
            fixed = {"K": top.K, "Th": top.Th}.get(est) if powers[0] == 1 else None
            coef, se, _ = weighted_fit(widths, vals, errs, list(powers), fixed=fixed)
            p, v, s = float(getattr(top, attr)), float(coef[0]), float(se[0])
            z = z_score(v, p, s)
            idx = (a, a) if name in ("K1", "ntk1") else (a, a, a, a)
            rows.append((name, idx, p, v, s, z))
            if fixed is None:
                y, e, f = vals, errs, (lambda xx, c=coef: c[0] + c[1] * xx)
                label = f"{name} {a}"
            else:  # the scaled deviation n (E - K) -> K1 + K2 / n
                y, e, f = (vals - fixed) / x, errs / x, (lambda xx, c=coef: c[0] + c[1] * xx)
                label = f"{name} {a}  n (E - {'K' if est == 'K' else 'Theta'})"
            panels.append(Panel(label, x, y, e, f, p, v, s, z))
    # the readout's vertex V_(ab)(cd) at the distinct inputs: ResidualRecursion.vertex_tensors vs the 1/n fit of
    # sample_residual_tensors
    _, keep = np.unique(X, axis=0, return_index=True)
    keep = np.sort(keep)
    Xu = X[keep]
    top = rec.tensors(Xu, tol=1e-10)[-1]
    V = top.V
    runs = [sample_residual_tensors(rec.activation, Xu, L, n, **common, samples=samples, seed=seed + 104729 + n,
                                    progress=progress) for n in widths]
    # the readout's K1_ab at pairs of distinct inputs a < b (the diagonal is compared above): n (E[f_a f_b] - K_ab)
    # fitted as K1 + K2 / n
    vals = np.stack([r["K"].value[L] for r in runs])
    errs = np.stack([r["K"].stderr[L] for r in runs])
    coef, se, _ = weighted_fit(widths, vals, errs, [1, 2], fixed=top.K)
    for i, j in zip(*np.triu_indices(len(keep), 1)):
        p, v, s = float(top.K1[i, j]), float(coef[0][i, j]), float(se[0][i, j])
        z = z_score(v, p, s)
        entry = (int(keep[i]), int(keep[j]))
        rows.append(("K1", entry, p, v, s, z))
        panels.append(Panel(f"K1 {entry[0]},{entry[1]}  n (E - K)", x, (vals[:, i, j] - top.K[i, j]) / x,
                            errs[:, i, j] / x, (lambda xx, c=coef[:, i, j]: c[0] + c[1] * xx), p, v, s, z))
    vals = np.stack([r["V"].value[L] for r in runs])
    errs = np.stack([r["V"].stderr[L] for r in runs])
    coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
    for idx in distinct_entries(V.shape, symmetry_of("V")):
        p, v, s = float(V[idx]), float(coef[0][idx]), float(se[0][idx])
        z = z_score(v, p, s)
        entry = tuple(int(keep[i]) for i in idx)
        rows.append(("V", entry, p, v, s, z))
        panels.append(Panel(f"V {','.join(map(str, entry))}", x, vals[(slice(None), *idx)], errs[(slice(None), *idx)],
                            (lambda xx, c0=coef[0][idx], c1=coef[1][idx]: c0 + c1 * xx), p, v, s, z))
    # the readout's A, B, D, F at the distinct inputs, entries with more than one input (the diagonal is compared
    # above): ResidualRecursion.ntk_tensors vs c0 + c1/n fits of sample_residual_ntk_tensors
    if len(keep) > 1:
        Th = top.Th  # the readout's infinite-width NTK at the distinct inputs (rec.tensors above)
        top = rec.ntk_tensors(Xu, tol=1e-10)[-1]
        runs = [sample_residual_ntk_tensors(rec.activation, Xu, L, n, **common, param=rec.param,
                                            samples=int(ntk_samples or max(400, samples * (16 / n) ** 0.5)),
                                            seed=seed + 15485863 + n, progress=progress) for n in widths]
        for name in ("A", "B", "D", "F"):
            vals = np.stack([r[name].value[L] for r in runs])
            errs = np.stack([r[name].stderr[L] for r in runs])
            coef, se, _ = weighted_fit(widths, vals, errs, [0, 1])
            for idx in distinct_entries(top[name].shape, symmetry_of(name)):
                if len(set(idx)) == 1:
                    continue
                p, v, s = float(top[name][idx]), float(coef[0][idx]), float(se[0][idx])
                z = z_score(v, p, s)
                entry = tuple(int(keep[i]) for i in idx)
                rows.append((name, entry, p, v, s, z))
                panels.append(Panel(f"{name} {','.join(map(str, entry))}", x, vals[(slice(None), *idx)],
                                    errs[(slice(None), *idx)],
                                    (lambda xx, c0=coef[0][idx], c1=coef[1][idx]: c0 + c1 * xx), p, v, s, z))
        # Theta1_ab at pairs of distinct inputs a < b (smooth and piecewise-linear activations, where it is
        # derived): n (E[Theta_ab] - Theta_ab) fitted as Theta1 + Theta2 / n, as K1 above
        if rec.theta1_derived:
            th1 = rec.ntk_correction(Xu, tol=1e-10)[-1]
            vals = np.stack([r["Th"].value[L] for r in runs])
            errs = np.stack([r["Th"].stderr[L] for r in runs])
            coef, se, _ = weighted_fit(widths, vals, errs, [1, 2], fixed=Th)
            for i, j in zip(*np.triu_indices(len(keep), 1)):
                p, v, s = float(th1[i, j]), float(coef[0][i, j]), float(se[0][i, j])
                z = z_score(v, p, s)
                entry = (int(keep[i]), int(keep[j]))
                rows.append(("ntk1", entry, p, v, s, z))
                panels.append(Panel(f"ntk1 {entry[0]},{entry[1]}  n (E - Theta)", x, (vals[:, i, j] - Th[i, j]) / x,
                                    errs[:, i, j] / x, (lambda xx, c=coef[:, i, j]: c[0] + c[1] * xx), p, v, s, z))
    info = {"description": f"residual {rec!r}; K1, Theta1, A, B, D, F at each input on its own (G0 = "
                           f"{', '.join(f'{g:.4g}' for g in G0s)}; inputs of equal G0 share the entry of the first), "
                           "the vertex V_(ab)(cd), K1_ab and A, B, D, F at all inputs"
                           + (", Theta1_ab at pairs of inputs" if rec.theta1_derived else ""),
            "samples": samples, "widths": widths, "seconds": time.perf_counter() - t0}
    return ResidualFiniteWidthCheck(rows, sigmas, info, None, panels)
