"""The GELU kernel x Phi(x), derived by Price's theorem, the heat equation and completing the square.

Published: Tsuchida, Pearce, van der Heide, Roosta, Gallagher, "Avoiding kernel fixed points:
computing with ELU and GELU infinite networks" (arXiv:2002.08517), as implemented in
neural-tangents' stax.Gelu.  With P1 = (1 + k11)(1 + k22) and D = sqrt(P1 - k12^2):
    E[gelu(u) gelu(v)] = k12/4 + [ (k12^2 + k11 k22 D^2) / (P1 D) + k12 arcsin(k12 / sqrt(P1)) ] / (2 pi)
and on the diagonal E[gelu(u)^2] = k/4 + k [ k / ((k+1) sqrt(1+2k)) + arctan(k / sqrt(1+2k)) / 2 ] / pi.
Run: python derivations/gelu.py
"""

import sys

import sympy as sp

from _common import compare
from ntk_theory.gaussian import expectation, k, k11, k12, k22

P1 = (1 + k11) * (1 + k22)
D = sp.sqrt(P1 - k12**2)
published = k12 / 4 + ((k12**2 + k11 * k22 * D**2) / (P1 * D) + k12 * sp.asin(k12 / sp.sqrt(P1))) / (2 * sp.pi)
ok = compare("GELU kernel", "gelu", published, "Tsuchida et al., arXiv:2002.08517; neural-tangents stax.Gelu")

diag = expectation("gelu").diagonal.expr
published_diag = k / 4 + k * (k / ((k + 1) * sp.sqrt(1 + 2 * k)) + sp.atan(k / sp.sqrt(1 + 2 * k)) / 2) / sp.pi
worst = max(abs(float(sp.N((diag - published_diag).subs(k, v), 40))) for v in (sp.Rational(1, 10), 1, 7))
print(f"diagonal: derived {sp.sstr(diag)}\n          published {sp.sstr(published_diag)}\n          max difference {worst:.1e}")
ok &= worst < 1e-35
sys.exit(0 if ok else 1)
