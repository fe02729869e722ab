"""The symbols of Gaussian expectations: (u, v) ~ N(0, [[k11, k12], [k12, k22]]), one variable u ~ N(0, k)."""

import sympy as sp

k11, k22 = sp.symbols("k11 k22", positive=True)
k12 = sp.Symbol("k12", real=True)
k = sp.Symbol("k", positive=True)
#: Price's theorem integrates in the covariance; this is the integration variable.
t = sp.Symbol("t", real=True)

SWAP = {k11: k22, k22: k11}
