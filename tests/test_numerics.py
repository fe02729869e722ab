"""ntk_theory.numerics primitives against exact arithmetic.

compensated: two_product and det2 against Python's exact rational arithmetic (fractions.Fraction of the
float inputs), in plain Python, on NumPy arrays and compiled into numba.njit code (the same functions);
cholesky: the pivoted factor reproduces K, finds the rank of singular K and orders the pivots.
"""

from fractions import Fraction

import numba
import numpy as np
import pytest

from ntk_theory.numerics import cholesky, compensated
from ntk_theory.numerics import compensated_numba  # noqa: F401  (registers the Numba twins)

EPS = np.finfo(float).eps


def _cases(rng, n=400):
    """Covariance triples (p, q, c) with p q - c^2 down to ~1e-15 of p q (|rho| -> 1)."""
    p = np.exp(rng.uniform(-20, 20, n))
    q = np.exp(rng.uniform(-20, 20, n))
    gap = 10.0 ** rng.uniform(-15, 0, n)
    c = np.sqrt(p * q) * np.sqrt(1 - gap) * rng.choice([-1, 1], n)
    return p, q, c


def _exact_det(p, q, c):
    return Fraction(float(p)) * Fraction(float(q)) - Fraction(float(c)) ** 2


def test_two_product_is_exact():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(200) * 1e3, rng.standard_normal(200) * 1e-3
    for x, y in zip(a, b):
        p, e = compensated.two_product(float(x), float(y))
        assert Fraction(p) + Fraction(e) == Fraction(float(x)) * Fraction(float(y))


def test_det2_relative_to_itself_python_numpy_numba():
    p, q, c = _cases(np.random.default_rng(1))
    jit_det2 = numba.njit(lambda p, q, c: compensated.det2(p, q, c))
    vec = compensated.det2(p, q, c)
    for i in range(p.size):
        exact = _exact_det(p[i], q[i], c[i])
        for value in (compensated.det2(float(p[i]), float(q[i]), float(c[i])), vec[i], jit_det2(p[i], q[i], c[i])):
            assert abs(Fraction(float(value)) - exact) <= 4 * EPS * abs(exact), (p[i], q[i], c[i], value)
    # the naive formula loses the digits the compensated one keeps
    naive = p * q - c * c
    worst = max(abs(float(Fraction(float(naive[i])) - _exact_det(p[i], q[i], c[i])) / float(_exact_det(p[i], q[i], c[i])))
                for i in range(p.size))
    assert worst > 1e-6


def test_residual_exact_product():
    rng = np.random.default_rng(2)
    for _ in range(200):
        a, x = rng.standard_normal(2)
        c = a * x * (1 + 1e-12 * rng.standard_normal())
        exact = Fraction(float(c)) - Fraction(float(a)) * Fraction(float(x))
        got = compensated.residual(float(c), float(a), float(x))
        assert abs(Fraction(got) - exact) <= 2 * EPS * abs(exact)


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_pivoted_cholesky_reproduces_K_and_finds_rank(rank):
    rng = np.random.default_rng(rank)
    F = rng.standard_normal((4, rank))
    K = F @ F.T
    L, level = cholesky.pivoted_cholesky(K)
    assert L.shape == (4, rank)
    assert np.max(np.abs(L @ L.T - K)) <= 64 * EPS * np.max(np.diag(K))
    # pivoting: the largest entry of column j is its pivot's, a row resolved at level j, and the
    # pivots (conditional standard deviations) decrease
    pivots = []
    for j in range(rank):
        piv = int(np.argmax(np.abs(L[:, j])))
        assert level[piv] == j and L[piv, j] > 0
        pivots.append(L[piv, j])
    assert pivots == sorted(pivots, reverse=True)
    for k in range(4):
        nz = np.flatnonzero(L[k])
        assert level[k] == (nz[-1] if nz.size else 0)


def test_pivoted_cholesky_equal_rows_and_zero():
    K = np.array([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    L, level = cholesky.pivoted_cholesky(K)
    assert L.shape == (3, 1) and L[2, 0] == 0.0
    assert np.allclose(L[:2, 0], np.sqrt(2.0), rtol=2 * EPS, atol=0)
    assert level.tolist() == [0, 0, 0]
    L0, level0 = cholesky.pivoted_cholesky(np.zeros((2, 2)))
    assert L0.shape == (2, 0) and level0.tolist() == [0, 0]


def test_numerics_imports_no_symbolic_layer():
    """numerics is below the symbolic layer: importing every module loads neither SymPy nor the
    activations, gaussian, recursions, codegen or finite_width packages (fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('compensated', 'compensated_numba', 'cholesky', 'quadrature', 'quadrature_batch', 'quadrature_mp',"
        " 'hermite', 'hermite_numba', 'mehler', 'gauss_legendre', 'bivariate', 'fourpoint', 'orthant', 'onepoint'):\n"
        "    __import__('ntk_theory.numerics.' + m)\n"
        "bad = sorted(k for k in sys.modules if k == 'sympy' or k.split('.')[:2] in (['ntk_theory', p] for p in\n"
        "    ('activations', 'gaussian', 'recursions', 'codegen', 'finite_width', 'criticality', 'dynamics')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout
