r"""The one-input Gaussian moments that criticality needs, in float64 and at any mpmath precision.

For z ~ N(0, K) and an activation s (a.e. derivative s'):

    <s^2>_K,    <s'^2>_K,    d<s^2>_K/dK

the recursions' diagonal forms ``activation_kernels(s).T_diag`` and ``Tdot_diag``
(:class:`ntk_theory.gaussian.expectation.ClosedDiagonal` or ``NumericalDiagonal``) and the first
K-derivative of the former: a closed form and its SymPy derivative where the rules derive one
(float64 by the stable rewriting, mpmath with 10 guard digits), else tanh-sinh quadrature split at
the kinks with its error estimate (:mod:`ntk_theory.numerics.onepoint`; d<s^2>/dK in Stein's form
<z s(z) s'(z)> / K, exact for continuous s).  The chi_parallel that d<s^2>/dK defines needs a
continuous s: a discontinuous activation is refused.

Error model (float64, against 50-digit mpmath, K = 1e-4 .. 1e3): quadrature ~1e-14 relative (its error
estimate is carried); closed forms ~1e-16, except those whose terms cancel at small K (ELU, sin:
~6e-14 at K = 1e-4, the same as the recursions' float64 diagonal).  mpmath: about ``dps`` digits.
"""

from __future__ import annotations

import numpy as np

from ..activations import Activation, activation
from ..docstrings import filled
from ..gaussian.expectation import jumps_at
from ..recursions.layer import activation_kernels

# the Raises section of Moments.f64 and Moments.mp, written once
_POSITIVE_K = """Raises
------
ValueError
    If K is not > 0.

Examples
--------"""


class Moments:
    """<s^2>, <s'^2> and d<s^2>/dK of one activation at a variance K.

    Parameters
    ----------
    act : str, sympy.Expr or Activation
        A continuous activation.

    Raises
    ------
    ValueError
        If the activation is unknown or jumps (no chi_parallel at a jump).

    Examples
    --------
    >>> from ntk_theory.criticality import Moments
    >>> Moments("tanh")
    Moments(tanh: <s^2>, <s'^2>, d<s^2>/dK)
    >>> Moments("step")
    Traceback (most recent call last):
    ...
    ValueError: step is discontinuous: ...
    """

    def __init__(self, act):
        self.activation: Activation = activation(act)
        if any(jumps_at(self.activation.numpy, c) for c in self.activation.kinks):
            raise ValueError(f"{self.activation.name} is discontinuous: the single-input kernel map has no "
                             f"derivative chi_parallel at its jumps; criticality needs a continuous activation")
        kern = activation_kernels(self.activation)
        self._ss, self._dd = kern.T_diag, kern.Tdot_diag

    @filled(positive_K=_POSITIVE_K)
    def f64(self, K: float) -> tuple[float, float, float]:
        """(<s^2>, <s'^2>, d<s^2>/dK) at variance K > 0, float64.

        Parameters
        ----------
        K : float
            The variance, > 0.

        Returns
        -------
        tuple of float

        %(positive_K)s
        tanh at K = 1 against scipy quadrature (<tanh^2>, <(1 - tanh^2)^2>) and a finite difference:

        >>> import numpy as np
        >>> from scipy import integrate, stats
        >>> from ntk_theory.criticality import Moments
        >>> m = Moments("tanh")
        >>> s2, ds2, d_s2 = m.f64(1.0)
        >>> gauss = lambda f: integrate.quad(lambda z: f(z) * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-14)[0]
        >>> bool(np.isclose(s2, gauss(lambda z: np.tanh(z)**2), rtol=1e-12))
        True
        >>> bool(np.isclose(ds2, gauss(lambda z: (1 - np.tanh(z)**2)**2), rtol=1e-12))
        True
        >>> bool(np.isclose(d_s2, (m.f64(1.0 + 1e-5)[0] - m.f64(1.0 - 1e-5)[0]) / 2e-5, rtol=1e-7))
        True
        """
        K = float(K)
        if not K > 0:
            raise ValueError(f"the variance K must be > 0; got {K}")
        kk = np.array(K)
        return (float(self._ss.evaluate(kk)), float(self._dd.evaluate(kk)), float(self._ss.evaluate(kk, order=1)))

    @filled(positive_K=_POSITIVE_K)
    def mp(self, K, dps: int = 30) -> tuple:
        """(<s^2>, <s'^2>, d<s^2>/dK) as mpf at about ``dps`` digits, rounded to the caller's mpmath
        precision (use ``mpmath.workdps``).

        Parameters
        ----------
        K : str, float or mpmath.mpf
            The variance, > 0.
        dps : int, default 30
            Decimal digits.

        Returns
        -------
        tuple of mpmath.mpf

        %(positive_K)s
        ReLU: K / 2, 1/2 and 1/2:

        >>> import mpmath
        >>> from ntk_theory.criticality import Moments
        >>> with mpmath.workdps(30):
        ...     Moments("relu").mp("0.3", dps=30) == (mpmath.mpf("0.15"), mpmath.mpf("0.5"), mpmath.mpf("0.5"))
        True
        """
        import mpmath

        with mpmath.workdps(dps + 10):
            if not mpmath.mpf(K) > 0:
                raise ValueError(f"the variance K must be > 0; got {K}")
        return (self._ss.evaluate_mp(K, dps), self._dd.evaluate_mp(K, dps), self._ss.evaluate_mp(K, dps, order=1))

    def __repr__(self) -> str:
        return f"Moments({self.activation.name}: <s^2>, <s'^2>, d<s^2>/dK)"

