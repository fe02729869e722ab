"""Gaussian moments of products of activation derivatives at N inputs (the four-point integrator's
s'' and s''' slots, ``derivative_moments``) and the dNTK/ddNTK averages routed through them, against
independent references: Isserlis/Wick (polynomial activations: exact, every entry), mpmath quadrature
at 30 digits (one-variable entries) and the NumPy nested tanh-sinh quadrature
``numerics.quadrature.expectn`` (two and four distinct inputs).  Each comparison also checks that the
actual error is within the reported estimate (plus the reference's own error)."""

import itertools

import mpmath
import numpy as np
import pytest
from wick import wick

from ntk_theory.activations import activation
from ntk_theory.finite_width import FiniteWidthRecursion
from ntk_theory.finite_width import dntk as dntk_module
from ntk_theory.gaussian.fourpoint import derivative_moments
from ntk_theory.numerics.quadrature import expectn


def _gram(n, d=10, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return 0.2 + 1.3 * X @ X.T / d


K4 = _gram(4, seed=3)
TANH_TERMS = ((2, 1, 1, 0), (3, 1, 1, 1), (2, 2, 1, 1), (2, 0), (3, 1), (2, 2))


def _check(value, error, ref, ref_err, scale, rel=1e-10):
    actual = abs(value - ref)
    assert actual <= error + ref_err + 1e-15 * max(1.0, scale), (value, ref, actual, error)
    assert actual <= rel * scale + ref_err + 1e-15, (value, ref, actual, rel * scale)


@pytest.fixture(scope="module")
def tanh4():
    return derivative_moments("tanh", K4, TANH_TERMS)


def test_cubic_every_entry_is_wick():
    """s = x^3: s' = 3x^2, s'' = 6x, s^(3) = 6; every entry of each term (N = 4, all index patterns: sets of
    one to four inputs, each factor at every position) by Isserlis' theorem."""
    K = K4
    powers = {0: (1.0, 3), 1: (3.0, 2), 2: (6.0, 1), 3: (6.0, 0)}
    terms = ((2, 1, 1, 0), (1, 2, 0, 1), (3, 1, 1, 1), (2, 2, 1, 1), (2, 0), (0, 3))
    r = derivative_moments("monomial(3)", K, terms)
    for term in terms:
        for idx in itertools.product(range(4), repeat=len(term)):
            coef, ind = 1.0, []
            for o, a in zip(term, idx):
                c, p = powers[o]
                coef *= c
                ind += [a] * p
            ref = coef * wick(K, tuple(ind))
            scale = max(r.scales[term][idx], abs(ref))
            _check(r.values[term][idx], r.errors[term][idx], ref, 0.0, scale, rel=1e-11)


def _mp_one(fs, var):
    """E[prod f(z)], z ~ N(0, var), by mpmath at 30 digits."""
    with mpmath.workdps(30):
        sd = mpmath.sqrt(var)
        g = lambda u: mpmath.npdf(u) * mpmath.fprod(f(sd * u) for f in fs)
        return float(mpmath.quad(g, [-mpmath.inf, -3, 0, 3, mpmath.inf]))


_TANH_MP = {0: mpmath.tanh, 1: lambda z: mpmath.sech(z) ** 2, 2: lambda z: -2 * mpmath.tanh(z) * mpmath.sech(z) ** 2,
            3: lambda z: (4 * mpmath.tanh(z) ** 2 - 2 * mpmath.sech(z) ** 2) * mpmath.sech(z) ** 2}


def test_tanh_one_variable_entries_vs_mpmath(tanh4):
    for term in TANH_TERMS:
        for a in range(4):
            idx = (a,) * len(term)
            ref = _mp_one([_TANH_MP[o] for o in term], K4[a, a])
            _check(tanh4.values[term][idx], tanh4.errors[term][idx], ref, 1e-25, tanh4.scales[term][idx])


def test_small_variance_level_is_refined():
    """A set of one input with variance 0.27 (|L| = 0.52): the trapezoidal step of that level is at its cap, which
    stayed fixed while the step was refined, so two equal rules reported 1e-13 for an actual error of 2e-5 in
    <s^(3) s'^3> (with <s'' s'^2 s> in the same family); the cap now shrinks with the step."""
    var = 0.27040187
    r = derivative_moments("tanh", np.array([[var]]), ((3, 1, 1, 1), (2, 1, 1, 0)))
    for term in ((3, 1, 1, 1), (2, 1, 1, 0)):
        ref = _mp_one([_TANH_MP[o] for o in term], var)
        _check(r.values[term][0, 0, 0, 0], r.errors[term][0, 0, 0, 0], ref, 1e-25, r.scales[term][0, 0, 0, 0])


def _tanh_numpy():
    act = activation("tanh")
    return {0: act.numpy, 1: act.numpy_derivative, 2: lambda z: -2 * np.tanh(z) / np.cosh(z) ** 2,
            3: lambda z: (4 * np.tanh(z) ** 2 - 2 / np.cosh(z) ** 2) / np.cosh(z) ** 2}


def test_tanh_two_variable_entries_vs_nested_quadrature(tanh4):
    """Entries of two distinct inputs (doubled factors at either) against expectn in two dimensions."""
    fns = _tanh_numpy()
    for term, idx in (((2, 1, 1, 0), (0, 0, 1, 1)), ((2, 1, 1, 0), (3, 2, 2, 3)), ((2, 2, 1, 1), (1, 2, 2, 2)),
                      ((3, 1), (2, 3)), ((2, 2), (0, 3))):
        ref = expectn([fns[o] for o in term], K4[np.ix_(idx, idx)], tol=1e-12)
        _check(tanh4.values[term][idx], tanh4.errors[term][idx], ref.value, ref.error, tanh4.scales[term][idx])


@pytest.mark.slow
def test_tanh_four_distinct_inputs_vs_nested_quadrature(tanh4):
    """An entry with four distinct inputs (s^(3) at one of them) against expectn in four dimensions (slow: its
    nested rule; the cubic's Wick test covers every entry of every term)."""
    fns = _tanh_numpy()
    for term, idx in (((3, 1, 1, 1), (1, 0, 3, 2)),):
        ref = expectn([fns[o] for o in term], K4[np.ix_(idx, idx)], tol=1e-10)
        _check(tanh4.values[term][idx], tanh4.errors[term][idx], ref.value, ref.error, tanh4.scales[term][idx])


def test_terms_share_one_integration_and_permute_consistently(tanh4):
    """A term and its index permutation are the same expectation: T_(1201)[a,b,c,d] = T_(2110)[b,a,d,c]."""
    r = derivative_moments("tanh", K4[:3, :3], ((1, 2, 0, 1), (2, 1, 1, 0)))
    assert np.array_equal(r[(1, 2, 0, 1)], np.einsum("badc->abcd", r[(2, 1, 1, 0)]))
    assert np.allclose(r[(2, 1, 1, 0)], tanh4[(2, 1, 1, 0)][:3, :3, :3, :3], rtol=0, atol=2e-11)


def test_reordered_terms_reuse_the_cached_integration():
    """The dNTK's averages cached, the ddNTK's reorderings of them are the cached tensors transposed (equal to a
    direct integration of the reordered terms within their error estimates); new order multisets are integrated."""
    act = activation("tanh")
    K = K4[:3, :3] * 0.9
    dntk_module.derivative_averages(act, K, dntk_module.DNTK_TERMS)
    later = dntk_module.derivative_averages(act, K, ((2, 0, 1, 1), (1, 2, 0, 1), (1, 1, 0, 0), (2, 2, 1, 1)))
    direct = derivative_moments("tanh", K, tuple(later))
    for term, (M, err) in later.items():
        assert np.max(np.abs(M - direct[term])) <= err + float(np.max(direct.errors[term])) + 1e-15


@pytest.mark.parametrize("terms, match", [((), "empty"), (((4, 0),), "0..3"), (((1, 1, 1, 1, 1),), "1 to 4"),
                                          ((("a", 1),), "integer")])
def test_bad_terms_are_refused(terms, match):
    with pytest.raises(ValueError, match=match):
        derivative_moments("tanh", K4[:2, :2], terms)


# ---------------------------------------------------------------------------------------------- dNTK / ddNTK


X2 = np.random.default_rng(5).standard_normal((2, 3))


def test_dntk_ddntk_compiled_route_matches_the_nested_route():
    """P, Q and R, S, T, U at two inputs, depth 2: the compiled averages against the entry-by-entry expectn
    route (the previous implementation), to 1e-10 of each tensor's largest entry."""
    new = FiniteWidthRecursion("tanh", 2, C_W=1.4, C_b=0.1)
    old = FiniteWidthRecursion("tanh", 2, C_W=1.4, C_b=0.1)
    for a, b in zip(new.dntk(X2), old.dntk(X2, route="nested"), strict=True):
        for u, v in ((a.P, b.P), (a.Q, b.Q)):
            assert np.max(np.abs(u - v)) <= 1e-10 * max(np.max(np.abs(v)), 1e-300)
    for a, b in zip(new.ddntk(X2), old.ddntk(X2, route="nested"), strict=True):
        for u, v in ((a.R, b.R), (a.S, b.S), (a.T, b.T), (a.U, b.U)):
            assert np.max(np.abs(u - v)) <= 1e-10 * max(np.max(np.abs(v)), 1e-300)


def test_ddntk_reuses_the_dntk_of_the_same_recursion(monkeypatch):
    """After rec.dntk(X), rec.ddntk(X) takes P, Q and the states from rec (no dNTK step runs again); changing
    a parameter of rec recomputes them (equal to a fresh recursion's)."""
    rec = FiniteWidthRecursion("tanh", 2, C_W=1.4, C_b=0.1)
    rec.dntk(X2)

    def fail(*args, **kwargs):
        raise AssertionError("the dNTK step ran again")

    with monkeypatch.context() as m:
        m.setattr(dntk_module, "tensor_step", fail)
        m.setattr(FiniteWidthRecursion, "tensors", fail)
        rec.ddntk(X2)
    rec.C_W = (1.4, 1.4, 1.1)
    fresh = FiniteWidthRecursion("tanh", 2, C_W=[1.4, 1.4, 1.1], C_b=0.1)
    assert np.array_equal(rec.ddntk(X2)[-1].R, fresh.ddntk(X2)[-1].R)
    assert np.array_equal(rec.dntk(X2)[-1].Q, fresh.dntk(X2)[-1].Q)


def test_bad_route_is_refused():
    with pytest.raises(ValueError, match="route must be one of"):
        FiniteWidthRecursion("tanh", 1).ddntk(X2, route="fast")
