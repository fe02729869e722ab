r"""Canonical pieces of a one-variable function, the objects Gaussian-expectation rules act on.

A function of x with a kink or jump at 0 is written as a linear combination of atoms

    Smooth(h)        h(x), analytic on the real line
    Half(h, side)    h(x) theta(side * x), side = +1 or -1 (theta = Heaviside step)
    Delta()          delta(x), the Dirac delta (appears in derivatives of jumps)

with constant coefficients.  Derivatives stay in this algebra:
    Smooth(h)' = Smooth(h'),   Half(h, s)' = Half(h', s) + s h(0) Delta,
and Smooth(h) is further split into additive terms so that each rule sees one simple term.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

from ..activations.activation import _KINK_ATOMS, _pieces, x


class NoRule(Exception):
    """No rule applies: the caller falls back to another rule or to numerical quadrature."""


@dataclass(frozen=True)
class Smooth:
    h: sp.Expr

    def latex(self, var: str = "u") -> str:
        return sp.latex(self.h.subs(x, sp.Symbol(var)))

    def text(self, var: str = "u") -> str:
        return sp.sstr(self.h.subs(x, sp.Symbol(var)))


@dataclass(frozen=True)
class Half:
    h: sp.Expr
    side: int

    def latex(self, var: str = "u") -> str:
        arg = var if self.side > 0 else f"-{var}"
        return rf"\left({sp.latex(self.h.subs(x, sp.Symbol(var)))}\right)\theta({arg})"

    def text(self, var: str = "u") -> str:
        arg = var if self.side > 0 else f"-{var}"
        h = sp.sstr(self.h.subs(x, sp.Symbol(var)))
        return f"theta({arg})" if h == "1" else f"({h}) theta({arg})"


@dataclass(frozen=True)
class Delta:
    def latex(self, var: str = "u") -> str:
        return rf"\delta({var})"

    def text(self, var: str = "u") -> str:
        return f"delta({var})"


Atom = Smooth | Half | Delta
Combination = tuple  # of (coefficient, Atom)


def normalize(comb) -> Combination:
    """Merge identical atoms (summing coefficients) and drop zero terms."""
    merged: dict = {}
    for c, atom in comb:
        merged[atom] = merged.get(atom, sp.S.Zero) + c
    return tuple((c, a) for a, c in merged.items() if sp.simplify(c) != 0)


def _terms(h: sp.Expr) -> list[tuple[sp.Expr, sp.Expr]]:
    """Split h into (constant coefficient, x-dependent factor) additive terms."""
    out = []
    for term in sp.Add.make_args(sp.expand(h, power_exp=False, log=False)):
        coeff, rest = term.as_independent(x, as_Add=False)
        out.append((coeff, rest))
    return out


def _smooth(h: sp.Expr) -> list:
    return [(c, Smooth(rest)) for c, rest in _terms(h) if c != 0]


def _half(h: sp.Expr, side: int) -> list:
    return [(c, Half(rest, side)) for c, rest in _terms(h) if c != 0]


@functools.lru_cache(maxsize=None)
def decompose(expr: sp.Expr) -> Combination:
    """``expr`` (a function of x) as a combination of atoms; NoRule if it has kinks away from 0."""
    expr = sp.sympify(expr)
    if expr.has(sp.DiracDelta):
        raise NoRule("expressions with Dirac deltas are built by differentiation, not given")
    if not expr.has(*_KINK_ATOMS):
        return normalize(_smooth(expr))
    plus, minus = _pieces(expr)
    if plus.has(*_KINK_ATOMS) or minus.has(*_KINK_ATOMS):
        raise NoRule(f"{expr} has kinks away from 0")
    if sp.simplify(plus - minus) == 0:
        return normalize(_smooth(plus))
    # f = f_minus + (f_plus - f_minus) theta(x), choosing the simpler base (e.g. relu: 0 + x theta(x))
    return normalize(_smooth(minus) + _half(sp.expand(plus - minus), +1))


def derivative(atom: Atom) -> Combination:
    """The derivative of one atom as a combination of atoms."""
    return _derivative(atom)


@functools.singledispatch
def _derivative(atom) -> Combination:
    raise NoRule(f"cannot differentiate {atom}")


@_derivative.register
def _(atom: Smooth) -> Combination:
    return tuple(_smooth(sp.diff(atom.h, x)))


@_derivative.register
def _(atom: Half) -> Combination:
    jump = atom.side * atom.h.subs(x, 0)
    out = _half(sp.diff(atom.h, x), atom.side)
    if jump != 0:
        out.append((jump, Delta()))
    return tuple(out)


@_derivative.register
def _(atom: Delta) -> Combination:
    raise NoRule("derivatives of the Dirac delta are not used")


def combination_derivative(comb: Combination) -> Combination:
    out = []
    for c, atom in comb:
        out.extend((c * c2, a2) for c2, a2 in derivative(atom))
    return normalize(out)


def parity(atom: Atom) -> int:
    """+1 even, -1 odd, 0 neither (about x = 0)."""
    if isinstance(atom, Delta):
        return 1
    if isinstance(atom, Half):
        return 0
    flipped = atom.h.subs(x, -x)
    if sp.expand(flipped - atom.h) == 0:
        return 1
    if sp.expand(flipped + atom.h) == 0:
        return -1
    return 0


def product(a: Atom, b: Atom) -> Combination:
    """a(x) b(x) as a combination (same variable: for diagonal, one-variable expectations)."""
    return _product(a, b)


@functools.singledispatch
def _product(a, b) -> Combination:
    raise NoRule(f"no product rule for {a} and {b}")


@_product.register
def _(a: Smooth, b) -> Combination:
    if isinstance(b, Smooth):
        return tuple(_smooth(a.h * b.h))
    if isinstance(b, Half):
        return tuple(_half(a.h * b.h, b.side))
    return ((a.h.subs(x, 0), Delta()),)


@_product.register
def _(a: Half, b) -> Combination:
    if isinstance(b, Smooth):
        return _product(b, a)
    if isinstance(b, Half):
        return tuple(_half(a.h * b.h, a.side)) if a.side == b.side else ()
    raise NoRule("delta(x) theta(x) is ambiguous")


@_product.register
def _(a: Delta, b) -> Combination:
    if isinstance(b, Smooth):
        return _product(b, a)
    raise NoRule("delta(x)^2 is not defined: the expectation diverges")


# --------------------------------------------------------------------------- Gaussian polynomials
@dataclass(frozen=True)
class GaussPolyTerm:
    """c x^m exp(a x^2 + b x): the class of functions with closed-form Gaussian integrals."""

    coeff: sp.Expr
    power: int
    a: sp.Expr
    b: sp.Expr


@functools.lru_cache(maxsize=None)
def gauss_poly_terms(h: sp.Expr) -> tuple[GaussPolyTerm, ...]:
    """Write h as a sum of c x^m exp(a x^2 + b x) terms (sin, cos, sinh, cosh via exponentials).

    Raises NoRule if h is not of that class (e.g. erf, tanh, 1/(1+e^x)).
    """
    h = sp.sympify(h)
    if h.has(sp.sin, sp.cos, sp.sinh, sp.cosh):
        h = h.rewrite(sp.exp)
    terms = []
    for term in sp.Add.make_args(sp.expand(sp.powsimp(sp.expand(h)), power_exp=False)):
        coeff, rest = term.as_independent(x, as_Add=False)
        power, exponent = 0, sp.S.Zero
        for factor in sp.Mul.make_args(sp.powsimp(rest)):
            if factor == x:
                power += 1
            elif factor.is_Pow and factor.base == x and factor.exp.is_Integer and factor.exp >= 0:
                power += int(factor.exp)
            elif isinstance(factor, sp.exp) or (factor.is_Pow and factor.base == sp.E):
                exponent += factor.exp if factor.is_Pow else factor.args[0]
            elif factor == 1:
                continue
            else:
                raise NoRule(f"{factor} is not a polynomial times a Gaussian")
        poly = sp.Poly(sp.expand(exponent), x) if exponent != 0 else None
        if poly is not None and poly.degree() > 2:
            raise NoRule(f"exp({exponent}) is not exp(quadratic)")
        a = poly.coeff_monomial(x**2) if poly is not None else sp.S.Zero
        b = poly.coeff_monomial(x) if poly is not None else sp.S.Zero
        c0 = poly.coeff_monomial(1) if poly is not None else sp.S.Zero
        terms.append(GaussPolyTerm(coeff * sp.exp(c0), power, a, b))
    return tuple(terms)


def is_gauss_poly(h: sp.Expr) -> bool:
    try:
        gauss_poly_terms(h)
        return True
    except NoRule:
        return False


def is_polynomial(h: sp.Expr) -> bool:
    return sp.sympify(h).is_polynomial(x)
