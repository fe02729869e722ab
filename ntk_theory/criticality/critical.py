r"""Criticality: the initialisations (C_W, C_b) at which signals neither explode nor vanish with depth.

**Critical line** (chi_perp = 1 at the fixed point, the order-to-chaos transition of Poole et al. 2016
and Schoenholz et al. 2017), parameterised by the fixed point K* itself:

    C_W(K*) = 1 / <s'^2>_K*,        C_b(K*) = K* - <s^2>_K* / <s'^2>_K*        (kept where C_b >= 0)

**Critical point** (PDLT ch. 5: chi_parallel = chi_perp = 1): additionally d<s^2>/dK = <s'^2> at K*, i.e.

    F(K) = <z s s'>_K / K - <s'^2>_K = 0          (= <s s''>_K for smooth s)

solved for K* > 0 by bracketing on a log grid, then mpmath's secant method at ``dps`` digits, and
(C_W, C_b) from the critical line.  The universality classes (:mod:`.universality`) give exact points:
the scale-invariant class (ReLU: C_W = 2, C_b = 0, every K* critical) and the K* = 0 class (tanh: (1, 0);
erf: (pi/4, 0)).  GELU and SWISH have a_1 > 0 and critical points at K* > 0 with C_b > 0.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field

import mpmath
import numpy as np
import sympy as sp
from scipy import optimize

from ..docstrings import RETURNS_TEXT, filled

from .fixed_points import GRID, FixedPoint
from .moments import Moments
from .universality import Universality, universality


def critical_line(act, K_star) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(C_W, C_b, K*)`` on the chi_perp = 1 line for the given K* values (float64 arrays), C_b >= 0 only.

    Parameters
    ----------
    act : str, sympy.Expr, Activation or Moments
        The activation (library name, expression or activation object).
    K_star : float or array_like
        Fixed-point variances K* > 0.

    Returns
    -------
    C_W, C_b, K_star : numpy.ndarray
        The initialisations whose fixed point is K* with chi_perp = 1, and the K* kept (those with C_b >= 0).

    Raises
    ------
    ValueError
        If a K* is not > 0.

    Notes
    -----
    C_W(K*) = 1 / <s'^2>_K*, C_b(K*) = K* - <s^2>_K* / <s'^2>_K*, with <.>_K the Gaussian average over
    z ~ N(0, K) in float64 (module docstring).

    Examples
    --------
    ReLU: the line is (2, 0) at every K*.  tanh at K* = 1 against scipy quadrature of <sech^4> and <tanh^2>:

    >>> import numpy as np
    >>> from scipy import integrate
    >>> from ntk_theory.criticality import critical_line
    >>> critical_line("relu", [1.0])
    (array([2.]), array([0.]), array([1.]))
    >>> C_W, C_b, K = critical_line("tanh", [1.0])
    >>> def gauss(g):
    ...     return integrate.quad(lambda z: g(z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -np.inf, np.inf,
    ...                           epsabs=1e-14)[0]
    >>> ds2, s2 = gauss(lambda z: (1 - np.tanh(z) ** 2) ** 2), gauss(lambda z: np.tanh(z) ** 2)
    >>> bool(np.isclose(C_W[0], 1 / ds2, rtol=1e-10)), bool(np.isclose(C_b[0], 1 - s2 / ds2, rtol=1e-9))
    (True, True)
    """
    m = act if isinstance(act, Moments) else Moments(act)
    K = np.atleast_1d(np.asarray(K_star, dtype=float))
    s2, ds2 = np.array([m.f64(k)[:2] for k in K]).T
    C_W = 1.0 / ds2
    C_b = K - s2 / ds2
    keep = C_b >= -1e-12
    return C_W[keep], np.maximum(C_b[keep], 0.0), K[keep]


@dataclass(frozen=True)
class CriticalPoint:
    """chi_parallel = chi_perp = 1: (C_W, C_b, K*) as mpf at ``dps`` digits, exact SymPy values if known.

    Made by :func:`criticality`.

    Parameters
    ----------
    C_W, C_b : mpmath.mpf
        The critical variances (keyword-only, as all fields).
    K_star : mpmath.mpf or None
        The fixed point's variance (None: any K*, the scale-invariant class).
    source : str
        How the point was found.
    exact : tuple or None, default None
        ``(C_W, C_b)`` as SymPy numbers when the universality class gives them.
    dps : int, default 30
        The digits of the mpf values.

    Examples
    --------
    ReLU's critical point is (C_W, C_b) = (2, 0), exactly:

    >>> from ntk_theory.criticality import criticality
    >>> p = criticality("relu", dps=20).points[0]
    >>> p.exact, float(p.C_W), float(p.C_b)
    ((2, 0), 2.0, 0.0)
    """

    _: KW_ONLY
    C_W: object
    C_b: object
    K_star: object
    source: str
    exact: tuple | None = None  # (C_W, C_b) SymPy
    dps: int = 30

    def fixed_point(self) -> FixedPoint:
        """The point as a float64 :class:`~ntk_theory.criticality.FixedPoint` (chi_parallel = chi_perp = 1).

        Returns
        -------
        FixedPoint

        Examples
        --------
        tanh's critical point (C_W, C_b) = (1, 0) has K* = 0:

        >>> from ntk_theory.criticality import criticality
        >>> fp = criticality("tanh", dps=15).points[0].fixed_point()
        >>> fp.K_star, fp.C_W, fp.phase
        (0.0, 1.0, 'critical')
        """
        return FixedPoint(float(self.K_star), 1.0, 1.0, C_W=float(self.C_W), C_b=float(self.C_b))

    def __repr__(self) -> str:
        exact = f" = ({self.exact[0]}, {self.exact[1]}) exactly" if self.exact else ""
        n = min(self.dps, 20)
        return (f"CriticalPoint(C_W = {mpmath.nstr(self.C_W, n)}, C_b = {mpmath.nstr(self.C_b, n)}{exact}, "
                f"K* = {mpmath.nstr(self.K_star, n) if self.K_star is not None else 'any'}; {self.source})")


@dataclass
class Criticality:
    """An activation's universality class, critical points and a sample of its critical line ``(C_W, C_b, K*)``
    (:func:`critical_line`).

    Made by :func:`criticality`.

    Parameters
    ----------
    activation : str
        The activation's name.
    universality : Universality
        Its class (:func:`~ntk_theory.criticality.universality`).
    points : list of CriticalPoint
        The critical points with C_b >= 0.
    line : tuple of numpy.ndarray or None, default None
        ``(C_W, C_b, K*)`` along the critical line chi_perp(K*) = 1.

    Examples
    --------
    >>> from ntk_theory.criticality import criticality
    >>> c = criticality("relu", dps=20)
    >>> c.activation, c.universality.name, len(c.points)
    ('relu', 'scale-invariant', 1)
    """

    activation: str
    universality: Universality
    points: list
    line: tuple = field(repr=False, default=None)

    @filled(returns_text=RETURNS_TEXT)
    def text(self) -> str:
        """The class, its reason, the critical points and the sampled critical line, as plain text.

        %(returns_text)s
        >>> from ntk_theory.criticality import criticality
        >>> print(criticality("relu", dps=20).text().splitlines()[0])
        activation relu: universality class scale-invariant
        """
        u = self.universality
        out = [f"activation {self.activation}: universality class {u.name}", f"  {u.reason}"]
        if u.taylor is not None:
            out.append("  Taylor coefficients at 0: s(0), s'(0), s''(0), s'''(0) = " + ", ".join(map(str, u.taylor)))
        if not self.points:
            out.append("  no critical point (chi_parallel = chi_perp = 1) found with C_b >= 0")
        for p in self.points:
            out.append("  critical point: " + repr(p)[len("CriticalPoint("):-1])
        if self.line is not None and len(self.line[0]):
            out.append("  critical line chi_perp(K*) = 1, C_b >= 0:  K*  ->  (C_W, C_b)")
            for cw, cb, K in zip(*self.line):
                out.append(f"    K* = {K:10.4g}   C_W = {cw:.6g}   C_b = {cb:.6g}")
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.text()

    def _repr_latex_(self) -> str:
        rows = [rf"\text{{{self.activation}: {self.universality.name}}}"]
        for p in self.points:
            cw = sp.latex(p.exact[0]) if p.exact else mpmath.nstr(p.C_W, 12)
            cb = sp.latex(p.exact[1]) if p.exact else mpmath.nstr(p.C_b, 12)
            rows.append(rf"(C_W, C_b)_{{\rm crit}} = ({cw}, {cb})")
        return "$" + r",\quad ".join(rows) + "$"


def _solve_nonzero(m: Moments, dps: int, grid=GRID) -> list[CriticalPoint]:
    F = lambda K: (lambda v: v[2] - v[1])(m.f64(K))
    vals = np.array([F(K) for K in grid])
    out = []
    for i in np.nonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) < 0)[0]:
        K = optimize.brentq(F, grid[i], grid[i + 1], xtol=1e-14, rtol=1e-14)
        with mpmath.workdps(dps + 5):
            K = mpmath.findroot(lambda k: (lambda v: v[2] - v[1])(m.mp(k, dps + 5)), mpmath.mpf(K),
                                solver="secant", tol=mpmath.mpf(10) ** (-2 * dps))
            s2, ds2, _ = m.mp(K, dps + 5)
            C_W, C_b = 1 / ds2, K - s2 / ds2
            if C_b >= -mpmath.mpf(10) ** (-dps + 5):  # values keep the working precision
                out.append(CriticalPoint(C_W=C_W, C_b=C_b, K_star=K, source=f"chi_parallel = chi_perp = 1 solved at {dps} digits", dps=dps))
    return out


def criticality(act, dps: int = 30, line_K=np.geomspace(1e-2, 1e2, 9)) -> Criticality:
    """Universality class, critical points (exact where the class gives them, else mpmath at ``dps``
    digits) and the critical line sampled at ``line_K``.

    Parameters
    ----------
    act : str, sympy.Expr, Activation or Moments
        The activation (library name, expression or activation object).
    dps : int, default 30
        mpmath digits of the critical points found numerically.
    line_K : array_like, default ``np.geomspace(1e-2, 1e2, 9)``
        The K* at which the critical line is sampled.

    Returns
    -------
    Criticality
        ``universality`` (:class:`Universality`), ``points`` (a list of :class:`CriticalPoint`, each with
        (C_W, C_b, K*) as mpf and ``exact`` SymPy values when the class gives them) and ``line``
        (:func:`critical_line` at ``line_K``); ``text`` / ``print`` gives a report.

    Raises
    ------
    ValueError
        If the activation is unknown or cannot be evaluated.

    Notes
    -----
    Critical points satisfy chi_parallel = chi_perp = 1: F(K) = <z s s'>_K / K - <s'^2>_K = 0, bracketed on a
    log grid and refined by mpmath's secant method at ``dps`` digits (module docstring); the scale-invariant
    class (every K* critical) and the K* = 0 class have exact points.

    Examples
    --------
    tanh is in the K* = 0 class with the exact point (C_W, C_b) = (1, 0) = (1/tanh'(0)^2, 0):

    >>> from ntk_theory.criticality import criticality
    >>> r = criticality("tanh")
    >>> r.universality.name, r.points[0].exact
    ('K*=0', (1, 0))
    """
    m = Moments(act)
    u = universality(m.activation)
    points = []
    if u.name == "scale-invariant":
        points.append(CriticalPoint(C_W=mpmath.mpf(str(sp.N(u.C_W, dps + 5))), C_b=mpmath.mpf(sp.N(u.C_b, dps + 5)), K_star=None,
                                    source="scale-invariant class: chi_parallel = chi_perp = 1 at every K*",
                                    exact=(u.C_W, u.C_b), dps=dps))
        line = (np.full(len(line_K), float(u.C_W)), np.zeros(len(line_K)), np.asarray(line_K, dtype=float))
        return Criticality(m.activation.name, u, points, line)
    if u.name == "K*=0":
        with mpmath.workdps(dps + 5):
            points.append(CriticalPoint(C_W=mpmath.mpf(str(sp.N(u.C_W, dps + 5))), C_b=mpmath.mpf(0), K_star=mpmath.mpf(0),
                                        source=f"K*=0 class: C_W = 1/s'(0)^2, approached as K ~ 1/({-u.a1} l)",
                                        exact=(u.C_W, u.C_b), dps=dps))
    points.extend(_solve_nonzero(m, dps))
    return Criticality(m.activation.name, u, points, critical_line(m, line_K))
