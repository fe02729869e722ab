"""The check's numerical cross-check: the independent polar quadrature (ntk_theory/montecarlo/quadrature.py)
against published closed forms and scipy's adaptive 2-D quadrature, and the cross-check's teeth (a float64
result off by 1e-7 fails it); mpmath only on request; the check's plots."""

import numpy as np
import pytest
from scipy import integrate

from ntk_theory.montecarlo.quadrature import (
    gaussian_pair_expectations,
    quadrature_kernels,
)
from ntk_theory.recursions import KernelRecursion
from ntk_theory.reference import numpy_activation
from ntk_theory.validation import check, crosscheck

RELU, ERF, TANH = (numpy_activation(a) for a in ("relu", "erf", "tanh"))


def _cov(k11, k22, rho):
    return k11, k22, rho * np.sqrt(k11 * k22)


@pytest.mark.parametrize("rho", [0.5, -0.3, 0.999999, -0.9999999, 0.0])
def test_relu_against_the_arc_cosine_kernel(rho):
    """Cho & Saul 2009: E[relu relu] = sqrt(k11 k22) (sin t + (pi - t) cos t) / (2 pi), E[step step] = (pi - t)/(2 pi),
    t the angle of the float64 covariance taken exactly (mpmath).  Tolerance: 1e-13 plus the conditioning of the
    angle near rho = +-1 (float64 k11 k22 - k12^2 carries 1e-16 / (1 - rho^2) relative error)."""
    import mpmath

    k11, k22, k12 = _cov(1.7, 0.6, rho)
    with mpmath.workdps(40):
        a, b, c = (mpmath.mpf(float(v)) for v in (k11, k22, k12))
        t = mpmath.acos(c / mpmath.sqrt(a * b))
        ref_ss = float(mpmath.sqrt(a * b) * (mpmath.sin(t) + (mpmath.pi - t) * mpmath.cos(t)) / (2 * mpmath.pi))
        ref_dd = float((mpmath.pi - t) / (2 * mpmath.pi))
    rel = 1e-13 + 1e-15 / (1 - rho * rho)
    ss, dd = gaussian_pair_expectations(RELU, k11, k22, k12)
    assert ss == pytest.approx(ref_ss, rel=rel, abs=1e-16)
    assert dd == pytest.approx(ref_dd, rel=rel, abs=1e-16)


def test_diagonal_is_exact():
    """u = v exactly (same=True): E[relu(u)^2] = k/2, E[step(u)^2] = 1/2 (no arccos of a rounded 1)."""
    ss, dd = gaussian_pair_expectations(RELU, 2.3, 2.3, 2.3, same=True)
    assert ss == pytest.approx(2.3 / 2, rel=1e-14)
    assert dd == pytest.approx(0.5, rel=1e-14)


@pytest.mark.parametrize("rho", [0.8, -0.95, 0.9999])
def test_erf_against_williams(rho):
    """Williams 1997: E[erf erf] = (2/pi) asin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))),
    E[erf' erf'] = (4/pi) / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12^2)."""
    k11, k22, k12 = _cov(3.0, 0.4, rho)
    ss, dd = gaussian_pair_expectations(ERF, k11, k22, k12)
    a, b = 1 + 2 * k11, 1 + 2 * k22
    assert ss == pytest.approx(2 / np.pi * np.arcsin(2 * k12 / np.sqrt(a * b)), rel=1e-13)
    assert dd == pytest.approx(4 / np.pi / np.sqrt(a * b - 4 * k12 * k12), rel=1e-13)


def test_tanh_against_scipy_dblquad():
    """No closed form: scipy's adaptive 2-D quadrature of the whitened density at a tight tolerance."""
    k11, k22, k12 = _cov(4.0, 1.5, 0.7)
    A, B = np.sqrt(k11), np.sqrt(k22)
    rho = k12 / (A * B)
    s = np.sqrt(1 - rho * rho)
    phi = lambda x: np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    for f, index in ((TANH.value, 0), (TANH.derivative, 1)):
        ref, err = integrate.dblquad(lambda y, x, f=f: f(A * x) * f(B * (rho * x + s * y)) * phi(x) * phi(y),
                                     -12, 12, -12, 12, epsabs=1e-14, epsrel=1e-13)
        assert gaussian_pair_expectations(TANH, k11, k22, k12)[index] == pytest.approx(ref, rel=1e-11, abs=10 * err)


def test_quadrature_kernels_error_estimate_flags_a_kink_off_zero():
    """A user pair with a kink at 0.5 (not a panel edge): the estimate is large and covers the actual error
    against the same recursion with scipy's adaptive quadrature split at the kink."""
    shift = (lambda z: np.maximum(z - 0.5, 0.0), lambda z: (z > 0.5).astype(float))
    X = np.array([[1.0, 0.0], [0.6, 0.8]])
    q = quadrature_kernels(shift, X, 1, C_W=2.0, C_b=0.0, param="unit")
    # layer 1: K = 2 x.x/2 (C_b = 0); E[s(u)^2] one-dimensional, split at the kink u = 0.5
    K = 2.0 * (X @ X.T) / 2
    phi = lambda x: np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    a = 0.5 / np.sqrt(K[0, 0])
    ref = integrate.quad(lambda x: (np.sqrt(K[0, 0]) * x - 0.5) ** 2 * phi(x), a, 12, epsabs=1e-15, epsrel=1e-13)[0]
    actual = abs(q["nngp"][0, 0] - 2.0 * ref)
    assert q["nngp_error"][0, 0] >= actual
    assert q["nngp_error"].max() > 1e-9  # algebraic convergence shows in the estimate


def test_crosscheck_catches_a_wrong_float64_value():
    X = np.array([[1.0, 0.2, -0.4], [0.3, 1.1, 0.5], [-0.7, 0.1, 0.9]])
    f64 = KernelRecursion("tanh", 3, C_W=1.8, C_b=0.05)(X)
    good = crosscheck("tanh", X, 3, C_W=1.8, C_b=0.05, param="ntk", width=None, f64=f64)
    assert good["crosscheck_passed"] and good["f64_vs_quadrature"] < 1e-12
    f64.ntk[0, 2] *= 1 + 1e-7
    bad = crosscheck("tanh", X, 3, C_W=1.8, C_b=0.05, param="ntk", width=None, f64=f64)
    assert not bad["crosscheck_passed"] and bad["f64_vs_quadrature"] == pytest.approx(1e-7, rel=1e-3)


def test_crosscheck_standard_parameterization():
    """param='standard': lambda_W = n_(l-1), the prediction at the largest width."""
    X = np.array([[1.0, 0.0], [0.5, 0.5]])
    f64 = KernelRecursion("erf", 2, C_W=1.5, C_b=0.1, param="standard", widths=128)(X)
    assert crosscheck("erf", X, 2, C_W=1.5, C_b=0.1, param="standard", width=128, f64=f64)["crosscheck_passed"]


def test_check_reports_the_crosscheck_and_mpmath_on_request():
    r = check("erf", depth=1, C_W=1.5, C_b=0.1, widths=(32, 64), samples=640, seed=1, progress=False)
    assert "f64_vs_mp" not in r.info and r.crosscheck_passed
    assert "float64 vs independent quadrature" in r.table()
    r = check("erf", depth=1, C_W=1.5, C_b=0.1, widths=(32, 64), samples=640, seed=1, progress=False, mp_check=True)
    assert r.info["f64_vs_mp"] < 1e-13  # closed form in float64 vs 30-digit mpmath
    assert "float64 vs mpmath (30 digits)" in r.table()


def test_check_plot(tmp_path):
    pytest.importorskip("matplotlib")
    r = check("relu", depth=1, widths=(32, 64), samples=640, seed=0, progress=False)
    fig = r.plot(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(r.rows) == 6
    # the plotted points are the Monte Carlo estimates at x = 1/n
    ax, row = visible[1], r.rows[1]
    xy = np.asarray(ax.containers[0].lines[0].get_xydata())
    assert np.allclose(sorted(xy[:, 0]), sorted(1 / np.array([32.0, 64.0])))
    assert np.allclose(sorted(xy[:, 1]), sorted(v for _, v, _ in row.estimates))


def test_finite_width_check_plot(tmp_path):
    """Each compared entry: the per-width Monte Carlo values against 1/n (for K1: n (E[z z] - K), whose 1/n fit
    reaches K1 at 1/n = 0), as the runs recorded them."""
    pytest.importorskip("matplotlib")
    from ntk_theory.validation import check_finite_width

    X = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4]])
    r = check_finite_width("relu", X, 2, C_W=2.0, C_b=0.0, param="ntk", widths=(32, 64), samples=1000, seed=0, progress=False)
    fig = r.plot(tmp_path / "fw.png")
    assert (tmp_path / "fw.png").stat().st_size > 0
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(r.rows)
    n = np.array([32.0, 64.0])
    for ax, (name, idx, *_rest) in zip(visible, r.rows):
        xy = np.asarray(ax.containers[0].lines[0].get_xydata())
        assert np.allclose(xy[:, 0], 1 / n)
        if name == "K1":
            expected = [n_ * (run["K"].value[idx] - r.fit["K"].value[idx]) for n_, run in zip(n, r.fit.runs)]
        elif name == "ntk1":
            expected = [n_ * (run["ntk"].value[idx] - r.fit["ntk"].value[idx]) for n_, run in zip(n, r.fit.runs)]
        else:
            expected = [run[name].value[idx] for run in r.fit.runs]
        assert np.allclose(xy[:, 1], expected)
