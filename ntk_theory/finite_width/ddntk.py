r"""The ddNTK tensors R, S, T, U of an MLP at every depth, one input (floats or SymPy closed forms).

Definitions and estimators: docs/finite_width.md, section "Training: the dNTK and ddNTKs" (n = n_(l-1) the
width feeding layer l; i != j two neurons of layer l)::

    R = n E[ddIH_{iijj}],   S = n E[ddIIH_{iijj}],   T = n E[ddIIH_{ijij}],   U = n E[ddIIH_{ijji}]

Recursion, layer l -> l + 1 (one input; <.> the average over z ~ N(0, K(l)), s = s(z); r = n_l / n_(l-1);
C_W, lambda_W of layer l + 1; K, Th, B, F of layer l (:meth:`FiniteWidthRecursion.one_input`), P, Q of
layer l (:mod:`.dntk`); dd = <s'^2>, G = <(s s')'> = d<s^2>/dK, Gd = <(s'' s')'> = d<s'^2>/dK)::

    R' = lambda_W C_W [<s s'' s'^2> Th^2 + r B <s s''> dd + r P G dd]
         + C_W^2 [<s''' s'^3> Th^3 + r Th B <s''' s'> dd + r Th P Gd dd] + r C_W^2 dd^2 R
    S' = lambda_W C_W [<s'^4> Th^2 + r B dd^2] + C_W^2 [<s''^2 s'^2> Th^3 + r Th B <s''^2> dd] + r C_W^2 dd^2 S
    T' = lambda_W^2 [<s^2 s'^2> Th + r F G^2] + 2 lambda_W C_W [<s s'' s'^2> Th^2 + r Th F G Gd]
         + C_W^2 [<s''^2 s'^2> Th^3 + r Th^2 F Gd^2] + 2 r dd Q (lambda_W C_W G + C_W^2 Th Gd) + r C_W^2 dd^2 T
    U' = C_W^2 <s''^2 s'^2> Th^3 + r C_W^2 dd^2 U

No tensor beyond K, Th, B, F, P, Q, R, S, T, U enters: the sums that pair the NTK's off-diagonal entry H_jm with
a dNTK entry of the same two neurons (n E[H_jm dH_jjm f(z_j) g(z_m)], n E[H_jm dH_mjj f g]) are odd in row j of
W(l) given the layers below, and are O(1/n) after the sum over pairs (derivation in the docs).  Leading order in
1/n; error model: O(1/n) relative corrections of the recursion (the Monte Carlo fits a + b/n), plus the
quadrature error estimates of the one-dimensional Gaussian averages (``error``; 0 for closed forms).

Activations: smooth ones (s'' and s''' as functions); piecewise-linear ones (relu, leaky_relu, abs) only with
``kink_terms=False`` (the pointwise derivatives of each network, s'' = s''' = 0 almost everywhere); the Dirac terms
of the ensemble derivative at kinks are refused: at coincident inputs they hold two Dirac terms of one neuron
(s''(z)^2) and diverge like beta for smooth activations converging to the kink (entries at distinct inputs
converge; :func:`.dntk.ddntk_activation_check`).  Layer 2 reduces to
:func:`.dntk.ddntk_second_layer` (all 1/n tensors of layer 1 vanish).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..activations import drop_deltas, x
from ..docstrings import filled
from ..gaussian import expectation1, k
from .dntk import (
    DDNTK_LOCAL_TERMS,
    DDNTK_TERMS,
    INPUTS,
    INTEGRATION,
    DDNTKState,
    _route,
    ddntk_activation_check,
    derivative_averages,
    dntk_one_input,
    dntk_symbolic,
    dntk_tensors,
    recursion_states,
    shared_four_point,
)
from .network import FiniteWidthRecursion, _tidy
from .twopoint import TwoPoint, derivative_tensors, stein_factors

NAMES = ("R", "S", "T", "U")

# the one-input averages the step needs: name -> (orders of the derivative factors, multiplied)
_AVERAGES = {
    "dd": (1, 1),
    "ssdd": (0, 0, 1, 1),
    "dddd": (1, 1, 1, 1),
    "s2sdd": (2, 0, 1, 1),
    "s3ddd": (3, 1, 1, 1),
    "s2s": (2, 0),
    "s3d": (3, 1),
    "s2s2dd": (2, 2, 1, 1),
    "s2s2": (2, 2),
    "G": None,   # <(s s')'> = <s'^2> + <s s''>
    "Gd": None,  # <(s'' s')'> = <s''' s'> + <s''^2>
}


@dataclass
class DDNTKScalars:
    """R, S, T, U of one layer for one input (floats or SymPy expressions), normalised by the width n_(l-1)
    feeding the layer; ``error`` the largest quadrature error estimate of the averages used."""

    R: object
    S: object
    T: object
    U: object
    error: float = field(default=0.0, compare=False)

    def values(self) -> dict:
        return {"R": self.R, "S": self.S, "T": self.T, "U": self.U}


def ddntk_step(st, P, Q, prev: DDNTKScalars, avg, C_W, lam_W, r=1) -> DDNTKScalars:
    """R, S, T, U of layer l + 1 (module docstring) from layer l's state ``st`` (K, Th, B, F), its P, Q and
    ``prev`` (R, S, T, U); ``avg(name)`` returns the averages of ``_AVERAGES`` at st.K."""
    Th, B, F = st.Th, st.B, st.F
    dd, G, Gd = avg("dd"), avg("G"), avg("Gd")
    lC, C2 = lam_W * C_W, C_W**2
    R = (lC * (avg("s2sdd") * Th**2 + r * B * avg("s2s") * dd + r * P * G * dd)
         + C2 * (avg("s3ddd") * Th**3 + r * Th * B * avg("s3d") * dd + r * Th * P * Gd * dd)
         + r * C2 * dd**2 * prev.R)
    S = (lC * (avg("dddd") * Th**2 + r * B * dd**2)
         + C2 * (avg("s2s2dd") * Th**3 + r * Th * B * avg("s2s2") * dd) + r * C2 * dd**2 * prev.S)
    T = (lam_W**2 * (avg("ssdd") * Th + r * F * G**2) + 2 * lC * (avg("s2sdd") * Th**2 + r * Th * F * G * Gd)
         + C2 * (avg("s2s2dd") * Th**3 + r * Th**2 * F * Gd**2) + 2 * r * dd * Q * (lC * G + C2 * Th * Gd)
         + r * C2 * dd**2 * prev.T)
    U = C2 * avg("s2s2dd") * Th**3 + r * C2 * dd**2 * prev.U
    return DDNTKScalars(R, S, T, U)


class _Averages:
    """The one-dimensional Gaussian averages of ``_AVERAGES`` (closed forms in K by the one-variable rules where
    they exist, quadrature otherwise); pointwise derivatives (Dirac terms dropped)."""

    def __init__(self, act):
        ders = {o: drop_deltas(sp.diff(act.expr, x, o)) for o in range(4)}
        self.forms = {}
        for name, orders in _AVERAGES.items():
            if orders is None:
                continue
            g = sp.Mul(*(ders[o] for o in orders))
            self.forms[name] = None if sp.simplify(g) == 0 else expectation1(sp.simplify(g))

    def _combine(self, name, one):
        if name == "G":
            return one("dd") + one("s2s")
        if name == "Gd":
            return one("s3d") + one("s2s2")
        return one(name)

    def evaluator(self, K, errors: list):
        def one(name):
            form = self.forms[name]
            if form is None:
                return 0.0
            v, e = form.evaluate(np.array(float(K)), with_error=True, order=0)
            v = float(v)
            if not np.isfinite(v):
                raise ValueError(f"the Gaussian average {name} is not finite at K = {K}")
            errors.append(float(e) if e is not None else 0.0)
            return v

        return lambda name: self._combine(name, one)

    def closed(self) -> bool:
        return all(f is None or f.is_closed_form for f in self.forms.values())

    def symbolic(self, K):
        def one(name):
            form = self.forms[name]
            return sp.S.Zero if form is None else form.derivative(0).subs(k, K)

        return lambda name: self._combine(name, one)


def ddntk_one_input(rec: FiniteWidthRecursion, x=None, *, G0=None, kink_terms: bool = True
                    ) -> list[DDNTKScalars]:
    """R, S, T, U of layers 1 .. L+1 for one input x (or G0 = x.x / n_0), float64 (layer l's per 1/n_(l-1))."""
    ddntk_activation_check(rec, kink_terms)
    states = rec.one_input(x, G0=G0)
    dn = dntk_one_input(rec, x, G0=G0, kink_terms=kink_terms)
    averages = _Averages(rec.activation)
    out = [DDNTKScalars(0.0, 0.0, 0.0, 0.0)]
    for l in range(1, rec.depth + 1):
        st, errors = states[l - 1], []
        _, lw = rec.lambdas(l + 1)
        new = ddntk_step(st, dn[l - 1].P, dn[l - 1].Q, out[-1], averages.evaluator(st.K, errors), rec.C_W[l], lw,
                         rec.ratios[l])
        new.error = max(errors, default=0.0)
        out.append(new)
    return out


# the parameters stand again in dntk_symbolic's docstring on purpose: two public functions, each documented in full
def ddntk_symbolic(rec: FiniteWidthRecursion, G0=None, *, kink_terms: bool = True, simplify: bool = True
                   ) -> list[DDNTKScalars]:
    """R, S, T, U of layers 1 .. L+1 for one input as SymPy expressions in G0 (closed-form averages only).

    Parameters
    ----------
    G0 : sympy.Expr or None, default None
        The input's x.x / n_0 (None: the symbol ``G_0``).
    kink_terms : bool, default True
        Keep the Dirac terms at kinks (piecewise-linear activations need False).
    simplify : bool, default True
        Simplify each layer's expressions.

    Returns
    -------
    list of DDNTKScalars

    Raises
    ------
    ValueError
        If an average has no closed form, or for kinked activations with ``kink_terms=True``.

    Examples
    --------
    ReLU at C_W = 2: at layer 2, S = T = 2 at G0 = 1/2 (:meth:`ddntk_second_layer`'s example), i.e. 8 G0^2:

    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> FiniteWidthRecursion("relu", 2, C_W=2.0).ddntk_symbolic(kink_terms=False)[1]
    DDNTKScalars(R=0, S=8*G_0**2, T=8*G_0**2, U=0, error=0.0)
    """
    ddntk_activation_check(rec, kink_terms)
    averages = _Averages(rec.activation)
    if not averages.closed():
        raise ValueError(f"no closed form for the ddNTK averages of {rec.activation.name}; use ddntk_one_input()")
    G0 = sp.Symbol("G_0", positive=True) if G0 is None else G0
    states = rec.symbolic(G0, simplify=simplify)
    dn = dntk_symbolic(rec, G0, kink_terms=kink_terms, simplify=simplify)
    out = [DDNTKScalars(sp.S.Zero, sp.S.Zero, sp.S.Zero, sp.S.Zero)]
    for l in range(1, rec.depth + 1):
        st = states[l - 1]
        _, lw = (sp.nsimplify(v) for v in rec.lambdas(l + 1))
        new = ddntk_step(st, dn[l - 1].P, dn[l - 1].Q, out[-1], averages.symbolic(st.K), sp.nsimplify(rec.C_W[l]),
                         lw, sp.nsimplify(rec.ratios[l]))
        if simplify:
            new = DDNTKScalars(*(_tidy(v) for v in new.values().values()))
        out.append(new)
    return out


# ---------------------------------------------------------------------------------------------- N inputs
def local_terms(act, K, Th, C_W, lam_W, pointwise: bool, tol=1e-10, route: str = "compiled") -> DDNTKState:
    """The terms of R, S, T, U of layer l + 1 that need only layer l's K and Th (one neuron's Gaussian averages;
    at layer 2 they are the whole answer, :func:`.dntk.ddntk_second_layer`); ``route`` for the s'' averages
    (:func:`.dntk.derivative_averages`)."""
    ein = np.einsum
    ThacThbd = ein("ac,bd->abcd", Th, Th)
    Tab, Tac, Tad = Th[:, :, None, None], Th[:, None, :, None], Th[:, None, None, :]
    if route == "compiled" and not pointwise:  # every average in one pass of the compiled integrator
        avg = derivative_averages(act, K, DDNTK_LOCAL_TERMS, tol, route)
        (dddd, e0), (ddss, e6) = avg[1, 1, 1, 1], avg[1, 1, 0, 0]
        err = max(e0, e6)
    else:
        _, ddss, dddd, err = shared_four_point(act, K, tol)
    S = lam_W * C_W * dddd * ThacThbd
    T = lam_W**2 * ddss * Tab
    if pointwise:
        zero = np.zeros_like(dddd)
        return DDNTKState(zero, S, T, zero.copy(), err)
    if route != "compiled":
        avg = derivative_averages(act, K, DDNTK_LOCAL_TERMS[:5], tol, route)
    m2111, e1 = avg[2, 0, 1, 1]    # <s''_a s_b s'_c s'_d>
    m3111, e2 = avg[3, 1, 1, 1]
    m2211, e3 = avg[2, 2, 1, 1]
    m1201, e4 = avg[1, 2, 0, 1]    # <s'_a s''_b s_c s'_d>
    m2110, e5 = avg[2, 1, 1, 0]    # <s''_a s'_b s'_c s_d>
    R = lam_W * C_W * m2111 * Tac * Tad + C_W**2 * m3111 * Tab * Tac * Tad
    U = C_W**2 * m2211 * ThacThbd * Tab
    S = S + U
    T = T + lam_W * C_W * (m1201 * Th[None, :, None, :] + m2110 * Tac) * Tab + U
    return DDNTKState(R, S, T, U, max(err, e1, e2, e3, e4, e5))


def ddntk_tensor_step(st, P, Q, prev: DDNTKState, act, tp_ss: TwoPoint, tp_dd: TwoPoint, C_W, lam_W, r=1.0,
                      pointwise=False, tol=1e-10, route: str = "compiled") -> DDNTKState:
    """R, S, T, U (N, N, N, N) of layer l + 1 from layer l's :class:`~.tensors.TensorState` ``st`` (K, Th, B, F),
    its P, Q and ``prev`` (R, S, T, U); formulas in docs/finite_width.md (the N-input form of the module
    docstring's recursion); ``route`` for the s'' averages (:func:`.dntk.derivative_averages`)."""
    ein = np.einsum
    K, Th, B, F = st.K, st.Th, st.B, st.F
    loc = local_terms(act, K, Th, C_W, lam_W, pointwise, tol, route)
    Sg = derivative_tensors(tp_ss, K)
    G = stein_factors(Sg)                                   # <d_e (s'_p s_q)>
    dd = derivative_tensors(tp_dd, K).value                 # <s'_p s'_q>
    errs = [loc.error, Sg.error]
    N = K.shape[0]
    if pointwise:
        Gd = np.zeros((N,) * 3)
        s2s = s3d = s2s2 = np.zeros((N, N))
    else:
        Dd = derivative_tensors(tp_dd, K)
        Gd = stein_factors(Dd)                              # <d_e (s''_p s'_q)>
        avg = derivative_averages(act, K, ((2, 0), (3, 1), (2, 2)), tol, route)
        s2s, e1 = avg[2, 0]                                 # <s''_a s_b>
        s3d, e2 = avg[3, 1]                                 # <s'''_a s'_b>
        s2s2, e3 = avg[2, 2]                                # <s''_a s''_b>
        errs += [Dd.error, e1, e2, e3]
    lC, C2 = lam_W * C_W, C_W**2
    Tab, Tac, Tbd = Th[:, :, None, None], Th[:, None, :, None], Th[None, :, None, :]
    ddab, ddcd = dd[:, :, None, None], dd[None, None, :, :]
    ddac, ddbd = dd[:, None, :, None], dd[None, :, None, :]
    ddad, ddbc = dd[:, None, None, :], dd[None, :, :, None]
    Baa = ein("aacd->acd", B)[:, None, :, :]               # B_(aa)(cd)
    PG = ein("acde,abe->abcd", P, G)
    PGd = ein("acde,abe->abcd", P, Gd)
    R = loc.R + r * (lC * (Baa * s2s[:, :, None, None] + PG) * ddcd
                     + C2 * Tab * (Baa * s3d[:, :, None, None] + PGd) * ddcd + C2 * ddab * ddcd * prev.R)
    S = loc.S + r * (lC * B * ddab * ddcd + C2 * Tab * B * s2s2[:, :, None, None] * ddcd
                     + C2 * ddab * ddcd * prev.S)
    FGG = ein("aebf,ace,bdf->abcd", F, G, G, optimize=True)
    FGGd = ein("aebf,ace,bdf->abcd", F, G, Gd, optimize=True)
    FGdG = ein("aebf,ace,bdf->abcd", F, Gd, G, optimize=True)
    FGdGd = ein("aebf,ace,bdf->abcd", F, Gd, Gd, optimize=True)
    QbG = ein("bdae,ace->abcd", Q, G)
    QaG = ein("acbe,bde->abcd", Q, G)
    QbGd = ein("bdae,ace->abcd", Q, Gd)
    QaGd = ein("acbe,bde->abcd", Q, Gd)
    T = loc.T + r * (lam_W**2 * FGG + lC * (Tbd * FGGd + Tac * FGdG) + C2 * Tac * Tbd * FGdGd
                     + lC * (ddbd * QbG + ddac * QaG) + C2 * (Tac * ddbd * QbGd + Tbd * ddac * QaGd)
                     + C2 * ddac * ddbd * prev.T)
    U = loc.U + r * C2 * ddad * ddbc * prev.U
    return DDNTKState(R, S, T, U, max(errs))


def ddntk_tensors(rec: FiniteWidthRecursion, X, *, kink_terms: bool = True, tol: float = 1e-10,
                  route: str = "compiled") -> list[DDNTKState]:
    """R, S, T, U (N, N, N, N) of layers 1 .. L+1 at the N inputs X (N, n_0); layer l's per 1/n_(l-1).  ``route``:
    how the s'' averages are integrated (:func:`.dntk.derivative_averages`); the states and P, Q are shared with
    ``rec.dntk`` at the same inputs and options (:func:`.dntk.shared_result`)."""
    from .. import _checks

    ddntk_activation_check(rec, kink_terms)
    _route(route)
    pointwise = bool(rec.activation.kinks)
    X = _checks.inputs(X, "X")
    uniq, inv = np.unique(X, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel()
    states = recursion_states(rec, uniq, tol)
    if route == "compiled" and not pointwise:
        for st in states[:-1]:  # every layer's s'' averages in one pass per K (the dNTK's are among them)
            derivative_averages(rec.activation, st.K, DDNTK_TERMS, tol, route)
    dn = dntk_tensors(rec, uniq, kink_terms=kink_terms, tol=tol, route=route)
    tp_ss, tp_dd = TwoPoint(rec.activation, "ss"), TwoPoint(rec.activation, "dd")
    n = uniq.shape[0]
    out = [DDNTKState(*(np.zeros((n,) * 4) for _ in range(4)))]
    for l in range(1, rec.depth + 1):
        _, lw = rec.lambdas(l + 1)
        out.append(ddntk_tensor_step(states[l - 1], dn[l - 1].P, dn[l - 1].Q, out[-1], rec.activation, tp_ss,
                                     tp_dd, rec.C_W[l], lw, rec.ratios[l], pointwise, tol, route))
    ix = np.ix_(*([inv] * 4))
    return [DDNTKState(s.R[ix], s.S[ix], s.T[ix], s.U[ix], s.error) for s in out]


# the parameters stand again in _dntk_method's docstring on purpose: two public methods, each documented in full
@filled(inputs=INPUTS, integration=INTEGRATION)
def _ddntk_method(self, X=None, *, x=None, G0=None, kink_terms: bool = True, tol: float = 1e-10,
                  route: str = "compiled"):
    """R, S, T, U of layers 1 .. L+1 (layer l's per 1/n_(l-1)): at the N inputs X (N, n_0) as (N, N, N, N)
    arrays (:class:`.dntk.DDNTKState`), or for one input ``x`` / ``G0`` as floats (:class:`DDNTKScalars`);
    ``route`` ("compiled" or "nested") how the N-input s'' averages are integrated
    (:func:`.dntk.derivative_averages`).

    Parameters
    ----------
    %(inputs)s
    kink_terms : bool, default True
        Keep the Dirac terms at kinks (piecewise-linear activations need False).
    %(integration)s

    Returns
    -------
    list
        L + 1 states: DDNTKScalars (one input) or DDNTKState (N inputs).

    Examples
    --------
    ReLU at C_W = 2, G0 = 1/2: layer 2's S = T = 2 (:meth:`ddntk_second_layer`'s hand values):

    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> FiniteWidthRecursion("relu", 2, C_W=2.0).ddntk(G0=0.5, kink_terms=False)[1]
    DDNTKScalars(R=0.0, S=2.0, T=2.0, U=0.0, error=0.0)
    """
    if X is not None:
        return ddntk_tensors(self, X, kink_terms=kink_terms, tol=tol, route=route)
    return ddntk_one_input(self, x, G0=G0, kink_terms=kink_terms)


FiniteWidthRecursion.ddntk = _ddntk_method
FiniteWidthRecursion.ddntk_symbolic = ddntk_symbolic
