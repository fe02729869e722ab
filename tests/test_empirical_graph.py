"""The empirical NTK of architecture descriptions (ntk_theory.empirical on stax networks) against independent
references: J J^T with J by the reference network's forward mode (reference.graph.jvp of every unit parameter
tangent, a separate code path from the reverse-mode VJPs the three methods use), and neural-tangents 0.6.5's
recorded empirical NTKs (tests/data/neural_tangents/stax_apply.npz).  The cost model's parameter count
against the parameters init_fn draws."""

import dataclasses
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.architecture import Dense, leaves, map_leaves
from ntk_theory.empirical import METHODS, Problem, empirical_ntk, estimate, plan
from ntk_theory.reference import graph
from jacobians import forward_mode_jacobian as _forward_mode_jacobian
from jacobians import rel as _rel

ALL = METHODS + ("auto",)
DATA = Path(__file__).parent / "data" / "neural_tangents" / "stax_apply.npz"

NETWORKS = {
    # pre-activation residual blocks (identity branch after a nonlinearity), two outputs
    "residual": stax.serial(
        stax.Dense(6, W_std=1.3, b_std=0.2),
        stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), stax.Dense(6, W_std=1.4, b_std=0.1)), stax.Identity()),
        stax.FanInSum(),
        stax.FanOut(2), stax.parallel(stax.serial(stax.Tanh(), stax.Dense(6, W_std=0.9)), stax.Identity()),
        stax.FanInSum(), stax.Relu(), stax.Dense(2, W_std=1.1, b_std=0.3)),
    "layernorm": stax.serial(stax.Dense(7, W_std=1.2, b_std=0.1), stax.Gelu(), stax.LayerNorm(),
                             stax.Dense(5, W_std=1.5, b_std=0.4), stax.LayerNorm(), stax.Erf(),
                             stax.Dense(1, W_std=0.8, b_std=0.2)),
    "concat": stax.serial(stax.Dense(5, W_std=1.4, b_std=0.1), stax.Relu(), stax.FanOut(3),
                          stax.parallel(stax.Dense(4, W_std=1.2, b_std=0.3),
                                        stax.serial(stax.Dense(3, W_std=0.9), stax.Sin()), stax.Identity()),
                          stax.FanInConcat(), stax.Dense(3, W_std=1.1, b_std=0.2)),
    "multi_output_nobias": stax.serial(stax.Dense(8, W_std=1.3), stax.Relu(), stax.Dense(6, W_std=1.1), stax.Erf(),
                                       stax.Dense(4, W_std=0.9)),
    # a readout that is not the last layer (its cotangent is not the identity)
    "readout_then_tanh": stax.serial(stax.Dense(5, W_std=1.2, b_std=0.5), stax.Swish(), stax.Dense(2, W_std=1.0,
                                     b_std=0.1), stax.Tanh()),
}


def _with_parameterization(description, p):
    return map_leaves(description, lambda path, layer: dataclasses.replace(layer, parameterization=p)
                      if isinstance(layer, Dense) else layer)


def _lambda_nt(description, params):
    """Lambda in neural-tangents' coordinates, flatten order: 1 for 'ntk' and 'standard'; 'unit': 1/n_in on W."""
    layers = dict(leaves(description))
    parts = []
    for path, a in graph.param_leaves(params):
        unit_W = path[-1] == 0 and layers[path[:-1]].parameterization == "unit"
        parts.append(np.full(np.size(a), 1.0 / np.shape(a)[0] if unit_W else 1.0))  # W: (n_in, n_out)
    return np.concatenate(parts)


def _reference(description, params, X1, X2):
    J1 = _forward_mode_jacobian(description, params, X1)
    J2 = J1 if X2 is None else _forward_mode_jacobian(description, params, X2)
    lam = _lambda_nt(description, params)
    return np.einsum("aop,p,bqp->aboq", J1, lam, J2)


@pytest.mark.parametrize("param", ["ntk", "standard", "unit"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_three_methods_agree_with_forward_mode_jacobian(name, param):
    """Every method (and auto), full and traced, X2 = X1 and X2 != X1, batched and not: J Lambda J^T with J
    by forward mode, to 1e-12 relative."""
    description = _with_parameterization(NETWORKS[name].description, param)
    rng = np.random.default_rng(7)
    X1, X2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    _, params = graph.init(description, 3, X1.shape)
    for x2 in (None, X2):
        full = _reference(description, params, X1, x2)
        traced = np.einsum("aboo->ab", full) / full.shape[-1]
        for method in ALL:
            for batch in (None, 2):
                got = empirical_ntk(description, X1, x2, method=method, trace_outputs=False, params=params,
                                    batch_size=batch)
                assert got.shape == full.shape
                assert _rel(got, full) < 1e-12, (method, batch, x2 is None, _rel(got, full))
                got = empirical_ntk(description, X1, x2, method=method, params=params, batch_size=batch)
                assert _rel(got, traced) < 1e-12, (method, batch, x2 is None, _rel(got, traced))


def _recorded():
    with np.load(DATA) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(str(arrays.pop("config")))


RECORDED, CONFIG = _recorded()


@pytest.mark.parametrize("name", sorted(CONFIG["nets"]))
def test_three_methods_agree_with_neural_tangents(name):
    """neural-tangents 0.6.5's empirical_ntk_fn (trace_axes=(), its parameters from init_fn): 1e-12 relative."""
    net = CONFIG["nets"][name]
    description = _with_parameterization(stax.parse(net["network"]).description, net["parameterization"])
    X = RECORDED["X"]
    _, like = graph.init(description, 0, X.shape)
    params = graph.with_leaves(like, [RECORDED[f"{name}/param/{p}"] for p in net["paths"]])
    full = RECORDED[f"{name}/ntk"]
    traced = np.einsum("abii->ab", full) / full.shape[-1]
    for method in METHODS:
        assert _rel(empirical_ntk(description, X, method=method, trace_outputs=False, params=params), full) < 1e-12
        assert _rel(empirical_ntk(description, X, method=method, params=params), traced) < 1e-12


def test_stax_network_object_and_float32():
    """A stax Network (init_fn's params) is accepted as is; float32 returns float32 within its rounding."""
    net = NETWORKS["residual"]
    X = np.random.default_rng(1).standard_normal((4, 3))
    _, params = net.init_fn(5, X.shape)
    ref = _reference(net.description, params, X, None)
    for method in METHODS:
        got = empirical_ntk(net, X, method=method, trace_outputs=False, params=params, dtype=np.float32)
        assert got.dtype == np.float32 and _rel(got.astype(float), ref) < 1e-6


@pytest.mark.parametrize("symmetric", [True, False])
def test_jacobian_contraction_row_blocks_in_reused_buffers(symmetric):
    """Row blocks of 2 inputs (several blocks of X1 and X2): the J blocks written into one reused scratch
    array per side still give the forward-mode Jacobian's J Lambda J^T, and a Dense layer's J block is a view
    of the scratch array (no fresh allocation per block)."""
    from ntk_theory.empirical.graph import DenseRule

    class Scratch:  # the buffer interface: get(shape) -> an array of that shape in memory already held
        data = np.empty(256)

        def get(self, shape):
            return self.data[:int(np.prod(shape))].reshape(shape)

    net = NETWORKS["multi_output_nobias"]
    rng = np.random.default_rng(3)
    X1 = rng.standard_normal((7, 4))
    X2 = None if symmetric else rng.standard_normal((5, 4))
    _, params = net.init_fn(2, X1.shape)
    got = empirical_ntk(net, X1, X2, method="jacobian_contraction", trace_outputs=False, params=params, batch_size=2)
    assert _rel(got, _reference(net.description, params, X1, X2)) < 1e-13
    entry = type("Entry", (), {"c": 1.0, "lambda_b": 1.0, "has_bias": False})()
    buffer, x, g = Scratch(), rng.standard_normal((3, 4)), rng.standard_normal((3, 2, 5))
    (_, J), = DenseRule.contraction_blocks(entry, x, g, buffer)
    assert np.shares_memory(J, buffer.data) and np.array_equal(J, np.einsum("ai,aoj->aoij", x, g))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_cost_model_counts_the_parameters_init_draws(name):
    net = NETWORKS[name]
    _, params = net.init_fn(0, (2, 4))
    p = Problem.of(net, 10, None, False, input_dim=4)
    assert p.P == graph.flatten(params).size
    assert p.O == graph.apply(net.description, params, np.ones((1, 4))).shape[1]
    jc = estimate("jacobian_contraction", p, block=10)
    assert jc.terms["contract J Lambda J^T"][0] == 2 * (10 * 11 / 2) * p.O**2 * p.P
    # one VJP per output and input: N O times the reverse pass of one vector
    assert jc.terms["VJP (reverse pass)"] == tuple(10 * p.O * v for v in p.reverse_pass(1))


def test_memory_model_against_tracemalloc_on_a_residual_network():
    """Peak traced allocation within a factor 3 of the model's intermediates + output (every method)."""
    net = stax.serial(stax.Dense(64, W_std=1.3, b_std=0.1), stax.FanOut(2),
                      stax.parallel(stax.serial(stax.Relu(), stax.Dense(64, W_std=1.4, b_std=0.1)), stax.Identity()),
                      stax.FanInSum(), stax.LayerNorm(), stax.Relu(), stax.Dense(4, W_std=1.1, b_std=0.2))
    X = np.random.default_rng(0).standard_normal((40, 8))
    _, params = net.init_fn(0, X.shape)
    for method in METHODS:
        est = plan(net, 40, None, method, False, input_dim=8)
        tracemalloc.start()
        tracemalloc.reset_peak()
        empirical_ntk(net, X, method=method, trace_outputs=False, params=params)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        predicted = est.memory + est.output_bytes
        assert predicted / 3 < peak < 3 * predicted, (method, peak, predicted)


def test_bad_input_one_line():
    net = NETWORKS["concat"]
    X = np.ones((2, 4))
    _, params = net.init_fn(0, X.shape)
    with pytest.raises(ValueError, match="needs its parameters"):
        empirical_ntk(net, X)
    with pytest.raises(ValueError, match=r"at layer 0 receives inputs with 3 features but its parameters W have shape \(4, 5\)"):
        empirical_ntk(net, np.ones((2, 3)), params=params)
    with pytest.raises(ValueError, match="b must be None exactly when b_std is None"):
        empirical_ntk(net, X, params=[(params[0][0], None)] + list(params[1:]))
    with pytest.raises(ValueError, match="params= is for descriptions"):
        from ntk_theory import MLP

        empirical_ntk(MLP.random((4, 3, 1), "relu", seed=0), X, params=params)
    with pytest.raises(ValueError, match="planning a description needs input_dim"):
        plan(net, 3)
    with pytest.raises(ValueError, match="ends with a list of 2 outputs"):
        empirical_ntk(stax.serial(stax.Dense(3), stax.FanOut(2)), X, params=[((np.ones((4, 3))), None), ()])


def test_reverse_pass_cotangents_input_major_against_hand_written_deltas():
    """The reverse pass of every output cotangent (empirical.graph.run) against the MLP deltas written out by
    hand, delta(L) = W(L+1) * s'(z(L)), delta(l) = (delta(l+1) W(l+1)) * s'(z(l)); the cotangents are stored
    input-major, so the (N, O, n) rows the methods contract are views (no copy per layer), and the network
    input's cotangent is not formed (no Sensitivity beyond the Dense layers, the same values without it)."""
    from ntk_theory.empirical import model
    from ntk_theory.empirical.graph import rows_first, run

    rng = np.random.default_rng(3)
    Ws = [rng.standard_normal((5, 3)), rng.standard_normal((4, 5)), rng.standard_normal((2, 4))]
    bs = [rng.standard_normal(n) for n in (5, 4, 2)]
    from ntk_theory.empirical import Dense as D
    m = model([D(Ws[0], bs[0]), "tanh", D(Ws[1], bs[1]), "tanh", D(Ws[2], bs[2])])
    X = rng.standard_normal((6, 3))
    z1 = X @ Ws[0].T + bs[0]
    z2 = np.tanh(z1) @ Ws[1].T + bs[1]
    d2 = Ws[2][None, :, :] * (1 - np.tanh(z2) ** 2)[:, None, :]  # (N, O, n_2)
    d1 = (d2 @ Ws[1]) * (1 - np.tanh(z1) ** 2)[:, None, :]
    p = run(m, X)
    paths = list(m.dense)
    assert [s.path for s in p.sens.values()] == paths
    for path, d in zip(paths[:2], (d1, d2)):
        g = p.sens[path].g
        assert g.shape == (2, 6, d.shape[-1])
        assert np.shares_memory(rows_first(g), g)
        assert _rel(rows_first(g), d) < 1e-14
    assert p.is_identity(paths[2])
