r"""Finite-width 1/n corrections of a residual MLP, one input (docs/finite_width.md, "Residual networks").

Network (PDLT appendix B conventions), L hidden layers of equal width n, scalar readout::

    z(1)   = W(1) x + b(1)                                     (Dense from the input, n_0 -> n)
    z(l+1) = xi z(l) + gamma [W(l+1) s(z(l)) + b(l+1)]         (l = 1 .. L-1, residual layers, n -> n)
    f      = W(L+1) s(z(L)) + b(L+1)                           (Dense readout)

W(l) ~ N(0, C_W(l) / n_(l-1)), b(l) ~ N(0, C_b(l)); the NTK is taken with respect to every W and b with
learning-rate factors (lambda_b, lambda_W) of ``param`` (xi and gamma are fixed multipliers, not trained).
xi = 0, gamma = 1 is the MLP of :class:`~.network.FiniteWidthRecursion`.

State of layer l (one input; i != j two neurons of layer l)::

    E[z_i^2] = K + K1 / n,   V = n Cov(z_i^2, z_j^2),   T = n E[z_i^2 z_j],   Theta (infinite width)

The single neuron's cumulants are pairings of these: n E[z^3] = 3 T, n (E[z^4] - 3 E[z^2]^2) = 3 V.
T vanishes for odd activations (global sign flip) and for xi = 0, and is O(1) otherwise.

Method (docs/finite_width.md, "Residual networks"): for one input the network is exactly a mean-field
particle system, z_i(l+1) = xi z_i(l) + gamma sqrt(Ghat(l)) g_i(l+1) with independent g_i ~ N(0, 1) and the
fields Ghat(m) = C_b + C_W (1/n) sum_k s(z_k(m))^2 (rotation invariance of the Gaussian rows).  At leading
order one neuron's path (z(1), ..., z(L)) is Gaussian with Cov(z(l), z(m)) = P(l, m) = xi^(l-m) K(m), and
K(l) depends on the fields linearly, dK(l)/dG(m) = c(l, m) = gamma^2 xi^(2(l-1-m)).  The fields' fluctuation
is dG = B eps, eps(a) = (1/n) sum_k phi_a(path_k), phi_a = C_W (s(z(a))^2 - <s^2>), B = (1 - A)^-1,
A(a, a') = C_W ss1(a) c(a, a'); psi = B phi.  Then, with ss1, ss2 the K-derivatives of <s^2>,
m1 = <(s^2)'> (:func:`ntk_theory.gaussian.expectation1`) and the two-variable average E[s(x)^2 s(y)^2]
(:class:`.twopoint.TwoPoint` of s^2, for Cov(phi_a, phi_b) and Cov((s^2)''(z(a)), phi_b))::

    V(l)  = 2 sum_m c(l,m) Cov(z(l)^2, psi_m) + sum_(m,m') c(l,m) c(l,m') Cov(psi_m, psi_m')
    T(l)  = sum_m c(l,m) Cov(z(l), psi_m)
    K1(l) = sum_m c(l,m) e(m),   e(a) = C_W [ss1(a) K1(a) + (1/2) sum_a' c(a,a') Cov((s^2)''(z(a)), psi_a')
                                             + (1/2) ss2(a) sum_(a',b') c(a,a') c(a,b') Cov(psi_a', psi_b')]
    readout: V = Cov(psi_L, psi_L),  K1 = e(L)

with Cov(z(l)^2, phi_b) = 2 C_W P(l,b)^2 ss1(b) and Cov(z(l), phi_b) = C_W P(l,b) m1(b) (Price, Stein).  The
terms Cov(., psi) hold neuron i's own O(1) contribution to the fields that neuron j sees; a one-step
recursion in (K, V, K1, T) alone does not close (Cov(s_i^2, s_j^2) is not ss1^2 V + ...).
xi = 0, gamma = 1 reduces to the MLP recursion (:mod:`.single`).

Not derived (refused): the NTK's 1/n tensors (A, B, D, F, Theta1) of residual networks, several inputs
(the tensor form needs the three-index T_(ab)c), per-layer widths (a residual layer needs equal widths).
Errors: the Gaussian averages' quadrature error estimates (``State.error``, 0 for closed forms); the
recursion itself is the leading order in 1/n (O(1/n^2) terms dropped).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .. import _checks
from ..activations import activation as _activation
from ..conventions import PARAMETERIZATIONS, learning_rate_factors
from ..gaussian import expectation1
from .moments import one_input_averages
from .twopoint import TwoPoint

NAMES = ("K", "Th", "V", "K1", "T")


class NotDerived(ValueError):
    """A finite-width quantity (or layer) without derived 1/n rules for residual networks."""


@dataclass
class ResidualState:
    """One layer's K, Theta, V, K1, T (module docstring), floats."""

    K: float
    Th: float
    V: float = 0.0
    K1: float = 0.0
    T: float = 0.0
    error: float = field(default=0.0, compare=False)

    def values(self) -> dict:
        return {name: getattr(self, name) for name in NAMES}

    @property
    def output_cumulant(self) -> float:
        """n (E[z^4] - 3 E[z^2]^2) = 3V."""
        return 3 * self.V

    @property
    def third_moment(self) -> float:
        """n E[z^3] = 3T."""
        return 3 * self.T


class _ExtraAverages:
    """<(s^2)'> = <z s^2> / K at a variance K: closed forms or quadrature (:func:`ntk_theory.gaussian.expectation1`)."""

    def __init__(self, act):
        s2 = act.expr**2
        self.forms = {"ss_d1": expectation1(s2, 1)}

    def evaluate(self, name: str, K: float) -> tuple[float, float]:
        v, e = self.forms[name].evaluate(np.array(float(K)), with_error=True)
        v = float(v)
        if not np.isfinite(v):
            raise ValueError(f"the average {name} of the activation is not finite at K = {K}")
        return v, float(e) if e is not None else 0.0


@functools.lru_cache(maxsize=32)
def _extra_averages(key, act):
    return _ExtraAverages(act)


def _real(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number; got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


class ResidualRecursion:
    """Leading 1/n corrections of the residual MLP of the module docstring, one input.

    ``depth`` L >= 1 hidden layers (layer 1 Dense, layers 2..L residual); ``C_W``, ``C_b`` scalars or L + 1
    values (readout last); ``xi``, ``gamma`` scalars or L - 1 values (one per residual layer); ``param``
    'ntk' or 'unit' ('standard' mixes the orders of the 1/n expansion and is refused, as for the MLP).
    Criticality of the deep linear network: xi^2 + gamma^2 C_W = 1.
    """

    def __init__(self, act, depth: int, C_W=1.0, C_b=0.0, *, xi=1.0, gamma=1.0, param: str = "ntk"):
        self.activation = act if hasattr(act, "expr") else _activation(act)
        self.depth = _checks.positive_int("depth", depth)
        self.C_W = _checks.per_layer("C_W", C_W, self.depth + 1)
        self.C_b = _checks.per_layer("C_b", C_b, self.depth + 1)
        n_res = self.depth - 1
        self.xi = _per_residual("xi", xi, n_res)
        self.gamma = _per_residual("gamma", gamma, n_res)
        self.param = _checks.choice("param", param, PARAMETERIZATIONS)
        if self.param == "standard":
            raise NotDerived("param='standard' has lambda_W = n_(l-1), which grows with the width and mixes the "
                             "orders of the 1/n expansion; use param='ntk' or 'unit'")

    @functools.cached_property
    def averages(self):
        return one_input_averages(self.activation)

    @functools.cached_property
    def extra(self) -> _ExtraAverages:
        return _extra_averages((self.activation.name, sp.srepr(self.activation.expr)), self.activation)

    def lambdas(self, layer: int) -> tuple[float, float]:
        """(lambda_b, lambda_W) of layer ``layer`` (1-based, L + 1 = readout)."""
        return learning_rate_factors(self.param, self.C_W[layer - 1], self.C_b[layer - 1], 1)

    @functools.cached_property
    def squared(self) -> TwoPoint:
        """E[s(x)^2 s(y)^2] over correlated Gaussian pairs and its covariance derivatives (:mod:`.twopoint`
        for the activation s^2)."""
        return TwoPoint(_activation(sp.expand(self.activation.expr**2)), "ss")

    def one_input(self, x=None, *, G0=None) -> list[ResidualState]:
        """States of layers 1 .. L+1 (the last one the readout) for one input x (or G0 = x.x / n_0), by the
        neuron-path expansion of the module docstring."""
        if G0 is None:
            xa = _checks.inputs(np.atleast_2d(np.asarray(x, dtype=float)), "x")
            if xa.shape[0] != 1:
                raise NotDerived(f"the residual finite-width recursion takes one input; got {xa.shape[0]} "
                                 "(the several-input tensors of residual networks are not derived)")
            G0 = float(xa[0] @ xa[0]) / xa.shape[1]
        G0 = _checks.variance("G0", G0)
        L = self.depth
        errors = [0.0]

        def avg(name, order, K):
            if name == "ss_d1":
                v, e = self.extra.evaluate(name, K)
            else:
                v, e = self.averages[name].evaluate(K, order)
            errors.append(e)
            return v

        # infinite width: K(l), Theta(l) of the hidden layers l = 1..L (index l-1) and the mean fields G(m)
        lb, lw = self.lambdas(1)
        K, Th = [self.C_b[0] + self.C_W[0] * G0], [lb + lw * G0]
        G, CW = [], [self.C_W[m] for m in range(1, L + 1)]  # G[m-1] = C_b + C_W <s^2> of layer m
        ss, ss1, ss2, m1, dd = [], [], [], [], []
        for m in range(1, L + 1):
            k = K[m - 1]
            if not k > 0:
                raise ValueError(f"the variance of layer {m} is {k}: the input and C_b are both zero")
            ss.append(avg("ss", 0, k)), ss1.append(avg("ss", 1, k)), ss2.append(avg("ss", 2, k))
            m1.append(avg("ss_d1", 0, k)), dd.append(avg("dd", 0, k))
            G.append(self.C_b[m] + CW[m - 1] * ss[-1])
            lb, lw = self.lambdas(m + 1)
            th_mlp = lb + lw * ss[-1] + CW[m - 1] * dd[-1] * Th[m - 1]
            if m < L:
                xi, g = self.xi[m - 1], self.gamma[m - 1]
                K.append(xi * xi * k + g * g * G[-1])
                Th.append(xi * xi * Th[m - 1] + g * g * th_mlp)
            else:
                th_out = th_mlp
        # c[l, m] = dK(l)/dG(m) (m < l), P[l, m] = Cov(z(l), z(m)) of one neuron's path (m <= l)
        c = np.zeros((L + 1, L + 1))
        P = np.zeros((L + 1, L + 1))
        for l in range(1, L + 1):
            P[l, l] = K[l - 1]
            for m in range(l - 1, 0, -1):
                P[l, m] = self.xi[l - 2] * P[l - 1, m]
                c[l, m] = self.gamma[l - 2] ** 2 if m == l - 1 else self.xi[l - 2] ** 2 * c[l - 1, m]
        # the fields' linear response: dG = B eps, eps(a) = (1/n) sum_k phi_a(path_k), A(a, a') = C_W ss1(a) c(a, a')
        A = np.zeros((L + 1, L + 1))
        for a in range(1, L + 1):
            A[a, 1:] = CW[a - 1] * ss1[a - 1] * c[a, 1:]
        B = np.linalg.inv(np.eye(L) - A[1:, 1:])
        B = np.pad(B, ((1, 0), (1, 0)))
        B[np.abs(B) < 1e-300] = 0.0
        need = np.zeros(L + 1, dtype=bool)  # the phi_b that enter some psi_m used below
        for m in range(1, L + 1):
            need |= B[m] != 0

        # Cov(phi_a, phi_b) and Cov((s^2)''(z(a)), phi_b) (b < a) from E[s(x)^2 s(y)^2] and its k11-derivative
        Cphi = np.zeros((L + 1, L + 1))
        Cdd = np.zeros((L + 1, L + 1))
        for a in range(1, L + 1):
            Cphi[a, a] = CW[a - 1] ** 2 * (avg("ssss", 0, K[a - 1]) - ss[a - 1] ** 2)
            for b in range(1, a):
                if not (need[a] and need[b]) and not any(c[l, a] * c[l2, b] for l in range(L + 1)
                                                         for l2 in range(L + 1)):
                    continue
                rho = P[a, b] / np.sqrt(K[a - 1] * K[b - 1])
                if abs(rho) >= 1 - 1e-12:
                    continue  # z(a) = const * z(b): no branch noise in between; only reached with zero weights
                pd = self.squared.pairs(np.array([K[a - 1]]), np.array([K[b - 1]]), np.array([P[a, b]]))
                errors.append(float(pd.error))
                Cphi[a, b] = Cphi[b, a] = CW[a - 1] * CW[b - 1] * (float(pd.value[0]) - ss[a - 1] * ss[b - 1])
                Cdd[a, b] = CW[b - 1] * 2 * (float(pd.grad[0, 0]) - ss1[a - 1] * ss[b - 1])
        Cpsi = B @ Cphi @ B.T
        # Cov(z(l)^2, psi_m) and Cov(z(l), psi_m), m < l (Gaussian path: Price / Stein)
        Cz2 = np.zeros((L + 1, L + 1))
        Cz1 = np.zeros((L + 1, L + 1))
        for l in range(1, L + 1):
            for b in range(1, l):
                Cz2[l, b] = CW[b - 1] * 2 * P[l, b] ** 2 * ss1[b - 1]
                Cz1[l, b] = CW[b - 1] * P[l, b] * m1[b - 1]
        Cz2psi, Cz1psi, Cddpsi = Cz2 @ B.T, Cz1 @ B.T, Cdd @ B.T

        # e(a) = n (E[Ghat(a)] - G(a)), K1(l) = sum_m c(l, m) e(m): in order of a
        e = np.zeros(L + 1)
        for a in range(1, L + 1):
            K1a = float(c[a, 1:a] @ e[1:a])
            self_term = 0.5 * float(c[a, 1:a] @ Cddpsi[a, 1:a])
            fluct = 0.5 * ss2[a - 1] * float(c[a, 1:a] @ Cpsi[1:a, 1:a] @ c[a, 1:a])
            e[a] = CW[a - 1] * (ss1[a - 1] * K1a + self_term + fluct)
        states = []
        for l in range(1, L + 1):
            cl = c[l, 1:l]
            V = 2 * float(cl @ Cz2psi[l, 1:l]) + float(cl @ Cpsi[1:l, 1:l] @ cl)
            states.append(ResidualState(K=K[l - 1], Th=Th[l - 1], V=V, K1=float(cl @ e[1:l]),
                                        T=float(cl @ Cz1psi[l, 1:l])))
        states.append(ResidualState(K=G[L - 1], Th=th_out, V=float(Cpsi[L, L]), K1=float(e[L]), T=0.0))
        err = max(errors)
        for st in states:
            st.error = err
        for st in states:
            if not all(np.isfinite(v) for v in st.values().values()):
                raise ValueError(f"the residual finite-width recursion of {self.activation.name} is not finite "
                                 f"at G0 = {G0} (a Gaussian average diverges)")
        return states

    def tensors(self, X, *args, **kwargs):
        """Refused: the several-input (tensor) recursion of residual networks is not derived."""
        raise NotDerived("residual layers: the several-input finite-width tensors (V_(ab)(cd), T_(ab)c, ...) are "
                         "not derived; use one_input() for one input")

    def ntk_tensors(self, *args, **kwargs):
        """Refused: the NTK's 1/n tensors (A, B, D, F, Theta1) of residual layers are not derived."""
        raise NotDerived("residual layers: the NTK's finite-width tensors A, B, D, F, Theta1 are not derived "
                         "(K, Theta, V, K1, T are: one_input())")

    def __repr__(self) -> str:
        return (f"ResidualRecursion({self.activation.name}, depth={self.depth}, C_W={self.C_W[1]:g}, "
                f"C_b={self.C_b[1]:g}, xi={self.xi[0] if self.xi else None}, "
                f"gamma={self.gamma[0] if self.gamma else None}, param={self.param!r})")


def _per_residual(name: str, value, count: int) -> tuple:
    if np.ndim(value) == 0:
        return (_real(name, value),) * count
    values = list(np.asarray(value, dtype=object).ravel())
    if len(values) != count:
        raise ValueError(f"{name} must be a scalar or have one entry per residual layer ({count}); "
                         f"got {len(values)} entries")
    return tuple(_real(f"{name}[{i}]", v) for i, v in enumerate(values))
