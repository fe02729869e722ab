"""The block runner and the delete-one-batch jackknife (ntk_theory/montecarlo/estimate.py) against closed-form
sampling variances: the mean of normals (Var = sigma^2 / S) and the sample variance (Var = 2 sigma^4 / (S - 1)),
averaged over independent replicas so that the test resolves a few percent."""

import numpy as np
import pytest

from ntk_theory.montecarlo import batch_sums, distinct_entries, jackknife, run_blocks

SIGMA, MU = 1.7, 0.4


def _normals(rng, S):
    x = MU + SIGMA * rng.standard_normal((S, 1))
    return {"x": x, "x2": x * x}


def _mean(means, count):
    return {"mean": means["x"]}


def _variance(means, count):
    return {"var": (means["x2"] - means["x"] ** 2) * count / (count - 1)}


def _replicas(estimator, R=200, S=3200, B=32, seed=0):
    values, se2 = [], []
    for k in range(R):
        sums = run_blocks(_normals, S, B, block=512, seed=[seed, k])
        v, e = jackknife(sums, estimator)
        (name,) = v
        values.append(float(v[name][0]))
        se2.append(float(e[name][0]) ** 2)
    return np.array(values), np.array(se2)


def test_jackknife_of_the_mean_is_sigma_over_root_S():
    """E[SE^2] = sigma^2 / S exactly for equal batches; the replicas' mean of SE^2 / (sigma^2 / S) is within
    4 of its own standard errors of 1, and so is the scatter of the replicas' means."""
    S, R = 3200, 200
    values, se2 = _replicas(_mean, R, S)
    ratio = se2 / (SIGMA**2 / S)
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / np.sqrt(R)
    # the estimates scatter as the closed form says (chi^2 with R - 1 dof: relative SE of the variance sqrt(2/(R-1)))
    assert abs(values.var(ddof=1) / (SIGMA**2 / S) - 1) < 4 * np.sqrt(2 / (R - 1))
    assert abs(values.mean() - MU) < 4 * SIGMA / np.sqrt(S * R)


def test_jackknife_of_a_nonlinear_estimator_sample_variance():
    """s^2 = (mean x^2 - mean x ^2) S/(S-1) of N(mu, sigma^2): Var(s^2) = 2 sigma^4 / (S - 1).  The jackknife,
    which needs no derivative of the estimator, agrees within its O(1/S) bias and the replicas' spread."""
    S, R = 3200, 200
    values, se2 = _replicas(_variance, R, S, seed=1)
    exact = 2 * SIGMA**4 / (S - 1)
    ratio = se2 / exact
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / np.sqrt(R) + 2 / S
    assert abs(values.var(ddof=1) / exact - 1) < 4 * np.sqrt(2 / (R - 1))
    assert abs(values.mean() - SIGMA**2) < 4 * np.sqrt(exact / R)


def test_run_blocks_is_independent_of_threads_and_adds_products():
    def block(rng, S):
        x = rng.standard_normal((S, 3))
        return {"x": x}

    a = run_blocks(block, 1000, 8, block=64, seed=5, workers=1, products=[("xx", "x", "x"), ("absent", "x", "y")])
    b = run_blocks(block, 1000, 8, block=64, seed=5, workers=3, products=[("xx", "x", "x"), ("absent", "x", "y")])
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys() == {"count", "x", "xx"}
        for key in sa:
            assert np.array_equal(sa[key], sb[key])
    assert [s["count"] for s in a] == [125] * 8
    # the sums are those of the concatenated draws: batch b holds networks 125 b .. 125 b + 124
    seeds = np.random.SeedSequence(5).spawn(16)
    x = np.concatenate([block(np.random.default_rng(seeds[k]), min(64, 1000 - 64 * k))["x"] for k in range(16)])
    direct = batch_sums({"x": x}, (np.arange(1000) * 8) // 1000, [("xx", "x", "x")])
    for b_ in range(8):
        assert np.allclose(a[b_]["x"], direct[b_]["x"], rtol=1e-13)
        assert np.allclose(a[b_]["xx"], x[125 * b_:125 * (b_ + 1)].T @ x[125 * b_:125 * (b_ + 1)], rtol=1e-13)


@pytest.mark.parametrize("N, symmetry, count", [
    # orbit counts by Burnside's lemma, written out by hand: N^4 entries, fixed points of each permutation
    (2, "pp", 6), (3, "pp", 21),            # unordered pairs of unordered pairs: P (P + 1) / 2, P = N (N + 1) / 2
    (2, "D", 9), (3, "D", 36),              # P^2
    (2, "F", 10), (3, "F", 45),             # (N^4 + N^2) / 2
    (2, "B", 7), (3, "B", 27),              # (N^4 + 3 N^2) / 4
    (3, "full", 15), (3, "pair", 6),        # C(N + 3, 4); N (N + 1) / 2
])
def test_distinct_entries_counts(N, symmetry, count):
    shape = (N, N) if symmetry == "pair" else (N,) * 4
    keys = distinct_entries(shape, symmetry)
    assert len(keys) == len(set(keys)) == count
