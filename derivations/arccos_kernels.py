"""Arc-cosine kernels of order 0, 1, 2 (step, ReLU, rectified square) derived by Price's theorem.

Published: Cho & Saul 2009, "Kernel methods for deep learning", eq. (1)-(3):
    E[theta(u)^n u^n theta(v) v^n] = (k11 k22)^(n/2) J_n(t) / (2 pi),  t = arccos(rho),
    J_0 = pi - t,  J_1 = sin t + (pi - t) cos t,  J_2 = 3 sin t cos t + (pi - t)(1 + 2 cos^2 t).
Run: python derivations/arccos_kernels.py
"""

import sys

import sympy as sp

from _common import compare, theta
from ntk_theory.gaussian import k11, k22

t = theta()
J = {
    0: sp.pi - t,
    1: sp.sin(t) + (sp.pi - t) * sp.cos(t),
    2: 3 * sp.sin(t) * sp.cos(t) + (sp.pi - t) * (1 + 2 * sp.cos(t) ** 2),
}
acts = {0: "step", 1: "relu", 2: "relu_power(2)"}
ok = all(
    compare(f"arc-cosine kernel of order {n} ({acts[n]})", acts[n], (k11 * k22) ** sp.Rational(n, 2) * J[n] / (2 * sp.pi),
            "Cho & Saul 2009, eq. (1)-(3)")
    for n in (0, 1, 2)
)
sys.exit(0 if ok else 1)
