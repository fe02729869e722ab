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
from ..docstrings import RETURNS_TEXT, filled
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


# the Parameters/Returns sections the expectation classes' methods share, written once (ntk_theory.docstrings)
_DOCS = dict(
    functions="""f, g : sympy.Expr
    The functions of u and v, expressions in x.
label : str
    Their display name.""",
    diagonal_functions="""f, g : sympy.Expr
    The functions, expressions in x.
label : str
    Their display name.""",
    covariance_mp="""Parameters
----------
k11, k22, k12 : str, float or mpmath.mpf
    The covariance.
dps : int, default 30
    Decimal digits of the evaluation.

Returns
-------
mpmath.mpf""",
    variance_mp="""Parameters
----------
kk : str, float or mpmath.mpf
    The variance.
dps : int, default 30
    Decimal digits.
order : {0, 1, 2}, default 0
    The order of the k-derivative.

Returns
-------
mpmath.mpf""",
    returns_text="""Returns
-------
str

Examples
--------
>>> from ntk_theory.gaussian import expectation""",
    example="""Examples
--------
>>> from ntk_theory.gaussian import expectation""",
)


class GaussianExpectation:
    """Common interface of closed-form and numerical expectations E[f(u) g(v)].

    Subclasses set ``f``, ``g`` (SymPy expressions in x), ``label``, ``is_closed_form`` and implement
    ``evaluate``, ``evaluate_mp`` and ``latex``; calling the object evaluates it.

    Examples
    --------
    >>> from ntk_theory.gaussian import GaussianExpectation, expectation
    >>> e = expectation("relu")
    >>> isinstance(e, GaussianExpectation), e.is_closed_form, float(e(1.0, 1.0, 1.0))   # <relu(u)^2> = k/2
    (True, True, 0.5)
    """

    f: sp.Expr
    g: sp.Expr
    label: str
    is_closed_form: bool

    def __call__(self, k11, k22, k12):
        return self.evaluate(k11, k22, k12)

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"


@filled(**_DOCS)
class ClosedForm(GaussianExpectation):
    """A closed form ``expr(k11, k22, k12)`` with the derivation that produced it.

    Made by :func:`expectation` (not constructed directly).

    Parameters
    ----------
    %(functions)s
    derivation : Step
        The rules' derivation; its ``result`` is ``expr``.
    atoms : tuple or None, default None
        The atom decompositions of f and g (for the diagonal).

    Examples
    --------
    ReLU's closed form is the arc-cosine kernel:

    >>> import numpy as np
    >>> from ntk_theory.gaussian import expectation
    >>> def arccos1(k11, k22, k12):      # Cho and Saul's degree-1 arc-cosine kernel / 2
    ...     t = np.arccos(k12 / np.sqrt(k11 * k22))
    ...     return np.sqrt(k11 * k22) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    >>> e = expectation("relu")
    >>> type(e).__name__, sorted(e.rules)
    ('ClosedForm', ['dirac_delta', 'half_line', 'price'])
    >>> bool(np.isclose(e.evaluate(1.0, 2.0, 0.5), arccos1(1.0, 2.0, 0.5), rtol=1e-14))
    True
    """

    is_closed_form = True

    def __init__(self, f: sp.Expr, g: sp.Expr, label: str, derivation: Step, atoms=None):
        self.f, self.g, self.label, self.derivation = f, g, label, derivation
        self.expr: sp.Expr = derivation.result
        self._atoms = atoms

    @property
    @filled(**_DOCS)
    def rules(self) -> set[str]:
        """The rules used anywhere in the derivation.

        %(example)s
        >>> sorted(expectation("relu").rules)
        ['dirac_delta', 'half_line', 'price']
        """
        return self.derivation.rules() - {"linearity"}

    @property
    @filled(**_DOCS)
    def source(self) -> str:
        """How the expression was obtained, as text.

        %(example)s
        >>> expectation("relu").source
        'derived by rules: dirac_delta, half_line, price'
        """
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
        """Float64, vectorised over arrays of covariances.

        Parameters
        ----------
        k11, k22, k12 : array_like
            Var u, Var v and Cov(u, v) (broadcast together), a positive semi-definite covariance.

        Returns
        -------
        numpy.ndarray
            E[f(u) g(v)], float64, of the broadcast shape (the closed form's rounding error only).

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.gaussian import expectation
        >>> def arccos1(k11, k22, k12):      # Cho and Saul's degree-1 arc-cosine kernel / 2
        ...     t = np.arccos(k12 / np.sqrt(k11 * k22))
        ...     return np.sqrt(k11 * k22) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        >>> k12 = np.array([-0.9, 0.0, 0.5, 1.2])
        >>> bool(np.allclose(expectation("relu").evaluate(1.0, 2.0, k12), arccos1(1.0, 2.0, k12), rtol=1e-14))
        True
        """
        with np.errstate(invalid="ignore"):
            return np.asarray(self._numpy(*np.broadcast_arrays(*map(np.asarray, (k11, k22, k12)))), dtype=float)

    @filled(**_DOCS)
    def evaluate_mp(self, k11, k22, k12, dps: int = 30):
        """mpmath at ``dps`` digits (arguments converted from strings/floats exactly).

        %(covariance_mp)s

        Examples
        --------
        <relu(u) relu(v)> at orthogonal inputs is sqrt(k11 k22) / (2 pi):

        >>> import mpmath
        >>> from ntk_theory.gaussian import expectation
        >>> v = expectation("relu").evaluate_mp("1", "2", "0", dps=40)
        >>> with mpmath.workdps(40):
        ...     bool(abs(v - mpmath.sqrt(2) / (2 * mpmath.pi)) < mpmath.mpf(10)**-38)
        True
        """
        with mpmath.workdps(dps):
            subs = {a: sp.Float(mpmath.mpf(v), dps) for a, v in zip(ARGS, (k11, k22, k12))}
            return mpmath.mpf(sp.N(self.expr.subs(subs), dps))

    # ------------------------------------------------------------------ display
    @filled(**_DOCS)
    def latex(self) -> str:
        """``E[f(u) g(v)] = expr`` in LaTeX.

        %(returns_text)s
        >>> text = expectation("relu").latex()
        >>> text.startswith("E"), "asin" in text or "arcsin" in text
        (True, True)
        """
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'v')}\right] = {display_latex(self.expr)}"

    @filled(**_DOCS)
    def text(self) -> str:
        """The closed form, its source and the derivation step by step, as plain text.

        %(returns_text)s
        >>> print(expectation("relu").text().splitlines()[1])
          derived by rules: dirac_delta, half_line, price
        """
        return f"E[{self.label}(u) {self.label}(v)] = {display_text(self.expr)}\n  {self.source}\n" + self.derivation.text()

    def __repr__(self) -> str:
        return f"ClosedForm(E[f(u) g(v)] = {display_text(self.expr)}; {self.source})"

    def _repr_latex_(self) -> str:
        return "$" + self.latex() + r"\\" + self.derivation.latex(max_depth=3) + "$"


@filled(**_DOCS)
class NumericalExpectation(GaussianExpectation):
    """No closed form was derived: numerical quadrature with an error estimate.

    Made by :func:`expectation` when no rule applies; ``reason`` says why.

    Parameters
    ----------
    %(functions)s
    reason : str
        Why no closed form was derived.
    atoms : tuple or None, default None
        The atom decompositions of f and g, if any.

    Raises
    ------
    DivergentExpectation
        If f or g carries a Dirac delta (no quadrature of it).

    Examples
    --------
    >>> from ntk_theory.gaussian import expectation
    >>> e = expectation("tanh")
    >>> type(e).__name__, e.is_closed_form, e.source
    ('NumericalExpectation', False, 'numerical quadrature (no closed form derived)')
    """

    is_closed_form = False

    def __init__(self, f: sp.Expr, g: sp.Expr, label: str, reason: str, atoms=None):
        if f.has(sp.DiracDelta) or g.has(sp.DiracDelta):
            raise DivergentExpectation(f"no closed form for E[{label}] and its integrand has a Dirac delta: {reason}")
        self.f, self.g, self.label, self.reason = f, g, label, reason
        self._atoms = atoms
        self.kinks_f = _kinks(f)
        self.kinks_g = _kinks(g)

    @property
    @filled(**_DOCS)
    def source(self) -> str:
        """How the value is obtained, as text.

        %(example)s
        >>> expectation("tanh").source
        'numerical quadrature (no closed form derived)'
        """
        return "numerical quadrature (no closed form derived)"

    @functools.cached_property
    def _callables(self):
        return lambdify_numpy(drop_deltas(self.f)), lambdify_numpy(drop_deltas(self.g))

    def evaluate(self, k11, k22, k12, with_error: bool = False):
        """E[f(u) g(v)] by two-dimensional Gauss-Hermite-type quadrature split at the kinks, float64.

        Parameters
        ----------
        k11, k22, k12 : array_like
            Var u, Var v and Cov(u, v) (broadcast together).
        with_error : bool, default False
            Also return the quadrature's error estimates.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            The values, or ``(values, errors)``.

        Examples
        --------
        <tanh(u) tanh(v)> against scipy's two-dimensional quadrature (v = rho u + sqrt(1 - rho^2) w):

        >>> import numpy as np
        >>> from scipy import integrate
        >>> from ntk_theory.gaussian import expectation
        >>> value, error = expectation("tanh").evaluate(1.0, 1.0, 0.5, with_error=True)
        >>> r = 0.5
        >>> q, q_error = integrate.dblquad(lambda w, u: np.tanh(u) * np.tanh(r * u + np.sqrt(1 - r**2) * w)
        ...                                * np.exp(-(u * u + w * w) / 2) / (2 * np.pi), -9, 9, -9, 9, epsabs=1e-12)
        >>> bool(abs(value - q) < 1e-9), bool(error < 1e-10)
        (True, True)
        """
        from ..numerics.quadrature_batch import expect2_vectorized

        f, g = self._callables
        values, errors = expect2_vectorized(
            f, g, *np.broadcast_arrays(*map(np.asarray, (k11, k22, k12))), kinks_f=self.kinks_f, kinks_g=self.kinks_g
        )
        return (values, errors) if with_error else values

    @filled(**_DOCS)
    def evaluate_mp(self, k11, k22, k12, dps: int = 30):
        """The same in mpmath at about ``dps`` digits (:func:`ntk_theory.numerics.quadrature_mp.expect2_mp`;
        seconds per value).

        %(covariance_mp)s
        """
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

    # latex and text alike in frame (one shared docstring section, one-line bodies): each displays one form
    @filled(**_DOCS)
    def latex(self) -> str:
        """``E[f(u) g(v)] (numerical quadrature)`` in LaTeX.

        %(returns_text)s
        >>> expectation("tanh").latex().endswith("(numerical quadrature)}")
        True
        """
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'v')}\right]\ \text{{(numerical quadrature)}}"

    @filled(**_DOCS)
    def text(self) -> str:
        """The source and the reason no closed form was derived, as plain text.

        %(returns_text)s
        >>> expectation("tanh").text().startswith("E[tanh(u) tanh(v)]: numerical quadrature")
        True
        """
        return f"E[{self.label}(u) {self.label}(v)]: {self.source}; {self.reason}"

    def __repr__(self) -> str:
        return f"NumericalExpectation(E[{sp.sstr(self.f)} {sp.sstr(self.g)}]; {self.source})"


@filled(**_DOCS)
class ClosedDiagonal(GaussianExpectation):
    """E[f(u) g(u)], u ~ N(0, k), in closed form; its k-derivatives are SymPy derivatives of it (exact,
    including the Dirac-delta contributions of kinks that a differentiated closed form carries).

    Made by :func:`expectation1` and by a two-variable expectation's ``diagonal``.

    Parameters
    ----------
    %(diagonal_functions)s
    expr : sympy.Expr
        The closed form in :data:`k`.
    derivation : Step
        How it was derived.

    Examples
    --------
    <erf(u)^2> = (2 / pi) arcsin(2k / (1 + 2k)):

    >>> import numpy as np
    >>> from ntk_theory.gaussian import expectation
    >>> d = expectation("erf").diagonal
    >>> type(d).__name__, d.source
    ('ClosedDiagonal', 'the two-variable closed form at k11 = k22 = k12 = k')
    >>> kk = np.array([0.1, 1.0, 10.0])
    >>> bool(np.allclose(d.evaluate(kk), 2 / np.pi * np.arcsin(2 * kk / (1 + 2 * kk)), rtol=1e-14))
    True
    """

    is_closed_form = True

    def __init__(self, f, g, label, expr: sp.Expr, derivation: Step):
        self.f, self.g, self.label, self.expr, self.derivation = f, g, label, expr, derivation
        self._built: dict = {}  # (kind, order) -> derivative expression or its evaluator

    @property
    def rules(self):
        """The rules used anywhere in the derivation.

        Examples
        --------
        >>> from ntk_theory.gaussian import expectation, expectation1
        >>> expectation("relu").diagonal.rules, sorted(expectation1("relu").rules)
        ({'diagonal'}, ['half_line'])
        """
        return self.derivation.rules() - {"linearity"}

    @property
    def source(self) -> str:
        """How the expression was obtained, as text.

        Examples
        --------
        >>> from ntk_theory.gaussian import expectation1
        >>> expectation1("relu").source
        'derived by rules: half_line'
        """
        if self.derivation.rule == "diagonal":
            return "the two-variable closed form at k11 = k22 = k12 = k"
        return "derived by rules: " + ", ".join(sorted(self.rules))

    def derivative(self, order: int = 0) -> sp.Expr:
        """d^order/dk^order of the closed form.

        Parameters
        ----------
        order : {0, 1, 2}, default 0
            The order in k.

        Returns
        -------
        sympy.Expr
            An expression in :data:`k`.

        Raises
        ------
        ValueError
            If ``order`` is not 0, 1 or 2.

        Examples
        --------
        >>> import sympy as sp
        >>> from ntk_theory.gaussian import expectation1, k
        >>> d = expectation1("relu")        # <relu(u)> = sqrt(k / (2 pi))
        >>> sp.simplify(d.derivative(1) - sp.diff(sp.sqrt(k / (2 * sp.pi)), k))
        0
        """
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
        rewriting (:func:`ntk_theory.gaussian.stable.lambdify`); ``with_error``: (values, None).

        Parameters
        ----------
        kk : array_like
            Variances k >= 0.
        with_error : bool, default False
            Return ``(values, None)`` (a closed form has no quadrature error).
        order : {0, 1, 2}, default 0
            The order of the k-derivative.

        Returns
        -------
        numpy.ndarray or tuple
            Float64 values of ``kk``'s shape, or ``(values, None)``.

        Examples
        --------
        d/dk <erf(u)^2> = 4 / (pi (1 + 2k) sqrt(1 + 4k)), against a central finite difference too:

        >>> import numpy as np
        >>> from ntk_theory.gaussian import expectation
        >>> d = expectation("erf").diagonal
        >>> kk = np.array([0.5, 1e3])
        >>> bool(np.allclose(d.evaluate(kk, order=1), 4 / (np.pi * (1 + 2 * kk) * np.sqrt(1 + 4 * kk)), rtol=1e-13))
        True
        >>> h = 1e-5
        >>> fd = (d.evaluate(0.5 + h) - d.evaluate(0.5 - h)) / (2 * h)
        >>> bool(np.isclose(d.evaluate(0.5, order=1), fd, rtol=1e-8))
        True
        """
        kk = np.asarray(kk, dtype=float)
        v = self._float64(_order(order))(kk)
        v = np.broadcast_to(np.asarray(np.real(v) if np.iscomplexobj(v) else v, dtype=float), kk.shape).copy()
        return (v, None) if with_error else v

    def __call__(self, kk):
        return self.evaluate(kk)

    @filled(**_DOCS)
    def evaluate_mp(self, kk, dps: int = 30, order: int = 0):
        """The same in mpmath to about ``dps`` digits, rounded to the caller's precision: evaluated with
        g = 10, 20, 40, ... guard digits until two successive values agree to 10^-(dps+3) relative
        (closed forms such as ELU's exp(2k) erfc(sqrt(2k)) cancel about log10 exp(2k) digits).

        %(variance_mp)s

        Examples
        --------
        >>> import mpmath
        >>> from ntk_theory.gaussian import expectation
        >>> with mpmath.workdps(40):          # the value is rounded to the caller's precision
        ...     v = expectation("erf").diagonal.evaluate_mp("1", dps=40)
        ...     bool(abs(v - 2 / mpmath.pi * mpmath.asin(mpmath.mpf(2) / 3)) < mpmath.mpf(10)**-38)
        True
        """
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

    @filled(returns_text=RETURNS_TEXT)
    def latex(self) -> str:
        """``E[f(u) g(u)] = expr`` in LaTeX.

        %(returns_text)s
        >>> from ntk_theory.gaussian import expectation1
        >>> "pi" in expectation1("relu").latex()
        True
        """
        return rf"E\left[{_latex_fn(self.f, 'u')}\, {_latex_fn(self.g, 'u')}\right] = {display_latex(self.expr)}"

    def __repr__(self) -> str:
        return f"ClosedDiagonal(E[f(u) g(u)] = {display_text(self.expr)}; {self.source})"


@filled(**_DOCS)
class NumericalDiagonal(GaussianExpectation):
    """E[f(u) g(u)], u ~ N(0, k), and its k-derivatives by one-dimensional quadrature of h = f g split at
    the kinks (:mod:`ntk_theory.numerics.onepoint`: the first derivative in Stein's form <u h'(u)> / (2 k)
    when h is continuous, else and for the second by differentiating the Gaussian density).

    Made by :func:`expectation1` and by an expectation's ``diagonal`` when no rule applies.

    Parameters
    ----------
    %(diagonal_functions)s
    reason : str
        Why no closed form was derived.

    Examples
    --------
    <tanh(u)^2> at k = 1 against scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from ntk_theory.gaussian import expectation
    >>> d = expectation("tanh").diagonal
    >>> type(d).__name__
    'NumericalDiagonal'
    >>> q = integrate.quad(lambda z: np.tanh(z)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-14)[0]
    >>> bool(np.isclose(d.evaluate(1.0), q, rtol=1e-12))
    True
    """

    is_closed_form = False

    def __init__(self, f, g, label, reason):
        self.f, self.g, self.label, self.reason = f, g, label, reason
        self.kinks = tuple(sorted(set(_kinks(f)) | set(_kinks(g))))

    @property
    @filled(**_DOCS)
    def source(self) -> str:
        """How the value is obtained, as text.

        %(example)s
        >>> expectation("tanh").diagonal.source
        'numerical quadrature (no closed form derived)'
        """
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
        derivatives), float64; ``with_error``: (values, quadrature error estimates).

        Parameters
        ----------
        kk : array_like
            Variances.
        with_error : bool, default False
            Also return the quadrature's error estimates.
        order : {0, 1, 2}, default 0
            The order of the k-derivative.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            Values of ``kk``'s shape, or ``(values, errors)``.

        Examples
        --------
        d/dk <tanh(u)^2> against a central finite difference of the values:

        >>> import numpy as np
        >>> from ntk_theory.gaussian import expectation
        >>> d = expectation("tanh").diagonal
        >>> value, error = d.evaluate(np.array([1.0]), with_error=True, order=1)
        >>> h = 1e-4
        >>> fd = (d.evaluate(1.0 + h) - d.evaluate(1.0 - h)) / (2 * h)
        >>> bool(np.isclose(value[0], fd, rtol=1e-7)), bool(error[0] < 1e-10)
        (True, True)
        """
        from ..numerics.onepoint import average

        kk = np.asarray(kk, dtype=float)
        dh = self._derivative if order == 1 else None
        results = [average(self._callable, float(v), order, dg=dh, kinks=self.kinks) for v in kk.ravel()]
        values = np.array([r.value for r in results]).reshape(kk.shape)
        errors = np.array([r.error for r in results]).reshape(kk.shape)
        return (values, errors) if with_error else values

    def __call__(self, kk):
        return self.evaluate(kk)

    @filled(**_DOCS)
    def evaluate_mp(self, kk, dps: int = 30, order: int = 0):
        """The same in mpmath at about ``dps`` digits (:func:`ntk_theory.numerics.onepoint.average_mp`).

        %(variance_mp)s

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.gaussian import expectation
        >>> d = expectation("tanh").diagonal
        >>> bool(np.isclose(float(d.evaluate_mp(1.0, dps=20)), d.evaluate(1.0), rtol=1e-13))
        True
        """
        from ..numerics.onepoint import average_mp

        h, dh = self._mp_callables
        value, _ = average_mp(h, kk, order, dg=dh if order == 1 else None, kinks=self.kinks, dps=dps)
        return value

    @filled(**_DOCS)
    def latex(self) -> str:
        """``E[f(u) g(u)] (numerical quadrature)`` in LaTeX.

        %(returns_text)s
        >>> expectation("tanh").diagonal.latex().endswith("(numerical quadrature)}")
        True
        """
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
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"derivative must be an integer >= 0; got {order!r}")
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
    recursion uses.

    Parameters
    ----------
    f : str, sympy.Expr or Activation
        The function of u (as :func:`ntk_theory.activations.activation` reads it; a SymPy expression in x
        is taken as is).
    g : str, sympy.Expr, Activation or None, default None
        The function of v; None: ``f``.
    derivative : int, default 0
        n: the expectation of the n-th derivatives.
    deltas : bool, default True
        Keep the Dirac deltas of distributional derivatives (False: almost-everywhere derivatives).

    Returns
    -------
    GaussianExpectation
        A :class:`ClosedForm` (``expr`` in k11, k22, k12 with its derivation) or a
        :class:`NumericalExpectation` (``reason`` says why).

    Raises
    ------
    ValueError
        If ``f`` or ``g`` is not an activation (:func:`ntk_theory.activations.activation`).

    Examples
    --------
    ReLU: the arc-cosine kernel; its derivative's, <theta(u) theta(v)> = (pi - arccos rho) / (2 pi):

    >>> import numpy as np
    >>> from ntk_theory.gaussian import expectation
    >>> def arccos1(k11, k22, k12):      # Cho and Saul's degree-1 arc-cosine kernel / 2
    ...     t = np.arccos(k12 / np.sqrt(k11 * k22))
    ...     return np.sqrt(k11 * k22) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    >>> bool(np.isclose(expectation("relu")(1.0, 2.0, 0.5), arccos1(1.0, 2.0, 0.5), rtol=1e-14))
    True
    >>> rho = 0.5 / np.sqrt(2.0)
    >>> bool(np.isclose(expectation("relu", derivative=1)(1.0, 2.0, 0.5), (np.pi - np.arccos(rho)) / (2 * np.pi)))
    True
    >>> expectation("sign", derivative=1, deltas=False).expr     # sign' = 0 almost everywhere
    0
    """
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
    """E[f^(n)(u)], u ~ N(0, k): a closed form in k by the one-variable rules, else quadrature.

    Parameters
    ----------
    f : str, sympy.Expr or Activation
        The function (a SymPy expression in x is taken as is).
    derivative : int, default 0
        n: the expectation of the n-th (distributional) derivative.

    Returns
    -------
    GaussianExpectation
        A :class:`ClosedDiagonal` (``expr`` in k) or a :class:`NumericalDiagonal`.

    Examples
    --------
    <relu(u)> = sqrt(k / (2 pi)); <relu'(u)> = 1/2; <u^4> = 3 k^2:

    >>> import sympy as sp
    >>> from ntk_theory.gaussian import expectation1, k
    >>> from ntk_theory.activations import x
    >>> sp.simplify(expectation1("relu").expr - sp.sqrt(k / (2 * sp.pi)))
    0
    >>> expectation1("relu", derivative=1).expr, expectation1(x**4).expr
    (1/2, 3*k**2)
    """
    A, fe, label = _atoms_and_expr(f, derivative, deltas=True)
    if isinstance(A, NoRule):
        return NumericalDiagonal(fe, sp.S.One, label, _short(str(A)))
    try:
        step = rules.combination_one(A, k) if A else Step("zero", "", sp.S.Zero)
        return ClosedDiagonal(fe, sp.S.One, label, rules.tidy(step.result), step)
    except NoRule as exc:
        return NumericalDiagonal(fe, sp.S.One, label, _short(str(exc)))
