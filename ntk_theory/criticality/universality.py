r"""Universality classes of criticality, decided symbolically (PDLT ch. 5).

**Scale-invariant class**: s(x) = a_+ x for x > 0 and a_- x for x < 0 (linear, ReLU, leaky ReLU, abs).
Then <s^2>_K = A K and <s'^2>_K = A with A = (a_+^2 + a_-^2)/2, so chi_parallel = chi_perp = C_W A at every
K: criticality is C_b = 0, C_W = 1/A exactly (ReLU: 2), where every K is a fixed point.

**K* = 0 class**: s(0) = 0, s'(0) = sigma_1 != 0, s smooth at 0.  With s = sigma_1 x + sigma_2 x^2/2 +
sigma_3 x^3/6 + ..., the kernel map at C_b = 0, C_W = 1/sigma_1^2 is

    K' = K + a_1 K^2 + O(K^3),    a_1 = sigma_3/sigma_1 + (3/4) (sigma_2/sigma_1)^2     (PDLT sec. 5.3)

so K* = 0 is a critical fixed point (chi_parallel = chi_perp = 1 there) approached as K ~ 1/(-a_1 l)
when a_1 < 0: tanh and erf (a_1 = -2), sin (a_1 = -1).  The critical point is C_b = 0,
C_W = 1/sigma_1^2 exactly (tanh: 1; erf: pi/4).  For a_1 > 0 (SWISH: 3/4; GELU: 6/pi) K* = 0 repels
and criticality, if any, is at a K* > 0 (:mod:`.critical`).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import sympy as sp

from ..activations import Activation, activation
from ..activations.activation import x


@dataclass(frozen=True)
class Universality:
    """Which class an activation belongs to, with the exact critical (C_W, C_b) where the class gives it.

    Made by :func:`universality`.

    Parameters
    ----------
    name : str
        "scale-invariant", "K*=0" or "neither".
    taylor : tuple or None
        (s(0), s'(0), s''(0), s^(3)(0)) when s is smooth at 0.
    a1 : sympy.Expr or None
        PDLT's a_1 of the K* = 0 class.
    slopes : tuple or None
        ``(a_+, a_-)`` of the scale-invariant class.
    reason : str
        Why the activation is in the class.
    C_W, C_b : sympy.Expr or None, default None
        The exact critical point, when the class gives it (keyword-only).

    Examples
    --------
    Leaky ReLU with slope 1/10 is critical at C_W = 2 / (1 + 1/100):

    >>> import sympy as sp
    >>> from ntk_theory.criticality import universality
    >>> u = universality("leaky_relu(1/10)")
    >>> u.name, u.slopes, u.C_W == 2 / (1 + sp.Rational(1, 100)), u.C_b
    ('scale-invariant', (1, 1/10), True, 0)
    """

    name: str                      # "scale-invariant", "K*=0", or "neither"
    taylor: tuple | None           # (sigma_0, sigma_1, sigma_2, sigma_3) if s is smooth at 0
    a1: sp.Expr | None
    slopes: tuple | None           # (a_+, a_-) for the scale-invariant class
    reason: str
    _: KW_ONLY
    C_W: sp.Expr | None = None     # the exact critical point, when the class gives it
    C_b: sp.Expr | None = None

    def __repr__(self) -> str:
        crit = f", critical (C_W, C_b) = ({self.C_W}, {self.C_b})" if self.C_W is not None else ""
        return f"Universality({self.name}{crit}: {self.reason})"

    def _repr_latex_(self) -> str:
        if self.C_W is None:
            return rf"$\text{{{self.name}}}$"
        return rf"$\text{{{self.name}}}:\ (C_W, C_b)_{{\rm crit}} = ({sp.latex(self.C_W)}, {sp.latex(self.C_b)})$"


def _scale_invariant(act: Activation):
    try:
        plus, minus = act.pieces
    except Exception:  # noqa: BLE001 - no split into half-line pieces: not scale-invariant
        return None
    a_p, a_m = sp.simplify(plus.subs(x, 1)), sp.simplify(-minus.subs(x, -1))
    if sp.simplify(plus - a_p * x) == 0 and sp.simplify(minus - a_m * x) == 0:
        return a_p, a_m
    return None


def _taylor(act: Activation):
    if any(abs(c) < 1e-12 for c in act.kinks):
        return None
    coeffs = []
    for n in range(4):
        d = sp.diff(act.expr, x, n) if n else act.expr
        # kinks away from 0: the expression is analytic at 0, its value there is the limit
        v = sp.simplify(d.subs(x, 0) if act.kinks else sp.limit(d, x, 0))
        if not v.is_finite:
            return None
        coeffs.append(v)
    return tuple(coeffs)


def universality(act) -> Universality:
    """Classify ``act`` (name, expression or Activation) and give the exact critical point of its class.

    Parameters
    ----------
    act : str, sympy.Expr or Activation
        The activation.

    Returns
    -------
    Universality
        ``name`` ("scale-invariant", "K*=0" or another class), the exact critical (C_W, C_b) as SymPy
        numbers when the class gives them, and the Taylor data used (s(0), s'(0), a_1).

    Raises
    ------
    ValueError
        If the activation is unknown.

    Notes
    -----
    Scale-invariant s(x) = a x (x > 0), b x (x < 0): chi = C_W (a^2 + b^2)/2 at every K, critical at
    C_W = 2 / (a^2 + b^2), C_b = 0.  K* = 0 class (s(0) = 0, s'(0) != 0, a_1 < 0): C_W = 1 / s'(0)^2, C_b = 0.

    Examples
    --------
    >>> from ntk_theory.criticality import universality
    >>> u = universality("relu")
    >>> u.name, u.C_W, u.C_b
    ('scale-invariant', 2, 0)
    >>> universality("tanh").name
    'K*=0'
    """
    act = activation(act)
    slopes = _scale_invariant(act)
    if slopes is not None:
        A = sp.nsimplify((slopes[0] ** 2 + slopes[1] ** 2) / 2)
        if A == 0:
            return Universality("neither", None, None, slopes, "s = 0")
        return Universality("scale-invariant", None, None, slopes,
                            f"s(x) = {slopes[0]} x (x > 0), {slopes[1]} x (x < 0): chi = C_W (({slopes[0]})^2 + "
                            f"({slopes[1]})^2)/2 at every K", C_W=sp.simplify(1 / A), C_b=sp.S.Zero)
    t = _taylor(act)
    if t is None:
        return Universality("neither", None, None, None, "kinked at 0 and not scale-invariant")
    s0, s1, s2, s3 = t
    if s0 != 0 or s1 == 0:
        why = f"s(0) = {s0}" if s0 != 0 else "s'(0) = 0"
        return Universality("neither", t, None, None, f"{why}: K* = 0 is not a critical fixed point")
    a1 = sp.simplify(s3 / s1 + sp.Rational(3, 4) * (s2 / s1) ** 2)
    if a1.is_negative:
        return Universality("K*=0", t, a1, None,
                            f"s(0) = 0, s'(0) = {s1}, a_1 = {a1} < 0: K ~ 1/({-a1} l) at criticality",
                            C_W=sp.simplify(1 / s1 ** 2), C_b=sp.S.Zero)
    return Universality("neither", t, a1, None,
                        f"s(0) = 0, s'(0) = {s1} but a_1 = {a1} >= 0: K* = 0 repels on one side")
