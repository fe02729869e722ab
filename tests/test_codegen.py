"""Compiled kernels: equal to the float64 symbolic evaluation and to mpmath, exact diagonal, deep and
near-parallel inputs, tiles, out=, float32, the disk cache, and bad input before Numba.

The compiled kernel is that of the MLP's description (``ntk_theory.codegen.graph``): a run of hidden
layers of one activation is one loop, so one compiled module serves every depth of it; the activations
are tested in mixed networks, each layer a different activation, in two orders.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ntk_theory.codegen import CompiledKernel
from ntk_theory.recursions import KernelRecursion

CLOSED = ["linear", "relu", "leaky_relu(1/5)", "abrelu(1/2,2)", "abs", "step", "sign", "relu_power(2)", "relu_power(3)",
          "monomial(3)", "polynomial(1,-2,3)", "hermite(3)", "erf", "gelu", "sin", "cos", "exp", "gaussian", "rbf(1/3)",
          "x*erf(x)", "erf(2*x)+x/3"]
NUMERIC = ["tanh", "sigmoid", "softplus", "swish", "gelu_tanh", "elu", "selu", "tanh(x)+x/4"]


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((23, 3)) * 0.6, rng.standard_normal((17, 3)) * 0.6


@pytest.mark.parametrize("order", ["forward", pytest.param("reversed", marks=pytest.mark.slow)])
def test_closed_forms_equal_symbolic_float64(inputs, order):
    """Every closed-form activation in one network (one layer each) against the NumPy recursion; the reversed
    order is another network, another compiled module (~35 s of compiling): slow set."""
    acts = CLOSED if order == "forward" else CLOSED[::-1]
    X1, X2 = inputs
    kern = CompiledKernel(acts, len(acts), C_W=0.8, C_b=0.05)
    ref = KernelRecursion(acts, len(acts), C_W=0.8, C_b=0.05)
    for a, b in ((X1, X2), (X1, None)):
        got, want = kern(a, b), ref(a, b)
        assert _rel(got.nngp, want.nngp) < 1e-13 and _rel(got.ntk, want.ntk) < 1e-13


@pytest.mark.numerics
def test_closed_forms_equal_mpmath(inputs):
    """Numerics: compiled float64 against mpmath of the same closed forms; forms checked against
    independent quadrature in test_closed_forms.py and test_one_input_moments.py."""
    X1, X2 = inputs
    kern = CompiledKernel(CLOSED, len(CLOSED), C_W=0.8, C_b=0.05)
    got = kern(X1[:3], X2[:2])
    mp = KernelRecursion(CLOSED, len(CLOSED), C_W=0.8, C_b=0.05).evaluate_mp(X1[:3], X2[:2], dps=30)
    assert _rel(got.nngp, np.array(mp.nngp.tolist(), float)) < 1e-12
    assert _rel(got.ntk, np.array(mp.ntk.tolist(), float)) < 1e-12


@pytest.mark.parametrize("order", ["forward", pytest.param("reversed", marks=pytest.mark.slow)])
def test_numerical_activations_equal_symbolic_float64(inputs, order):
    """Hermite series (and quadrature fallback) against the NumPy tanh-sinh quadrature path."""
    acts = NUMERIC if order == "forward" else NUMERIC[::-1]
    X1, X2 = inputs
    # one near-parallel pair (rho ~ 1 - 1e-10): kinked activations' series are too long there, so the
    # compiled quadrature fallback runs.  (Exactly parallel inputs of different norms are ill-conditioned
    # for kinked s': rounding of G0 alone moves Tdot by ~1e-8 in any method.)
    X2 = np.vstack([X2[:6], X1[:1] + 1e-5 * np.array([[0.3, -0.2, 0.5]])])
    kern = CompiledKernel(acts, len(acts), C_W=1.3, C_b=0.05)
    ref = KernelRecursion(acts, len(acts), C_W=1.3, C_b=0.05)
    got, want = kern(X1[:8], X2), ref(X1[:8], X2)
    # the reference's own quadrature is good to ~1e-13; the compiled result reports its estimate
    assert _rel(got.nngp, want.nngp) < 1e-12
    assert _rel(got.ntk[:, :-1], want.ntk[:, :-1]) < 1e-12
    # Near rho = 1 a kinked s' makes Tdot ill-conditioned (slope ~ 1/sqrt(1 - rho^2) ~ 7e4 per layer):
    # the two paths reach that layer with kernels differing by ~1e-15 and end ~1e-10 apart, while at
    # identical (k11, k22, k12) all quadratures here agree with 30-digit mpmath to 1e-15.
    assert _rel(got.ntk[:, -1:], want.ntk[:, -1:]) < 1e-8
    assert got.info["quadrature_error"] < 1e-11
    assert kern.fallback_entries > 0


@pytest.mark.slow
def test_numerical_activation_equals_mpmath():
    rng = np.random.default_rng(1)
    X1, X2 = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    kern = CompiledKernel("tanh", 2, C_W=1.6, C_b=0.1)
    mp = KernelRecursion("tanh", 2, C_W=1.6, C_b=0.1).evaluate_mp(X1, X2, dps=30)
    got = kern(X1, X2)
    assert _rel(got.nngp, np.array(mp.nngp.tolist(), float)) < 1e-12
    assert _rel(got.ntk, np.array(mp.ntk.tolist(), float)) < 1e-12


def test_ntk_diagonal_is_the_exact_scalar_recursion():
    X = np.random.default_rng(2).standard_normal((9, 5))
    G0 = np.einsum("ij,ij->i", X, X) / 5
    res = CompiledKernel("relu", 10, C_W=2.0, C_b=0.0)(X)
    assert np.allclose(np.diag(res.ntk), 11 * 2 * G0, rtol=1e-14, atol=0)
    assert np.allclose(np.diag(res.nngp), 2 * G0, rtol=1e-15, atol=0)
    erf = CompiledKernel("erf", 4, C_W=1.5, C_b=0.1)(X)
    ref = KernelRecursion("erf", 4, C_W=1.5, C_b=0.1)(X)
    assert np.allclose(np.diag(erf.ntk), np.diag(ref.ntk), rtol=1e-14, atol=0)


@pytest.mark.numerics
def test_deep_and_near_parallel_inputs():
    """Numerics (the same closed forms in float64 and 40-digit mpmath; forms checked against
    independent quadrature in test_closed_forms.py and test_one_input_moments.py).
    L = 200.  Well separated inputs: equal to 40-digit mpmath to 1e-12.  Near-parallel pairs stay
    finite and their NNGP accurate; their off-diagonal NTK is limited by how a pair is carried,
    (K_aa, K_bb, K_ab): each layer rounds K_ab by a few ulps, which moves the small determinant
    K_aa K_bb - K_ab^2 by percents when the inputs are 1e-6 apart, and a kinked s' makes Tdot
    sensitive to it.  Measured (ReLU, C_W = 2, C_b = 0.05, inputs 1e-6 apart) against mpmath:
    1e-9 at L = 10, 4e-8 at L = 50, 7e-7 at L = 200 (the NumPy path: 2e-10, 1e-8, 2e-7)."""
    x = np.array([0.3, 1.1, -0.7])
    far = np.stack([x, -x + np.array([0.0, 0.4, 0.0]), np.array([1.0, 0.0, 0.2])])
    near = np.stack([x, x + 1e-6 * np.array([0.5, -0.1, 0.3]), x + 1e-12, x * (1 + 1e-15)])
    for act, cw in (("relu", 2.0), ("erf", 1.4), ("gelu", 1.6)):
        kern, ref = CompiledKernel(act, 200, C_W=cw, C_b=0.05), KernelRecursion(act, 200, C_W=cw, C_b=0.05)
        got, mp = kern(far), ref.evaluate_mp(far, dps=40)
        assert _rel(got.nngp, np.array(mp.nngp.tolist(), float)) < 1e-12, act
        assert _rel(got.ntk, np.array(mp.ntk.tolist(), float)) < 1e-12, act
        got, want = kern(near), ref(near)
        assert np.all(np.isfinite(got.ntk)) and np.all(np.isfinite(got.nngp))
        assert _rel(got.nngp, want.nngp) < 1e-12 and _rel(got.ntk, want.ntk) < 1e-5, act
    tanh = CompiledKernel("tanh", 200, C_W=1.2, C_b=0.05)(near)
    assert np.all(np.isfinite(tanh.ntk)) and _rel(tanh.ntk, KernelRecursion("tanh", 200, C_W=1.2, C_b=0.05)(near).ntk) < 1e-5


def test_tiles_out_memmap_and_float32(tmp_path):
    rng = np.random.default_rng(3)
    X1, X2 = rng.standard_normal((301, 6)), rng.standard_normal((97, 6))
    one_tile = CompiledKernel("gelu", 3, C_W=1.7, C_b=0.05)
    many = CompiledKernel("gelu", 3, C_W=1.7, C_b=0.05, tile_mb=0.05)
    a, b = one_tile(X1, X2), many(X1, X2)
    assert b.info["tile_rows"] < 100 and np.array_equal(a.nngp, b.nngp) and np.array_equal(a.ntk, b.ntk)
    sym_tiles, sym = many(X1), one_tile(X1)
    assert np.allclose(sym_tiles.ntk, sym.ntk, rtol=1e-14, atol=0)  # BLAS blocks round G0 differently
    assert np.allclose(sym.ntk, one_tile(X1, X1.copy()).ntk, rtol=1e-15, atol=0)  # symmetric fast path
    K = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=np.float64, shape=(301, 97))
    T = np.lib.format.open_memmap(tmp_path / "T.npy", mode="w+", dtype=np.float64, shape=(301, 97))
    many(X1, X2, out=(K, T))
    K.flush()
    assert np.array_equal(np.load(tmp_path / "K.npy"), a.nngp)
    f32 = many(X1, X2, dtype=np.float32)
    assert f32.ntk.dtype == np.float32 and np.allclose(f32.ntk, a.ntk, rtol=1e-6)


def test_bad_input_raises_before_numba():
    kern = CompiledKernel("relu", 2, C_W=2.0)
    with pytest.raises(ValueError, match="non-finite"):
        kern(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="input dimension is 2"):
        kern(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="out\\[nngp\\] must be an array of shape"):
        kern(np.ones((3, 2)), out=(np.empty((2, 2)), np.empty((3, 3))))
    with pytest.raises(ValueError, match="dtype must be float64 or float32"):
        kern(np.ones((3, 2)), dtype=np.int64)
    assert kern._module is None or kern.compile_seconds is not None


def test_source_is_inspectable():
    """The generated module names what it computes: ReLU's closed form at unit scale (homogeneous), tanh's
    function for its Hermite tables and their series, the fused pass; deeper networks of one activation
    are the same module (one loop over the layers)."""
    kern = CompiledKernel(["relu", "tanh"], 2)
    src = kern.source
    assert "def unit_0(k11, k22, k12):" in src and "atan2(k12" in src and "det2(" in src
    assert "def s_0(z):" in src and "hermite_term(" in src and "def fused(" in src
    compile(src, "<generated>", "exec")
    deep = [CompiledKernel("relu", depth, C_W=2.0, widths=[7] * depth, param="standard") for depth in (2, 10, 200)]
    assert len({k.key for k in deep}) == 1 and "for rep in range(LOOPS[0, 0]):" in deep[0].source


_SCRIPT = textwrap.dedent(
    """
    import json, numpy as np
    from ntk_theory.codegen import CompiledKernel
    k = CompiledKernel("erf", 3, C_W=1.5, C_b=0.1)
    r = k(np.eye(3))
    print(json.dumps({"from_cache": k.from_cache, "seconds": k.compile_seconds, "value": float(r.ntk[0, 1])}))
    """
)


def _run(cache_dir):
    env = dict(os.environ, NTK_THEORY_CACHE=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_disk_cache_is_reused_and_survives_corruption(tmp_path):
    first = _run(tmp_path)
    second = _run(tmp_path)
    assert not first["from_cache"] and second["from_cache"]
    assert second["value"] == first["value"]
    # corrupt every cache file: the generated module and Numba's index and code
    for f in list(tmp_path.glob("*.py")) + list((tmp_path / "__pycache__").glob("*")):
        f.write_bytes(b"\x00garbage" * 10)
    third = _run(tmp_path)
    assert third["value"] == first["value"]
    fourth = _run(tmp_path)
    assert fourth["from_cache"]


def test_two_processes_compiling_at_once(tmp_path):
    env = dict(os.environ, NTK_THEORY_CACHE=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    values = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0
        import json

        values.append(json.loads(out.strip().splitlines()[-1])["value"])
    assert values[0] == values[1]
