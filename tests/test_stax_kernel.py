"""ntk_theory.stax: neural-tangents' layer algebra, its kernel_fn against recorded neural-tangents 0.6.5 outputs.

Judges (independent of the code under test):
- recorded ``kernel_fn`` outputs of neural-tangents 0.6.5 (tests/data/neural_tangents/, written by
  benchmarks/anchors/record_neural_tangents.py in its own environment): MLPs of 13 activations in both
  parameterizations, and the branching networks (residual block, LayerNorm after Dense, FanInConcat, FanInSum);
- neural-tangents' definitions of its activation functions, written out here in NumPy/SciPy;
- closed-form one-layer kernels written out by hand (arc-cosine, the LayerNorm and FanInSum algebra).
The cases neural-tangents refuses (LayerNorm after a nonlinearity, FanInSum of a non-Dense branch) are judged by the
Monte Carlo of the reference network in tests/test_stax_montecarlo.py and by hand-written algebra below.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import special

from ntk_theory import stax
from ntk_theory.recursions import graph
from ntk_theory.stax.parse import parse as parse_with

DATA = Path(__file__).parent / "data" / "neural_tangents"

# ntk-theory name in the recordings -> the stax layer neural-tangents was given
ACTS = {
    "relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu, "sin": stax.Sin, "cos": stax.Cos, "abs": stax.Abs,
    "sign": stax.Sign, "leaky_relu(1/10)": lambda: stax.LeakyRelu(0.1), "abrelu(1/2,2)": lambda: stax.ABRelu(0.5, 2.0),
    "rbf": lambda: stax.Rbf(1.0), "monomial(3)": lambda: stax.Monomial(3), "exp": stax.Exp,
    "gaussian": lambda: stax.Gaussian(1.0, -0.5),
}


def _load(name):
    d = np.load(DATA / f"{name}.npz", allow_pickle=True)
    return d, json.loads(str(d["config"]))


def _off(a):
    return ~np.eye(*a.shape, dtype=bool) if a.shape[0] == a.shape[1] else np.ones(a.shape, dtype=bool)


MLP_DATA, MLP_CONFIG = _load("kernels")


@pytest.mark.parametrize("job", MLP_CONFIG["jobs"], ids=[j["name"] for j in MLP_CONFIG["jobs"]])
def test_mlp_kernels_match_neural_tangents(job):
    layers = []
    for _ in range(job["depth"]):
        layers += [stax.Dense(job["width"], W_std=job["W_std"], b_std=job["b_std"],
                              parameterization=job["parameterization"]), ACTS[job["act"]]()]
    layers.append(stax.Dense(1, W_std=job["W_std"], b_std=job["b_std"], parameterization=job["parameterization"]))
    _, _, kernel_fn = stax.serial(*layers)
    X1, X2 = MLP_DATA["X1"], MLP_DATA["X2"]
    for which, (a, b) in {"cross": (X1, X2), "same": (X1, None)}.items():
        k = kernel_fn(a, b, ("nngp", "ntk"))
        for q in ("nngp", "ntk"):
            ref = MLP_DATA[f"{job['name']}/{which}/{q}"]
            got = getattr(k, q)
            off = _off(ref)
            np.testing.assert_allclose(got[off], ref[off], rtol=1e-10, atol=1e-12 * np.abs(ref).max())
            if job["act"] == "sign":  # E[sign(u)^2] = 1 exactly; neural-tangents' arccos of a rounded 1 is off by ~1e-4
                if q == "nngp":
                    np.testing.assert_allclose(got[~off], job["b_std"] ** 2 + job["W_std"] ** 2, rtol=1e-15)
                continue
            # neural-tangents' NTK diagonal goes through an angle that rounding makes ~1e-8 instead of 0
            np.testing.assert_allclose(got[~off], ref[~off], rtol=1e-7)


@pytest.mark.parametrize("name", ["resblock", "layernorm", "concat", "fansum"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_branching_networks_match_neural_tangents(name, parameterization):
    data, config = _load(f"stax_{name}")
    names = {n: getattr(stax, n) for n in stax.LAYERS}
    names["Dense"] = functools.partial(stax.Dense, parameterization=parameterization)
    net = parse_with(config["network"], names)
    k = net.kernel_fn(data["X"], None, ("nngp", "ntk"))
    for q in ("nngp", "ntk"):
        ref, got = data[f"{parameterization}/{q}"], getattr(k, q)
        off = _off(ref)
        np.testing.assert_allclose(got[off], ref[off], rtol=1e-10)
        np.testing.assert_allclose(got[~off], ref[~off], rtol=1e-7)


def test_what_neural_tangents_refuses_is_computed_and_what_is_not_exact_is_refused():
    data, config = _load("stax_unsupported")
    X = data["X"]
    for name, entry in config["networks"].items():
        assert int(data[f"{name}/ntk/raised"]) == 1, name  # neural-tangents 0.6.5 raised on each
        net = stax.parse(entry["network"])
        if name == "relu_after_concat":  # a nonlinearity of a channel mixture: refused, the layer named
            with pytest.raises(NotImplementedError, match=r"Relu\(\) at layer 4 follows FanInConcat"):
                net.kernel_fn(X)
        else:
            k = net.kernel_fn(X)
            assert np.all(np.isfinite(k.nngp)) and np.all(np.isfinite(k.ntk))


# ---------------------------------------------------------------------- hand-written algebra
def _relu_kernels(K11, K22, K12):
    """E[relu(u) relu(v)], E[step(u) step(v)], E[relu(u)] (Cho & Saul 2009)."""
    c = np.clip(K12 / np.sqrt(K11 * K22), -1, 1)
    th = np.arccos(c)
    T = np.sqrt(K11 * K22) * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi)
    return T, (np.pi - th) / (2 * np.pi)


def test_identity_after_relu_and_layernorm_after_relu_by_hand():
    """neural-tangents refuses both; their kernels follow from ReLU's arc-cosine kernel and its mean
    E[relu(u)] = sqrt(K / (2 pi)): a residual sum adds independent moments, LayerNorm centres and scales."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4, 3))
    G = X @ X.T / 3
    cw, cb = 1.4**2, 0.1**2
    K1 = cb + cw * G
    d = np.diag(K1)
    T, Td = _relu_kernels(d[:, None], d[None, :], K1)
    np.fill_diagonal(T, d / 2)
    np.fill_diagonal(Td, 0.5)
    m = np.sqrt(d / (2 * np.pi))
    Th1 = cb + cw * G
    # relu(z) + Dense(relu(z)): the Dense branch is independent with mean zero
    K2 = cb + cw * T
    Th2 = cb + cw * T + cw * Td * Th1
    M2 = T + K2
    nngp = cb + cw * M2
    ntk = cb + cw * M2 + cw * (Td * Th1 + Th2)
    net = stax.serial(stax.Dense(64, W_std=1.4, b_std=0.1), stax.Relu(), stax.FanOut(2),
                      stax.parallel(stax.Dense(64, W_std=1.4, b_std=0.1), stax.Identity()), stax.FanInSum(),
                      stax.Dense(1, W_std=1.4, b_std=0.1))
    k = net.kernel_fn(X)
    np.testing.assert_allclose(k.nngp, nngp, rtol=1e-13)
    np.testing.assert_allclose(k.ntk, ntk, rtol=1e-13)
    kmp = graph.kernel(net.description, X, dps=30)  # the same rules in 30-digit mpmath
    np.testing.assert_allclose(kmp.nngp.astype(float), nngp, rtol=1e-14)
    np.testing.assert_allclose(kmp.ntk.astype(float), ntk, rtol=1e-14)
    # LayerNorm after relu: (E[h h'] - m m') / (s s'), Theta / (s s'), s^2 = E[h^2] - m^2 (+ eps)
    s = np.sqrt(d / 2 - m**2 + 1e-12)
    net = stax.serial(stax.Dense(64, W_std=1.4, b_std=0.1), stax.Relu(), stax.LayerNorm(),
                      stax.Dense(1, W_std=1.4, b_std=0.1))
    k = net.kernel_fn(X)
    L = (T - np.outer(m, m)) / np.outer(s, s)
    np.testing.assert_allclose(k.nngp, cb + cw * L, rtol=1e-13)
    np.testing.assert_allclose(k.ntk, cb + cw * L + cw * Td * Th1 / np.outer(s, s), rtol=1e-13)


def test_two_nonlinear_branches_of_one_source_add_into_one_activation():
    """parallel(Relu, Abs) of one Gaussian, summed: relu(z) + |z| = z/2 + 3|z|/2, so the kernel is
    K12/4 + (9/4) E|u||v| with E|u||v| = (2/pi) sqrt(K11 K22) (sqrt(1 - rho^2) + rho asin rho)."""
    X = np.array([[1.0, 0.2], [-0.3, 0.8]])
    net = stax.serial(stax.Dense(8, W_std=1.2, b_std=0.3), stax.FanOut(2), stax.parallel(stax.Relu(), stax.Abs()),
                      stax.FanInSum(), stax.Dense(1))
    k = net.kernel_fn(X, get="nngp")
    K = 0.09 + 1.44 * X @ X.T / 2
    r = K[0, 1] / np.sqrt(K[0, 0] * K[1, 1])
    expected = K[0, 1] / 4 + 2.25 * (2 / np.pi) * np.sqrt(K[0, 0] * K[1, 1]) * (np.sqrt(1 - r * r) + r * np.arcsin(r))
    assert k[0, 1] == pytest.approx(expected, rel=1e-14)
    assert k[0, 0] == pytest.approx(K[0, 0] / 4 + 2.25 * K[0, 0], rel=1e-14)  # E[(u/2 + 3|u|/2)^2]


# ---------------------------------------------------------------------- activations are neural-tangents'
NT_FUNCTIONS = [  # (stax layer, neural-tangents' fn written out)
    (stax.Relu(), lambda x: np.maximum(x, 0)),
    (stax.LeakyRelu(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    (stax.ABRelu(0.5, 2.0), lambda x: 0.5 * np.minimum(x, 0) + 2.0 * np.maximum(x, 0)),
    (stax.Abs(), np.abs),
    (stax.Sign(), np.sign),
    (stax.Erf(a=0.7, b=1.3, c=0.2), lambda x: 0.7 * special.erf(1.3 * x) + 0.2),
    (stax.Sigmoid_like(), lambda x: 0.5 * special.erf(x / 2.4020563531719796) + 0.5),
    (stax.Gelu(), lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2)))),
    (stax.Gelu(approximate=True), lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
    (stax.Sin(a=1.5, b=0.5, c=0.3), lambda x: 1.5 * np.sin(0.5 * x + 0.3)),
    (stax.Cos(), np.cos),
    (stax.Exp(a=0.5, b=0.2), lambda x: 0.5 * np.exp(0.2 * x)),
    (stax.Gaussian(2.0, -0.5), lambda x: 2.0 * np.exp(-0.5 * x**2)),
    (stax.Rbf(0.5), lambda x: np.sqrt(2) * np.sin(np.sqrt(1.0) * x + np.pi / 4)),
    (stax.Monomial(3), lambda x: x**3),
    (stax.RectifiedMonomial(2), lambda x: (x >= 0) * x**2),
    (stax.Polynomial([0.5, -1.0, 0.25]), lambda x: 0.5 - x + 0.25 * x**2),
    (stax.Hermite(3), lambda x: (x**3 - 3 * x) / math.sqrt(6)),
]


@pytest.mark.parametrize("layer, fn", NT_FUNCTIONS, ids=[repr(layer) for layer, _ in NT_FUNCTIONS])
def test_activation_is_neural_tangents_function(layer, fn):
    z = np.linspace(-3.1, 2.9, 41)
    got = layer.description.activation.numpy(z)
    np.testing.assert_allclose(got, fn(z), rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------- the description is a value
def test_network_unpacks_prints_parses_and_hashes():
    net = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1, W_std=1.5))
    init_fn, apply_fn, kernel_fn = net
    assert callable(init_fn) and callable(apply_fn) and callable(kernel_fn)
    text = repr(net)
    assert text == "serial(Dense(512, W_std=1.5, b_std=0.05), Relu(), Dense(1, W_std=1.5))"
    again = stax.parse("stax." + text.replace("Dense", "stax.Dense").replace("Relu", "stax.Relu"))
    assert again == net and hash(again) == hash(net) and len({net, again}) == 1
    assert "K" in net._repr_latex_()
    X = np.eye(3)[:2]
    assert kernel_fn(X, None, "ntk").shape == (2, 2)
    nngp, ntk = kernel_fn(X, None, ("nngp", "ntk"))
    ntk2, nngp2 = kernel_fn(X, None, ("ntk", "nngp"))
    np.testing.assert_array_equal(nngp, nngp2)
    np.testing.assert_array_equal(ntk, ntk2)


@pytest.mark.parametrize("text, message", [
    ("serial(Dense(8), Rleu())", "unknown layer 'Rleu'"),
    ("__import__('os').system('true')", "unknown layer"),
    ("serial(Dense(8), Relu()", "not valid Python syntax"),
    ("serial(Dense(8, W_std=x), Relu())", "only layer calls and literal numbers"),
    ("serial(Dense(0), Relu())", "out_dim must be an integer >= 1"),
    ("serial(Dense(8, parameterization='mean-field'))", "parameterization must be one of"),
    ("Activation('sqrt(x)')", "not defined for x < 0"),
])
def test_bad_architecture_text_is_one_clear_error(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        stax.parse(text)


def test_structural_mistakes_name_the_layer():
    X = np.ones((2, 3))
    with pytest.raises(ValueError, match="parallel.*has 2 branches but receives one input"):
        stax.serial(stax.Dense(4), stax.parallel(stax.Relu(), stax.Identity())).kernel_fn(X)
    with pytest.raises(ValueError, match="FanInSum.*needs a list"):
        stax.serial(stax.Dense(4), stax.FanInSum()).kernel_fn(X)
    with pytest.raises(ValueError, match="different widths"):
        stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(4), stax.Dense(5)), stax.FanInSum()).kernel_fn(X)
    with pytest.raises(ValueError, match="ends with a list of 2 outputs"):
        stax.serial(stax.Dense(4), stax.FanOut(2)).kernel_fn(X)


def test_apply_fn_with_inputs_of_another_width_names_the_mismatch():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(8, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(1))
    _, params = init_fn(0, (-1, 3))
    with pytest.raises(ValueError, match=r"receives inputs with 4 features but its parameters W have shape \(3, 8\)"):
        apply_fn(params, np.ones((2, 4)))
