r"""Fixed points of the single-input kernel map and the susceptibilities there (PDLT ch. 5; Poole et al.
2016; Schoenholz et al. 2017).

For one input, the NNGP kernel of layer l+1 follows the map (PDLT conventions, z ~ N(0, K))

    K' = g(K) = C_b + C_W <s(z)^2>_K

A fixed point K* = g(K*) has the parallel and perpendicular susceptibilities

    chi_parallel = g'(K*) = C_W d<s^2>_K/dK |_K*       (deviations of K from K*: delta K' = chi_par delta K)
    chi_perp     = C_W <s'(z)^2>_K*                     (nearby inputs: their distance is multiplied by it;
                                                         Poole's chi_1, and the NTK's per-layer factor)

and the depth scales xi = -1 / ln chi (Schoenholz et al. 2017: xi_q for chi_parallel, xi_c for chi_perp at
the correlation-one fixed point); a chi > 1 gives the growth scale 1/ln chi instead (reported negative).
K* is stable for chi_parallel < 1.  Phase: ordered (chi_perp < 1: nearby inputs converge), chaotic
(chi_perp > 1: they separate), critical (chi_perp = 1).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import mpmath
import numpy as np
from scipy import optimize

from .. import _checks
from .moments import Moments


@dataclass(frozen=True)
class FixedPoint:
    """K* = C_b + C_W <s^2>_K* with chi_parallel, chi_perp, depth scales, stability and phase."""

    K_star: float
    chi_parallel: float
    chi_perp: float
    _: KW_ONLY
    C_W: float
    C_b: float

    @property
    def xi_parallel(self) -> float:
        return _depth(self.chi_parallel)

    @property
    def xi_perp(self) -> float:
        return _depth(self.chi_perp)

    @property
    def stable(self) -> bool:
        return self.chi_parallel <= 1.0 + 1e-12

    @property
    def phase(self) -> str:
        if abs(self.chi_perp - 1.0) < 1e-9:
            return "critical"
        return "ordered" if self.chi_perp < 1.0 else "chaotic"

    def __repr__(self) -> str:
        return (f"FixedPoint(K* = {self.K_star:.10g}: chi_parallel = {self.chi_parallel:.10g}, chi_perp = "
                f"{self.chi_perp:.10g}, xi_parallel = {self.xi_parallel:.4g}, xi_perp = {self.xi_perp:.4g}, "
                f"{'stable' if self.stable else 'unstable'}, {self.phase})")


def _depth(chi: float) -> float:
    if chi <= 0:
        return 0.0
    if abs(chi - 1.0) < 1e-15:
        return math.inf
    return -1.0 / math.log(chi)


GRID = np.geomspace(1e-4, 1e4, 81)


def fixed_points(act, *, C_W: float, C_b: float, dps: int | None = None, grid=GRID) -> list[FixedPoint]:
    """All fixed points K* >= 0 of K' = C_b + C_W <s^2>_K on ``grid``'s range (default 1e-4 .. 1e4),
    K* = 0 included when C_b = 0 and s(0) = 0; refined to ``dps`` digits with mpmath if given.

    Raises ValueError when every K on the grid is a fixed point (the scale-invariant class at
    criticality: pass a K to :func:`at` instead)."""
    C_W, C_b = _checks.variance("C_W", C_W), _checks.variance("C_b", C_b)
    m = act if isinstance(act, Moments) else Moments(act)
    values = np.array([m.f64(K)[0] for K in grid])
    h = C_b + C_W * values - grid
    if np.all(np.abs(h) <= 1e-10 * grid):
        raise ValueError(f"every K in [{grid[0]:g}, {grid[-1]:g}] is a fixed point of {m.activation.name} at "
                         f"C_b = {C_b:g}, C_W = {C_W:g} (scale-invariant criticality): choose K* and use at()")
    out = []
    s0 = float(m.activation.numpy(np.array(0.0)))
    if C_b == 0 and s0 == 0:
        out.append(at(m, 0.0, C_W=C_W, C_b=C_b))
    for i in np.nonzero(np.sign(h[:-1]) * np.sign(h[1:]) < 0)[0]:
        f = lambda K: C_b + C_W * m.f64(K)[0] - K
        K = optimize.brentq(f, grid[i], grid[i + 1], xtol=1e-15, rtol=4 * np.finfo(float).eps)
        if dps:
            with mpmath.workdps(dps):
                K = mpmath.findroot(lambda k: C_b + C_W * m.mp(k, dps)[0] - k, mpmath.mpf(K), solver="secant",
                                    tol=mpmath.mpf(10) ** (-dps + 3))
        out.append(at(m, K, C_W=C_W, C_b=C_b, dps=dps))
    return out


def at(act, K, *, C_W: float, C_b: float, dps: int | None = None) -> FixedPoint:
    """The susceptibilities at variance K (K -> 0 as the limit from K = 1e-300 scaled moments)."""
    m = act if isinstance(act, Moments) else Moments(act)
    if float(K) == 0.0:
        _, ds2, d = m.f64(1e-12)
        return FixedPoint(0.0, C_W * d, C_W * ds2, C_W=C_W, C_b=C_b)
    if dps:
        with mpmath.workdps(dps):
            s2, ds2, d = m.mp(K, dps)
            return FixedPoint(float(K), float(C_W * d), float(C_W * ds2), C_W=C_W, C_b=C_b)
    s2, ds2, d = m.f64(float(K))
    return FixedPoint(float(K), C_W * d, C_W * ds2, C_W=C_W, C_b=C_b)


def iterate(act, K0: float, *, C_W: float, C_b: float, depth: int) -> np.ndarray:
    """K(1) = K0, K(l+1) = C_b + C_W <s^2>_K(l): the kernels of ``depth`` layers (float64)."""
    m = act if isinstance(act, Moments) else Moments(act)
    K = [float(K0)]
    for _ in range(depth - 1):
        K.append(C_b + C_W * m.f64(K[-1])[0] if K[-1] > 0 else C_b + C_W * float(m.activation.numpy(np.array(0.0))) ** 2)
    return np.array(K)
