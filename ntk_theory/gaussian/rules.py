r"""Rules deriving Gaussian expectations in closed form, registered per atom type.

Two variables, (u, v) ~ N(0, Sigma), Sigma = [[k11, k12], [k12, k22]]; one variable u ~ N(0, var).
Each rule takes atoms (see :mod:`ntk_theory.gaussian.atoms`), returns a :class:`Step` recording
what it did, or raises :class:`NoRule`.  Rules for a pair of atom types are tried in registration
order; registering ``(A, B)`` also registers the mirrored ``(B, A)`` by swapping u and v.

Rules (name: statement)
    constant            E[c g(v)] = c E[g(v)]
    parity              E[f(u) g(v)] = 0 if one of f, g is odd and the other even ((u,v) -> (-u,-v))
    dirac_delta         E[delta(u - c) g(v)] = phi_k11(c) E[g(v) | u = c],
                        v | u=c ~ N(c k12/k11, k22 - k12^2/k11)  (phi_k11 the N(0, k11) density)
    complete_square     E[u^m v^n exp(a1 u^2 + b1 u + a2 v^2 + b2 v)]: Gaussian integral with precision
                        Sigma^-1 - 2 diag(a1, a2), mean (Sigma^-1 - 2A)^-1 b, then Isserlis' theorem for the
                        moments (derivatives of the Gaussian moment generating function)
    price               Price's theorem: d/dk12 E[f(u) g(v)] = E[f'(u) g'(v)], so
                        E[f g] = E[f(u)] E[g(v)] + int_0^k12 E[f' g'] dk12'.  Not applied to
                        E[h(u) theta(u - a) g(v) theta(v - b)] with (a, b) != (0, 0): there
                        E[f' g'] holds E[delta(u - a) delta(v - b)] = phi_2(a, b; k12), whose integral
                        in k12 is the bivariate normal CDF (Owen's T function), not elementary; such
                        pairs go to numerical quadrature
    one-variable rules  symmetric (E[h] = c/2 if h(x) + h(-x) = c), complete_square (1-D), half_line
                        (int_0^oo x^m exp(-c x^2 + b x) dx), truncated_moments (int_c^oo of the same, c
                        any real or symbolic point: completing the square to N(mu, sigma^2) and
                        int_l^oo z^j phi(z) dz = l^(j-1) phi(l) + (j-1) int_l^oo z^(j-2) phi(z) dz,
                        from int_l^oo phi = erfc(l/sqrt 2)/2, int_l^oo z phi = phi(l)),
                        heat_equation (d/dvar E[h] = E[h'']/2)
"""

from __future__ import annotations

import functools
import random

import mpmath
import sympy as sp

from .atoms import (
    Delta,
    Half,
    NoRule,
    Smooth,
    combination_derivative,
    derivative,
    gauss_poly_terms,
    is_gauss_poly,
    is_polynomial,
    parity,
    translate,
)
from ..activations.activation import x
from .derivation import Step
from .symbols import SWAP, k11, k12, k22

MAX_PRICE_DEPTH = 6

# --------------------------------------------------------------------------- registries
_PAIR_RULES: dict[tuple[type, type], list] = {}
_ONE_RULES: dict[type, list] = {}


def pair_rule(type_a, type_b):
    """Register ``rule(a, b, depth) -> Step`` for E[a(u) b(v)]; the mirror (b, a) is added too."""

    def register(rule):
        _PAIR_RULES.setdefault((type_a, type_b), []).append(rule)
        if type_a is not type_b:
            _PAIR_RULES.setdefault((type_b, type_a), []).append(_mirrored(rule))
        return rule

    return register


def one_rule(type_a):
    """Register ``rule(a, var) -> Step`` for E[a(u)], u ~ N(0, var)."""

    def register(rule):
        _ONE_RULES.setdefault(type_a, []).append(rule)
        return rule

    return register


def _mirrored(rule):
    def mirrored(a, b, depth):
        step = rule(b, a, depth)
        return _step(step.rule, (a, b), step.result.subs(SWAP, simultaneous=True), step.note + " (u <-> v)", step.children)

    mirrored.__name__ = rule.__name__ + "_mirrored"
    return mirrored


def _step(rule: str, atoms, result, note: str = "", children=(), var=None) -> Step:
    """A Step whose left-hand side is E[a(u) b(v)] (two atoms) or E_var[a(u)] (one atom)."""
    if var is None:
        a, b = atoms
        latex = rf"E\left[{a.latex('u')}\, {b.latex('v')}\right]"
        text = f"E[{a.text('u')} {b.text('v')}]"
    else:
        (a,) = atoms
        latex = rf"E_{{{sp.latex(var)}}}\left[{a.latex('u')}\right]"
        text = f"E[{a.text('u')}], u ~ N(0, {sp.sstr(var)})"
    return Step(rule, latex, result, note, tuple(children), lhs_text=text)


# --------------------------------------------------------------------------- dispatch
@functools.lru_cache(maxsize=None)
def pair(a, b, depth: int = 0) -> Step:
    """E[a(u) b(v)] for two atoms, by the first registered rule that applies."""
    failures = []
    for rule in _PAIR_RULES.get((type(a), type(b)), []):
        try:
            return rule(a, b, depth)
        except NoRule as exc:
            failures.append(f"{rule.__name__}: {exc}")
    raise NoRule(f"no closed form for E[{a} {b}]" + (f" ({'; '.join(failures)})" if failures else ""))


@functools.lru_cache(maxsize=None)
def one(a, var) -> Step:
    """E[a(u)], u ~ N(0, var), by the first registered rule that applies."""
    failures = []
    for rule in _ONE_RULES.get(type(a), []):
        try:
            return rule(a, var)
        except NoRule as exc:
            failures.append(f"{rule.__name__}: {exc}")
    raise NoRule(f"no closed form for E[{a}] (" + "; ".join(failures) + ")")


def combination_pair(A, B, depth: int = 0) -> Step:
    """Linearity: E[(sum_i a_i A_i)(sum_j b_j B_j)] = sum_ij a_i b_j E[A_i B_j]."""
    children, total = [], sp.S.Zero
    for ca, a in A:
        for cb, b in B:
            step = pair(a, b, depth)
            children.append(step)
            total += ca * cb * step.result
    if len(children) == 1 and A[0][0] == 1 and B[0][0] == 1:
        return children[0]
    return Step("linearity", "", total, f"sum over {len(children)} pairs of terms", tuple(children))


def combination_one(A, var) -> Step:
    children, total = [], sp.S.Zero
    for ca, a in A:
        step = one(a, var)
        children.append(step)
        total += ca * step.result
    if len(children) == 1 and A[0][0] == 1:
        return children[0]
    return Step("linearity", "", total, f"sum over {len(children)} terms", tuple(children))


# --------------------------------------------------------------------------- one variable
@one_rule(Delta)
def dirac_delta_1(a: Delta, var) -> Step:
    density = sp.exp(-(a.at**2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)
    return _step("dirac_delta", (a,), density, f"density of u at {sp.sstr(a.at)}", var=var)


def _is_constant(atom) -> bool:
    return isinstance(atom, Smooth) and not atom.h.has(x)


@one_rule(Smooth)
def constant_1(a: Smooth, var) -> Step:
    if not _is_constant(a):
        raise NoRule("not constant")
    return _step("constant", (a,), a.h, var=var)


@one_rule(Smooth)
def symmetric_1(a: Smooth, var) -> Step:
    s = sp.simplify(a.h + a.h.subs(x, -x))
    if s.has(x):
        raise NoRule("h(x) + h(-x) depends on x")
    return _step("symmetric", (a,), s / 2, "h(x) + h(-x) is constant; u and -u have one law", var=var)


def _gaussian_moment(powers, mean, cov) -> sp.Expr:
    """E[prod_i w_i^p_i] for w ~ N(mean, cov): derivatives of exp(s.mean + s.cov.s/2) at s = 0
    (Isserlis' theorem with a mean)."""
    s = sp.symbols(f"s0:{len(powers)}")
    mgf = sp.exp(sum(si * mi for si, mi in zip(s, mean)) + sum(s[i] * cov[i][j] * s[j] for i in range(len(s)) for j in range(len(s))) / 2)
    d = mgf
    for si, p in zip(s, powers):
        if p:
            d = sp.diff(d, si, p)
    return d.subs({si: 0 for si in s})


def _completed_square(term, var):
    """(D, var / D), D = 1 - 2 a var: x^m exp(a x^2 + b x) against N(0, var) is, up to the factor
    exp(b^2 var / (2 D)) / sqrt(D), x^m against N(b var / D, var / D).  NoRule where D > 0 is false
    (the Gaussian integral diverges)."""
    D = 1 - 2 * term.a * var
    if term.a != 0 and sp.ask(sp.Q.positive(D)) is False:
        raise NoRule("divergent Gaussian integral")
    return D, var / D


@one_rule(Smooth)
def complete_square_1(a: Smooth, var) -> Step:
    total = sp.S.Zero
    for term in gauss_poly_terms(a.h):
        denom, cov = _completed_square(term, var)
        mean = cov * term.b
        norm = sp.exp(term.b**2 * cov / 2) / sp.sqrt(denom)
        total += term.coeff * norm * _gaussian_moment([term.power], [mean], [[cov]])
    return _step("complete_square", (a,), tidy(total), "completing the square, Isserlis", var=var)


@one_rule(Half)
def half_line_1(a: Half, var) -> Step:
    if a.at != 0:
        raise NoRule("the step is not at 0")
    y = sp.Symbol("y", positive=True)
    v = sp.Symbol("var_", positive=True)
    h = a.h.subs(x, a.side * y)
    if not is_gauss_poly(h.subs(y, x)):
        raise NoRule("not a polynomial times a Gaussian on the half line")
    total = sp.S.Zero
    for term in sp.Add.make_args(sp.expand(h)):
        val = sp.integrate(term * sp.exp(-(y**2) / (2 * v)), (y, 0, sp.oo), conds="none")
        if val.has(sp.Integral):
            raise NoRule("SymPy could not do the half-line integral")
        total += val
    result = tidy((total / sp.sqrt(2 * sp.pi * v)).subs(v, var))
    return _step("half_line", (a,), result, "int_0^oo x^m exp(-x^2/(2 var) + b x) dx", var=var)


def _upper_tail_moments(ell, n: int) -> list:
    """M_j = int_ell^oo z^j phi(z) dz, j = 0..n: M_0 = erfc(ell/sqrt 2)/2, M_1 = phi(ell),
    M_j = ell^(j-1) phi(ell) + (j-1) M_(j-2) (integration by parts, phi' = -z phi)."""
    phi = sp.exp(-(ell**2) / 2) / sp.sqrt(2 * sp.pi)
    M = [sp.erfc(ell / sp.sqrt(2)) / 2, phi]
    for j in range(2, n + 1):
        M.append(ell ** (j - 1) * phi + (j - 1) * M[j - 2])
    return M[: n + 1]


@one_rule(Half)
def truncated_moments_1(a: Half, var) -> Step:
    """E[h(u) theta(s (u - c))] for h a sum of x^m exp(alpha x^2 + beta x) terms, c any point.

    Per term, completing the square: exp(-x^2/(2 var) + alpha x^2 + beta x) is, up to the factor
    exp(beta^2 sigma^2 / 2) / sqrt(D), D = 1 - 2 alpha var, the N(mu, sigma^2) density with
    sigma^2 = var / D, mu = beta sigma^2; with x = mu + sigma z and l = (c - mu) / sigma,
    E[x^m 1{s (x - c) > 0}] = sum_j C(m, j) mu^(m-j) sigma^j T_j, T_j = M_j(l) for s = +1 and
    (-1)^j M_j(-l) for s = -1, M_j the upper-tail Gaussian moments (see _upper_tail_moments)."""
    total = sp.S.Zero
    for term in gauss_poly_terms(a.h):
        D, s2 = _completed_square(term, var)
        sigma = sp.sqrt(s2)
        mu = s2 * term.b
        ell = (a.at - mu) / sigma
        M = _upper_tail_moments(a.side * ell, term.power)
        T = [M[j] if a.side > 0 else (-1) ** j * M[j] for j in range(term.power + 1)]
        moment = sum(sp.binomial(term.power, j) * mu ** (term.power - j) * sigma**j * T[j] for j in range(term.power + 1))
        total += term.coeff * sp.exp(term.b**2 * s2 / 2) / sp.sqrt(D) * moment
    note = "complete the square, then int_l^oo z^j phi = l^(j-1) phi(l) + (j-1) int_l^oo z^(j-2) phi"
    return _step("truncated_moments", (a,), tidy(total), note, var=var)


@one_rule(Smooth)
def heat_equation_1(a: Smooth, var) -> Step:
    """E_var[h(u)] = h(0) + (1/2) int_0^var E_s[h''(u)] ds (Price's theorem in one variable)."""
    if not reducible(a, MAX_PRICE_DEPTH):
        raise NoRule("derivatives do not reduce to Gaussian polynomials")
    s = sp.Symbol("s_", positive=True)
    second = combination_derivative(combination_derivative(((sp.S.One, a),)))
    inner = combination_one(second, s) if second else Step("zero", "", sp.S.Zero)
    F = sp.integrate(inner.result, s)
    if F.has(sp.Integral):
        raise NoRule("SymPy could not integrate in the variance")
    F0 = _at_zero(F, s)
    result = tidy(a.h.subs(x, 0) + (F.subs(s, var) - F0) / 2)
    return _step("heat_equation", (a,), result, "d/dvar E[h] = E[h'']/2", (inner,), var=var)


# --------------------------------------------------------------------------- two variables
@pair_rule(Smooth, Smooth)
def constant(a: Smooth, b, depth) -> Step:
    if _is_constant(a):
        inner = one(b, k22)
        return _step("constant", (a, b), tidy(a.h * inner.result), "E[c g(v)] = c E[g(v)]", (inner,))
    if _is_constant(b):
        inner = one(a, k11)
        return _step("constant", (a, b), tidy(b.h * inner.result), "E[f(u) c] = c E[f(u)]", (inner,))
    raise NoRule("no constant factor")


pair_rule(Smooth, Half)(constant)
pair_rule(Smooth, Delta)(constant)


@pair_rule(Smooth, Smooth)
def parity_zero(a, b, depth) -> Step:
    pa, pb = parity(a), parity(b)
    if pa * pb != -1:
        raise NoRule("no opposite parity")
    return _step("parity", (a, b), sp.S.Zero, "one factor odd, the other even")


pair_rule(Smooth, Delta)(parity_zero)


@pair_rule(Delta, Delta)
def dirac_delta(a: Delta, b, depth) -> Step:
    var = k22 - k12**2 / k11
    mean = k12 * a.at / k11
    inner = combination_one(translate(b, mean), var)  # E[g(w + mean)], w ~ N(0, var)
    density = sp.exp(-(a.at**2) / (2 * k11)) / sp.sqrt(2 * sp.pi * k11)
    result = tidy(inner.result * density)
    c = sp.sstr(a.at)
    note = f"E[delta(u - c) g(v)] = phi(c) E[g(v) | u=c], c = {c}" if a.at != 0 else "E[delta(u) g(v)] = phi(0) E[g(v) | u=0]"
    return _step("dirac_delta", (a, b), result, note, (inner,))


pair_rule(Delta, Smooth)(dirac_delta)
pair_rule(Delta, Half)(dirac_delta)


@pair_rule(Smooth, Smooth)
def complete_square(a: Smooth, b: Smooth, depth) -> Step:
    ta, tb = gauss_poly_terms(a.h), gauss_poly_terms(b.h)
    Sigma = sp.Matrix([[k11, k12], [k12, k22]])
    total = sp.S.Zero
    for p in ta:
        for q in tb:
            A = sp.diag(p.a, q.a)
            M = sp.eye(2) - 2 * Sigma * A
            det = sp.expand(M.det())
            cov = sp.simplify(M.inv() * Sigma) if (p.a != 0 or q.a != 0) else Sigma
            bvec = sp.Matrix([p.b, q.b])
            mean = cov * bvec
            norm = sp.exp(sp.expand((bvec.T * cov * bvec)[0, 0] / 2)) / sp.sqrt(det)
            moment = _gaussian_moment([p.power, q.power], list(mean), cov.tolist())
            total += p.coeff * q.coeff * norm * moment
    return _step("complete_square", (a, b), tidy(total), "Gaussian integral by completing the square, Isserlis")


def _price_candidate(h: sp.Expr) -> bool:
    """Cheap syntactic test: only polynomials, exp(quadratic) factors, erf/erfc and sin/cos of
    linear arguments can reduce to Gaussian polynomials under differentiation."""
    for power in h.atoms(sp.Pow):
        if power.base.has(x) and not (power.exp.is_Integer and power.exp > 0):
            return False
    for fn in h.atoms(sp.Function):
        if not fn.has(x):
            continue
        arg = fn.args[0]
        if isinstance(fn, (sp.erf, sp.erfc, sp.sin, sp.cos)):
            if sp.Poly(arg, x).degree() > 1 if arg.is_polynomial(x) else True:
                return False
        elif isinstance(fn, sp.exp):
            if not arg.is_polynomial(x) or sp.Poly(arg, x).degree() > 2:
                return False
        else:
            return False
    return True


@functools.lru_cache(maxsize=None)
def reducible(atom, depth: int) -> bool:
    """True if repeated differentiation reaches atoms with closed-form rules within ``depth`` steps."""
    if isinstance(atom, Delta):
        return True
    if not _price_candidate(atom.h):
        return False
    if isinstance(atom, Smooth) and is_gauss_poly(atom.h):
        return True
    if isinstance(atom, Half) and is_polynomial(atom.h):
        return True
    if depth == 0:
        return False
    try:
        return all(reducible(a, depth - 1) for _, a in derivative(atom))
    except NoRule:
        return False


def _check_shifted_steps(a, b) -> None:
    """Price's theorem for steps away from 0 only against polynomials (NoRule otherwise).

    E[p(u) h(v) theta(v - c)] with p, h polynomials: the recursion ends in E[p^(j)(u) delta(v - c)]
    = phi_k22(c) x (a polynomial in k12), integrated exactly.  Two steps, at u = a and v = b with
    (a, b) != (0, 0): E[f' g'] holds E[delta(u - a) delta(v - b)] = phi_2(a, b; k12), whose
    integral in k12 is the bivariate normal CDF (Owen's T function), not elementary.  A step at
    c != 0 against exp/erf/sin-type factors: the integrand has exp(-(c k12)^2 / ...) factors whose
    k12-antiderivatives are not elementary in general (and SymPy may not terminate on them)."""
    if isinstance(a, Half) and isinstance(b, Half):
        if a.at != 0 or b.at != 0:
            raise NoRule(
                f"steps at u = {sp.sstr(a.at)}, v = {sp.sstr(b.at)}: the integral of Price's theorem is the bivariate "
                "normal CDF (Owen's T function), not elementary off (0, 0); numerical quadrature"
            )
        return
    for step, other in ((a, b), (b, a)):
        if isinstance(step, Half) and step.at != 0 and not (isinstance(other, Smooth) and is_polynomial(other.h)):
            raise NoRule(f"a step at {sp.sstr(step.at)} against {other}: Price's theorem only against polynomials there")


def price(a, b, depth) -> Step:
    """Price's theorem: E[f g](k12) = E[f]E[g] + int_0^k12 E[f' g'](t) dt."""
    if depth >= MAX_PRICE_DEPTH:
        raise NoRule("Price recursion too deep")
    _check_shifted_steps(a, b)
    if not (reducible(a, MAX_PRICE_DEPTH - depth) and reducible(b, MAX_PRICE_DEPTH - depth)):
        raise NoRule("derivatives do not reduce to closed-form atoms")
    da, db = derivative(a), derivative(b)
    base_a, base_b = one(a, k11), one(b, k22)
    base = base_a.result * base_b.result
    children = [base_a, base_b]
    integrand = sp.S.Zero
    if da and db:
        inner = combination_pair(da, db, depth + 1)
        children.append(inner)
        integrand = inner.result
    result = base
    if integrand != 0:
        result = base + integrate_covariance(integrand)
    return _step("price", (a, b), tidy(result), "E[f]E[g] + int_0^k12 E[f'g'] dk12", tuple(children))


for _pair_types in ((Smooth, Smooth), (Smooth, Half), (Half, Half)):
    pair_rule(*_pair_types)(price)


# --------------------------------------------------------------------------- calculus helpers
def integrate_covariance(integrand: sp.Expr) -> sp.Expr:
    """int_0^k12 integrand(t) dt by an antiderivative, checked by differentiating back numerically."""
    F = antiderivative(integrand, k12)
    _check_antiderivative(F, integrand)
    return F - _at_zero(F, k12)


def antiderivative(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """An antiderivative valid where every radicand c0 - c2 var^2 is positive (|rho| < 1).

    Radicands quadratic in ``var`` are renamed c2 (A - var^2) with A a positive symbol, the
    integrand is split into terms, each integrated by SymPy; of a Piecewise answer the branch
    holding at var = 0 is kept.  Raises NoRule when a term resists.
    """
    renamed, back = _rename_radicands(expr, var)
    total = sp.S.Zero
    for term in _split_terms(renamed):
        total += _integrate_term(term, var)
    # Gaussian expectations are analytic in k12 on |rho| < 1, so the k12 > 0 branch is the answer
    total = total.subs({sp.Abs(var): var, sp.sign(var): 1})
    return total.subs({A: sp.factor(v) for A, v in back.items()})


def _split_terms(expr):
    """Additive terms, expanding numerators only (expanding (A - t^2)^(3/2) hides it from SymPy)."""
    out = []
    for term in sp.Add.make_args(expr):
        num, den = sp.fraction(term)
        out.extend(mono / den for mono in sp.Add.make_args(sp.expand(num)))
    return out


def _rename_radicands(expr, var):
    back, mapping = {}, {}
    for power in expr.atoms(sp.Pow):
        base = power.base
        if base in mapping or not base.has(var) or power.exp.is_Integer or not power.exp.is_Rational:
            continue
        poly = sp.Poly(sp.expand(base), var)
        if poly.degree() != 2 or poly.coeff_monomial(var) != 0:
            continue
        c2, c0 = -poly.coeff_monomial(var**2), poly.coeff_monomial(1)
        if c2.is_positive is not True and sp.sign(c2) != 1:
            continue
        A = sp.Dummy("A", positive=True)
        mapping[base] = c2 * (A - var**2)
        back[A] = c0 / c2
    return expr.xreplace(mapping), back


def _integrate_term(term, var):
    from sympy.integrals.manualintegrate import manualintegrate

    for method in (lambda f: sp.integrate(f, var), lambda f: manualintegrate(f, var)):
        try:
            result = _branch_at_zero(method(term), var)
        except (NotImplementedError, ValueError, TypeError):
            continue
        if not result.has(sp.Integral):
            return result
    raise NoRule(f"SymPy found no antiderivative of {term} in {var}")


def _branch_at_zero(result, var):
    """Of a Piecewise antiderivative, the branch whose condition holds near var = 0."""
    if not result.has(sp.Piecewise):
        return result

    def pick(pw):
        for value, cond in pw.args:
            c = cond.subs(var, sp.Rational(1, 10**6)) if cond not in (sp.true, sp.false) else cond
            try:
                if bool(c.subs({s: 1 for s in c.free_symbols})):
                    return value
            except TypeError:
                continue
        raise NoRule("no Piecewise branch holds near 0")

    return result.replace(lambda e: isinstance(e, sp.Piecewise), pick)


def _at_zero(F: sp.Expr, var) -> sp.Expr:
    F0 = F.subs(var, 0)
    if F0.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        F0 = sp.limit(F, var, 0)
    return F0


def _check_antiderivative(F, f) -> None:
    """dF/dk12 = f at random admissible points, to 20 digits (guards SymPy's integrator)."""
    dF = sp.diff(F, k12)
    rng = random.Random(0)
    with mpmath.workdps(30):
        for _ in range(3):
            a, b = rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.0)
            c = rng.uniform(-0.9, 0.9) * (a * b) ** 0.5
            subs = {k11: sp.Float(a, 30), k22: sp.Float(b, 30), k12: sp.Float(c, 30)}
            lhs, rhs = complex(dF.evalf(30, subs=subs)), complex(f.evalf(30, subs=subs))
            if abs(lhs - rhs) > 1e-20 * max(1.0, abs(rhs)):
                raise NoRule("antiderivative failed the differentiation check")


def tidy(expr: sp.Expr) -> sp.Expr:
    """Light simplification that keeps expressions readable without SymPy's slow general simplify."""
    expr = sp.sympify(expr)
    if expr.has(sp.I):
        expr = sp.expand_complex(expr)
    expr = expr.replace(
        lambda e: e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer and e.base.is_Add,
        lambda e: sp.Pow(sp.factor(sp.expand(e.base)), e.exp),
    )
    expr = sp.powsimp(sp.together(expr), combine="exp") if expr.count_ops() < 400 else expr
    try:
        simpler = sp.simplify(expr) if expr.count_ops() < 120 else sp.cancel(expr)
    except Exception:  # noqa: BLE001 - simplification is cosmetic
        return expr
    return simpler if sp.count_ops(simpler) <= sp.count_ops(expr) else expr
