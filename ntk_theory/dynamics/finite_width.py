r"""The trained network at O(1/n): mean and covariance of the linearised model of a finite network (its own
random NTK and initial outputs) after gradient descent or flow, and of the NTK's motion beyond it, to first
order in 1/n (docs/finite_width.md, "The trained network at O(1/n)").

Set-up (:mod:`.loss`): rows X u X' (train first, N + M = P inputs), O outputs (y (N,) for one, (N, O)),
L = ||f - y||^2 / (2 N O) by default (``loss="mean"``, c = eta / (N O)) or ||f - y||^2 / 2 (c = eta).  With
O outputs every formula below holds with composite rows (x, i) (input-major, train rows first) and the
readout's tensors carrying the spec's output Kronecker deltas, E[f0_i f0_j] = d_ij (K + K1/n),
E[Theta_hat_ij] = d_ij (Theta + Theta1/n), n Cov(Theta_hat_(i1 i2), Theta_hat_(i3 i4)) = d_i1i2 d_i3i4 A +
d_i1i3 d_i2i4 B_acbd + d_i1i4 d_i2i3 B_adbc (D, F likewise), n E[dH_(i0 i1 i2) f0_(i3)] = d_i0i3 d_i1i2 P +
d_i0i1 d_i2i3 Q + d_i0i2 d_i1i3 Q^T, R, S, T, U as the spec (:data:`TENSOR_OUTPUTS`, :data:`DNTK_OUTPUTS`):
the composite tensors are (P O)^4 arrays, so the cost grows as O^4 (O^5 for the rotations); y of the other
outputs enters each output's 1/n terms (e.g. through y y^T in the covariance and E[eps^3]).  A network of
width n has NTK
Theta_hat = Theta + delta and initial outputs f0; its linearised model after t steps is

    f_lin(t) = f0 - M(Theta_hat) (f0(X) - y),     M(Theta_hat) = Theta_hat(X u X', X) g(Theta_hat(X, X)),
    g(x) = c sum_(s<t) (1 - c x)^s = (1 - (1 - c x)^t) / x   (gradient descent, t steps),
    g(x) = (1 - exp(-c x t)) / x (gradient flow, time t),    g(x) = 1 / x  (t = inf).

The readout's statistics at initialisation enter as (i != j two outputs; n the width feeding the readout)

    E[f0 f0]            = K + K1 / n          E[Theta_hat] = Theta + Theta1 / n
    n Cov(Theta_hat_ab, Theta_hat_cd)   = Sigma_abcd = A_abcd + B_acbd + B_adbc
    n Cov(Theta_hat_ab, f0_c f0_d)      = Xi_abcd    = D_abcd + F_acbd + F_adbc

and every expectation is expanded to O(1/n): E[X] = X_inf + X_1 / n + O(1/n^2).  With Theta(X, X) =
V diag(lambda) V^T, tilde denoting the rotation of every train index into this eigenbasis and g1, g2 the first
and second divided differences of g at the eigenvalues (Daleckii-Krein: D g[d]_ij = g1_ij d_ij,
(1/2) D^2 g[d, d]_ij = sum_k g2_ikj d_ik d_kj), the first derivative of M along d is
DM[d]_xj = sum_a J_xaj d_aj, J_xaj = delta_xa g_j + Theta_xa g1_aj (a a train index), and

    mean:  E[f_lin]_1 = (DM[Theta1] + Q) y,   Q_xj = sum_i g1_ij Sigma_xiij + sum_ik Theta_xi g2_ikj Sigma_ikkj
    cov:   Cov[f_lin]_1 = l0 K1 l0^T - [(DM[Theta1] + Q) K(X, .) l0^T + T] - [X l0^T + T]
                          + sum_(a j b k) J_xaj J_ybk Sigma_ajbk (K_jk + y_j y_k),
           l0 = I - M(Theta) (on the train columns), X_xc = sum_(a j) J_xaj Xi_ajjc, T the transpose.

The n -> infinity parts are :func:`ntk_theory.dynamics.ensemble`'s: mean M(Theta) y, covariance l0 K l0^T.
Nothing of size N^2 x N^2 is formed or inverted: the divided differences are the (0, k) entries of g applied
to k x k bidiagonal matrices (Opitz), g of a matrix by binary powering (the geometric sum, no cancellation),
``scipy.linalg.expm`` (flow) or the inverse (t = inf).  Cost O(P^4 N) per time for the rotations and
contractions.  Error model: the coefficients are exact up to rounding (float64; the divided differences are
as accurate as g's matrix function on a bidiagonal matrix, relative ~1e-13 for condition numbers ~1e3);
O(1/n^2) terms are dropped.  On the train rows at t = inf, M(Theta_hat) = I for every Theta_hat, so the mean's
correction (and every 1/n term of the covariance there) vanishes identically.

The NTK's motion during training adds E[f - f_lin] (:meth:`FiniteWidthDynamics.motion`).  Gradient descent:
phi_(s+1) = phi_s - c Theta(., X) phi_s(X) + E[src_s], phi_0 = 0, whose sources at O(1/n) are the dNTK moving the
NTK and entering f's second-order step (through n E[dH f0] = P + Q + Q^T), and the ddNTKs' means (R; S + T + U)
moving the dNTK, entering the NTK's second-order step and f's third-order step, all evaluated on the
infinite-width residuals eps_s = (1 - c Theta)^s (f0 - y) with f0 ~ N(0, K) (docs/finite_width.md, part (b)).
In the eigenbasis of Theta(X, X) the propagators are diagonal, so each step costs O(P N^3) (O(P^2 N^3) for the
covariance's cross-moments below), and the limit steps = inf is the geometric series' closed form
(:meth:`FiniteWidthDynamics._limit_weights`), one such evaluation.  Gradient flow (time t in steps, df/dt =
-c Theta (f - y)): only the dNTK moving the NTK and the ddNTK moving the dNTK remain (a step's Taylor terms are
O(c^2) per step, so they vanish as the step shrinks), and the motion is a closed form in the eigenbasis of Theta(X, X): sums of divided differences of
mu -> exp(-c mu t) at the nodes (l_k or 0, l_b, l_b + l_d[, l_b + l_d + l_e]) (:meth:`FiniteWidthDynamics._flow_motion`);
descent with step eta/m for m t steps converges to it like 1/m.  :meth:`FiniteWidthDynamics.mean`
and :meth:`FiniteWidthDynamics.covariance` are the linearised model's.

The motion's part of the covariance (:meth:`FiniteWidthDynamics.motion_covariance`): with phi = f - f_lin,
Cov[f] = Cov[f_lin] + Cov[phi, f_lin] + Cov[f_lin, phi] + Cov[phi, phi].  In every network phi = O(1/n) (dH and
the ddNTKs are O(1/n)), f_lin = l0 f0 + M(Theta) y + O(n^-1/2), l0 = I - M(Theta) on the train columns, so at
O(1/n) only Cov[phi, l0 f0] and its transpose remain: the coefficient is C l0^T + l0 C^T, C_xz = n Cov(phi_x,
f0_z).  At leading order phi is linear in dH_0 times quadratics in eps_0 = f0(X) - y and in the ddNTKs (at
their means) times cubics in eps_0, so C is the motion with each source's moment replaced by its cross-moment
with f0_z, by Wick's theorem for f0 ~ N(0, K) and n E[dH f0] = Pc:

    n E[dH(x0,x1,x2) eps_i eps_j f0_z] = Pc(x0,x1,x2,i) K_jz + Pc(x0,x1,x2,j) K_iz + Pc(x0,x1,x2,z) (K + y y^T)_ij
    E[eps_i eps_j eps_k f0_z]          = Ky_ij K_kz + Ky_ik K_jz + Ky_jk K_iz,   Ky = K(X, X) + y y^T

(for the mean the moments are -(Pc_i y_j + Pc_j y_i) and E[eps^3]).  Descent: the same recursion with a
trailing index z (cost O(t P N^4)); flow: the same closed form with weights W1, W2 carrying z.  Error model:
exact at O(1/n) up to rounding; dropped are Cov[phi, phi] (O(1/n^2)), the NTK's O(n^-1/2) fluctuation in f_lin
against phi (O(n^-3/2)), the ddNTKs' fluctuations and the connected cumulants of dH with three f0 (O(1/n^2)).
At t = inf it vanishes on the train rows and columns (phi and l0's train rows vanish).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .loss import LOSSES, rate
from .schedule import Schedule
from .spectral import Eigenbasis, as_kernel

__all__ = ["Expansion", "FiniteWidthDynamics", "divided_differences", "readout_dntk"]

#: the readout tensors the linearised part needs, over the P = N + M inputs (train first)
TENSORS = ("K", "Theta", "K1", "Theta1", "A", "B", "D", "F")
#: names of :class:`~ntk_theory.finite_width.predictions.FiniteWidthPredictions` fields for each tensor
PREDICTION_NAMES = {"K": "nngp", "Theta": "ntk", "K1": "nngp_correction", "Theta1": "ntk_correction",
                    "A": "A", "B": "B", "D": "D", "F": "F"}


@dataclass(frozen=True)
class Expansion:
    """E = ``value`` + ``correction`` / n + O(1/n^2): ``value`` the infinite-width part, ``correction`` the
    O(1/n) coefficient (n the width of the last hidden layer, the one feeding the readout).

    Parameters
    ----------
    value, correction : ndarray
        Of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> Expansion(np.array([1.0, 2.0]), np.array([3.0, -4.0])).at_width(8)     # value + correction / 8
    array([1.375, 1.5  ])
    """

    value: np.ndarray
    correction: np.ndarray

    def at_width(self, width) -> np.ndarray:
        """``value + correction / width``, the expansion truncated at O(1/n).

        Parameters
        ----------
        width : float
            n >= 1.

        Returns
        -------
        ndarray

        Raises
        ------
        ValueError
            If ``width < 1``.

        Examples
        --------
        See :class:`Expansion`.
        """
        n = float(width)
        if not n >= 1:
            raise ValueError(f"width must be >= 1; got {width!r}")
        return self.value + self.correction / n

    def __repr__(self) -> str:
        return (f"Expansion(value {self.value.shape}, max |value| {np.max(np.abs(self.value)):.4g}, "
                f"max |correction| {np.max(np.abs(self.correction)):.4g})")


# ---------------------------------------------------------------------------------------- g and its differences
def _geometric(A: np.ndarray, k: int) -> np.ndarray:
    """sum_(s<k) A^s for a stack of square matrices, by binary powering (no subtraction)."""
    eye = np.broadcast_to(np.eye(A.shape[-1]), A.shape)
    res_p, res_s = eye.copy(), np.zeros_like(A)
    base_p, base_s = A.copy(), eye.copy()
    while k:
        if k & 1:
            res_s = res_s + res_p @ base_s
            res_p = res_p @ base_p
        k >>= 1
        if k:
            base_s = base_s + base_p @ base_s
            base_p = base_p @ base_p
    return res_s


def _g_matrix(J: np.ndarray, t: float, discrete: bool, c: float) -> np.ndarray:
    """g(J) for a stack of matrices J (module docstring's g)."""
    eye = np.broadcast_to(np.eye(J.shape[-1]), J.shape)
    if np.isinf(t):
        return np.linalg.inv(J)
    if discrete:
        return c * _geometric(eye - c * J, int(t))
    from scipy.linalg import expm

    return np.linalg.solve(J, eye - expm(-c * t * J))


def _bidiagonal(lams: np.ndarray) -> np.ndarray:
    k = lams.shape[-1]
    J = np.zeros(lams.shape + (k,))
    i = np.arange(k)
    J[..., i, i] = lams
    J[..., i[:-1], i[1:]] = 1.0
    return J


def divided_differences(lam, t, *, discrete: bool = True, c: float = 1.0):
    """(g (N,), g1 (N, N), g2 (N, N, N)): g at the eigenvalues ``lam`` and its first and second divided
    differences g1_ij = g[l_i, l_j], g2_ikj = g[l_i, l_k, l_j] (confluent limits the derivatives), as the
    top-right entries of g of the bidiagonal matrices with diagonal (l_i, l_k, l_j) and ones above it."""
    lam = np.asarray(lam, dtype=float)
    N = lam.size
    g = np.diagonal(_g_matrix(_bidiagonal(lam[:, None]), t, discrete, c), axis1=-2, axis2=-1)[:, 0]
    pairs = np.stack(np.broadcast_arrays(lam[:, None], lam[None, :]), axis=-1)
    g1 = _g_matrix(_bidiagonal(pairs), t, discrete, c)[..., 0, 1]
    triples = np.stack(np.broadcast_arrays(lam[:, None, None], lam[None, :, None], lam[None, None, :]), axis=-1)
    g2 = _g_matrix(_bidiagonal(triples.reshape(-1, 3)), t, discrete, c)[:, 0, 2].reshape(N, N, N)
    return g, g1, g2


def _exp_divided_difference(nodes: np.ndarray, t: float, c: float) -> np.ndarray:
    """Divided differences F[mu_0, ..., mu_k] of mu -> exp(-c mu t) over the last axis of ``nodes`` (Opitz: the
    (0, k) entry of expm(-c t J), J bidiagonal with the nodes on its diagonal and ones above it; confluent
    nodes give derivatives), computed as exp(-c t mu_min) times that of J - mu_min I (so that large c t mu
    loses no digits to the squaring phase).  t = inf (all nodes >= 0, only mu_0 may be 0): the limit, prod_(j>=1) (-1/mu_j)
    if mu_0 = 0, else 0."""
    if np.isinf(t):
        out = np.prod(-1.0 / nodes[..., 1:], axis=-1)
        return np.where(nodes[..., 0] == 0.0, out, 0.0)
    k = nodes.shape[-1]
    low = nodes.min(axis=-1, keepdims=True)
    flat = _bidiagonal(nodes - low).reshape(-1, k, k)
    return _expm_stack(-c * t * flat)[:, 0, k - 1].reshape(nodes.shape[:-1]) * np.exp(-c * t * low[..., 0])


def _expm_stack(A: np.ndarray) -> np.ndarray:
    """expm of a stack of small matrices: scaling to norm <= 1/2, 24 Taylor terms (truncation < 1e-30
    relative), squaring back; one batched product per term and per squaring."""
    norm = float(np.max(np.sum(np.abs(A), axis=-1), initial=0.0))
    s = max(0, int(np.ceil(np.log2(norm))) + 1) if norm > 0 else 0
    B = A / 2.0**s
    out = np.broadcast_to(np.eye(A.shape[-1]), A.shape).copy()
    term = out.copy()
    for j in range(1, 25):
        term = term @ B / j
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


# ---------------------------------------------------------------------------------------- the dynamics
class FiniteWidthDynamics:
    """Mean and covariance of a width-n network's linearised model after gradient descent (or flow) on the
    squared loss, at infinite width plus the O(1/n) coefficient (module docstring).

    ``tensors``: a mapping with the readout's K, Theta, K1, Theta1 (P, P) and A, B, D, F (P, P, P, P) over the
    P = N + M inputs, train inputs first (index conventions of :mod:`ntk_theory.finite_width.tensors`), or a
    :class:`~ntk_theory.finite_width.predictions.FiniteWidthPredictions`; ``y_train`` (N,) one output or (N, O)
    (then every result carries an output axis after each input axis); ``learning_rate`` eta; ``loss`` "mean"
    (c = eta / (N O)) or "sum" (c = eta).  The infinite-width training NTK
    Theta(X, X) must be positive definite (the 1/n expansion of g around a null mode is not defined).
    ``dntk``: optionally the readout's P, Q, R, S, T, U (a mapping of (P, P, P, P) arrays, as :meth:`motion`
    takes them), kept as ``self.dntk`` and used by :meth:`motion` when it is given none.

    Parameters
    ----------
    tensors : mapping or FiniteWidthPredictions
        K, Theta, K1, Theta1 (P, P) and A, B, D, F (P, P, P, P), train inputs first.
    y_train : array_like
        (N,) targets, N <= P, or (N, O) for O outputs.
    learning_rate : float, default 1.0
        eta > 0.
    loss : {'mean', 'sum'}, default 'mean'
    dntk : mapping, optional
        P, Q, R, S, T, U (P, P, P, P).

    Raises
    ------
    ValueError
        If a tensor has the wrong shape or is not finite, y_train is not a finite (N,) or (N, O) array, the
        learning rate or loss is invalid, or Theta(X, X) is singular.

    Examples
    --------
    With every 1/n tensor zero the correction vanishes and the value is the infinite-width linear model:
    after k steps of rate c = eta / N the train mean is (1 - (1 - c Theta)^k) y, the test mean
    Theta(x', x) / Theta(x, x) times it, and at t = inf the test variance is the GP's K' - k^2 / K:

    >>> import numpy as np
    >>> T = np.array([[2.0, 1.0], [1.0, 2.0]]); Z2, Z4 = np.zeros((2, 2)), np.zeros((2,) * 4)
    >>> dyn = FiniteWidthDynamics(dict(K=T, Theta=T, K1=Z2, Theta1=Z2, A=Z4, B=Z4, D=Z4, F=Z4), [1.0],
    ...                           learning_rate=0.25)
    >>> m = dyn.mean(steps=3)
    >>> bool(np.allclose(m.value, [1 - 0.5 ** 3, 0.5 * (1 - 0.5 ** 3)])), bool(np.allclose(m.correction, 0.0))
    (True, True)
    >>> bool(np.isclose(dyn.covariance(np.inf).value[1, 1], 2.0 - 1.0 ** 2 / 2.0))
    True
    """

    def __init__(self, tensors, y_train, learning_rate: float = 1.0, loss: str = "mean", dntk=None):
        arrays = _tensor_arrays(tensors)
        y = np.asarray(y_train, dtype=np.float64)
        if y.ndim not in (1, 2) or y.size == 0 or not np.all(np.isfinite(y)):
            raise ValueError(f"y_train must be a finite (N,) array (one output) or (N, O) array (O outputs); got "
                             f"shape {y.shape}")
        N = y.shape[0]
        O = 1 if y.ndim == 1 else y.shape[1]
        P = arrays["K"].shape[0] if np.ndim(arrays["K"]) == 2 else -1
        if P < N:
            raise ValueError(f"the tensors must cover the {N} train inputs first (P >= N); got K of shape "
                             f"{np.shape(arrays['K'])}")
        for name in ("K", "Theta", "K1", "Theta1"):
            arrays[name] = as_kernel(arrays[name], name, shape=(P, P))
        for name in ("A", "B", "D", "F"):
            arrays[name] = as_kernel(arrays[name], name, shape=(P,) * 4)
        lr = float(learning_rate)
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate must be a finite number > 0; got {learning_rate!r}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(map(repr, LOSSES))}")
        self.y, self.n_train, self.n_inputs, self.n_outputs = y, N, P, O
        self.learning_rate, self.loss = lr, loss
        self.c = rate(lr, N, O, loss)
        self.tensors = arrays
        # the composite system: rows (input, output), input-major (train rows first), every tensor with its
        # output Kronecker deltas (module docstring); O = 1 is the tensors themselves
        self._N, self._P = N * O, P * O
        self._T = arrays if O == 1 else {k: _compose(v, TENSOR_OUTPUTS[k], O) for k, v in arrays.items()}
        self._yv = y.reshape(N * O)
        self.basis = Eigenbasis.of(self._T["Theta"][:N * O, :N * O], "Theta(X_train, X_train)")
        if np.any(self.basis.null):
            raise ValueError(f"Theta(X_train, X_train) is singular ({int(self.basis.null.sum())} null mode(s)): "
                             f"the 1/n expansion needs a positive definite training NTK")
        self._dntk = None if dntk is None else _dntk_arrays(dntk, P)
        self._dntk_source = None
        self._rotate()

    @classmethod
    def from_network(cls, activation, X_train, y_train, X_test=None, depth: int | None = None, *, C_W=1.0, C_b=0.0,
                     param: str = "ntk", learning_rate: float = 1.0, loss: str = "mean", tol: float = 1e-10,
                     dntk=None, kink_terms: bool = False):
        """The tensors of an MLP (``activation`` with ``depth`` hidden layers, or a network description) at
        X_train u X_test by :func:`ntk_theory.finite_width.finite_width`, then the dynamics.

        ``dntk``: None (default): the readout's P, Q, R, S, T, U by the recursions (:func:`readout_dntk`),
        computed when :meth:`motion` first needs them (so :meth:`mean` and :meth:`covariance` do not pay for
        them: the N-input dNTK's cost grows steeply with the number of inputs for activations without
        closed-form averages); or a mapping of P..U to use instead.  ``kink_terms``: as in
        :meth:`~ntk_theory.finite_width.network.FiniteWidthRecursion.dntk` (a no-op for smooth activations;
        piecewise-linear ones only pointwise, False, the one form the ddNTK recursion has).

        Parameters
        ----------
        activation : str or Layer
            A library activation name or expression (with ``depth``), or a network description.
        X_train : array_like
            (N, n_0) training inputs.
        y_train : array_like
            (N,) targets, or (N, O) for O outputs.
        X_test : array_like, optional
            (M, n_0) test inputs.
        depth : int, optional
            Hidden layers, with an activation name.
        C_W, C_b : float, default 1.0 and 0.0
        param : {'ntk', 'standard', 'unit'}, default 'ntk'
        learning_rate : float, default 1.0
        loss : {'mean', 'sum'}, default 'mean'
        tol : float, default 1e-10
            The finite-width recursions' tolerance.
        dntk : mapping, optional
        kink_terms : bool, default False

        Returns
        -------
        FiniteWidthDynamics

        Examples
        --------
        The tensors of a one-layer ReLU network (their derivation is not run as a doctest):

        >>> X = np.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]])
        >>> dyn = FiniteWidthDynamics.from_network("relu", X, [1.0, -1.0], depth=1, C_W=2.0)  # doctest: +SKIP
        >>> bool(np.allclose(dyn.mean(np.inf).value, [1.0, -1.0]))                            # doctest: +SKIP
        True
        """
        from ..finite_width import finite_width

        X = np.asarray(X_train, dtype=float)
        Xall = X if X_test is None else np.concatenate([X, np.asarray(X_test, dtype=float)])
        pred = finite_width(activation, Xall, depth, C_W=C_W, C_b=C_b, param=param, tol=tol, progress=False)
        dyn = cls(pred, y_train, learning_rate=learning_rate, loss=loss, dntk=dntk)
        if dntk is None:
            dyn._dntk_source = lambda: readout_dntk(activation, Xall, depth, C_W=C_W, C_b=C_b, param=param,
                                                    kink_terms=kink_terms, tol=tol, states=pred.layers)
        return dyn

    @property
    def dntk(self) -> dict | None:
        """The readout's P, Q, R, S, T, U (P, P, P, P) that :meth:`motion` uses by default: those passed in, or
        (:meth:`from_network`) the recursions', computed on first access; None if neither."""
        if self._dntk is None and self._dntk_source is not None:
            self._dntk = _dntk_arrays(self._dntk_source(), self.n_inputs)
        return self._dntk

    # ------------------------------------------------------------------ rotated tensors
    def _rotate(self):
        N, P = self._N, self._P
        R = np.eye(P)
        R[:N, :N] = self.basis.eigenvectors
        self.rotation = R
        T = self._T
        two = lambda X: R.T @ X @ R
        four = lambda X: np.einsum("ai,bj,ck,dl,abcd->ijkl", R, R, R, R, X, optimize=True)
        self._K, self._Th, self._K1, self._Th1 = (two(T[k]) for k in ("K", "Theta", "K1", "Theta1"))
        A, B, D, F = (T[k] for k in ("A", "B", "D", "F"))
        self._Sigma = four(A + B.transpose(0, 2, 1, 3) + B.transpose(0, 2, 3, 1))
        self._Xi = four(D + F.transpose(0, 2, 1, 3) + F.transpose(0, 2, 3, 1))
        self._y = R[:N, :N].T @ self._yv

    def _parts(self, t, discrete):
        """Rotated (mean_inf, mean_1, cov_inf, cov_1) at one time t."""
        N, P = self._N, self._P
        g, g1, g2 = divided_differences(self.basis.eigenvalues, t, discrete=discrete, c=self.c)
        Th = self._Th[:, :N]  # (P, N): Theta(x, eigen j)
        M0 = Th * g[None, :]
        l0 = np.eye(P)
        l0[:, :N] -= M0
        J = np.eye(P)[:, :, None] * g[None, None, :]
        J[:, :N, :] += Th[:, :, None] * g1[None, :, :]  # J_xaj
        S, Xi, K, y = self._Sigma, self._Xi, self._K, self._y
        DM1 = np.einsum("xaj,aj->xj", J, self._Th1[:, :N])
        Q = (np.einsum("ij,xiij->xj", g1, S[:, :N, :N, :N])
             + np.einsum("xi,ikj,ikkj->xj", Th, g2, S[:N, :N, :N, :N], optimize=True))
        mean_inf = M0 @ y
        mean_1 = (DM1 + Q) @ y
        cov_inf = l0 @ K @ l0.T
        W = (DM1 + Q) @ K[:N, :] @ l0.T
        Xc = np.einsum("xaj,ajjc->xc", J, Xi[:, :N, :N, :]) @ l0.T
        Y = np.einsum("xaj,ajbk->xjbk", J, S[:, :N, :, :N], optimize=True)
        Z = np.einsum("xjbk,ybk,jk->xy", Y, J, K[:N, :N] + np.outer(y, y), optimize=True)
        cov_1 = l0 @ self._K1 @ l0.T - (W + W.T) - (Xc + Xc.T) + Z
        return mean_inf, mean_1, cov_inf, cov_1

    def _evaluate(self, t, steps):
        sched = _schedule(t, steps)
        times = np.atleast_1d(sched.times)
        R = self.rotation
        out = [self._parts(float(s), sched.discrete) for s in times.ravel()]
        mi, m1, ci, c1 = (np.stack([o[k] for o in out]) for k in range(4))
        mi, m1 = mi @ R.T, m1 @ R.T
        ci, c1 = R @ ci @ R.T, R @ c1 @ R.T
        shape = sched.times.shape
        return (Expansion(self._shaped(mi, shape), self._shaped(m1, shape)),
                Expansion(self._shaped(ci, shape, 2), self._shaped(c1, shape, 2)))

    def _shaped(self, a: np.ndarray, shape: tuple, rows: int = 1) -> np.ndarray:
        """Composite rows (input-major) -> ``shape`` + (P,) * rows for one output given as a vector, else
        ``shape`` + (P, O) * rows."""
        per = (self.n_inputs,) if self.y.ndim == 1 else (self.n_inputs, self.n_outputs)
        return a.reshape(shape + per * rows)

    def mean(self, t=None, *, steps=None) -> Expansion:
        """E[f_lin] at all P inputs (train first) after ``steps`` of gradient descent or at flow time ``t``
        (inf allowed; descent's and flow's limits agree for the linearised model), shape (*t.shape, P) (O
        outputs, y (N, O): (*t.shape, P, O)): infinite-width value and O(1/n) coefficient.

        Parameters
        ----------
        t : float or array_like, optional
            Gradient-flow time(s); or give ``steps``.
        steps : int or array_like, optional

        Returns
        -------
        Expansion
            Value and O(1/n) coefficient, each of shape (*t.shape, P).

        Examples
        --------
        See :class:`FiniteWidthDynamics`.
        """
        return self._evaluate(t, steps)[0]

    def covariance(self, t=None, *, steps=None) -> Expansion:
        """Cov[f_lin] over networks, (*t.shape, P, P) (O outputs: (*t.shape, P, O, P, O)): infinite-width value
        and O(1/n) coefficient.  The NTK's motion adds :meth:`motion_covariance`.

        Parameters
        ----------
        t, steps
            As :meth:`mean`.

        Returns
        -------
        Expansion
            Value and O(1/n) coefficient, each of shape (*t.shape, P, P).

        Examples
        --------
        See :class:`FiniteWidthDynamics`.
        """
        return self._evaluate(t, steps)[1]

    # ------------------------------------------------------------------ the NTK's motion (part b)
    def motion(self, t=None, *, steps=None, dntk=None, max_steps: int = 1_000_000) -> Expansion:
        """E[f - f_lin] after gradient-descent ``steps`` or at gradient-flow time ``t`` (each ``inf`` allowed),
        (*shape, P) (O outputs: (*shape, P, O)): value 0 (no motion at infinite width) and the O(1/n) coefficient, from the readout's dNTK
        and ddNTK tensors ``dntk`` (a mapping with P, Q, R, S, T, U, each (P, P, P, P) over the inputs, spec
        normalisation: n E[...] at leading order; default ``self.dntk``, which :meth:`from_network` fills from
        the recursions).

        Gradient descent (``steps``) iterates the recursion phi_(s+1) = phi_s - c Theta(., X) phi_s(X) + E[src_s]
        (module docstring; ``steps=inf``: its limit, the sources summed over all steps in closed form, exact up
        to rounding; it vanishes on the train rows).  Gradient flow (``t``, time in steps as in :meth:`mean`: df/dt = -c Theta (f - y)) is the
        closed form of :meth:`_flow_motion` (exponential divided differences, exact up to rounding); its
        ``t = inf`` is the flow's limit, which differs from ``steps=inf`` on the test rows by the step's
        c^2, c^3 Taylor terms (both vanish on the train rows).

        Parameters
        ----------
        t : float or array_like, optional
            Gradient-flow time(s) (``np.inf`` allowed); or give ``steps``.
        steps : int or array_like, optional
            Gradient-descent steps (``np.inf`` allowed).
        dntk : mapping, optional
            P, Q, R, S, T, U, each (P, P, P, P).
        max_steps : int, default 1000000
            Accepted for compatibility and ignored (``steps=inf`` is a closed form, not an iteration).

        Returns
        -------
        Expansion

        Raises
        ------
        ValueError
            For invalid times or steps, without dNTK tensors, or ``steps=inf`` with c l outside (0, 2) for
            some eigenvalue l of Theta(X, X) (gradient descent not convergent).

        Examples
        --------
        Without dNTK and ddNTK (all zero) the network does not move beyond its linearisation:

        >>> import numpy as np
        >>> T = np.array([[2.0, 1.0], [1.0, 2.0]]); Z2, Z4 = np.zeros((2, 2)), np.zeros((2,) * 4)
        >>> dyn = FiniteWidthDynamics(dict(K=T, Theta=T, K1=Z2, Theta1=Z2, A=Z4, B=Z4, D=Z4, F=Z4), [1.0])
        >>> e = dyn.motion(steps=[1, 5], dntk={name: Z4 for name in "PQRSTU"})
        >>> bool(np.all(e.value == 0)), bool(np.all(e.correction == 0)), e.value.shape
        (True, True, (2, 2))
        >>> bool(np.all(dyn.motion(t=[0.5, np.inf], dntk={name: Z4 for name in "PQRSTU"}).correction == 0))
        True
        """
        sched = _schedule(t, steps)
        d = self._dntk_composite(dntk)
        times = np.atleast_1d(sched.times).ravel()
        if sched.discrete:
            out = self._descent(times, lambda s: self._motion(s, d, max_steps, set())[s],
                                lambda last, rec: self._motion(last, d, max_steps, rec))
        else:
            weights = self._flow_weights(d)
            out = np.stack([self.rotation @ self._flow_motion(float(s), weights) for s in times])
        return Expansion(np.zeros(self._shaped(out, sched.times.shape).shape), self._shaped(out, sched.times.shape))

    def motion_covariance(self, t=None, *, steps=None, dntk=None, max_steps: int = 1_000_000) -> Expansion:
        """The NTK's motion's part of the covariance, Cov[f] - Cov[f_lin] = Cov[f - f_lin, f_lin] + its
        transpose + O(1/n^2), after gradient-descent ``steps`` or at gradient-flow time ``t`` (each ``inf``
        allowed), (*shape, P, P) (O outputs: (*shape, P, O, P, O)): value 0 and the O(1/n) coefficient
        (module docstring, "The motion's part of the covariance"); Cov[f(t)] = :meth:`covariance` + this.

        With phi = f - f_lin (O(1/n) in every network) and f_lin = l0 f0 + M(Theta) y + O(n^-1/2) (l0 =
        I - M(Theta) on the train columns), the coefficient is C l0^T + l0 C^T with C_xz = n Cov(phi_x, f0_z):
        the motion's recursion (descent) or closed form (flow) of :meth:`motion` with each source's moment
        replaced by its cross-moment with f0_z, at leading order (Wick, f0 ~ N(0, K))

            n E[dH(x0,x1,x2) eps_i eps_j f0_z] = Pc(x0,x1,x2,i) K_jz + Pc(x0,x1,x2,j) K_iz + Pc(x0,x1,x2,z) (K + y y^T)_ij
            E[eps_i eps_j eps_k f0_z]          = Ky_ij K_kz + Ky_ik K_jz + Ky_jk K_iz,   Ky = K + y y^T (train block)

        (eps = f0(X) - y; the ddNTKs at their means I/n, II/n).  Dropped, O(1/n^2) or O(n^-3/2): Cov(phi, phi),
        the NTK's fluctuation in f_lin times phi, and the ddNTKs' fluctuations.  On the train rows and columns
        at t = inf (descent or flow) it vanishes (phi and the train rows of l0 do).

        Parameters
        ----------
        t, steps, dntk, max_steps
            As :meth:`motion`.

        Returns
        -------
        Expansion

        Raises
        ------
        ValueError
            As :meth:`motion`.

        Examples
        --------
        Without dNTK and ddNTK the covariance is the linearised model's:

        >>> import numpy as np
        >>> T = np.array([[2.0, 1.0], [1.0, 2.0]]); Z2, Z4 = np.zeros((2, 2)), np.zeros((2,) * 4)
        >>> dyn = FiniteWidthDynamics(dict(K=T, Theta=T, K1=Z2, Theta1=Z2, A=Z4, B=Z4, D=Z4, F=Z4), [1.0])
        >>> e = dyn.motion_covariance(steps=[1, 5], dntk={name: Z4 for name in "PQRSTU"})
        >>> bool(np.all(e.correction == 0)), e.correction.shape
        (True, (2, 2, 2))
        """
        sched = _schedule(t, steps)
        d = self._dntk_composite(dntk)
        times = np.atleast_1d(sched.times).ravel()
        if sched.discrete:
            C = self._descent(times, lambda s: self._motion_cross(s, d, max_steps, set())[s],
                              lambda last, rec: self._motion_cross(last, d, max_steps, rec))
        else:
            weights = self._flow_weights(d, cross=True)
            C = np.stack([self.rotation @ self._flow_motion(float(s), weights) for s in times])
        l0 = np.stack([self._l0(float(s), sched.discrete) for s in times])
        LC = l0 @ np.swapaxes(C, 1, 2)
        out = LC + np.swapaxes(LC, 1, 2)
        shape = sched.times.shape
        return Expansion(np.zeros(self._shaped(out, shape, 2).shape), self._shaped(out, shape, 2))

    def _dntk_composite(self, dntk) -> dict:
        """P..U (checked, (P,) * 4), with their output Kronecker deltas for O > 1 (composite rows)."""
        arrays = _dntk_arrays(self.dntk if dntk is None else dntk, self.n_inputs)
        O = self.n_outputs
        return arrays if O == 1 else {k: _compose(v, DNTK_OUTPUTS[k], O) for k, v in arrays.items()}

    @staticmethod
    def _descent(times, at_inf, upto):
        """Stack the descent values at ``times`` (integers and inf): ``upto(last, record)`` runs the recursion
        once to the largest finite time recording the others, ``at_inf(inf)`` its limit."""
        finite = sorted({int(s) for s in times if np.isfinite(s)})
        record = upto(finite[-1], set(finite)) if finite else {}
        if np.any(np.isinf(times)):
            record[np.inf] = at_inf(np.inf)
        return np.stack([record[int(s) if np.isfinite(s) else np.inf] for s in times])

    def _l0(self, t, discrete) -> np.ndarray:
        """l0 = I - M(Theta) on the train columns (composite rows, original coordinates): f_lin = l0 f0 +
        M(Theta) y at infinite width."""
        N, P, R = self._N, self._P, self.rotation
        g = _g_values(self.basis.eigenvalues, t, discrete, self.c)
        V = self.basis.eigenvectors
        l0 = np.eye(P)
        l0[:, :N] -= self._T["Theta"][:, :N] @ (V * g[None, :]) @ V.T
        return l0

    def _motion_terms(self, d):
        """(Pc, ddI, ddII, ddAll) (P,) * 4 from P..U: n E[dH z], n E[ddIH], n E[ddIIH], and the dNTK's
        derivative along v, ddAll(x0, x1, x2, e) = ddIH + ddIIH + ddIIH with x1, x2 exchanged."""
        Pc = d["P"] + d["Q"] + d["Q"].transpose(0, 2, 1, 3)
        R = d["R"]
        ddI = R + R.transpose(0, 2, 3, 1) + R.transpose(0, 3, 1, 2)
        ddII = d["S"] + d["T"] + d["U"]
        return Pc, ddI, ddII, ddI + ddII + ddII.transpose(0, 2, 1, 3)

    def _cross_moments(self):
        """(K(X, .) (N, P), Ky = K(X, X) + y y^T, M4 (N, N, N, P)): E[eps_i eps_j eps_k f0_z] = Ky_ij K_kz +
        Ky_ik K_jz + Ky_jk K_iz (composite rows, original coordinates)."""
        N = self._N
        Kz = self._T["K"][:N, :]
        Ky = Kz[:, :N] + np.outer(self._yv, self._yv)
        M4 = (np.einsum("ij,kz->ijkz", Ky, Kz) + np.einsum("ik,jz->ijkz", Ky, Kz)
              + np.einsum("jk,iz->ijkz", Ky, Kz))
        return Kz, Ky, M4

    def _flow_weights(self, d, cross: bool = False):
        """The rotated weights W1 (P, N, N) and W2 (P, N, N, N) of :meth:`_flow_motion` (rows x rotated as
        ``self.rotation``, train indices b, d, e in the eigenbasis of Theta(X, X)); ``cross``: those of
        C_xz = n Cov(phi_x, f0_z), each with a last axis z (P, original coordinates)."""
        N = self._N
        tr = slice(0, N)
        Pc, _, _, ddAll = self._motion_terms(d)
        A1s = ddAll[:, tr, tr, tr] + ddAll[tr, :, tr, tr].transpose(1, 0, 2, 3)
        Rt, V = self.rotation, self.basis.eigenvectors
        rot = lambda T: np.einsum("Xx,Bb,Dd,Ee,XBDE->xbde", Rt, V, V, V, T, optimize=True)
        A1s = rot(A1s)
        if not cross:
            P1s = rot(Pc[:, tr, tr, tr] + Pc[tr, :, tr, tr].transpose(1, 0, 2, 3))
            K, y = self._T["K"][:N, :N], self._yv
            M3 = -(np.einsum("i,jk->ijk", y, K) + np.einsum("j,ik->ijk", y, K) + np.einsum("k,ij->ijk", y, K)
                   + np.einsum("i,j,k->ijk", y, y, y))
            M3 = np.einsum("Ii,Jj,Kk,IJK->ijk", V, V, V, M3, optimize=True)
            yt = V.T @ y
            W1 = np.einsum("xbdb,d->xbd", P1s, yt) + np.einsum("xbdd,b->xbd", P1s, yt)
            W2 = A1s * M3.transpose(2, 0, 1)[None]
            return W1, W2
        P1sF = Pc[:, tr, tr, :] + Pc[tr, :, tr, :].transpose(1, 0, 2, 3)  # (P, N, N, P): last index any row
        P1sF = np.einsum("Xx,Bb,Dd,XBDz->xbdz", Rt, V, V, P1sF, optimize=True)
        P1s = np.einsum("xbdZ,Ze->xbde", P1sF[..., tr], V)
        Kz, Ky, M4 = self._cross_moments()
        Kt, Kyt = V.T @ Kz, V.T @ Ky @ V
        # W1 = -n E~[dH(x,b,d) eps_d eps_b f0_z]: the mean's W1 with its moment -(Pc_d y_b + Pc_b y_d) replaced
        W1 = -(np.einsum("xbdd,bz->xbdz", P1s, Kt) + np.einsum("xbdb,dz->xbdz", P1s, Kt)
               + P1sF * Kyt.T[None, :, :, None])
        M4 = np.einsum("Ii,Jj,Kk,IJKz->ijkz", V, V, V, M4, optimize=True)
        W2 = A1s[..., None] * M4.transpose(2, 0, 1, 3)[None]
        return W1, W2

    def _flow_motion(self, t, weights):
        r"""The gradient-flow motion phi(t) = E[f - f_lin](t) at O(1/n), rotated rows (``self.rotation``).

        Flow (time in steps, rate c): df/dt = -c H_t(., X) eps, dH_t(x, b)/dt = -c sum_d [dH_t(x, b, d) +
        dH_t(b, x, d)] eps_d, d dH_t(x0, x1, x2)/dt = -c sum_e ddAll(x0, x1, x2, e) eps_e; no Taylor terms of a
        step, so of the descent's sources only (1) and (2a) remain, as integrals:

            dphi/dt = -c Theta(., X) phi(X) + src(t),
            src(t)_x = -c^2 sum_(b,d,i) P1s(x,b,d,i) [B(t)_di (A(t) y)_b + A(t)_bi (B(t) y)_d]
                       - c^3 sum_(b,d,e,k) A1s(x,b,d,e) A(t)_bk int_0^t sum_(i,j) A(s)_di B(s)_ej M3_ijk ds

        with A(t) = exp(-c Theta t), B(t) = int_0^t A.  In the eigenbasis of Theta(X, X) every factor is a sum
        of exponentials and every time integral a convolution, so, with F[mu_0, ..., mu_k] the divided
        differences of mu -> exp(-c mu t) (the (0, k) entry of expm(-c t J), J bidiagonal with the nodes on
        the diagonal and ones above it; Hermite-Genocchi: the k-fold convolution of exp(-c mu_i s) is
        (-1/c)^k F[mu_0..mu_k]),

            phi_k(t)  = -sum_(b,d) W1_kbd F[l_k, l_b, l_b + l_d] + sum_(b,d,e) W2_kbde F[l_k, l_b, l_b + l_d, l_b + l_d + l_e]
            phi_x(t)  = -sum W1_xbd F[0, l_b, l_b + l_d] + sum W2_xbde F[0, l_b, l_b + l_d, l_b + l_d + l_e]
                        + sum_k Theta~_xk (-sum W1_kbd F[0, l_k, l_b, l_b + l_d] + sum W2_kbde F[0, l_k, l_b, ...])

        (k a train eigen-index, x a test row), W1_xbd = P1s~_xbdb y~_d + P1s~_xbdd y~_b, W2_xbde = A1s~_xbde M3~_deb,
        P1s = Pc(x, b, d, .) + Pc(b, x, d, .), A1s = ddAll(x, b, d, e) + ddAll(b, x, d, e), M3 = E[eps_0^3].  At
        t = inf every F with positive nodes vanishes (phi = 0 on the train rows) and F[0, mu_1..mu_k] =
        prod_j (-1/mu_j).  Weights with a trailing axis (:meth:`_flow_weights` ``cross``) give phi with that
        axis.  Error model: exact up to rounding (expm of k x k bidiagonal matrices, k <= 5).
        Cost O(P N^4) plus N^4 5 x 5 matrix exponentials per time."""
        W1, W2 = weights
        N, P, c = self._N, self._P, self.c
        lam = self.basis.eigenvalues
        lb = lam[:, None, None]
        lbd = lam[:, None, None] + lam[None, :, None]
        lbde = lbd + lam[None, None, :]
        mu1 = np.stack(np.broadcast_arrays(lb[..., 0], lbd[..., 0]), axis=-1)  # (N, N, 2)
        mu2 = np.stack(np.broadcast_arrays(lb, lbd, lbde), axis=-1)  # (N, N, N, 3)

        def F(first, mu):
            """F[first..., mu...] for every combination: first (..., a) prepended to mu (..., m)."""
            lead, inner = first.shape[:-1], mu.shape[:-1]
            a = np.broadcast_to(first.reshape(lead + (1,) * len(inner) + first.shape[-1:]),
                                lead + inner + first.shape[-1:])
            nodes = np.concatenate([a, np.broadcast_to(mu, lead + mu.shape)], axis=-1)
            return _exp_divided_difference(nodes, t, c)

        phi = np.zeros((P,) + W1.shape[3:])
        k_nodes = lam[:, None]
        phi[:N] = (-np.einsum("kbd...,kbd->k...", W1[:N], F(k_nodes, mu1))
                   + np.einsum("kbde...,kbde->k...", W2[:N], F(k_nodes, mu2)))
        if P > N:
            zero = np.zeros((1,))
            zk = np.stack([np.zeros(N), lam], axis=-1)  # (N, 2): (0, l_k)
            inner = (-np.einsum("kbd...,kbd->k...", W1[:N], F(zk, mu1))
                     + np.einsum("kbde...,kbde->k...", W2[:N], F(zk, mu2)))
            phi[N:] = (-np.einsum("xbd...,bd->x...", W1[N:], F(zero, mu1))
                       + np.einsum("xbde...,bde->x...", W2[N:], F(zero, mu2)) + self._Th[N:, :N] @ inner)
        return phi

    def _rotated_terms(self, d):
        """The motion's tensors with every train index in the eigenbasis of Theta(X, X) and the row x rotated as
        ``self.rotation``: (P1, P1s, A1s, H2, A1, I1) (P, N, N, N) of :meth:`_motion`'s sources and the rotation
        ``rot`` (x, b, d, e: R, V, V, V) itself."""
        N = self._N
        tr = slice(0, N)
        Rt, V = self.rotation, self.basis.eigenvectors
        rot = lambda T: np.einsum("Xx,Bb,Dd,Ee,XBDE->xbde", Rt, V, V, V, T, optimize=True)
        Pc, ddI, ddII, ddAll = self._motion_terms(d)
        A1s = ddAll[:, tr, tr, tr] + ddAll[tr, :, tr, tr].transpose(1, 0, 2, 3)
        H2 = (ddI[:, tr, tr, tr] + ddI[tr, :, tr, tr].transpose(1, 0, 2, 3) + 2 * ddII[:, tr, tr, tr])
        return Pc, (rot(A1s), rot(H2), rot(ddAll[:, tr, tr, tr]), rot(ddI[:, tr, tr, tr]))

    def _limit_weights(self):
        """The step sums over s = 0, 1, ... of the descent sources' weights (:meth:`_motion`), in the eigenbasis
        of Theta(X, X) with r = 1 - c l (|r| < 1), a_s = r^s, b_s = sum_(q<s) r^q = (1 - r^s) / (c l),
        y_s(n, p) = sum_(q<s) a_n b_p, z_s(n, p) = sum_(q<s) a_n a_p, u = r_m r_n (geometric series):

            sum a_m b_n         = r_m / (c l_m (1 - u))
            sum a_m a_n         = 1 / (1 - u)
            sum a_m y_s(n, p)   = r_m u / (c l_m (1 - u) (1 - u r_p))
            sum a_m z_s(n, p)   = r_m / (c l_m (1 - u r_p))
            sum a_m a_n b_p     = u / ((1 - u) (1 - u r_p))
            sum a_m a_n a_p     = 1 / (1 - u r_p)

        (no differences of nearly equal terms: each is a product of positive factors and the r's)."""
        lam, c = self.basis.eigenvalues, self.c
        r = 1.0 - c * lam
        u = np.multiply.outer(r, r)
        ur = np.multiply.outer(u, r)
        ram = (r / (c * lam))[:, None]
        return (ram / (1.0 - u), 1.0 / (1.0 - u), (ram * u)[:, :, None] / ((1.0 - u)[:, :, None] * (1.0 - ur)),
                ram[:, :, None] / (1.0 - ur), u[:, :, None] / ((1.0 - u)[:, :, None] * (1.0 - ur)), 1.0 / (1.0 - ur))

    def _limit(self, sources):
        """phi at steps = inf (rotated rows) from the sources summed over all steps, ``sources`` of
        :meth:`_limit_weights`: in the eigenbasis the train rows obey phi_k(s+1) = r_k phi_k(s) + src_k(s), so
        phi_k -> 0 and sum_s phi_k(s) = sum_s src_k(s) / (c l_k), and a test row is phi_x = sum_s src_x(s) -
        sum_k Theta~_xk sum_s src_k(s) / l_k."""
        N, lam = self._N, self.basis.eigenvalues
        phi = np.zeros_like(sources)
        lam_shape = (N,) + (1,) * (sources.ndim - 1)
        phi[N:] = sources[N:] - self._Th[N:, :N] @ (sources[:N] / lam.reshape(lam_shape))
        return phi

    def _motion(self, t, d, max_steps, record):
        """phi_(s+1) = phi_s - c Theta(., X) phi_s(X) + E[src_s] (docs: the sources (1), (2a), (2b), (3a), (3b),
        (4)), phi_0 = 0; returns {s: phi_s for s in record} and phi_t under the key t.

        The recursion runs in the eigenbasis of Theta(X, X) (every train index rotated by V, the rows by
        ``self.rotation``), where the propagator A_s = (1 - c Theta(X, X))^s = V diag(a_s) V^T, a_s = (1 - c
        l)^s, and B_s = sum_(q<s) A_q are diagonal, and every source is a contraction of a fixed tensor with
        weights that are products of a_s, b_s and their running sums (cost O(P N^3) per step).  ``t = inf``:
        the limit in closed form (:meth:`_limit_weights`, :meth:`_limit`), exact up to rounding."""
        N, P, c = self._N, self._P, self.c
        V, R = self.basis.eigenvectors, self.rotation
        K = self._T["K"][:N, :N]
        y = self._yv
        tr = slice(0, N)
        Pc, (A1s, H2, A1, I1) = self._rotated_terms(d)
        rot = lambda T: np.einsum("Xx,Bb,Dd,Ee,XBDE->xbde", R, V, V, V, T, optimize=True)
        P1 = rot(Pc[:, tr, tr, tr])  # [x, b, d, e]
        P1s = P1 + rot(Pc[tr, :, tr, tr].transpose(1, 0, 2, 3))  # + P[b, x, d, e]
        P1s_bdb, P1s_bdd = np.einsum("xbdb->xbd", P1s), np.einsum("xbdd->xbd", P1s)
        P1_bdd = np.einsum("xbdd->xbd", P1)
        M3 = -(np.einsum("i,jk->ijk", y, K) + np.einsum("j,ik->ijk", y, K) + np.einsum("k,ij->ijk", y, K)
               + np.einsum("i,j,k->ijk", y, y, y))
        M3 = np.einsum("Ii,Jj,Kk,IJK->ijk", V, V, V, M3, optimize=True)
        M3t = M3.transpose(2, 0, 1).ravel()  # M3(n, p, m) at [m, n, p]
        M3 = M3.ravel()
        A1s, H2, A1, I1 = (T.reshape(P, N ** 3) for T in (A1s, H2, A1, I1))
        yt = self._y

        Tcat = np.concatenate([A1s, H2, A1, I1], axis=1)  # (P, 4 N^3): the ddNTK sources' tensors
        Mcat = np.concatenate([M3t, M3t, M3, M3])

        def dsrc(ab, aa):
            """The dNTK sources (1), (3a) for weights a_m b_n, a_m a_n."""
            return (-c**2 * ((P1s_bdb * ab) @ yt @ np.ones(N) + (P1s_bdd * ab).sum(2) @ yt)  # (1)
                    - c**2 * ((P1_bdd * aa).sum(2) @ yt))  # (3a)

        def ddsrc(W):
            """The ddNTK sources (2a), (2b), (3b), (4) of a block of steps, W (S, 4 N^3) (:meth:`_ddntk_weights`)."""
            return (W * Mcat) @ Tcat.T

        return self._run_descent(t, record, dsrc, ddsrc, (P,))

    def _motion_cross(self, t, d, max_steps, record):
        """C_s = n Cov(phi_s, f0) (P, P) by the recursion of :meth:`_motion` with every source's moment replaced
        by its cross-moment with f0_z (:meth:`motion_covariance`): for the dNTK sources (1), (3a)
        n E[dH(x,b,d) eps_i eps_j f0_z] = Pc_i K_jz + Pc_j K_iz + Pc_z Ky_ij, for the ddNTK sources (2a), (2b),
        (3b), (4) M3 -> M4 (:meth:`_cross_moments`).  Returns {s: C_s for s in record} and C_t under the key t.
        Run in the eigenbasis of Theta(X, X) as :meth:`_motion` (the rows x and every train index b, d, e
        rotated, z in the original coordinates), O(P^2 N^3) per step; ``t = inf`` in closed form."""
        N, P, c = self._N, self._P, self.c
        V, R = self.basis.eigenvectors, self.rotation
        tr = slice(0, N)
        Pc, (A1s, H2, A1, I1) = self._rotated_terms(d)
        rot3 = lambda T: np.einsum("Xx,Bb,Dd,XBDz->xbdz", R, V, V, T, optimize=True)
        P1F = rot3(Pc[:, tr, tr, :])  # [x, b, d, z]: dH(x, b, d) with f0 at any row z
        P1sF = P1F + rot3(Pc[tr, :, tr, :].transpose(1, 0, 2, 3))
        P1, P1s = (np.einsum("xbdZ,Ze->xbde", T[..., tr], V) for T in (P1F, P1sF))
        P1s_bdb, P1s_bdd = np.einsum("xbdb->xbd", P1s), np.einsum("xbdd->xbd", P1s)
        P1_bdb, P1_bdd = np.einsum("xbdb->xbd", P1), np.einsum("xbdd->xbd", P1)
        P1F, P1sF = P1F.reshape(P, N * N, P), P1sF.reshape(P, N * N, P)
        Kz, Ky, M4 = self._cross_moments()
        Kt, Kyt = V.T @ Kz, V.T @ Ky @ V
        M4 = np.einsum("Ii,Jj,Kk,IJKz->ijkz", V, V, V, M4, optimize=True)
        M4t = np.ascontiguousarray(M4.transpose(2, 0, 1, 3)).reshape(N ** 3, P)  # M4(n, p, m, z) at [m, n, p]
        M4 = M4.reshape(N ** 3, P)
        A1s, H2, A1, I1 = (T.reshape(P, N ** 3) for T in (A1s, H2, A1, I1))

        Tcat = np.concatenate([A1s, H2, A1, I1], axis=1)  # (P, 4 N^3): the ddNTK sources' tensors
        Mcat = np.concatenate([M4t, M4t, M4, M4])  # (4 N^3, P)

        def dsrc(ab, aa):
            """The dNTK sources (1), (3a) for weights a_m b_n, a_m a_n."""
            return (c**2 * ((P1s_bdd * ab).sum(2) @ Kt + (P1s_bdb * ab).sum(1) @ Kt
                            + np.einsum("xmz,m->xz", P1sF, (ab * Kyt.T).ravel()))  # (1)
                    + 0.5 * c**2 * ((P1_bdb * aa).sum(1) @ Kt + (P1_bdd * aa).sum(2) @ Kt
                                    + np.einsum("xmz,m->xz", P1F, (aa * Kyt).ravel())))  # (3a)

        def ddsrc(W):
            """The ddNTK sources (2a), (2b), (3b), (4) of a block of steps, W (S, 4 N^3) (:meth:`_ddntk_weights`):
            row by row, each a (S, 4 N^3) x (4 N^3, P) product."""
            out = np.empty((W.shape[0], P, P))
            for x in range(P):
                out[:, x, :] = W @ (Tcat[x][:, None] * Mcat)
            return out

        return self._run_descent(t, record, dsrc, ddsrc, (P, P))

    def _ddntk_weights(self, ay, az, aab, aaa) -> np.ndarray:
        """The ddNTK sources' weights a_m y(n, p), a_m z(n, p), a_m a_n b_p, a_m a_n a_p (..., N, N, N) with the
        sources' coefficients -c^3, -c^3/2, -c^3/2, -c^3/6, concatenated (..., 4 N^3)."""
        c = self.c
        lead = np.shape(ay)[:-3]
        return np.concatenate([(-c**3 * ay).reshape(lead + (-1,)), (-0.5 * c**3 * az).reshape(lead + (-1,)),
                               (-0.5 * c**3 * aab).reshape(lead + (-1,)), (-c**3 / 6.0 * aaa).reshape(lead + (-1,))],
                              axis=-1)

    def _run_descent(self, t, record, dsrc, ddsrc, shape, block: int = 64):
        """The descent recursion phi_(s+1) = phi_s - c Theta~(., X) phi_s(X) + src_s (rotated rows, ``shape``
        (P,) or (P, P)) with src_s = dsrc(a_m b_n, a_m a_n) + ddsrc(ddNTK weights): the ddNTK sources of ``block``
        steps at a time (their weights do not depend on phi), the dNTK ones step by step; ``t = inf`` the
        closed-form limit.  Returns {s: R phi_s for s in record} and R phi_t under the key t."""
        N, c, R = self._N, self.c, self.rotation
        self._check_descent(t)
        if np.isinf(t):
            ab, aa, ay, az, aab, aaa = self._limit_weights()
            src = dsrc(ab, aa) + ddsrc(self._ddntk_weights(ay, az, aab, aaa)[None])[0]
            return {t: R @ self._limit(src)}
        r = 1.0 - c * self.basis.eigenvalues
        Th = self._Th[:, :N]
        a, b = np.ones(N), np.zeros(N)  # A_s, B_s = V diag(a) V^T, V diag(b) V^T
        ys, zs = np.zeros((N, N)), np.zeros((N, N))  # sum_(q<s) a_n b_p, a_n a_p
        phi = np.zeros(shape)
        out = {0: R @ phi} if 0 in record else {}
        t = int(t)
        block = max(1, min(block, int(4e6 // (4 * N ** 3))))
        s = 0
        while s < t:
            steps = min(block, t - s)
            wts, ab_aa = [], []
            for _ in range(steps):  # the weights of the next steps (no phi in them)
                ab, aa = np.multiply.outer(a, b), np.multiply.outer(a, a)
                ab_aa.append((ab, aa))
                wts.append(self._ddntk_weights(np.multiply.outer(a, ys), np.multiply.outer(a, zs),
                                               np.multiply.outer(aa, b), np.multiply.outer(aa, a)))
                ys += ab
                zs += aa
                b = b + a
                a = a * r
            dd = ddsrc(np.stack(wts))
            for k in range(steps):
                phi = phi - c * Th @ phi[:N] + dsrc(*ab_aa[k]) + dd[k]
                s += 1
                if s in record:
                    out[s] = R @ phi
        out[t] = R @ phi
        return out

    def _check_descent(self, t):
        c = self.c
        if np.isinf(t) and not np.all(np.abs(1.0 - c * self.basis.eigenvalues) < 1.0):
            raise ValueError(f"the motion at steps = inf needs convergent gradient descent, 0 < c lambda < 2 for "
                             f"every mode; got c lambda_max = {c * self.basis.eigenvalues[-1]:.4g} (lower the "
                             f"learning rate, or use gradient flow t = inf)")

    def __repr__(self) -> str:
        lam = self.basis.eigenvalues
        outputs = f", {self.n_outputs} outputs" if self.y.ndim == 2 else ""
        return (f"FiniteWidthDynamics(N={self.n_train} train, {self.n_inputs - self.n_train} test inputs{outputs}, "
                f"eta={self.learning_rate:g}, loss={self.loss!r}, c={self.c:.4g}; lambda in [{lam[0]:.4g}, "
                f"{lam[-1]:.4g}]; trained network at O(1/n))")


DNTK = ("P", "Q", "R", "S", "T", "U")


def readout_dntk(activation, X, depth: int | None = None, *, C_W=1.0, C_b=0.0, param: str = "ntk",
                 kink_terms: bool = False, tol: float = 1e-10, states=None) -> dict:
    """The readout layer's P, Q, R, S, T, U (each (N, N, N, N) at the N rows of X) by the recursions of
    :mod:`ntk_theory.finite_width.dntk` and :mod:`ntk_theory.finite_width.ddntk` (layer L + 1, normalised by
    the width n_L feeding it: n E[dH z], n E[ddIH], n E[ddIIH] at leading order, the normalisation
    :meth:`FiniteWidthDynamics.motion` takes).  ``activation`` with ``depth`` hidden layers, or a plain-MLP
    description (``depth`` None).  ``states``: the same network's tensor-recursion states at X (the ``layers``
    of :func:`~ntk_theory.finite_width.finite_width` with the same ``tol``), used instead of running that
    recursion again.  The ddNTK runs first (every layer's s'' averages in one pass per kernel; the dNTK's
    P, Q are computed on the way and shared).  Error model: the recursions' (leading order in 1/n; quadrature
    error estimates of the Gaussian averages, tolerance ``tol``)."""
    from ..finite_width.dntk import keep_recursion_states
    from ..finite_width.network import FiniteWidthRecursion

    if depth is None:
        rec = FiniteWidthRecursion.from_description(activation)
    else:
        rec = FiniteWidthRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param)
    if states is not None:
        keep_recursion_states(rec, X, states, tol)
    rstu = rec.ddntk(X, kink_terms=kink_terms, tol=tol)[-1]
    pq = rec.dntk(X, kink_terms=kink_terms, tol=tol)[-1]
    return {"P": pq.P, "Q": pq.Q, "R": rstu.R, "S": rstu.S, "T": rstu.T, "U": rstu.U}


#: each tensor's output Kronecker deltas, as pairs of its index positions (the spec: e.g. n E[dH_(i0 i1 i2) z_(i3)]
#: = d_(i0 i3) d_(i1 i2) P + d_(i0 i1) d_(i2 i3) Q + ..., n Cov(H_(i1 i2), H_(i3 i4)) = d_(i1 i2) d_(i3 i4) A + ...; the
#: other terms are index transpositions of these, which carry their deltas along)
TENSOR_OUTPUTS = {"K": ((0, 1),), "Theta": ((0, 1),), "K1": ((0, 1),), "Theta1": ((0, 1),),
                  "A": ((0, 1), (2, 3)), "B": ((0, 1), (2, 3)), "D": ((0, 1), (2, 3)), "F": ((0, 1), (2, 3))}
DNTK_OUTPUTS = {"P": ((0, 3), (1, 2)), "Q": ((0, 1), (2, 3)), "R": ((0, 1), (2, 3)), "S": ((0, 1), (2, 3)),
                "T": ((0, 2), (1, 3)), "U": ((0, 3), (1, 2))}


def _compose(X: np.ndarray, pairs, O: int) -> np.ndarray:
    """The composite tensor X_(a i)(b j)... = X_ab... times the Kronecker deltas of the output indices at the
    index ``pairs``; composite index a O + i (input-major, so the train rows stay first)."""
    k = X.ndim
    letters = "abcdefgh"[:k]
    outs = list("ijklmnop"[:k])
    for p, q in pairs:
        outs[q] = outs[p]
    eye = np.eye(O)
    spec = letters + "".join("," + outs[p] + outs[p].upper() for p, _ in pairs)
    result = "".join(a + (outs[m] if outs[m] not in outs[:m] else outs[m].upper()) for m, a in enumerate(letters))
    return np.einsum(spec + "->" + result, X, *([eye] * len(pairs))).reshape((X.shape[0] * O,) * k)


def _g_values(lam, t, discrete, c) -> np.ndarray:
    """g at the eigenvalues (module docstring)."""
    return np.diagonal(_g_matrix(_bidiagonal(np.asarray(lam, dtype=float)[:, None]), t, discrete, c),
                       axis1=-2, axis2=-1)[:, 0]


def _schedule(t, steps) -> Schedule:
    """Flow times ``t`` or descent ``steps`` (``inf``, descent's limit, allowed among the integers)."""
    if steps is not None and t is None:
        try:
            k = np.asarray(steps, dtype=np.float64)
        except (TypeError, ValueError):
            k = None
        if k is not None and np.any(np.isposinf(k)):
            Schedule.of(steps=np.where(np.isposinf(k), 0.0, k))  # validates the finite ones
            return Schedule(k, True)
    return Schedule.of(t, steps)


def _dntk_arrays(dntk, P) -> dict:
    if dntk is None:
        raise ValueError("the NTK-motion part needs the readout's dNTK/ddNTK tensors: pass dntk={P, Q, R, S, T, U} "
                         "(FiniteWidthDynamics.from_network computes them)")
    try:
        missing = [k for k in DNTK if k not in dntk]
    except TypeError:
        raise ValueError(f"dntk must be a mapping with {', '.join(DNTK)}; got {type(dntk).__name__}") from None
    if missing:
        raise ValueError(f"dntk is missing {', '.join(missing)} (need {', '.join(DNTK)})")
    return {k: as_kernel(dntk[k], k, shape=(P,) * 4) for k in DNTK}


def _tensor_arrays(tensors) -> dict:
    if hasattr(tensors, "arrays") and hasattr(tensors, "nngp"):
        return {k: np.asarray(getattr(tensors, PREDICTION_NAMES[k]), dtype=float) for k in TENSORS}
    try:
        missing = [k for k in TENSORS if k not in tensors]
    except TypeError:
        raise ValueError(f"tensors must be a mapping with {', '.join(TENSORS)} or FiniteWidthPredictions; got "
                         f"{type(tensors).__name__}") from None
    if missing:
        raise ValueError(f"tensors is missing {', '.join(missing)} (need {', '.join(TENSORS)})")
    return {k: np.asarray(tensors[k], dtype=float) for k in TENSORS}
