r"""The ddNTK's Dirac terms at the kinks of piecewise-linear activations diverge: kink_terms=True is refused.

At coincident inputs the ddNTKs hold two Dirac terms of one neuron: U_aacd = C_W^2 <s''_a s''_a s'_c s'_d> Th^3
(s''(z)^2 = (b - a)^2 delta(z)^2) and, in R, <s'''_a s'_a s'_c s'_d> = <(s'^2)''' ...>/2 - 3 <s''_a s''_a ...>
(Leibniz).  Judge, by hand: for the smooth family s_beta(x) = x (1 + erf(beta x)) / 2 -> relu, s_beta'' =
beta g(beta x) with g(t) = (2 - 2 t^2) exp(-t^2) / sqrt(pi) and s_beta' = S(beta x), S(t) = (1 + erf t) / 2 +
t exp(-t^2) / sqrt(pi), so at one input <s''^2 s'^2> = beta phi_K(0) int g^2 S^2 dt + O(1): layer 2's
U = C_W^2 Th^3 <s''^2 s'^2> grows like beta with that slope (the integral by scipy here), R / U -> -3 (the
remaining parts of R have finite limits, 0 for relu at one input), while the entries at distinct inputs
(delta(z_a) delta(z_b), a != b) converge.  The smooth averages come from the smooth route
(ddntk_second_layer, the compiled four-point integrator), independent of the hand constant.
"""

import math

import numpy as np
import pytest
from scipy import integrate

from ntk_theory.finite_width import FiniteWidthRecursion


def _family(beta, depth=1):
    return FiniteWidthRecursion(f"x*(1 + erf({beta}*x))/2", depth, C_W=2.0, C_b=0.0)


def test_relu_kink_terms_refused_as_divergent():
    with pytest.raises(ValueError, match="diverge"):
        FiniteWidthRecursion("relu", 2, C_W=2.0).ddntk(G0=0.5)


def test_smooth_limit_diverges_like_beta_at_one_input():
    """Layer 2, one input (G0 = 1, C_W = 2, C_b = 0: K = Th = 2): U / beta at beta = 16, 32 against the hand slope
    C_W^2 Th^3 phi_K(0) int g^2 S^2 (to 1%), U(32) / U(16) = 2 (to 1%), R / U = -3 (to 1%)."""
    def profile(t):  # (g(t) S(t))^2: beta^-1 s''^2 s'^2 at x = t / beta
        g = (2 - 2 * t * t) * math.exp(-t * t) / math.sqrt(math.pi)
        S = (1 + math.erf(t)) / 2 + t * math.exp(-t * t) / math.sqrt(math.pi)
        return (g * S) ** 2

    c = integrate.quad(profile, -12, 12, limit=200, epsabs=1e-13)[0]
    slope = 4.0 * 8.0 * c / math.sqrt(2 * math.pi * 2.0)
    st = {beta: _family(beta).ddntk_second_layer(np.array([[1.0]])) for beta in (16, 32)}
    U = {beta: float(s.U[0, 0, 0, 0]) for beta, s in st.items()}
    for beta, s in st.items():
        assert U[beta] / beta == pytest.approx(slope, rel=1e-2)
        assert float(s.R[0, 0, 0, 0]) / U[beta] == pytest.approx(-3.0, rel=1e-2)
    assert U[32] / U[16] == pytest.approx(2.0, rel=1e-2)


def test_distinct_inputs_converge_coincident_ones_diverge():
    """Two inputs: U_0101 (delta(z_0) delta(z_1) at distinct variables) changes by < 2% from beta = 16 to 32, while
    U_0011 (two Dirac terms on z_0) doubles."""
    X = np.array([[1.0, 0.3], [0.2, 0.9]])
    U16, U32 = (_family(beta).ddntk_second_layer(X).U for beta in (16, 32))
    assert U32[0, 1, 0, 1] == pytest.approx(U16[0, 1, 0, 1], rel=2e-2)
    assert U32[0, 0, 1, 1] / U16[0, 0, 1, 1] == pytest.approx(2.0, rel=2e-2)
