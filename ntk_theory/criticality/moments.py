r"""The one-input Gaussian moments that criticality needs, in float64 (scipy) and at any mpmath precision.

For z ~ N(0, K) and an activation s (a.e. derivative s'):

    <s^2>_K,    <s'^2>_K,    d<s^2>_K/dK = <z s(z) s'(z)>_K / K

(the last by differentiating <s(sqrt(K) u)^2> under the integral, valid for continuous s; for smooth s
it equals <s'^2 + s s''>_K, the heat equation).  Integrals are over u ~ N(0, 1) with z = sqrt(K) u,
split at the activation's kinks.  float64: scipy's adaptive quadrature on |u| <= 38 (the Gaussian
weight is below 1e-313 beyond), split at 0, the kinks and z = +-1/2 .. 8; the panels' error estimates
are added, and an IntegrationWarning is issued only when their sum exceeds both 1e-10 of the value and
1e-14 (each panel asks for 1e-15 absolute or 1e-13 relative); a panel that scipy flags on its own, such
as a tail where the integrand is ~1e-15 everywhere, is judged by that total.  mpmath: composite Gauss-Legendre (24 nodes per panel, panels of width min(1, 2/sqrt(K)) so that
complex singularities of tanh/sigmoid-like activations, at distance ~pi/sqrt(K) from the real u axis,
stay about two half-widths away) on |u| <= sqrt(2 (dps + 5) ln 10), all three moments from the same
nodes; checked against mpmath's tanh-sinh quadrature in the tests.  (The gaussian module's closed forms
of <s^2>_K for GELU and erf come from the two-variable derivation, which takes ~1 minute for GELU; the
quadrature is faster here.)
"""

from __future__ import annotations

import functools
import warnings

import mpmath
import numpy as np
from scipy import integrate

from ..activations import Activation, activation


class Moments:
    """<s^2>, <s'^2> and d<s^2>/dK of one activation at a variance K."""

    def __init__(self, act):
        self.activation: Activation = activation(act)
        if any(_jumps(self.activation, c) for c in self.activation.kinks):
            raise ValueError(f"{self.activation.name} is discontinuous: the single-input kernel map has no "
                             f"derivative chi_parallel at its jumps; criticality needs a continuous activation")
        self._s, self._ds = self.activation.numpy, self.activation.numpy_derivative

    def _points(self, K: float):
        """Break points in u: 0, the kinks, and z = +-1/2, 1, 2, 4, 8 (the activation's own scale, a narrow
        feature in u when K is large)."""
        r = np.sqrt(K)
        scale = (0.5, 1.0, 2.0, 4.0, 8.0)
        return sorted({0.0, *(c / r for c in self.activation.kinks), *(z / r for z in scale), *(-z / r for z in scale)})

    def f64(self, K: float) -> tuple[float, float, float]:
        """(<s^2>, <s'^2>, d<s^2>/dK) at variance K > 0, float64 (scipy quad split at kinks)."""
        K = float(K)
        if not K > 0:
            raise ValueError(f"the variance K must be > 0; got {K}")
        r, s, ds = np.sqrt(K), self._s, self._ds
        phi = lambda u: np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
        cuts = [-_U64, *[p for p in self._points(K) if abs(p) < _U64], _U64]

        def E(h):
            total = err = 0.0
            for a, b in zip(cuts[:-1], cuts[1:]):
                value, e, *rest = integrate.quad(lambda u: h(r * u) * phi(u), a, b, epsabs=1e-15, epsrel=1e-13,
                                                 limit=200, full_output=1)
                total, err = total + value, err + e
            if err > max(_ERROR_LIMIT * abs(total), _ERROR_FLOOR):
                warnings.warn(f"Gaussian average at K = {K:g}: quadrature error estimate {err:.1e} for the value "
                              f"{total:.6g}", integrate.IntegrationWarning, stacklevel=3)
            return total

        with np.errstate(over="ignore", invalid="ignore"):
            s2 = E(lambda z: s(z) ** 2)
            ds2 = E(lambda z: ds(z) ** 2)
            d = E(lambda z: z * s(z) * ds(z)) / K
        return s2, ds2, d

    @functools.cached_property
    def _mp_fns(self):
        return self.activation.mpmath, self.activation.mpmath_derivative

    def mp(self, K, dps: int = 30) -> tuple:
        """(<s^2>, <s'^2>, d<s^2>/dK) as mpf at about ``dps`` digits (composite Gauss-Legendre), rounded to
        the caller's mpmath precision (use ``mpmath.workdps``)."""
        s, ds = self._mp_fns
        with mpmath.workdps(dps + 10):
            K = mpmath.mpf(K)
            if not K > 0:
                raise ValueError(f"the variance K must be > 0; got {K}")
            r = mpmath.sqrt(K)
            U = mpmath.sqrt(2 * (dps + 5) * mpmath.log(10))
            h = min(mpmath.mpf(1), 2 / r)
            m = int(mpmath.ceil(U / h))
            edges = {mpmath.mpf(i) * h for i in range(-m, m + 1)}
            edges |= {mpmath.mpf(c) / r for c in self.activation.kinks if abs(c) / r < U}
            edges = sorted(edges)
            nodes = _gauss_legendre(mpmath.mp.prec)
            acc = [mpmath.mpf(0)] * 3
            for a, b in zip(edges[:-1], edges[1:]):
                mid, half = (a + b) / 2, (b - a) / 2
                for xk, wk in nodes:
                    u = mid + half * xk
                    z = r * u
                    sv, dv = s(z), ds(z)
                    w = wk * half * mpmath.exp(-u * u / 2)
                    acc[0] += w * sv * sv
                    acc[1] += w * dv * dv
                    acc[2] += w * z * sv * dv
            norm = 1 / mpmath.sqrt(2 * mpmath.pi)
            out = (acc[0] * norm, acc[1] * norm, acc[2] * norm / K)
        return tuple(+v for v in out)

    def __repr__(self) -> str:
        return f"Moments({self.activation.name}: <s^2>, <s'^2>, d<s^2>/dK)"


_U64 = 38.0
#: relative error estimate of a float64 average above which a warning is issued (scipy's own warnings on
#: single panels, e.g. a tail panel whose integrand is ~1e-15 everywhere, are judged by the total instead)
_ERROR_LIMIT = 1e-10
#: absolute error estimate below which no warning is issued (each panel asks for 1e-15 absolute)
_ERROR_FLOOR = 1e-14


@functools.lru_cache(maxsize=8)
def _gauss_legendre(prec: int):
    """The 24 Gauss-Legendre nodes on [-1, 1] as (x, weight) pairs."""
    from mpmath.calculus.quadrature import GaussLegendre

    return GaussLegendre(mpmath.mp).calc_nodes(4, prec)


def _jumps(act: Activation, c: float) -> bool:
    f = act.numpy
    eps = 1e-9 * max(1.0, abs(c))
    return abs(float(f(np.array(c + eps))) - float(f(np.array(c - eps)))) > 1e-6
