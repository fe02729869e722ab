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
    """K* = C_b + C_W <s^2>_K* with chi_parallel, chi_perp, depth scales, stability and phase.

    Made by :func:`fixed_points` and :func:`at`.

    Parameters
    ----------
    K_star : float
        The fixed point's variance.
    chi_parallel, chi_perp : float
        d g / dK at K* (g(K) = C_b + C_W <s^2>_K) and C_W <s'^2>_K*.
    C_W, C_b : float
        The variances (keyword-only).

    Examples
    --------
    ReLU at C_W = 1, C_b = 0.3: K* = 0.3 / (1 - 1/2) = 0.6, chi = 1/2, depth scale -1 / log chi = 1/log 2:

    >>> import math
    >>> from ntk_theory.criticality import fixed_points
    >>> fp = fixed_points("relu", C_W=1.0, C_b=0.3)[0]
    >>> math.isclose(fp.K_star, 0.6, rel_tol=1e-14), math.isclose(fp.xi_perp, 1 / math.log(2), rel_tol=1e-12)
    (True, True)
    >>> fp.stable, fp.phase
    (True, 'ordered')
    """

    K_star: float
    chi_parallel: float
    chi_perp: float
    _: KW_ONLY
    C_W: float
    C_b: float

    @property
    def xi_parallel(self) -> float:
        """The depth scale of the approach to K*, -1 / log chi_parallel (inf at chi_parallel = 1, 0 at
        chi_parallel <= 0; negative where deviations grow, chi_parallel > 1).

        Examples
        --------
        >>> import math
        >>> from ntk_theory.criticality import FixedPoint
        >>> FixedPoint(1.0, math.exp(-0.25), 0.5, C_W=1.0, C_b=0.0).xi_parallel
        4.0
        """
        return _depth(self.chi_parallel)

    @property
    def xi_perp(self) -> float:
        """The depth scale of correlations, -1 / log chi_perp (inf at chi_perp = 1, 0 at chi_perp <= 0;
        negative in the chaotic phase, chi_perp > 1, where nearby inputs decorrelate over |xi_perp| layers).

        Examples
        --------
        >>> import math
        >>> from ntk_theory.criticality import FixedPoint
        >>> round(FixedPoint(1.0, 0.5, math.exp(-0.125), C_W=1.0, C_b=0.0).xi_perp, 12)
        8.0
        >>> round(FixedPoint(1.0, 0.5, math.exp(0.125), C_W=1.0, C_b=0.0).xi_perp, 12)
        -8.0
        """
        return _depth(self.chi_perp)

    @property
    def stable(self) -> bool:
        """Whether iterating the variance map approaches K*: chi_parallel <= 1 (+1e-12).

        Examples
        --------
        >>> from ntk_theory.criticality import FixedPoint
        >>> FixedPoint(1.0, 0.9, 1.0, C_W=1.0, C_b=0.0).stable, FixedPoint(1.0, 1.1, 1.0, C_W=1.0, C_b=0.0).stable
        (True, False)
        """
        return self.chi_parallel <= 1.0 + 1e-12

    @property
    def phase(self) -> str:
        """'ordered' (chi_perp < 1), 'chaotic' (> 1) or 'critical' (within 1e-9 of 1).

        Examples
        --------
        >>> from ntk_theory.criticality import FixedPoint
        >>> [FixedPoint(1.0, 0.5, c, C_W=1.0, C_b=0.0).phase for c in (0.5, 1.0, 2.0)]
        ['ordered', 'critical', 'chaotic']
        """
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

    Parameters
    ----------
    act : str, sympy.Expr, Activation or Moments
        The activation (library name, expression or activation object).
    C_W, C_b : float
        Weight and bias variances, >= 0 (keyword-only).
    dps : int or None, default None
        Refine each root to ``dps`` digits with mpmath (None: float64 by Brent's method).
    grid : array_like, default ``np.geomspace(1e-4, 1e4, 81)``
        The K scanned for sign changes of g(K) - K.

    Returns
    -------
    list of FixedPoint
        In increasing K*, each with chi_parallel, chi_perp, the depth scales, stability and phase.

    Raises
    ------
    ValueError
        When every K on the grid is a fixed point (the scale-invariant class at criticality: pass a K to
        :func:`at` instead), or a variance is negative.

    Notes
    -----
    Roots are found between consecutive grid points where g(K) - K changes sign (Brent's method), or at a
    grid point where it is exactly 0; chi_parallel = g'(K*),
    chi_perp = C_W <s'^2>_K* (module docstring).

    Examples
    --------
    ReLU: g(K) = C_b + C_W K / 2, so K* = C_b / (1 - C_W/2) and chi_parallel = chi_perp = C_W / 2:

    >>> from ntk_theory.criticality import fixed_points
    >>> fixed_points("relu", C_W=1.0, C_b=0.3)
    [FixedPoint(K* = 0.6: chi_parallel = 0.5, chi_perp = 0.5, xi_parallel = 1.443, xi_perp = 1.443, stable, ordered)]
    >>> fixed_points("relu", C_W=1.0, C_b=0.5)[0].K_star      # K* = 1 is a point of the default grid
    1.0
    """
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
    f = lambda K: C_b + C_W * m.f64(K)[0] - K
    roots = [optimize.brentq(f, grid[i], grid[i + 1], xtol=1e-15, rtol=4 * np.finfo(float).eps)
             for i in np.nonzero(np.sign(h[:-1]) * np.sign(h[1:]) < 0)[0]]
    roots += [float(grid[i]) for i in np.nonzero(h == 0)[0]]  # a root on a grid point: no sign change across it
    for K in sorted(roots):
        if dps:
            with mpmath.workdps(dps):
                K = mpmath.findroot(lambda k: C_b + C_W * m.mp(k, dps)[0] - k, mpmath.mpf(K), solver="secant",
                                    tol=mpmath.mpf(10) ** (-dps + 3))
        out.append(at(m, K, C_W=C_W, C_b=C_b, dps=dps))
    return out


def at(act, K, *, C_W: float, C_b: float, dps: int | None = None) -> FixedPoint:
    """The susceptibilities at variance K (K -> 0 as the limit from K = 1e-300 scaled moments).

    Parameters
    ----------
    act : str, sympy.Expr, Activation or Moments
        The activation (library name, expression or activation object).
    K : float
        The variance, >= 0 (whether or not it is a fixed point).
    C_W, C_b : float
        Weight and bias variances (keyword-only).
    dps : int or None, default None
        Evaluate the moments with mpmath at ``dps`` digits (None: float64).

    Returns
    -------
    FixedPoint
        ``K_star = K``, chi_parallel = C_W d<s^2>/dK and chi_perp = C_W <s'^2> at K.

    Raises
    ------
    ValueError
        If K or a variance is negative.

    Notes
    -----
    The depth scales are xi = -1 / ln chi (module docstring).

    Examples
    --------
    tanh at K = 1, C_W = 1: chi_perp = <sech^4 z> over z ~ N(0, 1), against scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate
    >>> from ntk_theory.criticality import at
    >>> p = at("tanh", 1.0, C_W=1.0, C_b=0.0)
    >>> def sech4(z):
    ...     return (1 - np.tanh(z) ** 2) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    >>> ref = integrate.quad(sech4, -np.inf, np.inf, epsabs=1e-14)[0]
    >>> bool(np.isclose(p.chi_perp, ref, rtol=1e-10)), p.phase
    (True, 'ordered')
    """
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
    """K(1) = K0, K(l+1) = C_b + C_W <s^2>_K(l): the kernels of ``depth`` layers (float64).

    Parameters
    ----------
    act : str, sympy.Expr, Activation or Moments
        The activation (library name, expression or activation object).
    K0 : float
        K(1), > 0.
    C_W, C_b : float
        Weight and bias variances (keyword-only).
    depth : int
        The number of layers.

    Returns
    -------
    numpy.ndarray
        (K(1), ..., K(depth)).

    Raises
    ------
    ValueError
        If an argument is out of range.

    Notes
    -----
    The single-input map of the module docstring, <s^2>_K the Gaussian average over z ~ N(0, K).

    Examples
    --------
    ReLU with C_W = 1, C_b = 0.5: K' = 0.5 + K / 2 approaches K* = 1 geometrically:

    >>> from ntk_theory.criticality import iterate
    >>> iterate("relu", 3.0, C_W=1.0, C_b=0.5, depth=4)
    array([3.  , 2.  , 1.5 , 1.25])
    """
    m = act if isinstance(act, Moments) else Moments(act)
    K = [float(K0)]
    for _ in range(depth - 1):
        K.append(C_b + C_W * m.f64(K[-1])[0] if K[-1] > 0 else C_b + C_W * float(m.activation.numpy(np.array(0.0))) ** 2)
    return np.array(K)
