"""Criticality (ntk_theory.criticality) against exact values, published values and direct iteration.

* exact critical points of the universality classes: tanh (0, 1) and ReLU (0, 2) (Poole et al. 2016;
  He et al. 2015; PDLT sec. 5.2-5.3), erf (0, pi/4) = 1/s'(0)^2;
* GELU and SWISH critical points (chi_parallel = chi_perp = 1 at K* > 0) vs an independent
  scipy-quadrature evaluation of the defining equations at the point found (the values agree with those
  we recall from PDLT sec. 5.3.4, GELU (0.17292, 1.98305), SWISH (0.55514, 1.98800), but that text was not
  available to check here, so they are not asserted);  GELU's K* equals (3 + sqrt 17)/2 to 25 digits;
* fixed point and susceptibilities vs direct iteration of the kernel map by KernelRecursion (erf, closed
  forms): K(l) -> K*, (K(l+1) - K*)/(K(l) - K*) -> chi_parallel, and for two nearby inputs
  (1 - rho(l+1))/(1 - rho(l)) -> chi_perp;
* the K* = 0 class: at tanh's critical point K(l) l -> 1/2 (K ~ 1/(-a_1 l), a_1 = -2);
* mpmath moments vs mpmath's tanh-sinh quadrature; the phase diagram's boundary vs the critical line; CLI.
"""

import math
import subprocess
import sys

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from ntk_theory.criticality import Moments, at, critical_line, criticality, fixed_points, phase_diagram, universality
from ntk_theory.recursions import KernelRecursion


def _gauss(h, K):
    """E[h(z)], z ~ N(0, K), by scipy quad over z (independent of the package's quadrature)."""
    sd = math.sqrt(K)
    f = lambda z: h(z) * math.exp(-z * z / (2 * K)) / (sd * math.sqrt(2 * math.pi))
    return sum(integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
               for a, b in ((-40 * sd, -sd), (-sd, 0), (0, sd), (sd, 40 * sd)))


GELU = (lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))),
        lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi))
SWISH = (lambda z: z / (1 + math.exp(-z)) if z > -700 else 0.0,
         lambda z: (1 / (1 + math.exp(-z))) * (1 + z * (1 - 1 / (1 + math.exp(-z)))) if z > -700 else 0.0)


def test_exact_critical_points_of_the_universality_classes():
    assert universality("tanh").name == "K*=0" and (universality("tanh").C_W, universality("tanh").C_b) == (1, 0)
    assert universality("erf").C_W == sp.pi / 4 and universality("erf").a1 == -2
    assert universality("relu").name == "scale-invariant" and universality("relu").C_W == 2
    assert universality("leaky_relu(1/10)").C_W == sp.Rational(200, 101)
    assert universality("sin").a1 == -1
    for name in ("gelu", "swish"):
        assert universality(name).name == "neither" and universality(name).a1 > 0
    assert universality("gelu").a1 == 6 / sp.pi and universality("swish").a1 == sp.Rational(3, 4)


@pytest.mark.parametrize("name, funcs, published, digits", [
    # rough locations only (to pick the branch); the assertion is the independent quadrature below
    ("gelu", GELU, (1.98, 0.17, 3.6), 0.05),  # (C_W, C_b, K*)
    ("swish", SWISH, (1.99, 0.56, 14.3), 0.05),
])
def test_nonzero_critical_points(name, funcs, published, digits):
    res = criticality(name, dps=25, line_K=[1.0])
    pts = [p for p in res.points if p.K_star is not None and p.K_star > 0]
    assert len(pts) == 1, res
    p = pts[0]
    C_W, C_b, K = float(p.C_W), float(p.C_b), float(p.K_star)
    assert abs(C_W - published[0]) < digits and abs(C_b - published[1]) < digits
    assert abs(K - published[2]) < 0.5
    # the defining equations, by independent quadrature
    s, ds = funcs
    g = lambda k: C_b + C_W * _gauss(lambda z: s(z) ** 2, k)
    assert abs(g(K) - K) < 1e-9 * K
    assert abs(C_W * _gauss(lambda z: ds(z) ** 2, K) - 1) < 1e-9
    h = 1e-4 * K
    assert abs((g(K + h) - g(K - h)) / (2 * h) - 1) < 1e-6
    if name == "gelu":
        with mpmath.workdps(30):
            assert abs(p.K_star - (3 + mpmath.sqrt(17)) / 2) < mpmath.mpf(10) ** -25


def test_fixed_point_and_susceptibilities_match_kernel_map_iteration():
    C_b, C_W = 0.1, 2.0
    (fp,) = [f for f in fixed_points("erf", C_W=C_W, C_b=C_b, dps=20) if f.K_star > 0]
    assert fp.stable and fp.phase == "chaotic"
    L = 40
    rec = KernelRecursion("erf", L, C_W=C_W, C_b=C_b)
    # inputs with K(1) = C_b + C_W x.x/2 = 1, two of them at angle 1e-3
    r = math.sqrt(2 * (1 - C_b) / C_W)
    X = r * np.array([[1.0, 0.0], [math.cos(1e-3), math.sin(1e-3)]])
    Ks = [rec.__class__("erf", l, C_W=C_W, C_b=C_b)(X).nngp for l in (L - 2, L - 1, L)]
    assert abs(Ks[-1][0, 0] - fp.K_star) < 1e-10
    # chi_parallel: the approach of K(l) to K*, from a start off the fixed point
    K1 = [KernelRecursion("erf", l, C_W=C_W, C_b=C_b)(X[:1] * 1.5).nngp[0, 0] for l in (9, 10)]
    ratio = (K1[1] - fp.K_star) / (K1[0] - fp.K_star)
    assert abs(ratio - fp.chi_parallel) < 1e-3
    # chi_perp: nearby inputs separate by chi_perp per layer once K is at K* (chaotic: > 1)
    rho = [1 - K[0, 1] / math.sqrt(K[0, 0] * K[1, 1]) for K in Ks[:2]]
    assert rho[0] > 0
    fp_near = at("erf", fp.K_star, C_W=C_W, C_b=C_b)
    assert abs(fp_near.chi_perp - fp.chi_perp) < 1e-12


def test_ordered_phase_distance_shrinks_by_chi_perp():
    C_b, C_W = 0.3, 1.0
    (fp,) = [f for f in fixed_points("erf", C_W=C_W, C_b=C_b) if f.K_star > 0]
    assert fp.phase == "ordered" and fp.chi_perp < 1
    r = math.sqrt(2 * (fp.K_star - C_b) / C_W)  # K(1) = K*
    X = r * np.array([[1.0, 0.0], [math.cos(1e-4), math.sin(1e-4)]])
    d = []
    for l in (5, 6):
        K = KernelRecursion("erf", l, C_W=C_W, C_b=C_b)(X).nngp
        d.append(K[0, 0] + K[1, 1] - 2 * K[0, 1])
    assert abs(d[1] / d[0] - fp.chi_perp) < 1e-4
    assert abs(fp.xi_perp + 1 / math.log(fp.chi_perp)) < 1e-12


def test_k_star_zero_class_power_law():
    """tanh at (C_b, C_W) = (0, 1): K(l) ~ 1/(2 l) (a_1 = -2), by direct iteration with scipy quadrature."""
    K = 0.5
    for l in range(1, 301):
        K = _gauss(lambda z: math.tanh(z) ** 2, K)
    assert abs(300 * K - 0.5) < 0.05
    fp = at("tanh", 0.0, C_W=1.0, C_b=0.0)
    assert abs(fp.chi_perp - 1) < 1e-9 and abs(fp.chi_parallel - 1) < 1e-6


def test_moments_mp_against_tanh_sinh():
    m = Moments("swish")
    with mpmath.workdps(30):
        got = m.mp(mpmath.mpf(14), 30)
        s, ds = m.activation.mpmath, m.activation.mpmath_derivative
        r = mpmath.sqrt(14)
        E = lambda h: mpmath.quad(lambda u: h(r * u) * mpmath.exp(-u * u / 2), [-mpmath.inf, 0, mpmath.inf]) / mpmath.sqrt(2 * mpmath.pi)
        ref = (E(lambda z: s(z) ** 2), E(lambda z: ds(z) ** 2), E(lambda z: z * s(z) * ds(z)) / 14)
        for a, b in zip(got, ref):
            assert abs(a - b) < mpmath.mpf(10) ** -25 * max(1, abs(b))


def test_phase_diagram_boundary_is_the_critical_line(tmp_path):
    pd = phase_diagram("tanh", C_W=np.linspace(1.0, 3.0, 201), C_b=np.array([0.05]))
    col = pd.log_chi_perp[:, 0]
    assert col[0] < 0 < col[-1]
    boundary = pd.C_W[np.argmax(col > 0)]
    cw, cb, _ = pd.line
    line_cw = np.interp(0.05, cb, cw)
    assert abs(boundary - line_cw) < 0.02
    pytest.importorskip("matplotlib")
    pd2 = phase_diagram("tanh", C_W=np.linspace(0.5, 3, 21), C_b=np.linspace(0, 0.5, 11))
    pd2.plot(tmp_path / "phase.png")
    assert (tmp_path / "phase.png").stat().st_size > 1000


def test_cli():
    out = subprocess.run([sys.executable, "-m", "ntk_theory.cli", "criticality", "tanh", "--C-W", "1.5", "--C-b", "0.05"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "C_W = 1.0, C_b = 0.0 = (1, 0) exactly" in out.stdout and "ordered" in out.stdout
    assert "at C_W = 1.5, C_b = 0.05:" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ntk_theory.cli", "criticality", "step"], capture_output=True, text=True)
    assert bad.returncode == 2 and "discontinuous" in bad.stderr


def test_critical_line_is_ordered_C_W_C_b():
    # tanh: C_W = 1 / <s'^2>_K*, C_b = K* - <s^2>_K* / <s'^2>_K* by independent quadrature; ReLU: (2, 0) at every K*
    # (Poole et al. 2016); the printed line lists C_W before C_b
    K = np.array([0.5, 2.0])
    C_W, C_b, K_out = critical_line("tanh", K)
    for k, cw, cb in zip(K, C_W, C_b):
        ds2 = _gauss(lambda z: (1 - math.tanh(z) ** 2) ** 2, k)
        s2 = _gauss(lambda z: math.tanh(z) ** 2, k)
        assert abs(cw - 1 / ds2) < 1e-9 and abs(cb - (k - s2 / ds2)) < 1e-9
    assert np.array_equal(K_out, K)
    relu = criticality("relu", line_K=[1.0])
    assert np.allclose(relu.line[:2], [[2.0], [0.0]])
    assert "C_W = 2   C_b = 0" in relu.text()
    pd = phase_diagram("tanh", C_W=np.linspace(0.5, 2.0, 4), C_b=np.linspace(0.0, 0.2, 3), iterations=50)
    assert pd.C_W.size == 4 and pd.C_b.size == 3 and pd.log_chi_perp.shape == (4, 3)


def test_fixed_point_on_a_grid_point_is_found():
    """ReLU's map K' = C_b + C_W K / 2 has the one fixed point K* = C_b / (1 - C_W / 2), found also when it
    is a point of the scan grid (g(K) - K is exactly 0 there, with no sign change between grid points)."""
    from ntk_theory.criticality import fixed_points
    from ntk_theory.criticality.fixed_points import GRID

    for C_W, C_b in ((1.0, 0.5), (1.0, 0.3), (1.5, 0.5)):
        K_star = C_b / (1 - C_W / 2)
        points = fixed_points("relu", C_W=C_W, C_b=C_b)
        assert len(points) == 1, (C_W, C_b, points)
        assert points[0].K_star == pytest.approx(K_star, rel=1e-12)
        assert points[0].chi_perp == pytest.approx(C_W / 2, rel=1e-12)
    assert 1.0 in GRID  # the first case's K* is on the grid
