"""Infinite-width kernels (CNN-GP, CNTK) of convolutional descriptions in ntk_theory.recursions.graph.

Judges (independent of the code under test):
- recorded ``kernel_fn`` outputs of neural-tangents 0.6.5 in float64 (tests/data/neural_tangents/conv_kernels.npz,
  written by benchmarks/anchors/record_conv_kernels.py in its own environment): 1-D and 2-D convolutions with
  'VALID', 'SAME', 'CIRCULAR' padding and strides, AvgPool (normalize_edges), GlobalAvgPool, Flatten, Dense on
  images, LayerNorm over channels, FanOut/FanInSum/FanInConcat, 'standard' parameterization, Erf and Relu (also
  after pooling a Gaussian value, and on the pooled vector), Gelu, Sin, LeakyRelu and Rbf, and a Myrtle-style
  network on 8x8 images; the same recordings judge the compiled kernel (ntk_theory.codegen.convolution);
- the compiled kernel with every closed-form activation against the NumPy interpreter (the same closed forms
  evaluated by a different path: NumPy stable forms on whole arrays, layer by layer); its row tiles and
  ``out=`` memory maps against its own in-memory result, bit for bit;
- for tanh (not in neural-tangents), the spatial recursion of a tiny 1-D network written out by hand here with
  its Gaussian expectations by nested adaptive quadrature (scipy, absolute tolerance 1e-14): the NumPy
  interpreter and the compiled kernel (Hermite tables and Mehler series) at 1e-11;
- the compiled kernel with activations without closed form (tanh, softplus, swish, beside ReLU) against the NumPy
  interpreter, whose numerical expectations are its own (NumPy Hermite tables, scipy-based quadrature fallback).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from ntk_theory import stax
from ntk_theory.activations import x
from ntk_theory.codegen import convolution
from ntk_theory.recursions import graph

DATA = np.load(Path(__file__).parent / "data" / "neural_tangents" / "conv_kernels.npz")
NETWORKS = json.loads(str(DATA["config"]))["networks"]

# one compiled module for every compiled chain of the fast tests (the union of their activations): one cold
# compile instead of one per activation set
convolution.share(stax.Erf(), stax.Relu(), stax.Gelu(), stax.Sin(), stax.LeakyRelu(0.2), stax.Rbf(0.7), stax.Tanh(),
                  stax.Softplus(), stax.Swish())


def _check(mine, ref, rtol, mask=None):
    scale = np.max(np.abs(ref))
    diff = np.abs(mine - ref) if mask is None else np.abs(mine - ref)[mask]
    assert mine.shape == ref.shape
    assert np.max(diff) <= rtol * scale, np.max(diff) / scale


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_conv_kernels_match_neural_tangents(name):
    net = stax.parse(NETWORKS[name])
    X1, X2 = DATA[f"{name}/X1"], DATA[f"{name}/X2"]
    nngp12, ntk12 = net.kernel_fn(X1, X2)
    nngp11, ntk11 = net.kernel_fn(X1, None)
    _check(nngp12, DATA[f"{name}/nngp12"], 1e-10)
    _check(ntk12, DATA[f"{name}/ntk12"], 1e-10)
    _check(nngp11, DATA[f"{name}/nngp11"], 1e-10)
    off = ~np.eye(len(X1), dtype=bool)
    _check(ntk11, DATA[f"{name}/ntk11"], 1e-10, off)
    # the same-input entries: neural-tangents evaluates ReLU's arccos at correlation 1 in float64 (about
    # 8 digits lost in its derivative term); ours are the one-variable forms
    _check(ntk11, DATA[f"{name}/ntk11"], 1e-7)


def test_the_recorded_networks_share_one_compiled_module():
    """Every compiled chain of the fast tests uses the module of the shared activation set."""
    used = set()
    for name in COMPILED:
        net = stax.parse(NETWORKS[name])
        X1 = DATA[f"{name}/X1"]
        own = convolution.plan(net.description, X1.shape[1:-1], X1.shape[-1])[3]
        used.add(convolution.module_for(own)[0].__name__)
    assert len(used) == 1, used


COMPILED = sorted(set(NETWORKS) - {"branches"})


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_conv_kernels_match_neural_tangents(name):

    net = stax.parse(NETWORKS[name])
    X1, X2 = DATA[f"{name}/X1"], DATA[f"{name}/X2"]
    k12 = convolution.kernel(net, X1, X2)
    k11 = convolution.kernel(net, X1)
    _check(k12.nngp, DATA[f"{name}/nngp12"], 1e-10)
    _check(k12.ntk, DATA[f"{name}/ntk12"], 1e-10)
    _check(k11.nngp, DATA[f"{name}/nngp11"], 1e-10)
    _check(k11.ntk, DATA[f"{name}/ntk11"], 1e-10, ~np.eye(len(X1), dtype=bool))
    _check(k11.ntk, DATA[f"{name}/ntk11"], 1e-7)
    # a row of X2 equal to a row of X1 gets the same-input value (the X1, None diagonal)
    k = convolution.kernel(net, X1, X1[::-1])
    np.testing.assert_array_equal(np.diag(k.ntk[:, ::-1]), np.diag(k11.ntk))


def test_compiled_conv_kernel_refuses_what_it_does_not_evaluate():

    with pytest.raises(convolution.NotCompilableConv, match=r"FanOut\(2\) at layer 1"):
        convolution.kernel(stax.parse(NETWORKS["branches"]), DATA["branches/X1"])
    bessel = stax.serial(stax.Conv(4, (2,)), stax.Activation(sp.besselj(0, x)), stax.Flatten(), stax.Dense(1))
    with pytest.raises(convolution.NotCompilableConv, match=r"besselj\(0, x\)'\) at layer 1.*no Numba form"):
        convolution.kernel(bessel, IMAGES)


# every closed-form activation in one chain (one generated module): compiled against the NumPy interpreter,
# which evaluates the same closed forms by a different path (NumPy stable forms on whole arrays, per layer)
ALL_CLOSED_FORMS = ("Gelu()", "Erf()", "Sign()", "Exp()", "Sin()", "Monomial(2)", "Cos()", "RectifiedMonomial(2)",
                    "Gaussian()", "Polynomial([0.1, 0.5, 0.3])", "Rbf(0.8)", "Hermite(3)", "LeakyRelu(0.1)",
                    "ABRelu(-0.4, 1.2)", "Abs()", "Relu()")


def _all_activations(readout):
    layers = []
    for i, act in enumerate(ALL_CLOSED_FORMS):
        pad = ("SAME", "CIRCULAR")[i % 2]
        layers.append(f"Conv(3, (3, 3), padding='{pad}', W_std=1.1, b_std=0.2), {act}")
        if i == 7:
            layers.append("AvgPool((2, 2), padding='SAME')")
    return stax.parse("serial(" + ", ".join(layers) + f", {readout}, Dense(1, b_std=0.1))")


@pytest.mark.slow  # one cold compile of a 16-activation module (~30-60 s), then milliseconds
@pytest.mark.parametrize("readout", ["GlobalAvgPool()", "Flatten()"])
def test_compiled_closed_form_activations_match_the_interpreter(readout):

    net = _all_activations(readout)
    X = np.random.default_rng(1).normal(size=(5, 4, 5, 2))
    for X2 in (None, X[:3]):
        fast = convolution.kernel(net, X, X2)
        ref = graph.kernel(net.description, X, X2)
        assert np.max(np.abs(ref.ntk - ref.nngp)) > 0.1 * np.max(np.abs(ref.nngp))  # gradients reach the input
        _check(fast.nngp, ref.nngp, 1e-12)
        _check(fast.ntk, ref.ntk, 1e-12)


def test_tiles_and_memmap_outputs_equal_the_in_memory_kernel(tmp_path):
    """Row tiles of one row and ``out=`` memory maps give the in-memory result bit for bit (X2 = None
    mirrors across tiles; X2 given fills whole rows)."""

    name = "myrtle"
    net = stax.parse(NETWORKS[name])
    X = np.concatenate([DATA[f"{name}/X1"], DATA[f"{name}/X2"], DATA[f"{name}/X1"][:1] * 0.5])
    for X2 in (None, X[:4]):
        whole = convolution.kernel(net, X, X2)
        n2 = len(X) if X2 is None else len(X2)
        tiny = convolution.kernel(net, X, X2, tile_mb=16 * n2 / 2**20)  # one row per tile
        out = tuple(np.memmap(tmp_path / f"{g}.bin", dtype=np.float64, mode="w+", shape=(len(X), n2))
                    for g in ("nngp", "ntk"))
        mapped = convolution.kernel(net, X, X2, out=out, tile_mb=2 * 16 * n2 / 2**20)
        assert mapped.nngp is out[0] and mapped.ntk is out[1]
        for other in (tiny, mapped):
            np.testing.assert_array_equal(np.asarray(other.nngp), whole.nngp)
            np.testing.assert_array_equal(np.asarray(other.ntk), whole.ntk)
    _check(whole.nngp[:3, :3], DATA[f"{name}/nngp11"], 1e-10)
    with pytest.raises(ValueError, match="out arrays"):
        convolution.kernel(net, X, out=(np.empty((2, 2)), np.empty((2, 2))))


def test_blocks_of_rows_give_neural_tangents_numbers(monkeypatch):
    monkeypatch.setattr(graph, "BLOCK_ENTRIES", 1)  # one row of X1 at a time
    name = "myrtle"
    net = stax.parse(NETWORKS[name])
    X1 = DATA[f"{name}/X1"]
    nngp, ntk = net.kernel_fn(X1, None)
    _check(nngp, DATA[f"{name}/nngp11"], 1e-10)
    _check(ntk, DATA[f"{name}/ntk11"], 1e-10)


IMAGES = np.random.default_rng(0).normal(size=(2, 5, 2))


# ---------------------------------------------------------------------- tanh by hand
def _gauss2(f, g, a, b, c):
    """E[f(u) g(v)], (u, v) ~ N(0, [[a, c], [c, b]]), by nested adaptive quadrature."""
    s = math.sqrt(a)
    r = math.sqrt(max(b - c * c / a, 0.0))
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    opts = dict(epsabs=1e-14, epsrel=1e-13, limit=200)

    def inner(z1):
        m = c / s * z1
        if r == 0:
            return g(m)
        return integrate.quad(lambda z2: phi(z2) * g(m + r * z2), -12, 12, **opts)[0]

    return integrate.quad(lambda z1: phi(z1) * f(s * z1) * inner(z1), -12, 12, **opts)[0]


def _tanh_by_hand(X, readout, cw=1.7, cb=0.2):
    """serial(Conv(C, (2,), W_std, b_std), Tanh(), readout, Dense(1, W_std, b_std)) on 1-D inputs (N, 3, 1)
    of one channel: K1[p, q] = C_b + C_W (K0[p, q] + K0[p+1, q+1]) / 2 (two output positions), Theta1 = K1;
    K2 = E[tanh tanh], Theta2 = E[tanh' tanh'] Theta1; readout 'pool': the mean over (p, q), 'flatten':
    the mean over p of (p, p); then K = C_b + C_W K3, Theta = C_b + C_W K3 + C_W Theta3."""
    x = X[:, :, 0]
    n = len(x)
    K0 = np.einsum("ip,jq->ijpq", x, x)
    K1 = cb + cw * (K0[:, :, :2, :2] + K0[:, :, 1:, 1:]) / 2
    t, dt = math.tanh, lambda u: 1 / math.cosh(u) ** 2
    K2, D2 = np.empty_like(K1), np.empty_like(K1)
    for i in range(n):
        for j in range(n):
            for p in range(2):
                for q in range(2):
                    a, b, c = K1[i, i, p, p], K1[j, j, q, q], K1[i, j, p, q]
                    if readout == "flatten" and p != q:
                        K2[i, j, p, q] = D2[i, j, p, q] = np.nan
                        continue
                    K2[i, j, p, q] = _gauss2(t, t, a, b, c)
                    D2[i, j, p, q] = _gauss2(dt, dt, a, b, c)
    T2 = D2 * K1
    if readout == "pool":
        K3, T3 = K2.mean(axis=(2, 3)), T2.mean(axis=(2, 3))
    else:
        K3, T3 = np.trace(K2, axis1=2, axis2=3) / 2, np.trace(T2, axis1=2, axis2=3) / 2
    return cb + cw * K3, cb + cw * K3 + cw * T3


@pytest.mark.parametrize("readout", ["pool", "flatten"])
def test_tanh_cnn_kernel_matches_quadrature(readout):
    """The NumPy interpreter and the compiled kernel (Hermite tables per input and position, Mehler series per
    pixel pair) against the hand-written recursion with nested scipy quadrature."""
    X = np.array([[0.9, -0.4, 1.3], [0.2, 1.1, -0.7], [-1.0, 0.5, 0.3]])[:, :, None]
    cw, cb = 1.7, 0.2
    layer = stax.GlobalAvgPool() if readout == "pool" else stax.Flatten()
    net = stax.serial(stax.Conv(64, (2,), W_std=math.sqrt(cw), b_std=math.sqrt(cb)), stax.Tanh(), layer,
                      stax.Dense(1, W_std=math.sqrt(cw), b_std=math.sqrt(cb)))
    K, T = _tanh_by_hand(X, readout, cw, cb)
    nngp, ntk = net.kernel_fn(X, None, compiled=False)
    np.testing.assert_allclose(nngp, K, rtol=1e-11, atol=0)
    np.testing.assert_allclose(ntk, T, rtol=1e-11, atol=0)
    fast = net.kernel_fn(X, None, compiled=True)
    assert fast.info["evaluated_by"] == "ntk_theory.codegen.convolution"
    assert fast.info["quadrature_error"] < 1e-13
    np.testing.assert_allclose(fast.nngp, K, rtol=1e-11, atol=0)
    np.testing.assert_allclose(fast.ntk, T, rtol=1e-11, atol=0)
    cross = convolution.kernel(net, X[:2], X[1:])  # X2 given: rows equal to rows of X1 take their own value
    np.testing.assert_allclose(cross.nngp, K[:2, 1:], rtol=1e-11, atol=0)
    np.testing.assert_allclose(cross.ntk, T[:2, 1:], rtol=1e-11, atol=0)


NUMERIC = {
    "pool": stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=1.5, b_std=0.2), stax.Tanh(),
                        stax.Conv(3, (2, 2), strides=(1, 2), W_std=1.3, b_std=0.1), stax.Softplus(),
                        stax.AvgPool((2, 2), padding="SAME", normalize_edges=True),
                        stax.Conv(3, (2, 2), padding="CIRCULAR", W_std=1.2), stax.Swish(), stax.GlobalAvgPool(),
                        stax.Dense(1, b_std=0.1)),
    "flatten": stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=1.5, b_std=0.2), stax.Tanh(),
                           stax.Conv(3, (2, 2), W_std=1.3, b_std=0.1), stax.Relu(), stax.Dense(3, W_std=1.1),
                           stax.Swish(), stax.Flatten(), stax.Dense(1, b_std=0.1)),
}


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_compiled_activations_without_closed_form_match_the_interpreter(name):
    """tanh, softplus and swish (no closed form), alone and beside ReLU, every pixel pair (pooling) or the same
    positions (Flatten): the compiled kernel against the NumPy interpreter (Mehler series on its own tables,
    2-D quadrature where they do not reach)."""
    net = NUMERIC[name]
    X = np.random.default_rng(2).normal(size=(4, 5, 4, 2))
    for X2 in (None, np.concatenate([X[2:], X[:1] * 0.7])):
        fast = convolution.kernel(net, X, X2)
        ref = graph.kernel(net.description, X, X2)
        assert fast.info["quadrature_error"] < 1e-12
        _check(fast.nngp, ref.nngp, 1e-12)
        _check(fast.ntk, ref.ntk, 1e-12)


def test_short_series_are_refused_with_the_layers_named():
    """Tables too short for the correlations of neighbouring positions: refused (never a truncated value)."""
    X = np.random.default_rng(2).normal(size=(2, 5, 4, 2))
    with pytest.raises(convolution.SeriesTooShort, match=r"Tanh\(\) at layer 1.*beyond degree 4"):
        convolution.kernel(NUMERIC["pool"], X, max_order=4)


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize("net, X, message", [
    (stax.serial(stax.Conv(4, (2,)), stax.Flatten(), stax.Dense(1)), IMAGES[:, :, 0], r"Conv\(4, \(2,\)\) at layer 0 needs"),
    (stax.serial(stax.Conv(4, (2, 2)), stax.Flatten(), stax.Dense(1)), IMAGES, "needs 2-D images"),
    (stax.serial(stax.Conv(4, (2,)), stax.GlobalAvgPool(), stax.GlobalAvgPool(), stax.Dense(1)), IMAGES,
     "GlobalAvgPool.. at layer 2 needs images"),
    (stax.serial(stax.Conv(4, (6,)), stax.Flatten(), stax.Dense(1)), IMAGES, "does not fit"),
])
def test_bad_descriptions_are_refused_with_the_layer_named(net, X, message):
    with pytest.raises(ValueError, match=message):
        net.kernel_fn(X)


@pytest.mark.parametrize("net, message", [
    (stax.serial(stax.Conv(4, (2,)), stax.Relu(), stax.AvgPool((2,)), stax.Relu(), stax.Flatten(), stax.Dense(1)),
     r"Relu\(\) at layer 3 follows AvgPool"),
    (stax.serial(stax.Conv(4, (2,)), stax.Relu(), stax.Flatten(), stax.FanOut(2),
                 stax.parallel(stax.Identity(), stax.Dense(16)), stax.FanInSum(), stax.Dense(1)),
     r"Flatten\(\) at layer 2 of a non-Gaussian value"),
])
def test_what_is_not_exact_is_refused(net, message):
    with pytest.raises(NotImplementedError, match=message):
        net.kernel_fn(IMAGES)


def test_mpmath_arithmetic_is_refused_for_images():
    net = stax.serial(stax.Conv(4, (2,)), stax.Flatten(), stax.Dense(1))
    with pytest.raises(ValueError, match="dps"):
        graph.kernel(net.description, IMAGES, dps=30)


# ---------------------------------------------------------------------- Monte Carlo of finite networks
@pytest.mark.slow
@pytest.mark.parametrize("net, shape", [
    (stax.serial(stax.Conv(256, (2,), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(), stax.AvgPool((2,)),
                 stax.Conv(256, (2,), strides=(2,), padding="CIRCULAR"), stax.Erf(), stax.GlobalAvgPool(),
                 stax.Dense(1, b_std=0.1)), (5, 2)),
    (stax.serial(stax.Conv(256, (2, 2), padding="SAME", W_std=1.3, b_std=0.2), stax.Tanh(),
                 stax.Conv(256, (2, 2), strides=(2, 1)), stax.Relu(), stax.Flatten(), stax.Dense(1, b_std=0.1)),
     (4, 3, 2)),
    # beyond neural-tangents: a residual sum of a post-activation and a non-Dense branch, LayerNorm after it
    (stax.serial(stax.Conv(256, (3,), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(), stax.FanOut(2),
                 stax.parallel(stax.Identity(), stax.serial(stax.Conv(256, (2,), padding="CIRCULAR", b_std=0.1),
                                                            stax.Erf())),
                 stax.FanInSum(), stax.LayerNorm(), stax.AvgPool((2,), padding="SAME"), stax.Conv(256, (2,)),
                 stax.Relu(), stax.Flatten(), stax.Dense(1, b_std=0.1)), (5, 2)),
])
def test_conv_kernel_matches_monte_carlo_of_finite_networks(net, shape):
    """2000 random networks of 256 channels (ntk_theory.montecarlo.graph): within 4 standard errors (the
    finite-width bias, O(1/256), is below the ~0.2-0.4% statistical error here)."""
    from ntk_theory.montecarlo import graph as montecarlo

    X = np.random.default_rng(1).normal(size=(3,) + shape)
    est = montecarlo.sample_kernels(net, X, samples=2000, seed=3, progress=False)
    exact = net.kernel_fn(X)
    for name in ("nngp", "ntk"):
        z = est[name].z_score(getattr(exact, name))
        assert np.all(np.abs(z) < 4), (name, z)


def test_closed_form_modules_take_no_table_arguments(monkeypatch):
    """A module whose activations all have closed forms (its own, not the shared one) has no Hermite-table
    parameters in pairs -> chain -> activate (each one is passed per pixel pair); the shared module, with tanh,
    keeps them.  Signatures only: nothing is compiled."""
    import inspect

    net = stax.parse(NETWORKS["conv2d_pool"])
    shared = convolution.module_for(convolution.plan(net.description, (5, 6), 2)[3])[0]
    monkeypatch.setattr(convolution, "_SHARED", [])
    own = convolution.module_for(convolution.plan(net.description, (5, 6), 2)[3])[0]
    assert shared.TABLES and not own.TABLES
    for fn in ("pairs", "selves", "chain", "activate"):
        assert {"HA", "tol", "acc"} <= set(inspect.signature(getattr(shared, fn).py_func).parameters), fn
        assert not {"HA", "tol", "acc"} & set(inspect.signature(getattr(own, fn).py_func).parameters), fn


@pytest.mark.slow
def test_closed_form_modules_give_the_shared_modules_numbers(monkeypatch):
    """The module without table arguments gives neural-tangents' numbers and, bit for bit, the shared module's
    (one cold compile of its own module, ~30-60 s)."""
    name = "conv2d_pool"  # ReLU only, pooling: every position pair
    net = stax.parse(NETWORKS[name])
    X1, X2 = DATA[f"{name}/X1"], DATA[f"{name}/X2"]
    flat = stax.serial(stax.Conv(4, (2, 2), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu(), stax.Flatten(),
                       stax.Dense(1))  # same positions only
    shared = [convolution.kernel(n, X1, X2) for n in (net, flat)]
    monkeypatch.setattr(convolution, "_SHARED", [])
    lean = [convolution.kernel(n, X1, X2) for n in (net, flat)]
    assert not convolution.module_for(convolution.plan(net.description, (5, 6), 2)[3])[0].TABLES
    _check(lean[0].nngp, DATA[f"{name}/nngp12"], 1e-10)
    _check(lean[0].ntk, DATA[f"{name}/ntk12"], 1e-10)
    for a, b in zip(lean, shared):
        np.testing.assert_array_equal(a.nngp, b.nngp)
        np.testing.assert_array_equal(a.ntk, b.ntk)


def test_kernel_fn_routes_images_to_the_compiled_kernel_or_numpy():
    name = "myrtle"
    net = stax.parse(NETWORKS[name])
    X1 = DATA[f"{name}/X1"]
    fast = net.kernel_fn(X1, None, compiled=True)
    assert fast.info["evaluated_by"] == "ntk_theory.codegen.convolution"
    _check(fast.nngp, DATA[f"{name}/nngp11"], 1e-10)
    assert net.kernel_fn(X1, None).info["evaluated_by"] == "ntk_theory.recursions.graph"  # small: NumPy
    branches = stax.parse(NETWORKS["branches"])
    with pytest.raises(NotImplementedError, match="FanOut"):
        branches.kernel_fn(DATA["branches/X1"], compiled=True)


def test_blocks_free_their_arrays(monkeypatch):
    """The peak memory of a blocked kernel is that of one block, not of all blocks (tracemalloc)."""
    import tracemalloc

    net = stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Relu(), stax.Conv(4, (3, 3), padding="SAME"),
                      stax.Erf(), stax.AvgPool((2, 2)), stax.GlobalAvgPool(), stax.Dense(1))
    X = np.random.default_rng(0).normal(size=(12, 6, 6, 2))
    monkeypatch.setattr(graph, "BLOCK_ENTRIES", 1)  # one row of X1 per block
    graph.kernel(net.description, X[:1], X)  # warm caches
    peaks = []
    for rows in (1, 12):
        tracemalloc.start()
        graph.kernel(net.description, X[:rows], X)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2.5 * peaks[0], peaks
