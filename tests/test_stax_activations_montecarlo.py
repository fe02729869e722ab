"""The infinite-width NNGP and NTK of ``serial(Dense, ACT, Dense, ACT, Dense)`` (ntk_theory.recursions.graph.kernel,
the code under test) for every elementwise stax layer not covered by tests/test_stax_montecarlo.py, against the Monte
Carlo of the reference network (ntk_theory.montecarlo.graph via ntk_theory.validation.check_architecture, the judge).

Judge: 4000 networks at each of the widths 64, 128, 256, three inputs; per entry the deviations
(E_n - k_n) / sqrt(k_aa k_bb) are fitted as c0 + c1/n by weighted least squares with the Monte Carlo standard errors
(jackknife over 32 batches) and |c0| < 4 SE(c0) is required, i.e. the comparison is 1/n-extrapolated, not at one
width, with SE(c0) < 0.05 (relative to sqrt(k_aa k_bb)) so that the check has power (measured: 2e-4 .. 3e-2).  A NaN, zero or rounding-level standard error fails, except where the quantity is the same in every network
(Sign: the network's gradient is 0 through the sign, so the NTK diagonal is the readout's C_b + C_W |sign z|^2 / n
= C_b + C_W exactly); those entries are compared with that closed form instead.

The reference network evaluates each layer's activation from its SymPy expression, so the activations themselves
are judged separately: their NumPy values and derivatives against neural-tangents 0.6.5's definitions (jax.nn's for
Elu, Selu, Softplus, Swish, which neural-tangents lacks) written out by hand below, and central finite differences.
"""

import math

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.validation import check_architecture

X = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.4], [-0.7, 0.5, 0.9]])
WIDTHS = (64, 128, 256)
SAMPLES = 4000
C = {"W_std": 1.3, "b_std": 0.2}
#: smaller weights where the second layer's pre-activations would make the Monte Carlo heavy-tailed (its relative
#: SE(c0) reaches 1e10 for Exp and 1.4 for Hermite(3) at W_std = 1.3)
W_STD = {"Exp()": 0.6, "Hermite(3)": 0.8}
#: the largest relative SE(c0) accepted: a check without the power to see a 5% error fails
MAX_SE = 0.05

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _erf(v):
    return np.vectorize(math.erf)(v)


def _hermite3(v):  # He_3 / sqrt(3!), unit norm under N(0, 1)
    return (v**3 - 3 * v) / math.sqrt(6)


#: stax expression -> the activation written out from neural-tangents' (or jax.nn's) definition
ACTIVATIONS = {
    "LeakyRelu(0.1)": lambda v: np.where(v < 0, 0.1 * v, v),
    "ABRelu(-0.3, 0.8)": lambda v: -0.3 * np.minimum(v, 0) + 0.8 * np.maximum(v, 0),
    "Abs()": np.abs,
    "Sign()": np.sign,
    "Sin(a=1.0, b=1.2, c=0.3)": lambda v: np.sin(1.2 * v + 0.3),
    "Cos()": lambda v: np.sin(v + np.pi / 2),
    "Exp()": np.exp,
    "Gaussian()": lambda v: np.exp(-(v**2)),
    "Rbf()": lambda v: np.sqrt(2) * np.sin(np.sqrt(2) * v + np.pi / 4),
    "Monomial(2)": lambda v: v**2,
    "RectifiedMonomial(2)": lambda v: (v >= 0) * v**2,
    "Polynomial([0.1, 1.0, 0.5])": lambda v: 0.1 + v + 0.5 * v**2,
    "Hermite(3)": _hermite3,
    "Sigmoid_like()": lambda v: 0.5 * _erf(v / 2.4020563531719796) + 0.5,
    "Elu(alpha=1.5)": lambda v: np.where(v > 0, v, 1.5 * np.expm1(v)),
    "Selu()": lambda v: _SELU_SCALE * np.where(v > 0, v, _SELU_ALPHA * np.expm1(v)),
    "Softplus()": lambda v: np.logaddexp(v, 0.0),
    "Swish()": lambda v: v / (1 + np.exp(-v)),
}


def _layer(spec):
    return stax.parse(spec)


@pytest.mark.parametrize("spec", sorted(ACTIVATIONS))
def test_reference_activation_is_neural_tangents_definition(spec):
    act = _layer(spec).description.activation
    v = np.linspace(-3.05, 2.95, 61)  # 0.05 away from the kinks at 0
    assert np.allclose(act.numpy(v), ACTIVATIONS[spec](v), rtol=1e-13, atol=1e-13)
    h = 1e-6
    fd = (ACTIVATIONS[spec](v + h) - ACTIVATIONS[spec](v - h)) / (2 * h)
    assert np.allclose(act.numpy_derivative(v), fd, rtol=1e-7, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("spec", sorted(ACTIVATIONS))
def test_kernel_agrees_with_monte_carlo(spec):
    act, c = _layer(spec), {**C, "W_std": W_STD.get(spec, C["W_std"])}
    net = stax.serial(stax.Dense(64, **c), act, stax.Dense(64, **c), act, stax.Dense(1, **c))
    report = check_architecture(net, X, WIDTHS, SAMPLES, workers=2, progress=False)
    exact = [r for r in report.rows if r.rounding_level]
    if spec == "Sign()":
        # deterministic NTK diagonal: C_b + C_W in every network and in the kernel
        assert {(r.quantity, r.entry) for r in exact} == {("E[Theta]", (a, a)) for a in range(len(X))}
        for r in exact:
            ref = c["b_std"] ** 2 + c["W_std"] ** 2
            assert all(abs(v - ref) < 1e-12 for _, v, _ in r.estimates), r
            assert abs(r.prediction - ref) < 1e-12, r
    else:
        assert not exact, report.table()
    rest = [r for r in report.rows if not r.rounding_level]
    bad = [r for r in rest if not (np.isfinite(r.z) and abs(r.z) < 4.0)]
    assert not bad, report.table()
    assert all(e > 0 and np.isfinite(e) for r in rest for _, _, e in r.estimates), report.table()
    assert max(r.r_inf_se for r in rest) < MAX_SE, report.table()
