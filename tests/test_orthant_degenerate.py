"""Four-point moments of piecewise-linear activations for singular covariances (the orthant route's
planar and solid cones, merged parallel inputs) against independent references.

Every covariance here is K = F F^T with F of small dyadic entries, so K is exact in float64 and
exactly singular; the references integrate z = F w, w ~ N(0, I_r), directly in polar coordinates
(mpmath on the circle for r = 2, nested scipy quadrature on the sphere for r = 3), split at every
zero of every F_i . u and without the code's arcs, closed forms or factorisation.  Products are
s(z)^p s'(z)^q with all sign patterns at once (relu, leaky_relu, abs slopes)."""

import itertools
import math
import warnings

import mpmath
import numpy as np
import pytest
from scipy import integrate

from ntk_theory.gaussian.fourpoint import four_point_moments
from ntk_theory.numerics import orthant
from ntk_theory.numerics.fourpoint import products

SLOPES = {"relu": (0.0, 1.0), "leaky_relu": (0.25, 1.0), "abs": (-1.0, 1.0)}


def _factor(y, p, q, a, b):
    c = b if y > 0 else a
    return c ** (p + q) * y ** p


def polar2(F, powers, a, b, dps=30):
    """E[prod_i s(z_i)^p_i s'(z_i)^q_i], z = F w, F (m, 2): E[rho^P] / (2 pi) int_0^2pi prod_i h_i(F_i . u) dphi
    (the integrand is homogeneous of degree P), by mpmath.quad on the pieces between the zeros."""
    with mpmath.workdps(dps):
        Fm = [[mpmath.mpf(float(v)) for v in row] for row in F]
        P = sum(p for p, _ in powers)
        cuts = sorted({(mpmath.atan2(fy, fx) + s * mpmath.pi / 2) % (2 * mpmath.pi)
                       for fx, fy in Fm for s in (1, -1)})

        def f(phi):
            c, s = mpmath.cos(phi), mpmath.sin(phi)
            out = mpmath.mpf(1)
            for (fx, fy), (p, q) in zip(Fm, powers):
                out *= _factor(fx * c + fy * s, p, q, a, b)
            return out

        integral = mpmath.quad(f, [cuts[-1] - 2 * mpmath.pi] + cuts)
        return float(mpmath.mpf(2) ** (mpmath.mpf(P) / 2) * mpmath.gamma(1 + mpmath.mpf(P) / 2) * integral
                     / (2 * mpmath.pi))


def polar3(F, powers, a, b, tol=1e-12):
    """The same for F (m, 3): E[rho^P] (chi_3) / (4 pi) times the sphere integral in coordinates
    t = e . u, phi (area dt dphi) of a generic frame; phi split at the zeros of each F_i . u, t at the
    tangencies and at the directions of the pairwise intersection lines (scipy.quad).  Returns
    (value, error estimate)."""
    Q, _ = np.linalg.qr(np.random.default_rng(11).standard_normal((3, 3)))
    G = np.asarray(F, dtype=float) @ Q
    A = np.hypot(G[:, 0], G[:, 1])
    psi = np.arctan2(G[:, 1], G[:, 0])
    P = sum(p for p, _ in powers)

    def inner(t):
        st = math.sqrt(max(1 - t * t, 0.0))
        cuts = []
        for Ai, pi_, Bi in zip(A, psi, G[:, 2]):
            c = -Bi * t / (Ai * st) if Ai * st > 0 else 2.0
            if -1 < c < 1:
                cuts += [(pi_ + math.acos(c)) % (2 * math.pi), (pi_ - math.acos(c)) % (2 * math.pi)]
        edges = [0.0] + sorted(cuts) + [2 * math.pi]

        def g(phi):
            u = np.array([st * math.cos(phi), st * math.sin(phi), t])
            return math.prod(_factor(float(Gi @ u), p, q, a, b) for Gi, (p, q) in zip(G, powers))

        return sum(integrate.quad(g, lo, hi, epsabs=0, epsrel=tol, limit=200)[0]
                   for lo, hi in itertools.pairwise(edges) if hi > lo)

    tc = {-1.0, 1.0} | {s * Ai / math.hypot(Ai, Bi) for Ai, Bi in zip(A, G[:, 2]) for s in (1, -1)}
    for i, j in itertools.combinations(range(len(G)), 2):
        v = np.cross(G[i], G[j])
        if np.linalg.norm(v) > 0:
            tc |= {v[2] / np.linalg.norm(v), -v[2] / np.linalg.norm(v)}
    tc = sorted(tc)
    val = err = 0.0
    for lo, hi in itertools.pairwise(tc):
        if hi > lo:
            with warnings.catch_warnings():  # roundoff warnings at the tangencies: e is reported
                warnings.simplefilter("ignore", integrate.IntegrationWarning)
                v, e = integrate.quad(inner, lo, hi, epsabs=0, epsrel=tol, limit=200)
            val, err = val + v, err + e
    rho = 2 ** (P / 2) * math.gamma((3 + P) / 2) / math.gamma(1.5)
    return rho * val / (4 * math.pi), rho * err / (4 * math.pi)


def _moments(F, a, b, tol=None):
    F = np.asarray(F, dtype=float)
    return orthant.set_moments((F @ F.T)[None], products(F.shape[0]), a, b, tol=tol)


def _dyadic(rng, shape, den=8):
    return rng.integers(-2 * den, 2 * den + 1, shape) / den


# ------------------------------------------------------------------------------------ rank 2: planar cones


@pytest.mark.parametrize("act", list(SLOPES))
@pytest.mark.parametrize("m", [2, 3, 4])
def test_planar_sets_against_polar_quadrature(act, m):
    """Rank 2 (m = 3, 4 inputs in d = 2 with C_b = 0) and pairs: every product against the mpmath
    polar integral at 30 digits, within the reported error; the estimate is ~1e-14 relative."""
    a, b = SLOPES[act]
    F = _dyadic(np.random.default_rng(m), (m, 2))
    res = _moments(F, a, b)
    assert res.kinds == ["planar"] and res.done[0]
    for c, p in enumerate(products(m)):
        ref = polar2(F, p, a, b)
        assert abs(res.values[0, c] - ref) <= res.errors[0, c] + 1e-300, (p, res.values[0, c], ref)
        assert res.errors[0, c] <= 1e-13 * res.scales[0, c] + 1e-300


def test_planar_rounding_model_on_thin_and_wide_arcs():
    """The arc integrals in extended precision against mpmath at 35 digits on nearly antiparallel
    (thin arcs), nearly parallel and generic vectors: the actual error stays below the estimate
    (remainder bound, 16 eps of the integral, angle errors times the total variation)."""
    rng = np.random.default_rng(3)
    worst = 0.0
    for trial in range(12):
        V = rng.standard_normal((3, 2))
        if trial % 3 == 1:
            V[1] = -V[0] + 1e-3 * rng.standard_normal(2)
        if trial % 3 == 2:
            V[2] = 2 * V[0] + 1e-6 * rng.standard_normal(2)
        arc = orthant._Planar(V.astype(np.longdouble)[None], np.zeros(1))
        for k in [(1, 1, 1), (2, 1, 0), (0, 0, 0), (1, 0, 2), (0, 3, 0), (2, 1, 1)]:
            v, e, _ = arc.F(k)
            with mpmath.workdps(35):
                Vm = [[mpmath.mpf(float(x)) for x in row] for row in V]
                cuts = sorted({(mpmath.atan2(y, x) + s * mpmath.pi / 2) % (2 * mpmath.pi) for x, y in Vm for s in (1, -1)})

                def f(phi, Vm=Vm, k=k):
                    u = (mpmath.cos(phi), mpmath.sin(phi))
                    ys = [x * u[0] + y * u[1] for x, y in Vm]
                    return mpmath.mpf(0) if min(ys) <= 0 else mpmath.fprod(y ** p for y, p in zip(ys, k))

                P = sum(k)
                ref = (mpmath.mpf(2) ** (mpmath.mpf(P) / 2) * mpmath.gamma(1 + mpmath.mpf(P) / 2)
                       * mpmath.quad(f, [cuts[-1] - 2 * mpmath.pi] + cuts) / (2 * mpmath.pi))
                actual = abs(mpmath.mpf(str(v[0])) - ref)
            if ref != 0:
                assert actual <= e[0], (trial, k, float(actual), e[0])
                worst = max(worst, float(actual / e[0]))
    assert worst > 1e-4  # the estimate is not vacuous


# ------------------------------------------------------------------------------------ rank 3: solid cones


@pytest.mark.parametrize("case", ["d3", "d2-bias", "coplanar"])
def test_solid_sets_against_sphere_quadrature(case):
    """Rank 3 of four: inputs in d = 3 (C_b = 0; ReLU ssss, a ddss, dddd), in d = 2 with a bias column
    (C_b > 0; ssss), and a set with three coplanar inputs (the relation's fourth coefficient is 0;
    dddd) against nested scipy quadrature on the sphere (every product: the slow test below)."""
    rng = np.random.default_rng(5)
    if case == "d3":
        F = _dyadic(rng, (4, 3))
    elif case == "d2-bias":
        F = np.hstack([_dyadic(rng, (4, 2)), np.full((4, 1), 0.5)])
    else:
        F = _dyadic(rng, (4, 3))
        F[2] = F[0] - F[1]
    res = _moments(F, 0.0, 1.0)
    assert res.kinds == ["solid"]
    prods = products(4)
    for c in {"d3": (0, 1, len(prods) - 1), "d2-bias": (0,), "coplanar": (len(prods) - 1,)}[case]:
        ref, ref_err = polar3(F, prods[c], 0.0, 1.0)
        assert abs(res.values[0, c] - ref) <= res.errors[0, c] + ref_err + 1e-12 * res.scales[0, c], (prods[c], ref)


@pytest.mark.slow
@pytest.mark.parametrize("act", list(SLOPES))
def test_solid_sets_every_product_all_orthants(act):
    a, b = SLOPES[act]
    F = _dyadic(np.random.default_rng(6), (4, 3))
    res = _moments(F, a, b)
    assert res.kinds == ["solid"]
    for c, p in enumerate(products(4)):
        ref, ref_err = polar3(F, p, a, b)
        assert abs(res.values[0, c] - ref) <= res.errors[0, c] + ref_err + 1e-12 * res.scales[0, c], (p, ref)


def test_empty_cone_is_exactly_zero():
    """Four inputs in d = 3 surrounding the origin (x_4 = -(x_1 + x_2 + x_3)): no direction w has
    x_i . w > 0 for all i, so every ReLU product vanishes, with a zero error estimate (not sent to
    the numerical integrator)."""
    F = _dyadic(np.random.default_rng(1), (3, 3))
    F = np.vstack([F, -F.sum(axis=0)])
    res = _moments(F, 0.0, 1.0)
    assert res.kinds == ["solid"]
    assert np.all(res.values[0] == 0) and np.all(res.errors[0] == 0)


def test_anticorrelated_solid_set_recomputed_with_mpmath():
    """Strongly anti-correlated inputs: the recursion's terms cancel (ssss = 1.2e-9) and
    the extended-precision estimate exceeds tol = 1e-10; with tol the set is recomputed with mpmath
    (40 digits) and agrees with the sphere quadrature."""
    F = np.array([[-0.25, -0.875, -0.5], [-0.125, 0.125, 0.0], [0.25, 0.25, 0.25], [0.0, -0.125, 0.875]])
    plain = _moments(F, 0.0, 1.0)
    assert plain.kinds == ["solid"] and np.any(plain.errors[0] > 1e-10 * plain.scales[0])
    res = _moments(F, 0.0, 1.0, tol=1e-10)
    assert res.kinds == ["solid (mpmath)"] and np.all(res.errors[0] <= 1e-10 * res.scales[0])
    ref, ref_err = polar3(F, products(4)[0], 0.0, 1.0, tol=1e-13)
    assert abs(res.values[0, 0] - ref) <= res.errors[0, 0] + ref_err + 1e-13 * res.scales[0, 0]
    assert abs(plain.values[0, 0] - ref) <= plain.errors[0, 0] + ref_err


# ------------------------------------------------------------------------------------ merged and rank one


@pytest.mark.parametrize("act", list(SLOPES))
def test_repeated_scaled_and_antiparallel_inputs(act):
    """Exactly parallel variables are merged (repeated input, 2x, -x/2): against the polar integral of
    the original rows, which knows nothing of the merging."""
    a, b = SLOPES[act]
    x = _dyadic(np.random.default_rng(7), (2, 2))
    for F in (np.vstack([x, x[0]]), np.vstack([x, -0.5 * x[1]]), np.vstack([x, 2 * x[0], -x[1]])):
        res = _moments(F, a, b)
        assert res.done[0]
        for c, p in enumerate(products(F.shape[0])):
            ref = polar2(F, p, a, b)
            assert abs(res.values[0, c] - ref) <= res.errors[0, c] + 1e-300, (F.tolist(), p, res.values[0, c], ref)


@pytest.mark.parametrize("act", list(SLOPES))
def test_rank_one_closed_form(act):
    """d = 1, C_b = 0: z_i = f_i w, so E[prod] = sum over the sign of w of
    E[|w|^P; w > 0] prod_i c(sgn(f_i w))^(p_i + q_i) (f_i sgn w)^p_i, E[|w|^P; w > 0] = 2^(P/2 - 1) Gamma((P+1)/2) / sqrt(pi)."""
    a, b = SLOPES[act]
    f = np.array([0.75, -1.5, 0.5, 2.0])
    res = _moments(f[:, None], a, b)
    assert res.kinds == ["full"]
    for c, p in enumerate(products(4)):
        P = sum(pp for pp, _ in p)
        half = 2 ** (P / 2 - 1) * math.gamma((P + 1) / 2) / math.sqrt(math.pi)
        ref = sum(half * math.prod(_factor(fi * s, pp, qq, a, b) for fi, (pp, qq) in zip(f, p)) for s in (1, -1))
        assert abs(res.values[0, c] - ref) <= res.errors[0, c] + 1e-300, (p, res.values[0, c], ref)


def test_monte_carlo_of_the_degenerate_gaussian():
    """leaky_relu on a rank-2 and a rank-3 set of four: every product against 4e5 samples of z = F w
    (|z| < 5 standard errors)."""
    rng = np.random.default_rng(9)
    a, b = SLOPES["leaky_relu"]
    for F in (_dyadic(rng, (4, 2)), _dyadic(rng, (4, 3))):
        res = _moments(F, a, b)
        z = F @ rng.standard_normal((F.shape[1], 400_000))
        s, ds = np.where(z > 0, b * z, a * z), np.where(z > 0, b, a)
        for c, p in enumerate(products(4)):
            x = np.prod([s[i] ** pp * ds[i] ** qq for i, (pp, qq) in enumerate(p)], axis=0)
            assert abs(res.values[0, c] - x.mean()) <= 5 * x.std() / math.sqrt(x.size), (p, res.values[0, c], x.mean())


# ------------------------------------------------------------------------------------ rank rule, dispatch


def test_rank_rule_separates_rounding_from_genuine_near_singularity():
    """K = X X^T / 3 of random (non-dyadic) inputs in d = 3: every four-input set is singular within
    the float64 rounding of K (solid), every smaller set is not; one input moved 1e-6 out of the span
    of three others is a genuine near-singularity (lambda_min ~ 1e-13): left to the numerical
    integrator, not projected."""
    X = np.random.default_rng(0).standard_normal((5, 3))
    K = X @ X.T / 3
    for m in (3, 4):
        sets = list(itertools.combinations(range(5), m))
        res = orthant.set_moments(np.stack([K[np.ix_(S, S)] for S in sets]), products(m), 0.0, 1.0)
        assert all(k == ("solid" if m == 4 else "full") for k in res.kinds), res.kinds
    Y = np.hstack([X[:4], np.zeros((4, 1))])
    Y[3, 3] = 1e-6
    res = orthant.set_moments((Y @ Y.T)[None], products(4), 0.0, 1.0)
    assert not res.done[0] and res.kinds == [None]


def test_four_point_moments_of_singular_K_take_the_exact_route():
    """N = 5 inputs in d = 3 with C_b = 0 (every set of four is singular): before, such sets went to
    the numerical integrator (more than a minute for N = 5); now every set is exact, nothing is left
    unconverged, and the entries agree with the polar references."""
    X = _dyadic(np.random.default_rng(4), (5, 3))
    K = X @ X.T
    m = four_point_moments("relu", K)
    assert m.info["exact_sets"] == m.info["sets"] and m.info["not_converged"] == 0, m.info
    for idx in [(0, 1, 2, 3), (0, 0, 2, 4)]:
        ref, ref_err = polar3(X[list(idx)], [(1, 0)] * 4, 0.0, 1.0)
        assert abs(m.ssss[idx] - ref) <= m.error_ssss[idx] + ref_err + 1e-12 * m.scale_ssss[idx], idx
    dd = polar3(X[[0, 1, 2, 3]], [(0, 1)] * 4, 0.0, 1.0)
    assert abs(m.dddd[0, 1, 2, 3] - dd[0]) <= m.error_dddd[0, 1, 2, 3] + dd[1] + 1e-12


def test_anticorrelated_full_rank_set_recomputed_with_mpmath():
    """Four of eight inputs in d = 4 with C_b = 0 (correlations down to -0.96): the extended-precision
    estimate of ssss exceeds tol (the numerical integrator needed minutes for such sets); with tol
    the set is recomputed with mpmath (recursion, Plackett's integrals by mpmath.quad) and agrees
    with test_fourpoint's independent mpmath recursion at 30 digits, within an estimate below tol."""
    from test_fourpoint import _mp_orthant_moment

    X = np.random.default_rng(0).standard_normal((8, 4))
    K = (2.0 * X @ X.T / 4)[np.ix_((1, 2, 6, 7), (1, 2, 6, 7))]
    prods = products(4)
    plain = orthant.set_moments(K[None], prods, 0.0, 1.0)
    assert plain.kinds == ["full"] and np.any(plain.errors[0] > 1e-10 * plain.scales[0])
    res = orthant.set_moments(K[None], prods, 0.0, 1.0, tol=1e-10)
    assert res.kinds == ["full (mpmath)"] and np.all(res.errors[0] <= 1e-10 * res.scales[0])
    with mpmath.workdps(30):
        S = mpmath.matrix(K.tolist())
        for c in (0, 1, len(prods) - 1):
            ref = float(_mp_orthant_moment(S, tuple(p for p, _ in prods[c])))
            assert abs(res.values[0, c] - ref) <= res.errors[0, c] + 1e-300, (prods[c], res.values[0, c], ref)
