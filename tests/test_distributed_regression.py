"""Kernel regression from blocked kernels (ntk_theory.distributed.regression).

Judges: numpy's dense solve of (K + r I) x = y and MSEDynamics at t = inf (eigendecomposition), both on the
in-memory compiled kernel; the posterior variance by its definition k** - k*^T (K + r I)^-1 k* with a dense solve.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")
pytest.importorskip("zarr")

from ntk_theory import stax  # noqa: E402
from ntk_theory.codegen.graph import compiled_graph_kernel  # noqa: E402
from ntk_theory.distributed import (  # noqa: E402
    SingularKernel,
    blocked_kernel,
    kernel_operator,
    kernel_regression,
)
from ntk_theory.dynamics import MSEDynamics  # noqa: E402

NET = stax.serial(stax.Dense(1, W_std=2**0.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=2**0.5, b_std=0.1),
                  stax.Relu(), stax.Dense(1))


def problem(n, m=23, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    Y = np.stack([np.sin(X[:, 0]), np.cos(X[:, 1])], axis=1) + 0.1 * rng.standard_normal((n, 2))
    return X, Xt, Y


def dense_posterior(K, Ktx, ktt, Y, r):
    S = K + r * np.eye(len(K))
    return Ktx @ np.linalg.solve(S, Y), ktt - np.einsum("mn,nm->m", Ktx, np.linalg.solve(S, Ktx.T))


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("diag_reg", [0.0, 1e-3])
@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_cholesky_on_the_store_equals_direct_solve(tmp_path, diag_reg, get):
    X, Xt, Y = problem(301)
    store = blocked_kernel(NET, X, chunks=64, scheduler="threads", store=tmp_path / "k.zarr", progress=False)
    g = compiled_graph_kernel(NET)
    K, Ktx, Ktt = getattr(g.evaluate(X), get), getattr(g.evaluate(Xt, X), get), getattr(g.evaluate(Xt), get)
    r = diag_reg * np.trace(K) / len(K)
    post = kernel_regression(getattr(store, get), Y, Ktx, Ktt, diag_reg=diag_reg, scheduler="threads")
    mean, var = dense_posterior(K, Ktx, np.diag(Ktt), Y, r)
    assert rel(post.mean, mean) < 1e-10
    assert np.max(np.abs(post.variance - var)) < 1e-10 * np.max(np.diag(Ktt))
    if get == "ntk":  # MSEDynamics at t = inf: the same r, absolute
        dyn = MSEDynamics(K, Y, diag_reg=r).test(np.inf, ntk_test_train=Ktx)
        assert rel(post.mean, dyn) < 1e-10
        abs_post = kernel_regression(store.ntk, Y, Ktx, diag_reg=r, diag_reg_absolute_scale=True,
                                     scheduler="threads")
        assert rel(abs_post.mean, dyn) < 1e-10


def test_train_fit_and_vector_targets():
    X, _, Y = problem(77)
    K = compiled_graph_kernel(NET).evaluate(X).ntk
    r = 1e-2 * np.trace(K) / len(K)
    post = kernel_regression(K, Y[:, 0], diag_reg=1e-2, chunks=20, scheduler="synchronous")
    assert post.mean.shape == (77,) and post.variance is None
    assert rel(post.mean, K @ np.linalg.solve(K + r * np.eye(77), Y[:, 0])) < 1e-10


def test_cg_matrix_free_from_recomputed_tiles():
    X, Xt, Y = problem(150)
    g = compiled_graph_kernel(NET)
    K, Ktx, Ktt = g.evaluate(X).ntk, g.evaluate(Xt, X).ntk, g.evaluate(Xt).ntk
    op = kernel_operator(NET, X, chunks=41, get="ntk")
    post = kernel_regression(op, Y, Ktx, Ktt, diag_reg=1e-3, method="cg", rank=40, scheduler="threads")
    mean, var = dense_posterior(K, Ktx, np.diag(Ktt), Y, 1e-3 * np.trace(K) / 150)
    assert post.info["residual"] <= 1e-12
    assert rel(post.mean, mean) < 1e-10
    assert np.max(np.abs(post.variance - var)) < 1e-10 * np.max(np.diag(Ktt))


@pytest.mark.slow
def test_cg_on_a_moderately_large_store(tmp_path):
    X, Xt, Y = problem(3001, m=40, d=8, seed=1)
    store = blocked_kernel(NET, X, chunks=512, scheduler="threads", store=tmp_path / "k.zarr", progress=False)
    g = compiled_graph_kernel(NET)
    K, Ktx = g.evaluate(X).ntk, g.evaluate(Xt, X).ntk
    post = kernel_regression(store.ntk, Y, Ktx, diag_reg=1e-4, method="cg", rank=300, in_memory=True,
                             scheduler="threads")
    mean, _ = dense_posterior(K, Ktx, np.zeros(40), Y, 1e-4 * np.trace(K) / 3001)
    assert post.info["residual"] <= 1e-12
    assert rel(post.mean, mean) < 1e-10


def test_singular_kernel_is_refused_or_warned():
    X, _, Y = problem(40)
    X[20:] = X[:20]  # every input twice: K has rank <= 20
    K = compiled_graph_kernel(NET).evaluate(X).ntk
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            kernel_regression(K, Y, diag_reg=0.0, chunks=16, scheduler="synchronous")
            refused = False
        except SingularKernel as exc:
            refused = "diag_reg" in str(exc)
    assert refused or any("nearly singular" in str(w.message) and "diag_reg" in str(w.message) for w in caught)
    with pytest.raises(SingularKernel, match="diag_reg"):
        kernel_regression(K, Y, diag_reg=0.0, method="cg", maxiter=5, chunks=16, scheduler="synchronous")
    post = kernel_regression(K, Y, diag_reg=1e-6, chunks=16, scheduler="synchronous")
    r = 1e-6 * np.trace(K) / 40
    assert rel(post.mean, K @ np.linalg.solve(K + r * np.eye(40), Y)) < 1e-8


def test_bad_arguments():
    K = np.eye(3)
    with pytest.raises(ValueError, match="diag_reg"):
        kernel_regression(K, np.ones(3), diag_reg=-1.0, chunks=2)
    with pytest.raises(ValueError, match="method"):
        kernel_regression(K, np.ones(3), method="lu", chunks=2)
    with pytest.raises(ValueError, match="y_train has 4 rows"):
        kernel_regression(K, np.ones(4), chunks=2)
