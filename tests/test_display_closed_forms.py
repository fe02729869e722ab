"""Closed forms are displayed as written by hand (gaussian/display.py), and the display is the same
function: the rewrite is compared with the original expression in 40-digit mpmath at random
covariances (a self-consistency check of the display), and GELU's displayed kernel with scipy
quadrature of E[gelu(u) gelu(v)] (an independent one)."""

import random

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate, special

from ntk_theory.cli import main
from ntk_theory.gaussian import expectation
from ntk_theory.gaussian.display import display
from ntk_theory.gaussian.symbols import k11, k12, k22


def random_covariances(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.uniform(0.05, 5.0), rng.uniform(0.05, 5.0)
        rho = rng.uniform(-0.999, 0.999)
        yield a, b, rho * (a * b) ** 0.5


def same_function(original, shown, n=20):
    with mpmath.workdps(40):
        for a, b, c in random_covariances(n, seed=7):
            point = {k11: sp.Float(a, 40), k22: sp.Float(b, 40), k12: sp.Float(c, 40)}
            va, vb = sp.N(original.subs(point), 40), sp.N(shown.subs(point), 40)
            assert abs(va - vb) <= sp.Float("1e-32") * max(1, abs(va)), (a, b, c, va, vb)


SLOW = pytest.mark.slow  # the x*erf(x) kernels take ~11 s to derive


@pytest.mark.parametrize("act, derivative, bound", [
    ("gelu", 0, 160), ("gelu", 1, 170), ("gelu(x) + x", 0, 160), ("gelu(x) + x", 1, 170),
    pytest.param("x*erf(x)", 0, 170, marks=SLOW), pytest.param("x*erf(x)", 1, 180, marks=SLOW),
])
def test_display_is_short_and_the_same_function(act, derivative, bound):
    e = expectation(act, derivative=derivative)
    d = display(e.expr)
    assert len(d.text()) <= bound < len(sp.sstr(e.expr))
    assert d.text().count("sqrt(") <= 2 and "sqrt((" in d.text()  # one sqrt(D) and the merged asin argument
    same_function(e.expr, d.expanded())


def test_gelu_kernel_reads_as_written_by_hand():
    e = expectation("gelu")
    assert sp.sstr(e.expr).count("sqrt(k11*k22 + k11 - k12**2 + k22 + 1)") == 8  # as the rules build it
    text = display(e.expr).text()
    assert text.startswith("k12/4 + k12*asin(k12/sqrt((k11 + 1)*(k22 + 1)))/(2*pi) + ")
    assert text.endswith("where D = (k11 + 1)*(k22 + 1) - k12**2")
    assert text.count("sqrt(D)") == 1
    assert "D = " in display(e.expr).latex()
    # the displayed formula, evaluated on its own, is the GELU kernel (scipy quadrature)
    gelu = lambda z: 0.5 * z * (1 + special.erf(z / np.sqrt(2)))  # noqa: E731
    shown = sp.lambdify((k11, k22, k12), display(e.expr).expanded(), modules="mpmath")
    for a, b, c in [(1.0, 1.0, 0.5), (2.0, 0.5, -0.7)]:
        s, t = np.sqrt(a), c / np.sqrt(a)
        r = np.sqrt(b - t * t)
        val, _ = integrate.dblquad(
            lambda z2, z1: gelu(s * z1) * gelu(t * z1 + r * z2) * np.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * np.pi),
            -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-12)
        assert float(shown(a, b, c)) == pytest.approx(val, rel=1e-9)


def test_short_forms_are_left_alone():
    for act in ("relu", "erf", "step"):
        e = expectation(act)
        assert display(e.expr).text() == sp.sstr(e.expr)
        assert display(e.expr).expanded() == e.expr


@pytest.mark.numerics
def test_closed_form_and_derive_show_the_display():
    """The display of GELU's closed form; numerics: its float64 and mpmath values agree (the form is checked
    against quadrature in test_closed_forms.py)."""
    e = expectation("gelu")
    assert "where D = " in repr(e) and "where D = " in e.text().splitlines()[0]
    assert "D = " in e.latex()
    assert e.evaluate(1.0, 1.0, 0.5) == pytest.approx(float(e.evaluate_mp(1.0, 1.0, 0.5)), rel=1e-14)


def test_derive_prints_the_short_kernel(capsys):
    assert main(["derive", "gelu", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    kernel = next(line for line in out.splitlines() if line.startswith("  = k12/4"))
    assert len(kernel) < 170 and kernel.endswith("where D = (k11 + 1)*(k22 + 1) - k12**2")
    derived = out.split("\nlayers ")[0]  # kernels, their derivations, the layer maps
    assert "Theta'_ab = " in derived and max(len(line) for line in derived.splitlines()) < 400
