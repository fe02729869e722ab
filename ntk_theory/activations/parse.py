"""Turn a library name, a string or a SymPy expression into a checked :class:`Activation`.

A string is either a library name with numeric parameters (``"leaky_relu(1/10)"``, the whole
string) or an expression in ``x``.  Inside an expression a library name is a function of its first
argument, the remaining arguments being its numeric parameters: ``"relu(x)**2"``,
``"gelu(x) + x"``, ``"leaky_relu(2*x, 1/5)"``; ``erf``, ``tanh``, ``sin``, ``cos``, ``exp``, ``abs``
and ``sign`` are SymPy's functions of the same meaning.  ``Piecewise((x, x > 0), (0, True))``,
``Heaviside``, ``Max``, ``Min`` and ``Abs`` are accepted as in SymPy.

An activation must be a real function of ``x`` alone, defined (real-valued) on the whole real
line, finite there, and grow slower than ``exp(c x^2)`` for every c > 0 (together with its
derivative): otherwise its Gaussian moments diverge at some variance and the kernel recursions are
undefined.
"""

from __future__ import annotations

import functools
import re

import mpmath
import sympy as sp
from sympy.calculus.singularities import singularities
from sympy.parsing.sympy_parser import parse_expr, standard_transformations

from .activation import Activation, x
from .library import ALIASES, LIBRARY, NAMES, library_activation

# SymPy names a string expression may use.  Anything else is rejected before SymPy parses it.
_SYMPY_NAMES = {
    "x": x,
    **{name: getattr(sp, name) for name in (
        "sin", "cos", "tan", "exp", "log", "sqrt", "erf", "erfc", "tanh", "sinh", "cosh", "atan", "asinh",
        "Abs", "Max", "Min", "Heaviside", "sign", "pi", "E", "Rational", "Piecewise", "Integer", "Float",
        "Symbol", "Function", "And", "Or", "Not",
    )},
    "abs": sp.Abs,
    "max": sp.Max,
    "min": sp.Min,
    "e": sp.E,
    "True": sp.true,
    "False": sp.false,
}
_IDENT = re.compile(r"[A-Za-z_]\w*")
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?\d+\s*/\s*\d+\s*$")


class DivergentExpectation(ValueError):
    """A Gaussian expectation that does not exist (the integrand grows too fast or is singular).

    A :class:`ValueError`; :func:`checked` raises it for activations whose square grows like exp(x^2) or
    faster, for which the NNGP integral diverges.

    Examples
    --------
    >>> from ntk_theory.activations import DivergentExpectation, activation
    >>> try:
    ...     activation("exp(x**2)")
    ... except DivergentExpectation as error:
    ...     print(isinstance(error, ValueError))
    True
    """


class UndefinedActivation(ValueError):
    """An activation that is not real-valued on part of the real line (``sqrt(x)`` for x < 0)."""


class _LibraryFunction:
    """A library name used as a function inside an expression: ``name(arg, *params)`` is the library
    activation ``name`` with exact numeric parameters ``params``, evaluated at ``arg``."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, arg, *params):
        bad = [p for p in params if not (isinstance(p, sp.Basic) and p.is_number and p.is_real)]
        if bad or not isinstance(arg, sp.Basic):
            raise _ExpressionError(
                f"{self.name}(arg, p1, ...) inside an expression takes an expression in x and numeric parameters; "
                f"got {self.name}({', '.join(map(str, (arg, *params)))})"
            )
        exact = tuple(sp.nsimplify(p, rational=True) if isinstance(p, sp.Float) else p for p in params)
        try:
            return library_activation(self.name, *exact).expr.subs(x, arg)
        except ValueError as exc:
            raise _ExpressionError(str(exc)) from None


class _ExpressionError(ValueError):
    """A clear error raised while SymPy evaluates a parsed string (passed through unchanged)."""


_ALLOWED = {
    **{name: _LibraryFunction(name) for name in (*LIBRARY, *ALIASES)},
    **_SYMPY_NAMES,  # erf, tanh, sin, cos, exp, abs, sign: SymPy's functions (same meaning as the library's)
}


@functools.singledispatch
def activation(spec) -> Activation:
    """An :class:`Activation` from a library name (``"relu"``, ``"leaky_relu(1/10)"``), a string
    expression in x (``"x*erf(x)"``, ``"relu(x)**2"``), a SymPy expression in x, or an Activation.

    Parameters
    ----------
    spec : str, sympy.Expr or Activation
        A library name (:data:`NAMES`, aliases, parameters as exact numbers ``2``, ``0.1``, ``1/10``), an
        expression in x with SymPy's functions and the library's names as functions, a SymPy expression in
        one variable (renamed to x), or an activation (returned as is).

    Returns
    -------
    Activation
        Validated by :func:`checked`.

    Raises
    ------
    ValueError
        If the text names nothing known or does not parse, the expression has more than one variable, or
        :func:`checked` rejects it (:class:`DivergentExpectation` among them).

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from ntk_theory.activations import activation, x
    >>> activation("leaky_relu(1/10)").expr.subs(x, -3)
    -3/10
    >>> act = activation("relu(x)**2 + tanh(x)")
    >>> z = np.array([-1.0, 2.0])
    >>> bool(np.allclose(act.numpy(z), np.maximum(z, 0)**2 + np.tanh(z), rtol=1e-15))
    True
    >>> activation(sp.Symbol("t")**3) == activation("x**3")
    True
    """
    raise ValueError(f"cannot make an activation from {spec!r} (a {type(spec).__name__})")


@activation.register
def _(spec: Activation) -> Activation:
    return spec


# reference.activations parses names alike, deliberately apart: the reference stays independent of this layer.
@activation.register
def _(spec: str) -> Activation:
    text = spec.strip()
    m = re.fullmatch(r"([A-Za-z_]\w*)\s*(?:\((.*)\))?", text)
    if m and (m.group(1) in LIBRARY or m.group(1) in ALIASES):
        args = m.group(2)
        if args is None or all(_NUMBER.match(p) for p in args.split(",") if p.strip()):
            params = _parse_params(args, text) if args is not None else ()
            return checked(library_activation(m.group(1), *params))
    return checked(Activation(text, _parse_expression(text)))


@activation.register
def _(spec: sp.Basic) -> Activation:
    expr = sp.sympify(spec)
    free = expr.free_symbols
    if len(free) > 1:
        raise ValueError(f"an activation is a function of one variable; {expr} has free symbols {sorted(map(str, free))}")
    if free and free != {x}:
        (var,) = free
        expr = expr.subs(var, x)
    return checked(Activation(sp.sstr(expr), expr))


def _parse_params(text: str, whole: str) -> tuple:
    parts = [p for p in text.split(",") if p.strip()]
    for p in parts:
        if not _NUMBER.match(p):
            raise ValueError(f"parameters of {whole!r} must be numbers like 2, 0.1 or 1/10; got {p.strip()!r}")
    return tuple(sp.nsimplify(sp.sympify(p.strip()), rational=True) for p in parts)


def _parse_expression(text: str) -> sp.Expr:
    unknown = sorted({name for name in _IDENT.findall(text) if name not in _ALLOWED})
    if unknown:
        raise ValueError(
            f"unknown activation {text!r}: not a library name ({', '.join(NAMES)}) and not an expression "
            f"in x (unknown names: {', '.join(unknown)})"
        )
    try:
        expr = parse_expr(text, local_dict=dict(_ALLOWED), global_dict={"__builtins__": {}, **_ALLOWED},
                          transformations=standard_transformations)
    except _ExpressionError as exc:
        raise ValueError(f"cannot parse activation {text!r}: {exc}") from None
    except Exception as exc:  # SyntaxError, TypeError, TokenError ...: all mean "not a SymPy expression"
        raise ValueError(f"cannot parse activation {text!r} as a SymPy expression in x: {exc}") from None
    if isinstance(expr, _LibraryFunction):
        raise ValueError(f"activation {text!r}: write {text}(x) inside an expression, or {text!r} alone")
    if not isinstance(expr, sp.Expr):
        raise ValueError(f"activation {text!r} is not an expression in x")
    return expr


def checked(act: Activation) -> Activation:
    """Validate an activation: one variable x, real-valued and finite on the reals, sub-Gaussian-squared growth.

    Parameters
    ----------
    act : Activation
        The activation.

    Returns
    -------
    Activation
        ``act`` itself, when valid.

    Raises
    ------
    ValueError
        If ``act`` has another free symbol, is undefined, complex or infinite somewhere on the reals;
        :class:`DivergentExpectation` if s or s' grows so fast that a Gaussian expectation of its square
        diverges.

    Examples
    --------
    >>> import sympy as sp
    >>> from ntk_theory.activations import Activation, checked, x
    >>> checked(Activation("cube", x**3)).name
    'cube'
    >>> checked(Activation("root", sp.sqrt(x)))
    Traceback (most recent call last):
    ...
    ntk_theory.activations.parse.UndefinedActivation: ...
    """
    expr = act.expr
    if expr.free_symbols - {x}:
        raise ValueError(f"activation {act.name!r} has free symbols other than x: {expr.free_symbols - {x}}")
    _check_defined_on_reals(act)
    if expr.has(sp.I) and sp.im(expr.subs(x, sp.Rational(3, 7))) != 0:
        raise ValueError(f"activation {act.name!r} is not real-valued")
    _check_finite_on_reals(act)
    for label, e in (("s", expr), ("s'", act.derivative())):
        _check_growth(act.name, label, e)
    return act


# ---------------------------------------------------------------------- real domain
# Where a function is not real-valued, by the type of the SymPy node: node -> set of real x
# (inside the region where that node is evaluated) on which it is undefined.
def _where(condition, region: sp.Set) -> sp.Set:
    try:
        found = sp.solve_univariate_inequality(condition, x, relational=False, domain=sp.S.Reals)
    except (NotImplementedError, TypeError, ValueError):
        return _sampled_where(condition, region)
    return found.intersect(region)


def _sampled_where(condition, region: sp.Set) -> sp.Set:
    """Fallback when SymPy cannot solve the inequality: the grid points of [-50, 50] where it holds."""
    f = sp.lambdify(x, condition, modules="mpmath")
    grid = [sp.Rational(i, 8) for i in range(-400, 401)]
    hits = []
    for p in grid:
        try:
            if region.contains(p) == sp.true and bool(f(mpmath.mpf(p.p) / p.q)):
                hits.append(p)
        except (TypeError, ValueError):
            continue
    return sp.FiniteSet(*hits[:3]) if hits else sp.S.EmptySet


def _integral(e) -> bool:
    return bool(e.is_integer) or (e.is_Number and float(e).is_integer())


def _pow_domain(e: sp.Pow, region):
    base, exp = e.args
    if _integral(exp) or not base.has(x):
        return region if (base.is_negative and exp.has(x)) else sp.S.EmptySet
    return _where(base < 0, region) if (exp.is_number and exp.is_positive) else _where(base <= 0, region)


_DOMAIN_RULES = {
    sp.Pow: _pow_domain,
    sp.log: lambda e, region: _where(e.args[0] <= 0, region),
    sp.asin: lambda e, region: _where(sp.Abs(e.args[0]) > 1, region),
    sp.acos: lambda e, region: _where(sp.Abs(e.args[0]) > 1, region),
    sp.acosh: lambda e, region: _where(e.args[0] < 1, region),
    sp.atanh: lambda e, region: _where(sp.Abs(e.args[0]) >= 1, region),
}


def _domain_rule(node):
    for cls in type(node).__mro__:
        if cls in _DOMAIN_RULES:
            return _DOMAIN_RULES[cls]
    return None


def _piecewise_undefined(node: sp.Piecewise, region: sp.Set) -> tuple[sp.Set, sp.Expr | None]:
    bad, culprit, remaining = sp.S.EmptySet, None, region
    for branch, cond in node.args:
        where = (cond.as_set() if cond.has(x) else (sp.S.Reals if cond == sp.true else sp.S.EmptySet)).intersect(remaining)
        b, c = _undefined(branch, where)
        if b != sp.S.EmptySet and culprit is None:
            culprit = c
        bad, remaining = bad.union(b), remaining - where
    if remaining != sp.S.EmptySet and remaining.is_empty is not True:
        bad, culprit = bad.union(remaining), culprit if culprit is not None else node
    return bad, culprit


def _undefined(node, region: sp.Set) -> tuple[sp.Set, sp.Expr | None]:
    """The real x in ``region`` where ``node`` is not real-valued, and the offending subexpression."""
    if region == sp.S.EmptySet or not isinstance(node, sp.Basic) or not node.has(x):
        return sp.S.EmptySet, None
    if isinstance(node, sp.Piecewise):
        return _piecewise_undefined(node, region)
    bad, culprit = sp.S.EmptySet, None
    for arg in node.args:
        b, c = _undefined(arg, region)
        if b != sp.S.EmptySet:
            bad, culprit = bad.union(b), culprit if culprit is not None else c
    rule = _domain_rule(node)
    if rule is not None:
        b = rule(node, region)
        if b != sp.S.EmptySet and b.is_empty is not True:
            bad, culprit = bad.union(b), culprit if culprit is not None else node
    return bad, culprit


def _check_defined_on_reals(act: Activation) -> None:
    bad, culprit = _undefined(act.expr, sp.S.Reals)
    if bad == sp.S.EmptySet or bad.is_empty is True:
        return
    if isinstance(bad, sp.FiniteSet):
        where = "at x = " + ", ".join(map(sp.sstr, bad.args))
    else:
        try:
            where = "for " + sp.sstr(bad.as_relational(x))
        except (NotImplementedError, TypeError, AttributeError):
            where = f"on {bad}"
    what = "no branch of the Piecewise applies" if isinstance(culprit, sp.Piecewise) else f"{sp.sstr(culprit)} is not real there"
    raise UndefinedActivation(f"activation {act.name!r} is not defined {where}: {what}")


def _check_finite_on_reals(act: Activation) -> None:
    if act.kinks:  # piecewise expressions: check each branch's sample values instead
        return
    try:
        sing = singularities(act.expr, x, sp.S.Reals)
    except (NotImplementedError, TypeError, ValueError, AttributeError):
        return
    if sing not in (sp.S.EmptySet,) and sing.is_empty is False:
        raise DivergentExpectation(
            f"activation {act.name!r} is singular at real points {sing}: its Gaussian expectations diverge"
        )


def _check_growth(name: str, label: str, expr: sp.Expr) -> None:
    """Reject growth like exp(c x^2): log|f(x)| / x^2 must decrease towards 0 as |x| grows."""
    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    f = sp.lambdify(x, expr, modules="mpmath")
    with mpmath.workdps(30):
        _check_growth_rates(name, label, expr, f)


def _check_growth_rates(name, label, expr, f) -> None:
    try:
        for sign in (1, -1):
            rates = []
            for r in (40, 160):
                val = mpmath.mpf(abs(f(mpmath.mpf(sign * r))))
                if not mpmath.isfinite(val):
                    raise DivergentExpectation(
                        f"Gaussian moments of {label} = {expr} diverge: it is not finite at x = {sign * r}"
                    )
                rates.append(mpmath.log(val) / r**2 if val > 0 else mpmath.mpf(0))
            if rates[1] > 1e-3 and rates[1] > 0.5 * rates[0]:
                raise DivergentExpectation(
                    f"Gaussian moments of activation {name!r} diverge: {label} = {expr} grows like "
                    f"exp(c x^2) (log|{label}(x)|/x^2 ~ {float(rates[1]):.3g} at |x| = 160); "
                    "E[f(u)^2] is infinite for variances above 1/(4c)"
                )
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        if isinstance(exc, DivergentExpectation):
            raise
        raise ValueError(f"cannot evaluate activation {name!r} numerically: {exc}") from None
