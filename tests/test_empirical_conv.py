"""The empirical NTK of convolutional descriptions (ntk_theory.empirical: Jacobian contraction, NTK-vector
products, structured derivatives with weight sharing) against independent references: J J^T with J by the
reference network's forward mode (reference.graph.jvp of every unit parameter tangent, not the reverse passes
the three methods use) and neural-tangents 0.6.5's recorded empirical NTKs (tests/data/neural_tangents/
conv_apply.npz).  The cost model's parameter and multiply-add counts against the parameters init draws and
hand counts."""

import json
from pathlib import Path

import numpy as np
import pytest
from jacobians import assert_cli_ntk_matches_finite_differences, parsed_network
from jacobians import forward_mode_jacobian as _forward_mode_jacobian
from jacobians import rel as _rel

from ntk_theory import stax
from ntk_theory.empirical import METHODS, Problem, empirical_ntk, model, plan
from ntk_theory.empirical import graph as empirical_graph
from ntk_theory.reference import graph

ALL = METHODS + ("auto",)
DATA = Path(__file__).parent / "data" / "neural_tangents" / "conv_apply.npz"

# a data table alike in shape to benchmarks/anchors/record_conv_apply.NETWORKS, on purpose: other networks
NETWORKS = {
    # 1-D, strided CIRCULAR and SAME convolutions, AvgPool with normalize_edges, Dense per position, two outputs
    "conv1d": ("serial(Conv(3, (3,), strides=(2,), padding='CIRCULAR', b_std=0.3), Erf(), Dense(2, b_std=0.2), "
               "AvgPool((2,), padding='SAME', normalize_edges=True), Conv(3, (2,), padding='SAME', W_std=1.2), "
               "Relu(), Flatten(), Dense(2, b_std=0.1))", (4, 7, 2)),
    # 2-D residual block in 'standard' parameterization, LayerNorm over channels, FanInConcat, GlobalAvgPool
    "conv2d": ("serial(Conv(3, (2, 2), padding='SAME', b_std=0.1), FanOut(2), parallel(serial(Gelu(), "
               "Conv(3, (3, 1), padding='CIRCULAR', parameterization='standard', b_std=0.5)), Identity()), "
               "FanInSum(), LayerNorm(), FanOut(2), parallel(Identity(), Dense(2)), FanInConcat(), Sin(), "
               "GlobalAvgPool(), Dense(3, b_std=0.3))", (3, 4, 3, 2)),
    # one output, a Conv readout into Flatten (the last layer with weights is not the readout)
    "conv_then_flatten": ("serial(Conv(4, (3, 3), strides=(2, 2), padding='VALID', b_std=0.2), Tanh(), "
                          "Conv(2, (1, 2)), Flatten())", (3, 7, 6, 1)),
}


def _network(name, seed=0):
    return parsed_network(*NETWORKS[name], seed)


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("method", ALL)
def test_methods_match_forward_mode_jacobian(name, method):
    description, params, X = _network(name)
    X2 = np.random.default_rng(9).standard_normal((2,) + X.shape[1:])
    J1 = _forward_mode_jacobian(description, params, X)
    J2 = _forward_mode_jacobian(description, params, X2)
    full11 = np.einsum("aop,bqp->aboq", J1, J1)
    full12 = np.einsum("aop,bqp->aboq", J1, J2)
    O = J1.shape[1]
    for X2_, ref in ((None, full11), (X2, full12)):
        for batch_size in (None, 2):
            got = empirical_ntk(description, X, X2_, method=method, trace_outputs=False, params=params,
                                batch_size=batch_size)
            assert got.shape == ref.shape
            assert _rel(got, ref) < 1e-12, (X2_ is None, batch_size)
            traced = empirical_ntk(description, X, X2_, method=method, params=params, batch_size=batch_size)
            assert _rel(traced, np.einsum("aboo->ab", ref) / O) < 1e-12


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("route", ["gram", "jacobian"])
def test_structured_routes_match_forward_mode_jacobian(name, route, monkeypatch):
    """Both contractions of a shared-weight layer in the structured method (Grams over (input, position)
    rows, or the Jacobian rows sum_p g (x) x), forced for every Conv, against J J^T by forward mode: full and
    traced, X2 = X1 and X2 != X1, one block and blocks of 2 inputs."""
    from ntk_theory.empirical import cost

    description, params, X = _network(name)
    p = Problem.of(description, X.shape[0], input_dim=X.shape[1:])
    assert cost.shared_routes(p)  # every network here has shared-weight layers
    monkeypatch.setattr(cost, "shared_routes", lambda p: {s.path: route for s in p.dense if s.positions > 1})
    X2 = np.random.default_rng(9).standard_normal((3,) + X.shape[1:])
    J1 = _forward_mode_jacobian(description, params, X)
    J2 = _forward_mode_jacobian(description, params, X2)
    O = J1.shape[1]
    for X2_, ref in ((None, np.einsum("aop,bqp->aboq", J1, J1)), (X2, np.einsum("aop,bqp->aboq", J1, J2))):
        for batch_size in (None, 2):
            got = empirical_ntk(description, X, X2_, method="structured", trace_outputs=False, params=params,
                                batch_size=batch_size)
            assert _rel(got, ref) < 1e-12, (X2_ is None, batch_size)
            traced = empirical_ntk(description, X, X2_, method="structured", params=params, batch_size=batch_size)
            assert _rel(traced, np.einsum("aboo->ab", ref) / O) < 1e-12


def test_structured_route_choice_follows_the_cost_model():
    """A layer with few positions and a wide patch row contracts by Grams over (input, position) rows, one with
    many positions and a narrow patch by Jacobian rows, as the FLOP counts by hand say: per pair of inputs and
    O_c output pairs, Grams cost ~ 2 O_c P^2 n and Jacobian rows ~ 2 O_c K n."""
    from ntk_theory.empirical import cost

    # P = 4 positions, K = 9 * 64 = 576, n = 8: P^2 n = 128 << K n = 4608 -> gram
    few = stax.parse("serial(Conv(8, (3, 3), padding='SAME'), Relu(), Conv(8, (3, 3), padding='SAME'), "
                     "Flatten(), Dense(3))").description
    routes = cost.shared_routes(Problem.of(few, 16, None, False, input_dim=(2, 2, 64)))
    assert list(routes.values()) == ["gram", "gram"]
    # P = 256 positions, K = 9 * 4 = 36, n = 4: P^2 n = 262144 >> K n = 144 -> jacobian
    many = stax.parse("serial(Conv(4, (3, 3), padding='SAME'), Relu(), Flatten(), Dense(3))").description
    routes = cost.shared_routes(Problem.of(many, 16, None, False, input_dim=(16, 16, 4)))
    assert list(routes.values()) == ["jacobian"]


@pytest.mark.parametrize("method", METHODS)
def test_methods_match_neural_tangents(method):
    with np.load(DATA) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays.pop("config")))
    for name, net in config["networks"].items():
        description = stax.parse(net["network"]).description
        X = arrays[f"{name}/X"]
        _, like = graph.init(description, 0, X.shape)
        params = graph.with_leaves(like, [arrays[f"{name}/leaf{i}"] for i in range(net["leaves"])])
        got = empirical_ntk(description, X, method=method, trace_outputs=False, params=params)
        assert _rel(got, arrays[f"{name}/ntk"]) < 1e-12, name


def test_jacobian_blocks_give_the_ntk():
    """The scaled Jacobian of the empirical module (per layer, weight sharing summed over positions) against the
    forward-mode Jacobian: the same J J^T."""
    description, params, X = _network("conv1d")
    m = model(description, params, X.shape[1:])
    blocks = empirical_graph.jacobian(m, X)
    N, O = X.shape[0], 2
    J = np.concatenate([b.reshape(N, O, -1) for _, JW, Jb in blocks for b in (JW, Jb) if b is not None], axis=-1)
    Jf = _forward_mode_jacobian(description, params, X)
    assert J.shape == Jf.shape
    np.testing.assert_allclose(np.einsum("aop,bqp->aboq", J, J), np.einsum("aop,bqp->aboq", Jf, Jf), rtol=0,
                               atol=1e-12 * np.abs(Jf).max() ** 2 * Jf.shape[-1])


def test_cost_model_counts():
    """Parameters against those init draws; multiply-adds of a forward pass and output sizes by hand."""
    text = ("serial(Conv(8, (3, 3), padding='SAME', b_std=0.1), Relu(), AvgPool((2, 2), strides=(2, 2)), "
            "Conv(4, (2, 2), strides=(1, 2), padding='VALID'), Flatten(), Dense(3, b_std=0.1))")
    description = stax.parse(text).description
    p = Problem.of(description, 10, input_dim=(12, 10, 3))
    _, params = graph.init(description, 0, (10, 12, 10, 3))
    assert p.P == graph.flatten(params).size
    # conv 1: 12 x 10 positions, fan-in 3 * 9, 8 channels; pool -> 6 x 5; conv 2: 5 x 2 positions, fan-in 8 * 4,
    # 4 channels; Flatten: 40 features; readout 40 x 3
    assert p.F == 120 * 27 * 8 + 10 * 32 * 4 + 40 * 3
    assert p.G == 120 * 8 + 10 * 4 + 3
    assert [s.size_out for s in p.steps] == [(12, 10), (12, 10), (6, 5), (5, 2), (), ()]
    assert p.O == 3 and p.input_size == 360
    est = plan(description, 10, input_dim=(12, 10, 3))
    assert est.method in METHODS and est.seconds > 0 and est.memory > 0


def test_bad_input_is_named():
    description, params, X = _network("conv1d")
    with pytest.raises(ValueError, match="per-input shape"):
        empirical_ntk(description, X, X[:, :5], params=params)
    ends_spatial = stax.parse("serial(Conv(2, (2,)), Relu(), Conv(2, (2,)))").description
    _, p2 = graph.init(ends_spatial, 0, X.shape)
    # spatial outputs are supported (tests/test_empirical_spatial_outputs.py): neural-tangents' layout
    assert empirical_ntk(ends_spatial, X, params=p2).shape == (4, 4, 5, 5)
    with pytest.raises(ValueError, match="spatial axes"):
        plan(description, 4, input_dim=(7, 5, 2))


def test_cli_empirical_ntk_of_a_cnn_against_finite_differences(tmp_path, capsys):
    """empirical-ntk --arch with (N, W, C) inputs from .npy: the NTK against J J^T with J by central finite
    differences of apply; (N, d) inputs to a Conv are refused in one line."""
    from cli_errors import one_error_line

    from ntk_theory.cli import main

    text = "serial(Conv(3, (2,), padding='SAME', b_std=0.2), Relu(), Flatten(), Dense(2, b_std=0.1))"
    X = np.random.default_rng(2).standard_normal((3, 4, 2))
    assert_cli_ntk_matches_finite_differences(tmp_path, text, X, seed=3)
    np.save(tmp_path / "flat.npy", X.reshape(3, -1))
    assert main(["empirical-ntk", "--arch", text, "--x", str(tmp_path / "flat.npy"), "--out",
                 str(tmp_path / "e.npz")]) != 0
    assert "spatial axes" in one_error_line(capsys, "empirical-ntk")
