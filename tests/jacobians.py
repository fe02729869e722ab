"""The judge the empirical-NTK tests share: the full Jacobian by forward mode, one unit tangent per parameter pushed
through ``reference.graph.jvp`` (independent of the reverse-mode and structured code under test)."""

import numpy as np

from ntk_theory import stax
from ntk_theory.reference import graph


def parsed_network(text, shape, seed=0):
    """(description, params, X) of stax text: X ~ N(0, 1) of ``shape`` from ``seed``, the parameters by
    reference.graph.init from ``seed + 1``."""
    description = stax.parse(text).description
    X = np.random.default_rng(seed).standard_normal(shape)
    _, params = graph.init(description, seed + 1, shape)
    return description, params, X


def forward_mode_jacobian(description, params, X):
    """(N, ..., P): every unit parameter tangent pushed through reference.graph.jvp (forward mode); the output's
    axes (O, or spatial axes and channels) stand between N and P."""
    leaves = graph.param_leaves(params)
    P = sum(np.size(a) for _, a in leaves)
    eye = np.eye(P)
    arrays, i = [], 0
    for _, a in leaves:
        k = np.size(a)
        arrays.append(eye[:, i:i + k].reshape((P,) + np.shape(a)))
        i += k
    _, Jv = graph.jvp(description, params, X, graph.with_leaves(params, arrays))  # (P, N, ...)
    return np.moveaxis(Jv, 0, -1)


def rel(a, ref):
    """The largest difference relative to the largest reference entry."""
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def finite_difference_ntk(description, params, X, h: float = 1e-6):
    """(N, N, O, O): J J^T with J by central differences of ``reference.graph.apply`` over every parameter."""
    theta = graph.flatten(params)
    J = np.stack([(graph.apply(description, graph.unflatten(params, theta + h * e), X)
                   - graph.apply(description, graph.unflatten(params, theta - h * e), X)) / (2 * h)
                  for e in np.eye(theta.size)], axis=-1)
    return np.einsum("aip,bjp->abij", J, J)


def assert_cli_ntk_matches_finite_differences(tmp_path, text, X, seed: int = 3):
    """Runs ``ntk-theory empirical-ntk --arch text --x X.npy --seed seed --no-trace`` and asserts its (N, N, O, O)
    NTK equals :func:`finite_difference_ntk` at the parameters of ``reference.graph.init(description, seed)``
    (rtol 1e-6, atol 1e-8 of the largest entry)."""
    from ntk_theory.cli import main

    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "e.npz"
    assert main(["empirical-ntk", "--arch", text, "--x", str(tmp_path / "x.npy"), "--seed", str(seed), "--no-trace",
                 "--out", str(out)]) == 0
    ntk = np.load(out)["ntk"]
    description = stax.parse(text).description
    _, params = graph.init(description, seed, X.shape)
    expected = finite_difference_ntk(description, params, X)
    np.testing.assert_allclose(ntk, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
