"""Expressions in x: library names as functions, Piecewise strings, and the real domain.

Expectations are checked against the published arc-cosine kernel (Cho & Saul 2009) and scipy
quadrature written out here; values against NumPy formulas written out here.
"""

import numpy as np
import pytest
from scipy import integrate, special

from ntk_theory.activations import activation
from ntk_theory.activations.parse import UndefinedActivation
from ntk_theory.cli import main
from ntk_theory.gaussian import expectation

COVS = [(1.0, 1.0, 0.5), (1.3, 0.7, 0.4), (2.0, 0.5, -0.9), (0.8, 1.5, 0.0)]
Z = np.linspace(-4, 4, 81)


def bivariate_quad(f, g, k11, k22, k12):
    """E[f(u) g(v)] by scipy's 2-D quadrature in standard normals (z1, z2)."""
    a = np.sqrt(k11)
    b = k12 / a
    c = np.sqrt(max(k22 - b * b, 0.0))
    dens = lambda z2, z1: np.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * np.pi)  # noqa: E731
    val, err = integrate.dblquad(lambda z2, z1: f(a * z1) * g(b * z1 + c * z2) * dens(z2, z1), -12, 12, -12, 12,
                                 epsabs=1e-13, epsrel=1e-12)
    return val


def arccos_kernel_2(k11, k22, k12):
    """Cho & Saul (2009): E[relu(u)^2 relu(v)^2] = k11 k22 J_2(theta) / (2 pi),
    J_2 = 3 sin(t) cos(t) + (pi - t)(1 + 2 cos(t)^2)."""
    t = np.arccos(k12 / np.sqrt(k11 * k22))
    return k11 * k22 * (3 * np.sin(t) * np.cos(t) + (np.pi - t) * (1 + 2 * np.cos(t) ** 2)) / (2 * np.pi)


def test_library_names_inside_expressions():
    np.testing.assert_allclose(activation("relu(x)**2").numpy(Z), np.maximum(Z, 0) ** 2, rtol=1e-15)
    gelu = 0.5 * Z * (1 + special.erf(Z / np.sqrt(2)))
    np.testing.assert_allclose(activation("gelu(x) + x").numpy(Z), gelu + Z, rtol=1e-14, atol=1e-15)
    # name(arg, params...): the library activation with parameters, at arg
    np.testing.assert_allclose(activation("leaky_relu(2*x, 1/5)").numpy(Z), np.where(Z > 0, 2 * Z, 0.4 * Z), rtol=1e-15)
    np.testing.assert_allclose(activation("leaky_relu(x, 0.2)").numpy(Z), np.where(Z > 0, Z, 0.2 * Z), rtol=1e-15)
    np.testing.assert_allclose(activation("hermite(x, 3) + tanh(x)").numpy(Z), Z**3 - 3 * Z + np.tanh(Z), rtol=1e-14)
    assert activation("relu(x)**2").kinks == (0.0,)
    with pytest.raises(ValueError, match="cannot parse activation 'relu\\(x, 2\\)'"):
        activation("relu(x, 2)")
    with pytest.raises(ValueError, match="numeric parameters"):
        activation("leaky_relu(x, x)")


@pytest.mark.parametrize("cov", COVS)
def test_relu_squared_expression_is_the_arccos_kernel_of_degree_2(cov):
    e = expectation("relu(x)**2")
    assert float(e(*cov)) == pytest.approx(arccos_kernel_2(*cov), rel=1e-12)


@pytest.mark.parametrize("cov", COVS[:2])
def test_gelu_plus_x_against_quadrature(cov):
    f = lambda z: 0.5 * z * (1 + special.erf(z / np.sqrt(2))) + z  # noqa: E731
    assert float(expectation("gelu(x) + x")(*cov)) == pytest.approx(bivariate_quad(f, f, *cov), rel=1e-9)


def test_piecewise_string_with_true():
    act = activation("Piecewise((x, x > 0), (x/10, True))")
    np.testing.assert_allclose(act.numpy(Z), np.where(Z > 0, Z, Z / 10), rtol=1e-15)
    assert act.kinks == (0.0,)
    f = lambda z: np.where(z > 0, z, z / 10)  # noqa: E731
    cov = COVS[1]
    assert float(expectation("Piecewise((x, x > 0), (x/10, True))")(*cov)) == pytest.approx(
        bivariate_quad(f, f, *cov), rel=1e-9
    )
    # a branch is only evaluated where its condition holds
    np.testing.assert_allclose(activation("Piecewise((sqrt(x), x > 0), (0, True))").numpy(Z),
                               np.sqrt(np.maximum(Z, 0)), rtol=1e-15)


@pytest.mark.parametrize(
    "spec, where",
    [
        ("sqrt(x)", "for x < 0"),
        ("x**0.5", "for x < 0"),
        ("x**(1/3)", "for x < 0"),
        ("log(x)", "for x <= 0"),
        ("tanh(x) + sqrt(1 - x**2)", "for (1 < x) | (x < -1)"),
        ("Max(0, sqrt(x))", "for x < 0"),
        ("Piecewise((x, x > 0))", "for x <= 0"),
        ("Piecewise((sqrt(x), x > -1), (0, True))", "for (-1 < x) & (x < 0)"),
    ],
)
def test_not_defined_on_part_of_the_line(spec, where):
    with pytest.raises(UndefinedActivation, match="not defined " + where.replace("(", "\\(").replace(")", "\\)")
                       .replace("|", "\\|")):
        activation(spec)
    assert issubclass(UndefinedActivation, ValueError)
    with pytest.raises(UndefinedActivation):
        expectation(spec)


def test_defined_everywhere_is_accepted():
    for spec in ("sqrt(x**2 + 1)", "log(1 + x**2)", "sqrt(Abs(x))*x", "x**2.0", "2**x"):
        activation(spec)


def test_cli_prints_one_line_for_an_undefined_activation(capsys):
    assert main(["derive", "sqrt(x)"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not defined for x < 0" in err and len(err.splitlines()) == 1 and "Traceback" not in err
