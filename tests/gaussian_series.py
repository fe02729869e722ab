"""Small-variance series of Gaussian averages, for the tests that derive depth asymptotics by hand."""

import sympy as sp


def small_k_average(expr, z, K, order=1):
    """<g(z)>, z ~ N(0, K), as a series in K to O(K^order): the Taylor series of g = ``expr`` in ``z`` term by
    term, with the Gaussian moments E[z^(2m)] = (2m - 1)!! K^m."""
    ser = sp.series(expr, z, 0, 2 * order + 2).removeO()
    poly = sp.Poly(sp.expand(ser), z)
    out = 0
    for (p,), c in poly.terms():
        if p % 2 == 0:
            out += c * sp.factorial2(p - 1) * K**(p // 2)
    return sp.expand(out)
