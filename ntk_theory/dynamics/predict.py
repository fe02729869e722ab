r"""Closed-form outputs of a network trained on the squared loss in its linear (NTK) regime.

With the training kernel Theta = Theta(X, X) = V diag(lambda) V^T, the rate c of :mod:`.loss` and the
residual r0 = f0(X) - y (PDLT conventions: f = z(L+1); the NTK carries the learning-rate factors of
``param``):

    train:  f_t(X)  = y + V D_t V^T r0,                        D_t = diag(decay_i)
    test:   f_t(X') = f0(X') - Theta(X', X) V G_t V^T r0,      G_t = diag(gain_i)

with decay_i = exp(-c lambda_i t), gain_i = (1 - decay_i)/lambda_i for gradient flow at time t,
decay_i = (1 - c lambda_i)^k, gain_i = (1 - decay_i)/lambda_i after k steps of gradient descent, and
t = inf giving f(X) = y (on the kernel's range) and f(X') = f0(X') + Theta(X', X) Theta^+ (y - f0(X))
(Jacot et al. 2018, sec. 5; Lee et al. 2019, eqs. (9)-(11)).  The residual along eigenvector i decays as
exp(-c lambda_i t): the kernel's top principal components are learned first (:meth:`MSEDynamics.modes`).
Gradient descent is stable iff |1 - c lambda_max| < 1, i.e. eta < 2 N O / lambda_max for loss="mean".

``MSEDynamics(ntk, y, learning_rate=eta)`` with loss="mean" reproduces neural-tangents'
``predict.gradient_descent_mse(ntk, y, learning_rate=eta)`` (see :mod:`.loss`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .. import _checks
from .loss import LOSSES, rate
from .schedule import Schedule
from .spectral import Eigenbasis, as_kernel


def _targets(y) -> tuple[np.ndarray, bool]:
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"y_train must be a numeric array (N,) or (N, O); got {type(y).__name__}") from None
    if y.ndim not in (1, 2) or y.shape[0] == 0 or (y.ndim == 2 and y.shape[1] == 0):
        raise ValueError(f"y_train must have shape (N,) or (N, O) with N, O >= 1; got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y_train contains non-finite values (NaN or inf)")
    return (y[:, None] if y.ndim == 1 else y), y.ndim == 1


def _outputs(f, shape, name) -> np.ndarray:
    try:
        f = np.asarray(f, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a numeric array of shape {shape}") from None
    if f.ndim == 1 and shape[1] == 1 and f.shape[0] == shape[0]:
        f = f[:, None]
    try:
        f = np.broadcast_to(f, shape)
    except ValueError:
        raise ValueError(f"{name} must broadcast to shape {shape} (or ({shape[0]},) for one output); "
                         f"got {f.shape}") from None
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return f


@dataclass(frozen=True)
class Modes:
    """The eigenmode decomposition of training: residual_i(t) = exp(-rate_i t) residual_i(0).

    ``eigenvalues`` lambda_i of the training NTK (descending), ``rates`` = c lambda_i (per step),
    ``eigenvectors`` (N, N) columns, ``initial`` = V^T (f0 - y) (N, O).

    Parameters
    ----------
    eigenvalues, rates : ndarray
        (N,) lambda_i, descending, and c lambda_i.
    eigenvectors : ndarray
        (N, N), column i the mode of lambda_i.
    initial : ndarray
        (N, O) the initial residual along each mode.
    c : float
        The function-space rate.

    Examples
    --------
    Theta = [[2, 1], [1, 2]] has eigenvalues 3 and 1; with c = eta / N = 1/2 the rates are 3/2 and 1/2, and
    y = (1, -1) lies along the second mode (initial residual -sqrt(2) from f0 = 0):

    >>> import numpy as np
    >>> modes = MSEDynamics(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0])).modes()
    >>> modes.eigenvalues, modes.rates, modes.timescales
    (array([3., 1.]), array([1.5, 0.5]), array([0.66666667, 2.        ]))
    >>> bool(np.allclose(np.abs(modes.initial[:, 0]), [0.0, 2 ** 0.5]))
    True
    >>> r = modes.residual(2.0)[:, 0]
    >>> bool(np.allclose(np.abs(r), [0.0, 2 ** 0.5 * np.exp(-0.5 * 2.0)]))
    True
    """

    eigenvalues: np.ndarray
    rates: np.ndarray
    eigenvectors: np.ndarray
    initial: np.ndarray
    c: float

    def residual(self, t=None, *, steps=None) -> np.ndarray:
        """Residual along each mode, (*T, N, O): exp(-c lambda_i t) or (1 - c lambda_i)^k times initial.

        Parameters
        ----------
        t : float or array_like, optional
            Gradient-flow time(s); or give ``steps``.
        steps : int or array_like, optional
            Gradient-descent steps.

        Returns
        -------
        ndarray

        Examples
        --------
        See :class:`Modes`.
        """
        null = self.eigenvalues <= self.eigenvalues.size * np.finfo(float).eps * self.eigenvalues[0]
        decay, _ = Schedule.of(t, steps).factors(self.eigenvalues, null, self.c)
        return decay[..., None] * self.initial

    @property
    def timescales(self) -> np.ndarray:
        """1 / (c lambda_i): steps for mode i's residual to shrink by e."""
        with np.errstate(divide="ignore"):
            return 1.0 / self.rates

    def __repr__(self) -> str:
        rows = [f"  mode {i}: lambda = {lam:.6g}, time scale {ts:.4g} steps, |residual_0| = {np.linalg.norm(r0):.4g}"
                for i, (lam, ts, r0) in enumerate(zip(self.eigenvalues[:6], self.timescales[:6], self.initial[:6]))]
        more = f"\n  ... {self.eigenvalues.size - 6} more" if self.eigenvalues.size > 6 else ""
        return "Modes(residual_i(t) = exp(-c lambda_i t) residual_i(0), c = %.4g)\n%s%s" % (self.c, "\n".join(rows), more)


class MSEDynamics:
    """Function-space dynamics of squared-loss training driven by a fixed kernel (the NTK).

    Parameters
    ----------
    ntk_train_train : array_like
        (N, N) the NTK on the training inputs (traced over outputs, as
        ``empirical_ntk(..., trace_outputs=True)`` or the infinite-width ``KernelRecursion``/``CompiledKernel``);
        symmetric positive semi-definite.
    y_train : array_like
        Targets (N,) or (N, O).
    learning_rate : float, default 1.0
        eta, finite and > 0.
    loss : {'mean', 'sum'}, default 'mean'
        "mean": 1/(2NO)||f-y||^2 (neural-tangents), "sum": 1/2 ||f-y||^2.
    diag_reg : float, default 0.0
        Adds diag_reg * I to the kernel (absolute scale), >= 0.

    Raises
    ------
    ValueError
        If the targets are not a finite (N,) or (N, O) array, the kernel is not (N, N), symmetric and
        finite, the learning rate or ``diag_reg`` is out of range, or the loss is unknown.

    Notes
    -----
    With Theta = V diag(lambda) V^T, c = eta/(N O) ("mean") or eta ("sum") and r0 = f0(X) - y:
    f_t(X) = y + V D_t V^T r0 and f_t(X') = f0(X') - Theta(X', X) V G_t V^T r0, with
    decay_i = exp(-c lambda_i t) (gradient flow) or (1 - c lambda_i)^k (k steps), gain_i =
    (1 - decay_i)/lambda_i; t = inf projects onto the kernel's range (pseudo-inverse; eigenvalues below
    N eps lambda_max are treated as 0).  Gradient descent is stable iff eta < :meth:`max_learning_rate`
    (a RuntimeWarning otherwise).  ``train``, ``test`` and ``predict`` take ``t`` (gradient flow time, scalar
    or array) or ``steps=k``.

    Examples
    --------
    Theta = [[2, 1], [1, 2]] has eigenvalues 3 and 1; y = (1, -1) is the eigenvector of 1, so from f0 = 0
    the training outputs are (1 - exp(-c t)) y with c = eta / N = 1/2:

    >>> import numpy as np
    >>> from ntk_theory.dynamics.predict import MSEDynamics
    >>> dyn = MSEDynamics(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0]), learning_rate=1.0)
    >>> bool(np.allclose(dyn.train(2.0), (1 - np.exp(-1.0)) * np.array([1.0, -1.0])))
    True
    >>> np.round(dyn.train(np.inf), 12)        # at t = inf the training set is fit
    array([ 1., -1.])
    >>> dyn.max_learning_rate()                # 2 N O / lambda_max
    1.3333333333333333
    >>> round(float(dyn.test(np.inf, ntk_test_train=[[1.0, 0.0]])[0]), 12)   # [1, 0] Theta^-1 y
    1.0
    """

    def __init__(self, ntk_train_train, y_train, learning_rate: float = 1.0, loss: str = "mean", diag_reg: float = 0.0):
        self.y, self._vector = _targets(y_train)
        N, O = self.y.shape
        K = as_kernel(ntk_train_train, "ntk_train_train")
        if K.shape != (N, N):
            raise ValueError(f"ntk_train_train has shape {K.shape} but y_train has {N} rows: need ({N}, {N})")
        lr = _checks.positive("learning_rate", learning_rate)
        _checks.choice("loss", loss, LOSSES)
        reg = _checks.nonnegative("diag_reg", diag_reg)
        self.learning_rate, self.loss, self.diag_reg = lr, loss, reg
        self.kernel = K + reg * np.eye(N) if reg else K
        self.basis = Eigenbasis.of(self.kernel)
        self.c = rate(lr, N, O, loss)

    # ------------------------------------------------------------------ helpers
    @property
    def shape(self) -> tuple[int, int]:
        """(N, O): the number of training inputs and of outputs."""
        return self.y.shape

    def _shape_out(self, f: np.ndarray) -> np.ndarray:
        return f[..., 0] if self._vector else f

    def _factors(self, t, steps):
        sched = Schedule.of(t, steps)
        if sched.discrete and self.learning_rate >= self.max_learning_rate() and np.any(sched.times > 0):
            warnings.warn(f"learning_rate {self.learning_rate:.4g} >= the largest stable one "
                          f"{self.max_learning_rate():.4g}: gradient descent diverges along the top mode",
                          RuntimeWarning, stacklevel=3)
        b = self.basis
        return sched.factors(b.eigenvalues, b.null, self.c)

    # ------------------------------------------------------------------ predictions
    def train(self, t=None, *, steps=None, fx_train_0=0.0) -> np.ndarray:
        """f_t(X_train) = y + V D_t V^T (f0 - y), shape (*t.shape, N[, O]).

        Parameters
        ----------
        t : float or array_like, optional
            Gradient-flow time(s) (``np.inf`` allowed); or give ``steps``.
        steps : int or array_like, optional
            Gradient-descent steps.
        fx_train_0 : float or array_like, default 0.0
            The initial outputs f0(X_train), (N[, O]) or a scalar.

        Returns
        -------
        ndarray

        Examples
        --------
        One gradient-descent step is f0 - c Theta (f0 - y), c = eta / N:

        >>> import numpy as np
        >>> dyn = MSEDynamics(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0]))
        >>> bool(np.allclose(dyn.train(steps=1), 0.5 * np.array([[2.0, 1.0], [1.0, 2.0]]) @ [1.0, -1.0]))
        True
        """
        f0 = _outputs(fx_train_0, self.shape, "fx_train_0")
        decay, _ = self._factors(t, steps)
        return self._shape_out(self.y + self.basis.apply(decay, f0 - self.y))

    def test(self, t=None, *, steps=None, ntk_test_train, fx_train_0=0.0, fx_test_0=0.0) -> np.ndarray:
        """f_t(X_test) = f0(X_test) - Theta(X_test, X) V G_t V^T (f0(X) - y), shape (*t.shape, M[, O]).

        Parameters
        ----------
        t, steps
            As :meth:`train`.
        ntk_test_train : array_like
            Theta(X_test, X_train), (M, N).
        fx_train_0, fx_test_0 : float or array_like, default 0.0
            The initial outputs on the train and test inputs.

        Returns
        -------
        ndarray

        Examples
        --------
        At t = inf the test output is kernel regression, Theta(X', X) Theta^-1 y:

        >>> import numpy as np
        >>> dyn = MSEDynamics(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0]))
        >>> k = np.array([[1.0, 0.5]])
        >>> bool(np.allclose(dyn.test(np.inf, ntk_test_train=k), k @ np.linalg.solve([[2.0, 1.0], [1.0, 2.0]], [1.0, -1.0])))
        True
        """
        N, O = self.shape
        Ktx = np.asarray(ntk_test_train, dtype=np.float64) if ntk_test_train is not None else None
        if Ktx is None or Ktx.ndim != 2 or Ktx.shape[1] != N:
            raise ValueError(f"ntk_test_train must have shape (M, {N}); got "
                             f"{None if Ktx is None else Ktx.shape}")
        Ktx = as_kernel(Ktx, "ntk_test_train", shape=Ktx.shape)
        M = Ktx.shape[0]
        f0 = _outputs(fx_train_0, self.shape, "fx_train_0")
        g0 = _outputs(fx_test_0, (M, O), "fx_test_0")
        _, gain = self._factors(t, steps)
        moved = self.basis.apply(gain, f0 - self.y)  # (*T, N, O)
        return self._shape_out(g0 - np.einsum("mn,...no->...mo", Ktx, moved))

    def predict(self, t=None, *, steps=None, ntk_test_train, fx_train_0=0.0, fx_test_0=0.0):
        """(train, test) outputs, as neural-tangents' predict_fn(t, fx_train_0, fx_test_0, k_test_train).

        Parameters
        ----------
        t, steps, ntk_test_train, fx_train_0, fx_test_0
            As :meth:`train` and :meth:`test`.

        Returns
        -------
        tuple of ndarray
            ``(train(...), test(...))``.

        Examples
        --------
        >>> import numpy as np
        >>> dyn = MSEDynamics(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0]))
        >>> train, test = dyn.predict(1.0, ntk_test_train=[[1.0, 0.5]])
        >>> bool(np.allclose(train, dyn.train(1.0))), bool(np.allclose(test, dyn.test(1.0, ntk_test_train=[[1.0, 0.5]])))
        (True, True)
        """
        return (self.train(t, steps=steps, fx_train_0=fx_train_0),
                self.test(t, steps=steps, ntk_test_train=ntk_test_train, fx_train_0=fx_train_0, fx_test_0=fx_test_0))

    def modes(self, fx_train_0=0.0) -> Modes:
        """Eigenmodes, largest eigenvalue first, with the initial residual V^T (f0 - y) along each.

        Parameters
        ----------
        fx_train_0 : float or array_like, default 0.0
            The initial outputs f0(X_train).

        Returns
        -------
        Modes

        Examples
        --------
        See :class:`Modes`.
        """
        f0 = _outputs(fx_train_0, self.shape, "fx_train_0")
        lam, V = self.basis.eigenvalues[::-1], self.basis.eigenvectors[:, ::-1]
        return Modes(lam.copy(), self.c * lam, V.copy(), V.T @ (f0 - self.y), self.c)

    def max_learning_rate(self) -> float:
        """The largest stable gradient-descent learning rate, 2 / (c/eta lambda_max):
        2 N O / lambda_max for loss="mean", 2 / lambda_max for loss="sum".

        Returns
        -------
        float

        Examples
        --------
        See :class:`MSEDynamics`.
        """
        return 2.0 * self.learning_rate / (self.c * float(self.basis.eigenvalues[-1]))

    def __repr__(self) -> str:
        N, O = self.shape
        lam = self.basis.eigenvalues
        return (f"MSEDynamics(N={N}, O={O}, eta={self.learning_rate:g}, loss={self.loss!r}: "
                f"df/dt = -{self.c:.4g} Theta (f - y); lambda in [{lam[0]:.4g}, {lam[-1]:.4g}], "
                f"max stable eta {self.max_learning_rate():.4g})")

    def _repr_latex_(self) -> str:
        return (r"$\frac{df}{dt} = -\frac{\eta}{%s}\,\Theta\,(f - y),\quad \eta = %g,\ "
                r"\lambda(\Theta) \in [%.4g, %.4g]$" % ("N O" if self.loss == "mean" else "1", self.learning_rate,
                                                       self.basis.eigenvalues[0], self.basis.eigenvalues[-1]))
