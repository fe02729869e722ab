r"""One-variable Gaussian averages of an activation and their derivatives in the variance.

For z ~ N(0, K) and a function g built from s and its almost-everywhere derivative s' (s^2, s'^2,
s^4, s^2 s'^2, s'^4), the finite-width recursions need

    M(K) = <g>,    M'(K) = d<g>/dK = <g (z^2 - K)> / (2 K^2),
    M''(K) = d^2<g>/dK^2 = <g (z^4 - 6 K z^2 + 3 K^2)> / (4 K^4)

(differentiating the Gaussian density in K; PDLT eq. (4.40) ff. writes the same with the Hermite
tensor H4: (1/8) <g H4> = M''/2).  Each average is a closed form in K where the rules of
:mod:`ntk_theory.gaussian` derive one (then M', M'' are SymPy derivatives of it: exact, including
the Dirac-delta contributions of kinks, which a differentiated closed form carries), else a
tanh-sinh quadrature split at the kinks (:func:`ntk_theory.numerics.quadrature.expect1`) of the
weighted integrand above, with its error estimate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..activations import activation as _activation
from ..activations import drop_deltas, x
from ..gaussian import expectation, expectation1, k
from ..gaussian.stable import lambdify as stable_lambdify

#: the averages of one input, by name: (integrand in s, ds) and its display
AVERAGES = {
    "ss": (lambda s, ds: s**2, r"\sigma^2"),
    "dd": (lambda s, ds: ds**2, r"\sigma'^2"),
    "ssss": (lambda s, ds: s**4, r"\sigma^4"),
    "ssdd": (lambda s, ds: s**2 * ds**2, r"\sigma^2\sigma'^2"),
    "dddd": (lambda s, ds: ds**4, r"\sigma'^4"),
}


@dataclass(frozen=True)
class Average:
    """<g(z)>, z ~ N(0, K), with its first two K-derivatives.

    ``expr``: SymPy closed form in ``k`` or None; ``source``: how it was obtained."""

    name: str
    integrand: sp.Expr
    expr: sp.Expr | None
    source: str
    kinks: tuple

    @property
    def is_closed_form(self) -> bool:
        return self.expr is not None

    def symbol(self, K: sp.Expr, order: int = 0) -> sp.Expr:
        """The average at K as a SymPy expression: the closed form, or an unevaluated
        placeholder <g>(K) (differentiated ``order`` times) when there is none."""
        if self.expr is not None:
            return sp.diff(self.expr, k, order).subs(k, K)
        f = sp.Function(rf"\langle {AVERAGES[self.name][1]} \rangle")(K)
        return sp.diff(f, K, order) if order else f

    @functools.cached_property
    def _closed(self):
        return [stable_lambdify((k,), sp.diff(self.expr, k, n)) for n in range(3)]

    @functools.cached_property
    def _weighted(self):
        g = self.integrand
        K = sp.Symbol("K", positive=True)
        w = [g, g * (x**2 - K) / (2 * K**2), g * (x**4 - 6 * K * x**2 + 3 * K**2) / (4 * K**4)]
        return [sp.lambdify((x, K), drop_deltas(e), modules=["scipy", "numpy"]) for e in w]

    def evaluate(self, K: float, order: int = 0) -> tuple[float, float]:
        """(value, error estimate) of d^order<g>/dK^order at the variance K > 0, float64."""
        K = float(K)
        if not (np.isfinite(K) and K > 0):
            raise ValueError(f"the variance must be finite and > 0; got {K!r}")
        if self.expr is not None:
            v = float(np.real(self._closed[order](K)))
            if not np.isfinite(v):
                raise ValueError(f"<{self.integrand}> (derivative {order}) is not finite at K = {K}")
            return v, 0.0
        from ..numerics.quadrature import expect1

        f = self._weighted[order]
        r = expect1(lambda z: f(z, K) * np.ones_like(z), K, kinks=self.kinks)
        return float(r.value), float(r.error)

    def evaluate_mp(self, K, order: int = 0):
        """The same with mpmath at its current precision (closed forms only)."""
        import mpmath

        if self.expr is None:
            raise ValueError(f"<{self.integrand}> has no closed form; use evaluate()")
        e = sp.diff(self.expr, k, order)
        return mpmath.mpf(sp.N(e.subs(k, sp.Float(mpmath.mpf(K), mpmath.mp.dps)), mpmath.mp.dps))


class OneInputAverages:
    """All one-input averages of an activation (``ss``, ``dd``, ``ssss``, ``ssdd``, ``dddd``)."""

    def __init__(self, act):
        self.activation = act = _activation(act) if not hasattr(act, "expr") else act
        s = act.expr
        ds = drop_deltas(act.derivative())
        self.averages = {}
        for name, (build, _) in AVERAGES.items():
            g = sp.simplify(build(s, ds)) if name != "ssss" else build(s, ds)
            self.averages[name] = _average(name, g, act, ds)

    def __getitem__(self, name) -> Average:
        return self.averages[name]

    @property
    def closed_form(self) -> bool:
        return all(a.is_closed_form for a in self.averages.values())

    def __repr__(self) -> str:
        parts = [f"<{AVERAGES[n][1].replace(chr(92) + 'sigma', 's')}> = "
                 f"{sp.sstr(a.expr) if a.expr is not None else 'quadrature'}" for n, a in self.averages.items()]
        return f"OneInputAverages({self.activation.name}: " + "; ".join(parts) + ")"


_ONE_INPUT: dict = {}


def one_input_averages(act) -> OneInputAverages:
    """:class:`OneInputAverages` of an activation, built once per process (the rules and
    simplifications take ~1 s for activations without closed forms)."""
    act = _activation(act) if not hasattr(act, "expr") else act
    key = (act.name, sp.srepr(act.expr))
    if key not in _ONE_INPUT:
        _ONE_INPUT[key] = OneInputAverages(act)
    return _ONE_INPUT[key]


def _average(name, g, act, ds) -> Average:
    kinks = tuple(act.kinks)
    # the two-variable closed forms on the diagonal cover <s^2> and <s'^2> where one-variable rules
    # do not (erf^2: the arcsin kernel at k11 = k22 = k12)
    if name in ("ss", "dd"):
        e = expectation(act) if name == "ss" else expectation(act, derivative=1, deltas=False)
        if e.is_closed_form:
            from ..gaussian.expectation import _on_diagonal

            d = _on_diagonal(e.expr)
            if d is not None:
                return Average(name, g, sp.simplify(d), f"two-variable closed form on the diagonal ({e.source})", kinks)
    e1 = expectation1(g)
    if e1.is_closed_form:
        return Average(name, g, e1.expr, e1.source, kinks)
    return Average(name, g, None, "numerical quadrature (tanh-sinh split at kinks), with error estimate", kinks)
