r"""Finite-width recursions for one input (scalars), PDLT chapters 4 and 8-9, leading order in 1/n.

State of layer l: the kernel K, the NTK Theta, and the 1/n tensors (all zero at l = 1)

    V  = n Cov(z_i^2, z_j^2)                 four-point vertex            (i != j)
    K1 : E[z_i^2] = K + K1 / n               kernel correction
    A  = n Cov(Theta_ii, Theta_jj)           B = n E[Theta_ij^2]
    D  = n Cov(Theta_ii, z_j^2)              F = n E[Theta_ij z_i z_j]
    Th1: E[Theta_ii] = Theta + Th1 / n       NTK mean correction

With <.> the average over z ~ N(0, K), d/dK derivatives in the variance (:mod:`.moments`),
chi_par = C_W d<s^2>/dK, chi_perp = C_W <s'^2>, r = n_l / n_(l-1) (1 for equal widths) and the
next layer's (C_W, C_b, lambda_b, lambda_W)::

    K'   = C_b + C_W <s^2>                                   Th' = lambda_b + lambda_W <s^2> + chi_perp Th
    V'   = C_W^2 (<s^4> - <s^2>^2) + r chi_par^2 V
    K1'  = r [chi_par K1 + (C_W / 2) d^2<s^2>/dK^2 V]
    G    = dTh'/dK = lambda_W d<s^2>/dK + C_W Th d<s'^2>/dK
    VarY = Var(lambda_W s^2 + C_W Th s'^2)
    A'   = VarY + r [V G^2 + 2 chi_perp D G + chi_perp^2 A]
    B'   = C_W^2 <s'^4> Th^2 + r chi_perp^2 B
    D'   = C_W [lambda_W (<s^4> - <s^2>^2) + C_W Th (<s^2 s'^2> - <s^2><s'^2>)] + r chi_par [V G + chi_perp D]
    F'   = C_W^2 <s^2 s'^2> Th + r C_W^2 (d<s^2>/dK)^2 F          (<z s s'>/K = d<s^2>/dK, Stein)
    Th1' = r { lambda_W [d<s^2>/dK K1 + (1/2) d^2<s^2>/dK^2 V]
               + C_W [Th (d<s'^2>/dK K1 + (1/2) d^2<s'^2>/dK^2 V) + <s'^2> Th1 + (D + 2F) d<s'^2>/dK] }

These are the one-input forms of docs/finite_width.md (PDLT eqs. (4.90), (4.118) for V
and K1; (8.x), (9.x) for the NTK tensors), re-derived here: the second-order Taylor term
(1/2) M'' V is the (1/8) <g H4> V of the multi-input form, and the same-neuron covariance
Cov(Theta_ii, z_i^2) = (D + 2F) / n gives the last term of Th1'.  The network's output
(readout, layer L+1) has

    E[f^2] = K + K1/n,  E[Theta] = Theta + Th1/n,  Var(Theta) = (A + 2B)/n,
    kappa_4(f) = E[f^4] - 3 E[f^2]^2 = 3 V / n,  Cov(Theta, f^2) = (D + 2F)/n,

n the width of the last hidden layer.  The same code runs on floats (numbers) and on SymPy
expressions (the layer maps, printed by ``ntk-theory derive ACT --finite-width``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import sympy as sp

NAMES = ("K", "Th", "V", "K1", "A", "B", "D", "F", "Th1")


@dataclass
class State:
    """The quantities of one layer (floats or SymPy expressions); see the module docstring.

    Parameters
    ----------
    K, Th : float or sympy.Expr
        The infinite-width kernel and NTK.
    V, K1, A, B, D, F, Th1 : float or sympy.Expr, default 0
        The 1/n coefficients (zero at layer 1).
    error : float, default 0.0
        The largest quadrature error estimate of the averages used (not compared).

    Examples
    --------
    >>> from ntk_theory.finite_width import State
    >>> st = State(K=1.0, Th=3.0, V=10.0, A=38.0, B=10.0, D=18.0, F=6.0)
    >>> st.output_cumulant, st.ntk_variance, st.ntk_kernel_covariance
    (30.0, 58.0, 30.0)
    """

    # residual.ResidualState has these fields and M3: records alike in shape, not shared logic
    K: object
    Th: object
    V: object = 0
    K1: object = 0
    A: object = 0
    B: object = 0
    D: object = 0
    F: object = 0
    Th1: object = 0
    error: float = field(default=0.0, compare=False)

    def values(self) -> dict:
        """The quantities by name (``error`` left out).

        Returns
        -------
        dict

        Examples
        --------
        >>> from ntk_theory.finite_width import State
        >>> State(K=1.0, Th=2.0, V=5.0).values()
        {'K': 1.0, 'Th': 2.0, 'V': 5.0, 'K1': 0, 'A': 0, 'B': 0, 'D': 0, 'F': 0, 'Th1': 0}
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "error"}

    # the output-level combinations
    @property
    def ntk_variance(self):
        """n Var(Theta_ii) = A + 2B.

        Examples
        --------
        >>> from ntk_theory.finite_width import State
        >>> State(K=1.0, Th=1.0, A=3.0, B=2.0).ntk_variance
        7.0
        """
        return self.A + 2 * self.B

    @property
    def output_cumulant(self):
        """n (E[z^4] - 3 E[z^2]^2) = 3V.

        Examples
        --------
        >>> from ntk_theory.finite_width import State
        >>> State(K=1.0, Th=1.0, V=5.0).output_cumulant
        15.0
        """
        return 3 * self.V

    @property
    def ntk_kernel_covariance(self):
        """n Cov(Theta_ii, z_i^2) = D + 2F.

        Examples
        --------
        >>> from ntk_theory.finite_width import State
        >>> State(K=1.0, Th=1.0, D=6.0, F=2.0).ntk_kernel_covariance
        10.0
        """
        return self.D + 2 * self.F


def step(st: State, avg, C_W, C_b, lam_b, lam_W, r=1) -> State:
    """One layer of the recursion.  ``avg(name, order)`` returns d^order<g>/dK^order at st.K for
    g = s^2 ('ss'), s'^2 ('dd'), s^4 ('ssss'), s^2 s'^2 ('ssdd'), s'^4 ('dddd')."""
    K, Th, V, K1, A, B, D, F, Th1 = (getattr(st, n) for n in NAMES)
    ss, dd = avg("ss", 0), avg("dd", 0)
    ss1, ss2 = avg("ss", 1), avg("ss", 2)
    dd1, dd2 = avg("dd", 1), avg("dd", 2)
    ssss, ssdd, dddd = avg("ssss", 0), avg("ssdd", 0), avg("dddd", 0)
    chi_par, chi_perp = C_W * ss1, C_W * dd
    var_ss = ssss - ss**2
    cov_ss_dd = ssdd - ss * dd
    G = lam_W * ss1 + C_W * Th * dd1
    var_Y = lam_W**2 * var_ss + 2 * lam_W * C_W * Th * cov_ss_dd + C_W**2 * Th**2 * (dddd - dd**2)
    return State(
        K=C_b + C_W * ss,
        Th=lam_b + lam_W * ss + chi_perp * Th,
        V=C_W**2 * var_ss + r * chi_par**2 * V,
        K1=r * (chi_par * K1 + C_W * ss2 * V / 2),
        A=var_Y + r * (V * G**2 + 2 * chi_perp * D * G + chi_perp**2 * A),
        B=C_W**2 * dddd * Th**2 + r * chi_perp**2 * B,
        D=C_W * (lam_W * var_ss + C_W * Th * cov_ss_dd) + r * chi_par * (V * G + chi_perp * D),
        F=C_W**2 * ssdd * Th + r * C_W**2 * ss1**2 * F,
        Th1=r * (lam_W * (ss1 * K1 + ss2 * V / 2)
                 + C_W * (Th * (dd1 * K1 + dd2 * V / 2) + dd * Th1 + (D + 2 * F) * dd1)),
    )


def symbols() -> State:
    """A symbolic state: K, Theta, V, K1, A, B, D, F, Theta1 as SymPy symbols."""
    K = sp.Symbol("K", positive=True)
    Th = sp.Symbol(r"\Theta", positive=True)
    rest = sp.symbols(r"V K_1 A B D F \Theta_1", real=True)
    return State(K, Th, *rest)
