"""The compiled kernel of architecture descriptions (``ntk_theory.codegen.graph``) against two independent
evaluations: neural-tangents 0.6.5's recorded ``kernel_fn`` outputs (``tests/data/neural_tangents/stax_*.npz``,
1e-10 off the diagonal; its own diagonal loses digits at ReLU's kink, so 1e-7 there) and the NumPy
interpreter ``recursions.graph.kernel`` (full-size arrays, NumPy's elementary functions; 1e-13 relative off
the diagonal on well-separated inputs, the equal-row entries identical: both take them from the one-variable
forms).

The fast set compiles two programs (the residual block of the recordings and one network that uses every
layer rule, including the two neural-tangents refuses); the other recordings and the 10-block residual
network of the benchmark are in the slow set.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from ntk_theory import stax
from ntk_theory.activations import x
from ntk_theory.codegen.graph import (
    CompiledGraphKernel,
    NotCompilable,
    compiled_graph_kernel,
)
from ntk_theory.recursions import graph
from ntk_theory.recursions.network import equal_rows

DATA = Path(__file__).parent / "data" / "neural_tangents"
EXACT = 1e-10
NT_DIAGONAL = 1e-7  # neural-tangents' ReLU diagonal (arccos at angle 0 keeps about half the digits)
INTERPRETER = 1e-13


def recording(name):
    with np.load(DATA / f"stax_{name}.npz") as d:
        arrays = {k: d[k] for k in d.files}
    return arrays, json.loads(str(arrays.pop("config")))


def network_of(expression: str, parameterization: str):
    """The recorded network text with every Dense given the recording's parameterization."""
    return stax.parse(re.sub(r"Dense\(([^)]*)\)", rf"Dense(\1, parameterization='{parameterization}')", expression))


def relative_off_diagonal(got, want, same):
    off = ~same
    return float(np.max(np.abs(got[off] - want[off]) / np.abs(want[off])))


def check_against_recording(name):
    nt, config = recording(name)
    for param in config["parameterizations"]:
        net = network_of(config["network"], param)
        got = compiled_graph_kernel(net).evaluate(nt["X"])
        same = np.eye(len(nt["X"]), dtype=bool)
        for q in ("nngp", "ntk"):
            want = nt[f"{param}/{q}"]
            ours = getattr(got, q)
            scale = np.max(np.abs(want))
            assert np.max(np.abs(ours[~same] - want[~same])) <= EXACT * scale, (name, param, q)
            assert np.max(np.abs(np.diag(ours) - np.diag(want))) <= NT_DIAGONAL * scale, (name, param, q)


def test_residual_block_matches_neural_tangents():
    check_against_recording("resblock")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["layernorm", "concat", "fansum"])
def test_recorded_networks_match_neural_tangents(name):
    check_against_recording(name)


# a network through every rule: LayerNorm of a Gaussian (per-input scales), a residual sum of a scaled Gaussian
# and a Dense branch (a Gaussian sum before erf), FanInConcat of terms with means, LayerNorm of a non-Gaussian
# value (centred moments), and the identity branch after a nonlinearity (cross terms of means) that
# neural-tangents refuses, then LayerNorm after it
EVERY_RULE = stax.serial(
    stax.Dense(16, W_std=1.3, b_std=0.2), stax.LayerNorm(), stax.FanOut(2),
    stax.parallel(stax.serial(stax.Relu(), stax.Dense(16, W_std=1.2, b_std=0.1)), stax.Identity()), stax.FanInSum(),
    stax.Erf(), stax.FanOut(2),
    stax.parallel(stax.Identity(), stax.serial(stax.Dense(8, W_std=1.1, b_std=0.3, parameterization="standard"),
                                               stax.Relu())),
    stax.FanInConcat(), stax.LayerNorm(), stax.Dense(16, W_std=1.2, b_std=0.2), stax.Relu(), stax.FanOut(2),
    stax.parallel(stax.Dense(16, W_std=0.9, b_std=0.1), stax.Identity()), stax.FanInSum(), stax.LayerNorm(),
    stax.Dense(1, W_std=1.4, b_std=0.1))


def inputs():
    rng = np.random.default_rng(1)
    X1 = rng.standard_normal((12, 5))
    X2 = np.vstack([rng.standard_normal((7, 5)), X1[[2, 5]]])  # two rows equal to rows of X1
    return X1, X2


@pytest.mark.parametrize("cross", [False, True], ids=["X1 with itself", "X1 with X2"])
def test_every_rule_matches_the_numpy_interpreter(cross):
    X1, X2 = inputs()
    X2 = X2 if cross else None
    got = compiled_graph_kernel(EVERY_RULE).evaluate(X1, X2)
    want = graph.kernel(EVERY_RULE.description, X1, X2)
    same = np.zeros(got.nngp.shape, dtype=bool)
    if cross:
        same[2, 7] = same[5, 8] = True
    else:
        np.fill_diagonal(same, True)
    for q in ("nngp", "ntk"):
        assert relative_off_diagonal(getattr(got, q), getattr(want, q), same) <= INTERPRETER, q
        np.testing.assert_array_equal(getattr(got, q)[same], getattr(want, q)[same])


def test_outputs_float32_and_given_arrays_take_the_same_values():
    """The tiled paths (float32 result, memory-mapped or given arrays) compute the same entries."""
    X1, X2 = inputs()
    kern = compiled_graph_kernel(EVERY_RULE)
    ref = kern.evaluate(X1, X2)
    out = (np.empty((12, 9), order="F"), np.empty((12, 9), order="F"))
    kern.evaluate(X1, X2, out=out)
    np.testing.assert_array_equal(out[0], ref.nngp)
    np.testing.assert_array_equal(out[1], ref.ntk)
    small = kern.evaluate(X1, X2, dtype=np.float32)
    np.testing.assert_array_equal(small.ntk, ref.ntk.astype(np.float32))
    assert kern.evaluate(X1, get="ntk").get == ("ntk",)


# activations without closed form: Hermite tables per input at the variance of each term (LayerNorm of a Gaussian:
# per-input scales c_a^2 K_aa), means from the tables (the residual sums' cross terms), a kinked one (elu)
NUMERIC = stax.serial(
    stax.Dense(16, W_std=1.3, b_std=0.2), stax.LayerNorm(), stax.FanOut(2),
    stax.parallel(stax.serial(stax.Tanh(), stax.Dense(16, W_std=1.2, b_std=0.1)), stax.Identity()), stax.FanInSum(),
    stax.Swish(), stax.FanOut(2),
    stax.parallel(stax.Identity(), stax.serial(stax.Dense(16, W_std=1.1, b_std=0.3), stax.Elu())), stax.FanInSum(),
    stax.Dense(1, W_std=1.4, b_std=0.1))


def numeric_inputs():
    """X2: six rows, one equal to a row of X1, and one 1e-5 from another (rho ~ 1 - 1e-10 there: elu's series
    would need more than max_order terms, so those entries take the compiled 2-D quadrature)."""
    rng = np.random.default_rng(1)
    X1 = rng.standard_normal((10, 3)) * 0.7
    X2 = np.vstack([rng.standard_normal((6, 3)), X1[[2]], X1[:1] + 1e-5 * np.array([[0.3, -0.2, 0.5]])])
    return X1, X2


@pytest.mark.parametrize("cross", [False, True], ids=["X1 with itself", "X1 with X2"])
def test_numerical_activations_match_the_numpy_interpreter(cross):
    """Tanh, swish and elu in residual sums after LayerNorm against the NumPy interpreter, whose expectations
    come from another integrator (tanh-sinh quadrature and NumPy Hermite tables) with its own error estimate:
    1e-13 relative everywhere (the equal-row entries from the one-variable forms of both), and the compiled
    estimate small."""
    X1, X2 = numeric_inputs()
    X2 = X2 if cross else None
    kern = compiled_graph_kernel(NUMERIC)
    before = kern.fallback_entries
    got = kern.evaluate(X1, X2)
    want = graph.kernel(NUMERIC.description, X1, X2)
    for q in ("nngp", "ntk"):
        g, w = getattr(got, q), getattr(want, q)
        assert np.max(np.abs(g - w)) <= 1e-13 * np.max(np.abs(w)), q
    assert got.info["quadrature_error"] < 1e-12 and want.info["quadrature_error"] < 1e-12
    if cross:
        assert kern.fallback_entries > before  # the near-parallel pair went through the quadrature


def test_numerical_activations_in_tiles_and_given_arrays():
    """Row tiles of 3 or 4 rows (float64 in place, float32 and Fortran-ordered outputs through tile buffers), with
    entries finished by quadrature at tile offsets: the values of one tile."""
    X1, X2 = numeric_inputs()
    X1 = np.vstack([X1, X1[5] + 1e-5 * np.array([0.3, -0.2, 0.5])])  # rows 5 and 10 near-parallel: tile 2
    ref = compiled_graph_kernel(NUMERIC)
    tiles = compiled_graph_kernel(NUMERIC, tile_mb=3 * 16 * len(X1) / 2**20)
    for b in (None, X2):
        want = ref.evaluate(X1, b)
        before = tiles.fallback_entries
        got = tiles.evaluate(X1, b)
        assert tiles.fallback_entries > before
        assert got.info["tile_rows"] <= 4
        for q in ("nngp", "ntk"):  # BLAS rounds G0 of a tile as it likes: 1e-14
            np.testing.assert_allclose(getattr(got, q), getattr(want, q), rtol=1e-14, atol=0)
        out = (np.empty(want.nngp.shape, order="F"), np.empty(want.nngp.shape, order="F"))
        tiles.evaluate(X1, b, out=out)
        np.testing.assert_array_equal(out[0], got.nngp)
        np.testing.assert_array_equal(out[1], got.ntk)
        np.testing.assert_array_equal(tiles.evaluate(X1, b, dtype=np.float32).ntk, got.ntk.astype(np.float32))


def test_numerical_activation_error_estimate_bounds_the_truncation():
    """Coarse truncation (tol 1e-6, 1e-3): one tanh layer, NNGP = C_b + C_W E[tanh(u) tanh(v)], so the
    error against the interpreter (~1e-14) is at most C_W times the reported estimate, and the estimate is
    not vacuous (within 1000 times the actual error)."""
    net = stax.serial(stax.Dense(8, W_std=1.6, b_std=0.3), stax.Tanh(), stax.Dense(1, W_std=1.2, b_std=0.1))
    X1, X2 = numeric_inputs()
    want = graph.kernel(net.description, X1, X2[:6])
    for tol in (1e-6, 1e-3):
        got = compiled_graph_kernel(net, tol=tol).evaluate(X1, X2[:6])
        error, estimate = np.max(np.abs(got.nngp - want.nngp)), got.info["quadrature_error"]
        assert 1e-3 * estimate < error <= 1.2**2 * estimate + 1e-14, (tol, error, estimate)


def test_kernel_fn_compiles_activations_without_closed_form(monkeypatch):
    """``kernel_fn`` of a tanh network: the compiled kernel (compiled=True, or by default from 10^5 entries)
    agrees with the NumPy interpreter (compiled=False) to 1e-13."""
    net = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.2), stax.Tanh(), stax.Dense(1, W_std=1.1, b_std=0.1))
    X = np.random.default_rng(7).standard_normal((320, 16))  # 3-D inputs: many pairs near rho = 1 (quadrature)
    want = net.kernel_fn(X[:12], get="ntk", compiled=False)
    got = net.kernel_fn(X[:12], get="ntk", compiled=True)
    assert np.max(np.abs(got - want)) <= 1e-13 * np.max(np.abs(want))

    def interpreter(*args, **kwargs):
        raise AssertionError("the NumPy interpreter ran")

    monkeypatch.setattr(graph, "kernel", interpreter)
    big = net.kernel_fn(X, get="ntk")
    assert np.max(np.abs(big[:12, :12] - want)) <= 1e-13 * np.max(np.abs(want))


@pytest.mark.slow
def test_numerical_activations_match_mpmath():
    """Against the interpreter in 20-digit mpmath (mpmath's own quadrature of every expectation): 1e-13."""
    net = stax.serial(stax.Dense(8, W_std=1.3, b_std=0.1), stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(
        stax.Tanh(), stax.Dense(8, W_std=1.3, b_std=0.1), stax.Swish(), stax.Dense(8, W_std=1.3, b_std=0.1))),
        stax.FanInSum(), stax.Tanh(), stax.Dense(1, W_std=1.3, b_std=0.1))
    rng = np.random.default_rng(5)
    X1, X2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    got = compiled_graph_kernel(net).evaluate(X1, X2)
    mp = graph.kernel(net.description, X1, X2, dps=20)
    for q in ("nngp", "ntk"):
        want = np.array(getattr(mp, q).tolist(), dtype=float)
        assert np.max(np.abs(getattr(got, q) - want)) <= 1e-13 * np.max(np.abs(want)), q


def test_program_is_one_fused_pass():
    """No N x N temporaries: the generated module computes each entry from per-input values and writes
    only the two outputs; one compiled function for every input size."""
    kern = compiled_graph_kernel(EVERY_RULE)
    src = kern.source
    assert src.count("def fused(") == 1 and "np.empty(" in src
    assert "K.shape[0]" not in src.split("def _row(")[1].split("def fused(")[0]  # rows handled one at a time


@pytest.mark.parametrize("text, error, words", [
    ("serial(Dense(8), FanOut(2), parallel(Dense(8), Dense(4)), FanInConcat(), Relu(), Dense(1))",
     NotImplementedError, ["Relu() at layer 4", "FanInConcat"]),
    ("serial(Dense(8), Relu(), FanOut(2), parallel(Relu(), Dense(8)), FanInSum(), Relu(), Dense(1))",
     NotImplementedError, ["Relu() at layer 5", "4 dimensions"]),
    (stax.serial(stax.Dense(8), stax.Activation(sp.besselj(0, x)), stax.Dense(1)), NotCompilable,
     ["Activation('besselj(0, x)') at layer 1", "no closed-form", "no Numba form"]),
    ("serial(Dense(8), FanOut(2), parallel(Dense(8), Dense(4)), FanInSum(), Dense(1))", ValueError, ["widths"]),
])
def test_unsupported_descriptions_name_the_layer(text, error, words):
    """Refused while the program is built (nothing compiled), with the layer named; the NumPy interpreter
    refuses the same descriptions, except an activation without closed form that Numba cannot evaluate
    (besselj), which it evaluates."""
    net = stax.parse(text) if isinstance(text, str) else text
    with pytest.raises(error) as info:
        CompiledGraphKernel(net, input_dim=3)
    assert all(w in str(info.value) for w in words), str(info.value)
    X = np.random.default_rng(0).standard_normal((3, 3))
    if error is NotCompilable:
        assert np.all(np.isfinite(graph.kernel(net.description, X).ntk))
    else:
        with pytest.raises(error):
            graph.kernel(net.description, X)


def residual(blocks: int, width: int = 64):
    W, B = 1.4, 0.1
    layers = [stax.Dense(width, W_std=W, b_std=B)]
    for _ in range(blocks):
        layers += [stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(
            stax.Relu(), stax.Dense(width, W_std=W, b_std=B), stax.Relu(), stax.Dense(width, W_std=W, b_std=B))),
            stax.FanInSum()]
    return stax.serial(*layers, stax.Relu(), stax.Dense(1, W_std=W, b_std=B))


@pytest.mark.slow
def test_benchmark_residual_network_matches_the_numpy_interpreter():
    X = np.random.default_rng(3).standard_normal((40, 32))
    net = residual(10)
    got, want = compiled_graph_kernel(net).evaluate(X), graph.kernel(net.description, X)
    same = np.eye(40, dtype=bool)
    for q in ("nngp", "ntk"):
        assert relative_off_diagonal(getattr(got, q), getattr(want, q), same) <= INTERPRETER, q
        np.testing.assert_array_equal(np.diag(getattr(got, q)), np.diag(getattr(want, q)))


def test_kernel_fn_compiled_and_numpy_paths():
    """``kernel_fn(compiled=True)`` is the compiled kernel, ``compiled=False`` the NumPy interpreter (compared
    above); a description without compiled rules falls back to NumPy unless compiled=True is asked."""
    X1, _ = inputs()
    a = EVERY_RULE.kernel_fn(X1, get="ntk", compiled=True)
    b = EVERY_RULE.kernel_fn(X1, get="ntk", compiled=False)
    same = np.eye(len(X1), dtype=bool)
    assert relative_off_diagonal(a, b, same) <= INTERPRETER
    bessel = stax.serial(stax.Dense(8), stax.Activation(sp.besselj(0, x)), stax.Dense(1))
    with pytest.raises(NotCompilable, match="besselj"):
        bessel.kernel_fn(X1, compiled=True)
    assert bessel.kernel_fn(X1, get="nngp").shape == (12, 12)
    with pytest.raises(ValueError, match="compiled"):
        bessel.kernel_fn(X1, compiled="yes")


# ---------------------------------------------------------------------- loops over repeated blocks
def residual_network(blocks: int):
    """A pre-LayerNorm residual network, each block with its own weight and bias scales."""
    def block(l):
        return stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(
            stax.LayerNorm(), stax.Relu(), stax.Dense(16, W_std=1.0 + 0.01 * (l % 7), b_std=0.1 + 0.01 * (l % 3)))),
            stax.FanInSum())
    return stax.serial(stax.Dense(16, W_std=1.5, b_std=0.1), *(block(l) for l in range(blocks)), stax.LayerNorm(),
                       stax.Erf(), stax.Dense(1, W_std=1.2))


def mlp_network(depth: int, act="erf"):
    """An MLP with per-layer C_W, C_b and widths ('standard': lambda_W = the fan-in differs per layer); with
    erf at these C_W the correlations of distinct inputs settle below 1 (no loss of digits with depth)."""
    from ntk_theory.architecture.mlp import mlp_description

    rng = np.random.default_rng(depth)
    return mlp_description(act, depth, C_W=list(rng.uniform(1.5, 2.5, depth + 1)),
                           C_b=list(rng.uniform(0.0, 0.2, depth + 1)), param="standard",
                           widths=[int(w) for w in rng.integers(8, 64, depth)])


@pytest.mark.parametrize("network", [residual_network, mlp_network])
def test_repeated_blocks_are_one_loop_for_every_depth(network):
    """A run of structurally equal blocks is one loop in the generated module: the module (its cache key)
    is the same at depths 3 and 50, and both depths agree with the NumPy interpreter (per-block constants,
    widths and per-input values read at the right repetition) to 1e-14 of the largest entry (the same
    formulas in the same order; entries near zero after LayerNorm's centring carry the cancellation both
    evaluations suffer), the equal-row entries identical."""
    X1, X2 = inputs()
    keys = set()
    for depth in (3, 50):
        net = network(depth)
        kern = CompiledGraphKernel(net)
        for B in (None, X2):
            got = kern.evaluate(X1, B)
            want = graph.kernel(getattr(net, "description", net), X1, B)
            same = equal_rows(X1, X1 if B is None else B)
            for q in ("nngp", "ntk"):
                a, b = getattr(got, q), getattr(want, q)
                assert np.max(np.abs(a - b)) <= 1e-14 * np.max(np.abs(b)), (depth, q)
                np.testing.assert_array_equal(a[same], b[same])
        keys.add(kern.key)
        assert kern.source.count("for rep in range(LOOPS[0, 0]):") == 2  # the fused row and the Python twin
    assert len(keys) == 1


@pytest.mark.slow
@pytest.mark.parametrize("network, depth, act", [(residual_network, 3, None), (mlp_network, 3, "relu"),
                                                 (mlp_network, 6, "tanh"), (residual_network, 12, None)])
def test_loops_equal_the_straight_line_program(network, depth, act):
    """The loop module and the straight-line module (every block emitted) of the same description: the same
    arithmetic, so equal to 1e-14; with tanh (Hermite tables per repetition) and max_order small enough that
    entries near the diagonal are finished by quadrature in the Python twin of the program."""
    net = network(depth) if act is None else network(depth, act)
    X1, X2 = inputs()
    opts = {} if act != "tanh" else {"max_order": 24}
    loop, straight = CompiledGraphKernel(net, **opts), CompiledGraphKernel(net, loops=False, **opts)
    assert "for rep in range" in loop.source and "for rep in range" not in straight.source
    X2 = np.vstack([X2, X1[:2] + 1e-6])
    for B in (None, X2):
        a, b = loop.evaluate(X1, B), straight.evaluate(X1, B)
        for q in ("nngp", "ntk"):
            assert np.max(np.abs(getattr(a, q) - getattr(b, q))) <= 1e-14 * np.max(np.abs(getattr(b, q))), q
    if act == "tanh":
        assert loop.fallback_entries > 0 and loop.fallback_entries == straight.fallback_entries
