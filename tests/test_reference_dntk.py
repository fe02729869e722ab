"""The exact dNTK and ddNTK of a reference MLP (ntk_theory.reference.dntk) against finite differences.

Judges, all independent of the forward-mode code under test:
- central differences (Richardson, O(h^4)) of ``MLP.ntk`` along v_j = Lambda grad z_j: the symmetrised dNTK;
- central differences of ``MLP.jvp`` (exact forward mode of the network's tape) with the directions held fixed:
  D^2 z[u, w] (the dNTK itself) and mixed second differences, D^3 z[u, w, y] (ddI);
- central differences of ``MLP.jacobian`` along v_r: the Hessian-vector products Hess z_p v_r, whose
  Lambda-inner products are ddII;
- on a tiny network, the full Hessian and third-derivative tensors by differences of the Jacobian, contracted
  with the directions by brute force.
"""

import numpy as np
import pytest

from ntk_theory.reference import MLP
from ntk_theory.reference.activations import numpy_activation
from ntk_theory.reference.dntk import ddntk, dntk, readout_derivatives

SMOOTH_OFF_CRITICAL = "x*erf(x) + sin(x)"  # a generated activation (SymPy derivatives)


def _with(net, theta):
    ps = net.unflatten(theta)
    return MLP(net.spec, net.activation, [p[0] for p in ps], [p[1] for p in ps])


def _richardson(f, h):
    """d/dt f(t) at 0 by central differences with Richardson extrapolation, error O(h^4)."""
    return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)


def _directions(net, X):
    """v_{i;a} = Lambda grad z_{i;a}, flat, shape (O, N, P), from the network's Jacobian, and the difference step
    for a relative change ~1e-3 of the preactivations along them (3e-4 for relu: a relu network is a polynomial in
    the parameters between kinks, where the differences are exact; a kink crossed would fail the comparison)."""
    J = net.jacobian(X, flat=True)  # (N, O, P)
    step = (3e-4 if net.activation.name == "relu" else 1e-3) / max(1.0, np.abs(net.ntk(X)).max())
    return np.transpose(J, (1, 0, 2)) * net.learning_rate_vector(), step


def _net(act, depth, N, param, seed, width=5, outputs=2):
    rng = np.random.default_rng(seed)
    widths = (3,) + tuple(width + k for k in range(depth)) + (outputs,)
    C_W = {"relu": 2.0, "tanh": 1.0, "erf": 1.6}.get(act, 0.8)
    net = MLP.random(widths, act, C_W=C_W, C_b=0.3, param=param, seed=seed)
    return net, rng.standard_normal((N, 3))


CASES = [(act, depth, N, param) for act in ("relu", "tanh", "erf", SMOOTH_OFF_CRITICAL)
         for depth, N in ((1, 2), (2, 3), (3, 1)) for param in ("ntk", "unit")]


@pytest.mark.parametrize("act,depth,N,param", CASES)
def test_dntk_symmetrised_is_the_ntk_derivative(act, depth, N, param):
    """dH_{i1 i2 j; a1 a2 b} + dH_{i2 i1 j; a2 a1 b} = d/dt H_{i1 i2; a1 a2}(theta + t v_{j;b})."""
    net, X = _net(act, depth, N, param, seed=depth * 10 + N)
    d = dntk(net, X)
    O = net.spec.output_dim
    assert d.shape == (O,) * 3 + (N,) * 3
    theta, (V, h) = net.flatten(), _directions(net, X)
    for j in range(O):
        for b in range(N):
            fd = _richardson(lambda t: _with(net, theta + t * V[j, b]).ntk(X, trace_outputs=False), h)
            fd = fd.transpose(2, 3, 0, 1)  # (O, O, N, N)
            pred = d[:, :, j, :, :, b] + np.transpose(d, (1, 0, 2, 4, 3, 5))[:, :, j, :, :, b]
            scale = np.abs(pred).max()
            assert scale > 1e-3
            np.testing.assert_allclose(pred, fd, rtol=0, atol=1e-7 * scale)


def _second(net, X, u, w, h):
    """D^2 z[u, w] (N, O) by differences of the exact forward mode J(theta + t w) u."""
    theta = net.flatten()
    return _richardson(lambda t: _with(net, theta + t * w).jvp(X, u)[1], h)


@pytest.mark.parametrize("act,depth,N,param", [c for c in CASES if c[2] > 1])
def test_dntk_is_the_second_directional_derivative(act, depth, N, param):
    """dH_{i0 i1 i2; a0 a1 a2} = D^2 z_{i0;a0}[v_{i1;a1}, v_{i2;a2}] (not only its symmetrisation)."""
    net, X = _net(act, depth, N, param, seed=3 + depth)
    d = dntk(net, X)
    V, h = _directions(net, X)
    O = net.spec.output_dim
    for i1, a1, i2, a2 in [(0, 0, 1, N - 1), (1, 1, 1, 0), (0, N - 1, 0, N - 1)]:
        fd = _second(net, X, V[i1, a1], V[i2, a2], h)  # (N=a0, O=i0)
        pred = d[:, i1, i2, :, a1, a2].T
        np.testing.assert_allclose(pred, fd, rtol=0, atol=1e-7 * max(np.abs(pred).max(), 1e-3))
    assert O == 2


@pytest.mark.parametrize("act", ["tanh", SMOOTH_OFF_CRITICAL, "relu"])
@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_ddI_is_the_third_directional_derivative(act, param):
    """ddI_{i0 i1 i2 i3} = D^3 z_{i0}[v_1, v_2, v_3]: mixed central differences of the exact J(theta) u along w, y."""
    net, X = _net(act, 2, 2, param, seed=11)
    ddI, _ = ddntk(net, X)
    theta, (V, h) = net.flatten(), _directions(net, X)
    h = h * 2
    for (i1, a1), (i2, a2), (i3, a3) in [((0, 0), (1, 1), (0, 1)), ((1, 0), (1, 0), (0, 0)), ((0, 1), (1, 1), (1, 1))]:
        u, w, y = V[i1, a1], V[i2, a2], V[i3, a3]

        def first(t):
            return _richardson(lambda s: _with(net, theta + t * y + s * w).jvp(X, u)[1], h)

        fd = _richardson(first, h)
        pred = ddI[:, i1, i2, i3, :, a1, a2, a3].T
        np.testing.assert_allclose(pred, fd, rtol=0, atol=2e-6 * max(np.abs(pred).max(), 1e-2))


@pytest.mark.parametrize("act", ["tanh", "erf", SMOOTH_OFF_CRITICAL, "relu"])
@pytest.mark.parametrize("param", ["ntk", "unit"])
def test_ddII_from_differences_of_the_jacobian(act, param):
    """ddII_{p1 p2 p3 p4} = <Hess z_p1 v_p3, Lambda Hess z_p2 v_p4>, each Hessian-vector product the derivative of
    the network's Jacobian row grad z_p along v (central differences of ``MLP.jacobian``)."""
    net, X = _net(act, 2, 2, param, seed=5)
    _, ddII = ddntk(net, X)
    theta, (V, h) = net.flatten(), _directions(net, X)
    lam = net.learning_rate_vector()
    O, N = 2, 2
    hv = {}
    for i3 in range(O):
        for a3 in range(N):
            J = _richardson(lambda t: _with(net, theta + t * V[i3, a3]).jacobian(X, flat=True), h)  # (N, O, P)
            hv[i3, a3] = J
    fd = np.zeros_like(ddII)
    for idx in np.ndindex(ddII.shape):
        i1, i2, i3, i4, a1, a2, a3, a4 = idx
        fd[idx] = np.sum(hv[i3, a3][a1, i1] * lam * hv[i4, a4][a2, i2])
    np.testing.assert_allclose(ddII, fd, rtol=0, atol=1e-7 * np.abs(ddII).max())
    assert np.abs(ddII).max() > 1e-3


@pytest.mark.parametrize("act", ["tanh"])
def test_tiny_network_against_full_derivative_tensors(act):
    """Widths (2, 3, 2, 2): the full Hessian and third-derivative tensors of every z_{i;a} by differences of the
    Jacobian, contracted with Lambda grad z by brute force, give dH, ddI and ddII."""
    net = MLP.random((2, 3, 2, 2), act, C_W=1.4, C_b=0.2, param="ntk", seed=2)
    X = np.array([[0.7, -0.4], [0.2, 1.1]])
    theta, P = net.flatten(), net.n_params
    lam = net.learning_rate_vector()
    E = np.eye(P)
    h = 1e-3

    def jac(t):
        return net.jacobian(X, flat=True) if t is None else _with(net, theta + t).jacobian(X, flat=True)

    Hs = np.stack([_richardson(lambda t: jac(t * E[m]), h) for m in range(P)], axis=-1)  # (N, O, P, P)
    Hs = 0.5 * (Hs + np.swapaxes(Hs, -1, -2))
    T3 = np.zeros(Hs.shape + (P,))
    for m in range(P):
        T3[..., m] = _richardson(lambda t: np.stack(
            [_richardson(lambda s: jac(t * E[m] + s * E[k]), h) for k in range(P)], axis=-1), h)
    T3 = (T3 + T3.transpose(0, 1, 3, 4, 2) + T3.transpose(0, 1, 4, 2, 3)) / 3
    G = jac(None) * lam  # (N, O, P): v_{i;a} = G[a, i]
    dH = np.einsum("aimn,bjm,ckn->ijkabc", Hs, G, G)
    ddI = np.einsum("aimnr,bjm,ckn,dlr->ijklabcd", T3, G, G, G)
    ddII = np.einsum("aimn,bjmr,ckn,dlr->ijklabcd", Hs, Hs * lam[:, None], G, G)
    mine = dntk(net, X)
    mI, mII = ddntk(net, X)
    np.testing.assert_allclose(mine, dH, rtol=0, atol=1e-8 * np.abs(dH).max())
    np.testing.assert_allclose(mI, ddI, rtol=0, atol=1e-5 * np.abs(ddI).max())
    np.testing.assert_allclose(mII, ddII, rtol=0, atol=1e-8 * np.abs(ddII).max())


def test_layer_one_is_linear_in_the_parameters():
    """A single Dense layer z = W x + b: dNTK and ddNTKs exactly zero (z is linear in its parameters)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4))
    W, b = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5))
    res = readout_derivatives(X, [W], [b], [(0.3, 1.2)], "tanh")
    for name in ("dntk", "ddI", "ddII"):
        assert np.all(res[name] == 0.0)
    # and its first-order tangents are the layer's NTK, C_b + C_W x.x'/n_0 on the diagonal of the neurons
    th = res["ntk"]
    expect = 0.3 + 1.2 * (X @ X.T) / 4
    for i in range(5):
        np.testing.assert_allclose(th[:, i, i], np.broadcast_to(expect, (2, 3, 3)), rtol=1e-14)
    assert np.all(th[:, 0, 1] == 0.0)


def test_linear_network_depth_one_closed_form():
    """z2 = W2 W1 x (no biases): dH_{i0 i1 i2; a0 a1 a2} = l1 l2 [d_{i0 i1} G_{a0 a2} z_{i2;a1} + d_{i0 i2} G_{a0 a1}
    z_{i1;a2}] with G = X X^T, l1 = lambda_W(1)/n_0, l2 = lambda_W(2)/n_1, derived by hand: the only second
    derivative is d2z_{i;a}/dW2_{jk} dW1_{km} = d_ij x_{a;m}; ddI = 0."""
    net = MLP.random((3, 6, 2), "linear", C_W=1.7, C_b=0.0, param="ntk", seed=4)
    X = np.random.default_rng(1).standard_normal((3, 3))
    Gm, z = X @ X.T, net(X).T  # z (O, N)
    l1, l2 = 1.7 / 3, 1.7 / 6
    d = np.eye(2)
    expect = l1 * l2 * (np.einsum("ij,ac,kb->ijkabc", d, Gm, z) + np.einsum("ik,ab,jc->ijkabc", d, Gm, z))
    np.testing.assert_allclose(dntk(net, X), expect, rtol=1e-12, atol=1e-14)
    ddI, _ = ddntk(net, X)
    assert np.abs(ddI).max() < 1e-14


def test_standard_parameterization_matches_the_ntk_derivative():
    """param='standard' (lambda = 1 on every parameter): the symmetrised dNTK against differences of MLP.ntk."""
    net, X = _net("tanh", 2, 2, "standard", seed=8)
    d = dntk(net, X)
    theta, (V, h) = net.flatten(), _directions(net, X)
    fd = _richardson(lambda t: _with(net, theta + t * V[1, 0]).ntk(X, trace_outputs=False), h).transpose(2, 3, 0, 1)
    pred = d[:, :, 1, :, :, 0] + np.transpose(d, (1, 0, 2, 4, 3, 5))[:, :, 1, :, :, 0]
    np.testing.assert_allclose(pred, fd, rtol=0, atol=1e-7 * np.abs(pred).max())


def test_second_and_third_derivatives_of_the_activations():
    """s'' and s''' of the library names and of a generated activation against central differences of s', s''."""
    z = np.linspace(-2.3, 2.1, 9)
    h = 1e-3
    for name in ("tanh", "erf", "sigmoid", "softplus", "swish", "gelu", "sin", "cos", "elu(0.5)", SMOOTH_OFF_CRITICAL):
        act = numpy_activation(name)
        for order in (2, 3):
            lower = act.higher(order - 1)
            fd = _richardson(lambda t: lower(z + t), h)
            np.testing.assert_allclose(act.higher(order)(z), fd, rtol=1e-9, atol=1e-9, err_msg=f"{name} {order}")
    for name in ("relu", "leaky_relu(0.1)", "abs", "linear"):
        act = numpy_activation(name)
        assert np.all(act.higher(2)(z) == 0) and np.all(act.higher(3)(z) == 0)


def test_bad_input():
    with pytest.raises(ValueError, match="no derivative of order 2"):
        net = MLP.random((2, 3, 2), (np.tanh, lambda z: 1 / np.cosh(z) ** 2), seed=0)
        dntk(net, np.ones((1, 2)))
    with pytest.raises(TypeError, match="reference MLP"):
        dntk("not a network", np.ones((1, 2)))
    with pytest.raises(ValueError, match="unknown orders"):
        readout_derivatives(np.ones((1, 2)), [np.ones((1, 2, 2))], [np.ones((1, 2))], [(1, 1)], "tanh", orders=("x",))


@pytest.mark.parametrize("act,param", [("tanh", "ntk"), ("erf", "unit"), (SMOOTH_OFF_CRITICAL, "ntk"), ("relu", "ntk")])
def test_second_order_change_of_the_ntk(act, param):
    """The O(t^2) change of H along a fixed v_{j;b}: d^2/dt^2 H_{i1 i2; a1 a2}(theta + t v_{j;b}) =
    ddI_{i1 i2 j j; a1 a2 b b} + ddI_{i2 i1 j j; a2 a1 b b} + 2 ddII_{i1 i2 j j; a1 a2 b b}, against the five-point
    second difference (error O(h^4)) of MLP.ntk."""
    net, X = _net(act, 2, 2, param, seed=21)
    ddI, ddII = ddntk(net, X)
    theta, (V, h) = net.flatten(), _directions(net, X)
    for j, b in [(0, 1), (1, 0)]:
        def H(t):
            return _with(net, theta + t * V[j, b]).ntk(X, trace_outputs=False).transpose(2, 3, 0, 1)  # (O, O, N, N)

        fd = (-H(2 * h) + 16 * H(h) - 30 * H(0.0) + 16 * H(-h) - H(-2 * h)) / (12 * h * h)
        I_part = ddI[:, :, j, j, :, :, b, b]
        pred = I_part + np.transpose(I_part, (1, 0, 3, 2)) + 2 * ddII[:, :, j, j, :, :, b, b]
        scale = np.abs(pred).max()
        assert scale > 1e-3
        np.testing.assert_allclose(pred, fd, rtol=0, atol=1e-6 * scale)
