r"""Canonical pieces of a one-variable function, the objects Gaussian-expectation rules act on.

A function of x with kinks or jumps at real points c_1 < ... < c_n is written as a linear
combination of atoms

    Smooth(h)            h(x), analytic on the real line
    Half(h, side, at)    h(x) theta(side * (x - at)), side = +1 or -1 (theta = Heaviside step)
    Delta(at)            delta(x - at), the Dirac delta (appears in derivatives of jumps)

with constant coefficients (``at`` defaults to 0).  With p_0, ..., p_n the analytic expressions
of f on (-oo, c_1), (c_1, c_2), ..., (c_n, oo),

    f = p_0 + sum_i (p_i - p_(i-1)) theta(x - c_i)        (values at the points c_i do not matter).

The kink points are the real roots of the arguments of Abs, sign, Heaviside, of the pairwise
differences of Max/Min arguments and of Piecewise conditions (SymPy's solveset); a function whose
switch points are not a finite set (Max(sin(x), 0)) has no decomposition (NoRule).  Each p_i is
found by resolving every Max/Min/Abs/sign/Heaviside/Piecewise, innermost first, at a point inside
its interval, and checked against f at two more points of the interval.

Derivatives stay in this algebra:
    Smooth(h)' = Smooth(h'),   Half(h, s, c)' = Half(h', s, c) + s h(c) Delta(c),
and Smooth(h) is further split into additive terms so that each rule sees one simple term.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import sympy as sp

from ..activations.activation import KINK_ATOMS, half_line_pieces, x


class NoRule(ValueError):
    """No rule applies: the caller falls back to another rule or to numerical quadrature.

    A ValueError, so that where it does escape (a function no route can handle) it reads as bad
    input: one line naming the problem.

    Examples
    --------
    No rule derives <tanh(u) tanh(v)>; :func:`~ntk_theory.gaussian.expectation` catches the NoRule and
    falls back to quadrature, keeping its message:

    >>> from ntk_theory.gaussian import NoRule, expectation
    >>> issubclass(NoRule, ValueError), expectation("tanh").reason.startswith("no closed form")
    (True, True)
    """


@dataclass(frozen=True)
class Smooth:
    h: sp.Expr

    def latex(self, var: str = "u") -> str:
        return sp.latex(self.h.subs(x, sp.Symbol(var)))

    def text(self, var: str = "u") -> str:
        return sp.sstr(self.h.subs(x, sp.Symbol(var)))


def _argument(var: str, side: int, at) -> sp.Expr:
    return side * (sp.Symbol(var) - at)


@dataclass(frozen=True)
class Half:
    h: sp.Expr
    side: int
    at: sp.Expr = sp.S.Zero

    def latex(self, var: str = "u") -> str:
        arg = (var if self.side > 0 else f"-{var}") if self.at == 0 else sp.latex(_argument(var, self.side, self.at))
        return rf"\left({sp.latex(self.h.subs(x, sp.Symbol(var)))}\right)\theta({arg})"

    def text(self, var: str = "u") -> str:
        arg = (var if self.side > 0 else f"-{var}") if self.at == 0 else sp.sstr(_argument(var, self.side, self.at))
        h = sp.sstr(self.h.subs(x, sp.Symbol(var)))
        return f"theta({arg})" if h == "1" else f"({h}) theta({arg})"


@dataclass(frozen=True)
class Delta:
    at: sp.Expr = sp.S.Zero

    def latex(self, var: str = "u") -> str:
        return rf"\delta({var if self.at == 0 else sp.latex(sp.Symbol(var) - self.at)})"

    def text(self, var: str = "u") -> str:
        return f"delta({var if self.at == 0 else sp.sstr(sp.Symbol(var) - self.at)})"


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


def _half(h: sp.Expr, side: int, at=sp.S.Zero) -> list:
    at = sp.sympify(at)
    return [(c, Half(rest, side, at)) for c, rest in _terms(h) if c != 0]


# --------------------------------------------------------------------------- kinks and pieces
_DIGITS = 30  # working precision of the numerical checks of the pieces


@functools.singledispatch
def _switch_equations(atom) -> list:
    """Expressions whose real roots are the points where ``atom`` may switch branch."""
    return [atom.args[0]]  # Abs, sign, Heaviside: the argument's sign changes


@_switch_equations.register(sp.Max)
@_switch_equations.register(sp.Min)
def _(atom) -> list:
    args = atom.args
    return [a - b for i, a in enumerate(args) for b in args[i + 1 :]]


@_switch_equations.register(sp.Piecewise)
def _(atom) -> list:
    return [rel.lhs - rel.rhs for _, cond in atom.args for rel in cond.atoms(sp.core.relational.Relational)]


@functools.lru_cache(maxsize=None)
def kink_points(expr: sp.Expr) -> tuple:
    """The exact real points where a Max/Min/Abs/sign/Heaviside/Piecewise in ``expr`` may switch
    branch, sorted (candidates: decompose drops those where f turns out analytic).  NoRule if a
    set of switch points is not finite (Max(sin(x), 0)) or SymPy cannot solve for it."""
    points: list = []
    for atom in sp.sympify(expr).atoms(*KINK_ATOMS):
        if not atom.has(x):
            continue
        for eq in _switch_equations(atom):
            if not eq.has(x):
                continue
            try:
                sol = sp.solveset(eq, x, domain=sp.S.Reals)
            except (NotImplementedError, ValueError, TypeError):
                sol = None
            if not isinstance(sol, sp.FiniteSet):
                raise NoRule(f"the switch points of {atom} (roots of {eq} = 0: {sol}) are not a finite set of reals")
            for s in sol:
                if all(abs(float(s) - float(p)) > 1e-15 * max(1.0, abs(float(p))) for p in points):
                    points.append(s)
    return tuple(sorted(points, key=float))


@functools.singledispatch
def _branch(atom, t):
    """The analytic expression ``atom`` equals near the point x = t (its arguments already resolved)."""
    raise NoRule(f"cannot resolve {atom}")


def _value(e, t) -> float:
    try:
        return float(sp.N(e.subs(x, t), _DIGITS))
    except (TypeError, ValueError) as exc:  # complex or undefined there
        raise NoRule(f"{e} has no real value at x = {t}") from exc


@_branch.register(sp.Abs)
def _(atom, t):
    return atom.args[0] if _value(atom.args[0], t) >= 0 else -atom.args[0]


@_branch.register(sp.sign)
def _(atom, t):
    v = _value(atom.args[0], t)
    return sp.S.One if v > 0 else (-sp.S.One if v < 0 else sp.S.Zero)


@_branch.register(sp.Heaviside)
def _(atom, t):
    return sp.S.One if _value(atom.args[0], t) > 0 else sp.S.Zero


@_branch.register(sp.Max)
def _(atom, t):
    return max(atom.args, key=lambda a: _value(a, t))


@_branch.register(sp.Min)
def _(atom, t):
    return min(atom.args, key=lambda a: _value(a, t))


@_branch.register(sp.Piecewise)
def _(atom, t):
    for value, cond in atom.args:
        if bool(cond.subs(x, t)):
            return value
    raise NoRule(f"{atom} is undefined at x = {t}")


def _resolve(expr: sp.Expr, t) -> sp.Expr:
    """expr with every kink atom replaced by its branch at x = t, innermost first."""
    while True:
        inner = [a for a in expr.atoms(*KINK_ATOMS) if a.has(x) and not any(b.has(*KINK_ATOMS) for b in a.args)]
        if not inner:
            return expr
        expr = expr.xreplace({a: _branch(a, t) for a in inner})


def _interval_pieces(expr: sp.Expr, points: tuple) -> list:
    """The analytic expressions of expr on (-oo, c_1), (c_1, c_2), ..., (c_n, oo), each resolved at
    an interior point and checked against expr at two more interior points."""
    edges = [None, *points, None]
    pieces = []
    for lo, hi in itertools.pairwise(edges):
        if lo is None and hi is None:
            probes = (sp.Rational(1, 3), sp.Rational(-2, 1), sp.Rational(5, 2))
        elif lo is None:
            probes = (hi - 1, hi - sp.Rational(1, 4), hi - 3)
        elif hi is None:
            probes = (lo + 1, lo + sp.Rational(1, 4), lo + 3)
        else:
            probes = ((lo + hi) / 2, lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4)
        piece = _resolve(expr, probes[0])
        for p in probes:
            want, got = _value(expr, p), _value(piece, p)
            if not abs(want - got) <= 1e-12 * max(1.0, abs(want)):
                raise NoRule(f"could not find the analytic pieces of {expr} (at x = {p}: {got} != {want})")
        pieces.append(piece)
    return pieces


@functools.lru_cache(maxsize=None)
def decompose(expr: sp.Expr) -> Combination:
    """``expr`` (a function of x) as a combination of atoms:
    f = p_0 + sum_i (p_i - p_(i-1)) theta(x - c_i) over its kink points c_i (see the module
    docstring); NoRule if its kink points or pieces cannot be found."""
    expr = sp.sympify(expr)
    if expr.has(sp.DiracDelta):
        raise NoRule("expressions with Dirac deltas are built by differentiation, not given")
    if not expr.has(*KINK_ATOMS):
        return normalize(_smooth(expr))
    points = kink_points(expr)
    if points == (0,):
        plus, minus = half_line_pieces(expr)
        if not (plus.has(*KINK_ATOMS) or minus.has(*KINK_ATOMS)):
            if sp.simplify(plus - minus) == 0:
                return normalize(_smooth(plus))
            # f = f_minus + (f_plus - f_minus) theta(x), choosing the simpler base (e.g. relu: 0 + x theta(x))
            return normalize(_smooth(minus) + _half(sp.expand(plus - minus), +1))
    pieces = _interval_pieces(expr, points)
    comb = _smooth(pieces[0])
    for c, below, above in zip(points, pieces, pieces[1:]):
        jump = sp.expand(above - below)
        if sp.simplify(jump) != 0:
            comb += _half(jump, +1, c)
    return normalize(comb)


def _positive(e) -> bool:
    """e > 0 for a real number e (False for e <= 0); NoRule if SymPy cannot decide."""
    e = sp.sympify(e)
    if e.is_positive:
        return True
    if e.is_nonpositive:
        return False
    raise NoRule(f"cannot decide the sign of {e}")


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
    jump = atom.side * atom.h.subs(x, atom.at)
    out = _half(sp.diff(atom.h, x), atom.side, atom.at)
    if jump != 0:
        out.append((jump, Delta(atom.at)))
    return tuple(out)


@_derivative.register
def _(atom: Delta) -> Combination:
    raise NoRule("derivatives of the Dirac delta are not used")


def combination_derivative(comb: Combination) -> Combination:
    out = []
    for c, atom in comb:
        out.extend((c * c2, a2) for c2, a2 in derivative(atom))
    return normalize(out)


def translate(atom: Atom, mu: sp.Expr) -> Combination:
    """x -> atom(x + mu) as a combination (mu may be symbolic): Half(h, s, c) -> Half(h(x + mu), s, c - mu),
    Delta(c) -> Delta(c - mu).  Used for conditional expectations with a non-zero conditional mean."""
    if mu == 0:
        return ((sp.S.One, atom),)
    return _translate(atom, mu)


# a registry by atom type, like _derivative and _product below (the repetition is the dispatch pattern)
@functools.singledispatch
def _translate(atom, mu) -> Combination:
    raise NoRule(f"cannot translate {atom}")


@_translate.register
def _(atom: Smooth, mu) -> Combination:
    return tuple(_smooth(atom.h.subs(x, x + mu)))


@_translate.register
def _(atom: Half, mu) -> Combination:
    return tuple(_half(atom.h.subs(x, x + mu), atom.side, atom.at - mu))


@_translate.register
def _(atom: Delta, mu) -> Combination:
    return ((sp.S.One, Delta(atom.at - mu)),)


def parity(atom: Atom) -> int:
    """+1 even, -1 odd, 0 neither (about x = 0)."""
    if isinstance(atom, Delta):
        return 1 if atom.at == 0 else 0
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


# a registry by atom type, like _derivative and _translate above (the repetition is the dispatch pattern)
@functools.singledispatch
def _product(a, b) -> Combination:
    raise NoRule(f"no product rule for {a} and {b}")


@_product.register
def _(a: Smooth, b) -> Combination:
    if isinstance(b, Smooth):
        return tuple(_smooth(a.h * b.h))
    if isinstance(b, Half):
        return tuple(_half(a.h * b.h, b.side, b.at))
    return ((a.h.subs(x, b.at), b),)


@_product.register
def _(a: Half, b) -> Combination:
    if isinstance(b, Smooth):
        return _product(b, a)
    if isinstance(b, Half):
        h = a.h * b.h
        if a.side == b.side:  # the more restrictive of two steps on the same side
            at = max(a.at, b.at, key=float) if a.side > 0 else min(a.at, b.at, key=float)
            return tuple(_half(h, a.side, at))
        lo, hi = (a.at, b.at) if a.side > 0 else (b.at, a.at)  # 1{lo < x < hi}
        if not _positive(hi - lo):
            return ()
        return tuple(_half(h, +1, lo)) + tuple((-c, atom) for c, atom in _half(h, +1, hi))
    if b.at == a.at:
        raise NoRule(f"delta(x - {a.at}) theta(x - {a.at}) is ambiguous")
    return ((a.h.subs(x, b.at), b),) if _positive(a.side * (b.at - a.at)) else ()


@_product.register
def _(a: Delta, b) -> Combination:
    if not isinstance(b, Delta):
        return _product(b, a)
    if a.at == b.at:
        raise NoRule("delta(x)^2 is not defined: the expectation diverges")
    return ()


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
