r"""Mean and covariance of the outputs over random initialisations (NNGP-based), as neural-tangents'
``predict.gradient_descent_mse_ensemble``.

At initialisation an infinitely wide network's outputs are a Gaussian process with the NNGP kernel K,
independent across the O outputs; training with a fixed NTK Theta is linear in f0, so the outputs stay
Gaussian (Lee et al. 2019, eqs. (13)-(16)).  With Theta = V diag(lambda) V^T on the training inputs X,
P_t = V D_t V^T and A_t = V G_t V^T (decay and gain of :mod:`.schedule`):

    train:  mean = (I - P_t) y,           cov = P_t K(X, X) P_t
    test:   mean = Theta(X', X) A_t y,
            cov  = K(X', X') - Theta(X', X) A_t K(X, X') - K(X', X) A_t Theta(X, X')
                   + Theta(X', X) A_t K(X, X) A_t Theta(X, X')

(one covariance, shared by every output).  ``get="nngp"`` drives the dynamics with K instead of Theta
(training only the readout; at t = inf the exact GP posterior).

``diag_reg`` (neural-tangents' argument): the train-train kernels K(X, X) and Theta(X, X) are replaced by
K + r_K I and Theta + r_Theta I with r = diag_reg * trace / N (``diag_reg_absolute_scale=False``, the default)
or r = diag_reg; at t = inf the test mean is then kernel ridge regression, Theta(X', X) (Theta + r I)^-1 y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _checks
from .loss import LOSSES, rate
from .predict import _targets
from .schedule import Schedule
from .spectral import Eigenbasis, as_kernel


@dataclass(frozen=True)
class Gaussian:
    """Outputs ~ N(mean, covariance) per output: ``mean`` ``(*T, M[, O])``, ``covariance`` ``(*T, M, M)``.

    Parameters
    ----------
    mean : ndarray
        ``(*T, M[, O])``.
    covariance : ndarray
        ``(*T, M, M)``, shared by every output.

    Examples
    --------
    >>> import numpy as np
    >>> g = Gaussian(np.zeros(2), np.array([[4.0, 1.0], [1.0, 9.0]]))
    >>> g.std
    array([2., 3.])
    """

    mean: np.ndarray
    covariance: np.ndarray

    @property
    def std(self) -> np.ndarray:
        """Pointwise standard deviation sqrt(diag cov), (*T, M)."""
        return np.sqrt(np.maximum(np.diagonal(self.covariance, axis1=-2, axis2=-1), 0.0))

    def __repr__(self) -> str:
        return f"Gaussian(mean {self.mean.shape}, covariance {self.covariance.shape}, max std {np.max(self.std):.4g})"


@dataclass(frozen=True)
class EnsemblePrediction:
    """The result of :func:`ensemble`: the :class:`Gaussian` of the train outputs and of the test outputs (None
    without test blocks).

    Parameters
    ----------
    train : Gaussian
    test : Gaussian or None

    Examples
    --------
    Before training (t = 0) the outputs are the prior, N(0, K):

    >>> import numpy as np
    >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> pred = ensemble(K, K, np.array([1.0, -1.0]), 0.0)
    >>> bool(np.allclose(pred.train.mean, 0.0)), bool(np.allclose(pred.train.covariance, K)), pred.test is None
    (True, True, True)
    """

    train: Gaussian
    test: Gaussian | None

    def __repr__(self) -> str:
        return f"EnsemblePrediction(train={self.train!r}, test={self.test!r})"


def ensemble(nngp_train_train, ntk_train_train, y_train, t=None, *, steps=None, nngp_test_train=None,
             ntk_test_train=None, nngp_test_test=None, learning_rate: float = 1.0, loss: str = "mean",
             get: str = "ntk", diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False) -> EnsemblePrediction:
    """Mean and covariance of train (and, given the test blocks, test) outputs at time t / after steps.

    Parameters
    ----------
    nngp_train_train : array_like
        K(X, X), (N, N), symmetric positive semi-definite.
    ntk_train_train : array_like or None
        Theta(X, X), (N, N); ignored (pass None) with ``get="nngp"``.
    y_train : array_like
        Targets (N,) or (N, O).
    t : float, array_like or None, default None
        Gradient-flow time(s) (``np.inf``: end of training); or give ``steps``.
    steps : int or array_like, optional
        Number(s) of gradient-descent steps, instead of ``t``.
    nngp_test_train, ntk_test_train : array_like, optional
        K(X', X) and Theta(X', X), (M, N); with ``nngp_test_test`` (M, M) they give the test outputs.
    nngp_test_test : array_like, optional
        K(X', X'), (M, M).
    learning_rate : float, default 1.0
        eta, finite and > 0.
    loss : {'mean', 'sum'}, default 'mean'
        As in :class:`~ntk_theory.dynamics.predict.MSEDynamics`.
    get : {'ntk', 'nngp'}, default 'ntk'
        The kernel driving the dynamics; "nngp" trains only the readout (at t = inf: the exact GP posterior).
    diag_reg : float, default 0.0
        Regularisation of the train-train kernels, >= 0.
    diag_reg_absolute_scale : bool, default False
        False: r = diag_reg * trace / N (neural-tangents' default); True: r = diag_reg.

    Returns
    -------
    EnsemblePrediction
        ``train`` and ``test`` (None without test blocks), :class:`Gaussian` objects: ``mean`` ``(*T, M[, O])`` and one
        ``covariance`` ``(*T, M, M)`` shared by every output.

    Raises
    ------
    ValueError
        If a kernel has the wrong shape, is not finite or (train-train) not positive semi-definite, the
        targets are not finite, or ``get``, ``loss``, ``learning_rate`` or ``diag_reg`` is invalid.

    Notes
    -----
    With Theta = V diag(lambda) V^T, P_t = V D_t V^T and A_t = V G_t V^T (decay and gain of
    :mod:`.schedule`): train mean (I - P_t) y, covariance P_t K P_t; test mean Theta(X', X) A_t y,
    covariance K(X', X') - Theta(X', X) A_t K(X, X') - K(X', X) A_t Theta(X, X') + Theta(X', X) A_t K A_t
    Theta(X, X') (module docstring; Lee et al. 2019, eqs. (13)-(16)).  ``diag_reg`` replaces the train-train
    kernels by K + r I and Theta + r I; at t = inf the test mean is kernel ridge regression.

    Examples
    --------
    With K = Theta = I on two training points the residual decays as exp(-c t), c = eta / N = 1/2:

    >>> import numpy as np
    >>> from ntk_theory.dynamics.ensemble import ensemble
    >>> I = np.eye(2); y = np.array([1.0, -1.0])
    >>> train = ensemble(I, I, y, 2.0).train
    >>> bool(np.allclose(train.mean, (1 - np.exp(-1.0)) * y)), bool(np.allclose(train.covariance, np.exp(-2.0) * I))
    (True, True)

    Readout-only training to t = inf is the GP posterior: mean k*^T K^-1 y = 0.5, variance 1 - 0.5^2:

    >>> test = ensemble(I, None, y, np.inf, get="nngp", nngp_test_train=[[0.5, 0.0]], nngp_test_test=[[1.0]]).test
    >>> np.round(test.mean, 12), np.round(test.covariance, 12)
    (array([0.5]), array([[0.75]]))
    """
    y, vector = _targets(y_train)
    N, O = y.shape
    if get not in ("ntk", "nngp"):
        raise ValueError(f"unknown get {get!r}; expected 'ntk' or 'nngp'")
    _checks.choice("loss", loss, LOSSES)
    lr = _checks.positive("learning_rate", learning_rate)
    reg = _checks.nonnegative("diag_reg", diag_reg)
    Kxx = _regularised(as_kernel(nngp_train_train, "nngp_train_train", shape=(N, N)), reg, diag_reg_absolute_scale)
    Txx = Kxx if get == "nngp" else _regularised(as_kernel(ntk_train_train, "ntk_train_train", shape=(N, N)), reg,
                                                 diag_reg_absolute_scale)
    basis = Eigenbasis.of(Txx, "nngp_train_train" if get == "nngp" else "ntk_train_train")
    Eigenbasis.of(Kxx, "nngp_train_train", warn=False)  # PSD check of the covariance at initialisation
    decay, gain = Schedule.of(t, steps).factors(basis.eigenvalues, basis.null, rate(lr, N, O, loss))
    P = basis.matrix(decay)
    mean = y - np.einsum("...nk,ko->...no", P, y)
    cov = P @ Kxx @ P
    squeeze = (lambda m: m[..., 0]) if vector else (lambda m: m)
    train = Gaussian(squeeze(mean), 0.5 * (cov + np.swapaxes(cov, -1, -2)))
    if nngp_test_train is None and ntk_test_train is None and nngp_test_test is None:
        return EnsemblePrediction(train, None)
    Ktx = np.asarray(nngp_test_train, dtype=np.float64) if nngp_test_train is not None else None
    if Ktx is None or Ktx.ndim != 2 or Ktx.shape[1] != N:
        raise ValueError(f"nngp_test_train must have shape (M, {N}); got {None if Ktx is None else Ktx.shape}")
    M = Ktx.shape[0]
    Ktx = as_kernel(Ktx, "nngp_test_train", shape=(M, N))
    Ttx = Ktx if get == "nngp" else as_kernel(ntk_test_train, "ntk_test_train", shape=(M, N))
    Ktt = as_kernel(nngp_test_test, "nngp_test_test", shape=(M, M))
    A = basis.matrix(gain)  # (*T, N, N)
    TA = np.einsum("mn,...nk->...mk", Ttx, A)  # Theta(X', X) A_t
    mean_t = np.einsum("...mn,no->...mo", TA, y)
    cross = TA @ Ktx.T  # Theta(X', X) A_t K(X, X')
    cov_t = Ktt - cross - np.swapaxes(cross, -1, -2) + TA @ Kxx @ np.swapaxes(TA, -1, -2)
    test = Gaussian(squeeze(mean_t), 0.5 * (cov_t + np.swapaxes(cov_t, -1, -2)))
    return EnsemblePrediction(train, test)


def _regularised(K: np.ndarray, diag_reg: float, absolute: bool) -> np.ndarray:
    """K + r I, r = diag_reg (absolute) or diag_reg * trace(K) / N (neural-tangents' convention)."""
    if diag_reg == 0.0:
        return K
    r = diag_reg if absolute else diag_reg * np.trace(K) / len(K)
    return K + r * np.eye(len(K))
