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
from ..numerics.onepoint import ORDERS
from . import rules
from .atoms import Delta, NoRule, combination_derivative, decompose, product
from .derivation import Step
from .display import display_latex, display_text
from .stable import lambdify_form, stable_form
from .symbols import k, k11, k12, k22

ARGS = (k11, k22, k12)
#: derivatives of one-input closed forms with more operations than this are not simplified (sp.simplify's
#: cost grows steeply with size; GELU's run to hundreds of operations and gain nothing)
_SIMPLIFY_MAX_OPS = 120


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
    def diagonal(self):
        """E[f(u) g(u)], u ~ N(0, k): the two-variable form at k11 = k22 = k12 = k, or one-variable rules,
        else quadrature (:class:`NumericalDiagonal`)."""
        try:
            return diagonal_expectation(self._atoms, self.f, self.g, self.label, self.expr)
        except NoRule as exc:
            return NumericalDiagonal(self.f, self.g, self.label, _short(str(exc)))

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

    # display methods alike in shape to activations.Activation's: each class displays itself
    def latex(self) -> str:
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'v')}\right]\ \text{{(numerical quadrature)}}"

    def text(self) -> str:
        return f"E[{self.label}(u) {self.label}(v)]: {self.source}; {self.reason}"

    def __repr__(self) -> str:
        return f"NumericalExpectation(E[{sp.sstr(self.f)} {sp.sstr(self.g)}]; {self.source})"


class ClosedDiagonal(GaussianExpectation):
    """E[f(u) g(u)], u ~ N(0, k), in closed form; its k-derivatives are SymPy derivatives of it (exact,
    including the Dirac-delta contributions of kinks that a differentiated closed form carries)."""

    is_closed_form = True

    def __init__(self, f, g, label, expr: sp.Expr, derivation: Step):
        self.f, self.g, self.label, self.expr, self.derivation = f, g, label, expr, derivation
        self._built: dict = {}  # (kind, order) -> derivative expression or its evaluator

    @property
    def rules(self):
        return self.derivation.rules() - {"linearity"}

    @property
    def source(self) -> str:
        if self.derivation.rule == "diagonal":
            return "the two-variable closed form at k11 = k22 = k12 = k"
        return "derived by rules: " + ", ".join(sorted(self.rules))

    def derivative(self, order: int = 0) -> sp.Expr:
        """d^order/dk^order of the closed form."""
        return self._memo("expr", order, lambda: sp.diff(self.expr, k, order) if order else self.expr)

    def _memo(self, kind: str, order: int, build):
        key = (kind, _order(order))
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def _float64(self, order: int):
        """The derivative's stable form, simplified first where that shortens it (d/dk of erf's
        asin(2k / (1 + 2k)) carries sqrt(1 - (2k / (1 + 2k))^2), which cancels to 1e-13 at k = 1e3; simplified,
        4 / (pi (1 + 2k) sqrt(1 + 4k)) keeps full precision); kept on disk."""
        def compute():
            d = self.derivative(order)
            if order and sp.count_ops(d) <= _SIMPLIFY_MAX_OPS:
                short = sp.simplify(d)
                d = short if sp.count_ops(short) < sp.count_ops(d) else d
            return stable_form(d)

        def build():
            return lambdify_form((k,), diskcache.memo("diagonal", f"{order}|{sp.srepr(self.expr)}", compute))

        return self._memo("float64", order, build)

    def _mpmath(self, order: int):
        return self._memo("mpmath", order, lambda: sp.lambdify((k,), self.derivative(order), modules="mpmath"))

    def evaluate(self, kk, with_error: bool = False, order: int = 0):
        """d^order E[f g] / dk^order at an array of variances, float64, by the closed form's stable
        rewriting (:func:`ntk_theory.gaussian.stable.lambdify`); ``with_error``: (values, None)."""
        kk = np.asarray(kk, dtype=float)
        v = self._float64(_order(order))(kk)
        v = np.broadcast_to(np.asarray(np.real(v) if np.iscomplexobj(v) else v, dtype=float), kk.shape).copy()
        return (v, None) if with_error else v

    def __call__(self, kk):
        return self.evaluate(kk)

    def evaluate_mp(self, kk, dps: int = 30, order: int = 0):
        """The same in mpmath to about ``dps`` digits, rounded to the caller's precision: evaluated with
        g = 10, 20, 40, ... guard digits until two successive values agree to 10^-(dps+3) relative
        (closed forms such as ELU's exp(2k) erfc(sqrt(2k)) cancel about log10 exp(2k) digits)."""
        f, kk = self._mpmath(_order(order)), mpmath.mpf(kk)
        guard = 10
        with mpmath.workdps(dps + guard):
            previous = mpmath.re(f(kk))
        while guard < 1280:
            guard *= 2
            with mpmath.workdps(dps + guard):
                v = mpmath.re(f(kk))
                if abs(v - previous) <= mpmath.mpf(10) ** (-dps - 3) * abs(v):
                    break
                previous = v
        return +v

    def latex(self) -> str:
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'u')}\right] = {display_latex(self.expr)}"

    def __repr__(self) -> str:
        return f"ClosedDiagonal(E[f(u) g(u)] = {display_text(self.expr)}; {self.source})"


class NumericalDiagonal(GaussianExpectation):
    """E[f(u) g(u)], u ~ N(0, k), and its k-derivatives by one-dimensional quadrature of h = f g split at
    the kinks (:mod:`ntk_theory.numerics.onepoint`: the first derivative in Stein's form <u h'(u)> / (2 k)
    when h is continuous, else and for the second by differentiating the Gaussian density)."""

    is_closed_form = False

    def __init__(self, f, g, label, reason):
        self.f, self.g, self.label, self.reason = f, g, label, reason
        self.kinks = tuple(sorted(set(_kinks(f)) | set(_kinks(g))))

    @property
    def source(self) -> str:
        return "numerical quadrature (no closed form derived)"

    @functools.cached_property
    def _integrand(self) -> sp.Expr:
        return drop_deltas(self.f * self.g)

    @functools.cached_property
    def _callable(self):
        return _overflow_safe(self._integrand)

    @functools.cached_property
    def _continuous(self) -> bool:
        """h = f g has no jump at its kinks (then its a.e. derivative gives Stein's form of d/dk)."""
        h = self._callable
        return not any(jumps_at(h, c) for c in self.kinks)

    @functools.cached_property
    def _derivative(self):
        return _overflow_safe(drop_deltas(sp.diff(self._integrand, x))) if self._continuous else None

    @functools.cached_property
    def _mp_callables(self):
        h = self._integrand
        dh = sp.lambdify(x, drop_deltas(sp.diff(h, x)), modules="mpmath") if self._continuous else None
        return sp.lambdify(x, h, modules="mpmath"), dh

    def evaluate(self, kk, with_error: bool = False, order: int = 0):
        """d^order E[f g] / dk^order at an array of variances (k >= 0 for order 0, k > 0 for the
        derivatives), float64; ``with_error``: (values, quadrature error estimates)."""
        from ..numerics.onepoint import average

        kk = np.asarray(kk, dtype=float)
        dh = self._derivative if order == 1 else None
        results = [average(self._callable, float(v), order, dg=dh, kinks=self.kinks) for v in kk.ravel()]
        values = np.array([r.value for r in results]).reshape(kk.shape)
        errors = np.array([r.error for r in results]).reshape(kk.shape)
        return (values, errors) if with_error else values

    def __call__(self, kk):
        return self.evaluate(kk)

    def evaluate_mp(self, kk, dps: int = 30, order: int = 0):
        """The same in mpmath at about ``dps`` digits (:func:`ntk_theory.numerics.onepoint.average_mp`)."""
        from ..numerics.onepoint import average_mp

        h, dh = self._mp_callables
        value, _ = average_mp(h, kk, order, dg=dh if order == 1 else None, kinks=self.kinks, dps=dps)
        return value

    def latex(self) -> str:
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'u')}\right]\ \text{{(numerical quadrature)}}"

    def __repr__(self) -> str:
        return f"NumericalDiagonal(E[{sp.sstr(self.f * self.g)}]; {self.source})"


def _overflow_safe(expr: sp.Expr):
    """A vectorised NumPy function of expr in x whose non-finite values (intermediate overflow, e.g.
    exp(-x) / (1 + exp(-x))^2 = inf / inf far out on the tails) are recomputed in 30-digit mpmath; a
    value that is not finite there either stays so (and the quadrature refuses it)."""
    fn, fmp = lambdify_numpy(expr), None

    def h(z):
        nonlocal fmp
        v = fn(z)
        bad = ~np.isfinite(v)
        if bad.any():
            fmp = fmp or sp.lambdify(x, expr, modules="mpmath")
            v = np.array(v, dtype=float)
            with mpmath.workdps(30):
                v[bad] = [float(mpmath.re(fmp(mpmath.mpf(float(t))))) for t in np.broadcast_to(z, v.shape)[bad]]
        return v

    return h


def _order(order) -> int:
    if order not in ORDERS:
        raise ValueError(f"the order of the variance derivative must be one of {ORDERS}; got {order!r}")
    return int(order)


def jumps_at(h, c: float) -> bool:
    """The NumPy function h jumps at c: |h(c + eps) - h(c - eps)| > 1e-6 at eps = 1e-9 max(1, |c|)."""
    eps = 1e-9 * max(1.0, abs(c))
    with np.errstate(all="ignore"):
        return abs(float(h(np.array(c + eps))) - float(h(np.array(c - eps)))) > 1e-6


def _latex_fn(expr: sp.Expr, var: str) -> str:
    return sp.latex(expr.subs(x, sp.Symbol(var)))


def _kinks(expr) -> tuple:
    from ..activations.activation import kinks_of

    return kinks_of(expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero))


# --------------------------------------------------------------------------- entry points
@functools.lru_cache(maxsize=256)
def _derive(A, B) -> Step:
    """The rules' derivation of E[A(u) B(v)], kept on disk (:func:`ntk_theory.diskcache.memo`) under
    the atoms and the code's fingerprint: every later process reads a derivation back instead of
    redoing the SymPy work.  Failures (NoRule) are kept too."""
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
