r"""One layer of the infinite-width recursions: the Gaussian expectations of an activation and the map
they define.

For an activation s with T(K) = E[s(u) s(v)] and Tdot(K) = E[s'(u) s'(v)], (u, v) ~ N(0, K), the
next layer's NNGP kernel and NTK are (Jacot et al. 2018, eq. (5)-(6); PDLT eqs. (4.70), (9.5)):

    K'_ab     = C_b + C_W T(K_aa, K_bb, K_ab)
    Theta'_ab = lambda_b + lambda_W T(K_aa, K_bb, K_ab) + C_W Tdot(K_aa, K_bb, K_ab) Theta_ab

and on the diagonal (a = b) the one-variable forms T(K) = E[s(u)^2], Tdot(K) = E[s'(u)^2].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from ..activations import Activation, activation
from ..gaussian import expectation, k, k11, k12, k22
from ..gaussian.display import display_latex, display_text
from ..activations.parse import DivergentExpectation
from ..gaussian.stable import lambdify as stable_lambdify


class ActivationKernels:
    """The four Gaussian expectations one activation contributes to the recursions.

    ``T``, ``Tdot``: two-variable E[s s] and E[s' s'] (closed form or numerical);
    ``T_diag``, ``Tdot_diag``: their one-variable diagonal forms.  s' is the almost-everywhere
    derivative, as backpropagation through a finite network computes it (a jump of s contributes
    nothing: the NTK of a step or sign network comes from the layers after it only), matching the
    reference network and neural-tangents.
    """

    def __init__(self, act: Activation):
        self.activation = act
        self.T = expectation(act)
        self.Tdot = expectation(act, derivative=1, deltas=False)
        self.T_diag = _diagonal_or_divergent(self.T)
        self.Tdot_diag = _diagonal_or_divergent(self.Tdot)

    @property
    def closed_form(self) -> bool:
        return all(e.is_closed_form for e in (self.T, self.Tdot, self.T_diag, self.Tdot_diag))

    # float64 evaluators: closed forms in their stable rewriting, numerical ones by quadrature
    @functools.cached_property
    def _f64(self):
        def two(e):
            if not e.is_closed_form:
                return lambda a, b, c: e.evaluate(a, b, c, with_error=True)
            f = stable_lambdify((k11, k22, k12), e.expr)
            return lambda a, b, c: (_broadcast(f(a, b, c), c), None)

        def one(e):
            if isinstance(e, Divergent):
                return e.evaluate
            if not e.is_closed_form:
                return lambda a: e.evaluate(a, with_error=True)
            f = stable_lambdify((k,), e.expr)
            return lambda a: (_broadcast(f(a), a), None)

        return two(self.T), two(self.Tdot), one(self.T_diag), one(self.Tdot_diag)

    def offdiagonal(self, K11, K22, K12):
        """(T, Tdot, quadrature error or None) at arrays of covariances, float64."""
        T, Tdot, _, _ = self._f64
        (t, et), (td, etd) = T(K11, K22, K12), Tdot(K11, K22, K12)
        return t, td, _max_err(et, etd)

    def diagonal(self, K, derivative: bool = True):
        """(E[s^2], E[s'^2] or None, quadrature error or None) at an array of variances, float64."""
        _, _, T, Tdot = self._f64
        t, et = T(K)
        if not derivative:
            return t, None, _max_err(et)
        td, etd = Tdot(K)
        return t, td, _max_err(et, etd)

    # mpmath evaluators (at the current mpmath precision)
    @functools.cached_property
    def _mp(self):
        def two(e):
            if not e.is_closed_form:
                return lambda a, b, c: e.evaluate_mp(a, b, c, dps=mpmath.mp.dps)
            return sp.lambdify((k11, k22, k12), e.expr, modules="mpmath")

        def one(e):
            if isinstance(e, Divergent):
                return e.evaluate_mp
            if not e.is_closed_form:
                return lambda a: e.evaluate_mp(a, dps=mpmath.mp.dps)
            return sp.lambdify((k,), e.expr, modules="mpmath")

        return two(self.T), two(self.Tdot), one(self.T_diag), one(self.Tdot_diag)

    def offdiagonal_mp(self, a, b, c):
        T, Tdot, _, _ = self._mp
        if c * c >= a * b:  # |rho| = 1 exactly: the diagonal forms apply (for c = +sqrt(ab) with a = b)
            c = mpmath.sign(c) * mpmath.sqrt(a * b)
        return mpmath.re(T(a, b, c)), mpmath.re(Tdot(a, b, c))

    def diagonal_mp(self, a, derivative: bool = True):
        _, _, T, Tdot = self._mp
        return mpmath.re(T(a)), (mpmath.re(Tdot(a)) if derivative else None)

    def __repr__(self) -> str:
        kind = "closed form" if self.closed_form else "partly numerical"
        return f"ActivationKernels({self.activation.name}: {kind})"


class Divergent:
    """A diagonal expectation that is infinite (e.g. E[delta(u)^2] for the step's derivative)."""

    is_closed_form = True
    expr = sp.oo
    source = "diverges"

    def __init__(self, message: str):
        self.message = message

    def _raise(self, *args, **kwargs):
        raise DivergentExpectation(self.message)

    evaluate = evaluate_mp = __call__ = _raise

    def latex(self) -> str:
        return r"\infty\ \text{(diverges)}"

    def __repr__(self) -> str:
        return f"Divergent({self.message})"


def _diagonal_or_divergent(e):
    try:
        return e.diagonal
    except DivergentExpectation as exc:
        return Divergent(str(exc))


def _broadcast(value, like):
    return np.broadcast_to(np.asarray(value, dtype=float), np.shape(like)).copy()


def _max_err(*errs):
    errs = [float(np.max(e)) for e in errs if e is not None and np.size(e)]
    return max(errs) if errs else None


@functools.lru_cache(maxsize=64)
def activation_kernels(act) -> ActivationKernels:
    """The (cached) Gaussian expectations of an activation (name, string, SymPy expression)."""
    return ActivationKernels(activation(act))


# --------------------------------------------------------------------------- symbolic maps
Kaa, Kbb, Kab, Theta_ab = sp.symbols("K_aa K_bb K_ab Theta_ab", real=True)
K_, Theta_ = sp.symbols("K Theta", real=True)
C_W, C_b, lambda_b, lambda_W = sp.symbols("C_W C_b lambda_b lambda_W", nonnegative=True)


@dataclass(frozen=True)
class LayerMap:
    """The map (K, Theta) -> (K', Theta') of one hidden activation and the affine layer after it."""

    kernels: ActivationKernels
    C_W: float
    C_b: float
    lambda_b: float
    lambda_W: float

    def symbolic(self, numeric: bool = False) -> dict:
        """SymPy equations for K' and Theta', off the diagonal and on it; with ``numeric=False`` the
        constants stay symbols C_W, C_b, lambda_b, lambda_W."""
        cw, cb, lb, lw = (self.C_W, self.C_b, self.lambda_b, self.lambda_W) if numeric else (C_W, C_b, lambda_b, lambda_W)
        out = {}

        def two(e, name):
            return e.expr.subs({k11: Kaa, k22: Kbb, k12: Kab}, simultaneous=True) if e.is_closed_form else sp.Function(name)(Kaa, Kbb, Kab)

        def one(e, name):
            return e.expr.subs(k, K_) if e.is_closed_form else sp.Function(name)(K_)

        T, Td = two(self.kernels.T, "T"), two(self.kernels.Tdot, "Tdot")
        out["K'_ab"] = cb + cw * T
        out["Theta'_ab"] = lb + lw * T + cw * Td * Theta_ab
        T1, Td1 = one(self.kernels.T_diag, "T"), one(self.kernels.Tdot_diag, "Tdot")
        out["K'"] = cb + cw * T1
        out["Theta'"] = lb + lw * T1 + cw * Td1 * Theta_
        return out

    def latex(self) -> str:
        eqs = self.symbolic()
        names = {"K'_ab": r"K'_{ab}", "Theta'_ab": r"\Theta'_{ab}", "K'": "K'", "Theta'": r"\Theta'"}
        rows = [rf"{names[n]} &= {display_latex(e)}" for n, e in eqs.items()]
        return r"\begin{aligned}" + r"\\ ".join(rows) + r"\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"

    def text(self) -> str:
        return "\n".join(f"{n} = {display_text(e)}" for n, e in self.symbolic().items())
