"""The reference network of architecture descriptions (ntk_theory.reference.graph) against neural-tangents 0.6.5's
recorded parameters, apply_fn and empirical NTK, and its derivatives against central finite differences and each
other."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.architecture import Dense, map_leaves
from ntk_theory.reference import graph

DATA = Path(__file__).parent / "data" / "neural_tangents" / "stax_apply.npz"


def _with_parameterization(description, p):
    return map_leaves(description, lambda path, layer: dataclasses.replace(layer, parameterization=p)
                      if isinstance(layer, Dense) else layer)


def _recorded():
    with np.load(DATA) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays.pop("config")))
    return arrays, config


RECORDED, CONFIG = _recorded()
NAMES = sorted(CONFIG["nets"])


# alike test_reference_conv's _network (another recording's layout): each test file reads its own recording
def _network(name):
    net = CONFIG["nets"][name]
    description = _with_parameterization(stax.parse(net["network"]).description, net["parameterization"])
    X = RECORDED["X"]
    _, like = graph.init(description, 0, X.shape)
    ours = [".".join(map(str, path)) for path, _ in graph.param_leaves(like)]
    assert ours == net["paths"], "parameter layout differs from neural-tangents'"
    arrays = [RECORDED[f"{name}/param/{p}"] for p in net["paths"]]
    for (_, mine), theirs in zip(graph.param_leaves(like), arrays):
        assert mine.shape == theirs.shape
    return description, graph.with_leaves(like, arrays), X


# the same checks as test_reference_conv.py's, on purpose: each file tests against its own recording
@pytest.mark.parametrize("name", NAMES)
def test_apply_matches_neural_tangents(name):
    description, params, X = _network(name)
    f = graph.apply(description, params, X)
    assert f.shape == RECORDED[f"{name}/f"].shape
    np.testing.assert_allclose(f, RECORDED[f"{name}/f"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_empirical_ntk_matches_neural_tangents(name):
    description, params, X = _network(name)
    full = RECORDED[f"{name}/ntk"]  # (N, N, O, O), trace_axes=()
    scale = np.max(np.abs(full))
    np.testing.assert_allclose(graph.ntk(description, params, X, trace_outputs=False), full, rtol=0,
                               atol=1e-10 * max(scale, 1.0))
    traced = np.einsum("abii->ab", full) / full.shape[-1]  # neural-tangents' trace_axes=(-1,): the mean
    np.testing.assert_allclose(graph.ntk(description, params, X), traced, rtol=0, atol=1e-10 * max(scale, 1.0))


def _random_tree(params, rng, lead=()):
    return graph.with_leaves(params, [rng.standard_normal(lead + np.shape(a)) for _, a in graph.param_leaves(params)])


def _add(params, tangent, t):
    return graph.with_leaves(params, [a + t * d for (_, a), (_, d) in
                                      zip(graph.param_leaves(params), graph.param_leaves(tangent))])


@pytest.mark.parametrize("name", NAMES)
def test_jvp_vjp_jacobian_against_finite_differences_and_each_other(name):
    description, params, X = _network(name)
    rng = np.random.default_rng(11)
    v = _random_tree(params, rng)
    f, Jv = graph.jvp(description, params, X, v)
    np.testing.assert_allclose(f, RECORDED[f"{name}/f"], rtol=0, atol=1e-12)
    # central differences, step h: error O(h^2 f''') + rounding O(eps / h)
    h = 1e-5
    fd = (graph.apply(description, _add(params, v, h), X) - graph.apply(description, _add(params, v, -h), X)) / (2 * h)
    np.testing.assert_allclose(Jv, fd, rtol=0, atol=1e-6 * max(1.0, np.max(np.abs(fd))))
    # <J v, u> = <v, J^T u>
    u = rng.standard_normal(f.shape)
    JTu = graph.vjp(description, params, X, u)
    lhs = np.sum(Jv * u)
    rhs = float(graph.flatten(v) @ graph.flatten(JTu))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    # the Jacobian against both
    J = graph.jacobian(description, params, X, flat=True)  # (N, O, P)
    np.testing.assert_allclose(J @ graph.flatten(v), Jv, rtol=0, atol=1e-12 * max(1.0, np.max(np.abs(Jv))))
    np.testing.assert_allclose(np.einsum("aoP,ao->P", J, u), graph.flatten(JTu), rtol=0, atol=1e-12 * np.max(np.abs(J)))
    # J J^T is the structured NTK
    np.testing.assert_allclose(np.einsum("aoP,bpP->abop", J, J), graph.ntk(description, params, X, trace_outputs=False),
                               rtol=0, atol=1e-12 * max(1.0, np.max(np.abs(J)) ** 2))


def test_batched_tangents_and_flat_vectors():
    description, params, X = _network("concat/ntk")
    rng = np.random.default_rng(2)
    vs = _random_tree(params, rng, lead=(3,))
    _, Jvs = graph.jvp(description, params, X, vs)
    for k in range(3):
        vk = graph.with_leaves(params, [a[k] for _, a in graph.param_leaves(vs)])
        np.testing.assert_allclose(Jvs[k], graph.jvp(description, params, X, vk)[1], rtol=0, atol=1e-13)
        flat = graph.flatten(vk)
        np.testing.assert_allclose(graph.jvp(description, params, X, flat)[1], Jvs[k], rtol=0, atol=1e-13)


def test_cross_ntk_is_the_block_of_the_joint_one():
    description, params, X = _network("resblock/ntk")
    X2 = np.random.default_rng(4).standard_normal((3, X.shape[1]))
    joint = graph.ntk(description, params, np.vstack([X, X2]))
    np.testing.assert_allclose(graph.ntk(description, params, X, X2), joint[: len(X), len(X):], rtol=0, atol=1e-13)


def test_init_layout_and_distribution():
    # 'standard' draws W ~ N(0, W_std^2 / n_in), b ~ N(0, b_std^2); 'ntk' N(0, 1) for both
    n_in, width = 50, 4000
    for p, w_var, b_var in (("ntk", 1.0, 1.0), ("standard", 1.7**2 / n_in, 0.3**2)):
        d = stax.serial(stax.Dense(width, W_std=1.7, b_std=0.3, parameterization=p), stax.Relu(),
                        stax.Dense(1, W_std=1.7)).description
        shape, params = graph.init(d, np.random.default_rng(0), (-1, n_in))
        assert shape == (-1, 1)
        (W, b), relu, (_, b2) = params
        assert relu == () and b2 is None and W.shape == (n_in, width) and b.shape == (1, width)
        # sample variances of 200000 and 4000 normals: relative SE sqrt(2/n) = 0.3% and 2.2%
        assert abs(W.var() / w_var - 1) < 4 * np.sqrt(2 / W.size)
        assert abs(b.var() / b_var - 1) < 4 * np.sqrt(2 / b.size)


def test_rng_forms():
    d = stax.serial(stax.Dense(5, b_std=0.1), stax.Erf(), stax.Dense(2)).description
    a = graph.param_leaves(graph.init(d, 3, (2, 4))[1])
    b = graph.param_leaves(graph.init(d, np.random.default_rng(3), (2, 4))[1])
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    key = graph.init(d, np.array([0, 42], dtype=np.uint32), (2, 4))[1]
    assert graph.param_leaves(key)[0][1].shape == (4, 5)
    with pytest.raises(ValueError, match="rng"):
        graph.init(d, "seed", (2, 4))


def test_bad_params_are_named():
    description, params, X = _network("resblock/ntk")
    bad = list(params)
    bad[0] = (params[0][0][:, :3], params[0][1])
    with pytest.raises(ValueError, match="W must have shape"):
        graph.apply(description, bad, X)
    bad[0] = (params[0][0], None)
    with pytest.raises(ValueError, match="b must be None exactly when b_std is None"):
        graph.apply(description, bad, X)
    with pytest.raises(ValueError, match="params do not match"):
        graph.apply(description, params[:2], X)


def test_stax_network_triple_uses_the_reference():
    net = stax.serial(stax.Dense(16, W_std=1.4, b_std=0.1), stax.Relu(), stax.LayerNorm(), stax.Dense(1))
    init_fn, apply_fn, _ = net
    shape, params = init_fn(0, (-1, 3))
    X = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_array_equal(apply_fn(params, X), graph.apply(net.description, params, X))
    assert shape == (-1, 1)


def test_unit_parameterization_is_J_Lambda_J():
    # PDLT's 'unit': parameters drawn as in 'standard', NTK factors (1, 1): Lambda = 1/n_in on W, 1 on b
    d = stax.serial(stax.Dense(6, W_std=1.3, b_std=0.2, parameterization="unit"), stax.Tanh(),
                    stax.Dense(2, W_std=0.8, b_std=0.5, parameterization="unit")).description
    _, params = graph.init(d, 1, (-1, 3))
    # drawn as in 'standard': W ~ N(0, W_std^2 / n_in) (600 normals: relative SE of the variance 6%)
    wide = graph.init(stax.Dense(200, W_std=1.3, parameterization="unit").description, 1, (-1, 3))[1][0]
    assert abs(wide.var() / (1.3**2 / 3) - 1) < 4 * np.sqrt(2 / wide.size)
    X = np.random.default_rng(3).standard_normal((4, 3))
    J = graph.jacobian(d, params, X, flat=True)
    lam = graph.flatten(graph.with_leaves(params, [np.full(np.shape(a), 1.0 / np.shape(a)[0] if len(p) and
                                                           p[-1] == 0 else 1.0)
                                                   for p, a in graph.param_leaves(params)]))
    np.testing.assert_allclose(graph.ntk(d, params, X, trace_outputs=False),
                               np.einsum("aoP,P,bpP->abop", J, lam, J), rtol=0, atol=1e-13)
