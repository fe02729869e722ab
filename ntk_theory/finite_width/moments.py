r"""One-variable Gaussian averages of an activation and their derivatives in the variance.

For z ~ N(0, K) and a function g built from s and its almost-everywhere derivative s' (s^2, s'^2,
s^4, s^2 s'^2, s'^4), the finite-width recursions need

    M(K) = <g>,    M'(K) = d<g>/dK,    M''(K) = d^2<g>/dK^2

(PDLT eq. (4.40) ff.).  Each average is a one-input form of :mod:`ntk_theory.gaussian.expectation`:
<s^2> and <s'^2> are the recursions' diagonal forms (``activation_kernels(s).T_diag``, ``Tdot_diag``:
the two-variable closed form on the diagonal, else one-variable rules, else quadrature), the others
:func:`ntk_theory.gaussian.expectation1` of g.  A closed form's M', M'' are SymPy derivatives of it;
without one, M, M', M'' are quadratures with error estimates (:mod:`ntk_theory.numerics.onepoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..activations import activation as _activation
from ..activations import drop_deltas
from ..gaussian import expectation1, k
from ..recursions.layer import Divergent, activation_kernels

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

    ``form``: the one-input Gaussian form that evaluates it (closed or quadrature); ``expr``: its
    SymPy closed form in ``k`` or None; ``source``: how it was obtained."""

    name: str
    integrand: sp.Expr
    form: object

    @property
    def expr(self) -> sp.Expr | None:
        return self.form.expr if self.form.is_closed_form else None

    @property
    def source(self) -> str:
        return self.form.source

    @property
    def kinks(self) -> tuple:
        return getattr(self.form, "kinks", ())

    @property
    def is_closed_form(self) -> bool:
        return self.form.is_closed_form

    def symbol(self, K: sp.Expr, order: int = 0) -> sp.Expr:
        """The average at K as a SymPy expression: the closed form, or an unevaluated
        placeholder <g>(K) (differentiated ``order`` times) when there is none."""
        if self.is_closed_form:
            return self.form.derivative(order).subs(k, K)
        f = sp.Function(rf"\langle {AVERAGES[self.name][1]} \rangle")(K)
        return sp.diff(f, K, order) if order else f

    def evaluate(self, K: float, order: int = 0) -> tuple[float, float]:
        """(value, error estimate) of d^order<g>/dK^order at the variance K > 0, float64."""
        K = float(K)
        if not (np.isfinite(K) and K > 0):
            raise ValueError(f"the variance must be finite and > 0; got {K!r}")
        v, e = self.form.evaluate(np.array(K), with_error=True, order=order)
        v = float(v)
        if not np.isfinite(v):
            raise ValueError(f"<{self.integrand}> (derivative {order}) is not finite at K = {K}")
        return v, float(e) if e is not None else 0.0

    def evaluate_mp(self, K, order: int = 0):
        """The same with mpmath at its current precision."""
        import mpmath

        return self.form.evaluate_mp(K, dps=mpmath.mp.dps, order=order)


class OneInputAverages:
    """All one-input averages of an activation (``ss``, ``dd``, ``ssss``, ``ssdd``, ``dddd``).

    <s^2>, <s'^2>, <s^4>, <s^2 s'^2>, <s'^4> over z ~ N(0, K), as closed forms in K where the rules derive
    them, else by quadrature; ``averages[name].evaluate(K, order)`` gives the value (or its K-derivative of
    ``order``) and its error estimate.

    Parameters
    ----------
    act : str, sympy.Expr or Activation
        The activation.

    Examples
    --------
    ReLU: <s^4> = 3 K^2 / 2 (half the Gaussian fourth moment); tanh's <s^2> against scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from ntk_theory.finite_width import OneInputAverages
    >>> OneInputAverages("relu")["ssss"].expr
    3*k**2/2
    >>> value, error = OneInputAverages("tanh")["ss"].evaluate(1.0)
    >>> q = integrate.quad(lambda z: np.tanh(z)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-14)[0]
    >>> bool(np.isclose(value, q, rtol=1e-12))
    True
    """

    def __init__(self, act):
        self.activation = act = _activation(act) if not hasattr(act, "expr") else act
        s = act.expr
        ds = drop_deltas(act.derivative())
        kern = activation_kernels(act)
        diagonal = {"ss": kern.T_diag, "dd": kern.Tdot_diag}
        self.averages = {}
        for name, (build, _) in AVERAGES.items():
            g = sp.simplify(build(s, ds)) if name != "ssss" else build(s, ds)
            form = diagonal.get(name)
            if form is None or isinstance(form, Divergent):
                form = expectation1(g)
            self.averages[name] = Average(name, g, form)

    def __getitem__(self, name) -> Average:
        return self.averages[name]

    @property
    def closed_form(self) -> bool:
        """Whether every average is a closed form.

        Examples
        --------
        >>> from ntk_theory.finite_width import OneInputAverages
        >>> OneInputAverages("relu").closed_form
        True
        """
        return all(a.is_closed_form for a in self.averages.values())

    def __repr__(self) -> str:
        parts = [f"<{AVERAGES[n][1].replace(chr(92) + 'sigma', 's')}> = "
                 f"{sp.sstr(a.expr) if a.expr is not None else 'quadrature'}" for n, a in self.averages.items()]
        return f"OneInputAverages({self.activation.name}: " + "; ".join(parts) + ")"


_ONE_INPUT: dict = {}


def one_input_averages(act) -> OneInputAverages:
    """:class:`OneInputAverages` of an activation, built once per process (the rules and
    simplifications are the expensive part for activations without closed forms)."""
    act = _activation(act) if not hasattr(act, "expr") else act
    key = (act.name, sp.srepr(act.expr))
    if key not in _ONE_INPUT:
        _ONE_INPUT[key] = OneInputAverages(act)
    return _ONE_INPUT[key]
