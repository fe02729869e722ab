"""The block (Kibble-Slepian) expansion of the four- and three-input Gaussian moments of smooth activations
(ntk_theory.numerics.pair_expansion, the first route of ntk_theory.numerics.fourpoint for such activations)
against independent references: Isserlis/Wick for a polynomial activation (the series ends: exact), the
nested quadrature of the same module at tol 1e-12 (a different algorithm, ``expansion=False``), the NumPy
nested tanh-sinh rule ``numerics.quadrature.expectn``, and SciPy / mpmath quadrature of single Hermite
coefficients.  Each comparison also checks the reported error estimate against the actual error."""

import itertools
import math

import mpmath
import numba
import numpy as np
import pytest
from scipy import integrate
from scipy.special import eval_hermitenorm
from wick import wick

from ntk_theory.activations import activation
from ntk_theory.gaussian.fourpoint import compile_activation
from ntk_theory.numerics import fourpoint as fp
from ntk_theory.numerics import pair_expansion as pe
from ntk_theory.numerics.quadrature import expectn


def _gram(n, d=6, seed=0, shift=0.1):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return 1.5 * X @ X.T / d + shift


@pytest.fixture(scope="module")
def tanh():
    return compile_activation(activation("tanh"))


@numba.njit
def _poly(z):
    return z + 0.5 * z * z


@numba.njit
def _dpoly(z):
    return 1.0 + z


def _poly_moment(K, idx, derivative):
    """E[prod_v f_v(z_(idx_v))] for f = z + z^2 / 2 (f' = 1 + z where derivative[v]) by Wick's theorem."""
    total = 0.0
    for choice in itertools.product((0, 1), repeat=len(idx)):
        # f: z (choice 0) or z^2 / 2 (choice 1); f': 1 (choice 0) or z (choice 1)
        ind, coef = [], 1.0
        for pos, (v, c) in enumerate(zip(idx, choice)):
            if derivative[pos]:
                ind += [v] * c
            else:
                ind += [v] * (1 + c)
                coef *= 0.5 if c else 1.0
        total += coef * wick(K, tuple(ind))
    return total


def test_polynomial_is_wick():
    """s = z + z^2 / 2: the coefficients vanish above degree 2 per variable, so the series is exact; every
    entry with four or three distinct inputs (expanded) equals Wick's value within its estimate and 1e-13."""
    kern = fp.compiled_pair(_poly, _dpoly)
    K = _gram(4, seed=3)
    r = fp.four_point_moments(kern, K, tol=1e-12, expansion=True)
    x = r.info["expansion"]
    assert x["sets4"] == 1 and x["sets3"] == 4 and x["fallback4"] == 0 and x["fallback3"] == 0
    for name, der in (("ssss", (0, 0, 0, 0)), ("ddss", (1, 1, 0, 0)), ("dddd", (1, 1, 1, 1))):
        val, err = getattr(r, name), getattr(r, "error_" + name)
        for idx in [(0, 1, 2, 3), (3, 1, 0, 2), (2, 0, 3, 1), (0, 0, 1, 2), (3, 1, 2, 2), (2, 0, 2, 3), (1, 3, 1, 0)]:
            ref = _poly_moment(K, idx, der)
            actual = abs(val[idx] - ref)
            assert actual <= err[idx] + 1e-14 * (1 + abs(ref)), (name, idx, val[idx], ref, err[idx])
            assert actual <= 1e-13 * (1 + abs(ref)), (name, idx, val[idx], ref)


def test_tanh_against_nested_quadrature(tanh):
    """tanh at four inputs, tol 1e-12: every entry of ssss, ddss, dddd within 1e-12 E|prod| (plus both
    estimates) of the nested quadrature's; the scales E|prod| within 5 %."""
    K = _gram(4, seed=1)
    a = fp.four_point_moments(tanh, K, tol=1e-12, expansion=True)
    b = fp.four_point_moments(tanh, K, tol=1e-12, expansion=False)
    assert a.info["expansion"]["sets4"] == 1 and a.info["expansion"]["sets3"] == 4
    for name in ("ssss", "ddss", "dddd"):
        va, vb = getattr(a, name), getattr(b, name)
        ea, eb = getattr(a, "error_" + name), getattr(b, "error_" + name)
        sc = getattr(b, "scale_" + name)
        diff = np.abs(va - vb)
        assert np.all(diff <= ea + eb + 1e-15 * sc), name
        assert np.all(diff <= 1e-12 * sc), (name, float(np.max(diff / sc)))
        assert np.all(ea <= 1e-12 * getattr(a, "scale_" + name)), name
        assert np.allclose(getattr(a, "scale_" + name), sc, rtol=0.05), name


def test_derivative_terms_against_nested_quadrature(tanh):
    """Terms with s'' and s''' (derivative_moments) at four inputs: the expanded sets agree with the nested
    quadrature's within 1e-10 E|prod| and within the two estimates."""
    K = _gram(4, seed=2)
    terms = [(2, 0, 1, 1), (3, 1, 1, 1)]
    a = fp.derivative_moments(tanh, K, terms, tol=1e-10, expansion=True)
    b = fp.derivative_moments(tanh, K, terms, tol=1e-10, expansion=False)
    assert a.info["expansion"]["sets4"] == 1 and a.info["expansion"]["sets3"] == 4
    for t in terms:
        diff = np.abs(a.values[t] - b.values[t])
        assert np.all(diff <= a.errors[t] + b.errors[t] + 1e-15 * b.scales[t]), t
        assert np.all(diff <= 1e-10 * b.scales[t]), t


def test_fallback_for_nearly_parallel_inputs(tanh):
    """Four nearly equal inputs: every split has a canonical correlation near 1, the series cannot reach tol
    within its degrees, and those sets go to the nested quadrature (reported as fallbacks); the result is the
    quadrature's."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(6)
    X = np.vstack([x + 1e-3 * rng.standard_normal(6) for _ in range(4)] + [rng.standard_normal(6)])
    K = X @ X.T / 6 + 0.1
    a = fp.four_point_moments(tanh, K, tol=1e-10, expansion=True)
    b = fp.four_point_moments(tanh, K, tol=1e-10, expansion=False)
    x = a.info["expansion"]
    assert x["fallback4"] >= 1 and x["fallback3"] >= 1
    assert x["sets4"] + x["fallback4"] == 5
    for name in ("ssss", "ddss", "dddd"):
        diff = np.abs(getattr(a, name) - getattr(b, name))
        assert np.all(diff <= 1e-10 * getattr(b, "scale_" + name)), name


def test_zero_variance_input_falls_back(tanh):
    """An input with zero variance (a zero row of K): the sets containing it are not expanded (a singular pair),
    the one without it is; every entry agrees with the nested quadrature within 1e-10 E|prod|."""
    K = _gram(4, seed=5)
    K[3, :] = K[:, 3] = 0.0
    a = fp.four_point_moments(tanh, K, tol=1e-10, expansion=True)
    b = fp.four_point_moments(tanh, K, tol=1e-10, expansion=False)
    x = a.info["expansion"]
    assert x["sets4"] == 0 and x["fallback4"] == 1 and x["sets3"] == 1 and x["fallback3"] == 3
    for name in ("ssss", "ddss", "dddd"):
        diff = np.abs(getattr(a, name) - getattr(b, name))
        assert np.all(diff <= 1e-10 * getattr(b, "scale_" + name) + 1e-300), name


def test_large_variance_not_expanded(tanh):
    """An input with variance ~1e4 (unnormalised data): its pairs would need more than 1e6 quadrature nodes (and
    its one-input table more than 1e3), so they are marked unusable and the sets containing it are not accepted
    (they go to the nested quadrature); the pairs and sets of the other inputs are."""
    K = _gram(4, seed=6)
    K[0, :] *= 100.0
    K[:, 0] *= 100.0
    pairs = np.array(list(itertools.combinations(range(4), 2)))
    tab = pe.pair_tables(tanh.functions(1), K, pairs, np.array([[1, 0, 0, 0]]), np.array([[0, 0]]))
    assert list(tab.ok) == [False, False, False, True, True, True]
    res, _ = pe.expand(tanh.functions(1), K, {4: (np.array([[0, 1, 2, 3]]), fp.family_products(None, 4)),
                                              3: (np.array([[0, 1, 2], [1, 2, 3]]), fp.family_products(None, 3))}, 1e-10)
    assert not res[4].accepted[0] and not res[3].accepted[0] and res[3].accepted[1]


def test_sharp_activation_refused():
    """x (1 + erf(16 x)) / 2 varies on the scale 1/16, below the rule's step: the two rules disagree, the estimate
    exceeds tol and no set is accepted (all go to the nested quadrature) instead of returning wrong values."""
    kern = compile_activation(activation("x*(1 + erf(16*x))/2"))
    sets, sizes, _, _ = fp._all_sets(4)
    res, _ = pe.expand(kern.functions(1), _gram(4, seed=3),
                       {m: (sets[sizes == m][:, :m], fp.family_products(None, m)) for m in (4, 3)}, 1e-10)
    for r in res.values():
        assert not r.accepted.any()
        assert np.all(np.nanmax(r.errors / r.scales, axis=1) > 1e-10)


def test_kinked_activation_not_expanded():
    @numba.njit
    def s(z):
        return math.tanh(z)

    @numba.njit
    def ds(z):
        return 1.0 - math.tanh(z) ** 2

    kern = fp.compiled_pair(s, ds, kinks=(0.0,))
    r = fp.four_point_moments(kern, _gram(3), tol=1e-8)
    assert r.info["expansion"] == {}


def _h(n, x):
    return eval_hermitenorm(n, x) / math.sqrt(math.factorial(n))


def test_pair_coefficients_against_scipy(tanh):
    """F_(k, l) = E[tanh(z_a) tanh'(z_b) h_k(x_1) h_l(x_2)] (z = L x) of the pair tables against SciPy's
    adaptive dblquad (epsabs 1e-14), within the tables' error estimate (the norm of the two rules' difference)
    and 1e-13."""
    L11, L21, L22 = 1.3, -0.5, 0.8
    K = np.array([[L11 ** 2, L11 * L21], [L11 * L21, L21 ** 2 + L22 ** 2]])
    tab = pe.pair_tables(tanh.functions(1), K, np.array([[0, 1]]), np.array([[1, 0, 0, 0], [0, 1, 0, 0]]),
                         np.array([[0, 1]]))
    def phi(x):
        return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    for k, l in ((0, 0), (2, 1), (1, 4)):
        def f(x2, x1, k=k, l=l):
            return math.tanh(L11 * x1) / math.cosh(L21 * x1 + L22 * x2) ** 2 * _h(k, x1) * _h(l, x2) * phi(x1) * phi(x2)

        ref, rerr = integrate.dblquad(f, -12, 12, -12, 12, epsabs=1e-14, epsrel=1e-14)
        d = k + l
        got = tab.coef[0, 0, d * (d + 1) // 2 + k]
        assert abs(got - ref) <= tab.dnorm[0, 0, d] + rerr + 1e-16, (k, l, got, ref)
        assert abs(got - ref) <= 1e-13, (k, l, got, ref)


def test_single_coefficients_against_mpmath(tanh):
    """g_d = E[s'(sigma y) h_d(y)] of the one-input tables against mpmath at 25 digits."""
    K = np.array([[2.3]])
    tab = pe.single_tables(tanh.functions(1), K, np.array([[0, 1, 0, 0]]))
    sig = mpmath.sqrt(mpmath.mpf(2.3))
    with mpmath.workdps(25):
        for d in (0, 2, 7):
            def integrand(y, d=d):
                hd = mpmath.hermite(d, y / mpmath.sqrt(2)) / mpmath.sqrt(2 ** d * mpmath.factorial(d))
                return mpmath.sech(sig * y) ** 2 * hd * mpmath.npdf(y)

            ref = float(mpmath.quad(integrand, [-mpmath.inf, 0, mpmath.inf]))
            got = tab.g[0, 0, d]
            assert abs(got - ref) <= tab.err[0, 0, d] + 1e-16 and abs(got - ref) <= 1e-14, (d, got, ref)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["erf", "gelu", "softplus", "sigmoid", "sin"])
def test_library_activations_against_nested_quadrature(name):
    """Other smooth activations (entire, wider strips, linear growth, oscillating): every set of three and four
    inputs expanded, every entry within 1e-10 E|prod| of the nested quadrature and within the two estimates."""
    kern = compile_activation(activation(name))
    K = _gram(5, seed=2)
    a = fp.four_point_moments(kern, K, tol=1e-10, expansion=True)
    b = fp.four_point_moments(kern, K, tol=1e-10, expansion=False)
    assert a.info["expansion"]["sets4"] == 5 and a.info["expansion"]["sets3"] == 10
    for t in ("ssss", "ddss", "dddd"):
        diff = np.abs(getattr(a, t) - getattr(b, t))
        sc = getattr(b, "scale_" + t)
        assert np.all(diff <= getattr(a, "error_" + t) + getattr(b, "error_" + t) + 1e-15 * sc), t
        assert np.all(diff <= 1e-10 * sc), t


@pytest.mark.slow
def test_tanh_four_inputs_against_expectn(tanh):
    """One four-input set of a first-layer-like covariance (inputs in d = 5): ddss by the expansion against
    the NumPy nested tanh-sinh rule at tol 1e-10, within both estimates."""
    K = _gram(4, d=5, seed=7)
    r = fp.four_point_moments(tanh, K, tol=1e-10, expansion=True)
    assert r.info["expansion"]["sets4"] == 1
    ref = expectn([lambda z: 1 / np.cosh(z) ** 2] * 2 + [np.tanh] * 2, K, tol=1e-10)
    actual = abs(r.ddss[0, 1, 2, 3] - ref.value)
    assert actual <= r.error_ddss[0, 1, 2, 3] + ref.error, (r.ddss[0, 1, 2, 3], ref.value)
    assert actual <= 1e-10 * r.scale_ddss[0, 1, 2, 3] + ref.error


def test_default_route_by_cost_model(tanh, monkeypatch):
    """By default the expansion is taken only where its cost model predicts it cheaper: N = 3 (three pairs, one
    three-input set) by the nested quadrature, its values within both estimates (and 1e-12 E|prod|) of the forced
    expansion's (a different algorithm); N = 4 (six pairs, five sets) by the expansion.  A bad
    NTK_THEORY_FOURPOINT_EXPANSION is one ValueError."""
    monkeypatch.delenv("NTK_THEORY_FOURPOINT_EXPANSION", raising=False)
    K3 = _gram(3, seed=2)
    a = fp.four_point_moments(tanh, K3, tol=1e-12)
    assert a.info["expansion"] == {"route": "quadrature", "pairs": 3, "sets": 0}
    b = fp.four_point_moments(tanh, K3, tol=1e-12, expansion=True)
    assert b.info["expansion"]["sets3"] == 1
    for name in ("ssss", "ddss", "dddd"):
        diff = np.abs(getattr(a, name) - getattr(b, name))
        sc = getattr(a, "scale_" + name)
        assert np.all(diff <= getattr(a, "error_" + name) + getattr(b, "error_" + name) + 1e-15 * sc), name
        assert np.all(diff <= 1e-12 * sc), name
    groups4 = {4: (np.array([[0, 1, 2, 3]]), ()), 3: (np.array(list(itertools.combinations(range(4), 3))), ())}
    assert pe.count_pairs(groups4) == 6 and pe.cheaper_than_quadrature(groups4)
    assert not pe.cheaper_than_quadrature({3: (np.array([[0, 1, 2]]), ())})
    assert fp.four_point_moments(tanh, _gram(4, seed=1), tol=1e-10).info["expansion"]["sets4"] == 1
    monkeypatch.setenv("NTK_THEORY_FOURPOINT_EXPANSION", "yes")
    with pytest.raises(ValueError, match="NTK_THEORY_FOURPOINT_EXPANSION"):
        fp.four_point_moments(tanh, K3)
