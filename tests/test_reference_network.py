"""The reference MLP's forward-mode derivatives against finite differences and an independent backprop."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntk_theory import MLP, MLPSpec
from ntk_theory.reference import ensemble, numpy_activation

SMOOTH = ["tanh", "erf", "gelu", "softplus", "sin", "swish", "sigmoid", "linear"]
PARAMS = ["ntk", "unit", "standard"]


def _net(widths, act, param, seed=0, C_W=1.7, C_b=0.2):
    return MLP.random(widths, act, C_W=C_W, C_b=C_b, param=param, seed=seed)


def _shifted(net, direction, h):
    """The same network with parameters theta + h * direction (PDLT coordinates)."""
    params = [(W + h * dW, b + h * db) for W, b, (dW, db) in zip(net.weights, net.biases, net.unflatten(direction))]
    return MLP(net.spec, net.activation, [p[0] for p in params], [p[1] for p in params])


def _central_difference(net, X, direction, h=1e-5):
    return (_shifted(net, direction, h)(X) - _shifted(net, direction, -h)(X)) / (2 * h)


def _rel_err(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# a table of test cases laid out like test_empirical's: data, not shared logic
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize(
    "act, widths",
    [
        ("tanh", (3, 7, 1)),
        ("erf", (4, 9, 6, 2)),
        ("gelu", (2, 5, 8, 5, 3)),
        ("softplus", (3, 16, 16, 1)),
        ("sin", (5, 4, 4, 4, 4, 1)),
        ("relu", (3, 12, 10, 2)),
        ("swish", (3, 20, 1)),
    ],
)
def test_jvp_matches_central_differences(act, widths, param):
    """J v (forward mode) equals (f(theta + h v) - f(theta - h v)) / 2h, in the trainable
    coordinates of ``param``: a tangent u of the trainable parameters is v = sqrt(Lambda) u."""
    net = _net(widths, act, param)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5, widths[0]))
    u = rng.standard_normal(net.n_params)
    v = np.sqrt(net.learning_rate_vector()) * u
    _, jv = net.jvp(X, v)
    fd = _central_difference(net, X, v)
    assert _rel_err(jv, fd) < 1e-6
    # the structured all-directions Jacobian, scaled, gives the same directional derivative
    J_scaled = net.jacobian(X, flat=True, scaled=True)
    assert _rel_err(J_scaled @ u, fd) < 1e-6


def test_batched_jvp_equals_jacobian_columns():
    net = _net((3, 6, 5, 2), "tanh", "ntk")
    X = np.random.default_rng(2).standard_normal((4, 3))
    J = net.jacobian(X, flat=True)
    # push every basis tangent at once: J e_p must be column p of the Jacobian
    _, cols = net.jvp(X, np.eye(net.n_params))
    assert np.allclose(np.moveaxis(cols, 0, -1), J, rtol=0, atol=1e-13)


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu"])
def test_input_jacobian_matches_central_differences(act):
    net = _net((4, 10, 10, 3), act, "ntk", seed=3)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6, 4))
    Jx = net.input_jacobian(X)
    h = 1e-5
    fd = np.stack([(net(X + h * e) - net(X - h * e)) / (2 * h) for e in np.eye(4)], axis=-1)
    assert _rel_err(Jx, fd) < 1e-6


def _backprop_ntk(net, X1, X2, lambdas):
    """Independent NTK: sum_l (delta_l . delta_l')(lambda_b + lambda_W a_(l-1) . a'_(l-1) / n_(l-1)),
    with delta_l = df/dz(l) from an explicit backward pass, one output unit at a time."""
    s = net.activation

    def tape(x):
        zs, acts = [], [x]
        for l, (W, b) in enumerate(zip(net.weights, net.biases)):
            z = W @ acts[-1] + b
            zs.append(z)
            acts.append(s.value(z))
        return zs, acts

    O = net.spec.output_dim
    out = np.zeros((len(X1), len(X2), O, O))
    for a, x1 in enumerate(X1):
        for b, x2 in enumerate(X2):
            (z1, a1), (z2, a2) = tape(x1), tape(x2)
            for o in range(O):
                for p in range(O):
                    d1, d2 = np.eye(O)[o], np.eye(O)[p]
                    total = 0.0
                    for l in range(len(net.weights) - 1, -1, -1):
                        lam_b, lam_W = lambdas[l]
                        n_prev = a1[l].size
                        total += (d1 @ d2) * (lam_b + lam_W * (a1[l] @ a2[l]) / n_prev)
                        if l > 0:
                            d1 = s.derivative(z1[l - 1]) * (net.weights[l].T @ d1)
                            d2 = s.derivative(z2[l - 1]) * (net.weights[l].T @ d2)
                    out[a, b, o, p] = total
    return out


def _lambdas_by_hand(net, param):
    """(lambda_b, lambda_W) per layer, written out from DEVELOPERS.md's table."""
    spec = net.spec
    if param == "ntk":
        return [(spec.C_b[l], spec.C_W[l]) for l in range(spec.n_layers)]
    if param == "unit":
        return [(1.0, 1.0)] * spec.n_layers
    return [(1.0, float(spec.widths[l])) for l in range(spec.n_layers)]


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("act, widths", [("tanh", (3, 8, 6, 2)), ("relu", (2, 16, 16, 16, 1)), ("erf", (5, 7, 3))])
def test_ntk_equals_independent_backprop(act, widths, param):
    net = _net(widths, act, param, seed=5)
    rng = np.random.default_rng(6)
    X1, X2 = rng.standard_normal((4, widths[0])), rng.standard_normal((3, widths[0]))
    expected = _backprop_ntk(net, X1, X2, _lambdas_by_hand(net, param))
    got = net.ntk(X1, X2, trace_outputs=False)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    assert np.allclose(net.ntk(X1, X2), np.einsum("aboo->ab", expected) / widths[-1], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 9), min_size=3, max_size=5),
    act=st.sampled_from(["tanh", "relu", "erf", "gelu", "sin", "linear", "abs"]),
    param=st.sampled_from(PARAMS),
    seed=st.integers(0, 2**16),
)
def test_ntk_symmetric_psd_and_equal_to_JJt(widths, act, param, seed):
    net = _net(tuple(widths), act, param, seed=seed)
    X = np.random.default_rng(seed).standard_normal((5, widths[0]))
    theta = net.ntk(X, trace_outputs=False)  # (N, N, O, O)
    N, O = theta.shape[0], theta.shape[2]
    flat = theta.transpose(0, 2, 1, 3).reshape(N * O, N * O)
    J = net.jacobian(X, flat=True, scaled=True).reshape(N * O, -1)
    scale = max(np.abs(flat).max(), 1e-300)
    assert np.allclose(flat, J @ J.T, rtol=0, atol=1e-12 * scale)
    assert np.allclose(flat, flat.T, rtol=0, atol=1e-13 * scale)
    assert np.linalg.eigvalsh(flat).min() >= -1e-12 * scale


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("param", PARAMS)
def test_ensemble_reverse_pass_equals_forward_mode_network(act, param):
    """The Monte Carlo's batched reverse pass reproduces the reference network, network by network."""
    spec = MLPSpec((3, 12, 9, 11, 1), C_W=(1.3, 2.0, 1.1, 0.7), C_b=(0.1, 0.0, 0.3, 0.2), param=param)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((4, 3))
    S = 6
    weights = [
        ensemble.DenseWeights.sample(rng, S, spec.widths[l + 1], spec.widths[l], np.sqrt(spec.C_W[l] / spec.widths[l]))
        for l in range(spec.n_layers)
    ]
    biases = [rng.standard_normal((S, spec.widths[l + 1])) * np.sqrt(spec.C_b[l]) for l in range(spec.n_layers)]
    out = ensemble.evaluate(X, spec, numpy_activation(act), weights, biases)
    for s in range(S):
        net = MLP(spec, act, [w.W[s] for w in weights], [b[s] for b in biases])
        tr = net.forward(X)
        z_last = tr.z[-2]
        assert np.allclose(out.f[s], net(X)[:, 0], rtol=1e-13, atol=1e-14)
        assert np.allclose(out.ntk[s], net.ntk(X), rtol=1e-12, atol=1e-13)
        assert np.allclose(out.kernel[s], z_last @ z_last.T / z_last.shape[1], rtol=1e-13, atol=1e-14)


def test_flatten_roundtrip_and_learning_rates():
    net = _net((3, 4, 2), "tanh", "standard", C_W=2.0, C_b=0.5)
    vec = net.flatten()
    assert vec.size == net.n_params == 4 * 3 + 4 + 2 * 4 + 2
    back = net.unflatten(vec)
    assert all(np.array_equal(W, dW) and np.array_equal(b, db) for W, b, (dW, db) in zip(net.weights, net.biases, back))
    # standard parameterization: W and b are trained directly (lambda_W / n_(l-1) = lambda_b = 1)
    assert np.all(net.learning_rate_vector() == 1.0)
    ntk_net = _net((3, 4, 2), "tanh", "ntk", C_W=2.0, C_b=0.5)
    lam = ntk_net.learning_rate_vector()
    assert np.allclose(lam[:12], 2.0 / 3) and np.allclose(lam[12:16], 0.5)
