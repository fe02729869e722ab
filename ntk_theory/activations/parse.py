"""Turn a library name, a string or a SymPy expression into a checked :class:`Activation`.

An activation must be a real function of ``x`` alone, finite on the real line, and grow slower
than ``exp(c x^2)`` for every c > 0 (together with its derivative): otherwise its Gaussian
moments diverge at some variance and the kernel recursions are undefined.
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

# Names a string expression may use.  Anything else is rejected before SymPy parses it.
_ALLOWED = {
    "x": x,
    **{name: getattr(sp, name) for name in (
        "sin", "cos", "tan", "exp", "log", "sqrt", "erf", "erfc", "tanh", "sinh", "cosh", "atan", "asinh",
        "Abs", "Max", "Min", "Heaviside", "sign", "pi", "E", "Rational", "Piecewise", "Integer", "Float",
        "Symbol", "Function",
    )},
    "abs": sp.Abs,
    "max": sp.Max,
    "min": sp.Min,
    "e": sp.E,
}
_IDENT = re.compile(r"[A-Za-z_]\w*")
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?\d+\s*/\s*\d+\s*$")


class DivergentExpectation(ValueError):
    """A Gaussian expectation that does not exist (the integrand grows too fast or is singular)."""


@functools.singledispatch
def activation(spec) -> Activation:
    """An :class:`Activation` from a library name (``"relu"``, ``"leaky_relu(1/10)"``), a string
    expression in x (``"x*erf(x)"``), a SymPy expression in x, or an Activation."""
    raise ValueError(f"cannot make an activation from {spec!r} (a {type(spec).__name__})")


@activation.register
def _(spec: Activation) -> Activation:
    return spec


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
    except Exception as exc:  # SyntaxError, TypeError, TokenError ...: all mean "not a SymPy expression"
        raise ValueError(f"cannot parse activation {text!r} as a SymPy expression in x: {exc}") from None
    if not isinstance(expr, sp.Expr):
        raise ValueError(f"activation {text!r} is not an expression in x")
    return expr


def checked(act: Activation) -> Activation:
    """Validate an activation: one variable x, finite on the reals, sub-Gaussian-squared growth."""
    expr = act.expr
    if expr.free_symbols - {x}:
        raise ValueError(f"activation {act.name!r} has free symbols other than x: {expr.free_symbols - {x}}")
    if expr.has(sp.I) and sp.im(expr.subs(x, sp.Rational(3, 7))) != 0:
        raise ValueError(f"activation {act.name!r} is not real-valued")
    _check_finite_on_reals(act)
    for label, e in (("s", expr), ("s'", act.derivative())):
        _check_growth(act.name, label, e)
    return act


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
