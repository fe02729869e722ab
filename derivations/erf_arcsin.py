"""The erf (arcsin) kernel, derived by Price's theorem from the Gaussian integral of erf' erf'.

Published: Williams 1997, "Computing with infinite networks", eq. (11):
    E[erf(u) erf(v)] = (2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))).
Run: python derivations/erf_arcsin.py
"""

import sys

import sympy as sp

from _common import compare
from ntk_theory.gaussian import k11, k12, k22

published = 2 / sp.pi * sp.asin(2 * k12 / sp.sqrt((1 + 2 * k11) * (1 + 2 * k22)))
ok = compare("erf kernel", "erf", published, "Williams 1997, eq. (11)")
published_dot = 4 / sp.pi / sp.sqrt((1 + 2 * k11) * (1 + 2 * k22) - 4 * k12**2)
ok &= compare("erf derivative kernel E[erf'(u) erf'(v)]", "erf", published_dot, "Williams 1997; derivative of eq. (11) in k12", derivative=1)
sys.exit(0 if ok else 1)
