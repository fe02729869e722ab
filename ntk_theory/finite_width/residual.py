r"""Finite-width 1/n corrections of a residual MLP: one input, and K, V, M3, K1, A, B, D, F, Theta1 at several
inputs (docs/finite_width.md, "Residual networks").

Network (PDLT appendix B conventions), L hidden layers of equal width n, scalar readout::

    z(1)   = W(1) x + b(1)                                     (Dense from the input, n_0 -> n)
    z(l+1) = xi z(l) + gamma [W(l+1) s(z(l)) + b(l+1)]         (l = 1 .. L-1, residual layers, n -> n)
    f      = W(L+1) s(z(L)) + b(L+1)                           (Dense readout; two readout neurons i != j
                                                                for the pair statistics, as for the MLP)

W(l) ~ N(0, C_W(l) / n_(l-1)), b(l) ~ N(0, C_b(l)); the NTK is taken with respect to every W and b with
learning-rate factors (lambda_b, lambda_W) of ``param`` (xi and gamma are fixed multipliers, not trained).
xi = 0, gamma = 1 is the MLP of :class:`~.network.FiniteWidthRecursion`.

State of layer l (one input; i != j two neurons of layer l)::

    E[z_i^2] = K + K1 / n,   V = n Cov(z_i^2, z_j^2),   M3 = n E[z_i^2 z_j],   Theta (infinite width)
    E[Theta_ii] = Theta + Th1 / n,  A = n Cov(Theta_ii, Theta_jj),  B = n E[Theta_ij^2],
    D = n Cov(Theta_ii, z_j^2),  F = n E[Theta_ij z_i z_j]   (n Var(Theta_ii) = A + 2B, n Cov(Theta_ii, z_i^2) = D + 2F)

The single neuron's cumulants are pairings of these: n E[z^3] = 3 M3, n (E[z^4] - 3 E[z^2]^2) = 3 V.
M3 vanishes for odd activations (global sign flip) and for xi = 0, and is O(1) otherwise.

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
    M3(l) = sum_m c(l,m) Cov(z(l), psi_m)
    K1(l) = sum_m c(l,m) e(m),   e(a) = C_W [ss1(a) K1(a) + (1/2) sum_a' c(a,a') Cov((s^2)''(z(a)), psi_a')
                                             + (1/2) ss2(a) sum_(a',b') c(a,a') c(a,b') Cov(psi_a', psi_b')]
    readout: V = Cov(psi_L, psi_L),  K1 = e(L)

with Cov(z(l)^2, phi_b) = 2 C_W P(l,b)^2 ss1(b) and Cov(z(l), phi_b) = C_W P(l,b) m1(b) (Price, Stein).  The
terms Cov(., psi) hold neuron i's own O(1) contribution to the fields that neuron j sees; a one-step
recursion in (K, V, K1, M3) alone does not close (Cov(s_i^2, s_j^2) is not ss1^2 V + ...).
xi = 0, gamma = 1 reduces to the MLP recursion (:mod:`.single`).

NTK side (docs/finite_width.md, "Residual networks: the NTK's 1/n quantities").  With the Jacobians J(l, m) = dz(l)/dz(m) and
H(m) = lambda_b + lambda_W |s(z(m-1))|^2 / n (H(1) = lambda_b + lambda_W G0), the NTK of layer l is
Theta(l) = sum_(m <= l) gamma_m^2 H(m) J(l, m) J(l, m)^T = E_r[tau(l) tau(l)^T] for the forward tangent
tau(l+1) = xi tau(l) + gamma [W(l+1) (s'(z(l)) tau(l)) + sqrt(H(l+1)) r(l+1)], tau(1) = sqrt(H(1)) r(1), with
probes r ~ N(0, I_n) independent of the network.  Two independent probes tau, tau' make one neuron's
(z, tau, tau') a particle: W(l+1) is applied once, to the three vectors s, s' tau, s' tau', so the branch
increments are exactly iid N(0, Sigma(l+1)) over the neurons given layer l, Sigma linear in the six fields
F(m) = (1/n) sum_k phi(x_k(m)), phi = (s^2, s s' tau, s s' tau', s'^2 tau^2, s'^2 tau'^2, s'^2 tau tau').
The NTK quantities are moments of this particle system (i != j):

    E[Theta_ii] = E[tau_i^2],  A = n Cov(tau_i^2, tau'_j^2),  B = n Cov(tau_i tau'_i, tau_j tau'_j),
    D = n Cov(tau_i^2, z_j^2),  F = n Cov(tau_i z_i, tau_j z_j),

and the same expansion as for z gives them: with R_f = d<f>/dF (through K(l) = sum_m c(l, m) Sigma(m+1)),
psi = (1 - A)^-1 (phi - <phi>), A the fields' response matrix,

    n Cov(f(x_i), h(x_j)) = R_h . Cov(psi, f) + R_f . Cov(psi, h) + R_f Cov(psi, psi) R_h,
    n (E[f(x_i)] - <f>) = R_f . e   (f quadratic),   e = n E[F - <phi>]: first-order response to e,
        (1/2) the Hessian of <phi> against Cov(dK, dK), and the self term sum D_v Cov(d_v phi, psi).

At leading order tau is independent of z (Gaussian, variance Theta, Cov(tau(l), tau(m)) = xi^(l-m) Theta(m));
the z parts are the one-layer averages and two-layer averages E[g^(k)(z(a)) h(z(b))], g, h in {s^2, s'^2,
s s'} (:class:`PairAverages`); the tau parts are Wick products.  xi = 0 gives the MLP's recursion of
:mod:`.single` term by term (only same-layer covariances survive).

Several inputs: :meth:`ResidualRecursion.vertex_tensors` gives K, the four-point vertex V_(ab)(cd) and the
three-point T_(ab)c of every layer by the same expansion with N x N fields G(m)_ab = C_b + C_W (1/n) sum_k
s(z_ka(m)) s(z_kb(m)); :meth:`ResidualRecursion.tensors` adds Theta_ab and the mean metric's correction

    K1(l)_ab = sum_m c(l,m) e(m)_ab,   readout K1 = e(L),
    e(a)_ab = C_W [ (R(a) K1(a))_ab + Q(a)[sum_(m,m') c(a,m) c(a,m') Cov(psi_m, psi_m')]_ab
                    + sum_(a' < a) c(a,a') sum_ef Cov(Rhat_(ab,ef)(z(a)), psi_(a',ef)) ],

R(a)_abef = d<s_a s_b>/dK_ef and Q(a) the Taylor term (1/2) d2<s_a s_b>/dK dK of :mod:`.twopoint` (ordered
pairs), Rhat_(ab,ef) = (1/2) d_e d_f (s_a s_b) the pointwise function whose average is R_abef: the several-input
form of the one-input e(a) above (N = 1: Rhat = (1/2) (s^2)'').  The self term needs E[s'_p s'_q s_r s_t] and
E[s''_p s_q s_r s_t] over the joint Gaussian of (z(a), z(a')); the latter comes without s'' (no deltas) from
Stein's lemma, E[h(x_p) s_q s_r s_t] = J_pp E[s''_p s_q s_r s_t] + sum_(j = q, r, t) J_pj E[s'_p s'_j ...],
h(x) = x s'(x), with E[h_p s_q s_r s_t] the four-point ``ssss`` where h = s (relu, linear) and otherwise the
polarisation of the four-point ``ddss`` of the function pairs (s, s + h) and (s, s - h).
:meth:`ResidualRecursion.ntk_tensors` gives A_(ab)(cd), B_(pq)(rs), D_abcd, F_(pq)(rs) at several inputs from the
(z, tau, tau') particle system with 3N x 3N fields (its docstring), and :meth:`ResidualRecursion.ntk_correction`
Theta1_(ab) from the same system: e(a) = n E[F(a) - <phi(a)>] = R_phi J e + (1/8) <d^4 phi> CovK + the self term
sum_xy Cov((1/2) d_x d_y phi(x(a)), [J psi]_xy), whose averages of products of s, s', s'', s''' at up to four
variables of two layers come from :func:`ntk_theory.gaussian.fourpoint.derivative_moments` (smooth activations)
or, for piecewise-linear ones (relu, leaky_relu, abs), from :func:`ntk_theory.numerics.dirac.derivative_product_moments`:
the factors at one variable are one function (s'^2, s s', s^2, ...) differentiated as a distribution (Dirac
terms at the kink; Price's theorem for the network's own functions, and the limit of smooth activations), by
Gaussian integration by parts onto the density and exact orthant moments.
Not derived (refused): Theta1_(ab) at several inputs for other kinked activations (elu, selu: the Dirac terms
of s'', s'''), per-layer widths (a residual layer needs equal widths).
Errors: the Gaussian averages' quadrature error estimates (``State.error``, 0 for closed forms; the
two-layer averages of the NTK side are composite Gauss-Legendre rules split at the kinks, checked against
scipy quadrature to 1e-10 and not in ``error``); the recursion itself is the leading order in 1/n (O(1/n^2) terms dropped).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .. import _checks
from ..activations import activation as _activation
from ..conventions import PARAMETERIZATIONS
from ..docstrings import filled
from ..gaussian import expectation1
from .moments import one_input_averages
from .network import FiniteWidthRecursion
from .twopoint import TwoPoint

#: the Parameters entries of the several-input methods
_INPUTS_TOL = """X : array_like
    Inputs (N, d).
tol : float, default 1e-10
    Relative tolerance of the four-point averages (keyword-only)."""

NAMES = ("K", "Th", "V", "K1", "M3", "A", "B", "D", "F", "Th1")


class NotDerived(ValueError):
    """A finite-width quantity (or layer) without derived 1/n rules for residual networks.

    A :class:`ValueError` whose message names the layer (its path) or the quantity and why; raised by
    :func:`~ntk_theory.finite_width.recursion_for` for descriptions the recursions do not cover.

    Examples
    --------
    >>> from ntk_theory import stax
    >>> from ntk_theory.finite_width import NotDerived, recursion_for
    >>> try:
    ...     recursion_for(stax.serial(stax.Dense(8), stax.LayerNorm(), stax.Relu(), stax.Dense(1)))
    ... except NotDerived as error:
    ...     print(isinstance(error, ValueError), error)
    True LayerNorm() at layer 1: no derived 1/n rule for LayerNorm (the finite-width corrections of normalised layers are not derived)
    """


@dataclass
class ResidualState:
    """One layer's K, Theta, V, K1, M3 and the NTK's A, B, D, F, Th1 (module docstring; the MLP's names and
    normalisations, :mod:`.single`), floats."""

    # the fields of single.State and M3: records alike in shape (floats here, SymPy expressions there)
    K: float
    Th: float
    V: float = 0.0
    K1: float = 0.0
    M3: float = 0.0
    A: float = 0.0
    B: float = 0.0
    D: float = 0.0
    F: float = 0.0
    Th1: float = 0.0
    error: float = field(default=0.0, compare=False)

    def values(self) -> dict:
        return {name: getattr(self, name) for name in NAMES}

    @property
    def ntk_variance(self) -> float:
        """n Var(Theta_ii) = A + 2B."""
        return self.A + 2 * self.B

    @property
    def ntk_kernel_covariance(self) -> float:
        """n Cov(Theta_ii, z_i^2) = D + 2F."""
        return self.D + 2 * self.F

    @property
    def output_cumulant(self) -> float:
        """n (E[z^4] - 3 E[z^2]^2) = 3V."""
        return 3 * self.V

    @property
    def third_moment(self) -> float:
        """n E[z^3] = 3 M3."""
        return 3 * self.M3


@dataclass
class ResidualTensorState:
    """One layer's several-input tensors (:meth:`ResidualRecursion.tensors`; the MLP's index conventions,
    :mod:`.tensors`): K, Th (N, N) at infinite width, V (N,)*4, K1 (N, N), M3 (N,)*3; ``error`` the Gaussian
    averages' error estimate."""

    K: np.ndarray
    Th: np.ndarray
    V: np.ndarray
    K1: np.ndarray
    M3: np.ndarray
    error: float = field(default=0.0, compare=False)

    @property
    def output_cumulant(self) -> np.ndarray:
        """V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc): n times the connected four-point function."""
        return self.V + self.V.transpose(0, 2, 1, 3) + self.V.transpose(0, 2, 3, 1)


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


class ResidualRecursion:
    """Leading 1/n corrections of the residual MLP of the module docstring, one input.

    ``depth`` L >= 1 hidden layers (layer 1 Dense, layers 2..L residual); ``C_W``, ``C_b`` scalars or L + 1
    values (readout last); ``xi``, ``gamma`` scalars or L - 1 values (one per residual layer); ``param``
    'ntk' or 'unit' ('standard' mixes the orders of the 1/n expansion and is refused, as for the MLP).
    Criticality of the deep linear network: xi^2 + gamma^2 C_W = 1.

    Parameters
    ----------
    act : str, sympy.Expr or Activation
        The activation.
    depth : int
        L >= 1 hidden layers.
    C_W, C_b : float or sequence of float, default 1.0, 0.0
        Weight and bias variances (keyword-only), scalars or L + 1 values.
    xi, gamma : float or sequence of float, default 1.0, 1.0
        Skip and branch multipliers (keyword-only), scalars or L - 1 values.
    param : {'ntk', 'unit'}, default 'ntk'
        The NTK's learning-rate factors.

    Raises
    ------
    ValueError
        If a size or per-layer list is invalid; :class:`NotDerived` for ``param='standard'``.

    Examples
    --------
    A linear residual network: K(1) = C_b + C_W G0, K(l+1) = xi^2 K + gamma^2 (C_b + C_W K), readout
    C_b + C_W K(L):

    >>> import numpy as np
    >>> from ntk_theory.finite_width import ResidualRecursion
    >>> rec = ResidualRecursion("linear", 3, C_W=0.5, C_b=0.1, xi=0.8, gamma=1.0)
    >>> K = [0.1 + 0.5 * 1.0]
    >>> for _ in range(2):
    ...     K.append(0.64 * K[-1] + 0.1 + 0.5 * K[-1])
    >>> K.append(0.1 + 0.5 * K[-1])
    >>> bool(np.allclose([s.K for s in rec.one_input(G0=1.0)], K, rtol=1e-14))
    True
    """

    def __init__(self, act, depth: int, *, C_W=1.0, C_b=0.0, xi=1.0, gamma=1.0, param: str = "ntk"):
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

    #: (lambda_b, lambda_W) of a layer: the MLP recursion's method (same per-layer C_W, C_b, param fields)
    lambdas = FiniteWidthRecursion.lambdas

    @functools.cached_property
    def squared(self) -> TwoPoint:
        """E[s(x)^2 s(y)^2] over correlated Gaussian pairs and its covariance derivatives (:mod:`.twopoint`
        for the activation s^2)."""
        return TwoPoint(_activation(sp.expand(self.activation.expr**2)), "ss")

    @functools.cached_property
    def pair_averages(self) -> PairAverages:
        """Two-layer Gaussian averages E[g^(k)(z(a)) h(z(b))] of the NTK side (:class:`PairAverages`)."""
        return PairAverages(self.activation)

    def one_input(self, x=None, *, G0=None) -> list[ResidualState]:
        """States of layers 1 .. L+1 (the last one the readout) for one input x (or G0 = x.x / n_0), by the
        neuron-path expansion of the module docstring.

        Parameters
        ----------
        x : array_like, optional
            One input.
        G0 : float, optional
            x.x / n_0 instead of ``x`` (keyword-only).

        Returns
        -------
        list of ResidualState
            K, Th, V, K1, M3, A, B, D, F, Th1 per layer, the readout's last.

        Raises
        ------
        NotDerived
            For several inputs (see :meth:`tensors`).

        Examples
        --------
        xi = 0, gamma = 1 is the MLP: a linear network's K = C_b + C_W K per layer and the same V as
        :class:`~ntk_theory.finite_width.FiniteWidthRecursion`:

        >>> import numpy as np
        >>> from ntk_theory.finite_width import FiniteWidthRecursion, ResidualRecursion
        >>> res = ResidualRecursion("linear", 2, C_W=1.5, C_b=0.1, xi=0.0, gamma=1.0).one_input(G0=1.0)[-1]
        >>> mlp = FiniteWidthRecursion("linear", 2, C_W=1.5, C_b=0.1).one_input(G0=1.0)[-1]
        >>> K = 0.1 + 1.5 * (0.1 + 1.5 * (0.1 + 1.5))
        >>> bool(np.isclose(res.K, K, rtol=1e-14)), bool(np.isclose(res.V, mlp.V, rtol=1e-12))
        (True, True)
        """
        if G0 is None:
            xa = _checks.inputs(np.atleast_2d(np.asarray(x, dtype=float)), "x")
            if xa.shape[0] != 1:
                raise NotDerived(f"the residual finite-width recursion takes one input; got {xa.shape[0]} "
                                 "(several inputs: tensors(X), vertex_tensors(X))")
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
                                        M3=float(cl @ Cz1psi[l, 1:l])))
        states.append(ResidualState(K=G[L - 1], Th=th_out, V=float(Cpsi[L, L]), K1=float(e[L]), M3=0.0))
        ntk = _ntk_expansion(self, L, K, Th, G, th_out, avg)
        for l, st in enumerate(states):
            for name in ("A", "B", "D", "F", "Th1"):
                setattr(st, name, ntk[name][l])
        err = max(errors)
        for st in states:
            st.error = err
        for st in states:
            if not all(np.isfinite(v) for v in st.values().values()):
                raise ValueError(f"the residual finite-width recursion of {self.activation.name} is not finite "
                                 f"at G0 = {G0} (a Gaussian average diverges)")
        return states

    def _path_matrices(self, size: int) -> tuple:
        """(c, Xi), (size, size), 1-based layers 1 .. L: c[l, m] = gamma(l)^2 xi(l-1)^2 ... xi(m+1)^2 (m < l), the
        response of layer l's variance to the branch field entering after layer m; Xi[l, m] = xi(l) ... xi(m+1)
        (Xi[l, l] = 1), the regression of z(l) on z(m).  Rows and columns past L are 0."""
        c = np.zeros((size, size))
        Xi = np.zeros((size, size))
        for l in range(1, self.depth + 1):
            Xi[l, l] = 1.0
            for m in range(l - 1, 0, -1):
                Xi[l, m] = self.xi[l - 2] * Xi[l - 1, m]
                c[l, m] = self.gamma[l - 2] ** 2 if m == l - 1 else self.xi[l - 2] ** 2 * c[l - 1, m]
        return c, Xi

    @filled(inputs=_INPUTS_TOL)
    def tensors(self, X, *, tol: float = 1e-10, progress=None) -> list:
        r"""States (:class:`ResidualTensorState`) of layers 1 .. L and the readout (last) at the N inputs X (N, d):
        the infinite-width K and Theta (N, N), the vertex V_(ab)(cd), the three-point M3_(ab)c (as
        :meth:`vertex_tensors`) and the 1/n correction of the mean metric, E[z_ia z_ib] = K_ab + K1_ab / n, by the
        neuron-path expansion with N x N fields (module docstring, "Several inputs")::

            e(a)_ab = n (E[Ghat(a)_ab] - G(a)_ab)
                    = C_W [ (R(a) K1(a))_ab + Q(a)[CovK(a)]_ab + sum_(a' < a) c(a,a') sum_ef Cov(Rhat_(ab,ef)(z(a)), psi_(a',ef)) ],
            K1(l) = sum_(m < l) c(l, m) e(m),   readout K1 = e(L),   CovK(a) = sum_(m,m') c(a,m) c(a,m') Cov(psi_m, psi_m'),

        Q(a)[.] the Taylor term (1/2) sum d2<s_a s_b>/dK dK (.) (:meth:`.twopoint.TwoPointTensors.taylor`), and
        Rhat_(ab,ef)(z) = (1/2) d_e d_f (s_a s_b)(z) the pointwise function whose Gaussian average is R_abef
        (ordered pairs).  Its covariance with phi(b') (b' < a) needs, over the joint Gaussian of (z(a), z(b')),
        E[s'_p s'_q s_r s_t] (the four-point ``ddss``) and E[s''(x_p) s(x_q) s(x_r) s(x_t)], the latter by Stein's
        lemma without s'' (no deltas for kinked s; :meth:`_second_derivative_moments`).  One input gives
        :meth:`one_input`'s K1, xi = 0 and gamma = 1 the MLP's.  ``progress`` is accepted for the API of
        :meth:`.network.FiniteWidthRecursion.tensors` (no bar).  The NTK's A, B, D, F: :meth:`ntk_tensors`;
        Theta1_(ab): :meth:`ntk_correction`.  Error: the Gaussian averages' estimates (``error``).

        Parameters
        ----------
        %(inputs)s
        progress : object, default None
            Accepted and ignored.

        Returns
        -------
        list of ResidualTensorState
            Layers 1 .. L and the readout: K, Th (N, N), V (N, N, N, N), M3 (N, N, N), K1 (N, N), error.

        Notes
        -----
        At each input alone (a = b = c = d) the entries equal :meth:`one_input`'s.
        """
        return [ResidualTensorState(**st) for st in self._several(X, tol, k1=True)]

    @filled(inputs=_INPUTS_TOL)
    def vertex_tensors(self, X, *, tol: float = 1e-10) -> list:
        r"""``[(K, V, M3, error), ...]`` of layers 1 .. L and the readout (last) at the N inputs X (N, d): K (N, N),
        the four-point vertex V_(ab)(cd) = n Cov(z_ia z_ib, z_jc z_jd) (i != j), (N, N, N, N), and the three-point
        M3_(ab)c = n E[z_ia z_ib z_jc] (i != j), (N, N, N) (0 at the readout, as in :meth:`one_input`), by the
        neuron-path expansion of :meth:`one_input` with N x N fields (docs/finite_width.md, "Residual networks"):

            G(m)_ab = C_b + C_W (1/n) sum_k s(z_ka(m)) s(z_kb(m)),   phi_(a,ab) = C_W (s_a s_b(z(a)) - <s_a s_b>),
            A = C_W R(a) c(a, a'),  R_abef = d<s_a s_b>/dK_ef (ordered pairs),  psi = (1 - A)^-1 phi,
            V(l)_(ab)(cd) = sum_m c(l,m) [Cov(z_a z_b(l), psi_(m,cd)) + Cov(z_c z_d(l), psi_(m,ab))]
                            + sum_(m,m') c(l,m) c(l,m') Cov(psi_(m,ab), psi_(m',cd)),   readout: Cov(psi_L, psi_L),
            M3(l)_(ab)c   = sum_m c(l,m) Cov(z_c(l), psi_(m,ab)),

        with Cov(z_a z_b(l), s_c s_d(z(b))) = 2 Xi(l,b)^2 (K(b) R(b)_cd K(b))_ab and Cov(z_c(l), s_a s_b(z(b))) =
        Xi(l,b) sum_mu K(b)_(c mu) <d_mu (s_a s_b)> (Stein, Xi(l,b) = xi^(l-b); <s'(u) s(v)> by Gaussian integration
        by parts, :func:`ntk_theory.numerics.bivariate.expect_weighted` with the weight H_10, a = b: <(s^2)'>), and
        Cov(phi_a, phi_b) from the four-point averages of :func:`ntk_theory.gaussian.fourpoint.four_point_moments`
        over the joint path covariance [[K(a), Xi K(a)], [Xi K(a), K(b)]] of the two layers.  One input gives
        :meth:`one_input`'s V; xi = 0, gamma = 1 the MLP's tensors.  Error: the two- and four-point averages'
        estimates (``tol`` relative for the four-point ones), the last element of each entry.  Equal inputs are
        computed once (their pair averages would be singular) and their entries copied.

        Parameters
        ----------
        %(inputs)s

        Returns
        -------
        list of tuple
            ``(K, V, M3, error)`` of layers 1 .. L and the readout.

        Notes
        -----
        At each input alone (a = b = c = d) the entries equal :meth:`one_input`'s.
        """
        return [(st["K"], st["V"], st["M3"], st["error"]) for st in self._several(X, tol, k1=False)]

    def _several(self, X, tol, k1: bool) -> list:
        """Dicts K, V, M3 (and with ``k1`` Th, K1), error of layers 1 .. L+1 at X (see :meth:`tensors`)."""
        from .tensors import _four_point
        from .twopoint import derivative_tensors

        X = _checks.inputs(X, "X")
        uniq, inv = np.unique(X, axis=0, return_inverse=True)
        if uniq.shape[0] < X.shape[0]:  # equal inputs: computed once, their entries copied
            inv = inv.ravel()
            return [{k: (v[np.ix_(*([inv] * v.ndim))] if isinstance(v, np.ndarray) else v) for k, v in st.items()}
                    for st in self._several(uniq, tol, k1)]
        N, d = X.shape
        L = self.depth
        tp = TwoPoint(self.activation, "ss")
        tpd = TwoPoint(self.activation, "dd") if k1 else None
        CW = [self.C_W[m] for m in range(1, L + 1)]  # C_W of the Dense after layer m
        K = [self.C_b[0] + self.C_W[0] * (X @ X.T) / d]
        lb, lw = self.lambdas(1)
        Th = [lb + lw * (X @ X.T) / d]
        Rs, S, Ds, Ts, errors = [], [], [], [], [0.0]
        for m in range(1, L + 1):
            if not np.all(np.diag(K[-1]) > 0):
                raise ValueError(f"a variance of layer {m} is zero: an input is zero and C_b = 0")
            t = derivative_tensors(tp, K[-1])
            Rs.append(t.R), S.append(t.value), Ts.append(t), errors.append(t.error)
            Ds.append(self._first_derivative_averages(K[-1], errors))
            if k1:
                dd = derivative_tensors(tpd, K[-1])
                errors.append(dd.error)
                lb, lw = self.lambdas(m + 1)
                th_mlp = lb + lw * t.value + CW[m - 1] * dd.value * Th[-1]
            if m < L:
                xi, g = self.xi[m - 1], self.gamma[m - 1]
                K.append(xi * xi * K[-1] + g * g * (self.C_b[m] + CW[m - 1] * t.value))
                if k1:
                    Th.append(xi * xi * Th[-1] + g * g * th_mlp)
            elif k1:
                Th.append(th_mlp)
        G_out = self.C_b[L] + CW[L - 1] * S[-1]
        # c[l, m] = dK(l)/dG(m), Xi[l, m] = Cov(z(l), z(m)) / K(m) (m <= l), 1-based layers
        c, Xi = self._path_matrices(L + 1)
        M = N * N
        A = np.zeros((L, M, L, M))
        for a in range(1, L + 1):
            for a2 in range(1, a):
                A[a - 1, :, a2 - 1, :] = CW[a - 1] * c[a, a2] * Rs[a - 1].reshape(M, M)
        B = np.linalg.inv(np.eye(L * M) - A.reshape(L * M, L * M))
        # Cov(phi_a, phi_b): four-point averages over the joint covariance of the two layers; with k1 also
        # Cself[b'][(ab), (ef), a, (gh)] = Cov(Rhat_(ab,ef)(z(b')), phi_(a,gh)) for the upper layer b' > a
        Cphi = np.zeros((L, M, L, M))
        Cself = np.zeros((L, M, M, L, M))
        pq = [(p, q) for p in range(N) for q in range(N)]
        for a in range(1, L + 1):
            for b in range(a, L + 1):
                if b > a and Xi[b, a] == 0.0:
                    continue  # z(b) independent of z(a): no covariance
                if b == a:
                    ssss, _, _, err = _four_point(self.activation, K[a - 1], tol)
                    cov = ssss - np.multiply.outer(S[a - 1], S[a - 1])
                else:
                    J = np.block([[K[a - 1], Xi[b, a] * K[a - 1]], [Xi[b, a] * K[a - 1], K[b - 1]]])
                    ssss, ddss, _, err = _four_point(self.activation, J, tol)
                    cov = ssss[:N, :N, N:, N:] - np.multiply.outer(S[a - 1], S[b - 1])
                    if k1:
                        T2 = self._second_derivative_moments(J, ssss, ddss, tol, errors)
                        Cself[b - 1, :, :, a - 1, :] = CW[a - 1] * _self_covariance(
                            T2, ddss, Rs[b - 1], S[a - 1], N, pq).reshape(M, M, M)
                errors.append(err)
                Cphi[a - 1, :, b - 1, :] = CW[a - 1] * CW[b - 1] * cov.reshape(M, M)
                Cphi[b - 1, :, a - 1, :] = Cphi[a - 1, :, b - 1, :].T
        Bf = B
        Cpsi = (Bf @ Cphi.reshape(L * M, L * M) @ Bf.T).reshape(L, M, L, M)
        if k1:
            # e(a) = n (E[Ghat(a)] - G(a)) in order of a; Cov(Rhat(z(a)), psi_(a', ef)) = Cself B^T
            Bpsi = B.reshape(L, M, L, M)
            e = np.zeros((L + 1, N, N))
            K1 = [np.zeros((N, N))]
            for a in range(1, L + 1):
                ca = c[a, 1:a]
                K1a = np.einsum("m,mab->ab", ca, e[1:a])
                CovK = np.einsum("m,mpnq,n->pq", ca, Cpsi[:a - 1, :, :a - 1, :], ca).reshape((N,) * 4)
                selfpsi = np.einsum("xyBg,mzBg->xymz", Cself[a - 1], Bpsi)  # (ab), (ef), m, (ef')
                self_term = np.einsum("m,xymy->x", ca, selfpsi[:, :, :a - 1, :]).reshape(N, N)
                e[a] = CW[a - 1] * (np.einsum("abef,ef->ab", Rs[a - 1], K1a) + Ts[a - 1].taylor(CovK) + self_term)
                if a > 1:
                    K1.append(K1a)
        out = []
        for l in range(1, L + 1):
            # Cov(z_a z_b(l), phi_(b', cd)) for b' < l, then against psi
            Cz2 = np.zeros((M, L, M))
            for b in range(1, l):
                KRK = np.einsum("ae,cdef,fb->abcd", K[b - 1], Rs[b - 1], K[b - 1])
                Cz2[:, b - 1, :] = 2 * Xi[l, b] ** 2 * CW[b - 1] * KRK.reshape(M, M)
            Cz2psi = (Cz2.reshape(M, L * M) @ Bf.T).reshape(M, L, M)
            # Cov(z_c(l), phi_(b', ab)) = Xi C_W sum_mu K(b')_(c mu) <d_mu (s_a s_b)>, then against psi
            Cz1 = np.zeros((N, L, M))
            for b in range(1, l):
                Cz1[:, b - 1, :] = Xi[l, b] * CW[b - 1] * np.einsum("cm,abm->cab", K[b - 1], Ds[b - 1]).reshape(N, M)
            Cz1psi = (Cz1.reshape(N, L * M) @ Bf.T).reshape(N, L, M)
            V = np.zeros((M, M))
            M3 = np.zeros((M, N))
            for m in range(1, l):
                V += c[l, m] * (Cz2psi[:, m - 1, :] + Cz2psi[:, m - 1, :].T)
                M3 += c[l, m] * Cz1psi[:, m - 1, :].T
                for m2 in range(1, l):
                    V += c[l, m] * c[l, m2] * Cpsi[m - 1, :, m2 - 1, :]
            out.append({"K": K[l - 1], "V": V.reshape(N, N, N, N), "M3": M3.reshape(N, N, N)})
        out.append({"K": G_out, "V": Cpsi[L - 1, :, L - 1, :].reshape(N, N, N, N), "M3": np.zeros((N, N, N))})
        err = max(errors)
        for l, st in enumerate(out):
            st["error"] = err
            if k1:
                st["Th"], st["K1"] = Th[l], (K1[l] if l < L else e[L])
                if not all(np.all(np.isfinite(v)) for v in st.values()):
                    raise ValueError(f"the residual finite-width tensors of {self.activation.name} are not finite "
                                     "at these inputs (a Gaussian average diverges)")
        return out

    @functools.cached_property
    def _stein_kernels(self):
        """The four-point kernels (s, s + h) and (s, s - h) of h(x) = x s'(x) (compiled, :func:`ntk_theory.jit.build_functions`),
        or None where h = s (positively homogeneous s of degree 1: relu, leaky_relu, linear, abs; decided by SymPy or,
        where it does not simplify h - s to 0, on a grid of 321 points in [-8, 8] to 1e-14)."""
        from ..activations import x as _x
        from ..jit import build_functions
        from ..numerics.fourpoint import compiled_pair

        s = self.activation.expr
        h = _x * self.activation.ae_derivative()
        grid = np.linspace(-8.0, 8.0, 321)  # h = s is decided on a grid where SymPy does not simplify h - s to 0
        if sp.simplify(sp.piecewise_fold(h - s)) == 0 or np.allclose(
                grid * self.activation.numpy_derivative(grid), self.activation.numpy(grid), rtol=1e-14, atol=1e-14):
            return None
        z = sp.Symbol("z")
        mod = build_functions({"s": s.subs(_x, z), "plus": (s + h).subs(_x, z), "minus": (s - h).subs(_x, z)}, (z,),
                              "residual_stein")
        kinks = tuple(float(k) for k in self.activation.kinks)
        return compiled_pair(mod.s, mod.plus, kinks), compiled_pair(mod.s, mod.minus, kinks)

    def _second_derivative_moments(self, J, ssss, ddss, tol, errors) -> np.ndarray:
        r"""T2[p, q, r, t] = E[s''(x_p) s(x_q) s(x_r) s(x_t)] for x ~ N(0, J) without s'' (no deltas), by Stein's
        lemma on the slots (p, q, r, t): E[h(x_p) s_q s_r s_t] = J_pp T2_pqrt + J_pq ddss_pqrt + J_pr ddss_prqt
        + J_pt ddss_ptqr, h(x) = x s'(x).  E[h_p s_q s_r s_t] is ``ssss`` where h = s, otherwise it comes from the
        four-point ``ddss`` of the pairs (s, s + h), (s, s - h): P_pqrt = (ddss+ - ddss-)/2 = E[h_p s_q s_r s_t]
        + E[s_p h_q s_r s_t], and E[h_p s_q s_r s_t] = (P_pqrt + P_prqt - P_qrpt) / 2.  Errors: the four-point
        estimates (appended to ``errors``), divided by J_pp."""
        from ..gaussian.fourpoint import four_point_moments

        kernels = self._stein_kernels
        if kernels is None:
            H = ssss
        else:
            m = [four_point_moments(None, J, s=k.s, ds=k.ds, kinks=tuple(k.kinks), tol=tol) for k in kernels]
            errors.append(max(x.max_error for x in m))
            P = 0.5 * (m[0].ddss - m[1].ddss)
            H = 0.5 * (P + np.einsum("prqt->pqrt", P) - np.einsum("qrpt->pqrt", P))
        stein = (np.einsum("pq,pqrt->pqrt", J, ddss) + np.einsum("pr,prqt->pqrt", J, ddss)
                 + np.einsum("pt,ptqr->pqrt", J, ddss))
        return (H - stein) / np.diag(J)[:, None, None, None]

    def _first_derivative_averages(self, K, errors) -> np.ndarray:
        """D[a, b, mu] = <d/dz_mu (s(z_a) s(z_b))> at z ~ N(0, K): for a != b <s'(u) s(v)> (mu = a) and <s(u) s'(v)>
        (mu = b) by :func:`ntk_theory.numerics.bivariate.expect_weighted` (weights H_10, H_01; its error appended
        to ``errors``), for a = b <(s^2)'> (:func:`ntk_theory.gaussian.expectation1`)."""
        from ..gaussian.bivariate import hermite_weight
        from ..numerics.bivariate import expect_weighted

        N = K.shape[0]
        D = np.zeros((N, N, N))
        for a in range(N):
            v, e = self.extra.evaluate("ss_d1", K[a, a])
            D[a, a, a] = v
            errors.append(e)
        a, b = np.nonzero(np.triu(np.ones((N, N), dtype=bool), 1))
        if a.size:
            s = self.activation.numpy
            vals, errs = expect_weighted(s, tuple(self.activation.kinks), K[a, a], K[b, b], K[a, b],
                                         [hermite_weight(1, 0), hermite_weight(0, 1)])
            errors.append(float(errs.max()))
            D[a, b, a], D[a, b, b] = vals[:, 0], vals[:, 1]
            D[b, a, a], D[b, a, b] = vals[:, 0], vals[:, 1]
        return D

    @filled(inputs=_INPUTS_TOL)
    def ntk_tensors(self, X, *, tol: float = 1e-10) -> list:
        r"""``[{"A", "B", "D", "F", "V"}, ...]`` of layers 1 .. L and the readout (last) at the N inputs X (N, d): the
        NTK's four-index tensors with the MLP's index conventions (:mod:`.tensors`; i != j)::

            A_(ab)(cd) = n Cov(Theta_ii;ab, Theta_jj;cd) = n Cov(tau_ia tau_ib, tau'_jc tau'_jd)
            B_(pq)(rs) = n E[Theta_ij;pr Theta_ij;qs]     = n Cov(tau_ip tau'_iq, tau_jr tau'_js)
            D_abcd     = n Cov(Theta_ii;ab, z_jc z_jd)    = n Cov(tau_ia tau_ib, z_jc z_jd)
            F_(pq)(rs) = n E[Theta_ij;pr z_iq z_js]       = n Cov(tau_ip z_iq, tau_jr z_js)

        (and V_(ab)(cd) = n Cov(z_ia z_ib, z_jc z_jd) by the same route), by the forward-tangent particle system of
        the module docstring with N inputs: one neuron's state x = (z_a, tau_a, tau'_a) (3N), the W-input functions
        g(x) = (s(z_a), s'(z_a) tau_a, s'(z_a) tau'_a) and the fields F(m) = (1/n) sum_k g(x_k) g(x_k)^T (3N x 3N), so
        that the next layer's branch increments are iid N(0, Sigma) with Sigma = C_W F + lambda_W F_zz on the
        tau-tau and tau'-tau' blocks + const.  With the leading-order state covariance blockdiag(K, Theta, Theta),
        the ordered response R_phi = d<g_u g_v>/dK_xy, psi = (1 - A)^-1 (phi - <phi>) as for V, and
        J(l) = dK(l)/dF = sum_m c(l, m) dSigma(m+1)/dF(m)::

            n Cov(x_i x_j, x_k x_m) = J_km . Cov(psi, x_i x_j) + J_ij . Cov(psi, x_k x_m) + J_ij Cov(psi, psi) J_km,
            Cov(x_i x_j(l), phi_uv(b)) = 2 Xi(l, b)^2 sum_ef K_ie K_jf R_phi[uv, ef]        (b < l; Gaussian),

        Cov(phi(a), phi(b)) from the four-point ``ssss``, ``ddss``, ``dddd`` over the joint path covariance of
        z(a), z(b) times Wick products of the tangents (Cov(tau(a), tau(b)) = Xi(a, b) Theta(b), tau' independent
        of tau).  The z-tau response needs <d_c (s_a s'_b)> = (2 - delta_ab) R_abcb, the tau-tau one <s'_a s'_b> and
        Theta_ab d<s'_a s'_b>/dK (:mod:`.twopoint`).  One input gives :meth:`one_input`'s A, B, D, F; xi = 0 and
        gamma = 1 the MLP's.  Theta1_(ab) at several inputs: :meth:`ntk_correction`.

        Parameters
        ----------
        %(inputs)s

        Returns
        -------
        list of dict
            ``{"A", "B", "D", "F", "V"}`` (N, N, N, N) arrays per layer, the readout's last.

        Notes
        -----
        At each input alone (a = b = c = d) the entries equal :meth:`one_input`'s.
        """
        return self._ntk_several(X, tol, th1=False)

    @filled(inputs=_INPUTS_TOL)
    def ntk_correction(self, X, *, tol: float = 1e-10) -> list:
        r"""Theta1_(ab) (N, N) of layers 1 .. L and the readout (last) at the N inputs X (N, d):
        E[Theta_ii;ab] = Theta_ab + Theta1_ab / n, by the (z, tau, tau') particle system of :meth:`ntk_tensors`
        (docs/finite_width.md, "Residual networks").  With e(a) = n E[F(a) - <phi(a)>] (3N x 3N, nonzero on the
        zz, tau-tau and tau'-tau' blocks by the sign symmetries tau -> -tau, tau' -> -tau'), dK(a) = J(a) psi,
        CovK(a) = J(a) Cov(psi, psi) J(a)^T and the ordered response R_phi of :meth:`ntk_tensors`::

            e(a)_uv = [R_phi(a) J(a) e]_uv + (1/8) sum_(xy, x'y') <d_x d_y d_x' d_y' phi_uv> CovK(a)[xy, x'y']
                      + sum_(xy) sum_(b < a) Cov((1/2) d_x d_y phi_uv(x(a)), [J(a) psi]_xy),
            Theta1(l) = [J(l) e]_(tau tau),   (and K1(l) = [J(l) e]_zz, as :meth:`tensors`)

        the second term by :meth:`.twopoint.TwoPointTensors.taylor` of <s s>, <s' s'> and R_dd = d<s' s'>/dK (for
        phi_tt = s'_p s'_q tau_p tau_q: Theta_pq Q_dd[CovK_zzzz] + sum_ef CovK[t_p t_q, z_e z_f] R_dd,pqef
        + sum_ef (CovK[t_p z_e, t_q z_f] + CovK[t_q z_e, t_p z_f]) R_dd,pqef); the self term (neuron i's own
        share of the fields its own path sees) from E[s^(o1) s^(o2) s^(o3) s^(o4)], orders 0..3, over the joint
        Gaussian of (z(a), z(b)) (:func:`ntk_theory.gaussian.fourpoint.derivative_moments`) times Wick products
        of the tangents (Cov(tau(a), tau(b)) = Xi(a, b) Theta(b)).  Piecewise-linear activations (relu,
        leaky_relu, abs): the factors at one variable form one function f (s'^2 = H for relu, s s', s^2),
        and d_x d_y differentiates f as a distribution (s'' = (b - a) delta, (s'^2)'' = (b^2 - a^2) delta'),
        which is Price's theorem for the network's own functions and the limit of smooth activations (Leibniz'
        split into delta H, delta^2, delta' H is never formed); E[prod_i f_i^(k_i)(z_i)] by Gaussian integration
        by parts onto the conditional density and exact orthant moments
        (:func:`ntk_theory.numerics.dirac.derivative_product_moments`).  One input gives :meth:`one_input`'s Th1,
        xi = 0 and gamma = 1 the MLP's.  Error: the Gaussian averages' (``tol`` relative; exact orthant moments
        ~1e-14 relative for piecewise-linear s); leading order in 1/n.

        Parameters
        ----------
        %(inputs)s

        Returns
        -------
        list of numpy.ndarray
            Theta1 (N, N) per layer, the readout's last.

        Raises
        ------
        NotDerived
            For kinked activations other than the piecewise-linear ones (elu, selu, ...): their Dirac terms of
            s'' and s''' are not derived.
        ValueError
            Piecewise-linear activations at inputs where a Dirac term's variable is (nearly) a linear function
            of the others (e.g. parallel inputs without bias).
        """
        if not self.theta1_derived:
            _self_term_moments(self.activation, None, tol)  # raises NotDerived naming the activation
        return [st["Th1"] for st in self._ntk_several(X, tol, th1=True)]

    @property
    def theta1_derived(self) -> bool:
        """Whether :meth:`ntk_correction` is derived for this activation: smooth ones and piecewise-linear ones with
        one kink at 0 (relu, leaky_relu, abs)."""
        from ..gaussian.fourpoint import piecewise_linear_slopes

        return not self.activation.kinks or piecewise_linear_slopes(self.activation) is not None

    def _ntk_several(self, X, tol, th1: bool) -> list:
        """Dicts A, B, D, F, V (and with ``th1`` Th1, K1) of layers 1 .. L+1 at X (:meth:`ntk_tensors`,
        :meth:`ntk_correction`)."""
        from .tensors import _four_point
        from .twopoint import derivative_tensors

        X = _checks.inputs(X, "X")
        uniq, inv = np.unique(X, axis=0, return_inverse=True)
        if uniq.shape[0] < X.shape[0]:  # equal inputs: computed once, their entries copied
            inv = inv.ravel()
            return [{k: v[np.ix_(*([inv] * v.ndim))] for k, v in st.items()}
                    for st in self._ntk_several(uniq, tol, th1)]
        N, d = X.shape
        L = self.depth
        D3 = 3 * N
        P2 = D3 * D3
        tp, tpd = TwoPoint(self.activation, "ss"), TwoPoint(self.activation, "dd")
        G0 = X @ X.T / d
        K = [self.C_b[0] + self.C_W[0] * G0]
        lb, lw = self.lambdas(1)
        Th = [lb + lw * G0]
        Rs, Rd, S, DD, Tss, Tdd = [], [], [], [], [], []
        for m in range(1, L + 1):
            if not np.all(np.diag(K[-1]) > 0):
                raise ValueError(f"a variance of layer {m} is zero: an input is zero and C_b = 0")
            t, td = derivative_tensors(tp, K[-1]), derivative_tensors(tpd, K[-1])
            Rs.append(t.R), Rd.append(td.R), S.append(t.value), DD.append(td.value)
            Tss.append(t), Tdd.append(td)
            lb, lw = self.lambdas(m + 1)
            th_mlp = lb + lw * t.value + self.C_W[m] * td.value * Th[-1]
            if m < L:
                xi, g = self.xi[m - 1], self.gamma[m - 1]
                K.append(xi * xi * K[-1] + g * g * (self.C_b[m] + self.C_W[m] * t.value))
                Th.append(xi * xi * Th[-1] + g * g * th_mlp)
        # c[l, m] = dK(l)/dSigma(m+1) (readout: c[L+1, L] = 1), Xi[l, m] = Cov(x(l), x(m)) / Cov(x(m), x(m))
        c, Xi = self._path_matrices(L + 2)
        c[L + 1, L] = 1.0
        z_, t_, u_ = (np.arange(N) + k * N for k in range(3))
        Kfull = []
        for m in range(1, L + 1):
            Km = np.zeros((D3, D3))
            Km[np.ix_(z_, z_)], Km[np.ix_(t_, t_)], Km[np.ix_(u_, u_)] = K[m - 1], Th[m - 1], Th[m - 1]
            Kfull.append(Km)
        # E(m)[ij, uv] = dSigma(m+1)_ij / dF(m)_uv
        E = []
        for m in range(1, L + 1):
            lw = self.lambdas(m + 1)[1]
            Em = self.C_W[m] * np.eye(P2).reshape(D3, D3, D3, D3)
            for blk in (t_, u_):
                for a in range(N):
                    for b in range(N):
                        Em[blk[a], blk[b], a, b] += lw
            E.append(Em.reshape(P2, P2))
        nF = L * P2

        def Jrows(l):  # (P2, nF): dK(l)_ij / dF
            out = np.zeros((P2, nF))
            for m in range(1, min(l, L + 1)):
                out[:, (m - 1) * P2:m * P2] = c[l, m] * E[m - 1]
            return out

        # ordered response Rphi(m)[uv, xy] = d<g_u g_v>/dK_xy at the leading-order state of layer m
        def response(m):
            R, Rdm, dd, T = Rs[m - 1], Rd[m - 1], DD[m - 1], Th[m - 1]
            out = np.zeros((D3, D3, D3, D3))
            for u in range(D3):
                ku, a = divmod(u, N)
                for v in range(D3):
                    kv, b = divmod(v, N)
                    if ku == 0 and kv == 0:
                        out[u, v][np.ix_(z_, z_)] = R[a, b]
                    elif ku == 0 or kv == 0:  # s_p s'_q tau_q: (1/2) <d_c (s_p s'_q)> at (z_c, tau_q), (tau_q, z_c)
                        p, q, tq = (a, b, v) if ku == 0 else (b, a, u)
                        Ez = (2.0 - (p == q)) * R[p, q, :, q]
                        out[u, v, z_, tq] += 0.5 * Ez
                        out[u, v, tq, z_] += 0.5 * Ez
                    else:
                        out[u, v, u, v] += 0.5 * dd[a, b]
                        out[u, v, v, u] += 0.5 * dd[a, b]
                        if ku == kv:
                            out[u, v][np.ix_(z_, z_)] += T[a, b] * Rdm[a, b]
            return out

        Rphi = [response(m) for m in range(1, L + 1)]
        Amat = np.zeros((nF, nF))
        for a in range(1, L + 1):
            Amat[(a - 1) * P2:a * P2] = Rphi[a - 1].reshape(P2, P2) @ Jrows(a)
        Bm = np.linalg.inv(np.eye(nF) - Amat)

        # Cov(phi(a), phi(b)): z four-point moments over the joint covariance times Wick products of the tangents
        Cphi = np.zeros((nF, nF))
        for a in range(1, L + 1):
            for b in range(1, a + 1):
                r = Xi[a, b]
                if a != b and r == 0.0:
                    continue
                if a == b:
                    four = _four_point(self.activation, K[a - 1], tol)[:3]
                    zvars = (np.arange(N),) * 4
                    Tc = np.block([[Th[a - 1], Th[a - 1]], [Th[a - 1], Th[a - 1]]])
                else:
                    J = np.block([[K[b - 1], r * K[b - 1]], [r * K[b - 1], K[a - 1]]])
                    four = _four_point(self.activation, J, tol)[:3]
                    zvars = (np.arange(N, 2 * N),) * 2 + (np.arange(N),) * 2
                    Tc = np.block([[Th[a - 1], r * Th[b - 1]], [r * Th[b - 1], Th[b - 1]]])
                block = _tangent_four_point(four, zvars, Tc, N)
                mean_a, mean_b = (_tangent_two_point(S[m - 1], DD[m - 1], Th[m - 1], N) for m in (a, b))
                block = (block - np.multiply.outer(mean_a, mean_b)).reshape(P2, P2)
                Cphi[(a - 1) * P2:a * P2, (b - 1) * P2:b * P2] = block
                Cphi[(b - 1) * P2:b * P2, (a - 1) * P2:a * P2] = block.T
        Cpsi = Bm @ Cphi @ Bm.T
        if th1:  # e = n E[F - <phi>] per layer in order (ntk_correction's docstring)
            e = np.zeros(nF)
            keep = np.zeros((D3, D3), dtype=bool)
            for w in (z_, t_, u_):
                keep[np.ix_(w, w)] = True
            zzzz = np.ix_(z_, z_, z_, z_)
            for a in range(1, L + 1):
                Ja = Jrows(a)
                CovK = (Ja @ Cpsi @ Ja.T).reshape(D3, D3, D3, D3)
                first = (Rphi[a - 1].reshape(P2, P2) @ (Ja @ e)).reshape(D3, D3)
                second = np.zeros((D3, D3))
                second[np.ix_(z_, z_)] = Tss[a - 1].taylor(CovK[zzzz])
                Rdd = Rd[a - 1]
                for w in (t_, u_):
                    mixed = CovK[np.ix_(w, z_, w, z_)]  # [p, e, q, f]
                    second[np.ix_(w, w)] = (Th[a - 1] * Tdd[a - 1].taylor(CovK[zzzz])
                                            + np.einsum("pqef,pqef->pq", CovK[np.ix_(w, w, z_, z_)], Rdd)
                                            + np.einsum("peqf,pqef->pq", mixed, Rdd)
                                            + np.einsum("qepf,pqef->pq", mixed, Rdd))
                JB = (Ja @ Bm).reshape(D3, D3, L, P2)
                selfv = np.zeros((D3, D3))
                self_err = np.zeros((D3, D3))
                for b in range(1, a):
                    r = Xi[a, b]
                    if r == 0.0:
                        continue
                    Jz = np.block([[K[b - 1], r * K[b - 1]], [r * K[b - 1], K[a - 1]]])
                    Tc = np.block([[Th[b - 1], r * Th[b - 1]], [r * Th[b - 1], Th[a - 1]]])
                    sv, se = _th1_self_term(self.activation, Jz, Tc, JB[:, :, b - 1, :], N, tol)
                    selfv += sv
                    self_err += se
                limit = _SELF_TERM_TOL * max(1.0, float(np.max(np.abs(selfv))))
                if float(np.max(self_err)) > limit:
                    raise ValueError(
                        f"the residual self term of Theta1 for {self.activation.name} at layer {a} is not resolved: "
                        f"estimated error {float(np.max(self_err)):.2g} of its Gaussian averages of s'' and s''' "
                        f"(above {limit:.2g}): the activation varies on a scale the four-point quadrature does not "
                        "resolve")
                e[(a - 1) * P2:a * P2] = np.where(keep, first + second + selfv, 0.0).ravel()
        out = []
        for l in range(1, L + 2):
            Jl = Jrows(l)
            Cf = np.zeros((nF, P2))  # Cov(phi, x_i x_j(l))
            for b in range(1, min(l, L + 1)):
                r = Xi[l, b] if l <= L else 0.0
                if r == 0.0:
                    continue
                Kb = Kfull[b - 1]
                Cf[(b - 1) * P2:b * P2] = 2 * r * r * np.einsum("ie,jf,uvef->uvij", Kb, Kb,
                                                                 Rphi[b - 1]).reshape(P2, P2)
            Cf = Bm @ Cf
            Mx = Cf.T @ Jl.T + Jl @ Cf + Jl @ Cpsi @ Jl.T
            Mx = Mx.reshape(D3, D3, D3, D3)
            out.append({"A": Mx[np.ix_(t_, t_, u_, u_)], "B": Mx[np.ix_(t_, u_, t_, u_)],
                        "D": Mx[np.ix_(t_, t_, z_, z_)], "F": Mx[np.ix_(t_, z_, t_, z_)],
                        "V": Mx[np.ix_(z_, z_, z_, z_)]})
            if th1:
                Je = (Jl @ e).reshape(D3, D3)
                out[-1]["Th1"], out[-1]["K1"] = Je[np.ix_(t_, t_)], Je[np.ix_(z_, z_)]
        return out

    def __repr__(self) -> str:
        return (f"ResidualRecursion({self.activation.name}, depth={self.depth}, C_W={self.C_W[1]:g}, "
                f"C_b={self.C_b[1]:g}, xi={self.xi[0] if self.xi else None}, "
                f"gamma={self.gamma[0] if self.gamma else None}, param={self.param!r})")


def _tangent_two_point(S, DD, Th, N) -> np.ndarray:
    """<g_u g_v> (3N, 3N) at one layer's leading-order state, g = (s(z_a), s'(z_a) tau_a, s'(z_a) tau'_a): <s_a s_b>,
    <s'_a s'_b> Theta_ab on the tau-tau and tau'-tau' blocks, 0 elsewhere (odd in a tangent)."""
    out = np.zeros((3 * N, 3 * N))
    out[:N, :N] = S
    out[N:2 * N, N:2 * N] = out[2 * N:, 2 * N:] = DD * Th
    return out


def _tangent_four_point(four, zvars, Tc, N) -> np.ndarray:
    """E[g_u(x) g_v(x) g_w(y) g_y(y)] (3N,)*4 for one neuron's states x (first two slots) and y (last two) at
    leading order: the z part E[f_1 f_2 f_3 f_4], f = s (plain slot) or s' (tangent slot), from the four-point
    (ssss, ddss, dddd) over the joint variables (``zvars[k]``: the joint index of each input in slot k; ddss's two
    s' axes first), times the Wick products of the tau and tau' slots (independent, each with the covariance Tc
    over (x's inputs, y's inputs))."""
    ssss, ddss, dddd = four
    out = np.zeros((3, N, 3, N, 3, N, 3, N))
    offs = (0, 0, N, N)
    for kinds in np.ndindex(3, 3, 3, 3):
        groups = [[k for k in range(4) if kinds[k] == t] for t in (1, 2)]
        if any(len(g) % 2 for g in groups):
            continue
        d = [k for k in range(4) if kinds[k]]
        order = d + [k for k in range(4) if not kinds[k]]
        table = {0: ssss, 2: ddss, 4: dddd}[len(d)]
        z = np.moveaxis(table[np.ix_(*(zvars[k] for k in order))], range(4), order)
        for g in groups:
            z = z * _wick(g, Tc, offs, N)
        out[kinds[0], :, kinds[1], :, kinds[2], :, kinds[3], :] = z
    return out.reshape((3 * N,) * 4)


def _wick(slots, Tc, offs, N):
    """The Wick product of the tangents in ``slots`` (0, 2 or 4 of the four), broadcastable to (N,)*4."""
    def pair(i, j):
        shape = [1] * 4
        shape[i] = shape[j] = N
        return Tc[offs[i]:offs[i] + N, offs[j]:offs[j] + N].reshape(shape)

    if not slots:
        return 1.0
    if len(slots) == 2:
        return pair(*slots)
    i, j, k, m = slots
    return pair(i, j) * pair(k, m) + pair(i, k) * pair(j, m) + pair(i, m) * pair(j, k)


def _self_covariance(T2, ddss, R, S, N, pq) -> np.ndarray:
    """Cov(Rhat_(pq,ef)(u), s_g s_h(v)) (N,)*6 for the joint moments T2 = E[s'' s s s], ddss over (v, u) (lower
    layer's inputs first): Rhat_(pq,ef) = (1/2) d_e d_f (s_p s_q) is, for p != q, (1/2) s''_p s_q at (e,f) = (p,p),
    (1/2) s_p s''_q at (q,q) and (1/2) s'_p s'_q at (p,q) and (q,p); for p = q, s'_p^2 + s_p s''_p at (p,p).
    R = d<s_p s_q>/dK_ef of the upper layer, S = <s_g s_h> of the lower one."""
    u = np.arange(N, 2 * N)
    E = np.zeros((N,) * 6)
    for p, q in pq:
        up, uq = u[p], u[q]
        if p == q:
            E[p, p, p, p] = ddss[up, up, :N, :N] + T2[up, up, :N, :N]
        else:
            E[p, q, p, p] = 0.5 * T2[up, uq, :N, :N]
            E[p, q, q, q] = 0.5 * T2[uq, up, :N, :N]
            E[p, q, p, q] = E[p, q, q, p] = 0.5 * ddss[up, uq, :N, :N]
    return E - np.multiply.outer(R, S)


class _LeibnizMoments:
    """Averages of the self term's z parts for smooth activations: each variable's factor d^k (prod_i s^(o_i)) by
    Leibniz' rule into products of s^(o) (orders 0..3), averaged by the compiled four-point integrator
    (:func:`ntk_theory.gaussian.fourpoint.derivative_moments` over the joint variables).  A z part is a tuple of
    (variable, orders of its factors, derivative count), one entry per variable."""

    def __init__(self, act, Jz, tol):
        self.act, self.Jz, self.tol = act, Jz, tol
        self.orders: set = set()
        self.values: dict = {}
        self.errors: dict = {}

    @staticmethod
    def expand(zf) -> list:
        """[(coefficient, ((variable, order), ...)), ...]: d^k of each variable's product by Leibniz' rule."""
        out = [(1.0, ())]
        for v, base, k in zf:
            parts = []
            for js in itertools.product(range(k + 1), repeat=len(base)):
                if sum(js) == k:
                    c = math.factorial(k) / math.prod(math.factorial(j) for j in js)
                    parts.append((c, tuple((v, o + j) for o, j in zip(base, js))))
            out = [(c1 * c2, f1 + f2) for c1, f1 in out for c2, f2 in parts]
        return out

    def need(self, zf) -> None:
        self.orders.update(tuple(o for _, o in f) for _, f in self.expand(zf))

    def prepare(self) -> None:
        from ..gaussian.fourpoint import derivative_moments

        def integrate(terms):  # halves a call the integrator refuses for too many products per set
            try:
                res = derivative_moments(self.act, self.Jz, terms, tol=self.tol)
            except ValueError as err:
                if len(terms) == 1 or "too many products" not in str(err):
                    raise
                integrate(terms[:len(terms) // 2]), integrate(terms[len(terms) // 2:])
                return
            self.values.update(res.values)
            self.errors.update(res.errors)

        integrate(sorted(self.orders, key=lambda t: (len(t), t)))

    def __call__(self, zf) -> float:
        return sum(c * float(self.values[tuple(o for _, o in f)][tuple(v for v, _ in f)])
                   for c, f in self.expand(zf))

    def error(self, zf) -> float:
        """The integrator's estimated absolute error of ``self(zf)`` (sum over the Leibniz terms)."""
        return sum(abs(c) * float(self.errors[tuple(o for _, o in f)][tuple(v for v, _ in f)])
                   for c, f in self.expand(zf))


class _DiracMoments:
    """Averages of the self term's z parts for piecewise-linear activations (relu, leaky_relu, abs): each
    variable's product f = s^p s'^q differentiated k times as a distribution (Dirac terms at the kink included;
    the limit of smooth activations), by Gaussian integration by parts onto the density and exact orthant moments
    (:func:`ntk_theory.numerics.dirac.derivative_product_moments`), batched over the variable sets of each shape."""

    def __init__(self, slopes, Jz, tol):
        self.slopes, self.Jz, self.tol = slopes, Jz, tol
        self.needed: dict = {}
        self.values: dict = {}

    @staticmethod
    def key(zf) -> tuple:
        return tuple((base.count(0), base.count(1), k) for _, base, k in zf), tuple(v for v, _, _ in zf)

    def need(self, zf) -> None:
        shape, variables = self.key(zf)
        self.needed.setdefault(shape, set()).add(variables)

    def prepare(self) -> None:
        from ..numerics.dirac import derivative_product_moments

        a, b = self.slopes
        for shape, varsets in self.needed.items():
            varsets = sorted(varsets)
            idx = np.array(varsets)
            S = self.Jz[idx[:, :, None], idx[:, None, :]]
            vals = derivative_product_moments(S, shape, a, b, tol=self.tol).values
            self.values.update(((shape, vs), float(v)) for vs, v in zip(varsets, vals))

    def __call__(self, zf) -> float:
        return self.values[self.key(zf)]

    @staticmethod
    def error(zf) -> float:
        """0: the orthant moments are exact to rounding (~1e-14 relative, below the Gaussian averages' tol)."""
        return 0.0


def _self_term_moments(act, Jz, tol):
    """The z-part averages of :func:`_th1_self_term`: :class:`_DiracMoments` for piecewise-linear activations,
    :class:`_LeibnizMoments` for smooth ones; other kinked activations are refused (:class:`NotDerived`)."""
    from ..gaussian.fourpoint import piecewise_linear_slopes

    if not act.kinks:
        return _LeibnizMoments(act, Jz, tol)
    slopes = piecewise_linear_slopes(act)
    if slopes is None:
        raise NotDerived(f"Theta1 at several inputs of a residual network with the kinked activation {act.name}: "
                         "the Dirac terms of s'' and s''' are derived for smooth activations and piecewise-linear "
                         "ones with one kink at 0 (relu, leaky_relu, abs); use one_input() per input")
    return _DiracMoments(slopes, Jz, tol)


#: the largest estimated absolute error of Theta1's self term (relative to max(1, its largest entry)) that
#: :meth:`ResidualRecursion.ntk_correction` returns; above it the result is refused
_SELF_TERM_TOL = 1e-6


def _th1_self_term(act, Jz, Tc, JB, N, tol) -> tuple:
    r"""sum_(xy) Cov((1/2) d_x d_y phi_uv(x(a)), [J(a) psi]_xy) over the lower layer b's fields: (3N, 3N) over uv.

    ``Jz`` the joint covariance of (z(b), z(a)) (b's inputs first), ``Tc`` that of (tau(b), tau(a)) (tau' alike and
    independent), ``JB[x, y, w]`` = d[J(a) psi]_xy / dphi_w(b), (3N, 3N, (3N)^2).  A pointwise function of one
    neuron's state is a list of terms (coef, z part, tau vars, tau' vars); the z part holds, per joint variable,
    the orders of its factors (0: s, 1: s') and how often their product is differentiated (d/dz of the upper
    layer differentiates the whole product at that variable; tau derivatives act on the tau monomials).  The
    expectation of a product of terms is the z part's average (:func:`_self_term_moments`: Leibniz and the
    compiled integrator for smooth s; the product's distributional derivative, Dirac terms included, for
    piecewise-linear s) times the Wick sums of its tau and tau' factors.  Returns (value, error), the error the
    averages' estimated errors carried through the sums by the triangle inequality."""
    D3 = 3 * N
    moments = _self_term_moments(act, Jz, tol)

    def g(off, u):  # g_u = s(z_p), s'(z_p) tau_p or s'(z_p) tau'_p of the layer whose joint variables start at off
        kind, p = divmod(u, N)
        v = off + p
        return v, (0 if kind == 0 else 1), ((v,) if kind == 1 else ()), ((v,) if kind == 2 else ())

    def phi(off, u, v):
        (vu, ou, tu, uu), (vv, ov, tv, uv) = g(off, u), g(off, v)
        zf = ((vu, tuple(sorted((ou, ov))), 0),) if vu == vv else tuple(sorted(((vu, (ou,), 0), (vv, (ov,), 0))))
        return [(1.0, zf, tu + tv, uu + uv)]

    def deriv(terms, x):  # d/dx, x a state index of the upper layer a (joint offset N)
        kind, p = divmod(x, N)
        v = N + p
        out = []
        for c, zf, tf, uf in terms:
            if kind == 0:
                out.extend((c, zf[:i] + ((w, base, k + 1),) + zf[i + 1:], tf, uf)
                           for i, (w, base, k) in enumerate(zf) if w == v)
            elif kind == 1:
                out.extend((c, zf, tf[:i] + tf[i + 1:], uf) for i, w in enumerate(tf) if w == v)
            else:
                out.extend((c, zf, tf, uf[:i] + uf[i + 1:]) for i, w in enumerate(uf) if w == v)
        return out

    fa = {}  # ((u, v), (x, y)) -> (1/2) d_x d_y phi_uv at layer a, for the blocks zz and tau tau
    for kind in range(2):
        for p in range(N):
            for q in range(N):
                u, v = kind * N + p, kind * N + q
                base = phi(N, u, v)
                for x in range(D3):
                    d1 = deriv(base, x)
                    for y in range(D3) if d1 else ():
                        d2 = deriv(d1, y)
                        if d2 and np.any(JB[x, y]):
                            fa[(u, v), (x, y)] = [(0.5 * c, zf, tf, uf) for c, zf, tf, uf in d2]
    if not fa:
        return np.zeros((D3, D3))
    fb = {w: phi(0, *divmod(w, D3)) for w in range(D3 * D3)}

    def wick(vs):
        if not vs:
            return 1.0
        if len(vs) % 2:
            return 0.0
        first, rest = vs[0], vs[1:]
        return sum(Tc[first, rest[i]] * wick(rest[:i] + rest[i + 1:]) for i in range(len(rest)))

    def expect(terms, z):
        total = 0.0
        for c, zf, tf, uf in terms:
            wt = wick(tf)
            wu = wick(uf) if wt else 0.0
            if wu:
                total += c * z(zf) * wt * wu
        return total

    def products(ta, w):
        return [(c1 * c2, tuple(sorted(z1 + z2)), t1 + t2, u1 + u2) for c1, z1, t1, u1 in ta
                for c2, z2, t2, u2 in fb[w]]

    def record(zf):
        moments.need(zf)
        return 1.0

    for w in fb:  # first pass: the z parts whose averages are needed
        expect(fb[w], record)
    for ((u, v), (x, y)), ta in fa.items():
        expect(ta, record)
        for w in np.flatnonzero(JB[x, y]):
            expect(products(ta, w), record)
    moments.prepare()

    def bound(terms):  # the averages' estimated errors carried through expect (triangle inequality)
        total = 0.0
        for c, zf, tf, uf in terms:
            wt = wick(tf)
            wu = wick(uf) if wt else 0.0
            if wu:
                total += abs(c * wt * wu) * moments.error(zf)
        return total

    mean_b = {w: expect(t, moments) for w, t in fb.items()}
    err_b = {w: bound(t) for w, t in fb.items()}
    out = np.zeros((D3, D3))
    err = np.zeros((D3, D3))
    for ((u, v), (x, y)), ta in fa.items():
        weights = JB[x, y]
        ma, ea = expect(ta, moments), bound(ta)
        acc = acc_err = 0.0
        for w in np.flatnonzero(weights):
            pr = products(ta, w)
            acc += weights[w] * (expect(pr, moments) - ma * mean_b[w])
            acc_err += abs(weights[w]) * (bound(pr) + abs(ma) * err_b[w] + ea * abs(mean_b[w]))
        out[u, v] += acc
        err[u, v] += acc_err
    out[2 * N:, 2 * N:] = out[N:2 * N, N:2 * N]  # tau' tau' = tau tau (the probes are exchangeable)
    err[2 * N:, 2 * N:] = err[N:2 * N, N:2 * N]
    return out, err


def _per_residual(name: str, value, count: int) -> tuple:
    if np.ndim(value) == 0:
        return (_checks.finite(name, value),) * count
    values = list(np.asarray(value, dtype=object).ravel())
    if len(values) != count:
        raise ValueError(f"{name} must be a scalar or have one entry per residual layer ({count}); "
                         f"got {len(values)} entries")
    return tuple(_checks.finite(f"{name}[{i}]", v) for i, v in enumerate(values))


# ---------------------------------------------------------------------------------------------- NTK side
#: the per-layer fields of the (z, tau, tau') particle system, by column c: phi_c(x) of one neuron
FIELD_NAMES = ("s^2", "s s' tau", "s s' tau'", "s'^2 tau^2", "s'^2 tau'^2", "s'^2 tau tau'")
#: the covariance entries of one neuron's (z, tau, tau'), by index v (u stands for tau')
ENTRIES = ("zz", "tt", "uu", "zt", "zu", "tu")
_ZZ, _TT, _UU, _ZT, _ZU, _TU = range(6)
#: the Gaussian-derivative weight of an entry: d<f>/dK_v = D_v <d_p d_q f> (1/2 on the diagonal)
_DV = np.array([0.5, 0.5, 0.5, 1.0, 1.0, 1.0])


class PairAverages:
    """E[g^(k)(u) h(v)] for (u, v) ~ N(0, [[Ku, P], [P, Kv]]) and g, h among s^2, s'^2, s s' (NumPy floats).

    Conditioning on v = sqrt(Kv) y: u = mu + sigma t, mu = P v / Kv, sigma^2 = Ku - P^2 / Kv, and Gaussian
    integration by parts E_t[g^(k)(mu + sigma t)] = sigma^-k E_t[g(mu + sigma t) He_k(t)] moves the
    derivatives onto the density (no deltas for kinked s).  Both integrals are composite 16-point
    Gauss-Legendre rules on [-9, 9] (Gaussian mass outside < 1e-18), split at the kinks of s (the inner
    split moves with y), 12 panels per piece.  Error: the rule is exact to rounding for these piecewise
    smooth integrands at panel widths <= 1.5 (tests: ReLU and tanh against scipy quadrature, 1e-10).
    A smooth activation that varies on a scale ell < 0.5 (ell = max |s'| / max |s''| on a grid of step 1e-3 over
    [-10, 10]; x (1 + erf(beta x)) / 2 has ell ~ 0.92 / beta) is split like a kink at its sharpest point x0 (the
    largest |s''|) and further at x0 +- ell 2^j, j = 0, 1, ... (both integrals; geometric grading, 3 panels per
    piece), so that the panels next to x0 resolve ell (tests/test_sharp_activations.py: equal to the several-input
    route's diagonal, beta = 16, 32)."""

    NODES, PANELS, R = 16, 12, 9.0
    SHARP = 0.5

    def __init__(self, act):
        self.s, self.ds = act.numpy, act.numpy_derivative
        self.kinks = tuple(float(k) for k in act.kinks)
        self.g, self.w = np.polynomial.legendre.leggauss(self.NODES)
        self.sharp = None if self.kinks else _sharpest_point(self.ds)

    def _breaks(self, centre, scale):
        """Split points (..., nb) at ``centre`` (...,) and centre +- scale 2^j inside [-R, R] (scale > 0 scalar or
        (...,)): the kinks, or the geometric grading around a sharp smooth activation's sharpest point."""
        centre = np.asarray(centre, dtype=float)
        steps = np.asarray(scale, dtype=float)[..., None] * 2.0 ** np.arange(int(np.ceil(np.log2(
            2 * self.R / np.min(scale)))) + 1)
        return np.concatenate([centre[..., None], centre[..., None] - steps, centre[..., None] + steps], -1)

    def _grid(self, lo, hi, panels=None):
        """Nodes and weights of the composite rule on [lo, hi] (``panels`` equal panels, default ``PANELS``), for
        arrays lo, hi of equal shape: returns (..., panels * NODES) arrays."""
        edges = lo[..., None] + (hi - lo)[..., None] * np.linspace(0, 1, (panels or self.PANELS) + 1)
        a, b = edges[..., :-1, None], edges[..., 1:, None]
        x = 0.5 * (a + b) + 0.5 * (b - a) * self.g
        w = 0.5 * (b - a) * self.w
        return x.reshape(*x.shape[:-2], -1), w.reshape(*w.shape[:-2], -1)

    def _split(self, breaks, panels=None):
        """Composite nodes/weights of the standard normal on [-R, R] split at ``breaks`` (shape (M, nb) or
        (nb,)), weights times the density; ``panels`` per piece (default ``PANELS``)."""
        breaks = np.atleast_1d(np.asarray(breaks, dtype=float))
        if breaks.ndim == 1:
            breaks = breaks[None, :]
        b = np.sort(np.clip(breaks, -self.R, self.R), axis=-1)
        edges = np.concatenate([np.full(b.shape[:-1] + (1,), -self.R), b, np.full(b.shape[:-1] + (1,), self.R)], -1)
        xs, ws = [], []
        for p in range(edges.shape[-1] - 1):
            x, w = self._grid(edges[..., p], edges[..., p + 1], panels)
            xs.append(x), ws.append(w)
        x, w = np.concatenate(xs, -1), np.concatenate(ws, -1)
        return x, w * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)

    def funcs(self, u) -> dict:
        """s^2, s'^2 and s s' at the points u."""
        s, d = self.s(u), self.ds(u)
        return {"ss": s * s, "dd": d * d, "sd": s * d}

    def table(self, Ku, Kv, P, gs, hs):
        """{(g, k, h): E[g^(k)(u) h(v)]} for the (g, k) in ``gs`` and h in ``hs``."""
        sv = np.sqrt(Kv)
        if self.sharp is not None:
            x0, ell = self.sharp
            y, wy = self._split(self._breaks(x0 / sv, ell / sv), 3)
        else:
            y, wy = self._split([k / sv for k in self.kinks] if self.kinks else [])
        y, wy = y[0], wy[0]
        mu = P * y / sv
        sig2 = Ku - P * P / Kv
        sig = np.sqrt(sig2)
        if self.sharp is not None:
            t, wt = self._split(self._breaks((x0 - mu) / sig, ell / sig), 3)
        elif self.kinks:
            t, wt = self._split(np.stack([(k - mu) / sig for k in self.kinks], axis=-1))
        else:
            t, wt = self._split(np.empty((len(y), 0)))
            t, wt = np.broadcast_to(t, (len(y), t.shape[-1])), np.broadcast_to(wt, (len(y), t.shape[-1]))
        u = mu[:, None] + sig * t
        he = {0: np.ones_like(t), 1: t, 2: t * t - 1}
        fv, fu = self.funcs(sv * y), self.funcs(u)
        hv = {h: fv[h] for h in hs}
        out = {}
        for g, k in gs:
            inner = (fu[g] * he[k] * wt).sum(axis=1) / sig**k
            for h in hs:
                out[(g, k, h)] = float((inner * hv[h] * wy).sum())
        return out


def _sharpest_point(ds):
    """(x0, ell) of a smooth activation with derivative ``ds`` that varies on a scale ell = max |s'| / max |s''| < 0.5
    (finite differences of s' on a grid of step 1e-3 over [-10, 10]; x0 the largest |s''|), else None."""
    x = np.linspace(-10.0, 10.0, 20001)
    with np.errstate(all="ignore"):
        d = np.broadcast_to(np.asarray(ds(x), dtype=float), x.shape)
    if not np.all(np.isfinite(d)):
        return None
    d2 = np.abs(np.diff(d)) / (x[1] - x[0])
    top = float(np.max(d2))
    ell = float(np.max(np.abs(d))) / top if top > 0 else np.inf
    if not ell < PairAverages.SHARP:
        return None
    i = int(np.argmax(d2))
    return 0.5 * float(x[i] + x[i + 1]), ell


def _ntk_expansion(rec, L, K, Th, G, th_out, avg):
    """The NTK side of the neuron-path expansion (module docstring): a dict name -> list over layers
    1 .. L+1 (readout last) of Th1, A, B, D, F."""
    NC = 6
    nF = NC * L
    Kz = list(K) + [G[L - 1]]  # layers 1..L+1 (index l-1)
    Tl = list(Th) + [th_out]
    xi = [None, None] + list(rec.xi)  # xi[b] multiplies z(b-1) in z(b), b = 2..L
    gam = [None, None] + list(rec.gamma) + [1.0]  # gam[b]: layer b's branch factor; readout 1

    def rho(l, b):  # z(l) = rho(l, b) z(b) + independent, l >= b
        if l == b:
            return 1.0
        if l == L + 1:
            return 0.0
        return float(np.prod([xi[q] for q in range(b + 1, l + 1)]))

    # one-layer averages at the hidden layers a = 1..L
    one = {}
    for a in range(1, L + 1):
        k = Kz[a - 1]
        one[a] = {(nm, o): avg(nm, o, k) for nm, o in (("ss", 0), ("ss", 1), ("ss", 2), ("dd", 0), ("dd", 1), ("dd", 2),
                                                  ("ssss", 0), ("ssdd", 0), ("dddd", 0))}
    # E_c(m)[v] = d Sigma(m+1)_v / d F_c(m)
    E = np.zeros((L + 1, NC, 6))
    for m in range(1, L + 1):
        g2 = gam[m + 1] ** 2
        CW = rec.C_W[m]
        lw = rec.lambdas(m + 1)[1]
        E[m, 0, _ZZ], E[m, 0, _TT], E[m, 0, _UU] = g2 * CW, g2 * lw, g2 * lw
        E[m, 1, _ZT] = E[m, 2, _ZU] = E[m, 3, _TT] = E[m, 4, _UU] = E[m, 5, _TU] = g2 * CW

    def J(l):  # (6, nF): d K(l)_v / d F_(m, c), m < l
        out = np.zeros((6, nF))
        for m in range(1, min(l, L + 1)):
            c = rho(l, m + 1) ** 2 if l <= L else (1.0 if m == L else 0.0)
            out[:, (m - 1) * NC:m * NC] = c * E[m].T
        return out

    Js = {l: J(l) for l in range(1, L + 2)}

    def dphi(a):  # (NC, 6): d<phi_c(a)>/dK_v
        o, t = one[a], Tl[a - 1]
        D = np.zeros((NC, 6))
        D[0, _ZZ] = D[1, _ZT] = D[2, _ZU] = o[("ss", 1)]
        D[3, _ZZ] = D[4, _ZZ] = o[("dd", 1)] * t
        D[3, _TT] = D[4, _UU] = D[5, _TU] = o[("dd", 0)]
        return D

    A = np.zeros((nF, nF))
    for a in range(1, L + 1):
        A[(a - 1) * NC:a * NC] = dphi(a) @ Js[a]
    Bm = np.linalg.inv(np.eye(nF) - A)

    # two-layer averages Z[(g, k, h)](a, b) = E[g^(k)(z(a)) h(z(b))], a > b, where rho(a, b) != 0
    pairs = {}
    gs = (("ss", 0), ("dd", 0), ("sd", 0), ("ss", 2), ("dd", 2), ("dd", 1))
    for a in range(2, L + 1):
        for b in range(1, a):
            r = rho(a, b)
            if r == 0.0:
                continue
            P = r * Kz[b - 1]
            if Kz[a - 1] - P * P / Kz[b - 1] <= 1e-12 * Kz[a - 1]:
                continue  # z(a) = const z(b): no branch noise in between (zero branch weights); no response uses it
            pairs[a, b] = rec.pair_averages.table(Kz[a - 1], Kz[b - 1], P, gs, ("ss", "dd", "sd"))

    def Z(g, h, a, b):  # E[g(z(a)) h(z(b))], a != b
        if a > b:
            return pairs[a, b][(g, 0, h)]
        return pairs[b, a][(h, 0, g)]

    # C_phi: covariances of the fields' summands of one neuron under the leading-order path law
    Cphi = np.zeros((nF, nF))
    for a in range(1, L + 1):
        for b in range(1, L + 1):
            oa, ob, ta, tb = one[a], one[b], Tl[a - 1], Tl[b - 1]
            if a == b:
                zss, zsd, zds, zdd, zxx = (oa[("ssss", 0)], oa[("ssdd", 0)], oa[("ssdd", 0)], oa[("dddd", 0)],
                                           oa[("ssdd", 0)])
                pt = ta
            else:
                hi, lo = max(a, b), min(a, b)
                if (hi, lo) not in pairs:
                    continue
                pt = rho(hi, lo) * Tl[lo - 1]
                zss, zsd, zds, zdd, zxx = (Z("ss", "ss", a, b), Z("ss", "dd", a, b), Z("dd", "ss", a, b),
                                           Z("dd", "dd", a, b), Z("sd", "sd", a, b))
            ssa, ssb, dda, ddb = oa[("ss", 0)], ob[("ss", 0)], oa[("dd", 0)], ob[("dd", 0)]
            C = np.zeros((NC, NC))
            C[0, 0] = zss - ssa * ssb
            C[0, 3] = C[0, 4] = tb * (zsd - ssa * ddb)
            C[3, 0] = C[4, 0] = ta * (zds - dda * ssb)
            C[3, 3] = C[4, 4] = zdd * (ta * tb + 2 * pt * pt) - dda * ddb * ta * tb
            C[3, 4] = C[4, 3] = (zdd - dda * ddb) * ta * tb
            C[1, 1] = C[2, 2] = zxx * pt
            C[5, 5] = zdd * pt * pt
            Cphi[(a - 1) * NC:a * NC, (b - 1) * NC:b * NC] = C
    Cpsi = Bm @ Cphi @ Bm.T

    # Cov(phi(b), f(x(l))), b < l, for the quadratic f of one neuron at layer l
    def cov_f(l, which):
        out = np.zeros(nF)
        for b in range(1, min(l, L + 1)):
            r = rho(l, b)
            if r == 0.0:
                continue
            ob, tb = one[b], Tl[b - 1]
            pz, pt = r * Kz[b - 1], r * tb
            i = (b - 1) * NC
            if which == "zz":
                out[i + 0] = 2 * pz * pz * ob[("ss", 1)]
                out[i + 3] = out[i + 4] = 2 * pz * pz * ob[("dd", 1)] * tb
            elif which == "tt":
                out[i + 3] = 2 * pt * pt * ob[("dd", 0)]
            elif which == "uu":
                out[i + 4] = 2 * pt * pt * ob[("dd", 0)]
            elif which == "tu":
                out[i + 5] = pt * pt * ob[("dd", 0)]
            elif which == "zt":
                out[i + 1] = pt * pz * ob[("ss", 1)]
        return Bm @ out  # Cov(psi, f)

    unit = {v: np.eye(6)[i] for i, v in enumerate(ENTRIES)}

    def pair(l, f, h):
        Rf, Rh = unit[f] @ Js[l], unit[h] @ Js[l]
        return float(Rh @ cov_f(l, f) + Rf @ cov_f(l, h) + Rf @ Cpsi @ Rh)

    # e = n E[F - <phi>] (components 0, 3, 4; the others vanish by the sign symmetry tau -> -tau, tau' -> -tau')
    e = np.zeros(nF)
    for a in range(1, L + 1):
        o, t = one[a], Tl[a - 1]
        CovK = Js[a] @ Cpsi @ Js[a].T
        first = dphi(a) @ (Js[a] @ e)
        second = np.zeros(NC)
        second[0] = 0.5 * o[("ss", 2)] * CovK[_ZZ, _ZZ]
        for c, vv, vz in ((3, _TT, _ZT), (4, _UU, _ZU)):
            second[c] = 0.5 * (t * o[("dd", 2)] * CovK[_ZZ, _ZZ] + 2 * o[("dd", 1)] * CovK[_ZZ, vv]
                               + 4 * o[("dd", 1)] * CovK[vz, vz])
        # self terms: Q[c, v] = Cov(d_v phi_c(x(a)), phi(b)) over b < a, then through B and the E's
        selfv = np.zeros(NC)
        Q = {}
        for c in (0, 3, 4):
            for v in range(6):
                Q[c, v] = np.zeros(nF)
        for b in range(1, a):
            if (a, b) not in pairs:
                continue
            p, ob, tb = pairs[a, b], one[b], Tl[b - 1]
            pt = rho(a, b) * tb
            i = (b - 1) * NC
            Q[0, _ZZ][i + 0] = p[("ss", 2, "ss")] - 2 * o[("ss", 1)] * ob[("ss", 0)]
            for c, vv, vz, cz in ((3, _TT, _ZT, 1), (4, _UU, _ZU, 2)):
                Q[c, _ZZ][i + 0] = t * (p[("dd", 2, "ss")] - 2 * o[("dd", 1)] * ob[("ss", 0)])
                Q[c, vv][i + 0] = 2 * (p[("dd", 0, "ss")] - o[("dd", 0)] * ob[("ss", 0)])
                Q[c, vv][i + 3] = Q[c, vv][i + 4] = 2 * tb * (p[("dd", 0, "dd")] - o[("dd", 0)] * ob[("dd", 0)])
                Q[c, vz][i + cz] = 2 * pt * p[("dd", 1, "sd")]
        for c in (0, 3, 4):
            for v in range(6):
                if not Q[c, v].any():
                    continue
                selfv[c] += _DV[v] * float(Js[a][v] @ (Bm @ Q[c, v]))
        e[(a - 1) * NC:a * NC] = first + second + selfv

    out = {k: [] for k in ("Th1", "A", "B", "D", "F")}
    for l in range(1, L + 2):
        out["Th1"].append(float(unit["tt"] @ Js[l] @ e))
        out["A"].append(pair(l, "tt", "uu"))
        out["B"].append(pair(l, "tu", "tu"))
        out["D"].append(pair(l, "tt", "zz"))
        out["F"].append(pair(l, "zt", "zt"))
    return out
