r"""Rewrite closed forms into equivalent expressions that keep their digits in float64.

Each rule is exact algebra; only the floating-point behaviour changes.

    asin(z / w)            -> atan2(z, sqrt(w^2 - z^2))     one angle shared with the sqrt(det) terms, so
                                                            their rounding errors cancel as rho -> +-1
    p q - (r k12)^2        -> det2(p, q, r k12)              a determinant computed with Dekker's exact
                                                            products: accurate relative to itself even
                                                            when it is 1e-12 of p q (|rho| -> 1)
    sqrt(q), q -> 0        -> sqrt(max(q, 0))               radicands that vanish at |rho| = 1 stay >= 0
    1 - erf(z)             -> erfc(z)                        no cancellation for large z
    exp(a) erfc(z)         -> exp(a - z^2) erfcx(z)           no overflow of exp(a) against erfc's underflow
                              (z >= 0; where z may be negative, a Piecewise keeps exp(a) erfc(z) for z < 0,
                              where erfcx(z) ~ 2 exp(z^2) overflows)
    log(1 + exp(a))        -> log1pexp(a)                    softplus(64 x) and its derivatives
    exp(m a)/(1 + exp(a))^k -> logistic(+-a) products         stay finite (:func:`ntk_theory.jit.overflow_safe`)
"""

from __future__ import annotations

import numpy as np
import scipy.special
import sympy as sp

from ..jit.overflow import NUMPY_FUNCTIONS as OVERFLOW_FUNCTIONS
from ..jit.overflow import overflow_safe
from ..numerics import compensated
from .symbols import k12


class erfcx(sp.Function):
    """Scaled complementary error function exp(z^2) erfc(z) (scipy.special.erfcx)."""

    nargs = 1

    def fdiff(self, argindex=1):
        z = self.args[0]
        return 2 * z * erfcx(z) - 2 / sp.sqrt(sp.pi)

    def _eval_rewrite_as_erfc(self, z, **kwargs):
        return sp.exp(z**2) * sp.erfc(z)

    def _eval_evalf(self, prec):
        return (sp.exp(self.args[0] ** 2) * sp.erfc(self.args[0]))._eval_evalf(prec)


class det2(sp.Function):
    """p q - c^2, evaluated with error-free products (see :func:`det2_numpy`)."""

    nargs = 3

    def _eval_evalf(self, prec):
        p, q, c = self.args
        return (p * q - c**2)._eval_evalf(prec)

    def _eval_is_nonnegative(self):
        return None


def det2_numpy(p, q, c):
    """p q - c^2 of float64 arrays by :func:`ntk_theory.numerics.compensated.det2` (exact products,
    one final rounding of their difference)."""
    p, q, c = (np.asarray(v, dtype=np.float64) for v in (p, q, c))
    return compensated.det2(p, q, c)


#: names the lambdified stable forms need, besides SciPy and NumPy
NUMPY_FUNCTIONS = {"erfcx": scipy.special.erfcx, "Max": np.maximum, "det2": det2_numpy, **OVERFLOW_FUNCTIONS}


def stable_form(expr: sp.Expr) -> sp.Expr:
    """The float64-friendly form of ``expr`` (see the module docstring)."""
    expr = overflow_safe(expr)
    expr = _asin_to_atan2(expr)
    expr = _determinants(expr)
    expr = _clip_radicands(expr)
    expr = _erf_to_erfc(expr)
    return expr


def lambdify(args, expr: sp.Expr):
    """A NumPy function of ``stable_form(expr)`` with common subexpressions computed once."""
    return lambdify_form(args, stable_form(expr))


def lambdify_form(args, form: sp.Expr):
    """A NumPy function of an expression already in stable form (e.g. read back from the cache)."""
    return sp.lambdify(args, form, modules=[NUMPY_FUNCTIONS, "scipy", "numpy"], cse=True)


def _determinants(expr):
    def rewrite(p):
        base = p.base
        poly = sp.Poly(sp.expand(base), k12)
        if poly.degree() != 2 or poly.coeff_monomial(k12) != 0:
            return p
        c2, c0 = -poly.coeff_monomial(k12**2), sp.factor(poly.coeff_monomial(1))
        r = sp.sqrt(c2)
        factors = sp.Mul.make_args(c0)
        if not (c2.is_positive and r.is_Rational) or len(factors) < 2:
            return p
        # c0 = first * rest; keep numeric factors with the first
        consts = [f for f in factors if not f.free_symbols]
        symbolic = [f for f in factors if f.free_symbols]
        if len(symbolic) < 2:
            return p
        first = sp.Mul(*consts) * symbolic[0]
        rest = sp.Mul(*symbolic[1:])
        return sp.Pow(det2(first, rest, r * k12), p.exp)

    return expr.replace(
        lambda e: e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer and e.base.has(k12) and not isinstance(e.base, det2),
        rewrite,
    )


def _asin_to_atan2(expr):
    def rewrite(a):
        z = a.args[0]
        num, den = sp.fraction(sp.together(z))
        radicand = sp.expand(den**2 - num**2)
        return sp.atan2(num, sp.sqrt(sp.factor(radicand)) if den.is_positive is not False else sp.sqrt(radicand))

    return expr.replace(lambda e: isinstance(e, sp.asin), rewrite)


def _clip_radicands(expr):
    def clip(p):
        return sp.Pow(sp.Max(p.base, 0), p.exp)

    return expr.replace(
        lambda e: e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer and e.base.has(k12) and not isinstance(e.base, sp.Max),
        clip,
    )


def _erf_to_erfc(expr):
    if not expr.has(sp.erf):
        return expr
    candidate = sp.expand(expr.replace(lambda e: isinstance(e, sp.erf), lambda e: 1 - sp.erfc(e.args[0])))
    candidate = candidate.replace(
        lambda e: e.is_Mul and any(isinstance(f, sp.erfc) for f in e.args) and any(isinstance(f, sp.exp) for f in e.args),
        _scaled,
    )
    return candidate


def _scaled(term):
    erfcs = [f for f in term.args if isinstance(f, sp.erfc)]
    exps = [f for f in term.args if isinstance(f, sp.exp)]
    if len(erfcs) != 1:
        return term
    z = erfcs[0].args[0]
    rest = sp.Mul(*[f for f in term.args if f is not erfcs[0] and f not in exps])
    exponent = sp.Add(*[e.args[0] for e in exps])
    scaled = rest * sp.exp(sp.expand(exponent - z**2)) * erfcx(z)
    if z.is_nonnegative:
        return scaled
    # erfcx(z) overflows for z < -26.6 (exp(z^2) erfc(z) ~ 2 exp(z^2)) while exp(a - z^2) underflows: 0 * inf;
    # there erfc(z) lies in (1, 2] and exp(a) erfc(z) is the stable form
    return sp.Piecewise((scaled, z >= 0), (term, True))
