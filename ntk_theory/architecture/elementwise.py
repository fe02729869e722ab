r"""neural-tangents' pointwise layers as :class:`~ntk_theory.architecture.layers.Elementwise` descriptions.

Each constructor has neural-tangents' name, arguments and defaults and the function it applies
(``neural_tangents.stax`` 0.6.5); numbers given as Python floats become the exact decimals written
(``0.1`` -> 1/10).  Beyond neural-tangents: ``Tanh``, ``Softplus``, ``Swish``, ``Elu``, ``Selu``,
``Sigmoid`` and ``Activation(expr)`` for any SymPy expression in ``x`` or library name.

============================  =====================================================
``Relu()``                    max(x, 0)
``LeakyRelu(alpha)``          x for x > 0, alpha x for x < 0
``ABRelu(a, b)``              a min(x, 0) + b max(x, 0)
``Abs()``, ``Sign()``         |x|, sign(x)
``Erf(a=1, b=1, c=0)``        a erf(b x) + c
``Sigmoid_like()``            Erf(a=1/2, b=1/2.4020563531719796, c=1/2)
``Gelu(approximate=False)``   x Phi(x); ``approximate=True``: the tanh form
``Sin(a=1, b=1, c=0)``        a sin(b x + c); ``Cos``: a cos(b x + c)
``Exp(a=1, b=1)``             a exp(b x)
``Gaussian(a=1, b=-1)``       a exp(b x^2)
``Rbf(gamma=1)``              sqrt(2) sin(sqrt(2 gamma) x + pi/4)
``Monomial(degree)``          x^degree
``RectifiedMonomial(degree)`` x^degree for x >= 0, else 0
``Polynomial(coef)``          sum_i coef[i] x^i
``Hermite(degree)``           He_degree(x) / sqrt(degree!)  (unit L2 norm under N(0, 1))
============================  =====================================================

neural-tangents' ``Hermite`` kernel is exact only for inputs of unit variance (its docstring); the
kernels here are exact for any variance.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import sympy as sp

from ..activations import Activation, activation, checked, library_activation, x
from .layers import Elementwise


def _exact(name: str, value) -> sp.Expr:
    """A number as SymPy: ints and decimals exactly as written (0.1 -> 1/10)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, sp.Basic)):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    if isinstance(value, sp.Basic):
        if not (value.is_number and value.is_real):
            raise ValueError(f"{name} must be a real number; got {value!r}")
        return value
    if isinstance(value, numbers.Integral):
        return sp.Integer(int(value))
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return sp.Rational(repr(float(value)))


def _degree(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} degree must be an integer >= 0; got {value!r}")
    return int(value)


def _make(name: str, args: tuple, expr: sp.Expr) -> Elementwise:
    layer = Elementwise(name, args, sp.sympify(expr))
    checked(Activation(repr(layer), layer.expr, "stax"))
    return layer


def Relu() -> Elementwise:
    """ReLU, max(x, 0) (neural-tangents' ``stax.Relu``).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    The arc-cosine kernel: <max(z, 0)^2> = K / 2, and at correlation rho
    (sqrt(1 - rho^2) + (pi - arccos rho) rho) K / (2 pi):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])   # Dense(2): K = x.x' / 2
    >>> k = stax.serial(stax.Dense(2), stax.Relu()).kernel_fn(x, get="nngp")
    >>> rho = 0.6
    >>> closed = np.array([[0.25, (np.sqrt(1 - rho**2) + (np.pi - np.arccos(rho)) * rho) / (4 * np.pi)]])
    >>> bool(np.allclose(k[0], [0.25, closed[0, 1]], rtol=1e-13))
    True
    """
    return _make("Relu", (), sp.Max(0, x))


def LeakyRelu(alpha: float) -> Elementwise:
    """Leaky ReLU: x for x > 0, alpha x for x < 0 (neural-tangents' ``stax.LeakyRelu``).

    Parameters
    ----------
    alpha : float
        The slope for x < 0 (a real number; numbers are kept as the exact decimals written: 0.1 -> 1/10).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    <phi(z)^2> = (1 + alpha^2) K / 2:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = 1
    >>> stax.LeakyRelu(0.1).description.expr
    Piecewise((x/10, x < 0), (x, True))
    >>> k = stax.serial(stax.Dense(1), stax.LeakyRelu(0.1)).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 0], (1 + 0.1**2) / 2, rtol=1e-14))
    True
    """
    a = _exact("LeakyRelu alpha", alpha)
    return _make("LeakyRelu", (alpha,), sp.Piecewise((a * x, x < 0), (x, True)))


def ABRelu(a: float, b: float) -> Elementwise:
    """a min(x, 0) + b max(x, 0) (neural-tangents' ``stax.ABRelu``).

    Parameters
    ----------
    a, b : float
        The slopes for x < 0 and x > 0 (real numbers, kept as the exact decimals written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    <phi(z)^2> = (a^2 + b^2) K / 2:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = 1
    >>> k = stax.serial(stax.Dense(1), stax.ABRelu(-0.5, 2.0)).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 0], ((-0.5)**2 + 2.0**2) / 2, rtol=1e-14))
    True
    """
    ea, eb = _exact("ABRelu a", a), _exact("ABRelu b", b)
    return _make("ABRelu", (a, b), sp.Piecewise((ea * x, x < 0), (eb * x, True)))


def Abs() -> Elementwise:
    """The absolute value ``|x|`` (neural-tangents' ``stax.Abs``).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    ``<|u| |v|> = 2 (sqrt(1 - rho^2) + rho arcsin rho) / pi`` for unit variances and correlation rho:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2)   # Dense(2): K = x.x' / 2, rho = 0.6
    >>> k = stax.serial(stax.Dense(2), stax.Abs()).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 1], 2 * (np.sqrt(1 - 0.36) + 0.6 * np.arcsin(0.6)) / np.pi, rtol=1e-13))
    True
    """
    return _make("Abs", (), sp.Abs(x))


def Sign() -> Elementwise:
    """sign(x) (neural-tangents' ``stax.Sign``).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    <sign(u) sign(v)> = (2 / pi) arcsin rho:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])   # Dense(2): K = x.x' / 2, rho = 0.6
    >>> k = stax.serial(stax.Dense(2), stax.Sign()).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 1], 2 / np.pi * np.arcsin(0.6), rtol=1e-13))
    True
    """
    return _make("Sign", (), sp.sign(x))


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """a erf(b x) + c (neural-tangents' ``stax.Erf``).

    Parameters
    ----------
    a, b, c : float, default 1.0, 1.0, 0.0
        Scale, input scale and shift (real numbers, kept as the exact decimals written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from scipy.special import erf
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1
    >>> k = stax.serial(stax.Dense(1), stax.Erf(a=2.0, b=0.5, c=0.1)).kernel_fn(x, get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: (2 * erf(z / 2) + 0.1)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9, atol=0))
    True
    """
    ea, eb, ec = (_exact(f"Erf {n}", v) for n, v in (("a", a), ("b", b), ("c", c)))
    return _make("Erf", (a, b, c) if (a, b, c) != (1.0, 1.0, 0.0) else (), ea * sp.erf(eb * x) + ec)


def Sigmoid_like() -> Elementwise:
    """A sigmoid made of erf: ``Erf(a=1/2, b=1/2.4020563531719796, c=1/2)`` (neural-tangents' ``stax.Sigmoid_like``).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    >>> from math import erf
    >>> from ntk_theory import stax
    >>> from ntk_theory.activations import x
    >>> phi = stax.Sigmoid_like().description.expr
    >>> abs(float(phi.subs(x, 0.7)) - (0.5 * erf(0.7 / 2.4020563531719796) + 0.5)) < 1e-15
    True
    """
    layer = Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)
    return Elementwise("Sigmoid_like", (), layer.expr)


def Gelu(approximate: bool = False) -> Elementwise:
    """GELU, x Phi(x) with Phi the standard normal CDF (neural-tangents' ``stax.Gelu``).

    Parameters
    ----------
    approximate : bool, default False
        True: the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    >>> from scipy import stats
    >>> from ntk_theory import stax
    >>> from ntk_theory.activations import x
    >>> phi = stax.Gelu().description.expr
    >>> bool(abs(float(phi.subs(x, -0.7)) - (-0.7 * stats.norm.cdf(-0.7))) < 1e-15)
    True
    >>> stax.Gelu(approximate=True)
    Gelu(True)
    """
    if not isinstance(approximate, bool):
        raise ValueError(f"Gelu approximate must be True or False; got {approximate!r}")
    expr = library_activation("gelu_tanh" if approximate else "gelu").expr
    return _make("Gelu", (approximate,) if approximate else (), expr)


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """a sin(b x + c) (neural-tangents' ``stax.Sin``).

    Parameters
    ----------
    a, b, c : float, default 1.0, 1.0, 0.0
        Scale, frequency and phase (real numbers, kept as the exact decimals written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1
    >>> k = stax.serial(stax.Dense(1), stax.Sin(a=1.0, b=2.0, c=0.3)).kernel_fn(x, get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: np.sin(2 * z + 0.3)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9, atol=0))
    True
    """
    ea, eb, ec = (_exact(f"Sin {n}", v) for n, v in (("a", a), ("b", b), ("c", c)))
    return _make("Sin", (a, b, c) if (a, b, c) != (1.0, 1.0, 0.0) else (), ea * sp.sin(eb * x + ec))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """a cos(b x + c) (neural-tangents' ``stax.Cos``).

    Parameters
    ----------
    a, b, c : float, default 1.0, 1.0, 0.0
        Scale, frequency and phase (real numbers, kept as the exact decimals written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    <cos(u) cos(v)> = exp(-(K_uu + K_vv) / 2) cosh(K_uv):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])   # Dense(2): K = x.x' / 2
    >>> k = stax.serial(stax.Dense(2), stax.Cos()).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 1], np.exp(-0.5) * np.cosh(0.3), rtol=1e-13))
    True
    """
    ea, eb, ec = (_exact(f"Cos {n}", v) for n, v in (("a", a), ("b", b), ("c", c)))
    return _make("Cos", (a, b, c) if (a, b, c) != (1.0, 1.0, 0.0) else (), ea * sp.cos(eb * x + ec))


def Exp(a: float = 1.0, b: float = 1.0) -> Elementwise:
    """a exp(b x) (neural-tangents' ``stax.Exp``).

    Parameters
    ----------
    a, b : float, default 1.0, 1.0
        Scale and rate (real numbers, kept as the exact decimals written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    <a^2 exp(b u + b v)> = a^2 exp(b^2 (K_uu + K_vv + 2 K_uv) / 2) (the log-normal mean):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])   # Dense(2): K = x.x' / 2
    >>> k = stax.serial(stax.Dense(2), stax.Exp(a=2.0, b=0.5)).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 1], 4 * np.exp(0.25 * (0.5 + 0.5 + 0.6) / 2), rtol=1e-13))
    True
    """
    ea, eb = _exact("Exp a", a), _exact("Exp b", b)
    return _make("Exp", (a, b) if (a, b) != (1.0, 1.0) else (), ea * sp.exp(eb * x))


def Gaussian(a: float = 1.0, b: float = -1.0) -> Elementwise:
    """a exp(b x^2) (neural-tangents' ``stax.Gaussian``).

    Parameters
    ----------
    a, b : float, default 1.0, -1.0
        Scale and exponent (real numbers, kept as the exact decimals written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1
    >>> k = stax.serial(stax.Dense(1), stax.Gaussian(a=1.0, b=-0.25)).kernel_fn(x, get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: np.exp(-0.25 * z**2)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9, atol=0))
    True
    """
    ea, eb = _exact("Gaussian a", a), _exact("Gaussian b", b)
    return _make("Gaussian", (a, b) if (a, b) != (1.0, -1.0) else (), ea * sp.exp(eb * x**2))


def Rbf(gamma: float = 1.0) -> Elementwise:
    """sqrt(2) sin(sqrt(2 gamma) x + pi/4) (neural-tangents' ``stax.Rbf``: random Fourier features whose kernel
    is ``exp(-gamma |x - x'|^2)`` for inputs of equal norm).

    Parameters
    ----------
    gamma : float, default 1.0
        The inverse squared length scale (a real number, kept as the exact decimal written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    After ``Dense``, <phi(u) phi(v)> = exp(-gamma (K_uu + K_vv - 2 K_uv)) when K_uu = K_vv:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])   # Dense(2): K = x.x' / 2
    >>> k = stax.serial(stax.Dense(2), stax.Rbf(gamma=0.5)).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 1], np.exp(-0.5 * (0.5 + 0.5 - 2 * 0.3)), rtol=1e-13))
    True
    """
    g = _exact("Rbf gamma", gamma)
    return _make("Rbf", (gamma,) if gamma != 1.0 else (), sp.sqrt(2) * sp.sin(sp.sqrt(2 * g) * x + sp.pi / 4))


def Monomial(degree: int) -> Elementwise:
    """x^degree (neural-tangents' ``stax.Monomial``).

    Parameters
    ----------
    degree : int
        The power, an integer >= 0.

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    <z^6> = 15 K^3 (the sixth Gaussian moment):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = 1
    >>> k = stax.serial(stax.Dense(1), stax.Monomial(3)).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 0], 15.0, rtol=1e-14))
    True
    """
    return _make("Monomial", (degree,), x ** _degree("Monomial", degree))


def RectifiedMonomial(degree: int) -> Elementwise:
    """x^degree for x >= 0, else 0 (neural-tangents' ``stax.RectifiedMonomial``; degree 0: the step function).

    Parameters
    ----------
    degree : int
        The power, an integer >= 0.

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    <max(z, 0)^4> = 3 K^2 / 2:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = 1
    >>> k = stax.serial(stax.Dense(1), stax.RectifiedMonomial(2)).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 0], 1.5, rtol=1e-14))
    True
    """
    d = _degree("RectifiedMonomial", degree)
    expr = sp.Heaviside(x, 1) if d == 0 else sp.Max(0, x) ** d
    return _make("RectifiedMonomial", (degree,), expr)


def Polynomial(coef: Sequence[float]) -> Elementwise:
    """sum_i coef[i] x^i (neural-tangents' ``stax.Polynomial``).

    Parameters
    ----------
    coef : sequence of float
        The coefficients, constant first (at least one; kept as the exact decimals written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    For 1 + x/2 - x^2/4: <phi(z)^2> = 1 + (1/4 - 1/2) + 3/16 at K = 1 (Gaussian moments 1, 3):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = 1
    >>> k = stax.serial(stax.Dense(1), stax.Polynomial([1.0, 0.5, -0.25])).kernel_fn(x, get="nngp")
    >>> bool(np.isclose(k[0, 0], 1 + (0.25 - 0.5) + 3 / 16, rtol=1e-14))
    True
    """
    coef = tuple(coef)
    if not coef:
        raise ValueError("Polynomial coef must have at least one coefficient")
    expr = sum((_exact(f"Polynomial coef[{i}]", c) * x**i for i, c in enumerate(coef)), sp.S.Zero)
    return _make("Polynomial", (coef,), expr)


def Hermite(degree: int) -> Elementwise:
    """He_degree(x) / sqrt(degree!), the normalised probabilists' Hermite polynomial (neural-tangents' ``stax.Hermite``); exact here for inputs of any variance.

    Parameters
    ----------
    degree : int
        The degree, an integer >= 0.

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    At unit variance <phi(u) phi(v)> = rho^degree (Mehler's formula):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2)   # Dense(2): K_uu = 1, rho = 0.6
    >>> k = stax.serial(stax.Dense(2), stax.Hermite(3)).kernel_fn(x, get="nngp")
    >>> bool(np.allclose(k, [[1.0, 0.6**3], [0.6**3, 1.0]], rtol=1e-13))
    True
    """
    d = _degree("Hermite", degree)
    return _make("Hermite", (degree,), sp.hermite_prob(d, x) / sp.sqrt(sp.factorial(d)))


def Tanh() -> Elementwise:
    """tanh(x) (an extension of neural-tangents' layers).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1
    >>> k = stax.serial(stax.Dense(1), stax.Tanh()).kernel_fn(x, get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: np.tanh(z)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9, atol=0))
    True
    """
    return _make("Tanh", (), sp.tanh(x))


def Sigmoid() -> Elementwise:
    """The logistic sigmoid 1 / (1 + exp(-x)) (an extension of neural-tangents' layers).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, special, stats
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1
    >>> k = stax.serial(stax.Dense(1), stax.Sigmoid()).kernel_fn(x, get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: special.expit(z)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9, atol=0))
    True
    """
    return _make("Sigmoid", (), library_activation("sigmoid").expr)


def Softplus() -> Elementwise:
    """log(1 + exp(x)) (an extension of neural-tangents' layers).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1
    >>> k = stax.serial(stax.Dense(1), stax.Softplus()).kernel_fn(x, get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: np.logaddexp(0, z)**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9, atol=0))
    True
    """
    return _make("Softplus", (), library_activation("softplus").expr)


def Swish() -> Elementwise:
    """x / (1 + exp(-x)), SiLU (an extension of neural-tangents' layers).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, special, stats
    >>> from ntk_theory import stax
    >>> x = np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1
    >>> k = stax.serial(stax.Dense(1), stax.Swish()).kernel_fn(x, get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: (z * special.expit(z))**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9, atol=0))
    True
    """
    return _make("Swish", (), library_activation("swish").expr)


def Elu(alpha: float = 1.0) -> Elementwise:
    """ELU: x for x > 0, alpha (exp(x) - 1) for x < 0 (an extension of neural-tangents' layers).

    Parameters
    ----------
    alpha : float, default 1.0
        The scale of the negative branch (a real number, kept as the exact decimal written).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.activations import x
    >>> phi = stax.Elu(0.5).description.expr
    >>> [bool(np.isclose(float(phi.subs(x, v)), v if v > 0 else 0.5 * np.expm1(v), rtol=1e-15)) for v in (-1.5, 2.0)]
    [True, True]
    """
    a = _exact("Elu alpha", alpha)
    return _make("Elu", (alpha,) if alpha != 1.0 else (), library_activation("elu", a).expr)


def Selu() -> Elementwise:
    """SELU: lambda x for x > 0, lambda alpha (exp(x) - 1) for x < 0 with the self-normalising constants lambda = 1.0507..., alpha = 1.6732... (an extension of neural-tangents' layers).

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Examples
    --------
    The constants of Klambauer et al. (2017), lambda = 1.0507009873554804934193349852946 and
    alpha = 1.6732632423543772848170429916717:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.activations import x
    >>> phi = stax.Selu().description.expr
    >>> lam, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    >>> [bool(np.isclose(float(phi.subs(x, v)), lam * (v if v > 0 else alpha * np.expm1(v)), rtol=1e-15))
    ...  for v in (-1.5, 2.0)]
    [True, True]
    """
    return _make("Selu", (), library_activation("selu").expr)


def Activation_(spec) -> Elementwise:
    """Any activation the symbolic layer accepts: a library name (``"relu"``, ``"leaky_relu(1/10)"``),
    an expression in x (``"x*erf(x)"``) or a SymPy expression (an extension of neural-tangents' layers).

    Parameters
    ----------
    spec : str or sympy.Expr
        A library name (:data:`ntk_theory.activations.NAMES`, with arguments), an expression in ``x`` as
        text, or a SymPy expression in :data:`ntk_theory.activations.x`.

    Returns
    -------
    Network
        The layer (:mod:`ntk_theory.stax`'s ``Activation``; this module's ``Activation_`` returns the
        :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps).

    Raises
    ------
    ValueError
        If the text names no activation or is not an expression in ``x`` (as
        :func:`ntk_theory.activations.activation`).

    Examples
    --------
    <phi(z)^2> at K = 1 for phi = x tanh(x), against scipy quadrature:

    >>> import numpy as np
    >>> from scipy import integrate, stats
    >>> from ntk_theory import stax
    >>> layer = stax.Activation("x*tanh(x)")
    >>> layer
    Activation('x*tanh(x)')
    >>> k = stax.serial(stax.Dense(1), layer).kernel_fn(np.array([[1.0, 1.0]]), get="nngp")[0, 0]
    >>> q = integrate.quad(lambda z: (z * np.tanh(z))**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13)[0]
    >>> bool(np.isclose(k, q, rtol=1e-9))
    True
    """
    act = activation(spec)
    shown = spec if isinstance(spec, str) else sp.sstr(act.expr)
    return Elementwise("Activation", (shown,), act.expr)


NEURAL_TANGENTS = ("Relu", "LeakyRelu", "ABRelu", "Abs", "Sign", "Erf", "Sigmoid_like", "Gelu", "Sin", "Cos", "Exp",
                   "Gaussian", "Rbf", "Monomial", "RectifiedMonomial", "Polynomial", "Hermite")
BEYOND = ("Tanh", "Sigmoid", "Softplus", "Swish", "Elu", "Selu", "Activation")
