r"""One layer of the infinite-width recursions: the Gaussian expectations of an activation and the map
they define.

For an activation s with T(K) = E[s(u) s(v)] and Tdot(K) = E[s'(u) s'(v)], (u, v) ~ N(0, K), the
next layer's NNGP kernel and NTK are (Jacot et al. 2018, eq. (5)-(6); PDLT eqs. (4.70), (9.5)):

    K'_ab     = C_b + C_W T(K_aa, K_bb, K_ab)
    Theta'_ab = lambda_b + lambda_W T(K_aa, K_bb, K_ab) + C_W Tdot(K_aa, K_bb, K_ab) Theta_ab

and on the diagonal (a = b) the one-variable forms T(K) = E[s(u)^2], Tdot(K) = E[s'(u)^2].
"""

from __future__ import annotations

import functools
from dataclasses import KW_ONLY, dataclass

import mpmath
import numpy as np
import sympy as sp

from ..activations import Activation, activation
from ..docstrings import RETURNS_TEXT, filled
from ..gaussian import expectation, k, k11, k12, k22
from ..gaussian.display import display_latex, display_text
from ..activations.parse import DivergentExpectation
from ..gaussian.stable import lambdify as stable_lambdify
from ..numerics import hermite


class ActivationKernels:
    """The four Gaussian expectations one activation contributes to the recursions.

    ``T``, ``Tdot``: two-variable E[s s] and E[s' s'] (closed form or numerical);
    ``T_diag``, ``Tdot_diag``: their one-variable diagonal forms E[s(u)^2], E[s'(u)^2], u ~ N(0, k)
    (:class:`ntk_theory.gaussian.expectation.ClosedDiagonal` or ``NumericalDiagonal``: the one-input
    moments that the finite-width and criticality modules use as well).  s' is the almost-everywhere
    derivative, as backpropagation through a finite network computes it (a jump of s contributes
    nothing: the NTK of a step or sign network comes from the layers after it only), matching the
    reference network and neural-tangents.

    Parameters
    ----------
    act : Activation
        The activation (:func:`activation_kernels` makes these from names, cached).

    Raises
    ------
    ValueError
        If an expectation cannot be formed (:func:`ntk_theory.gaussian.expectation`).

    Examples
    --------
    ReLU: T = the arc-cosine kernel, Tdot = (pi - arccos rho) / (2 pi), T_diag = k / 2, Tdot_diag = 1/2:

    >>> import numpy as np
    >>> from ntk_theory.activations import activation
    >>> from ntk_theory.recursions import ActivationKernels
    >>> ak = ActivationKernels(activation("relu"))
    >>> ak, ak.closed_form, ak.homogeneity
    (ActivationKernels(relu: closed form), True, 1)
    >>> t, td, err = ak.offdiagonal(np.array([1.0]), np.array([2.0]), np.array([0.5]))
    >>> th = np.arccos(0.5 / np.sqrt(2.0))
    >>> bool(np.isclose(t[0], np.sqrt(2.0) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), rtol=1e-14))
    True
    >>> bool(np.isclose(td[0], (np.pi - th) / (2 * np.pi), rtol=1e-14)), err
    (True, None)
    """

    def __init__(self, act: Activation):
        self.activation = act
        self.T = expectation(act)
        self.Tdot = expectation(act, derivative=1, deltas=False)
        self.T_diag = _diagonal_or_divergent(self.T)
        self.Tdot_diag = _diagonal_or_divergent(self.Tdot)

    @property
    def closed_form(self) -> bool:
        """Whether all four expectations are closed forms (no quadrature anywhere).

        Examples
        --------
        >>> from ntk_theory.recursions import activation_kernels
        >>> activation_kernels("linear").closed_form     # tanh's are numerical: False
        True
        """
        return all(e.is_closed_form for e in (self.T, self.Tdot, self.T_diag, self.Tdot_diag))

    @functools.cached_property
    def homogeneity(self):
        """Degree alpha of positive homogeneity, s(c x) = c^alpha s(x) for c > 0 (ReLU family: 1,
        step/sign: 0, relu_power(k): k), or None.  Then T(c K) = c^alpha T(K) and
        Tdot(c K) = c^(alpha - 1) Tdot(K), which the float64 evaluation uses to work at unit scale
        (no underflow of K_aa K_bb).  Decided by :func:`homogeneity_degree` on s and confirmed on
        the closed form of T."""
        alpha = homogeneity_degree(self.activation)
        if alpha is None or not self.T.is_closed_form or not _scales_as(self.T.expr, alpha):
            return None
        return alpha

    @functools.cached_property
    def smallest_variance(self) -> float:
        """The smallest input variance at which float64 evaluation keeps its digits.

        VARIANCE_UNDERFLOW (near float64's smallest normal number) for homogeneous activations
        (evaluated at unit scale), numerical ones (which work with correlations) and closed forms
        whose stable float64 form agrees with 30-digit mpmath to 1e-12 at variances ~1e-250;
        PRODUCT_UNDERFLOW (where K_aa K_bb underflows) for the other closed forms."""
        if self.homogeneity is not None or not (self.T.is_closed_form and self.Tdot.is_closed_form):
            return VARIANCE_UNDERFLOW
        if all(_keeps_digits_at(e.expr, 1e-250) for e in (self.T, self.Tdot)):
            return VARIANCE_UNDERFLOW
        return PRODUCT_UNDERFLOW

    def check_variances(self, variances: np.ndarray, layer: int) -> None:
        """Raise FloatingPointError if a variance entering hidden layer ``layer`` is below
        :attr:`smallest_variance`: a kernel that decays geometrically with depth (the ordered
        phase with C_b = 0) is refused there rather than returned as a silent 0.

        Parameters
        ----------
        variances : numpy.ndarray
            The variances K_aa entering the layer (zeros are allowed: an input of norm 0).
        layer : int
            The hidden layer's number, for the message.

        Raises
        ------
        FloatingPointError
            If a positive variance is below :attr:`smallest_variance`.

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.recursions import activation_kernels
        >>> ak = activation_kernels("relu")
        >>> ak.check_variances(np.array([0.0, 1e-280]), layer=3)      # returns None: fine
        >>> ak.check_variances(np.array([1e-300]), layer=3)
        Traceback (most recent call last):
        ...
        FloatingPointError: the kernel underflows float64: a variance entering hidden layer 3 is 1e-300 ...
        """
        positive = variances[variances > 0]
        if positive.size == 0:
            return
        smallest = float(positive.min())
        if smallest < self.smallest_variance:
            raise FloatingPointError(
                f"the kernel underflows float64: a variance entering hidden layer {layer} is {smallest:.3g} "
                f"(below {self.smallest_variance:g}, where {self.activation.name}'s float64 evaluation loses its "
                "digits); the kernel decays geometrically with depth at this C_W, C_b; evaluate_mp(X, dps=...) "
                "computes it"
            )

    # float64 evaluators: closed forms in their stable rewriting, numerical ones by quadrature
    @functools.cached_property
    def _f64(self):
        def two(e, fn):
            if not e.is_closed_form:
                if self.activation.is_smooth:
                    return lambda a, b, c: _mehler_or_quadrature(e, fn, a, b, c)
                return lambda a, b, c: e.evaluate(a, b, c, with_error=True)
            f = stable_lambdify((k11, k22, k12), e.expr)
            return lambda a, b, c: (_broadcast(f(a, b, c), c), None)

        def one(e):
            if isinstance(e, Divergent):
                return e.evaluate
            return lambda a: e.evaluate(a, with_error=True)

        act = self.activation
        return two(self.T, act.numpy), two(self.Tdot, act.numpy_derivative), one(self.T_diag), one(self.Tdot_diag)

    def offdiagonal(self, K11, K22, K12):
        """(T, Tdot, quadrature error or None) at arrays of covariances, float64.

        Homogeneous activations are evaluated at unit scale, c = sqrt(K11) sqrt(K22):
        T = c^alpha T(K / c), Tdot = c^(alpha - 1) Tdot(K / c), so variances down to the
        smallest normal float64 keep full relative accuracy (products K11 K22 would underflow
        below ~1e-154).

        Parameters
        ----------
        K11, K22, K12 : numpy.ndarray
            Variances and covariances (broadcast together).

        Returns
        -------
        T, Tdot : numpy.ndarray
            E[s(u) s(v)] and E[s'(u) s'(v)].
        error : float or None
            The largest quadrature error estimate (None: closed forms).

        Examples
        --------
        ReLU at variances 1e-200, where K11 K22 underflows: T scales as K (homogeneous of degree 1):

        >>> import numpy as np
        >>> from ntk_theory.recursions import activation_kernels
        >>> ak = activation_kernels("relu")
        >>> t1, _, _ = ak.offdiagonal(np.array([1.0]), np.array([1.0]), np.array([0.5]))
        >>> t2, _, _ = ak.offdiagonal(np.array([1e-200]), np.array([1e-200]), np.array([0.5e-200]))
        >>> bool(np.isclose(t2[0], 1e-200 * t1[0], rtol=1e-14))
        True
        """
        T, Tdot, _, _ = self._f64
        alpha = self.homogeneity
        if alpha is not None:
            c = np.sqrt(K11) * np.sqrt(K22)
            c = np.where(c > 0, c, 1.0)
            (t, et), (td, etd) = T(K11 / c, K22 / c, K12 / c), Tdot(K11 / c, K22 / c, K12 / c)
            return t * c**alpha, td * c ** (alpha - 1), _max_err(et, etd)
        (t, et), (td, etd) = T(K11, K22, K12), Tdot(K11, K22, K12)
        return t, td, _max_err(et, etd)

    def diagonal(self, K, derivative: bool = True):
        """(E[s^2], E[s'^2] or None, quadrature error or None) at an array of variances, float64.

        Parameters
        ----------
        K : numpy.ndarray
            Variances.
        derivative : bool, default True
            Also evaluate E[s'^2] (False: None in its place).

        Returns
        -------
        T, Tdot : numpy.ndarray or None
            E[s(u)^2] and E[s'(u)^2].
        error : float or None
            The largest quadrature error estimate (None: closed forms).

        Examples
        --------
        Leaky ReLU with slope a = 1/10 for x < 0: E[s(u)^2] = (1 + a^2) k / 2, E[s'(u)^2] = (1 + a^2) / 2:

        >>> import numpy as np
        >>> from ntk_theory.recursions import activation_kernels
        >>> kk = np.array([0.5, 2.0])
        >>> t, td, err = activation_kernels("leaky_relu(1/10)").diagonal(kk)
        >>> bool(np.allclose(t, 1.01 * kk / 2, rtol=1e-14))
        True
        >>> bool(np.allclose(td, 1.01 / 2, rtol=1e-14)), err
        (True, None)
        """
        _, _, T, Tdot = self._f64
        t, et = T(K)
        if not derivative:
            return t, None, _max_err(et)
        td, etd = Tdot(K)
        return t, td, _max_err(et, etd)

    # mpmath evaluators (at the current mpmath precision)
    @functools.cached_property
    def _mp(self):
        def two(e):
            if not e.is_closed_form:
                return lambda a, b, c: e.evaluate_mp(a, b, c, dps=mpmath.mp.dps)
            return sp.lambdify((k11, k22, k12), e.expr, modules="mpmath")

        def one(e):
            if isinstance(e, Divergent):
                return e.evaluate_mp
            return lambda a: e.evaluate_mp(a, dps=mpmath.mp.dps)

        return two(self.T), two(self.Tdot), one(self.T_diag), one(self.Tdot_diag)

    def offdiagonal_mp(self, a, b, c):
        """(T, Tdot) at one covariance in mpmath, at the current ``mpmath.mp.dps``.

        Parameters
        ----------
        a, b, c : mpmath.mpf
            K11, K22, K12; |c| >= sqrt(a b) is treated as perfectly correlated.

        Returns
        -------
        tuple of mpmath.mpf

        Examples
        --------
        ReLU at orthogonal inputs: T = sqrt(a b) / (2 pi), Tdot = 1/4:

        >>> import mpmath
        >>> from ntk_theory.recursions import activation_kernels
        >>> with mpmath.workdps(40):
        ...     t, td = activation_kernels("relu").offdiagonal_mp(mpmath.mpf(1), mpmath.mpf(2), mpmath.mpf(0))
        ...     bool(abs(t - mpmath.sqrt(2) / (2 * mpmath.pi)) < mpmath.mpf(10)**-38), td == mpmath.mpf(1) / 4
        (True, True)
        """
        T, Tdot, _, _ = self._mp
        if c * c >= a * b:  # |rho| = 1 exactly: the diagonal forms apply (for c = +sqrt(ab) with a = b)
            c = mpmath.sign(c) * mpmath.sqrt(a * b)
        return mpmath.re(T(a, b, c)), mpmath.re(Tdot(a, b, c))

    def diagonal_mp(self, a, derivative: bool = True):
        """(E[s^2], E[s'^2] or None) at one variance in mpmath, at the current ``mpmath.mp.dps``.

        Parameters
        ----------
        a : mpmath.mpf
            The variance.
        derivative : bool, default True
            Also evaluate E[s'^2].

        Returns
        -------
        tuple

        Examples
        --------
        >>> import mpmath
        >>> from ntk_theory.recursions import activation_kernels
        >>> activation_kernels("relu").diagonal_mp(mpmath.mpf(3))        # k / 2 and 1 / 2
        (mpf('1.5'), mpf('0.5'))
        """
        _, _, T, Tdot = self._mp
        return mpmath.re(T(a)), (mpmath.re(Tdot(a)) if derivative else None)

    def __repr__(self) -> str:
        kind = "closed form" if self.closed_form else "partly numerical"
        return f"ActivationKernels({self.activation.name}: {kind})"


class Divergent:
    """A diagonal expectation that is infinite (e.g. E[delta(u)^2] for the step's derivative)."""

    is_closed_form = True
    expr = sp.oo
    source = "diverges"

    def __init__(self, message: str):
        self.message = message

    def _raise(self, *args, **kwargs):
        raise DivergentExpectation(self.message)

    evaluate = evaluate_mp = __call__ = _raise

    def latex(self) -> str:
        return r"\infty\ \text{(diverges)}"

    def __repr__(self) -> str:
        return f"Divergent({self.message})"


def _diagonal_or_divergent(e):
    try:
        return e.diagonal
    except DivergentExpectation as exc:
        return Divergent(str(exc))


def _mehler_or_quadrature(e, fn, a, b, c):
    """E[f(u) f(v)] of a smooth numerical activation at arrays of covariances: Mehler's series on
    Hermite tables at the distinct variances (:func:`ntk_theory.numerics.hermite.expect2_pairs`, error
    from the coefficients and the Parseval tail bound), the expectation's own 2-D quadrature for the
    entries the series does not resolve."""
    value, err = hermite.expect2_pairs(fn, fn, a, b, c, tol=1e-15)
    bad = ~np.isfinite(value)
    if bad.any():
        a, b, c = np.broadcast_arrays(a, b, c)
        value[bad], err[bad] = e.evaluate(a[bad], b[bad], c[bad], with_error=True)
    return value, err


def _broadcast(value, like):
    return np.broadcast_to(np.asarray(value, dtype=float), np.shape(like)).copy()


def _max_err(*errs):
    errs = [float(np.max(e)) for e in errs if e is not None and np.size(e)]
    return max(errs) if errs else None


#: Below this variance a product of two variances underflows float64's normal range.
PRODUCT_UNDERFLOW = 1e-150
#: Below this variance the variances themselves approach float64's smallest normal number.
VARIANCE_UNDERFLOW = 1e-290


def _keeps_digits_at(expr: sp.Expr, scale: float) -> bool:
    """The stable float64 form of a two-variable closed form equals 30-digit mpmath to 1e-12 at
    covariances of size ``scale``."""
    f64 = stable_lambdify((k11, k22, k12), expr)
    fmp = sp.lambdify((k11, k22, k12), expr, modules="mpmath")
    with mpmath.workdps(30):
        for a, b, r in ((1.3, 0.7, 0.4), (2.1, 0.9, -0.8), (0.5, 3.0, 0.999)):
            a, b = a * scale, b * scale
            c = r * np.sqrt(a) * np.sqrt(b)
            with np.errstate(all="ignore"):
                got = float(np.asarray(f64(np.array(a), np.array(b), np.array(c))))
            want = mpmath.re(fmp(mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)))
            if not np.isfinite(got) or abs(got - want) > mpmath.mpf(1e-12) * abs(want) + mpmath.mpf(1e-300):
                return False
    return True


_HOMOGENEITY_POINTS = ("0.37", "1.3", "2.9", "-0.61", "-1.7", "-3.3")
_HOMOGENEITY_SCALES = ("0.29", "4.7")


def homogeneity_degree(act: Activation):
    """alpha with s(c x) = c^alpha s(x) for all c > 0, or None.

    alpha = log(s(c x0) / s(x0)) / log(c) at a point where s(x0) != 0, then the identity is checked
    at 30 digits at six points on both half-lines and two scales; a positively homogeneous s is
    determined by its values at x = 1 and x = -1, so only a non-homogeneous s that agrees with a
    homogeneous one at all twelve points could pass."""
    with mpmath.workdps(30):
        try:
            s = act.mpmath
            vals = {p: mpmath.mpf(s(mpmath.mpf(p))) for p in _HOMOGENEITY_POINTS}
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
        x0 = next((p for p, v in vals.items() if v != 0), None)
        if x0 is None:
            return None
        c = mpmath.mpf(_HOMOGENEITY_SCALES[0])
        try:
            ratio = mpmath.mpf(s(c * mpmath.mpf(x0))) / vals[x0]
            if ratio <= 0:
                return None
            alpha = mpmath.log(ratio) / mpmath.log(c)
            alpha_r = mpmath.nint(alpha * 2) / 2  # degrees of interest are integers or halves
            if abs(alpha - alpha_r) > mpmath.mpf(10) ** -20:
                return None
            for p, v in vals.items():
                for cs in _HOMOGENEITY_SCALES:
                    cc = mpmath.mpf(cs)
                    want = cc**alpha_r * v
                    got = mpmath.mpf(s(cc * mpmath.mpf(p)))
                    if abs(got - want) > mpmath.mpf(10) ** -25 * (1 + abs(want)):
                        return None
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
        return int(alpha_r) if alpha_r == int(alpha_r) else float(alpha_r)


def _scales_as(expr: sp.Expr, alpha) -> bool:
    """T(c k11, c k22, c k12) = c^alpha T(k11, k22, k12) at 30 digits at a few covariances."""
    f = sp.lambdify((k11, k22, k12), expr, modules="mpmath")
    with mpmath.workdps(30):
        for a, b, r in (("1.3", "0.7", "0.4"), ("2.1", "0.9", "-0.8"), ("0.5", "3.0", "0.99")):
            a, b = mpmath.mpf(a), mpmath.mpf(b)
            c12 = mpmath.mpf(r) * mpmath.sqrt(a * b)
            base = mpmath.re(f(a, b, c12))
            for cs in _HOMOGENEITY_SCALES:
                cc = mpmath.mpf(cs)
                if abs(mpmath.re(f(cc * a, cc * b, cc * c12)) - cc**alpha * base) > mpmath.mpf(10) ** -25 * (1 + abs(base)):
                    return False
    return True


@functools.lru_cache(maxsize=64)
def activation_kernels(act) -> ActivationKernels:
    """The (cached) Gaussian expectations of an activation (name, string, SymPy expression).

    Parameters
    ----------
    act : str, sympy.Expr or Activation
        The activation (as :func:`ntk_theory.activations.activation` reads it).

    Returns
    -------
    ActivationKernels
        The same object for equal arguments (an LRU cache of 64).

    Examples
    --------
    ReLU's diagonal forms are E[relu(u)^2] = k/2 and E[step(u)^2] = 1/2 for u ~ N(0, k):

    >>> from ntk_theory.recursions import activation_kernels
    >>> kern = activation_kernels("relu")
    >>> kern is activation_kernels("relu"), float(kern.T_diag.evaluate(3.0)), float(kern.Tdot_diag.evaluate(3.0))
    (True, 1.5, 0.5)
    """
    return ActivationKernels(activation(act))


# --------------------------------------------------------------------------- symbolic maps
Kaa, Kbb, Kab, Theta_ab = sp.symbols("K_aa K_bb K_ab Theta_ab", real=True)
K_, Theta_ = sp.symbols("K Theta", real=True)
C_W, C_b, lambda_b, lambda_W = sp.symbols("C_W C_b lambda_b lambda_W", nonnegative=True)


@dataclass(frozen=True)
class LayerMap:
    """The map (K, Theta) -> (K', Theta') of one hidden activation and the affine layer after it.

    Parameters
    ----------
    kernels : ActivationKernels
        The activation's expectations T, Tdot.
    C_W, C_b : float
        The next layer's weight and bias variances (keyword-only).
    lambda_b, lambda_W : float
        The next layer's NTK learning-rate factors (keyword-only).

    Examples
    --------
    ReLU: K' = C_b + C_W K / 2 on the diagonal:

    >>> from ntk_theory.recursions import LayerMap, activation_kernels
    >>> m = LayerMap(activation_kernels("relu"), C_W=2.0, C_b=0.1, lambda_b=0.1, lambda_W=2.0)
    >>> print(m.text().splitlines()[2])
    K' = C_W*K/2 + C_b
    >>> m.symbolic(numeric=True)["K'"]
    1.0*K + 0.1
    """

    kernels: ActivationKernels
    _: KW_ONLY
    C_W: float
    C_b: float
    lambda_b: float
    lambda_W: float

    def symbolic(self, numeric: bool = False) -> dict:
        """SymPy equations for K' and Theta', off the diagonal and on it; with ``numeric=False`` the
        constants stay symbols C_W, C_b, lambda_b, lambda_W.

        Parameters
        ----------
        numeric : bool, default False
            Substitute the layer's numbers for C_W, C_b, lambda_b, lambda_W.

        Returns
        -------
        dict
            ``"K'_ab"``, ``"Theta'_ab"`` (in K_aa, K_bb, K_ab, Theta_ab), ``"K'"``, ``"Theta'"`` (in K, Theta)
            -> SymPy expressions; an expectation without closed form appears as ``T(...)`` / ``Tdot(...)``.

        Examples
        --------
        ReLU's diagonal NTK map, Theta' = lambda_b + lambda_W K / 2 + C_W Theta / 2:

        >>> import sympy as sp
        >>> from ntk_theory.recursions import LayerMap, activation_kernels
        >>> m = LayerMap(activation_kernels("relu"), C_W=2.0, C_b=0.1, lambda_b=0.1, lambda_W=2.0)
        >>> C_W, lambda_b, lambda_W, K, Theta = sp.symbols("C_W lambda_b lambda_W K Theta", real=True)
        >>> eq = m.symbolic()["Theta'"]
        >>> sorted(map(str, eq.free_symbols))
        ['C_W', 'K', 'Theta', 'lambda_W', 'lambda_b']
        >>> eq.subs({s: 1 for s in eq.free_symbols}) == 1 + sp.Rational(1, 2) + sp.Rational(1, 2)
        True
        """
        cw, cb, lb, lw = (self.C_W, self.C_b, self.lambda_b, self.lambda_W) if numeric else (C_W, C_b, lambda_b, lambda_W)
        out = {}

        def two(e, name):
            return e.expr.subs({k11: Kaa, k22: Kbb, k12: Kab}, simultaneous=True) if e.is_closed_form else sp.Function(name)(Kaa, Kbb, Kab)

        def one(e, name):
            return e.expr.subs(k, K_) if e.is_closed_form else sp.Function(name)(K_)

        T, Td = two(self.kernels.T, "T"), two(self.kernels.Tdot, "Tdot")
        out["K'_ab"] = cb + cw * T
        out["Theta'_ab"] = lb + lw * T + cw * Td * Theta_ab
        T1, Td1 = one(self.kernels.T_diag, "T"), one(self.kernels.Tdot_diag, "Tdot")
        out["K'"] = cb + cw * T1
        out["Theta'"] = lb + lw * T1 + cw * Td1 * Theta_
        return out

    @filled(returns_text=RETURNS_TEXT)
    def latex(self) -> str:
        """The four equations of :meth:`symbolic` in a LaTeX ``aligned`` environment.

        %(returns_text)s
        >>> from ntk_theory.recursions import KernelRecursion
        >>> KernelRecursion("relu", 1).layer_maps()[0].latex().count("&=")
        4
        """
        eqs = self.symbolic()
        names = {"K'_ab": r"K'_{ab}", "Theta'_ab": r"\Theta'_{ab}", "K'": "K'", "Theta'": r"\Theta'"}
        rows = [rf"{names[n]} &= {display_latex(e)}" for n, e in eqs.items()]
        return r"\begin{aligned}" + r"\\ ".join(rows) + r"\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"

    @filled(returns_text=RETURNS_TEXT)
    def text(self) -> str:
        """The four equations of :meth:`symbolic` as plain text, one per line.

        %(returns_text)s
        >>> from ntk_theory.recursions import KernelRecursion
        >>> print(KernelRecursion("relu", 1).layer_maps()[0].text().splitlines()[3])
        Theta' = C_W*Theta/2 + K*lambda_W/2 + lambda_b
        """
        return "\n".join(f"{n} = {display_text(e)}" for n, e in self.symbolic().items())
