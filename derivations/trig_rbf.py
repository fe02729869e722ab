"""Sine, cosine and RBF kernels: Gaussian integrals of exponentials (completing the square).

Published: E[sin u sin v] = exp(-(k11 + k22)/2) sinh(k12), E[cos u cos v] = exp(-(k11 + k22)/2) cosh(k12)
(e.g. Pearce et al. 2019, "Expressive priors in Bayesian neural networks", Table 1); the activation
sqrt(2) sin(sqrt(2 gamma) x + pi/4) has kernel exp(-gamma (k11 + k22 - 2 k12)), the RBF kernel of the
preactivations (Rahimi & Recht 2007 random Fourier features; neural-tangents' stax.Rbf).
Run: python derivations/trig_rbf.py
"""

import sys

import sympy as sp

from _common import compare
from ntk_theory.gaussian import k11, k12, k22

ok = compare("sine kernel", "sin", sp.exp(-(k11 + k22) / 2) * sp.sinh(k12), "Pearce et al. 2019, Table 1")
ok &= compare("cosine kernel", "cos", sp.exp(-(k11 + k22) / 2) * sp.cosh(k12), "Pearce et al. 2019, Table 1")
ok &= compare("RBF activation, gamma = 1/2", "rbf(1/2)", sp.exp(-(k11 + k22 - 2 * k12) / 2), "Rahimi & Recht 2007")
sys.exit(0 if ok else 1)
