"""Kernels whose variances decay geometrically with depth, identical inputs, and near-parallel inputs:
float64 (NumPy and compiled) against the same recursion in 30- and 40-digit mpmath."""

import numpy as np
import pytest

from ntk_theory.codegen import compiled_kernel
from ntk_theory.recursions import KernelRecursion

X3 = np.array([[1.0, 0.2, -0.3], [0.5, 1.0, 0.1], [-0.4, 0.3, 0.9]])


def _rel(a, b):
    b = np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.numerics
@pytest.mark.parametrize("act, depth", [("relu", 600), ("leaky_relu(1/5)", 400)])
def test_variances_far_below_products_underflow(act, depth):
    """Numerics (the same forms in float64 and mpmath; forms checked against
    independent quadrature in test_closed_forms.py and test_one_input_moments.py).
    C_W = 1 halves ReLU's kernel every layer: K ~ 1e-182 at depth 600, where K_aa K_bb underflows.
    The off-diagonal entries must keep their digits (they were silently 0 with correlation NaN)."""
    rec = KernelRecursion(act, depth, C_W=1.0, C_b=0.0)
    mp = rec.evaluate_mp(X3[:2], dps=30)
    assert float(mp.nngp[0, 1]) < 1e-100
    for res in (rec(X3[:2]), compiled_kernel(act, depth, C_W=1.0, C_b=0.0)(X3[:2])):
        assert _rel(res.nngp, mp.nngp.astype(float)) < 1e-12
        assert _rel(res.ntk, mp.ntk.astype(float)) < 1e-10


def test_smooth_activation_at_tiny_variances_compiled_equals_numpy():
    """tanh at C_W = 0.5 (ordered phase, K* = 0): variances ~1e-180 at depth 600.  tanh is linear there,
    so the correlation of two inputs stays near its input value (to 2e-2: the first layers, where K is
    not yet small, are nonlinear).  The NumPy path (Mehler series, quadrature fallback) and the compiled
    path (Mehler series in Numba) agree; the NumPy path was off by a factor 2 here (rho from an
    underflowed k11 k22)."""
    rec = KernelRecursion("tanh", 600, C_W=0.5, C_b=0.0)
    a, b = rec(X3), compiled_kernel("tanh", 600, C_W=0.5, C_b=0.0)(X3)
    assert np.diag(a.nngp).max() < 1e-170
    assert _rel(a.nngp, b.nngp) < 1e-10 and _rel(a.ntk, b.ntk) < 1e-10
    G0 = X3 @ X3.T
    rho_in = G0 / np.sqrt(np.outer(np.diag(G0), np.diag(G0)))
    sd = np.sqrt(np.diag(a.nngp))
    rho = a.nngp / np.outer(sd, sd)
    assert np.allclose(rho, rho_in, atol=2e-2)


def test_underflow_raises_instead_of_zero():
    rec = KernelRecursion("relu", 1100, C_W=1.0, C_b=0.0)
    with pytest.raises(FloatingPointError, match="underflows"):
        rec(X3)
    with pytest.raises(FloatingPointError, match="underflows"):
        compiled_kernel("relu", 1100, C_W=1.0, C_b=0.0)(X3)


@pytest.mark.numerics
@pytest.mark.parametrize("act", ["relu", "erf", "tanh"])
def test_identical_rows_are_exact_diagonal_entries(act):
    """Numerics (the same forms in float64 and mpmath; forms checked against
    independent quadrature in test_closed_forms.py and test_one_input_moments.py).
    Rows of X1 that are equal (and rows equal across X1, X2) get the one-variable diagonal values:
    the NTK entry of a repeated input equals its diagonal bit for bit, as in 40-digit mpmath."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5)
    X = np.vstack([x, rng.standard_normal(5), x])
    rec = KernelRecursion(act, 3, C_W=2.0 if act == "relu" else 1.5, C_b=0.0 if act == "relu" else 0.1)
    kern = compiled_kernel(act, 3, C_W=rec.C_W[0], C_b=rec.C_b[0])
    for res in (rec(X), rec(X, X), kern(X), kern(X, X)):
        assert res.ntk[0, 2] == res.ntk[0, 0] == res.ntk[2, 2] == res.ntk[2, 0]
        assert res.nngp[0, 2] == res.nngp[0, 0]
    mixed = kern(X, X[::-1])
    assert mixed.ntk[0, 0] == mixed.ntk[0, 2] == kern(X).ntk[0, 0]
    if act != "tanh":
        mp = rec.evaluate_mp(X[:1], dps=40)
        assert abs(rec(X).ntk[0, 2] - float(mp.ntk[0, 0])) <= 1e-14 * float(mp.ntk[0, 0])


def test_mpmath_result_shows_itself():
    res = KernelRecursion("relu", 2, C_W=2.0).evaluate_mp(X3[:2], dps=20)
    assert "(2, 2)" in repr(res)
    assert res.nngp.shape == (2, 2) and res.nngp.astype(float).dtype == np.float64


def test_repr_keeps_layer_order():
    assert "[relu, erf]" in repr(KernelRecursion(["relu", "erf"], 2))
    assert "KernelRecursion(relu;" in repr(KernelRecursion("relu", 3))


@pytest.mark.slow
def test_compile_report_says_what_happened(tmp_path):
    """A fresh cache directory: the CLI reports compiling; a second process loads from Numba's disk cache."""
    import os
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", X3)
    env = dict(os.environ, NTK_THEORY_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "ntk_theory.cli", "kernel", "abs", "--depth", "2", "--x1", str(tmp_path / "x.npy"),
           "--out", str(tmp_path / "k.npz")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    assert "compiling" in first and "loaded from Numba's disk cache" in second


@pytest.mark.numerics
@pytest.mark.parametrize("act, cw, cb", [("relu", 2.0, 0.0), ("abs", 1.0, 0.1), ("erf", 1.5, 0.1)])
def test_near_parallel_accuracy_is_what_the_readme_states(act, cw, cb):
    """Numerics (the same forms in float64 and mpmath; forms checked against
    independent quadrature in test_closed_forms.py and test_one_input_moments.py).
    Inputs x and x + eps dx (angle ~ eps) against 40-digit mpmath.  The NNGP keeps ~1e-15.  A kinked
    activation's NTK depends on the angle theta through Tdot = (pi - theta) / (2 pi)-like terms, and
    float64 carries theta only to ~1e-16 / theta (1 - cos theta is rounded): its relative error is at
    most ~ L 1e-16 / theta (README: 'Numerics'), saturating near 1e-7; smooth activations keep 1e-14."""
    rng = np.random.default_rng(0)
    x, dx = rng.standard_normal(4), rng.standard_normal(4)
    L = 3
    rec = KernelRecursion(act, L, C_W=cw, C_b=cb)
    for eps in (1e-4, 1e-6, 1e-8):
        X = np.vstack([x, x + eps * dx])
        got, mp = rec(X), rec.evaluate_mp(X, dps=40)
        theta = eps * np.linalg.norm(dx - (dx @ x) / (x @ x) * x) / np.linalg.norm(x)
        assert abs(got.nngp[0, 1] / float(mp.nngp[0, 1]) - 1) < 2e-15
        err = abs(got.ntk[0, 1] / float(mp.ntk[0, 1]) - 1)
        bound = 1e-14 if act == "erf" else min(L * 1e-16 / theta, 1e-7) + 1e-14
        assert err < bound, (eps, err, bound)
