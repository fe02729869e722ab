"""Side by side with neural-tangents 0.6.5, from its recorded outputs (``tests/data/neural_tangents/*.npz``).

neural-tangents is never a dependency: ``benchmarks/anchors/record_neural_tangents.py``, run with the Python
of a separate environment that has it, wrote the recordings (inputs, parameters, outputs and a JSON
``config`` with the versions).  These tests need only NumPy:

* infinite-width NNGP/NTK of MLPs (13 activations, depths 1, 2, 4, several C_W, C_b, widths, 'ntk' and
  'standard'): ``KernelRecursion`` to 1e-10 relative at distinct inputs and on the diagonal of smooth
  activations.  At a kink neural-tangents' diagonal loses about 8 digits (arccos/arctan2 near angle 0;
  sign: 4), so there our exact diagonal is compared with it at 1e-7 (sign: 1e-3) only;
* the empirical NTK of MLPs with the recorded parameters (three methods and ``MLP.ntk``; full and traced
  outputs; relu, erf, gelu, tanh, leaky ReLU, abs; both parameterizations): 1e-10 relative;
* ``predict.gradient_descent_mse`` / ``_ensemble`` / ``max_learning_rate`` on the recorded kernels:
  ``MSEDynamics`` and ``ensemble`` to 1e-10;
* stax branching networks (residual block, LayerNorm after Dense, FanInConcat, FanInSum): the recorded
  kernels against the layer rules composed by hand here with ``activation_kernels`` (off-diagonal 1e-10,
  diagonal 1e-7), and the networks neural-tangents rejects.

With neural-tangents' environment present (``NTK_THEORY_NT_PYTHON``, default ``/tmp/ntvenv/bin/python``),
the slow set also re-runs the recorder and checks that it reproduces the committed files.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ntk_theory import MLP
from ntk_theory.architecture import MLPSpec
from ntk_theory.conventions import learning_rate_factors
from ntk_theory.dynamics import MSEDynamics, ensemble
from ntk_theory.empirical import Dense, empirical_ntk
from ntk_theory.recursions import KernelRecursion, activation_kernels

DATA = Path(__file__).parent / "data" / "neural_tangents"
RECORDER = Path(__file__).parents[1] / "benchmarks" / "anchors" / "record_neural_tangents.py"
NT_PYTHON = Path(os.environ.get("NTK_THEORY_NT_PYTHON", "/tmp/ntvenv/bin/python"))
EXACT = 1e-10  # where neural-tangents is exact in float64 (measured: <= 3e-14; LayerNorm 1e-12, from its eps)
# neural-tangents' diagonal at a kink: arccos / arctan2 at angle 0 keep about half the digits of the
# angle (its NTK diagonal: up to 2.2e-8 relative measured); the step of sign gives arcsin at 1 in the
# NNGP as well (9.7e-5).  Smooth activations: exact on the diagonal too.
DIAGONAL = {"relu": 1e-7, "abs": 1e-7, "leaky_relu(1/10)": 1e-7, "abrelu(1/2,2)": 1e-7, "sign": 1e-3}


def load(name: str) -> tuple[dict, dict]:
    with np.load(DATA / f"{name}.npz") as d:
        arrays = {k: d[k] for k in d.files}
    return arrays, json.loads(str(arrays.pop("config")))


def assert_close(got, expected, rtol, what):
    """Max |got - expected| <= rtol * max |expected| (entries of very different size: one scale)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    assert np.all(np.isfinite(got)), what
    err = np.max(np.abs(got - expected))
    assert err <= rtol * np.max(np.abs(expected)), f"{what}: max error {err:.2e}, scale {np.max(np.abs(expected)):.2e}"


def split_diagonal(A):
    """(off-diagonal entries, diagonal) of a square matrix."""
    off = ~np.eye(A.shape[0], dtype=bool)
    return A[off], np.diag(A)


# ---------------------------------------------------------------------- infinite-width MLP kernels
KERNELS, KERNELS_CONFIG = load("kernels")


@pytest.mark.parametrize("job", KERNELS_CONFIG["jobs"], ids=lambda j: j["name"])
def test_kernels_agree_with_neural_tangents(job):
    p = job["parameterization"]
    rec = KernelRecursion(job["act"], job["depth"], C_W=job["W_std"] ** 2, C_b=job["b_std"] ** 2, param=p,
                          widths=job["width"] if p == "standard" else None)
    X1, X2 = KERNELS["X1"], KERNELS["X2"]
    cross, same = rec(X1, X2), rec(X1)
    for q in ("nngp", "ntk"):
        theirs = KERNELS[f"{job['name']}/cross/{q}"]
        assert_close(getattr(cross, q), theirs, EXACT, f"{q}(X1, X2)")
        ours_off, ours_diag = split_diagonal(getattr(same, q))
        theirs_off, theirs_diag = split_diagonal(KERNELS[f"{job['name']}/same/{q}"])
        assert_close(ours_off, theirs_off, EXACT, f"{q}(X1, X1) off the diagonal")
        # neural-tangents' diagonal is the inexact side here (see DIAGONAL)
        assert_close(ours_diag, theirs_diag, DIAGONAL.get(job["act"], EXACT), f"{q}(X1, X1) diagonal")


# ---------------------------------------------------------------------- empirical NTK with fixed parameters
EMPIRICAL, EMPIRICAL_CONFIG = load("empirical")
METHODS = ["jacobian_contraction", "ntk_vector_products", "structured", "MLP.ntk"]


def recorded_network(net: dict, method: str):
    """The recorded parameters as a layer list (or an MLP for MLP.ntk); learning-rate factors from
    ntk-theory's conventions, checked against the recorded ones."""
    name, widths, p = net["name"], net["widths"], net["parameterization"]
    C_W, C_b = net["W_std"] ** 2, net["b_std"] ** 2
    Ws = [EMPIRICAL[f"{name}/W{l}"] for l in range(1, len(widths))]
    bs = [EMPIRICAL[f"{name}/b{l}"] for l in range(1, len(widths))]
    layers = []
    for l, (W, b) in enumerate(zip(Ws, bs), start=1):
        lam_b, lam_W = learning_rate_factors(p, C_W=C_W, C_b=C_b, fan_in=W.shape[1])
        np.testing.assert_allclose([lam_W, lam_b], [EMPIRICAL[f"{name}/lambda_W{l}"], EMPIRICAL[f"{name}/lambda_b{l}"]],
                                   rtol=1e-15)
        layers.append(Dense(W, b, lambda_W=lam_W, lambda_b=lam_b))
        if l < len(Ws):
            layers.append(net["acts"][l - 1])
    if method != "MLP.ntk":
        return layers
    return MLP(MLPSpec(tuple(widths), C_W=C_W, C_b=C_b, param=p), net["acts"][0], Ws, bs)


@pytest.mark.parametrize(("net", "method"), [
    pytest.param(net, method, id=f"{net['name']}-{method}") for net in EMPIRICAL_CONFIG["nets"] for method in METHODS
    if method != "MLP.ntk" or len(set(net["acts"])) == 1  # an MLP has one activation
])
def test_empirical_ntk_agrees_with_neural_tangents(net, method):
    model = recorded_network(net, method)
    X1, X2 = EMPIRICAL["X1"], EMPIRICAL["X2"]
    name = net["name"]
    if method == "MLP.ntk":
        assert_close(model(X1), EMPIRICAL[f"{name}/f"], 1e-12, "outputs")
    for tag, x2 in (("same", None), ("cross", X2)):
        for trace in ("full", "traced"):
            if method == "MLP.ntk":
                got = model.ntk(X1, x2, trace_outputs=trace == "traced")
            else:
                got = empirical_ntk(model, X1, x2, method=method, trace_outputs=trace == "traced")
            assert_close(got, EMPIRICAL[f"{name}/{tag}/{trace}"], EXACT, f"{tag} {trace}")


# ---------------------------------------------------------------------- gradient-descent dynamics
def test_dynamics_agree_with_neural_tangents():
    nt, _ = load("dynamics")
    K, T, N, y, f0, ts, lr = (nt[k] for k in ("nngp", "ntk", "N", "y", "f0", "ts", "lr"))
    N, lr = int(N), float(lr)
    dyn = MSEDynamics(T[:N, :N], y, learning_rate=lr)
    tr, te = dyn.predict(ts, ntk_test_train=T[N:, :N], fx_train_0=f0[:N], fx_test_0=f0[N:])
    np.testing.assert_allclose(tr, nt["train"], atol=1e-10)
    np.testing.assert_allclose(te, nt["test"], atol=1e-10)
    tr, te = dyn.predict(np.inf, ntk_test_train=T[N:, :N], fx_train_0=f0[:N], fx_test_0=f0[N:])
    np.testing.assert_allclose(tr, nt["train_inf"], atol=1e-10)
    np.testing.assert_allclose(te, nt["test_inf"], atol=1e-10)
    np.testing.assert_allclose(dyn.max_learning_rate(), nt["max_lr"], rtol=1e-10)
    for get in ("ntk", "nngp"):
        e = ensemble(K[:N, :N], T[:N, :N], y, ts, nngp_test_train=K[N:, :N], ntk_test_train=T[N:, :N],
                     nngp_test_test=K[N:, N:], learning_rate=lr, get=get)
        np.testing.assert_allclose(e.test.mean, nt[f"ens_{get}_mean"], atol=1e-10)
        np.testing.assert_allclose(e.test.covariance, nt[f"ens_{get}_cov"], atol=1e-10)
        np.testing.assert_allclose(e.train.mean, nt[f"ens_{get}_train_mean"], atol=1e-10)
        np.testing.assert_allclose(e.train.covariance, nt[f"ens_{get}_train_cov"], atol=1e-10)


# ---------------------------------------------------------------------- stax branching networks
class Composed:
    """Infinite-width (K, Theta) of a branching network at N inputs, by the layer rules (as full N x N
    matrices; a branch is a function of a Composed).  Dense: K' = C_W K + C_b,
    Theta' = lambda_b + lambda_W K + C_W Theta; activation: K' = T(K), Theta' = Tdot(K) * Theta
    (``activation_kernels``, exact diagonal forms on the diagonal); sum of independent branches: K and
    Theta add; channel concatenation: the width-weighted mean; LayerNorm over channels:
    K_ab / sqrt(K_aa K_bb), the same for Theta (neural-tangents adds eps = 1e-12 to K_aa: 1e-12 relative)."""

    def __init__(self, K, Th, width, param):
        self.K, self.Th, self.width, self.param = K, Th, width, param

    @classmethod
    def inputs(cls, X, param):
        return cls(X @ X.T / X.shape[1], np.zeros((len(X), len(X))), X.shape[1], param)

    def dense(self, width, W_std, b_std):
        C_W, C_b = W_std ** 2, b_std ** 2
        lam_b, lam_W = learning_rate_factors(self.param, C_W=C_W, C_b=C_b, fan_in=self.width)
        return Composed(C_W * self.K + C_b, lam_b + lam_W * self.K + C_W * self.Th, width, self.param)

    def act(self, name):
        ak, d = activation_kernels(name), np.diag(self.K)
        T, Tdot, _ = ak.offdiagonal(d[:, None], d[None, :], self.K)
        tdiag, tdot_diag, _ = ak.diagonal(d)
        i = np.arange(len(d))
        T[i, i], Tdot[i, i] = tdiag, tdot_diag
        return Composed(T, Tdot * self.Th, self.width, self.param)

    def layernorm(self):
        s = np.sqrt(np.diag(self.K))
        return Composed(self.K / np.outer(s, s), self.Th / np.outer(s, s), self.width, self.param)

    @staticmethod
    def sum(*branches):
        b0 = branches[0]
        return Composed(sum(b.K for b in branches), sum(b.Th for b in branches), b0.width, b0.param)

    @staticmethod
    def concat(*branches):
        n = sum(b.width for b in branches)
        return Composed(sum(b.width * b.K for b in branches) / n, sum(b.width * b.Th for b in branches) / n, n,
                        branches[0].param)


W, B = 1.4, 0.1  # the networks written in each recording's config["network"], composed by hand


def resblock(x):
    h = x.dense(64, W, B)  # FanOut(2) after it: relu -> Dense branch and identity branch
    return Composed.sum(h.act("relu").dense(64, W, B), h).act("relu").dense(1, W, B)


def layernorm(x):
    return x.dense(64, W, B).layernorm().act("relu").dense(64, W, B).act("erf").dense(1, W, B)


def concat(x):
    h = x.dense(64, W, B).act("relu")
    return Composed.concat(h.dense(64, W, B), h.dense(32, 1.2, 0.3).act("erf").dense(32, 0.9, 0.2)).dense(1, W, B)


def fansum(x):
    h = x.dense(64, W, B).act("relu")
    return Composed.sum(h.dense(64, W, B), h.dense(64, 1.2, 0.3).act("erf").dense(64, 0.9, 0.2)).act("relu") \
        .dense(1, W, B)


STAX_COMPOSED = {f.__name__: f for f in (resblock, layernorm, concat, fansum)}


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("name", sorted(STAX_COMPOSED))
def test_stax_recordings_match_the_layer_rules(name, param):
    nt, config = load(f"stax_{name}")
    assert not int(nt[f"{param}/raised"]), config["raised"]
    got = STAX_COMPOSED[name](Composed.inputs(nt["X"], param))
    for q, ours in (("nngp", got.K), ("ntk", got.Th)):
        ours_off, ours_diag = split_diagonal(ours)
        theirs_off, theirs_diag = split_diagonal(nt[f"{param}/{q}"])
        assert_close(ours_off, theirs_off, EXACT, f"{name} {param} {q} off the diagonal")
        assert_close(ours_diag, theirs_diag, DIAGONAL["relu"], f"{name} {param} {q} diagonal")


def test_recordings_are_complete_and_small():
    """Every recording names its versions; the networks neural-tangents rejects are flagged, not kernels."""
    total = sum(f.stat().st_size for f in DATA.glob("*.npz"))
    assert total < 2 * 2 ** 20, total
    for f in DATA.glob("*.npz"):
        assert load(f.stem)[1]["versions"]["neural_tangents"] == "0.6.5", f.name
    nt, config = load("stax_unsupported")
    for name, entry in config["networks"].items():
        for param in ("ntk", "standard"):
            assert int(nt[f"{name}/{param}/raised"]) == 1 and f"{name}/{param}/ntk" not in nt
            assert entry["raised"][param].split(":")[0] in ("NotImplementedError", "ValueError")


# ---------------------------------------------------------------------- the recorder reproduces the files
@pytest.mark.slow
@pytest.mark.skipif(not NT_PYTHON.exists(), reason="neural-tangents environment not found (NTK_THEORY_NT_PYTHON)")
def test_recorder_reproduces_the_recordings(tmp_path):
    for recorder in (RECORDER, RECORDER.parent / "record_conv_kernels.py", RECORDER.parent / "record_conv_apply.py"):
        subprocess.run([str(NT_PYTHON), str(recorder), "--out", str(tmp_path)], check=True, timeout=900,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True)
    for f in DATA.glob("*.npz"):
        with np.load(f) as old, np.load(tmp_path / f.name) as new:
            assert sorted(old.files) == sorted(new.files), f.name
            for k in old.files:
                if k == "config":
                    assert json.loads(str(old[k])) == json.loads(str(new[k])), f.name
                else:
                    np.testing.assert_allclose(new[k], old[k], rtol=1e-12, atol=1e-300, err_msg=f"{f.name} {k}")
