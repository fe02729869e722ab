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
import textwrap
from typing import Sequence

import sympy as sp

from ..activations import Activation, activation, checked, library_activation, x
from ..docstrings import fill
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


def _scaled(name: str, args: tuple, defaults: tuple, fn) -> Elementwise:
    """``a fn(b x + c)`` (Sin, Cos) or ``a fn(b x)`` (Exp) with the arguments ``args`` exact; shown without
    arguments when they are the defaults."""
    exact = [_exact(f"{name} {n}", v) for n, v in zip("abc", args)]
    inner = exact[1] * x + (exact[2] if len(exact) > 2 else 0)
    return _make(name, args if args != defaults else (), exact[0] * fn(inner))


# ---------------------------------------------------------------------- docstrings
# The constructors' docstrings share their Returns section and the frame of their example (the NNGP kernel of
# serial(Dense(width), layer) at fixed inputs, checked against a closed form or scipy quadrature): written
# once here and filled in per constructor (as scipy.stats' doccer does).

_RETURNS = """Returns
-------
Network
    The layer (:mod:`ntk_theory.stax`'s constructor; this module's returns the
    :class:`~ntk_theory.architecture.layers.Elementwise` description it wraps)."""

#: the examples' inputs: one input after Dense(1) (K = 1), or two after Dense(2) (K = x.x'/2, rho = 0.6)
_INPUTS = {1: "np.array([[1.0, 1.0]])                # Dense(1): K = x.x / 2 = 1",
           2: "np.array([[1.0, 0.0], [0.6, 0.8]])   # Dense(2): K = x.x' / 2"}


def _completed(doc: str, examples: str | None = None) -> str:
    """``doc`` with the shared Returns section (before its Examples section) and ``examples`` appended."""
    if doc is None:                            # python -OO
        return None
    doc = doc.rstrip()
    returns = textwrap.indent(_RETURNS, "    ")
    if examples is None:
        head, sep, tail = doc.partition("\n    Examples\n")
        return f"{head}\n{returns}\n{sep}{tail}\n    " if sep else f"{doc}\n\n{returns}\n    "
    return f"{doc}\n\n{returns}\n\n" + textwrap.indent(f"Examples\n--------\n{examples}", "    ") + "\n    "


def _documented(claim: str | None = None, layer: str = "", *lines: str, width: int = 1, inputs: str | None = None,
                imports: Sequence[str] = (), phi: str | None = None):
    """Completes a constructor's docstring: the shared Returns section, and (with ``claim``) an Examples
    section: ``claim``, the NNGP kernel ``k`` of ``serial(Dense(width), stax.<layer>)`` at ``inputs``
    (default ``_INPUTS[width]``), then the doctest ``lines`` checking ``k`` against the claim.  Without
    ``claim`` the docstring's own Examples section stays; its line ``%(phi)s`` becomes the lines that
    set ``phi`` to the expression of ``stax.<phi>``."""
    examples = None
    if claim is not None:
        examples = "\n".join([
            claim, "", ">>> import numpy as np", *imports, ">>> from ntk_theory import stax",
            f">>> x = {inputs or _INPUTS[width]}",
            f'>>> k = stax.serial(stax.Dense({width}), stax.{layer}).kernel_fn(x, get="nngp")', *lines])

    def complete(constructor):
        doc = constructor.__doc__
        if phi is not None:
            doc = fill(doc, phi=">>> from ntk_theory import stax\n>>> from ntk_theory.activations import x\n"
                                f">>> phi = stax.{phi}.description.expr")
        constructor.__doc__ = _completed(doc, examples)
        return constructor

    return complete


def _quadrature(layer: str, integrand: str):
    """:func:`_documented` for a kernel without a closed form: k at K = 1 against scipy quadrature of
    ``integrand`` (an expression in z; ``special.`` is scipy.special) squared over N(0, 1)."""
    return _documented(
        "Its NNGP after ``Dense(1)`` at K = 1 is <phi(z)^2> over z ~ N(0, 1), here by scipy quadrature:", layer,
        f">>> q = integrate.quad(lambda z: {integrand}**2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13, "
        "epsrel=1e-13)[0]",
        ">>> bool(np.isclose(k[0, 0], q, rtol=1e-9, atol=0))", "True",
        imports=(f">>> from scipy import integrate, {'special, ' if 'special.' in integrand else ''}stats",))


# ---------------------------------------------------------------------- constructors

@_documented("The arc-cosine kernel: <max(z, 0)^2> = K / 2, and at correlation rho\n"
             "(sqrt(1 - rho^2) + (pi - arccos rho) rho) K / (2 pi):", "Relu()",
             ">>> rho = 0.6",
             ">>> closed = np.array([[0.25, (np.sqrt(1 - rho**2) + (np.pi - np.arccos(rho)) * rho) / (4 * np.pi)]])",
             ">>> bool(np.allclose(k[0], [0.25, closed[0, 1]], rtol=1e-13))", "True", width=2)
def Relu() -> Elementwise:
    """ReLU, max(x, 0) (neural-tangents' ``stax.Relu``)."""
    return _make("Relu", (), sp.Max(0, x))


@_documented("<phi(z)^2> = (1 + alpha^2) K / 2:", "LeakyRelu(0.1)",
             ">>> stax.LeakyRelu(0.1).description.expr", "Piecewise((x/10, x < 0), (x, True))",
             ">>> bool(np.isclose(k[0, 0], (1 + 0.1**2) / 2, rtol=1e-14))", "True")
def LeakyRelu(alpha: float) -> Elementwise:
    """Leaky ReLU: x for x > 0, alpha x for x < 0 (neural-tangents' ``stax.LeakyRelu``).

    Parameters
    ----------
    alpha : float
        The slope for x < 0 (a real number; numbers are kept as the exact decimals written: 0.1 -> 1/10).
    """
    a = _exact("LeakyRelu alpha", alpha)
    return _make("LeakyRelu", (alpha,), sp.Piecewise((a * x, x < 0), (x, True)))


@_documented("<phi(z)^2> = (a^2 + b^2) K / 2:", "ABRelu(-0.5, 2.0)",
             ">>> bool(np.isclose(k[0, 0], ((-0.5)**2 + 2.0**2) / 2, rtol=1e-14))", "True")
def ABRelu(a: float, b: float) -> Elementwise:
    """a min(x, 0) + b max(x, 0) (neural-tangents' ``stax.ABRelu``).

    Parameters
    ----------
    a, b : float
        The slopes for x < 0 and x > 0 (real numbers, kept as the exact decimals written).
    """
    ea, eb = _exact("ABRelu a", a), _exact("ABRelu b", b)
    return _make("ABRelu", (a, b), sp.Piecewise((ea * x, x < 0), (eb * x, True)))


@_documented("``<|u| |v|> = 2 (sqrt(1 - rho^2) + rho arcsin rho) / pi`` for unit variances and correlation rho:",
             "Abs()", ">>> bool(np.isclose(k[0, 1], 2 * (np.sqrt(1 - 0.36) + 0.6 * np.arcsin(0.6)) / np.pi, rtol=1e-13))",
             "True", width=2, inputs="np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2)   # Dense(2): K = x.x' / 2, rho = 0.6")
def Abs() -> Elementwise:
    """The absolute value ``|x|`` (neural-tangents' ``stax.Abs``)."""
    return _make("Abs", (), sp.Abs(x))


@_documented("<sign(u) sign(v)> = (2 / pi) arcsin rho:", "Sign()",
             ">>> bool(np.isclose(k[0, 1], 2 / np.pi * np.arcsin(0.6), rtol=1e-13))", "True", width=2)
def Sign() -> Elementwise:
    """sign(x) (neural-tangents' ``stax.Sign``)."""
    return _make("Sign", (), sp.sign(x))


@_quadrature("Erf(a=2.0, b=0.5, c=0.1)", "(2 * special.erf(z / 2) + 0.1)")
def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """a erf(b x) + c (neural-tangents' ``stax.Erf``).

    Parameters
    ----------
    a, b, c : float, default 1.0, 1.0, 0.0
        Scale, input scale and shift (real numbers, kept as the exact decimals written).
    """
    ea, eb, ec = (_exact(f"Erf {n}", v) for n, v in (("a", a), ("b", b), ("c", c)))
    return _make("Erf", (a, b, c) if (a, b, c) != (1.0, 1.0, 0.0) else (), ea * sp.erf(eb * x) + ec)


@_documented(phi="Sigmoid_like()")
def Sigmoid_like() -> Elementwise:
    """A sigmoid made of erf: ``Erf(a=1/2, b=1/2.4020563531719796, c=1/2)`` (neural-tangents' ``stax.Sigmoid_like``).

    Examples
    --------
    >>> from math import erf
    %(phi)s
    >>> abs(float(phi.subs(x, 0.7)) - (0.5 * erf(0.7 / 2.4020563531719796) + 0.5)) < 1e-15
    True
    """
    layer = Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)
    return Elementwise("Sigmoid_like", (), layer.expr)


@_documented(phi="Gelu()")
def Gelu(approximate: bool = False) -> Elementwise:
    """GELU, x Phi(x) with Phi the standard normal CDF (neural-tangents' ``stax.Gelu``).

    Parameters
    ----------
    approximate : bool, default False
        True: the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Examples
    --------
    >>> from scipy import stats
    %(phi)s
    >>> bool(abs(float(phi.subs(x, -0.7)) - (-0.7 * stats.norm.cdf(-0.7))) < 1e-15)
    True
    >>> stax.Gelu(approximate=True)
    Gelu(True)
    """
    if not isinstance(approximate, bool):
        raise ValueError(f"Gelu approximate must be True or False; got {approximate!r}")
    expr = library_activation("gelu_tanh" if approximate else "gelu").expr
    return _make("Gelu", (approximate,) if approximate else (), expr)


# Sin's Parameters section repeats in Cos: numpydoc documents each constructor's own parameters
@_quadrature("Sin(a=1.0, b=2.0, c=0.3)", "np.sin(2 * z + 0.3)")
def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """a sin(b x + c) (neural-tangents' ``stax.Sin``).

    Parameters
    ----------
    a, b, c : float, default 1.0, 1.0, 0.0
        Scale, frequency and phase (real numbers, kept as the exact decimals written).
    """
    return _scaled("Sin", (a, b, c), (1.0, 1.0, 0.0), sp.sin)


# Cos's Parameters section repeats Sin's: numpydoc documents each constructor's own parameters
@_documented("<cos(u) cos(v)> = exp(-(K_uu + K_vv) / 2) cosh(K_uv):", "Cos()",
             ">>> bool(np.isclose(k[0, 1], np.exp(-0.5) * np.cosh(0.3), rtol=1e-13))", "True", width=2)
def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    """a cos(b x + c) (neural-tangents' ``stax.Cos``).

    Parameters
    ----------
    a, b, c : float, default 1.0, 1.0, 0.0
        Scale, frequency and phase (real numbers, kept as the exact decimals written).
    """
    return _scaled("Cos", (a, b, c), (1.0, 1.0, 0.0), sp.cos)


@_documented("<a^2 exp(b u + b v)> = a^2 exp(b^2 (K_uu + K_vv + 2 K_uv) / 2) (the log-normal mean):",
             "Exp(a=2.0, b=0.5)",
             ">>> bool(np.isclose(k[0, 1], 4 * np.exp(0.25 * (0.5 + 0.5 + 0.6) / 2), rtol=1e-13))", "True", width=2)
def Exp(a: float = 1.0, b: float = 1.0) -> Elementwise:
    """a exp(b x) (neural-tangents' ``stax.Exp``).

    Parameters
    ----------
    a, b : float, default 1.0, 1.0
        Scale and rate (real numbers, kept as the exact decimals written).
    """
    return _scaled("Exp", (a, b), (1.0, 1.0), sp.exp)


@_quadrature("Gaussian(a=1.0, b=-0.25)", "np.exp(-0.25 * z**2)")
def Gaussian(a: float = 1.0, b: float = -1.0) -> Elementwise:
    """a exp(b x^2) (neural-tangents' ``stax.Gaussian``).

    Parameters
    ----------
    a, b : float, default 1.0, -1.0
        Scale and exponent (real numbers, kept as the exact decimals written).
    """
    ea, eb = _exact("Gaussian a", a), _exact("Gaussian b", b)
    return _make("Gaussian", (a, b) if (a, b) != (1.0, -1.0) else (), ea * sp.exp(eb * x**2))


@_documented("After ``Dense``, <phi(u) phi(v)> = exp(-gamma (K_uu + K_vv - 2 K_uv)) when K_uu = K_vv:", "Rbf(gamma=0.5)",
             ">>> bool(np.isclose(k[0, 1], np.exp(-0.5 * (0.5 + 0.5 - 2 * 0.3)), rtol=1e-13))", "True", width=2)
def Rbf(gamma: float = 1.0) -> Elementwise:
    """sqrt(2) sin(sqrt(2 gamma) x + pi/4) (neural-tangents' ``stax.Rbf``: random Fourier features whose kernel
    is ``exp(-gamma |x - x'|^2)`` for inputs of equal norm).

    Parameters
    ----------
    gamma : float, default 1.0
        The inverse squared length scale (a real number, kept as the exact decimal written).
    """
    g = _exact("Rbf gamma", gamma)
    return _make("Rbf", (gamma,) if gamma != 1.0 else (), sp.sqrt(2) * sp.sin(sp.sqrt(2 * g) * x + sp.pi / 4))


@_documented("<z^6> = 15 K^3 (the sixth Gaussian moment):", "Monomial(3)",
             ">>> bool(np.isclose(k[0, 0], 15.0, rtol=1e-14))", "True")
def Monomial(degree: int) -> Elementwise:
    """x^degree (neural-tangents' ``stax.Monomial``).

    Parameters
    ----------
    degree : int
        The power, an integer >= 0.
    """
    return _make("Monomial", (degree,), x ** _degree("Monomial", degree))


@_documented("<max(z, 0)^4> = 3 K^2 / 2:", "RectifiedMonomial(2)",
             ">>> bool(np.isclose(k[0, 0], 1.5, rtol=1e-14))", "True")
def RectifiedMonomial(degree: int) -> Elementwise:
    """x^degree for x >= 0, else 0 (neural-tangents' ``stax.RectifiedMonomial``; degree 0: the step function).

    Parameters
    ----------
    degree : int
        The power, an integer >= 0.
    """
    d = _degree("RectifiedMonomial", degree)
    expr = sp.Heaviside(x, 1) if d == 0 else sp.Max(0, x) ** d
    return _make("RectifiedMonomial", (degree,), expr)


@_documented("For 1 + x/2 - x^2/4: <phi(z)^2> = 1 + (1/4 - 1/2) + 3/16 at K = 1 (Gaussian moments 1, 3):",
             "Polynomial([1.0, 0.5, -0.25])",
             ">>> bool(np.isclose(k[0, 0], 1 + (0.25 - 0.5) + 3 / 16, rtol=1e-14))", "True")
def Polynomial(coef: Sequence[float]) -> Elementwise:
    """sum_i coef[i] x^i (neural-tangents' ``stax.Polynomial``).

    Parameters
    ----------
    coef : sequence of float
        The coefficients, constant first (at least one; kept as the exact decimals written).
    """
    coef = tuple(coef)
    if not coef:
        raise ValueError("Polynomial coef must have at least one coefficient")
    expr = sum((_exact(f"Polynomial coef[{i}]", c) * x**i for i, c in enumerate(coef)), sp.S.Zero)
    return _make("Polynomial", (coef,), expr)


@_documented("At unit variance <phi(u) phi(v)> = rho^degree (Mehler's formula):", "Hermite(3)",
             ">>> bool(np.allclose(k, [[1.0, 0.6**3], [0.6**3, 1.0]], rtol=1e-13))", "True", width=2,
             inputs="np.array([[1.0, 0.0], [0.6, 0.8]]) * np.sqrt(2)   # Dense(2): K_uu = 1, rho = 0.6")
def Hermite(degree: int) -> Elementwise:
    """He_degree(x) / sqrt(degree!), the normalised probabilists' Hermite polynomial (neural-tangents' ``stax.Hermite``); exact here for inputs of any variance.

    Parameters
    ----------
    degree : int
        The degree, an integer >= 0.
    """
    d = _degree("Hermite", degree)
    return _make("Hermite", (degree,), sp.hermite_prob(d, x) / sp.sqrt(sp.factorial(d)))


@_quadrature("Tanh()", "np.tanh(z)")
def Tanh() -> Elementwise:
    """tanh(x) (an extension of neural-tangents' layers)."""
    return _make("Tanh", (), sp.tanh(x))


@_quadrature("Sigmoid()", "special.expit(z)")
def Sigmoid() -> Elementwise:
    """The logistic sigmoid 1 / (1 + exp(-x)) (an extension of neural-tangents' layers)."""
    return _make("Sigmoid", (), library_activation("sigmoid").expr)


@_quadrature("Softplus()", "np.logaddexp(0, z)")
def Softplus() -> Elementwise:
    """log(1 + exp(x)) (an extension of neural-tangents' layers)."""
    return _make("Softplus", (), library_activation("softplus").expr)


@_quadrature("Swish()", "(z * special.expit(z))")
def Swish() -> Elementwise:
    """x / (1 + exp(-x)), SiLU (an extension of neural-tangents' layers)."""
    return _make("Swish", (), library_activation("swish").expr)


@_documented(phi="Elu(0.5)")
def Elu(alpha: float = 1.0) -> Elementwise:
    """ELU: x for x > 0, alpha (exp(x) - 1) for x < 0 (an extension of neural-tangents' layers).

    Parameters
    ----------
    alpha : float, default 1.0
        The scale of the negative branch (a real number, kept as the exact decimal written).

    Examples
    --------
    >>> import numpy as np
    %(phi)s
    >>> [bool(np.isclose(float(phi.subs(x, v)), v if v > 0 else 0.5 * np.expm1(v), rtol=1e-15)) for v in (-1.5, 2.0)]
    [True, True]
    """
    a = _exact("Elu alpha", alpha)
    return _make("Elu", (alpha,) if alpha != 1.0 else (), library_activation("elu", a).expr)


@_documented(phi="Selu()")
def Selu() -> Elementwise:
    """SELU: lambda x for x > 0, lambda alpha (exp(x) - 1) for x < 0 with the self-normalising constants lambda = 1.0507..., alpha = 1.6732... (an extension of neural-tangents' layers).

    Examples
    --------
    The constants of Klambauer et al. (2017), lambda = 1.0507009873554804934193349852946 and
    alpha = 1.6732632423543772848170429916717:

    >>> import numpy as np
    %(phi)s
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
