r"""Trained finite-width ensembles against the infinite-width prediction, fitted in 1/n.

:func:`infinite_width_trained` is the n -> infinity mean and covariance of the outputs after t steps of
gradient descent (:func:`ntk_theory.dynamics.ensemble` with the infinite-width NNGP and NTK of
:class:`~ntk_theory.recursions.KernelRecursion`), on the rows X u X' jointly (the ensemble's "test"
formulas at all P = N + M inputs: on the train rows they equal its train formulas, and they give the
train-test covariance too).

:func:`fit_trained_widths` takes :func:`ntk_theory.montecarlo.trained.sample_trained` runs at several widths
(independent runs) and fits, per entry and time, by weighted least squares with the Monte Carlo standard
errors (:func:`~ntk_theory.validation.fits.weighted_fit`):

* ``<name>_inf`` (+ ``<name>_inf_1``): the intercept of E(n) = a + b/n [+ c/n^2] (``order``), the
  n -> infinity limit, to compare with the infinite-width prediction (``motion`` and ``cov_motion`` -> 0,
  ``mean``, ``linearised`` -> the infinite-width mean; ``cov``, ``cov_linearised`` -> its covariance);
* given the prediction: ``<name>_1``, the O(1/n) coefficient: the intercept of the fit of
  n (E(n) - E_inf) = a + b/n [+ ...] (errors n SE), with its standard error.

:func:`fit_trained` runs both and the fit for a list of widths.

The coefficients' standard errors are those of the weighted least squares (errors of the per-width SEs
themselves, ~1/sqrt(2 (B - 1)) relative, are not propagated); ``chi2[name]`` per entry with ``dof``.
"""

from __future__ import annotations

import numpy as np

from ..montecarlo.estimate import Estimate
from .fits import FitTable, weighted_fit

__all__ = ["TrainedWidthFit", "fit_trained", "fit_trained_widths", "infinite_width_trained"]

#: the n -> infinity limit of each estimate: the infinite-width "mean", "cov" or exactly 0
LIMITS = {"mean": "mean", "mean_optimal": "mean", "mean_plain": "mean", "linearised": "mean", "motion": 0.0,
          "cov": "cov", "cov_linearised": "cov", "cov_motion": 0.0}


def infinite_width_trained(activation, X_train, y_train, X_test, depth: int, *, C_W, C_b, eta: float, steps,
                           param: str = "ntk", loss: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """(mean (R, P[, O]), covariance (R, P, P)) of the infinitely wide network after each of ``steps`` steps
    of gradient descent, rows X_train then X_test (module docstring)."""
    from ..dynamics import ensemble
    from ..recursions import KernelRecursion

    X = np.asarray(X_train, dtype=float)
    Xall = X if X_test is None else np.concatenate([X, np.asarray(X_test, dtype=float)])
    N = X.shape[0]
    K, T = KernelRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param)(Xall)
    pred = ensemble(K[:N, :N], T[:N, :N], y_train, steps=np.asarray(steps), nngp_test_train=K[:, :N],
                    ntk_test_train=T[:, :N], nngp_test_test=K, learning_rate=eta, loss=loss)
    return pred.test.mean, pred.test.covariance


class TrainedWidthFit(FitTable):
    """Fitted coefficients (module docstring) with standard errors; ``chi2``/``dof`` per fitted name;
    ``widths``; ``runs`` the per-width :class:`~ntk_theory.montecarlo.trained.TrainedEnsemble`."""

    def __repr__(self) -> str:
        return f"<TrainedWidthFit widths {self.widths}: {', '.join(self.estimates)}>"


def fit_trained_widths(runs, infinite=None, order: int = 1, names=tuple(LIMITS)) -> TrainedWidthFit:
    """Fit the runs (one per width, same inputs, steps and set-up) in 1/n (module docstring).

    ``infinite``: None or (mean, cov) of :func:`infinite_width_trained`; ``order``: highest power of 1/n
    beyond the fitted one (1: a + b/n)."""
    runs = sorted(runs, key=lambda r: r.width)
    widths = [r.width for r in runs]
    if len(set(widths)) != len(widths):
        raise ValueError(f"the runs must have distinct widths; got {widths}")
    if any(not np.array_equal(r.steps, runs[0].steps) for r in runs):
        raise ValueError("the runs must record the same steps")
    powers = list(range(order + 1))
    if len(widths) < len(powers):
        raise ValueError(f"{len(widths)} widths cannot fit {len(powers)} coefficients (order {order})")
    n = np.asarray(widths, dtype=float)
    est, chi2, dof = {}, {}, {}
    for name in names:
        vals = np.stack([r[name].value for r in runs])
        errs = np.stack([r[name].stderr for r in runs])
        coef, se, c2 = weighted_fit(widths, vals, errs, powers)
        est[f"{name}_inf"] = Estimate(f"{name}_inf", coef[0], se[0], f"n -> infinity limit of {name}")
        est[f"{name}_inf_1"] = Estimate(f"{name}_inf_1", coef[1], se[1], f"1/n coefficient of {name} (free intercept)")
        chi2[f"{name}_inf"], dof[f"{name}_inf"] = c2, len(widths) - len(powers)
        if infinite is None:
            continue
        limit = LIMITS[name]
        ref = limit if not isinstance(limit, str) else infinite[0 if limit == "mean" else 1]
        scale = n.reshape((-1,) + (1,) * (vals.ndim - 1))
        coef, se, c2 = weighted_fit(widths, scale * (vals - ref), scale * errs, powers)
        est[f"{name}_1"] = Estimate(f"{name}_1", coef[0], se[0], f"O(1/n) coefficient of {name}: n (E - E_inf) at n -> inf")
        chi2[f"{name}_1"], dof[f"{name}_1"] = c2, len(widths) - len(powers)
    info = dict(runs[0].info)
    info["samples"] = [r.info["samples"] for r in runs]
    info["seconds"] = sum(r.info["seconds"] for r in runs)
    info["steps"] = list(runs[0].steps)
    return TrainedWidthFit(est, chi2, dof, widths, runs, info)


def fit_trained(activation, X_train, y_train, X_test, depth: int, widths=(32, 64, 128, 256), *, C_W, C_b,
                eta: float, steps, samples=4096, seed=0, order: int = 2, param: str = "ntk", loss: str = "mean",
                **kwargs) -> TrainedWidthFit:
    """:func:`~ntk_theory.montecarlo.trained.sample_trained` at each width (``samples`` an int or one per width;
    width w's run seeded by the w-th child of ``SeedSequence(seed)``), :func:`infinite_width_trained` and
    :func:`fit_trained_widths` with ``order``: ``fit["mean_1"]`` is the O(1/n) coefficient of the mean per
    time and input with its standard error.  Other keywords go to ``sample_trained``."""
    from ..montecarlo.trained import sample_trained

    widths = [int(w) for w in widths]
    per = list(samples) if isinstance(samples, (list, tuple)) else [samples] * len(widths)
    if len(per) != len(widths):
        raise ValueError(f"samples must be an int or one per width ({len(widths)}); got {len(per)}")
    seeds = np.random.SeedSequence(seed).spawn(len(widths))
    runs = [sample_trained(activation, X_train, y_train, X_test, depth, w, C_W=C_W, C_b=C_b, eta=eta, steps=steps,
                           samples=s, seed=sd, param=param, loss=loss, **kwargs)
            for w, s, sd in zip(widths, per, seeds)]
    infinite = infinite_width_trained(activation, X_train, y_train, X_test, depth, C_W=C_W, C_b=C_b, eta=eta,
                                      steps=steps, param=param, loss=loss)
    fit = fit_trained_widths(runs, infinite, order=order)
    fit.info["seed"] = seed if isinstance(seed, (int, type(None))) else str(seed)
    return fit
