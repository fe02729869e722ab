"""The accuracy policy: a result whose error estimate exceeds its requested tolerance is returned with one
``ntk_theory.AccuracyWarning`` naming the quantity, the estimate and the tolerance (the CLI prints it as one line).

The warned results are checked to be as inaccurate as their estimates say, against independent references (a
Gauss-Hermite tensor rule for the four-point moments of a sharp tanh, SciPy quadrature for the two-point
kernels); well-resolved cases (tanh, relu at the default tolerance) do not warn.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy import integrate

import ntk_theory
from ntk_theory.gaussian.fourpoint import derivative_moments, four_point_moments

K3 = np.array([[1.0, 0.3, 0.1], [0.3, 0.8, 0.2], [0.1, 0.2, 1.2]])


def _no_accuracy_warning():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error", ntk_theory.AccuracyWarning)
    return ctx


def test_accuracy_warning_is_public_and_a_user_warning():
    assert issubclass(ntk_theory.AccuracyWarning, UserWarning)
    assert "AccuracyWarning" in ntk_theory.__all__


def test_four_point_moments_of_a_sharp_activation_at_a_tiny_max_refine_warn():
    """tanh(16 x) with max_refine=0: sets stay above tol; one warning names the moments, the largest estimate
    relative to E|product| (which is the result's own, returned unchanged) and the tolerance."""
    with pytest.warns(ntk_theory.AccuracyWarning, match=r"four-point moments of tanh\(16\*x\).*tolerance 1e-10") as rec:
        m = four_point_moments("tanh(16*x)", K3, max_refine=0)
    assert m.info["not_converged"] > 0
    worst = max(float(np.max(e / s)) for e, s in ((m.error_ssss, m.scale_ssss), (m.error_ddss, m.scale_ddss),
                                                 (m.error_dddd, m.scale_dddd)))
    assert worst > 1e-10 and f"estimated error {worst:.2g} " in str(rec[0].message)


def test_derivative_moments_of_a_sharp_activation_at_a_tiny_max_refine_warn():
    with pytest.warns(ntk_theory.AccuracyWarning, match=r"derivative moments of tanh\(16\*x\)"):
        dm = derivative_moments("tanh(16*x)", K3, [(1, 1, 0, 0)], max_refine=0)
    assert dm.info["not_converged"] > 0


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_resolved_four_point_moments_do_not_warn(name):
    ctx = _no_accuracy_warning()
    try:
        m = four_point_moments(name, K3)
        dm = derivative_moments(name, K3, [(1, 1, 0, 0), (1, 1, 1, 1)])
    finally:
        ctx.__exit__(None, None, None)
    assert m.info["not_converged"] == 0 and dm.info["not_converged"] == 0


def _pair_reference(f, k11, k22, k12, beta):
    """E[f(u) f(v)] by nested SciPy quadrature split at the sharp point 0."""
    c, sdc, sd1 = k12 / k11, np.sqrt(k22 - k12**2 / k11), np.sqrt(k11)

    def inner(u):
        m = c * u
        h = lambda t: f(m + sdc * t) * np.exp(-t * t / 2) / np.sqrt(2 * np.pi)
        t0 = -m / sdc
        pts = [-14.0, t0 - 4 / (beta * sdc), t0, t0 + 4 / (beta * sdc), 14.0]
        return sum(integrate.quad(h, a, b, epsabs=1e-14, epsrel=1e-12, limit=200)[0] for a, b in itertools.pairwise(pts))

    g = lambda z: f(sd1 * z) * inner(sd1 * z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    pts = [-14.0, -4 / (beta * sd1), 0.0, 4 / (beta * sd1), 14.0]
    return sum(integrate.quad(g, a, b, epsabs=1e-13, epsrel=1e-11, limit=200)[0] for a, b in itertools.pairwise(pts))


def test_finite_width_of_softplus_64_is_resolved_without_warning():
    """softplus(64 x) / 64 (its float64 forms overflowed before): the two-point covariance derivatives, whose
    Mehler series does not converge at beta = 64, are recomputed by the graded quadrature: no AccuracyWarning,
    the kernel and E[s''(u) s''(v)] (the Hessian entry d2T/dk12^2) against nested SciPy quadrature of an
    independent NumPy softplus (np.logaddexp, scipy.special.expit)."""
    from scipy import special

    from ntk_theory.activations import activation
    from ntk_theory.finite_width import finite_width
    from ntk_theory.finite_width.twopoint import TwoPoint, derivative_tensors

    X = np.array([[1.0, 0.3], [0.2, -0.8]])
    C_W, beta = 2.0, 64
    K0 = C_W * X @ X.T / 2  # C_W x.x / d
    ctx = _no_accuracy_warning()
    try:
        p = finite_width("log(1+exp(64*x))/64", X, depth=1, C_W=C_W, C_b=0.0)
        t = derivative_tensors(TwoPoint(activation("log(1+exp(64*x))/64"), "ss"), K0)
    finally:
        ctx.__exit__(None, None, None)
    s = lambda z: np.logaddexp(0.0, beta * z) / beta
    d2 = lambda z: beta * special.expit(beta * z) * special.expit(-beta * z)
    assert abs(p.nngp[0, 1] - C_W * _pair_reference(s, K0[0, 0], K0[1, 1], K0[0, 1], beta)) < 1e-9
    ref = _pair_reference(d2, K0[0, 0], K0[1, 1], K0[0, 1], beta)
    assert abs(t.hess[0, 1, 2, 2] - ref) < 1e-8 * abs(ref) and t.error < 1e-8


def test_cli_prints_an_accuracy_warning_as_one_line(capsys, monkeypatch):
    from ntk_theory import cli
    from ntk_theory._checks import warn_accuracy

    def command(args):
        warn_accuracy("the four-point moments of tanh(16*x)", 0.5, 1e-10, "3 of 7 input sets did not converge")
        return 0

    monkeypatch.setattr(cli, "_cmd_quantities", command)
    with warnings.catch_warnings():
        warnings.simplefilter("always", ntk_theory.AccuracyWarning)  # whatever the test run's filters
        assert cli.main(["quantities"]) == 0
    err = capsys.readouterr().err
    assert err == ("ntk-theory quantities: warning: the four-point moments of tanh(16*x): estimated error 0.5 exceeds "
                   "the tolerance 1e-10; 3 of 7 input sets did not converge (the result is returned with this "
                   "estimate)\n")


def test_unresolved_two_point_derivatives_warn(monkeypatch):
    """With the graded quadrature switched off, the Mehler series of tanh(16 x)'s derivatives is left unresolved:
    its estimate (above 1e-8 of the largest entry) is reported by one warning per tensor."""
    from ntk_theory.activations import activation
    from ntk_theory.finite_width.twopoint import TwoPoint, derivative_tensors

    monkeypatch.setattr(TwoPoint, "RESOLVED", np.inf)
    with pytest.warns(ntk_theory.AccuracyWarning, match=r"covariance derivatives of <ss> for tanh\(16\*x\)"):
        t = derivative_tensors(TwoPoint(activation("tanh(16*x)"), "ss"), K3[:2, :2])
    assert t.error > 1e-8
