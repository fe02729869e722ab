"""The fast empirical NTK (issue 6) against independent references.

References: the reference network's forward-mode NTK ``MLP.ntk`` and Jacobian ``MLP.jacobian`` /
``MLP.jvp`` (hand-written forward mode, separate code), central finite differences of the network
output for layer sequences with mixed activations, and tracemalloc's peak memory.
"""

import tracemalloc

import numpy as np
import pytest

from ntk_theory import MLP, learning_rate_factors
from ntk_theory.cli import main
from ntk_theory.empirical import (
    METHODS,
    Dense,
    Problem,
    cost_table,
    empirical_ntk,
    estimate,
    estimates,
    jacobian,
    jvp,
    plan,
    vjp,
)

ALL = METHODS + ("auto",)
PARAMS = ["ntk", "unit", "standard"]


def _rel(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def _data(n0, n1=5, n2=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1, n0)), rng.standard_normal((n2, n0))


# ---------------------------------------------------------------------------- agreement
# a table of test cases laid out like test_reference_network's: data, not shared logic
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize(
    "act, widths",
    [
        ("relu", (3, 8, 1)),
        ("tanh", (4, 7, 6, 3)),
        ("gelu", (2, 6, 5, 4, 2)),
        ("erf", (5, 9, 9, 1)),
        ("sin", (3, 4, 5, 6, 7, 4)),
    ],
)
def test_all_methods_agree_with_forward_mode_ntk(act, widths, param):
    """Every method, trace and full, X2 = X1 and X2 != X1, equals MLP.ntk to 1e-12 relative."""
    net = MLP.random(widths, act, C_W=1.7, C_b=0.2, param=param, seed=3)
    X1, X2 = _data(widths[0])
    for x2 in (None, X2):
        for trace in (True, False):
            ref = net.ntk(X1, x2, trace_outputs=trace)
            for method in ALL:
                got = empirical_ntk(net, X1, x2, method=method, trace_outputs=trace)
                assert got.shape == ref.shape and got.dtype == np.float64
                assert _rel(got, ref) < 1e-12, (method, trace, x2 is None, _rel(got, ref))


def test_dense_stack_is_accepted_as_a_network():
    """A DenseStack carries its parameters: empirical_ntk takes it as it takes the MLP it came from (it was
    mistaken for a parameterless description and refused)."""
    from ntk_theory.empirical import DenseStack

    net = MLP.random((3, 6, 2), "tanh", C_W=1.5, C_b=0.1, seed=4)
    X1, X2 = _data(3)
    ref = net.ntk(X1, X2, trace_outputs=False)
    for method in ALL:
        assert _rel(empirical_ntk(DenseStack.from_mlp(net), X1, X2, method=method, trace_outputs=False), ref) < 1e-12


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_batching_over_inputs_does_not_change_the_result(method, batch_size):
    net = MLP.random((3, 6, 5, 3), "tanh", C_W=1.3, C_b=0.3, param="ntk", seed=0)
    X1, X2 = _data(3, 7, 5)
    for x2 in (None, X2):
        for trace in (True, False):
            ref = net.ntk(X1, x2, trace_outputs=trace)
            got = empirical_ntk(net, X1, x2, method=method, trace_outputs=trace, batch_size=batch_size)
            assert _rel(got, ref) < 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_symmetric_kernel_is_exactly_symmetric(method):
    net = MLP.random((3, 6, 5, 2), "gelu", C_W=1.3, C_b=0.3, seed=0)
    X, _ = _data(3, 6)
    K = empirical_ntk(net, X, method=method, trace_outputs=False, batch_size=4)
    assert np.array_equal(K, K.transpose(1, 0, 3, 2))
    K = empirical_ntk(net, X, method=method, batch_size=4)
    assert np.array_equal(K, K.T)


@pytest.mark.parametrize("method", METHODS)
def test_float32(method):
    net = MLP.random((4, 16, 16, 3), "relu", C_W=2.0, C_b=0.1, param="standard", seed=2)
    X1, X2 = _data(4)
    for trace in (True, False):
        got = empirical_ntk(net, X1, X2, method=method, trace_outputs=trace, dtype=np.float32)
        assert got.dtype == np.float32
        assert _rel(got, net.ntk(X1, X2, trace_outputs=trace)) < 2e-6


def test_derivatives_match_the_reference_network():
    """Forward-mode Jacobian, JVP and the hand-written VJP against MLP.jacobian / MLP.jvp."""
    net = MLP.random((3, 6, 7, 3), "swish", C_W=1.5, C_b=0.1, param="standard", seed=4)
    X, _ = _data(3)
    J_ref = net.jacobian(X, flat=True, scaled=True)
    assert _rel(jacobian(net, X), J_ref) < 1e-13
    rng = np.random.default_rng(0)
    V = rng.standard_normal((4, net.n_params))
    assert _rel(jvp(net, X, net.unflatten(V)), net.jvp(X, V)[1]) < 1e-13
    assert _rel(jvp(net, X, net.unflatten(V[0])), net.jvp(X, V[0])[1]) < 1e-13
    C = rng.standard_normal((X.shape[0], 2, 3))
    J = net.jacobian(X, flat=True)  # unscaled (N, O, P)
    g = np.concatenate([np.concatenate([dW.reshape(*dW.shape[:2], -1), db], -1) for dW, db in vjp(net, X, C)], -1)
    assert _rel(g, np.einsum("ako,aop->akp", C, J)) < 1e-13


def _sequence_output(layers, X):
    """Plain forward pass of a layer sequence (the reference for finite differences)."""
    from ntk_theory.reference import numpy_activation

    a = X
    for item in layers:
        a = a @ item.W.T + item.b if isinstance(item, Dense) else numpy_activation(item).value(a)
    return a


def test_layer_sequence_against_central_differences():
    """Mixed activations, two in a row, none (linear) between two Dense layers: the NTK of every
    method equals J_fd Lambda J_fd^T with J_fd from central differences of the output."""
    rng = np.random.default_rng(5)
    shapes = [(5, 3), (4, 5), (6, 4), (2, 6)]
    lams = [(1.3, 0.2), (0.7, 1.0), (2.0, 0.0), (1.0, 0.5)]
    dense = [Dense(rng.standard_normal(s) / np.sqrt(s[1]), 0.3 * rng.standard_normal(s[0]), lw, lb)
             for s, (lw, lb) in zip(shapes, lams)]
    layers = [dense[0], "tanh", dense[1], "sin", "gelu", dense[2], dense[3]]
    X1, X2 = _data(3, 4, 3)
    h = 1e-5

    def jac_fd(X):
        cols, lam = [], []
        for k, d in enumerate(dense):
            for name, arr, factor in (("W", d.W, d.lambda_W / d.W.shape[1]), ("b", d.b, d.lambda_b)):
                for idx in np.ndindex(arr.shape):
                    out = []
                    for sign in (1, -1):
                        new = arr.copy()
                        new[idx] += sign * h
                        moved = Dense(new, d.b, d.lambda_W, d.lambda_b) if name == "W" else Dense(d.W, new, d.lambda_W, d.lambda_b)
                        out.append(_sequence_output([moved if it is d else it for it in layers], X))
                    cols.append((out[0] - out[1]) / (2 * h))
                    lam.append(factor)
        return np.stack(cols, -1), np.array(lam)  # (N, O, P)

    (J1, lam), (J2, _) = jac_fd(X1), jac_fd(X2)
    ref = np.einsum("aop,p,bqp->aboq", J1, lam, J2)
    for method in ALL:
        got = empirical_ntk(layers, X1, X2, method=method, trace_outputs=False)
        assert _rel(got, ref) < 1e-8, (method, _rel(got, ref))
        tr = empirical_ntk(layers, X1, X2, method=method)
        assert _rel(tr, np.einsum("aboo->ab", ref) / 2) < 1e-8


def test_layer_sequence_with_parameterization_factors_equals_mlp():
    net = MLP.random((3, 8, 8, 2), "elu(1.0)", C_W=1.8, C_b=0.3, param="standard", seed=6)
    layers = []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        lam_b, lam_W = learning_rate_factors("standard", C_W=1.8, C_b=0.3, fan_in=W.shape[1])
        layers += [Dense(W, b, lam_W, lam_b)] + (["elu(1.0)"] if l < 2 else [])
    X1, X2 = _data(3)
    for method in METHODS:
        assert _rel(empirical_ntk(layers, X1, X2, method=method), net.ntk(X1, X2)) < 1e-12


# ---------------------------------------------------------------------------- cost model
def test_auto_runs_the_cheapest_predicted_method():
    for widths, n1, n2, trace in [((32, 64, 64, 1), 64, None, True), ((3, 4, 2), 1, 1, False),
                                  ((8, 512, 512, 10), 16, 300, False)]:
        p = Problem.of(widths, n1, n2, trace)
        cheapest = min(estimates(p), key=lambda e: e.seconds).method
        assert plan(MLP.random(widths, "relu", seed=0), n1, n2, "auto", trace).method == cheapest
        text = cost_table(p)
        assert f"auto chooses: {cheapest}" in text and all(m in text for m in METHODS)


def test_cost_model_sizes_match_the_network():
    net = MLP.random((7, 11, 13, 3), "relu", seed=0)
    p = Problem.of(net.spec, 5)
    assert p.P == net.n_params and p.L == 2 and p.O == 3
    assert p.F == 7 * 11 + 11 * 13 + 13 * 3


@pytest.mark.parametrize("method", METHODS)
def test_memory_model_against_tracemalloc(method):
    """Peak traced allocation (NumPy reports its buffers to tracemalloc) within a factor 3 of the
    model's intermediates + output, unbatched and under a budget that allows blocks of 12 inputs."""
    net = MLP.random((8, 96, 96, 4), "relu", C_W=2.0, seed=0)
    X = np.random.default_rng(0).standard_normal((48, 8))
    budget = None
    for _ in range(2):
        kwargs = {} if budget is None else {"max_memory": budget}
        est = plan(net, 48, None, method, False, **kwargs)
        tracemalloc.start()
        tracemalloc.reset_peak()
        empirical_ntk(net, X, method=method, trace_outputs=False, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        predicted = est.memory + est.output_bytes
        assert predicted / 3 < peak < 3 * predicted, (method, budget, peak, predicted, est.block)
        if budget is not None:
            assert est.block == 12 and est.memory <= budget
        budget = estimate(method, Problem.of(net, 48, None, False), block=12).memory


# The cost model's scaling exponents against measured timings are a benchmark, not a test
# (timings on a shared machine are not a reproducible judge): benchmarks/bench_empirical.py
# measures them side by side and writes the table to BENCHMARKS.md.


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small_net():
    return MLP.random((3, 5, 2), "tanh", seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(X1=np.ones((4, 2))), "X1 has 2 features per input but the network's input dimension is 3"),
        (dict(X2=np.ones((4, 5))), "X2 has 5 features per input but the network's input dimension is 3"),
        (dict(X1=np.ones((0, 3))), "X1 is empty"),
        (dict(X2=np.ones((0, 3))), "X2 is empty"),
        (dict(X1=np.ones((2, 3, 1))), "2-D array"),
        (dict(X1=np.array([[1.0, np.nan, 0.0]])), "non-finite"),
        (dict(method="fastest"), "unknown method 'fastest'"),
        (dict(method=None), "method must be a string"),
        (dict(dtype=np.int32), "dtype must be float32 or float64"),
        (dict(dtype="complex"), "dtype must be float32 or float64"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(batch_size=2.5), "batch_size must be an integer >= 1"),
        (dict(trace_outputs="yes"), "trace_outputs must be True or False"),
        (dict(max_memory=-1), "max_memory must be a positive number"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(small_net, kwargs, message):
    args = dict(X1=np.ones((2, 3)), X2=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        empirical_ntk(small_net, args.pop("X1"), args.pop("X2"), **args)


def test_bad_networks_raise_value_error():
    W = np.ones((4, 3))
    with pytest.raises(ValueError, match="net must be an MLP"):
        empirical_ntk("relu", np.ones((2, 3)))
    with pytest.raises(ValueError, match="start and end with a Dense layer"):
        empirical_ntk(["relu", Dense(W, np.ones(4))], np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least two Dense layers"):
        empirical_ntk([Dense(W, np.ones(4))], np.ones((2, 3)))
    with pytest.raises(ValueError, match="Dense layer 2 takes 5 inputs but layer 1 has 4 outputs"):
        empirical_ntk([Dense(W, np.ones(4)), "relu", Dense(np.ones((1, 5)), np.ones(1))], np.ones((2, 3)))
    with pytest.raises(ValueError, match="Dense layer 1: W must be 2-D"):
        empirical_ntk([Dense(W, np.ones(3)), Dense(np.ones((1, 4)), np.ones(1))], np.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        empirical_ntk([Dense(W, np.ones(4)), "nope", Dense(np.ones((1, 4)), np.ones(1))], np.ones((2, 3)))
    with pytest.raises(ValueError, match="lambda_W must be a finite number >= 0"):
        empirical_ntk([Dense(W, np.ones(4), lambda_W=-1), Dense(np.ones((1, 4)), np.ones(1))], np.ones((2, 3)))


# ---------------------------------------------------------------------------- command line
def test_cli_empirical_ntk_and_cost(tmp_path, capsys):
    x = tmp_path / "x.npy"
    X = np.random.default_rng(0).standard_normal((5, 3))
    np.save(x, X)
    out = tmp_path / "k.npz"
    rc = main(["empirical-ntk", "tanh", "--depth", "2", "--width", "16", "--C-W", "1.5", "--C-b", "0.1",
               "--param", "standard", "--outputs", "3", "--x", str(x), "--no-trace", "--seed", "4",
               "--method", "ntk_vector_products", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ntk_vector_products" in printed and "(5, 5, 3, 3)" in printed
    net = MLP.random((3, 16, 16, 3), "tanh", C_W=1.5, C_b=0.1, param="standard", seed=4)
    assert _rel(np.load(out)["ntk"], net.ntk(X, trace_outputs=False)) < 1e-12
    assert main(["empirical-cost", "--n", "256", "--outputs", "10", "--depth", "3", "--width", "512",
                 "--input-dim", "32", "--no-trace"]) == 0
    printed = capsys.readouterr().out
    assert "auto chooses: structured" in printed and "jacobian_contraction" in printed
    assert main(["empirical-ntk", "--method", "fastest", "--out", str(out)]) == 2
    assert "unknown method 'fastest'" in capsys.readouterr().err
    np.save(x, np.ones((4, 2)))
    assert main(["empirical-ntk", "--x", str(x), "--x2", str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    assert main(["empirical-ntk", "--depth", "1", "--x", str(x), "--x2", str(tmp_path / "nothere.npy"),
                 "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
