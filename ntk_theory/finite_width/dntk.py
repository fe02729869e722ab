r"""The dNTK's 1/n tensors P and Q of an MLP (PDLT ch. 11), one input (scalars, floats or SymPy) and N inputs;
the ddNTK tensors R, S, T, U at layer 2 (:func:`ddntk_second_layer`).

Definitions (docs/finite_width.md, section "Training: the dNTK and ddNTKs").  With v_i = Lambda grad z_i
(Lambda the NTK's diagonal learning-rate factors: lambda_b for biases, lambda_W / n_(l-1) for weights),
the dNTK of layer l is the second directional derivative

    dH_{i0 i1 i2; a0 a1 a2} = D^2 z_{i0;a0} [v_{i1;a1}, v_{i2;a2}]     (symmetric in (i1 a1) <-> (i2 a2))

and at leading order, n = n_(l-1) the width feeding layer l,

    n E[dH_{i0 i1 i2; a0 a1 a2} z_{i3;a3}] = d_{i0 i3} d_{i1 i2} P_{a0 a1 a2 a3}
                                           + d_{i0 i1} d_{i2 i3} Q_{a0 a1 a2 a3} + d_{i0 i2} d_{i1 i3} Q_{a0 a2 a1 a3}

(estimators, i != j: P = n E[dH_{ijj} z_i], Q = n E[dH_{iij} z_j]).  Layer 1: P = Q = 0.

Recursion (layer l -> l + 1, <.> the average over one neuron's z ~ N(0, K(l)), s = s(z), r = n_l / n_(l-1),
C_W and lambda_W of layer l + 1; G[p, q, e] = <d_e (s'_p s_q)>, Gd[p, q, e] = <d_e (s''_p s'_q)> the Stein
factors (:func:`.twopoint.stein_factors`), dd = <s' s'>, B and F the NTK's 1/n tensors of layer l)::

    P'_abcd = kappa C_W^2 [ <s''_a s'_b s'_c s_d> Th_ab Th_ac + r B_(aa)(bc) <s''_a s_d> dd_bc ]
              + r C_W^2 dd_bc sum_e P_abce G_ade
    Q'_abcd = lambda_W C_W [ <s'_a s_b s'_c s_d> Th_ac + r sum_ef F_(ae)(cf) G_abe G_cdf ]
              + kappa C_W^2 [ <s''_a s'_b s'_c s_d> Th_ab Th_ac + r Th_ab sum_ef F_(ae)(cf) Gd_abe G_cdf ]
              + r C_W^2 dd_ab sum_e Q_abce G_cde

The kappa terms are those of s'' (the second derivative of z' through s'(z) itself); kappa = 1 (default)
takes s'' as the limit of smooth activations (Dirac terms at kinks: the derivative of the ensemble average,
which governs the ensemble's training); kappa = 0 (``kink_terms=False``, piecewise-linear activations; a
no-op for smooth ones) is the network-by-network pointwise derivative, where s'' = 0 almost everywhere.

One input (scalars; <s'' s'^2 s> = <z s s'^3>/(3K) - <s'^4>/3 and <s'' s> = d<s^2>/dK - <s'^2> by Gaussian
integration by parts, Gd = d<s'^2>/dK, G = d<s^2>/dK)::

    P' = kappa C_W^2 [<s'' s'^2 s> Th^2 + r B <s'' s> <s'^2>] + r C_W^2 <s'^2> d<s^2>/dK P
    Q' = lambda_W C_W [<s^2 s'^2> Th + r F (d<s^2>/dK)^2]
         + kappa C_W^2 [<s'' s'^2 s> Th^2 + r Th F d<s'^2>/dK d<s^2>/dK] + r C_W^2 <s'^2> d<s^2>/dK Q

Averages: two-point ones and their covariance derivatives from :class:`.twopoint.TwoPoint`, <s' s s' s>
from the four-point moments of :mod:`.tensors`, <s''_a s'_b s'_c s_d> (:func:`derivative_averages`): for
smooth activations by the compiled four-point integrator with s'' in its third function slot
(:func:`ntk_theory.gaussian.fourpoint.derivative_moments`: every set of distinct inputs once, batched and
in parallel, error control to ``tol`` relative to E|product|), or (``route="nested"``, and always for
activations with kinks) entry by entry by :func:`ntk_theory.numerics.quadrature.expectn` (nested
quadrature; for kinks after Gaussian integration by parts, which moves the derivative off s' onto the
density so that only s and s' are integrated); their error estimates are propagated as ``error``.
One-input averages by :class:`.moments.OneInputAverages` (closed forms in K where the rules give them:
ReLU, linear, ...).

Shared results: the N-input states, P and Q of one :class:`~.network.FiniteWidthRecursion` at the same
inputs, tol, ``kink_terms`` and route are kept on the object (the ddNTK reuses the dNTK's; its parameters
are part of the key), and the compiled averages of one kernel K are kept per process (a few, by size).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..activations import drop_deltas, x
from ..docstrings import filled
from ..gaussian import expectation1, k
from ..gaussian.stable import lambdify as stable_lambdify
from .network import FiniteWidthRecursion, _tidy
from .twopoint import TwoPoint, derivative_tensors, stein_factors

NAMES = ("P", "Q")


@dataclass
class DNTKState:
    """P and Q of one layer: floats or SymPy expressions (one input) or (N, N, N, N) arrays, normalised by
    the width n_(l-1) feeding the layer (n E[dH z] as in the module docstring); ``error`` the largest
    quadrature error estimate of the averages used (0 for closed forms).

    Parameters
    ----------
    P, Q : float, sympy.Expr or numpy.ndarray
        The dNTK's two tensors.
    error : float, default 0.0
        The largest quadrature error estimate (not compared).

    Examples
    --------
    ReLU at C_W = 2, K = 1 (G0 = 1/2), no kink terms: P = 0 and Q' = 2 Theta + F + Q (the one-input recursion
    of the module docstring with <s^2 s'^2> = d<s^2>/dK = <s'^2> = 1/2), so Q = 0, 2, 2 * 2 + 2 + 2 = 8 with
    Theta = 1, 2 and F = 0, 2:

    >>> from ntk_theory.finite_width import DNTKState, FiniteWidthRecursion
    >>> FiniteWidthRecursion("relu", 2, C_W=2.0).dntk(G0=0.5, kink_terms=False)
    [DNTKState(P=0.0, Q=0.0, error=0.0), DNTKState(P=0.0, Q=2.0, error=0.0), DNTKState(P=0.0, Q=8.0, error=0.0)]
    """

    P: object
    Q: object
    error: float = field(default=0.0, compare=False)

    def values(self) -> dict:
        """``{"P": P, "Q": Q}``, e.g. ``DNTKState(0.0, 2.0).values() == {'P': 0.0, 'Q': 2.0}``."""
        return {"P": self.P, "Q": self.Q}


# ---------------------------------------------------------------------------------------------- one input
def single_step(st, P, Q, avg, C_W, lam_W, r=1, kappa=1) -> DNTKState:
    """P, Q of layer l + 1 from layer l's :class:`~.single.State` ``st`` (K, Th, B, F) and P, Q.  ``avg(name,
    order)``: d^order<g>/dK^order at st.K for g in ss, dd, ssdd, dddd (:mod:`.moments`) and zsddd = z s s'^3."""
    K, Th, B, F = st.K, st.Th, st.B, st.F
    ss1, dd, dd1 = avg("ss", 1), avg("dd", 0), avg("dd", 1)
    ssdd, dddd, zsddd = avg("ssdd", 0), avg("dddd", 0), avg("zsddd", 0)
    s2dds = zsddd / (3 * K) - dddd / 3          # <s'' s'^2 s>
    s2s = ss1 - dd                               # <s'' s>
    P_new = kappa * C_W**2 * (s2dds * Th**2 + r * B * s2s * dd) + r * C_W**2 * dd * ss1 * P
    Q_new = (lam_W * C_W * (ssdd * Th + r * F * ss1**2)
             + kappa * C_W**2 * (s2dds * Th**2 + r * Th * F * dd1 * ss1)
             + r * C_W**2 * dd * ss1 * Q)
    return DNTKState(P_new, Q_new)


class _ZSDDD:
    """<z s(z) s'(z)^3>, z ~ N(0, K): the one extra one-input average (closed form or quadrature)."""

    def __init__(self, act):
        g = sp.simplify(x * act.expr * drop_deltas(act.derivative()) ** 3)
        self.form = expectation1(g)

    def symbol(self, K):
        if self.form.is_closed_form:
            return self.form.derivative(0).subs(k, K)
        return sp.Function(r"\langle z\sigma\sigma'^3 \rangle")(K)

    def evaluate(self, K):
        v, e = self.form.evaluate(np.array(float(K)), with_error=True, order=0)
        v = float(v)
        if not np.isfinite(v):
            raise ValueError(f"<z s s'^3> is not finite at K = {K}")
        return v, float(e) if e is not None else 0.0


def ddntk_activation_check(rec, kink_terms: bool) -> None:
    """Refuse activations whose ddNTK is not derived: kinked ones other than piecewise-linear, and piecewise-linear
    ones with ``kink_terms``, whose Dirac terms have no finite value.  At coincident inputs the ddNTKs hold two
    Dirac terms of one neuron (U: <s''_a s''_a s'_c s'_d>; R: <s'''_a s'_a ...>, by Leibniz (s'^2)'''/2 minus
    3 s'' s'' ...), which diverge like beta for smooth activations converging to the kink (x (1 + erf(beta x)) / 2
    -> relu: R, S, T, U grow linearly in beta, R / U -> -3 at layer 2; docs/finite_width.md); ValueError in one
    line."""
    act = rec.activation
    if act.kinks:
        _kappa(rec, False)  # ValueError unless piecewise-linear
        if kink_terms:
            raise ValueError(f"the ddNTK's Dirac terms at the kinks of {act.name} diverge (two Dirac terms of one "
                             "neuron, e.g. s''(z)^2: R, S, T, U grow like beta for smooth activations converging to "
                             "it); use kink_terms=False (the pointwise derivatives of each network)")


def _kappa(rec, kink_terms: bool) -> int:
    act = rec.activation
    if kink_terms or not act.kinks:  # smooth s: the two coincide
        return 1
    from ..gaussian.fourpoint import piecewise_linear_slopes

    if piecewise_linear_slopes(act) is None:
        raise ValueError(
            f"kink_terms=False (the pointwise second derivative, s'' = 0 almost everywhere) is defined here "
            f"only for smooth and piecewise-linear activations (relu, leaky_relu, abs); {act.name} is neither")
    return 0


def dntk_one_input(rec: FiniteWidthRecursion, x=None, *, G0=None, kink_terms: bool = True) -> list[DNTKState]:
    """P, Q of layers 1 .. L+1 for one input x (or G0 = x.x / n_0), float64 (layer l's per 1/n_(l-1))."""
    kappa = _kappa(rec, kink_terms)
    states = rec.one_input(x, G0=G0)
    extra = _ZSDDD(rec.activation)
    out = [DNTKState(0.0, 0.0)]
    for l in range(1, rec.depth + 1):
        st, errors = states[l - 1], []

        def avg(name, order, K=st.K, errors=errors):
            v, e = extra.evaluate(K) if name == "zsddd" else rec.averages[name].evaluate(K, order)
            errors.append(e)
            return v

        _, lw = rec.lambdas(l + 1)
        new = single_step(st, out[-1].P, out[-1].Q, avg, rec.C_W[l], lw, rec.ratios[l], kappa)
        new.error = max(errors)
        out.append(new)
    return out


# the parameters stand again in ddntk_symbolic's docstring on purpose: two public functions, each documented in full
def dntk_symbolic(rec: FiniteWidthRecursion, G0=None, *, kink_terms: bool = True, simplify: bool = True
                  ) -> list[DNTKState]:
    """P, Q of layers 1 .. L+1 for one input as SymPy expressions in G0 (closed-form averages only).

    Parameters
    ----------
    G0 : sympy.Expr or None, default None
        The input's x.x / n_0 (None: the symbol ``G_0``).
    kink_terms : bool, default True
        Keep the Dirac terms of s'' at kinks (False: s'' = 0 almost everywhere).
    simplify : bool, default True
        Simplify each layer's expressions.

    Returns
    -------
    list of DNTKState

    Raises
    ------
    ValueError
        If an average has no closed form.

    Examples
    --------
    ReLU at C_W = 2: Q = 8 at G0 = 1/2 (:class:`DNTKState`'s example), i.e. 32 G0^2:

    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> FiniteWidthRecursion("relu", 2, C_W=2.0).dntk_symbolic(kink_terms=False)[-1]
    DNTKState(P=0, Q=32*G_0**2, error=0.0)
    """
    kappa = _kappa(rec, kink_terms)
    extra = _ZSDDD(rec.activation)
    if not extra.form.is_closed_form:
        raise ValueError(f"no closed form for <z s s'^3> of {rec.activation.name}; use dntk_layer_map() "
                         "(placeholders) or dntk_one_input() (numbers)")
    G0 = sp.Symbol("G_0", positive=True) if G0 is None else G0
    states = rec.symbolic(G0, simplify=simplify)
    out = [DNTKState(sp.S.Zero, sp.S.Zero)]
    for l in range(1, rec.depth + 1):
        st = states[l - 1]
        _, lw = (sp.nsimplify(v) for v in rec.lambdas(l + 1))

        def avg(name, order, K=st.K):
            return extra.symbol(K) if name == "zsddd" else rec.averages[name].symbol(K, order)

        new = single_step(st, out[-1].P, out[-1].Q, avg, sp.nsimplify(rec.C_W[l]), lw,
                          sp.nsimplify(rec.ratios[l]), kappa)
        if simplify:
            new = DNTKState(_tidy(new.P), _tidy(new.Q))
        out.append(new)
    return out


def dntk_layer_map(rec: FiniteWidthRecursion, layer: int = 2, *, kink_terms: bool = True) -> DNTKState:
    """The map from layer ``layer - 1`` to ``layer`` as SymPy expressions in the symbols K, Theta, B, F, P, Q
    (closed forms in K where derived, placeholders <g>(K) otherwise).

    Parameters
    ----------
    layer : int, default 2
        2 .. L + 1.
    kink_terms : bool, default True
        Keep the Dirac terms of s'' at kinks.

    Returns
    -------
    DNTKState
        P' and Q' in the previous layer's symbols.

    Examples
    --------
    ReLU at C_W = 2 without kink terms: P' = P and Q' = 2 K Theta + F + Q:

    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> FiniteWidthRecursion("relu", 2, C_W=2.0).dntk_layer_map(2, kink_terms=False)
    DNTKState(P=P, Q=F + 2*K*\\Theta + Q, error=0.0)
    """
    from .single import symbols

    kappa = _kappa(rec, kink_terms)
    st = symbols()
    P, Q = sp.symbols("P Q", real=True)
    extra = _ZSDDD(rec.activation)
    _, lw = (sp.nsimplify(v) for v in rec.lambdas(layer))

    def avg(name, order):
        return extra.symbol(st.K) if name == "zsddd" else rec.averages[name].symbol(st.K, order)

    new = single_step(st, P, Q, avg, sp.nsimplify(rec.C_W[layer - 1]), lw, sp.nsimplify(rec.ratios[layer - 1]),
                      kappa)
    return DNTKState(_tidy(new.P), _tidy(new.Q))


# ---------------------------------------------------------------------------------------------- N inputs
def second_derivative_moments(act, K, tol=1e-10) -> tuple[np.ndarray, float]:
    """M[a, b, c, d] = <s''(z_a) s'(z_b) s'(z_c) s(z_d)>, z ~ N(0, K), and the largest error estimate.

    Smooth activations: :func:`~ntk_theory.numerics.quadrature.expectn` of (s'', s', s', s) (K's rows may
    repeat).  With kinks, s'' holds Dirac terms; on the variable u of input a the factor is s'' g with
    g = s'^k s^m (the other factors at the same input), and s'' g = F' - (m / (k+1)) s^(m-1) s'^(k+2),
    F = s^m s'^(k+1) / (k+1) (the limit of smooth activations); <F'(u) X> = sum_t (K_d^-1)_(u t) <F(u) X u_t>
    over the distinct inputs (Gaussian integration by parts, K_d their covariance), so only s and s' are
    integrated.  Piecewise-linear s (slopes a < 0 < b, :func:`~ntk_theory.gaussian.fourpoint.piecewise_linear_slopes`)
    instead take delta(u) g(u) = delta(u) (g(0+) + g(0-)) / 2, the symmetric second difference of the network's
    own kink with the other factors at the unperturbed point (what an ensemble of ReLU networks does; the smooth
    limit would give delta s'^2 = delta / 3 for ReLU, the networks delta / 2)."""
    from ..numerics.quadrature import expectn

    N = K.shape[0]
    s, ds = act.numpy, act.numpy_derivative
    d2 = drop_deltas(sp.diff(act.expr, x, 2))
    M = np.zeros((N,) * 4)
    if d2 == 0 and not act.kinks:
        return M, 0.0
    kinks = tuple(act.kinks) or (0.0,)
    err = 0.0
    cache = {}
    if not act.kinks:
        s2 = stable_lambdify((x,), d2)
        slopes = None
    else:
        from ..gaussian.fourpoint import piecewise_linear_slopes

        slopes = piecewise_linear_slopes(act)

    def power(k_, m_, lin=False):
        def f(u):
            u = np.asarray(u, dtype=float)
            v = np.ones_like(u)
            if k_:
                v = v * ds(u) ** k_
            if m_:
                v = v * s(u) ** m_
            return v * u if lin else v
        return f

    for idx in itertools.product(range(N), repeat=4):
        a, b, c, d = idx
        key = (a, min(b, c), max(b, c), d)
        if key in cache:
            M[idx] = cache[key]
            continue
        if not act.kinks:
            r = expectn([s2, ds, ds, s], K[np.ix_(idx, idx)], kinks=[kinks] * 4, tol=tol)
            val, err = r.value, max(err, r.error)
        else:
            vars_ = [a] + sorted({b, c, d} - {a})
            kd = {v: [sum(1 for q in (b, c) if q == v), int(d == v)] for v in vars_}
            Kd = K[np.ix_(vars_, vars_)]
            if np.linalg.cond(Kd) > 1e10:
                raise ValueError("the inputs' kernel is (nearly) singular: the Dirac terms of s'' at the kinks "
                                 "need linearly independent inputs")
            Kinv = np.linalg.inv(Kd)
            k0, m0 = kd[a]
            if slopes is not None:  # s'' = (b - a) delta(u): delta(u) g(u) = delta(u) (g(0+) + g(0-)) / 2
                if m0:
                    val = 0.0   # s(0) = 0
                else:
                    lo, hi = slopes
                    coef = (hi - lo) * ((hi**k0 + lo**k0) / 2 if k0 else 1.0)
                    heav = lambda u, lin=False: (np.asarray(u) > 0) * (np.asarray(u, float) if lin else 1.0)
                    val = 0.0
                    for t in range(len(vars_)):
                        fs = [lambda u, t=t, heav=heav: heav(u, t == 0)]
                        fs += [power(*kd[v], lin=(t == i + 1)) for i, v in enumerate(vars_[1:])]
                        r = expectn(fs, Kd, kinks=[kinks] * len(fs), tol=tol)
                        val += coef * Kinv[0, t] * r.value
                        err = max(err, r.error)
                cache[key] = M[idx] = val
                continue
            others = [power(*kd[v]) for v in vars_[1:]]
            val = 0.0
            for t in range(len(vars_)):
                fs = [power(k0 + 1, m0, lin=(t == 0))]
                fs += [power(*kd[v], lin=(t == i + 1)) for i, v in enumerate(vars_[1:])]
                r = expectn(fs, Kd, kinks=[kinks] * len(fs), tol=tol)
                val += Kinv[0, t] * r.value / (k0 + 1)
                err = max(err, r.error)
            if m0:
                r = expectn([power(k0 + 2, m0 - 1)] + others, Kd, kinks=[kinks] * len(vars_), tol=tol)
                val -= m0 / (k0 + 1) * r.value
                err = max(err, r.error)
        cache[key] = M[idx] = val
    return M, err


# ---------------------------------------------------------------------------------------------- shared averages
#: the s''-containing four- and two-point averages of the N-input dNTK and ddNTK steps, as derivative orders
#: (s^(0) = s, s^(1) = s', ...) of the factors at inputs a, b, c, d in turn
DNTK_TERMS = ((2, 1, 1, 0), (1, 0, 1, 0))              # <s''_a s'_b s'_c s_d>, <s'_a s_b s'_c s_d>
DDNTK_LOCAL_TERMS = ((2, 0, 1, 1), (3, 1, 1, 1), (2, 2, 1, 1), (1, 2, 0, 1), (2, 1, 1, 0), (1, 1, 1, 1), (1, 1, 0, 0))
DDNTK_TERMS = DNTK_TERMS + DDNTK_LOCAL_TERMS + ((2, 0), (3, 1), (2, 2))


class _SizedCache:
    """Least recently used entries up to ``budget`` bytes of arrays (at least the newest entry)."""

    def __init__(self, budget: int):
        self.budget, self.items = budget, OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        return None

    def put(self, key, value, nbytes: int):
        self.items[key] = (value, nbytes)
        self.items.move_to_end(key)
        while len(self.items) > 1 and sum(b for _, b in self.items.values()) > self.budget:
            self.items.popitem(last=False)
        return value


_AVERAGES_CACHE = _SizedCache(384 * 2 ** 20)
_FOUR_POINT_CACHE = _SizedCache(384 * 2 ** 20)


def _act_key(act) -> tuple:
    return act.name, sp.srepr(act.expr)


def shared_four_point(act, K, tol):
    """(ssss, ddss, dddd, largest error) of :func:`.tensors._four_point` at K, kept per process for the dNTK and
    ddNTK steps of the same K (a few kernels, by size)."""
    from .tensors import _four_point

    key = (_act_key(act), K.tobytes(), K.shape, float(tol))
    hit = _FOUR_POINT_CACHE.get(key)
    if hit is None:
        hit = _four_point(act, K, tol)
        hit = _FOUR_POINT_CACHE.put(key, hit, sum(a.nbytes for a in hit[:3]))
    return hit


def _permuted(cached: dict, term: tuple):
    """``term``'s (M, error) from a cached term with the same orders in another order (M transposed: with
    c[pi(j)] = term[j], M_term[a_0, ..] = M_c[b] where b[pi(j)] = a_j), or None."""
    for c, (M, err) in cached.items():
        if len(c) == len(term) and sorted(c) == sorted(term):
            free = list(range(len(c)))
            pi = []
            for o in term:
                k = next(k for k in free if c[k] == o)
                free.remove(k)
                pi.append(k)
            return M.transpose(pi), err
    return None


def _compiled_averages(act, K, terms, tol) -> dict:
    """The terms by :func:`ntk_theory.gaussian.fourpoint.derivative_moments` (smooth activations), kept per
    process for the same K: a term whose orders are a cached term's in another order is that tensor transposed,
    and only the terms of new order multisets are integrated (one pass for all of them)."""
    from ..gaussian.fourpoint import derivative_moments

    if act.kinks:
        raise ValueError(f"the compiled s'' averages need a smooth activation; {act.name} has kinks "
                         "(their Dirac terms: route='nested')")
    key = (_act_key(act), K.tobytes(), K.shape, float(tol))
    cached = dict(_AVERAGES_CACHE.get(key) or {})
    missing = [t for t in terms if t not in cached and _permuted(cached, t) is None]
    if missing:
        m = derivative_moments(act, K, tuple(dict.fromkeys(missing)), tol=tol)
        cached.update({t: (m.values[t], float(np.max(m.errors[t]))) for t in missing})
    for t in terms:
        if t not in cached:
            cached[t] = _permuted(cached, t)
    _AVERAGES_CACHE.put(key, cached, sum(v.nbytes for v, _ in cached.values()))
    return {t: cached[t] for t in terms}


def _two_moments(act, K, orders, tol):
    """M[a, b] = <s^(o1)(z_a) s^(o2)(z_b)>, z ~ N(0, K) (smooth s) by expectn entry by entry, and the
    largest error estimate."""
    from ..numerics.quadrature import expectn

    N = K.shape[0]
    fns = [stable_lambdify((x,), drop_deltas(sp.diff(act.expr, x, o))) for o in orders]
    M, err = np.zeros((N, N)), 0.0
    for a in range(N):
        for b in range(N):
            r = expectn(fns, K[np.ix_((a, b), (a, b))], kinks=[(0.0,)] * 2, tol=tol)
            M[a, b], err = r.value, max(err, r.error)
    return M, err


def _nested_averages(act, K, terms, tol) -> dict:
    """The terms entry by entry by :func:`~ntk_theory.numerics.quadrature.expectn` (smooth s; the reference
    of the compiled route)."""
    fns = {2: _two_moments, 4: _derivative_moments}
    return {t: fns[len(t)](act, K, t, tol) for t in terms}


#: how the s'' averages of :data:`DNTK_TERMS` and :data:`DDNTK_TERMS` are integrated
AVERAGE_ROUTES = {"compiled": _compiled_averages, "nested": _nested_averages}


def _route(route):
    if route not in AVERAGE_ROUTES:
        raise ValueError(f"route must be one of {sorted(AVERAGE_ROUTES)}; got {route!r}")
    return AVERAGE_ROUTES[route]


def derivative_averages(act, K, terms, tol=1e-10, route: str = "compiled") -> dict:
    """{term: (M, largest error estimate)}, M[a, b, ...] = <prod_j s^(term_j)(z_(a_j))>, z ~ N(0, K), for terms
    of two or four derivative orders (pointwise derivatives, smooth activations).  ``route`` "compiled": every
    set of distinct inputs once by the compiled four-point integrator (all terms of a call together, batched
    over the sets, two threads; kept per process for the same K); "nested": entry by entry by
    :func:`~ntk_theory.numerics.quadrature.expectn` (slow; the reference).  Both to ``tol`` relative to
    E|product| with their error estimates (models, not bounds)."""
    return _route(route)(act, K, tuple(tuple(int(o) for o in t) for t in terms), tol)


def _fingerprint(rec) -> tuple:
    return (_act_key(rec.activation), rec.depth, tuple(rec.C_W), tuple(rec.C_b), rec.param, tuple(rec.ratios))


def shared_result(rec, key, compute):
    """``compute()``, kept on ``rec`` under ``key`` and its current parameters (the four latest results of
    each kind)."""
    memo = rec.__dict__.setdefault("_finite_width_shared", OrderedDict())
    full = (_fingerprint(rec), key)
    if full not in memo:
        memo[full] = compute()
        kinds = [k for k in memo if k[1][0] == key[0]]
        for k in kinds[:-4]:
            del memo[k]
    memo.move_to_end(full)
    return list(memo[full])


def recursion_states(rec, uniq, tol):
    """``rec.tensors(uniq, tol=tol)`` (distinct inputs), kept on ``rec`` (:func:`shared_result`)."""
    return shared_result(rec, ("tensors", uniq.tobytes(), uniq.shape, float(tol)),
                         lambda: rec.tensors(uniq, tol=tol))


def keep_recursion_states(rec, X, states, tol) -> None:
    """Keep ``states`` = ``rec.tensors(X, tol=tol)`` (already computed, e.g. the ``layers`` of
    :func:`~ntk_theory.finite_width.finite_width` for the same network) on ``rec``, so that ``rec.dntk(X)`` and
    ``rec.ddntk(X)`` take them instead of running the tensor recursion again: the states at the distinct rows
    of X (:func:`recursion_states`' key), selected from those at X (``rec.tensors`` computes at the distinct
    rows and expands, so the selection is those states bit for bit)."""
    from .. import _checks

    X = _checks.inputs(X, "X")
    uniq, first = np.unique(X, axis=0, return_index=True)
    if len(states) != rec.depth + 1 or any(np.shape(st.K) != (X.shape[0],) * 2 for st in states):
        raise ValueError(f"states must be the {rec.depth + 1} layer states at the {X.shape[0]} rows of X")
    picked = [st.expand(first) for st in states]
    shared_result(rec, ("tensors", uniq.tobytes(), uniq.shape, float(tol)), lambda: picked)


def tensor_step(st, P, Q, act, tp_ss: TwoPoint, tp_dd: TwoPoint, C_W, lam_W, r=1.0, kappa=1, tol=1e-10,
                route: str = "compiled") -> DNTKState:
    """P, Q (N, N, N, N) of layer l + 1 from layer l's :class:`~.tensors.TensorState` ``st`` (K, Th, B, F)
    and its P, Q (module docstring); ``route`` for <s'' s' s' s> (:func:`derivative_averages`)."""

    K, Th, B, F = st.K, st.Th, st.B, st.F
    N = K.shape[0]
    S = derivative_tensors(tp_ss, K)
    Dd = derivative_tensors(tp_dd, K)
    dd = Dd.value
    G, Gd = stein_factors(S), stein_factors(Dd)
    s2s = np.einsum("pqp->pq", G) - np.diag(np.diag(dd))       # <s''_p s_q>
    ein = np.einsum
    if route == "compiled" and not act.kinks:  # both four-point averages in one pass of the compiled integrator
        avg = derivative_averages(act, K, DNTK_TERMS, tol, route)
        (A1, err2), (A2, err4) = avg[2, 1, 1, 0], avg[1, 0, 1, 0]
    else:
        _, ddss, _, err4 = shared_four_point(act, K, tol)
        A2 = ddss.transpose(0, 2, 1, 3)                          # <s'_a s_b s'_c s_d>
        # kinks: the Dirac terms of s'' by integration by parts, entry by entry
        A1, err2 = second_derivative_moments(act, K, tol) if kappa else (np.zeros((N,) * 4), 0.0)
    ThTh = Th[:, :, None] * Th[:, None, :]                      # Th_ab Th_ac
    Baa = ein("aabc->abc", B)
    P_new = (kappa * C_W**2 * (A1 * ThTh[..., None] + r * Baa[..., None] * s2s[:, None, None, :]
                               * dd[None, :, :, None])
             + r * C_W**2 * ein("abce,ade->abcd", P, G) * dd[None, :, :, None])
    FGG = ein("aecf,abe,cdf->abcd", F, G, G, optimize=True)
    FGdG = ein("aecf,abe,cdf->abcd", F, Gd, G, optimize=True)
    Q_new = (lam_W * C_W * (A2 * Th[:, None, :, None] + r * FGG)
             + kappa * C_W**2 * (A1 * ThTh[..., None] + r * Th[:, :, None, None] * FGdG)
             + r * C_W**2 * dd[:, :, None, None] * ein("abce,cde->abcd", Q, G))
    return DNTKState(P_new, Q_new, max(S.error, Dd.error, err4, err2))


def dntk_tensors(rec: FiniteWidthRecursion, X, *, kink_terms: bool = True, tol: float = 1e-10,
                 route: str = "compiled") -> list[DNTKState]:
    """P, Q (N, N, N, N) of layers 1 .. L+1 at the N inputs X (N, n_0); layer l's per 1/n_(l-1).  ``route``:
    how <s'' s' s' s> is integrated (:func:`derivative_averages`: "compiled" or "nested").  Kept on ``rec``
    for the same inputs and options (module docstring)."""
    from .. import _checks

    kappa = _kappa(rec, kink_terms)
    _route(route)
    X = _checks.inputs(X, "X")
    uniq, inv = np.unique(X, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel()

    def compute():
        states = recursion_states(rec, uniq, tol)
        n = uniq.shape[0]
        tp_ss, tp_dd = TwoPoint(rec.activation, "ss"), TwoPoint(rec.activation, "dd")
        out = [DNTKState(np.zeros((n,) * 4), np.zeros((n,) * 4))]
        for l in range(1, rec.depth + 1):
            _, lw = rec.lambdas(l + 1)
            out.append(tensor_step(states[l - 1], out[-1].P, out[-1].Q, rec.activation, tp_ss, tp_dd,
                                   rec.C_W[l], lw, rec.ratios[l], kappa, tol, route))
        return out

    out = shared_result(rec, ("dntk", uniq.tobytes(), uniq.shape, float(tol), kappa, route), compute)
    ix = np.ix_(*([inv] * 4))
    return [DNTKState(s.P[ix], s.Q[ix], s.error) for s in out]


# the parameters stand again in _ddntk_method's docstring on purpose: two public methods, each documented in full
#: Parameters entries of the dNTK and ddNTK methods (FiniteWidthRecursion.dntk, .ddntk)
INPUTS = """X : array_like or None, default None
    Inputs (N, n_0).
x : array_like, optional
    One input (keyword-only; instead of ``X``).
G0 : float, optional
    One input's x.x / n_0 (keyword-only)."""
INTEGRATION = """tol : float, default 1e-10
    Relative tolerance of the numerically integrated averages.
route : {'compiled', 'nested'}, default 'compiled'
    How the N-input s'' averages are integrated."""


@filled(inputs=INPUTS, integration=INTEGRATION)
def _dntk_method(self, X=None, *, x=None, G0=None, kink_terms: bool = True, tol: float = 1e-10,
                 route: str = "compiled"):
    """P, Q of layers 1 .. L+1 (:class:`DNTKState`, layer l's per 1/n_(l-1)): at the N inputs X (N, n_0) as
    (N, N, N, N) arrays, or for one input ``x`` / ``G0`` as floats (:mod:`ntk_theory.finite_width.dntk`);
    ``route`` ("compiled" or "nested") how the N-input s'' averages are integrated (:func:`derivative_averages`).

    Parameters
    ----------
    %(inputs)s
    kink_terms : bool, default True
        Keep the Dirac terms of s'' at kinks (module docstring's kappa).
    %(integration)s

    Returns
    -------
    list of DNTKState
        L + 1 states.

    Examples
    --------
    The N-input tensors' diagonal entries equal the one-input values (ReLU at C_W = 2: Q = 2, 8, as the hand
    recursion of :class:`DNTKState`):

    >>> import numpy as np
    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> states = FiniteWidthRecursion("relu", 2, C_W=2.0).dntk(np.array([[1.0, 0.0]]), kink_terms=False)
    >>> [round(float(s.Q[0, 0, 0, 0]), 10) for s in states]
    [0.0, 2.0, 8.0]
    """
    if X is not None:
        return dntk_tensors(self, X, kink_terms=kink_terms, tol=tol, route=route)
    return dntk_one_input(self, x, G0=G0, kink_terms=kink_terms)


FiniteWidthRecursion.dntk = _dntk_method
FiniteWidthRecursion.dntk_symbolic = dntk_symbolic
FiniteWidthRecursion.dntk_layer_map = dntk_layer_map


# ---------------------------------------------------------------------------------------------- ddNTK, layer 2
def _derivative_moments(act, K, orders, tol):
    """M[a, b, c, d] = <s^(o1)(z_a) s^(o2)(z_b) s^(o3)(z_c) s^(o4)(z_d)> for all input quadruples by
    :func:`~ntk_theory.numerics.quadrature.expectn` (s^(0) = s, s^(1) = s', ...; smooth s), and the largest
    error estimate."""
    from ..numerics.quadrature import expectn

    N = K.shape[0]
    fns = {o: stable_lambdify((x,), drop_deltas(sp.diff(act.expr, x, o))) for o in set(orders)}
    zero = {o for o in fns if drop_deltas(sp.diff(act.expr, x, o)) == 0}
    M = np.zeros((N,) * 4)
    if zero:
        return M, 0.0
    err, cache = 0.0, {}
    for idx in itertools.product(range(N), repeat=4):
        key = tuple(sorted(zip(orders, idx)))
        if key not in cache:
            r = expectn([fns[o] for o in orders], K[np.ix_(idx, idx)], kinks=[(0.0,)] * 4, tol=tol)
            cache[key], err = r.value, max(err, r.error)
        M[idx] = cache[key]
    return M, err


@dataclass
class DDNTKState:
    """R, S, T, U (N, N, N, N) of one layer, normalised by the width n_(l-1) feeding it (n E[ddIH], n E[ddIIH]
    as in docs/finite_width.md); ``error`` the largest quadrature error estimate."""

    R: np.ndarray
    S: np.ndarray
    T: np.ndarray
    U: np.ndarray
    error: float = field(default=0.0, compare=False)


def ddntk_second_layer(rec: FiniteWidthRecursion, X, *, kink_terms: bool = True, tol: float = 1e-10
                       ) -> DDNTKState:
    """R, S, T, U of layer 2 (the first hidden layer's outputs feeding layer 2; exact at every width n_1: z(1) is
    Gaussian, H(1) = Theta(1) I, dH(1) = ddH(1) = 0, and the W(2) averages are Wick's).  With Th = Theta(1),
    C_W, lambda_W of layer 2, <.> over z ~ N(0, K(1))::

        R_abcd = lambda_W C_W <s''_a s_b s'_c s'_d> Th_ac Th_ad + C_W^2 <s'''_a s'_b s'_c s'_d> Th_ab Th_ac Th_ad
        S_abcd = lambda_W C_W <s'_a s'_b s'_c s'_d> Th_ac Th_bd + C_W^2 <s''_a s''_b s'_c s'_d> Th_ac Th_bd Th_ab
        T_abcd = lambda_W^2 <s'_a s'_b s_c s_d> Th_ab
                 + lambda_W C_W [<s'_a s''_b s_c s'_d> Th_bd + <s''_a s'_b s'_c s_d> Th_ac] Th_ab + U_abcd
        U_abcd = C_W^2 <s''_a s''_b s'_c s'_d> Th_ac Th_bd Th_ab

    Smooth activations; piecewise-linear ones only with ``kink_terms=False`` (s'' = s''' = 0 almost everywhere:
    R = U = 0); their Dirac terms diverge (two at one neuron: :func:`ddntk_activation_check`) and other kinked
    activations are refused.

    Parameters
    ----------
    X : array_like
        Inputs (N, n_0).
    kink_terms : bool, default True
        Keep the Dirac terms at kinks (piecewise-linear activations need False).
    tol : float, default 1e-10
        Relative tolerance of the numerically integrated averages.

    Returns
    -------
    DDNTKState
        R, S, T, U as (N, N, N, N) arrays, with ``error``.

    Raises
    ------
    ValueError
        For kinked activations with ``kink_terms=True``, or activations with kinks that are not
        piecewise-linear.

    Examples
    --------
    ReLU at C_W = 2 (lambda_W = 2), one unit input of n_0 = 2 (K = Theta = 1): S = lambda_W C_W <s'^4> = 2 and
    T = lambda_W^2 <s'^2 s^2> = 4 * 1/2 = 2:

    >>> import numpy as np
    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> st = FiniteWidthRecursion("relu", 2, C_W=2.0).ddntk_second_layer(np.array([[1.0, 0.0]]), kink_terms=False)
    >>> [round(float(t[0, 0, 0, 0]), 12) for t in (st.R, st.S, st.T, st.U)]
    [0.0, 2.0, 2.0, 0.0]
    """
    from .. import _checks

    X = _checks.inputs(X, "X")
    ddntk_activation_check(rec, kink_terms)
    act = rec.activation
    d = X.shape[1]
    G0 = X @ X.T / d
    K = rec.C_b[0] + rec.C_W[0] * G0
    lb1, lw1 = rec.lambdas(1)
    Th = lb1 + lw1 * G0
    C_W = rec.C_W[1]
    _, lam_W = rec.lambdas(2)
    ein = np.einsum
    if act.kinks:
        from .tensors import _four_point

        _, ddss, dddd, err = _four_point(act, K, tol)
        zero = np.zeros_like(dddd)
        S = lam_W * C_W * dddd * ein("ac,bd->abcd", Th, Th)
        T = lam_W**2 * ddss * Th[:, :, None, None]
        return DDNTKState(zero, S, T, zero.copy(), err)
    m2111, e1 = _derivative_moments(act, K, (2, 0, 1, 1), tol)    # <s''_a s_b s'_c s'_d>
    m3111, e2 = _derivative_moments(act, K, (3, 1, 1, 1), tol)
    m1111, e3 = _derivative_moments(act, K, (1, 1, 1, 1), tol)
    m2211, e4 = _derivative_moments(act, K, (2, 2, 1, 1), tol)
    m1100, e5 = _derivative_moments(act, K, (1, 1, 0, 0), tol)
    m1201, e6 = _derivative_moments(act, K, (1, 2, 0, 1), tol)    # <s'_a s''_b s_c s'_d>
    m2110, e7 = _derivative_moments(act, K, (2, 1, 1, 0), tol)    # <s''_a s'_b s'_c s_d>
    ThacThbd = ein("ac,bd->abcd", Th, Th)
    Tab, Tac, Tad = Th[:, :, None, None], Th[:, None, :, None], Th[:, None, None, :]
    R = lam_W * C_W * m2111 * Tac * Tad + C_W**2 * m3111 * Tab * Tac * Tad
    U = C_W**2 * m2211 * ThacThbd * Th[:, :, None, None]
    S = lam_W * C_W * m1111 * ThacThbd + U
    T = (lam_W**2 * m1100 * Th[:, :, None, None]
         + lam_W * C_W * (m1201 * Th[None, :, None, :] + m2110 * Th[:, None, :, None]) * Th[:, :, None, None] + U)
    return DDNTKState(R, S, T, U, max(e1, e2, e3, e4, e5, e6, e7))


FiniteWidthRecursion.ddntk_second_layer = ddntk_second_layer
from . import ddntk as _ddntk  # noqa: F401  attaches FiniteWidthRecursion.ddntk, .ddntk_symbolic
