"""The reference network on convolutional descriptions (ntk_theory.reference.graph): apply_fn and the
empirical NTK against neural-tangents 0.6.5's recorded values (benchmarks/anchors/record_conv_apply.py),
a direct loop implementation of a strided circular convolution, and the derivatives (jvp, vjp, jacobian)
against central finite differences and each other."""

import json
from pathlib import Path

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.reference import graph

DATA = Path(__file__).parent / "data" / "neural_tangents" / "conv_apply.npz"


def _recorded():
    with np.load(DATA) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(str(arrays.pop("config")))


RECORDED, CONFIG = _recorded()
NAMES = sorted(CONFIG["networks"])


def _network(name):
    net = CONFIG["networks"][name]
    description = stax.parse(net["network"]).description
    X = RECORDED[f"{name}/X"]
    _, like = graph.init(description, 0, X.shape)
    arrays = [RECORDED[f"{name}/leaf{i}"] for i in range(net["leaves"])]
    mine = graph.param_leaves(like)
    assert [a.shape for _, a in mine] == [a.shape for a in arrays], "parameter layout differs from neural-tangents'"
    return description, graph.with_leaves(like, arrays), X


# the same checks as test_reference_graph.py's, on purpose: each file tests against its own recording
@pytest.mark.parametrize("name", NAMES)
def test_apply_matches_neural_tangents(name):
    description, params, X = _network(name)
    f = graph.apply(description, params, X)
    assert f.shape == RECORDED[f"{name}/f"].shape
    np.testing.assert_allclose(f, RECORDED[f"{name}/f"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_ntk_matches_neural_tangents(name):
    description, params, X = _network(name)
    full = RECORDED[f"{name}/ntk"]
    scale = np.abs(full).max()
    np.testing.assert_allclose(graph.ntk(description, params, X, trace_outputs=False), full, rtol=0,
                               atol=1e-12 * scale)
    np.testing.assert_allclose(graph.ntk(description, params, X), np.einsum("abii->ab", full) / full.shape[-1],
                               rtol=0, atol=1e-12 * scale)


def test_init_output_shape_and_scaling():
    description = stax.parse("serial(Conv(6, (3, 2), strides=(2, 1), padding='SAME', W_std=2.0, b_std=0.5, "
                             "parameterization='standard'), AvgPool((2, 2)), Dense(3))").description
    shape, params = graph.init(description, 1, (-1, 7, 5, 4))
    assert shape == (-1, 3, 4, 3)  # SAME: ceil(7/2)=4, ceil(5/1)=5; AvgPool VALID stride 1: 3, 4
    W, b = params[0]
    assert W.shape == (3, 2, 4, 6) and b.shape == (1, 1, 1, 6)
    assert params[2][1] is None and params[2][0].shape == (6, 3)
    # 'standard': W ~ N(0, W_std^2 / fan_in), fan_in = 4 * 3 * 2
    big = graph.init(description, 2, (-1, 7, 5, 200))[1][0][0]
    assert abs(big.var() * 200 * 6 / 4.0 - 1) < 0.05


def _direct_circular_conv1d(x, W, stride, W_std, b, b_std):
    """z[n, o, c] = W_std / sqrt(C k) sum_(j, i) W[j, i, c] x[n, (o s + j - lo) mod size, i] + b_std b[c]: loops."""
    N, size, C = x.shape
    k, _, out_c = W.shape
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    lo = total // 2
    z = np.zeros((N, out, out_c))
    for n in range(N):
        for o in range(out):
            for j in range(k):
                z[n, o] += x[n, (o * stride + j - lo) % size] @ W[j]
    return W_std / np.sqrt(C * k) * z + b_std * b.reshape(1, 1, -1)


@pytest.mark.parametrize("size,k,stride", [(7, 3, 2), (5, 4, 1), (3, 5, 2), (6, 2, 3)])
def test_circular_conv_against_loops(size, k, stride):
    layer = stax.Conv(3, (k,), strides=(stride,), padding="CIRCULAR", W_std=1.3, b_std=0.4).description
    rng = np.random.default_rng(size * 10 + k)
    x = rng.standard_normal((2, size, 2))
    _, params = graph.init(layer, 3, x.shape)
    z = graph.apply(layer, params, x)
    np.testing.assert_allclose(z, _direct_circular_conv1d(x, params[0], stride, 1.3, params[1], 0.4), rtol=0,
                               atol=1e-13)


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
def test_window_adjoint(padding):
    """<extract(x), p> = <x, adjoint(p)> for random x and p."""
    win = graph.Window((6, 5), (3, 2), (2, 2), padding)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 5, 3))
    p = rng.standard_normal(win.extract(x).shape)
    assert np.isclose(np.sum(win.extract(x) * p), np.sum(x * win.adjoint(p)), rtol=1e-13, atol=0)


DERIV_NETS = {
    "conv1d": ("serial(Conv(3, (3,), strides=(2,), padding='CIRCULAR', b_std=0.3), Erf(), Dense(2, b_std=0.2), "
               "LayerNorm(), AvgPool((2,), padding='SAME', normalize_edges=True), Flatten(), Dense(2, b_std=0.1))",
               (3, 6, 2)),
    "conv2d": ("serial(Conv(3, (2, 2), padding='SAME', b_std=0.1), FanOut(2), parallel(serial(Gelu(), "
               "Conv(3, (3, 1), padding='CIRCULAR', parameterization='standard', b_std=0.5)), Identity()), "
               "FanInSum(), FanOut(2), parallel(Identity(), Dense(2)), FanInConcat(), Sin(), GlobalAvgPool(), "
               "Dense(2, b_std=0.3))", (2, 4, 3, 2)),
}


def _deriv_network(name):
    text, shape = DERIV_NETS[name]
    description = stax.parse(text).description
    X = np.random.default_rng(7).standard_normal(shape)
    _, params = graph.init(description, 5, shape)
    return description, params, X


def _fd_jacobian(description, params, X, h=1e-6):
    """(N, O, P) by central differences of apply over every parameter."""
    theta = graph.flatten(params)
    cols = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        fp = graph.apply(description, graph.unflatten(params, theta + e), X)
        fm = graph.apply(description, graph.unflatten(params, theta - e), X)
        cols.append((fp - fm) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("name", sorted(DERIV_NETS))
def test_jacobian_against_finite_differences(name):
    description, params, X = _deriv_network(name)
    J_fd = _fd_jacobian(description, params, X)
    J_rev = graph.jacobian(description, params, X, flat=True)
    assert J_rev.shape == J_fd.shape
    np.testing.assert_allclose(J_rev, J_fd, rtol=0, atol=1e-7 * np.abs(J_fd).max())
    P = J_fd.shape[-1]
    _, J_fwd = graph.jvp(description, params, X, graph.unflatten(params, np.eye(P)[0]))  # one tangent
    np.testing.assert_allclose(J_fwd, J_fd[..., 0], rtol=0, atol=1e-7 * np.abs(J_fd).max())
    # forward mode, all unit tangents at once (a leading batch axis on every leaf)
    eye_leaves = []
    i = 0
    for _, a in graph.param_leaves(params):
        block = np.zeros((P,) + a.shape)
        block.reshape(P, -1)[np.arange(i, i + a.size), np.arange(a.size)] = 1.0
        eye_leaves.append(block)
        i += a.size
    _, JV = graph.jvp(description, params, X, graph.with_leaves(params, eye_leaves))  # (P, N, O)
    np.testing.assert_allclose(np.moveaxis(JV, 0, -1), J_rev, rtol=0, atol=1e-13 * np.abs(J_rev).max())
    # the NTK by the structured rule against J J^T
    np.testing.assert_allclose(graph.ntk(description, params, X, trace_outputs=False),
                               np.einsum("aop,bqp->aboq", J_rev, J_rev), rtol=0,
                               atol=1e-12 * np.abs(J_rev).max() ** 2 * P)


@pytest.mark.parametrize("name", sorted(DERIV_NETS))
def test_vjp_jvp_adjoint(name):
    """<u, J v> = <J^T u, v> for random u, v."""
    description, params, X = _deriv_network(name)
    rng = np.random.default_rng(11)
    v = rng.standard_normal(graph.flatten(params).size)
    f, Jv = graph.jvp(description, params, X, v)
    u = rng.standard_normal(f.shape)
    JTu = graph.flatten(graph.vjp(description, params, X, u))
    assert np.isclose(np.sum(u * Jv), JTu @ v, rtol=1e-12, atol=0)


def test_spatial_output_derivatives_against_finite_differences():
    """A network ending in a convolution (spatial outputs): vjp against central differences."""
    description = stax.parse("serial(Conv(3, (2, 2), padding='SAME', b_std=0.2), Relu(), "
                             "Conv(2, (3, 3), strides=(2, 2), padding='CIRCULAR'))").description
    X = np.random.default_rng(3).standard_normal((2, 5, 4, 2))
    _, params = graph.init(description, 0, X.shape)
    f = graph.apply(description, params, X)
    assert f.shape == (2, 3, 2, 2)
    u = np.random.default_rng(5).standard_normal(f.shape)
    grad = graph.flatten(graph.vjp(description, params, X, u))
    theta, h = graph.flatten(params), 1e-6
    fd = np.array([(np.sum(u * graph.apply(description, graph.unflatten(params, theta + h * e), X))
                    - np.sum(u * graph.apply(description, graph.unflatten(params, theta - h * e), X))) / (2 * h)
                   for e in np.eye(theta.size)])
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7 * np.abs(fd).max())
    with pytest.raises(ValueError, match="spatial outputs"):
        graph.ntk(description, params, X)


@pytest.mark.parametrize("text,shape,match", [
    ("serial(Conv(2, (3, 3)), Flatten(), Dense(1))", (2, 5, 3), "2 spatial axes"),
    ("serial(Dense(2), GlobalAvgPool())", (2, 3), "needs spatial inputs"),
    ("serial(Conv(2, (4,)), Flatten(), Dense(1))", (2, 3, 2), "does not fit"),
    ("serial(FanOut(2), parallel(Conv(2, (2,)), Conv(2, (1,))), FanInSum())", (2, 5, 2), "spatial shapes"),
])
def test_bad_input_is_named(text, shape, match):
    description = stax.parse(text).description
    with pytest.raises(ValueError, match=match):
        graph.init(description, 0, shape)
    X = np.ones(shape)
    with pytest.raises(ValueError, match=match):
        graph.trace(description, X, _ones)


def _ones(layer, path, n_in):
    b = None if layer.b_std is None else np.ones((1, layer.out_dim))
    return graph.DenseParameters(layer, (np.ones((n_in, layer.out_dim)), b), n_in, path)
