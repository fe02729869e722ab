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
    return _make("Relu", (), sp.Max(0, x))


def LeakyRelu(alpha: float) -> Elementwise:
    a = _exact("LeakyRelu alpha", alpha)
    return _make("LeakyRelu", (alpha,), sp.Piecewise((a * x, x < 0), (x, True)))


def ABRelu(a: float, b: float) -> Elementwise:
    ea, eb = _exact("ABRelu a", a), _exact("ABRelu b", b)
    return _make("ABRelu", (a, b), sp.Piecewise((ea * x, x < 0), (eb * x, True)))


def Abs() -> Elementwise:
    return _make("Abs", (), sp.Abs(x))


def Sign() -> Elementwise:
    return _make("Sign", (), sp.sign(x))


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    ea, eb, ec = (_exact(f"Erf {n}", v) for n, v in (("a", a), ("b", b), ("c", c)))
    return _make("Erf", (a, b, c) if (a, b, c) != (1.0, 1.0, 0.0) else (), ea * sp.erf(eb * x) + ec)


def Sigmoid_like() -> Elementwise:
    layer = Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)
    return Elementwise("Sigmoid_like", (), layer.expr)


def Gelu(approximate: bool = False) -> Elementwise:
    if not isinstance(approximate, bool):
        raise ValueError(f"Gelu approximate must be True or False; got {approximate!r}")
    expr = library_activation("gelu_tanh" if approximate else "gelu").expr
    return _make("Gelu", (approximate,) if approximate else (), expr)


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    ea, eb, ec = (_exact(f"Sin {n}", v) for n, v in (("a", a), ("b", b), ("c", c)))
    return _make("Sin", (a, b, c) if (a, b, c) != (1.0, 1.0, 0.0) else (), ea * sp.sin(eb * x + ec))


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Elementwise:
    ea, eb, ec = (_exact(f"Cos {n}", v) for n, v in (("a", a), ("b", b), ("c", c)))
    return _make("Cos", (a, b, c) if (a, b, c) != (1.0, 1.0, 0.0) else (), ea * sp.cos(eb * x + ec))


def Exp(a: float = 1.0, b: float = 1.0) -> Elementwise:
    ea, eb = _exact("Exp a", a), _exact("Exp b", b)
    return _make("Exp", (a, b) if (a, b) != (1.0, 1.0) else (), ea * sp.exp(eb * x))


def Gaussian(a: float = 1.0, b: float = -1.0) -> Elementwise:
    ea, eb = _exact("Gaussian a", a), _exact("Gaussian b", b)
    return _make("Gaussian", (a, b) if (a, b) != (1.0, -1.0) else (), ea * sp.exp(eb * x**2))


def Rbf(gamma: float = 1.0) -> Elementwise:
    g = _exact("Rbf gamma", gamma)
    return _make("Rbf", (gamma,) if gamma != 1.0 else (), sp.sqrt(2) * sp.sin(sp.sqrt(2 * g) * x + sp.pi / 4))


def Monomial(degree: int) -> Elementwise:
    return _make("Monomial", (degree,), x ** _degree("Monomial", degree))


def RectifiedMonomial(degree: int) -> Elementwise:
    d = _degree("RectifiedMonomial", degree)
    expr = sp.Heaviside(x, 1) if d == 0 else sp.Max(0, x) ** d
    return _make("RectifiedMonomial", (degree,), expr)


def Polynomial(coef: Sequence[float]) -> Elementwise:
    coef = tuple(coef)
    if not coef:
        raise ValueError("Polynomial coef must have at least one coefficient")
    expr = sum((_exact(f"Polynomial coef[{i}]", c) * x**i for i, c in enumerate(coef)), sp.S.Zero)
    return _make("Polynomial", (coef,), expr)


def Hermite(degree: int) -> Elementwise:
    d = _degree("Hermite", degree)
    return _make("Hermite", (degree,), sp.hermite_prob(d, x) / sp.sqrt(sp.factorial(d)))


def Tanh() -> Elementwise:
    return _make("Tanh", (), sp.tanh(x))


def Sigmoid() -> Elementwise:
    return _make("Sigmoid", (), library_activation("sigmoid").expr)


def Softplus() -> Elementwise:
    return _make("Softplus", (), library_activation("softplus").expr)


def Swish() -> Elementwise:
    return _make("Swish", (), library_activation("swish").expr)


def Elu(alpha: float = 1.0) -> Elementwise:
    a = _exact("Elu alpha", alpha)
    return _make("Elu", (alpha,) if alpha != 1.0 else (), library_activation("elu", a).expr)


def Selu() -> Elementwise:
    return _make("Selu", (), library_activation("selu").expr)


def Activation_(spec) -> Elementwise:
    """Any activation the symbolic layer accepts: a library name (``"relu"``, ``"leaky_relu(1/10)"``),
    an expression in x (``"x*erf(x)"``) or a SymPy expression."""
    act = activation(spec)
    shown = spec if isinstance(spec, str) else sp.sstr(act.expr)
    return Elementwise("Activation", (shown,), act.expr)


NEURAL_TANGENTS = ("Relu", "LeakyRelu", "ABRelu", "Abs", "Sign", "Erf", "Sigmoid_like", "Gelu", "Sin", "Cos", "Exp",
                   "Gaussian", "Rbf", "Monomial", "RectifiedMonomial", "Polynomial", "Hermite")
BEYOND = ("Tanh", "Sigmoid", "Softplus", "Swish", "Elu", "Selu", "Activation")
