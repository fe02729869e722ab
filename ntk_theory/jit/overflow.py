r"""Overflow-safe float64 forms of the exponential patterns of activations (softplus, logistic and their kin).

An activation such as softplus(beta x) / beta = log(1 + exp(beta x)) / beta is finite for every x, but its
printed form overflows in float64 once beta x > 709.78: ``log(1 + exp(64 * 12))`` is ``log(inf) = inf``, and
its derivatives ``exp(a) / (1 + exp(a))`` are ``inf / inf = NaN``.  :func:`overflow_safe` rewrites the
expression (exact algebra, only the floating-point behaviour changes) into two functions whose float64 forms
are finite wherever the value is:

    log(1 + exp(a))                 -> log1pexp(a)       = max(a, 0) + log1p(exp(-|a|))
    exp(m a + r) / (1 + exp(a))^k   -> logistic(a)^j logistic(-a)^(k - j) exp((m - j) a + r),
                                       j = min(max(m, 0), k),   logistic(a) = 1 / (1 + exp(-a))

(the product identity is exp(j a) / (1 + exp(a))^k = (exp(a) / (1 + exp(a)))^j (1 / (1 + exp(a)))^(k - j);
for 0 <= m <= k no exponential remains).  A product whose other factors are sums containing exponentials
(``(exp(a) - 1) exp(a) / (1 + exp(a))^3``) is multiplied out first, so that every exponential meets its
denominator.  Both functions are accurate to a few ulp relative to themselves (NumPy: ``logaddexp(0, a)``
and ``scipy.special.expit``; Numba: the branch-free and two-branch forms above); where a product such as
``1 - logistic(a)`` cancels, its absolute error stays at the unit roundoff times the factors' size.

The rewrite is applied where the toolkit makes float64 code of an expression: :func:`numba_code` (compiled
kernels and activations), :func:`ntk_theory.activations.lambdify_numpy` (an activation's NumPy callables) and
:func:`ntk_theory.gaussian.stable.stable_form` (the stable forms of averages and their derivatives).
"""

from __future__ import annotations

import numpy as np
import scipy.special
import sympy as sp


class log1pexp(sp.Function):
    """log(1 + exp(z)) (softplus), evaluated in float64 as max(z, 0) + log1p(exp(-|z|)): no overflow.

    Examples
    --------
    >>> import sympy as sp
    >>> z = sp.Symbol("z", real=True)
    >>> log1pexp(z).diff(z), log1pexp(z).rewrite(sp.exp)
    (logistic(z), log(exp(z) + 1))
    """

    nargs = 1

    def fdiff(self, argindex=1):
        return logistic(self.args[0])

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return sp.log(1 + sp.exp(z))

    def _eval_evalf(self, prec):
        return sp.log(1 + sp.exp(self.args[0]))._eval_evalf(prec)

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real

    def _eval_is_positive(self):
        return True if self.args[0].is_extended_real else None


class logistic(sp.Function):
    """1 / (1 + exp(-z)), evaluated in float64 without overflow (``scipy.special.expit``; in Numba
    1 / (1 + exp(-z)) for z >= 0 and exp(z) / (1 + exp(z)) for z < 0).

    Examples
    --------
    >>> import sympy as sp
    >>> z = sp.Symbol("z", real=True)
    >>> logistic(z).diff(z), logistic(z).rewrite(sp.exp)
    (logistic(-z)*logistic(z), 1/(1 + exp(-z)))
    """

    nargs = 1

    def fdiff(self, argindex=1):
        z = self.args[0]
        return logistic(z) * logistic(-z)

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return 1 / (1 + sp.exp(-z))

    def _eval_evalf(self, prec):
        return (1 / (1 + sp.exp(-self.args[0])))._eval_evalf(prec)

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real

    def _eval_is_positive(self):
        return True if self.args[0].is_extended_real else None


def _log1pexp_numpy(z):
    return np.logaddexp(0.0, z)


#: the NumPy twins of the rewritten forms' functions, for ``sympy.lambdify``'s ``modules``
NUMPY_FUNCTIONS = {"log1pexp": _log1pexp_numpy, "logistic": scipy.special.expit}


def numba_log1pexp(z: str) -> str:
    """Python/Numba source of log1pexp of the printed argument ``z`` (``math`` functions)."""
    return f"(max({z}, 0.0) + math.log1p(math.exp(-abs({z}))))"


def numba_logistic(z: str) -> str:
    """Python/Numba source of logistic of the printed argument ``z``: no ``exp`` of a positive number."""
    return f"(1.0 / (1.0 + math.exp(-({z}))) if {z} >= 0 else math.exp({z}) / (1.0 + math.exp({z})))"


def overflow_safe(expr: sp.Expr) -> sp.Expr:
    """``expr`` with log(1 + exp(a)) and exp(m a + r) / (1 + exp(a))^k rewritten (see the module docstring);
    unchanged when it has no exponential.

    Parameters
    ----------
    expr : sympy.Expr
        Any expression.

    Returns
    -------
    sympy.Expr
        An equal expression whose float64 evaluation overflows only where its value does.

    Examples
    --------
    >>> import sympy as sp
    >>> x = sp.Symbol("x", real=True)
    >>> overflow_safe(sp.log(1 + sp.exp(64 * x)) / 64)
    log1pexp(64*x)/64
    >>> overflow_safe(sp.diff(sp.log(1 + sp.exp(64 * x)) / 64, x, 2))
    (64 - 64*logistic(64*x))*logistic(64*x)
    >>> overflow_safe(sp.exp(128 * x) / (1 + sp.exp(64 * x))**3)
    logistic(-64*x)*logistic(64*x)**2
    """
    if not isinstance(expr, sp.Basic) or not expr.has(sp.exp):
        return expr
    return _safe(expr)


def _one_plus_exp(e):
    """a where e = 1 + exp(a), else None."""
    if e.is_Add and len(e.args) == 2 and sp.S.One in e.args:
        other = e.args[1] if e.args[0] == 1 else e.args[0]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _denominator(f):
    """(a, k) where f = (1 + exp(a))^(-k) with a number k > 0, else None."""
    if f.is_Pow and f.exp.is_number and f.exp.is_negative:
        a = _one_plus_exp(f.base)
        if a is not None:
            return a, -f.exp
    return None


def _safe(e):
    if not e.args or not e.has(sp.exp):
        return e
    if isinstance(e, sp.log):
        a = _one_plus_exp(e.args[0])
        if a is not None:
            return log1pexp(_safe(a))
    if e.is_Mul or e.is_Pow:
        factors = sp.Mul.make_args(e)
        dens = [_denominator(f) for f in factors]
        if any(d is not None for d in dens):
            return _pair(e, factors, dens)
    args = [_safe(a) for a in e.args]
    return e if all(a is b for a, b in zip(args, e.args)) else e.func(*args)


def _pair(e, factors, dens):
    exponent, others = sp.S.Zero, []
    for f, d in zip(factors, dens):
        if d is not None:
            continue
        if isinstance(f, sp.exp):
            exponent += f.args[0]
        else:
            others.append(f)
    others = [_safe(f) for f in others]
    bases = [d[0] for d in dens if d is not None]
    if any(f.is_Add and any(_split(g.args[0], a)[0] != 0 for g in f.atoms(sp.exp) for a in bases) for f in others):
        # an exponential left in a sum factor would meet no denominator: multiply the sums out (one level)
        expanded = sp.expand(e, deep=False, mul=True, power_exp=False, power_base=False, multinomial=False,
                             log=False, basic=False)
        if expanded != e and expanded.is_Add:
            return sp.Add(*[_safe(t) for t in expanded.args])
    out = []
    for d in dens:
        if d is None:
            continue
        a, k = d
        m, rest = _split(exponent, a)
        j = min(max(m, sp.S.Zero), k)
        sa = _safe(a)
        out.append(logistic(sa) ** j * logistic(-sa) ** (k - j))
        exponent = rest + (m - j) * a
    return sp.Mul(*others) * sp.Mul(*out) * sp.exp(_safe(exponent))


def _split(exponent, a):
    """(m, rest) with exponent = m a + rest and m a number (0 when no part of exponent is proportional to a)."""
    if exponent == 0:
        return sp.S.Zero, sp.S.Zero
    q = sp.cancel(exponent / a)
    if q.is_number:
        return q, sp.S.Zero
    m, rest = sp.S.Zero, []
    for t in sp.Add.make_args(sp.expand(exponent)):
        r = sp.cancel(t / a)
        if r.is_number:
            m += r
        else:
            rest.append(t)
    return m, sp.Add(*rest)
