r"""Real training against the infinite-width prediction as the width grows: measured and fitted.

For each width n and seed a ReLU/any MLP (PDLT initialisation) is trained by full-batch gradient
descent (:func:`.training.train`) on (X, y) and compared with two predictions of :class:`.MSEDynamics`
started from the network's own initial outputs f0:

* ``infinite``: the infinite-width NTK Theta_inf (``KernelRecursion``); the trained outputs differ from it
  by O(n^(-1/2)) (the NTK at initialisation fluctuates by O(n^(-1/2)) around Theta_inf);
* ``linearised``: the network's own NTK at initialisation (the linearised network); the difference is
  the NTK's motion during training, O(n^(-1/2)) for one network (Lee et al. 2019, thm. 2.1) with a
  smaller constant (its mean over initialisations is O(1/n), PDLT ch. 11).

and the relative change of the empirical NTK during training, ||Theta_T - Theta_0||_F / ||Theta_0||_F on
the train and test inputs, is measured (O(n^(-1/2)) for one network, Lee et al. 2019 fig. 1, since the
dNTK has zero mean and O(n^(-1/2)) fluctuations).  :func:`fit_power_law` fits log(mean) = a + p log n by
weighted least squares with the standard errors over seeds, returning p with its standard error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..empirical import empirical_ntk
from ..recursions import KernelRecursion
from ..reference import MLP
from .predict import MSEDynamics
from .training import train


def circle_data(n_train: int = 8, n_test: int = 16, target=lambda g: np.sin(2 * g) + 0.5 * np.cos(g)):
    """Inputs on the circle of radius sqrt(2) (x.x/n_0 = 1) at angles 2 pi a / n_train (train) and
    offset angles (test); targets ``target(angle)``."""
    g_tr = 2 * np.pi * np.arange(n_train) / n_train
    g_te = 2 * np.pi * (np.arange(n_test) + 0.5) / n_test
    circ = lambda g: np.sqrt(2.0) * np.stack([np.cos(g), np.sin(g)], axis=1)
    return circ(g_tr), target(g_tr), circ(g_te), target(g_te)


@dataclass(frozen=True)
class PowerLaw:
    """mean(n) ~ exp(intercept) n^slope, fitted with standard errors; chi2 per degree of freedom."""

    slope: float
    slope_err: float
    intercept: float
    chi2_dof: float

    def __repr__(self) -> str:
        return f"PowerLaw(slope {self.slope:.3f} +- {self.slope_err:.3f}, chi2/dof {self.chi2_dof:.2f})"


def fit_power_law(widths, means, stderrs) -> PowerLaw:
    """Weighted least squares of log(mean) on log(width) with sigma = stderr / mean (delta method).

    The slope's error is scaled by sqrt(chi2/dof) when that exceeds 1 (scatter beyond the errors)."""
    x, m, s = (np.asarray(v, dtype=float) for v in (widths, means, stderrs))
    if x.size < 2 or np.any(m <= 0) or np.any(s <= 0):
        raise ValueError("a power-law fit needs at least two widths with positive means and standard errors")
    lx, ly, w = np.log(x), np.log(m), (m / s) ** 2
    A = np.stack([np.ones_like(lx), lx], axis=1)
    cov = np.linalg.inv(A.T @ (w[:, None] * A))  # 2 x 2
    coef = cov @ (A.T @ (w * ly))
    dof = max(x.size - 2, 1)
    chi2 = float(np.sum(w * (ly - A @ coef) ** 2)) / dof
    err = float(np.sqrt(cov[1, 1] * max(chi2, 1.0))) if x.size > 2 else float(np.sqrt(cov[1, 1]))
    return PowerLaw(float(coef[1]), err, float(coef[0]), chi2)


@dataclass(frozen=True)
class TwoTerm:
    """mean(n) = a n^(-1/2) + b n^(-1), fitted by weighted least squares, with standard errors."""

    a: float
    a_err: float
    b: float
    b_err: float
    chi2_dof: float

    def __repr__(self) -> str:
        return (f"TwoTerm(a n^-1/2 + b n^-1: a = {self.a:.4g} +- {self.a_err:.2g}, b = {self.b:.4g} +- {self.b_err:.2g}, "
                f"chi2/dof {self.chi2_dof:.2f})")


def fit_two_term(widths, means, stderrs) -> TwoTerm:
    """Weighted least squares of mean = a n^(-1/2) + b n^(-1) (the leading fluctuation and the leading
    mean shift of a finite-width quantity); errors not rescaled."""
    n, m, s = (np.asarray(v, dtype=float) for v in (widths, means, stderrs))
    if n.size < 3:
        raise ValueError("a two-term fit needs at least three widths")
    A = np.stack([n ** -0.5, 1.0 / n], axis=1) / s[:, None]
    cov = np.linalg.inv(A.T @ A)
    coef = cov @ (A.T @ (m / s))
    chi2 = float(np.sum((A @ coef - m / s) ** 2)) / max(n.size - 2, 1)
    return TwoTerm(float(coef[0]), float(np.sqrt(cov[0, 0])), float(coef[1]), float(np.sqrt(cov[1, 1])), chi2)


@dataclass
class WidthScaling:
    """Per width: arrays over seeds of the three measured quantities, and their power-law fits."""

    widths: list
    seeds: int
    error_infinite: dict = field(default_factory=dict)     # width -> (seeds,) RMS deviation from Theta_inf prediction
    error_linearised: dict = field(default_factory=dict)   # width -> (seeds,) RMS deviation from own-NTK prediction
    ntk_change: dict = field(default_factory=dict)         # width -> (seeds,) ||Theta_T - Theta_0|| / ||Theta_0||
    config: dict = field(default_factory=dict)

    def summary(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        data = getattr(self, which)
        means = np.array([np.mean(data[n]) for n in self.widths])
        errs = np.array([np.std(data[n], ddof=1) / np.sqrt(len(data[n])) for n in self.widths])
        return means, errs

    def fit(self, which: str) -> PowerLaw:
        return fit_power_law(self.widths, *self.summary(which))

    def fit_two_term(self, which: str) -> TwoTerm:
        return fit_two_term(self.widths, *self.summary(which))

    def table(self) -> str:
        lines = ["width   |f - f_inf| (+- se)      |f - f_lin| (+- se)      dTheta/Theta (+- se)"]
        s = {k: self.summary(k) for k in ("error_infinite", "error_linearised", "ntk_change")}
        for i, n in enumerate(self.widths):
            lines.append(f"{n:5d}   " + "   ".join(f"{s[k][0][i]:.3e} +- {s[k][1][i]:.1e}" for k in s))
        for k in s:
            two = f"; {self.fit_two_term(k)}" if len(self.widths) >= 3 else ""
            lines.append(f"{k}: {self.fit(k)}{two}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"WidthScaling(widths {self.widths}, {self.seeds} seeds)\n{self.table()}"


def width_scaling(widths=(64, 256, 1024), seeds: int = 6, depth: int = 2, activation: str = "relu",
                  *, C_W: float = 2.0, C_b: float = 0.1, param: str = "ntk", n_train: int = 8, n_test: int = 16,
                  lr_fraction: float = 0.5, efolds: float = 3.0, seed: int = 0) -> WidthScaling:
    """Train ``seeds`` networks per width and measure the three quantities (see the module docstring).

    The learning rate is ``lr_fraction`` of the infinite-width largest stable one; the number of steps
    makes the slowest mode's residual shrink by e^efolds; deviations are RMS over the train and test
    outputs at 6 times spread over training (the initial outputs agree by construction)."""
    X, y, Xt, _ = circle_data(n_train, n_test)
    rec = KernelRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param)
    Xall = np.concatenate([X, Xt])
    _, T_all = rec(Xall)
    Txx, Ttx = T_all[:n_train, :n_train], T_all[n_train:, :n_train]
    ref = MSEDynamics(Txx, y)
    eta = lr_fraction * ref.max_learning_rate()
    dyn = MSEDynamics(Txx, y, learning_rate=eta)
    steps = int(np.ceil(efolds / (dyn.c * dyn.basis.eigenvalues[0])))
    record = np.unique(np.linspace(0, steps, 7).astype(int))
    out = WidthScaling(list(widths), seeds, config=dict(depth=depth, activation=activation, C_W=C_W, C_b=C_b,
                                                         param=param, learning_rate=eta, steps=steps,
                                                         n_train=n_train, n_test=n_test))
    ss = np.random.SeedSequence(seed)
    for n in widths:
        e_inf, e_lin, change = [], [], []
        for child in ss.spawn(seeds):
            net = MLP.random((X.shape[1], *([n] * depth), 1), activation, C_W=C_W, C_b=C_b, param=param, seed=child)
            run = train(net, X, y, eta, steps, X_test=Xt, record=record)
            f0, g0 = run.train_outputs[0], run.test_outputs[0]
            theta0 = empirical_ntk(run.initial, Xall)
            lin = MSEDynamics(theta0[:n_train, :n_train], y, learning_rate=eta)
            pred_inf = dyn.predict(steps=record, ntk_test_train=Ttx, fx_train_0=f0, fx_test_0=g0)
            pred_lin = lin.predict(steps=record, ntk_test_train=theta0[n_train:, :n_train], fx_train_0=f0, fx_test_0=g0)
            got = np.concatenate([run.train_outputs[1:, :, 0], run.test_outputs[1:, :, 0]], axis=1)
            rms = lambda p: float(np.sqrt(np.mean((got - np.concatenate([p[0][1:], p[1][1:]], axis=1)) ** 2)))
            e_inf.append(rms(pred_inf))
            e_lin.append(rms(pred_lin))
            thetaT = empirical_ntk(run.network, Xall)
            change.append(float(np.linalg.norm(thetaT - theta0) / np.linalg.norm(theta0)))
        out.error_infinite[n], out.error_linearised[n], out.ntk_change[n] = map(np.array, (e_inf, e_lin, change))
    return out
