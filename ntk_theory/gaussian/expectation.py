r"""E[f(u) g(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]): a closed form by rules, or a numerical one.

>>> from ntk_theory.gaussian import expectation
>>> e = expectation("relu")          # E[relu(u) relu(v)]
>>> e.expr                           # doctest: +SKIP
(2*k12*asin(k12/(sqrt(k11)*sqrt(k22))) + pi*k12 + 2*sqrt(k11*k22 - k12**2))/(4*pi)
>>> sorted(e.rules)
['dirac_delta', 'half_line', 'price']
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import sympy as sp

from .. import diskcache
from ..activations import Activation, activation, drop_deltas, lambdify_numpy
from ..activations.activation import x
from ..activations.parse import DivergentExpectation
from . import rules
from .atoms import Delta, NoRule, combination_derivative, decompose, product
from .derivation import Step
from .display import display_latex, display_text
from .symbols import k, k11, k12, k22

ARGS = (k11, k22, k12)


def _as_expr(f) -> tuple[sp.Expr, str]:
    if isinstance(f, sp.Basic) and not isinstance(f, Activation):
        e = sp.sympify(f)
        return e, sp.sstr(e)
    act = activation(f)
    return act.expr, act.name


class GaussianExpectation:
    """Common interface of closed-form and numerical expectations E[f(u) g(v)]."""

    f: sp.Expr
    g: sp.Expr
    label: str
    is_closed_form: bool

    def __call__(self, k11, k22, k12):
        return self.evaluate(k11, k22, k12)

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"


class ClosedForm(GaussianExpectation):
    """A closed form ``expr(k11, k22, k12)`` with the derivation that produced it."""

    is_closed_form = True

    def __init__(self, f: sp.Expr, g: sp.Expr, label: str, derivation: Step, atoms=None):
        self.f, self.g, self.label, self.derivation = f, g, label, derivation
        self.expr: sp.Expr = derivation.result
        self._atoms = atoms

    @property
    def rules(self) -> set[str]:
        """The rules used anywhere in the derivation."""
        return self.derivation.rules() - {"linearity"}

    @property
    def source(self) -> str:
        return "derived by rules: " + ", ".join(sorted(self.rules))

    @functools.cached_property
    def diagonal(self) -> "ClosedForm":
        """E[f(u) g(u)], u ~ N(0, k): the two-variable form at k11 = k22 = k12 = k, or one-variable rules."""
        return diagonal_expectation(self._atoms, self.f, self.g, self.label, self.expr)

    # ------------------------------------------------------------------ evaluation
    @functools.cached_property
    def _numpy(self):
        return sp.lambdify(ARGS, self.expr, modules=["scipy", "numpy"])

    def evaluate(self, k11, k22, k12):
        """Float64, vectorised over arrays of covariances."""
        with np.errstate(invalid="ignore"):
            return np.asarray(self._numpy(*np.broadcast_arrays(*map(np.asarray, (k11, k22, k12)))), dtype=float)

    def evaluate_mp(self, k11, k22, k12, dps: int = 30):
        """mpmath at ``dps`` digits (arguments converted from strings/floats exactly)."""
        with mpmath.workdps(dps):
            subs = {a: sp.Float(mpmath.mpf(v), dps) for a, v in zip(ARGS, (k11, k22, k12))}
            return mpmath.mpf(sp.N(self.expr.subs(subs), dps))

    # ------------------------------------------------------------------ display
    def latex(self) -> str:
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'v')}\right] = {display_latex(self.expr)}"

    def text(self) -> str:
        return f"E[{self.label}(u) {self.label}(v)] = {display_text(self.expr)}\n  {self.source}\n" + self.derivation.text()

    def __repr__(self) -> str:
        return f"ClosedForm(E[f(u) g(v)] = {display_text(self.expr)}; {self.source})"

    def _repr_latex_(self) -> str:
        return "$" + self.latex() + r"\\" + self.derivation.latex(max_depth=3) + "$"


class NumericalExpectation(GaussianExpectation):
    """No closed form was derived: numerical quadrature with an error estimate."""

    is_closed_form = False

    def __init__(self, f: sp.Expr, g: sp.Expr, label: str, reason: str, atoms=None):
        if f.has(sp.DiracDelta) or g.has(sp.DiracDelta):
            raise DivergentExpectation(f"no closed form for E[{label}] and its integrand has a Dirac delta: {reason}")
        self.f, self.g, self.label, self.reason = f, g, label, reason
        self._atoms = atoms
        self.kinks_f = _kinks(f)
        self.kinks_g = _kinks(g)

    @property
    def source(self) -> str:
        return "numerical quadrature (no closed form derived)"

    @functools.cached_property
    def _callables(self):
        return lambdify_numpy(drop_deltas(self.f)), lambdify_numpy(drop_deltas(self.g))

    def evaluate(self, k11, k22, k12, with_error: bool = False):
        from ..numerics.quadrature_batch import expect2_vectorized

        f, g = self._callables
        values, errors = expect2_vectorized(
            f, g, *np.broadcast_arrays(*map(np.asarray, (k11, k22, k12))), kinks_f=self.kinks_f, kinks_g=self.kinks_g
        )
        return (values, errors) if with_error else values

    def evaluate_mp(self, k11, k22, k12, dps: int = 30):
        from ..numerics.quadrature_mp import expect2_mp

        with mpmath.workdps(dps):
            f = sp.lambdify(x, self.f, modules="mpmath")
            g = sp.lambdify(x, self.g, modules="mpmath")
            value, _ = expect2_mp(f, g, k11, k22, k12, kinks_f=self.kinks_f, kinks_g=self.kinks_g, dps=dps)
            return value

    @functools.cached_property
    def diagonal(self):
        try:
            return diagonal_expectation(self._atoms, self.f, self.g, self.label, None)
        except NoRule as exc:
            return NumericalDiagonal(self.f, self.g, self.label, str(exc))

    def latex(self) -> str:
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'v')}\right]\ \text{{(numerical quadrature)}}"

    def text(self) -> str:
        return f"E[{self.label}(u) {self.label}(v)]: {self.source}; {self.reason}"

    def __repr__(self) -> str:
        return f"NumericalExpectation(E[{sp.sstr(self.f)} {sp.sstr(self.g)}]; {self.source})"


class ClosedDiagonal(GaussianExpectation):
    """E[f(u) g(u)], u ~ N(0, k), in closed form."""

    is_closed_form = True

    def __init__(self, f, g, label, expr: sp.Expr, derivation: Step):
        self.f, self.g, self.label, self.expr, self.derivation = f, g, label, expr, derivation

    @property
    def rules(self):
        return self.derivation.rules() - {"linearity"}

    @property
    def source(self) -> str:
        if self.derivation.rule == "diagonal":
            return "the two-variable closed form at k11 = k22 = k12 = k"
        return "derived by rules: " + ", ".join(sorted(self.rules))

    @functools.cached_property
    def _numpy(self):
        return sp.lambdify((k,), self.expr, modules=["scipy", "numpy"])

    def evaluate(self, kk):
        return np.asarray(self._numpy(np.asarray(kk, dtype=float)), dtype=float) * np.ones_like(kk, dtype=float)

    def __call__(self, kk):
        return self.evaluate(kk)

    def evaluate_mp(self, kk, dps: int = 30):
        with mpmath.workdps(dps):
            return mpmath.mpf(sp.N(self.expr.subs(k, sp.Float(mpmath.mpf(kk), dps)), dps))

    def latex(self) -> str:
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'u')}\right] = {display_latex(self.expr)}"

    def __repr__(self) -> str:
        return f"ClosedDiagonal(E[f(u) g(u)] = {display_text(self.expr)}; {self.source})"


class NumericalDiagonal(GaussianExpectation):
    """E[f(u) g(u)] by one-dimensional quadrature."""

    is_closed_form = False

    def __init__(self, f, g, label, reason):
        self.f, self.g, self.label, self.reason = f, g, label, reason
        self.kinks = tuple(sorted(set(_kinks(f)) | set(_kinks(g))))

    @property
    def source(self) -> str:
        return "numerical quadrature (no closed form derived)"

    @functools.cached_property
    def _callable(self):
        return lambdify_numpy(drop_deltas(self.f * self.g))

    def evaluate(self, kk, with_error: bool = False):
        from ..numerics.quadrature import expect1

        kk = np.asarray(kk, dtype=float)
        h = self._callable
        results = [expect1(h, float(v), kinks=self.kinks) for v in kk.ravel()]
        values = np.array([r.value for r in results]).reshape(kk.shape)
        errors = np.array([r.error for r in results]).reshape(kk.shape)
        return (values, errors) if with_error else values

    def __call__(self, kk):
        return self.evaluate(kk)

    def evaluate_mp(self, kk, dps: int = 30):
        from ..numerics.quadrature_mp import expect2_mp

        with mpmath.workdps(dps):
            fg = sp.lambdify(x, self.f * self.g, modules="mpmath")
            value, _ = expect2_mp(fg, lambda z: 1, kk, kk, kk, kinks_f=self.kinks, dps=dps)
            return value

    def latex(self) -> str:
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'u')}\right]\ \text{{(numerical quadrature)}}"

    def __repr__(self) -> str:
        return f"NumericalDiagonal(E[{sp.sstr(self.f * self.g)}]; {self.source})"


def _latex_fn(expr: sp.Expr, var: str) -> str:
    return sp.latex(expr.subs(x, sp.Symbol(var)))


def _kinks(expr) -> tuple:
    from ..activations.activation import kinks_of

    return kinks_of(expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero))


# --------------------------------------------------------------------------- entry points
@functools.lru_cache(maxsize=256)
def _derive(A, B) -> Step:
    """The rules' derivation of E[A(u) B(v)], kept on disk (:func:`ntk_theory.diskcache.memo`) under
    the atoms and the code's fingerprint: a derivation that took seconds of SymPy is read back in
    milliseconds by every later process.  Failures (NoRule) are kept too."""
    key = f"{A!r}|{B!r}"
    outcome = diskcache.memo("pair", key, lambda: _derive_or_reason(A, B))
    if isinstance(outcome, str):
        raise NoRule(outcome)
    return outcome


def _derive_or_reason(A, B):
    try:
        return rules.combination_pair(A, B)
    except NoRule as exc:
        return str(exc)


def _atoms_and_expr(f, order: int, deltas: bool):
    """(atoms or the NoRule saying why there are none, the expression, its label)."""
    expr, label = _as_expr(f)
    d = sp.diff(expr, x, order) if order else expr
    if not deltas:
        d = d.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    try:
        A = decompose(expr)
        for _ in range(order):
            A = combination_derivative(A)
    except NoRule as exc:  # no split into atoms: numerical quadrature, split at the kinks
        return exc, d, label + "'" * order
    if not deltas:
        A = tuple((c, a) for c, a in A if not isinstance(a, Delta))
    return A, d, label + "'" * order


def expectation(f, g=None, derivative: int = 0, deltas: bool = True) -> GaussianExpectation:
    """E[f^(n)(u) g^(n)(v)], n = ``derivative`` (g defaults to f): a :class:`ClosedForm` if the
    rules derive one, else a :class:`NumericalExpectation` (which says why).

    Derivatives are distributional by default (a jump contributes a Dirac delta: the limit of
    smooth surrogates, e.g. erf(x/eps) -> sign); ``deltas=False`` keeps the almost-everywhere
    derivative, which is what backpropagation through a finite network computes and what the NTK
    recursion uses."""
    A, fe, label = _atoms_and_expr(f, derivative, deltas)
    if g is None:
        B, ge = A, fe
    else:
        B, ge, glabel = _atoms_and_expr(g, derivative, deltas)
        label = f"{label}, {glabel}"
    for atoms in (A, B):
        if isinstance(atoms, NoRule):
            return NumericalExpectation(fe, ge, label, _short(str(atoms)), atoms=None)
    if not A or not B:
        zero = Step("zero", "", sp.S.Zero, "the derivative vanishes almost everywhere")
        return ClosedForm(fe, ge, label, zero, atoms=(A, B))
    try:
        return ClosedForm(fe, ge, label, _derive(A, B), atoms=(A, B))
    except NoRule as exc:
        return NumericalExpectation(fe, ge, label, _short(str(exc)), atoms=(A, B))


def _short(msg: str, n: int = 300) -> str:
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def diagonal_expectation(atoms, f: sp.Expr, g: sp.Expr, label: str, two_variable: sp.Expr | None) -> ClosedDiagonal:
    """E[f(u) g(u)] in closed form: the two-variable closed form on the diagonal if it is finite
    there, otherwise one-variable rules on the product f g.  Raises DivergentExpectation if the
    product contains delta(x)^2 and NoRule if nothing applies."""
    if two_variable is not None:
        on_diag = _on_diagonal(two_variable)
        if on_diag is not None:
            step = Step("diagonal", r"E[f(u)\,g(u)]", on_diag, "two-variable closed form at k11 = k22 = k12 = k")
            return ClosedDiagonal(f, g, label, on_diag, step)
    A, B = atoms if atoms is not None else (decompose(f), decompose(g))
    terms = []
    try:
        for ca, a in A:
            for cb, b in B:
                terms.extend((ca * cb * c, atom) for c, atom in product(a, b))
    except NoRule as exc:
        if "diverges" in str(exc):
            raise DivergentExpectation(f"the diagonal expectation E[{label}] diverges: {exc}") from None
        raise
    step = rules.combination_one(tuple(terms), k) if terms else Step("zero", "", sp.S.Zero)
    return ClosedDiagonal(f, g, label, rules.tidy(step.result), step)


def _on_diagonal(expr: sp.Expr) -> sp.Expr | None:
    d = expr.subs({k11: k, k22: k, k12: k})
    if d.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return None
    d = rules.tidy(d)
    return None if d.has(sp.nan, sp.zoo) else d


def expectation1(f, derivative: int = 0) -> GaussianExpectation:
    """E[f^(n)(u)], u ~ N(0, k): a closed form in k by the one-variable rules, else quadrature."""
    A, fe, label = _atoms_and_expr(f, derivative, deltas=True)
    if isinstance(A, NoRule):
        return NumericalDiagonal(fe, sp.S.One, label, _short(str(A)))
    try:
        step = rules.combination_one(A, k) if A else Step("zero", "", sp.S.Zero)
        return ClosedDiagonal(fe, sp.S.One, label, rules.tidy(step.result), step)
    except NoRule as exc:
        return NumericalDiagonal(fe, sp.S.One, label, _short(str(exc)))
