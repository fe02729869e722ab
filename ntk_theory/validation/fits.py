r"""Fits in 1/n of Monte Carlo estimates at several widths.

:func:`fit_inverse_width` runs :func:`ntk_theory.montecarlo.layer_statistics` at several widths and
:func:`fit_widths` fits, per entry and by weighted least squares with the Monte Carlo standard errors
(:func:`weighted_fit`), E[z z] = K + K1/n + K2/n^2, E[Theta] = Theta + Theta1/n + Theta2/n^2 (intercepts
fitted or fixed) and X(n) = X + X_slope/n for the n-scaled tensors X = V, A, B, D, F.  The standard errors of
the coefficients are those of the weighted least squares (the widths' runs are independent); chi^2 per entry
measures how well the expansion describes the runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import _checks
from ..docstrings import filled
from ..montecarlo import QUANTITIES, Estimate, FiniteWidthTable, layer_statistics
from ..montecarlo.estimate import EstimateTable
from ..reference.activations import numpy_activation
from .verdict import CHECK_PARAMETERS

__all__ = ["FitTable", "WidthFit", "fit_inverse_width", "fit_widths", "weighted_fit"]


@dataclass
class FitTable(EstimateTable):
    """Coefficients fitted over widths: ``estimates`` {name: Estimate}, ``chi2[name]`` (per entry) with
    ``dof[name]`` degrees of freedom, the ``widths`` and the per-width ``runs``, ``info`` the fit's set-up."""

    estimates: dict
    chi2: dict
    dof: dict
    widths: list
    runs: list
    info: dict = field(default_factory=dict)


class WidthFit(FiniteWidthTable, FitTable):
    """Coefficients of the 1/n fits with standard errors, chi^2 per entry, and the per-width runs.

    ``K``, ``K1``, ``K2``: E[z z] = K + K1/n + K2/n^2; ``ntk``, ``ntk1``, ``ntk2`` (aliases ``Theta``,
    ``Theta1``): the same for E[Theta_ii]; ``V``, ``A``, ``B``, ``D``, ``F`` (and the single-neuron
    combinations): the n -> infinity limits of a + b/n fits, ``<name>_slope`` the b.  ``chi2[name]``
    (per entry) with ``dof[name]`` degrees of freedom.

    Parameters
    ----------
    estimates : dict
        {name: :class:`~ntk_theory.montecarlo.Estimate`} of the fitted coefficients; ``fit[name]`` reads one.
    chi2, dof : dict
        chi^2 per entry and its degrees of freedom, per fitted quantity.
    widths : list of int
        The widths fitted over.
    runs : list of LayerStatistics
        The per-width Monte Carlo runs.
    info : dict
        The set-up (activation, depth, C_W, C_b, param, samples per width, seconds).

    Examples
    --------
    See :func:`fit_widths`; ``table(names)`` prints the chosen coefficients:

    >>> import numpy as np
    >>> from ntk_theory.montecarlo import layer_statistics
    >>> runs = [layer_statistics("relu", np.array([[1.0, 0.0]]), 1, n, samples=500, seed=n, progress=False)
    ...         for n in (8, 16, 32)]
    >>> print(fit_widths(runs).table(["K"]))     # doctest: +ELLIPSIS
    1/n fits over widths [8, 16, 32] (relu, depth 1, ...)
    K: n -> infinity limit
      [      0,0]   1.000000e+00 +- ...
    """

    def entry_note(self, name, idx) -> str:
        """The chi^2 note printed after an entry of ``name`` at index ``idx`` (empty for 1/n coefficients).

        Parameters
        ----------
        name : str
            A fitted quantity.
        idx : tuple of int
            The entry.

        Returns
        -------
        str
            ``"   chi2 <chi2>/<dof>"`` for an n -> infinity limit, ``""`` otherwise.

        Examples
        --------
        See :class:`WidthFit`.
        """
        base = {"K1": "K", "K2": "K", "ntk1": "ntk", "ntk2": "ntk"}.get(name, name.replace("_slope", ""))
        if base in self.chi2 and not name.endswith("_slope") and name not in ("K1", "K2", "ntk1", "ntk2"):
            return f"   chi2 {self.chi2[base][idx]:.1f}/{self.dof[base]}"
        return ""

    def table(self, names=None, max_rows: int = 10) -> str:
        """The fitted coefficients as text: a heading with the set-up, then per quantity its entries.

        Parameters
        ----------
        names : list of str, optional
            The quantities to print (default: all).
        max_rows : int, default 10
            At most that many entries per quantity.

        Returns
        -------
        str

        Examples
        --------
        See :class:`WidthFit`.
        """
        i = self.info
        head = (
            f"1/n fits over widths {self.widths} ({i.get('activation')}, depth {i.get('depth')}, "
            f"C_W={i.get('C_W')}, C_b={i.get('C_b')}, param={i.get('param')!r}, "
            f"{i.get('samples')} networks per width, {i.get('seconds', 0):.0f} s)"
        )
        return "\n".join([head] + self.rows(names, max_rows))

    def __repr__(self) -> str:
        return f"<WidthFit widths {self.widths}: {', '.join(self.estimates)}>"


def weighted_fit(widths, values, errors, powers, fixed=None):
    """Per-entry weighted least squares y(n) = fixed + sum_k c_k n^-k over k in ``powers``, weights 1/SE^2.

    ``values``, ``errors``: (W, ...) arrays, one row per width.  Returns (coefficients (P, ...), their
    standard errors (P, ...), chi^2 (...)).  An entry with a standard error that is 0 or not finite at some
    width has no weighted fit: its coefficients, standard errors and chi^2 are NaN (a verdict built on them
    fails), never a fit that trusts that width infinitely.

    Parameters
    ----------
    widths : sequence of int
        The W widths n.
    values, errors : array_like
        (W, ...) estimates and their standard errors, one row per width.
    powers : sequence of int
        The P powers k of 1/n in the model (0: the intercept).
    fixed : array_like, optional
        A known part of y, (...) (e.g. the infinite-width value), subtracted before the fit.

    Returns
    -------
    coefficients, stderrs : ndarray
        (P, ...) the c_k and their standard errors, sqrt of the diagonal of (D^T W D)^-1.
    chi2 : ndarray
        (...) the weighted sum of squared residuals.

    Examples
    --------
    Three exact points of y = 1 + 2/n are fitted exactly, with chi^2 = 0; with equal errors s the
    intercept's standard error is that of unweighted least squares, s sqrt(((D^T D)^-1)_00):

    >>> import numpy as np
    >>> n = np.array([8.0, 16.0, 32.0]); y = 1 + 2 / n
    >>> coef, se, chi2 = weighted_fit(n, y, np.full(3, 0.1), [0, 1])
    >>> bool(np.allclose(coef, [1.0, 2.0])), bool(abs(chi2) < 1e-20)
    (True, True)
    >>> D = np.stack([np.ones(3), 1 / n], axis=1)
    >>> bool(np.isclose(se[0], 0.1 * np.sqrt(np.linalg.inv(D.T @ D)[0, 0])))
    True
    """
    x = 1.0 / np.asarray(widths, dtype=float)
    Dm = np.stack([x**p for p in powers], axis=1)  # (W, P)
    values, errors = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    W = values.shape[0]
    shape = values.shape[1:]
    y = values.reshape(W, -1)
    if fixed is not None:
        y = y - np.asarray(fixed, dtype=float).reshape(1, -1)
    e = errors.reshape(W, -1)
    usable = np.all(np.isfinite(e) & (e > 0), axis=0)
    w = np.where(usable, 1.0 / np.where(usable, e, 1.0) ** 2, 1.0)
    M = np.einsum("wp,we,wq->epq", Dm, w, Dm)
    rhs = np.einsum("wp,we,we->ep", Dm, w, y)
    cov = np.linalg.inv(M)
    coef = np.einsum("epq,eq->ep", cov, rhs)
    resid = y - (Dm @ coef.T)
    chi2 = (w * resid**2).sum(axis=0)
    se = np.sqrt(np.einsum("epp->ep", cov))
    coef[~usable], se[~usable], chi2[~usable] = np.nan, np.nan, np.nan
    P = len(powers)
    return coef.T.reshape(P, *shape), se.T.reshape(P, *shape), chi2.reshape(shape)


def fit_widths(runs: list, infinite=None, mean_order: int = 2, tensor_order: int = 1) -> WidthFit:
    """Fit the 1/n expansions to :class:`LayerStatistics` at several widths (see :class:`WidthFit`).

    ``infinite``: None (fit the n -> infinity K and Theta) or a pair (K, Theta) of known infinite-width
    values (then only the 1/n, ..., 1/n^mean_order coefficients are fitted).  ``mean_order``: highest
    power of 1/n for the means (2: K + K1/n + K2/n^2); ``tensor_order``: for the n-scaled tensors.

    Parameters
    ----------
    runs : list of LayerStatistics
        :func:`~ntk_theory.montecarlo.layer_statistics` results at distinct widths.
    infinite : tuple of array_like, optional
        Known (K, Theta) at infinite width.
    mean_order, tensor_order : int, default 2 and 1
        The highest powers of 1/n fitted.

    Returns
    -------
    WidthFit

    Raises
    ------
    ValueError
        If two runs have the same width or there are fewer widths than coefficients.

    Examples
    --------
    One ReLU hidden layer at criticality (C_W = 2, C_b = 0): E[z z] = C_W E[relu(z1)^2] = 1 at every width for
    x = (1, 0), and the n -> infinity limit of the four-point vertex is V = C_W^2 (E[relu^4] - E[relu^2]^2)
    = 4 (3/2 - 1/4) = 5 (z1 ~ N(0, 1)):

    >>> import numpy as np
    >>> from ntk_theory.montecarlo import layer_statistics
    >>> runs = [layer_statistics("relu", np.array([[1.0, 0.0]]), 1, n, samples=2000, seed=n, progress=False)
    ...         for n in (8, 16, 32)]
    >>> fit = fit_widths(runs)
    >>> bool(abs(fit["K"].value[0, 0] - 1.0) <= 4 * fit["K"].stderr[0, 0] + 1e-12)
    True
    >>> V = fit["V"]
    >>> bool(abs(V.value[0, 0, 0, 0] - 5.0) < 4 * V.stderr[0, 0, 0, 0])
    True
    """
    widths = [r.info["n"] for r in runs]
    if len(set(widths)) != len(widths):
        raise ValueError(f"the runs must have distinct widths; got {widths}")
    est, chi2, dof = {}, {}, {}
    W = len(runs)
    for name, fixed in (("K", None if infinite is None else infinite[0]), ("ntk", None if infinite is None else infinite[1])):
        vals = np.stack([r[name].value for r in runs])
        errs = np.stack([r[name].stderr for r in runs])
        powers = list(range(1, mean_order + 1)) if fixed is not None else list(range(mean_order + 1))
        if W < len(powers):
            raise ValueError(f"{W} widths cannot fit {len(powers)} coefficients")
        coef, se, c2 = weighted_fit(widths, vals, errs, powers, fixed)
        labels = [name if p == 0 else f"{name}{p}" for p in powers]
        if fixed is not None:
            est[name] = Estimate(name, np.asarray(fixed, dtype=float), np.zeros_like(vals[0]), "given")
        for lab, cf, s in zip(labels, coef, se):
            desc = "n -> infinity limit" if lab == name else f"coefficient of 1/n^{lab[len(name):]}"
            est[lab] = Estimate(lab, cf, s, desc)
        chi2[name], dof[name] = c2, W - len(powers)
    tensors = [k for k in ("V", "A", "B", "D", "F", "ntk_cov_single", "cumulant_single", "ntk_z_single") if k in runs[0].estimates]
    powers = list(range(tensor_order + 1))
    for name in tensors:
        vals = np.stack([r[name].value for r in runs])
        errs = np.stack([r[name].stderr for r in runs])
        coef, se, c2 = weighted_fit(widths, vals, errs, powers)
        est[name] = Estimate(name, coef[0], se[0], f"n -> infinity limit of {QUANTITIES[name][0]}")
        if tensor_order >= 1:
            est[name + "_slope"] = Estimate(name + "_slope", coef[1], se[1], "coefficient of 1/n")
        chi2[name], dof[name] = c2, W - len(powers)
    info = dict(runs[0].info)
    info["samples"] = [r.info["samples"] for r in runs]
    info["seconds"] = sum(r.info["seconds"] for r in runs)
    return WidthFit(est, chi2, dof, widths, runs, info)


@filled(**CHECK_PARAMETERS)
def fit_inverse_width(
    activation,
    X,
    depth: int,
    widths=(16, 32, 64, 128, 256),
    *,
    C_W=2.0,
    C_b=0.0,
    param: str = "ntk",
    samples: int = 20_000,
    seed=0,
    infinite="fit",
    mean_order: int = 2,
    tensor_order: int = 1,
    **kwargs,
) -> WidthFit:
    """Run :func:`layer_statistics` at each width (equal hidden widths) and fit the 1/n expansions.

    ``infinite``: ``"fit"`` (fit the infinite-width K and Theta too), ``"recursion"`` (fix them to
    :class:`ntk_theory.recursions.KernelRecursion`, library activations only) or a pair (K, Theta).
    ``samples``: an int or one per width.  Other keywords go to :func:`layer_statistics`.

    Parameters
    ----------
    activation : str, tuple or NumpyActivation
        As :func:`~ntk_theory.montecarlo.layer_statistics`.
    X : array_like
        Inputs (N, n_0).
    depth : int
        The number of hidden layers L.
    widths : sequence of int, default (16, 32, 64, 128, 256)
        The hidden widths n (every hidden layer n wide).
    %(variances)s
    samples : int or sequence of int, default 20000
        Networks per width.
    seed : int, default 0
        Width i draws with the i-th child of ``SeedSequence(seed)``.
    infinite : {'fit', 'recursion'} or tuple, default 'fit'
        How the infinite-width K and Theta enter the fits (above).
    mean_order, tensor_order : int, default 2 and 1
        As :func:`fit_widths`.
    **kwargs
        Passed to :func:`~ntk_theory.montecarlo.layer_statistics`.

    Returns
    -------
    WidthFit

    Examples
    --------
    The infinite-width NTK of one ReLU layer at x = (1, 0), C_W = 2, C_b = 0 is
    C_W (E[relu(z)^2] + E[relu'(z)^2] Theta1) with z ~ N(0, 1), Theta1 = C_W x.x/n_0 = 1: 2 (1/2 + 1/2) = 2; the fit's limit agrees within its standard error:

    >>> import numpy as np
    >>> fit = fit_inverse_width("relu", np.array([[1.0, 0.0]]), 1, widths=(8, 16, 32), samples=2000, seed=1,
    ...                         progress=False)
    >>> theta = fit["ntk"]
    >>> bool(abs(theta.value[0, 0] - 2.0) < 4 * theta.stderr[0, 0])
    True
    """
    X = _checks.inputs(X)
    act = numpy_activation(activation)  # one object for every width: its control-variate plan is computed once
    widths = [int(w) for w in widths]
    per = list(samples) if isinstance(samples, (list, tuple)) else [samples] * len(widths)
    fixed = None
    if isinstance(infinite, str):
        if infinite == "recursion":
            from ..recursions import KernelRecursion

            if param == "standard":
                raise ValueError("param='standard': the infinite-width NTK grows with n; give (K, Theta) or fit them")
            res = KernelRecursion(act.name, depth, C_W=C_W, C_b=C_b, param=param)(X)
            fixed = (res.nngp, res.ntk)
        elif infinite != "fit":
            raise ValueError("infinite must be 'fit', 'recursion' or a pair (K, Theta)")
    elif infinite is not None:
        fixed = tuple(np.asarray(v, dtype=float) for v in infinite)
    seeds = np.random.SeedSequence(seed).spawn(len(widths))
    runs = [
        layer_statistics(act, X, depth, w, C_W=C_W, C_b=C_b, param=param, samples=s, seed=sd, **kwargs)
        for w, s, sd in zip(widths, per, seeds)
    ]
    fit = fit_widths(runs, fixed, mean_order, tensor_order)
    fit.info["seed"] = seed if isinstance(seed, (int, type(None))) else str(seed)
    return fit
