"""Verdicts that can fail: an entry whose Monte Carlo standard error is 0 or NaN, or whose estimate is NaN, fails
(it used to get z = 0 and pass); check --finite-width compares every distinct entry (it used to stop at 6 per
quantity).  The Monte Carlo and the predictions are stubs here, so each verdict is known in advance."""

import types

import numpy as np
import pytest

import ntk_theory.validation.finite_width as vfw
import ntk_theory.validation.infinite_width as viw
from ntk_theory.montecarlo import Estimate, MonteCarloResult
from ntk_theory.recursions import KernelRecursion
from ntk_theory.validation import (
    WidthFit,
    check,
    check_finite_width,
    passes,
    weighted_fit,
    z_score,
)

X2 = np.array([[1.0, 0.0], [0.6, 0.8]])


def _stub_sampler(value_of, stderr_of):
    """sample_statistics returning E[f f] and E[Theta] = value_of(prediction) +- stderr_of(prediction), the
    prediction being the infinite-width kernel (computed here by the recursion)."""
    def sample_statistics(X, activation, depth, width, C_W, C_b, param, **kw):
        pred = KernelRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param)(X)
        est = {name: Estimate(name, value_of(getattr(pred, attr)), stderr_of(getattr(pred, attr)))
               for name, attr in (("output_second_moment", "nngp"), ("ntk_mean", "ntk"))}
        return MonteCarloResult(est, X, {"samples": kw.get("samples")})
    return sample_statistics


@pytest.mark.parametrize("case, value_of, stderr_of, reason", [
    ("zero SE", lambda p: p * 1.0, lambda p: np.zeros_like(p), "FAIL (standard error 0)"),
    ("NaN SE", lambda p: p * 1.0, lambda p: np.full_like(p, np.nan), "FAIL (standard error not finite)"),
    ("NaN estimate", lambda p: np.where(np.eye(2) > 0, np.nan, p), lambda p: 0.01 * np.abs(p), "FAIL"),
])
def test_check_fails_without_a_standard_error(monkeypatch, case, value_of, stderr_of, reason):
    monkeypatch.setattr(viw, "sample_statistics", _stub_sampler(value_of, stderr_of))
    r = check("relu", X2, depth=1, widths=(32, 64), samples=640, progress=False)
    assert not r.monte_carlo_passed and not r.passed, case
    assert reason in r.table() and r.table().splitlines()[-1].endswith("FAIL")


def test_check_passes_exact_stub_and_zero_predictions(monkeypatch):
    """The control: estimates equal to the prediction with 1% errors pass; a zero prediction (orthogonal inputs,
    odd activation, no bias) is judged relative to sqrt(K_aa K_bb), not divided by 0."""
    monkeypatch.setattr(viw, "sample_statistics", _stub_sampler(lambda p: p * 1.0, lambda p: 0.01 + 0.01 * np.abs(p)))
    r = check("relu", X2, depth=1, widths=(32, 64), samples=640, progress=False)
    assert r.passed and all(row.z == 0 for row in r.rows)
    Xo = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = check("erf", Xo, depth=1, C_W=1.5, C_b=0.0, widths=(32, 64), samples=640, progress=False)
    off = next(row for row in r.rows if row.quantity == "E[f f]" and row.entry == (0, 1))
    assert off.prediction == 0 and off.scale > 0 and np.isfinite(off.z) and r.passed


def test_z_score_and_passes():
    assert z_score(1.0, 0.5, 0.25) == 2.0 and passes(2.0, 4.0)
    for se in (0.0, -1.0, np.nan, np.inf):
        assert np.isnan(z_score(1.0, 1.0, se)) and not passes(z_score(1.0, 1.0, se), 4.0)
    assert np.isnan(z_score(np.nan, 1.0, 1.0)) and not passes(np.nan, 4.0)
    assert Estimate("x", np.array([1.0, 1.0]), np.array([0.0, 0.5])).z_score(0.5)[0] != 0  # NaN, not 0


def test_weighted_fit_two_widths_and_a_missing_standard_error():
    """Two widths determine a + b/n exactly: a = (n1 y1 - n2 y2)/(n1 - n2), Var(a) = (n1^2 e1^2 + n2^2 e2^2)/(n1 - n2)^2.
    An entry with a zero or NaN standard error at some width gets NaN coefficients (other entries unaffected)."""
    n = np.array([32.0, 64.0])
    y = np.stack([1 + 2 / n, 3 - 1 / n, 1 + 2 / n], axis=1)
    e = np.array([[0.01, 0.0, np.nan], [0.02, 0.02, 0.02]])
    (a, b), (sa, _), _ = weighted_fit(n, y, e, [0, 1])
    assert a[0] == pytest.approx(1.0, rel=1e-12) and b[0] == pytest.approx(2.0, rel=1e-12)
    assert sa[0] == pytest.approx(np.sqrt(32**2 * 0.01**2 + 64**2 * 0.02**2) / 32, rel=1e-12)
    assert np.all(np.isnan([a[1], a[2], sa[1], sa[2]]))


# --------------------------------------------------------------------------- finite width
def _stub_prediction(N, rng):
    sym2 = lambda T: (T + T.T) / 2
    t4 = lambda: rng.standard_normal((N,) * 4)
    from ntk_theory.montecarlo import symmetrise

    return types.SimpleNamespace(
        nngp=np.eye(N) + 0.5, ntk=2 * np.eye(N) + 1.0, nngp_correction=sym2(rng.standard_normal((N, N))),
        ntk_correction=sym2(rng.standard_normal((N, N))), V=symmetrise(t4(), "pp"), A=symmetrise(t4(), "pp"),
        B=symmetrise(t4(), "B"), D=symmetrise(t4(), "D"), F=symmetrise(t4(), "F"), description="stub")


def _stub_fit(pred, stderr):
    est = {name: Estimate(name, np.array(getattr(pred, attr), dtype=float), np.full(np.shape(getattr(pred, attr)),
                                                                                     stderr))
           for name, attr in vfw.COMPARED.items()}
    return WidthFit(est, {}, {}, [32, 64], [], {})


@pytest.mark.parametrize("N, counts", [
    # distinct entries by hand (Burnside): K1, Theta1 N(N+1)/2; V, A P(P+1)/2 with P = N(N+1)/2; B (N^4 + 3N^2)/4;
    # D P^2; F (N^4 + N^2)/2
    (2, {"K1": 3, "ntk1": 3, "V": 6, "A": 6, "B": 7, "D": 9, "F": 10}),
    (3, {"K1": 6, "ntk1": 6, "V": 21, "A": 21, "B": 27, "D": 36, "F": 45}),
])
def test_finite_width_check_compares_every_distinct_entry(monkeypatch, N, counts):
    pred = _stub_prediction(N, np.random.default_rng(N))
    monkeypatch.setattr(vfw, "finite_width", lambda *a, **k: pred)
    monkeypatch.setattr(vfw, "fit_inverse_width", lambda *a, **k: _stub_fit(pred, 0.1))
    r = check_finite_width("relu", np.eye(N, 3), 2, samples=100, progress=False)
    got = {}
    for name, *_ in r.rows:
        got[name] = got.get(name, 0) + 1
    assert got == counts and r.passed
    assert f"{sum(counts.values())} entries" in r.table()
    short = r.table(max_rows=2)
    assert "more F entries compared" in short and len(short.splitlines()) < len(r.table().splitlines())


@pytest.mark.parametrize("stderr, reason", [(0.0, "FAIL (standard error 0)"), (np.nan, "FAIL (standard error not finite)")],
                         ids=["zero", "nan"])
def test_finite_width_check_fails_on_a_missing_se(monkeypatch, stderr, reason):
    """One entry of F without a standard error: the check fails, that row says why (before: K1/Theta1 entries
    with SE 0 were skipped and others got z = 0)."""
    pred = _stub_prediction(2, np.random.default_rng(0))
    fit = _stub_fit(pred, 0.1)
    fit["F"].stderr[0, 1, 0, 1] = stderr
    fit["K1"].stderr[0, 0] = stderr
    monkeypatch.setattr(vfw, "finite_width", lambda *a, **k: pred)
    monkeypatch.setattr(vfw, "fit_inverse_width", lambda *a, **k: fit)
    r = check_finite_width("relu", X2, 2, samples=100, progress=False)
    assert not r.passed
    bad = [row for row in r.rows if not passes(row[5], r.sigmas)]
    assert [(row[0], row[1]) for row in bad] == [("K1", (0, 0)), ("F", (0, 1, 0, 1))]
    assert r.table().count(reason) == 2 and "2 FAIL" in r.table()
