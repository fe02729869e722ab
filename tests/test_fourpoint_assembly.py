"""The vectorised set bookkeeping of the four-point moments (ntk_theory.numerics.fourpoint: entry ->
(set, product) maps, batched pivoted Cholesky, level-structure tables) against independent
references at more inputs than the reference tests use: Isserlis' theorem (linear activation,
every entry pattern of sizes 1..4), per-entry orthant moments of the distinct inputs' covariance
(ReLU, singular and regular K), the defining property K_S = L L^T of each factor, and the NumPy
form of Plackett's integrand for the compiled one."""

import itertools

import numpy as np
import pytest

from ntk_theory.gaussian.fourpoint import four_point_moments
from ntk_theory.numerics import fourpoint as fp
from ntk_theory.numerics import orthant
from ntk_theory.numerics.cholesky import pivoted_cholesky
from wick import wick


def _gram(n, d, seed=0, cb=0.0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return cb + X @ X.T / d


def test_linear_isserlis_seven_inputs():
    K = _gram(7, 10, seed=3)
    r = four_point_moments("linear", K)
    N = 7
    for a, b, c, d in itertools.product(range(N), repeat=4):
        ref = wick(K, (a, b, c, d))
        assert abs(r.ssss[a, b, c, d] - ref) <= 1e-12 * 3.0 + r.error_ssss[a, b, c, d], (a, b, c, d)
        assert abs(r.ddss[a, b, c, d] - K[c, d]) <= 1e-12 + r.error_ddss[a, b, c, d]
        assert abs(r.dddd[a, b, c, d] - 1.0) <= 1e-12
    assert np.allclose(r.ss, K, atol=1e-14) and np.allclose(r.dd, 1.0, atol=1e-14)


@pytest.mark.parametrize("d, cb", [(3, 0.0), (6, 0.1)], ids=["singular", "regular"])
def test_relu_entries_against_per_entry_orthant_moments(d, cb):
    """Each sampled entry equals E[prod s^p s'^q] of the covariance of its distinct inputs, computed
    entry by entry (orthant.piecewise_linear_moment on the sub-matrix, its powers counted from the
    index tuple): at 1e-12 relative to E|prod| plus the two error estimates."""
    N = 9
    K = _gram(N, d, seed=5, cb=cb)
    r = four_point_moments("relu", K)
    rng = np.random.default_rng(0)
    for name, tensor, err in (("ssss", r.ssss, r.error_ssss), ("ddss", r.ddss, r.error_ddss),
                              ("dddd", r.dddd, r.error_dddd)):
        idx = [tuple(rng.integers(0, N, 4)) for _ in range(60)] + [(1, 1, 1, 1), (2, 3, 2, 3), (4, 4, 5, 6)]
        for ix in idx:
            S = sorted(set(ix))
            powers = []
            for i in S:
                p = sum(1 for pos, j in enumerate(ix) if j == i and name[pos] == "s")
                q = sum(1 for pos, j in enumerate(ix) if j == i and name[pos] == "d")
                powers.append((p, q))
            try:
                v, e, scale = orthant.piecewise_linear_moment(K[np.ix_(S, S)], tuple(powers), 0.0, 1.0)
            except ValueError:  # left to the numerical integrator: no exact per-entry reference
                continue
            assert abs(tensor[ix] - v) <= 1e-12 * scale + e + err[ix], (name, ix, tensor[ix], v)


def test_batched_pivoted_cholesky():
    """K_S = L L^T with rows of L zero beyond each variable's level, the rank of K_S, and the same
    factor as the one-matrix routine (rank-deficient sets by repeated and proportional rows)."""
    rng = np.random.default_rng(1)
    mats = []
    for t in range(40):
        X = rng.standard_normal((4, 2 + t % 4))
        if t % 5 == 0:
            X[3] = -0.5 * X[1]
        if t % 7 == 0:
            X[2] = X[0]
        mats.append(X @ X.T)
    Ks = np.stack(mats)
    L, rank, levels = fp._batched_pivoted_cholesky(Ks)
    for t in range(Ks.shape[0]):
        assert np.allclose(L[t] @ L[t].T, Ks[t], rtol=0, atol=1e-13 * np.max(np.abs(Ks[t])))
        assert rank[t] == np.linalg.matrix_rank(Ks[t], tol=1e-10 * np.max(np.abs(Ks[t])))
        for v in range(4):
            assert np.all(L[t, v, levels[t, v] + 1:] == 0.0)
        L1, lev1 = pivoted_cholesky(Ks[t])
        assert L1.shape[1] == rank[t]
        assert np.allclose(L[t, :, :rank[t]], L1, rtol=0, atol=1e-15 * np.max(np.abs(Ks[t])))
        assert np.array_equal(levels[t], lev1)


def test_index_maps_cover_every_set_and_product():
    """Every (set, product) of products(m) is addressed by some entry of the tensors, and each
    entry's set is the set of its distinct indices."""
    N = 6
    sets, sizes, _, _ = fp._all_sets(N)
    maps = fp._index_maps(N)
    seen = set()
    for nm, (t, c) in maps.items():
        n = len(nm)
        grid = np.indices((N,) * n).reshape(n, -1).T
        for row, tt, cc in zip(grid[::7], t[::7], c[::7]):
            assert tuple(sorted(set(row.tolist()))) == tuple(sets[tt, :sizes[tt]].tolist())
        seen.update(zip(t.tolist(), c.tolist()))
    for tt in range(sizes.size):
        for cc in range(len(fp.products(int(sizes[tt])))):
            assert (tt, cc) in seen


def test_compiled_plackett_integrand_equals_numpy():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 4, 6))
    S = X @ np.swapaxes(X, 1, 2)
    d = np.sqrt(np.einsum("tii->ti", S))
    R = S / (d[:, :, None] * d[:, None, :])
    r = R[:, 0, 2]
    th = np.arcsin(r)[:, None] * np.linspace(0.01, 1.0, 21)[None, :]
    a = orthant._plackett_integrand(R, 0, 2, 1, 3, th, r)
    b = orthant._plackett_integrand_numpy(R, 0, 2, 1, 3, th, r)
    assert np.allclose(a, b, rtol=0, atol=1e-14)
