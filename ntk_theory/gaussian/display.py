r"""Readable forms of closed-form expectations, for display only.

The rules produce closed forms as SymPy builds them: GELU's kernel comes out as one fraction with
the same ``sqrt(k11*k22 + k11 - k12**2 + k22 + 1)`` twelve times.  :func:`display` rewrites such an
expression the way it is written by hand:

1. the main square-root radicand P (the polynomial under the most square roots, the determinant-like
   ``(k11 + 1)*(k22 + 1) - k12**2``) becomes a symbol ``D``, every ``P**(n/2)`` a power of
   ``sqrt(D)``;
2. the expression is collected over its transcendental factors (``asin(...)``, ``erf(...)``,
   ``exp(...)``, ...); each coefficient is a rational function in the variables and ``sqrt(D)``,
   reduced with ``sqrt(D)**2 = D`` into an even and an odd part in ``sqrt(D)``, each cancelled, with
   the powers of P in its denominator written as powers of ``D`` and its numerator as ``q*D + r``
   (polynomial division by P) when that is shorter;
3. products of square roots inside function arguments are merged: the arcsin argument
   ``k12/(sqrt(k11 + 1)*sqrt(k22 + 1))`` reads ``k12/sqrt((k11 + 1)*(k22 + 1))`` (the radicands
   are positive variances);
4. ``D`` stays a named symbol (``where D = ...``) only if it occurs more than once and P is not
   linear.

GELU: ``k12/4 + k12*asin(k12/sqrt((k11 + 1)*(k22 + 1)))/(2*pi)
+ (D*k11*k22 + k12**2)/(2*pi*sqrt(D)*(k11 + 1)*(k22 + 1))``, where
``D = (k11 + 1)*(k22 + 1) - k12**2``.

The rewrite is checked before it is used: the displayed form with its definitions substituted
back must equal the original to 25 digits in 30-digit mpmath arithmetic at three random points
(positive symbols in (0, 1], real ones in [-1/3, 1/3]) where the original is real and finite, and
be at most 0.8 times as long; otherwise the original is shown (so are expressions shorter than 60
characters).  Nothing here
is used for evaluation: float64 numerics keep the stable forms of ``gaussian/stable.py``.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import mpmath
import sympy as sp

D = sp.Symbol("D", positive=True)
_R = sp.Symbol("R_sqrtD", positive=True)  # sqrt(D) during the algebra


_MIN_LENGTH = 60  # shorter expressions are shown as they are
_GAIN = 0.8  # a rewrite is shown only if it is at most this fraction of the original's length


@dataclass(frozen=True)
class Display:
    """A closed form as displayed: the sum of ``terms`` (printed in this order) in named symbols,
    and the ``definitions`` of those symbols, each ``(symbol, terms)``."""

    terms: tuple
    definitions: tuple = ()

    @property
    def expr(self) -> sp.Expr:
        """The displayed expression as one SymPy expression (named symbols kept)."""
        return sp.Add(*self.terms)

    def text(self, printer=sp.sstr) -> str:
        """Plain text, each term printed by ``printer`` (SymPy's str form by default)."""
        body = _joined(self.terms, printer)
        if not self.definitions:
            return body
        return body + ",  where " + ", ".join(f"{printer(s)} = {_joined(v, printer)}" for s, v in self.definitions)

    def latex(self) -> str:
        body = _joined(self.terms, sp.latex)
        if not self.definitions:
            return body
        return body + r",\quad " + r",\ ".join(f"{sp.latex(s)} = {_joined(v, sp.latex)}" for s, v in self.definitions)

    def expanded(self) -> sp.Expr:
        """The displayed expression with its definitions substituted back."""
        return self.expr.subs({s: sp.Add(*v) for s, v in self.definitions})

    def __str__(self) -> str:
        return self.text()


def _joined(terms, show) -> str:
    """Terms printed in their order: ``a + b - c``."""
    out = ""
    for i, t in enumerate(terms):
        negative = t.could_extract_minus_sign()
        body = show(-t if negative else t)
        out += (("-" if negative else "") + body) if i == 0 else ((" - " if negative else " + ") + body)
    return out or "0"


@functools.lru_cache(maxsize=512)
def display(expr: sp.Expr) -> Display:
    """The readable form of ``expr`` (see the module docstring); ``Display(expr)`` if no rewrite helps."""
    plain = Display((expr,))
    if len(sp.sstr(expr)) < _MIN_LENGTH:
        return plain
    try:
        shown = _rewrite(expr)
    except (sp.PolynomialError, sp.polys.polyerrors.PolificationFailed, NotImplementedError, TypeError,
            ValueError, ZeroDivisionError, RecursionError):
        return plain
    if shown is None or len(shown.text()) > _GAIN * len(sp.sstr(expr)) or not _same_value(expr, shown.expanded()):
        return plain
    return shown


def display_text(expr: sp.Expr, printer=sp.sstr) -> str:
    """``display(expr).text(printer)``."""
    return display(expr).text(printer)


def display_latex(expr: sp.Expr) -> str:
    """``display(expr).latex()``."""
    return display(expr).latex()


# ---------------------------------------------------------------------- the rewrite
def _radicand_counts(expr) -> dict:
    """How often each polynomial radicand P occurs under a power P**(n/2) in the expression tree."""
    counts: dict = {}
    for p in sp.preorder_traversal(expr):
        if not p.is_Pow:
            continue
        base, e = p.args
        if isinstance(base, sp.Add) and e.is_Rational and e.q == 2 and base.free_symbols and base.is_polynomial():
            key = sp.expand(base)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _replace_radicand(expr, P):
    def is_root(e):
        return e.is_Pow and e.exp.is_Rational and e.exp.q == 2 and isinstance(e.base, sp.Add) and sp.expand(e.base) == P

    return expr.replace(is_root, lambda e: _R ** (2 * e.exp))


def _shown_polynomial(P) -> tuple:
    """P as written by hand, as terms: factored, or split at one variable into
    ``((k11 + 1)*(k22 + 1), -k12**2)``."""
    candidates = [(P,), (sp.factor(P),)]
    for s in sorted(P.free_symbols, key=str):
        rest = P.subs(s, 0)
        if rest != 0 and rest != P:
            candidates.append((sp.factor(rest), sp.factor(P - rest)))
    return min(candidates, key=lambda c: (len(_joined(c, sp.sstr)), len(c), _joined(c, sp.sstr)))


def _p_power(m, P, gens):
    """(j, m / P^j) with j the multiplicity of P in the polynomial m."""
    j = 0
    while m.has(*gens):
        q, r = sp.div(m, P, *gens)
        if r != 0:
            break
        m, j = q, j + 1
    return j, m


def _numerator(n, P, gens):
    """n written with D = P: collected over its other symbols (parameters), each coefficient as
    ``q*D + r`` (division by P) where that is shorter than its factored form."""
    n = sp.expand(n)
    params = sorted(n.free_symbols - set(gens), key=str)
    if params:
        groups = sp.collect(n, params, evaluate=False)
        if len(groups) > 1:
            return sp.factor_terms(sp.Add(*(key * _split(c, P, gens) for key, c in groups.items())))
    return _split(n, P, gens)


def _split(n, P, gens):
    plain = sp.factor(n)
    if not n.has(*gens) or sp.Poly(n, *gens).total_degree() < sp.Poly(P, *gens).total_degree():
        return plain
    q, r = sp.div(sp.expand(n), P, *gens)
    if q == 0:
        return plain
    split = sp.factor_terms(_split(q, P, gens) * D + sp.factor(r))
    return split if len(sp.sstr(split)) < len(sp.sstr(plain)) else plain


def _piece(num, den, odd: bool, P, gens):
    """num/den (times sqrt(D) if odd), cancelled, with powers of P in den written as powers of D."""
    if num == 0:
        return sp.S.Zero
    n, m = sp.fraction(sp.cancel(num / den))
    j, m = _p_power(sp.expand(m), P, gens)
    power = sp.Rational(1, 2) - j if odd else -j
    return _numerator(n, P, gens) * D**power / sp.factor(m)


def _coefficient(c, P, gens):
    """A rational function in gens and sqrt(D) (the symbol _R), as even + odd parts in sqrt(D)."""
    N, M = sp.fraction(sp.cancel(sp.together(c)))
    modulus = _R**2 - P
    N, M = sp.rem(sp.expand(N), modulus, _R), sp.rem(sp.expand(M), modulus, _R)
    M0, M1 = M.coeff(_R, 0), M.coeff(_R, 1)
    if M1 != 0:  # rationalise: multiply by the conjugate, or by sqrt(D) when M = M1 sqrt(D)
        conj = _R if M0 == 0 else M0 - M1 * _R
        N, M = sp.rem(sp.expand(N * conj), modulus, _R), sp.expand(sp.rem(sp.expand(M * conj), modulus, _R))
    N0, N1 = N.coeff(_R, 0), N.coeff(_R, 1)
    if M.has(_R) or sp.expand(N - N0 - N1 * _R) != 0:
        raise ValueError("not linear in sqrt(D)")
    return _piece(N0, M, False, P, gens) + _piece(N1, M, True, P, gens)


def _merged_argument(arg):
    """Merge the square roots of a product: ``k12/(sqrt(a)*sqrt(b))`` -> ``k12/sqrt(a*b)`` (unevaluated;
    the radicands are positive variances, and the rewrite is checked numerically)."""
    if not isinstance(arg, sp.Mul):
        return arg
    roots = [f for f in arg.args if f.is_Pow and f.exp in (sp.S.Half, -sp.S.Half)]
    merged = []
    for e in (sp.S.Half, -sp.S.Half):
        bases = [f.base for f in roots if f.exp == e]
        if len(bases) > 1:
            merged.append(sp.Pow(sp.Mul(*bases, evaluate=False), e, evaluate=False))
        else:
            merged.extend(f for f in roots if f.exp == e)
    rest = [f for f in arg.args if f not in roots]
    return sp.Mul(*rest, *merged, evaluate=False) if len(merged) < len(roots) else arg


def _rewrite(expr) -> Display | None:
    counts = _radicand_counts(expr)
    if not counts or D in expr.free_symbols or any(str(s) == str(D) for s in expr.free_symbols):
        return None
    P = max(counts, key=lambda p: (counts[p], len(p.free_symbols)))
    if counts[P] < 2:  # nothing repeated to collect
        return None
    gens = tuple(sorted(P.free_symbols, key=str))
    work = _replace_radicand(expr, P)
    # placeholders for the function factors (asin, erf, exp, ...)
    funcs = sorted(work.atoms(sp.Function), key=sp.default_sort_key)
    if any(f.has(_R) for f in funcs):
        return None
    slots = {f: sp.Symbol(f"F{i}_") for i, f in enumerate(funcs)}
    work = sp.expand(work.xreplace(slots))
    groups = sp.collect(work, list(slots.values()), evaluate=False)
    shown_funcs = {s: f.func(*map(_merged_argument, f.args)) for f, s in slots.items()}
    terms = []
    for monomial in sorted(groups, key=sp.default_sort_key):
        coeff = _coefficient(groups[monomial], P, gens)
        terms.extend(t * monomial.xreplace(shown_funcs) for t in sp.Add.make_args(coeff) if t != 0)
    # as written by hand: plain terms, then those with functions (asin, erf, ...), then those with sqrt(D)
    terms.sort(key=lambda t: (t.has(D), bool(t.atoms(sp.Function))))
    if any(t.has(_R) for t in terms):
        return None
    shown_P = _shown_polynomial(P)
    uses = sum(1 for t in terms for node in sp.preorder_traversal(t) if node == D)
    if uses <= 1 or sp.Poly(P, *gens).total_degree() < 2:
        return Display(tuple(t.xreplace({D: sp.Add(*shown_P)}) for t in terms))
    return Display(tuple(terms), ((D, shown_P),))


def _same_value(a: sp.Expr, b: sp.Expr, digits: int = 25) -> bool:
    """a == b at three random points of the free symbols where both are real and finite (30-digit mpmath)."""
    syms = sorted(a.free_symbols | b.free_symbols, key=str)
    rng = random.Random(12345)
    checked = 0
    with mpmath.workdps(30):
        for _ in range(60):
            point = {s: sp.Rational(rng.randint(1, 1000), 1000) * (1 if s.is_positive else rng.choice((-1, 1)))
                     for s in syms}
            point.update({s: point[s] / 3 for s in syms if not s.is_positive})  # cross terms small
            va, vb = sp.N(a.subs(point), 30), sp.N(b.subs(point), 30)
            if not (va.is_real and va.is_finite):
                continue
            if not (vb.is_real and vb.is_finite):
                return False
            if abs(va - vb) > sp.Float(10) ** (-digits) * max(1, abs(va)):
                return False
            checked += 1
            if checked == 3:
                return True
    return False
