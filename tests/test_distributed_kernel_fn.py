"""``kernel_fn(..., chunks=)`` and ``kernel(..., chunks=)``: the kernel as Dask tiles on a real LocalCluster.

Judge: the same call without ``chunks`` (the in-process evaluation, checked against closed forms, the NumPy
reference network and neural-tangents elsewhere), bit for bit: each tile runs the evaluator chosen for the
whole kernel on its row and column blocks; the inputs have dimension <= 3, where BLAS forms every Gram
product x_a . x_b in the same order for any block shape.  The one documented exception: a symmetric tiled
kernel mirrors its upper tiles, and the NumPy interpreter's kernel of pooled images is symmetric only to
rounding, so there the lower triangle agrees to ~1 ulp.
"""

import math

import sys

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.blocks import DistributedUnavailable
from ntk_theory.recursions.network import kernel

MLP = stax.serial(*[stax.Dense(1, W_std=2**0.5, b_std=0.1), stax.Relu()] * 4, stax.Dense(1))  # test_distributed's
RESIDUAL = stax.serial(stax.Dense(1, W_std=1.4, b_std=0.1), stax.FanOut(2),
                       stax.parallel(stax.serial(stax.Relu(), stax.Dense(1, W_std=1.2)), stax.Identity()),
                       stax.FanInSum(), stax.LayerNorm(), stax.Dense(1))
CNN = stax.serial(stax.Conv(1, (2, 2), padding="SAME", W_std=1.3, b_std=0.1), stax.Relu(), stax.AvgPool((2, 2)),
                  stax.Flatten(), stax.Dense(1, W_std=1.1))


def vectors(n, d=3, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    X[n - 1] = X[2]  # a repeated input: exact-diagonal entries off the diagonal, in another tile
    return X


def same(a, b, upper_only=False):
    pick = (lambda M: np.triu(M)) if upper_only else (lambda M: M)
    return all(np.array_equal(pick(np.asarray(x[...])), pick(y)) for x, y in zip(a, b))


@pytest.mark.parametrize("net, X, compiled, on_cluster", [
    (MLP, vectors(41), True, False),  # the compiled kernel, on Dask's threads (the workers' compile is test_distributed's)
    (RESIDUAL, vectors(33), None, True),
    (CNN, np.random.default_rng(1).standard_normal((9, 4, 4, 1)), False, True)], ids=["mlp-compiled", "residual", "cnn"])
def test_chunks_equal_the_unchunked_kernel(request, net, X, compiled, on_cluster):
    pytest.importorskip("distributed")
    scheduler = request.getfixturevalue("client") if on_cluster else "threads"
    chunks = max(2, len(X) // 3)
    ref = net.kernel_fn(X, compiled=compiled)
    res = net.kernel_fn(X, compiled=compiled, chunks=chunks, scheduler=scheduler)
    images = X.ndim > 2
    assert same(res, ref, upper_only=images)
    for a, b in zip(res, ref):
        assert np.max(np.abs(a - b) / np.abs(b)) < 1e-15
    assert res.info["evaluated_by"] == ref.info["evaluated_by"]
    if on_cluster:  # tiles came through shared memory: the workers hold no mapping of it afterwards
        mapped = scheduler.run(lambda: len(__import__("ntk_theory.blocks.store", fromlist=["MAPPED"]).MAPPED))
        assert set(mapped.values()) == {0}
    blocks = math.ceil(len(X) / chunks)
    assert res.info["tiles"] == len(res.info["computed"]) == blocks * (blocks + 1) // 2


def test_tiles_as_task_results(request, monkeypatch):
    """Workers that do not see this machine's files (a remote cluster, simulated): the tiles come back as task
    results, equal bit for bit."""
    pytest.importorskip("distributed")
    from ntk_theory.blocks.schedulers import ClusterRunner

    client = request.getfixturevalue("client")

    monkeypatch.setattr(ClusterRunner, "sees", lambda self, path: False)
    X = vectors(25)
    assert same(RESIDUAL.kernel_fn(X, chunks=7, scheduler=client), RESIDUAL.kernel_fn(X))


def test_cross_kernel_to_a_store_and_the_mlp_shortcut(tmp_path):
    pytest.importorskip("distributed")
    pytest.importorskip("zarr")
    X, X2 = vectors(23), vectors(10, seed=3)
    ntk = MLP.kernel_fn(X, X2, get="ntk", chunks=8, scheduler="threads", out=tmp_path / "k.zarr")
    assert np.array_equal(ntk[:], MLP.kernel_fn(X, X2, get="ntk"))
    ref = kernel(X, activation="tanh", depth=2, C_W=1.5, C_b=0.1)
    assert same(kernel(X, activation="tanh", depth=2, C_W=1.5, C_b=0.1, chunks=7, scheduler="synchronous"), ref)


def test_without_dask_one_line(monkeypatch):
    """dask and distributed made unimportable (as in an environment without the extra): the unchunked kernel
    still runs (it never imports them) and chunks= stops with one line naming the extra."""
    for name in ("dask", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)
    X = vectors(6)
    assert MLP.kernel_fn(X, get="nngp").shape == (6, 6)
    for call in (lambda: MLP.kernel_fn(X, chunks=3), lambda: kernel(X, chunks=3)):
        with pytest.raises(DistributedUnavailable) as err:
            call()
        assert "install ntk-theory[distributed]" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="go with chunks"):
        MLP.kernel_fn(X, scheduler="threads")
    with pytest.raises(ValueError, match="chunks must be a positive integer"):
        MLP.kernel_fn(X, chunks=0)
