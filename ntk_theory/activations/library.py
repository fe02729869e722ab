r"""The library of named activations, each a SymPy expression in ``x`` (parameters as exact numbers).

Names take parameters in parentheses: ``"leaky_relu(1/10)"``, ``"relu_power(2)"``,
``"polynomial(1, 0, 3)"`` (coefficients of 1, x, x^2, ...), ``"hermite(3)"`` (probabilists' He_3),
``"elu(1)"``, ``"rbf(1/2)"``.
"""

from __future__ import annotations

from typing import Callable

import sympy as sp

from .activation import Activation, x

_sqrt2 = sp.sqrt(2)


def _pw(neg, pos):
    return sp.Piecewise((neg, x < 0), (pos, True))


# name -> (factory(*params) -> expr, description, default parameters)
LIBRARY: dict[str, tuple[Callable[..., sp.Expr], str, tuple]] = {
    "linear": (lambda: x, "identity, s(x) = x", ()),
    "relu": (lambda: sp.Max(0, x), "rectified linear unit max(0, x)", ()),
    "leaky_relu": (lambda a: _pw(a * x, x), "x for x > 0, a x for x < 0", (sp.Rational(1, 100),)),
    "abrelu": (lambda a, b: _pw(a * x, b * x), "b x for x > 0, a x for x < 0", ()),
    "abs": (lambda: sp.Abs(x), "|x|", ()),
    "step": (lambda: sp.Heaviside(x), "Heaviside step, 1 for x > 0", ()),
    "sign": (lambda: sp.sign(x), "sign(x)", ()),
    "relu_power": (lambda k: sp.Max(0, x) ** k, "rectified monomial max(0, x)^k", ()),
    "monomial": (lambda k: x**k, "x^k", ()),
    "polynomial": (lambda *c: sum(ci * x**i for i, ci in enumerate(c)), "sum_i c_i x^i", ()),
    "hermite": (lambda k: sp.hermite_prob(int(k), x), "probabilists' Hermite polynomial He_k(x)", ()),
    "erf": (lambda: sp.erf(x), "error function", ()),
    "tanh": (lambda: sp.tanh(x), "hyperbolic tangent", ()),
    "sigmoid": (lambda: 1 / (1 + sp.exp(-x)), "logistic 1 / (1 + e^-x)", ()),
    "softplus": (lambda: sp.log(1 + sp.exp(x)), "log(1 + e^x)", ()),
    "gelu": (lambda: x * (1 + sp.erf(x / _sqrt2)) / 2, "x Phi(x), exact erf form", ()),
    "gelu_tanh": (
        lambda: x * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Rational(44715, 10**6) * x**3))) / 2,
        "tanh approximation of GELU (Hendrycks & Gimpel 2016)",
        (),
    ),
    "swish": (lambda: x / (1 + sp.exp(-x)), "x sigmoid(x) (SiLU)", ()),
    "elu": (lambda a: _pw(a * (sp.exp(x) - 1), x), "x for x > 0, a (e^x - 1) for x < 0", (sp.S.One,)),
    "selu": (
        lambda: sp.Float("1.0507009873554804934193349852946") * _pw(sp.Float("1.6732632423543772848170429916717") * (sp.exp(x) - 1), x),
        "scaled ELU, Klambauer et al. 2017 constants",
        (),
    ),
    "sin": (lambda: sp.sin(x), "sine", ()),
    "cos": (lambda: sp.cos(x), "cosine", ()),
    "exp": (lambda: sp.exp(x), "exponential", ()),
    "gaussian": (lambda a=sp.Rational(-1, 2): sp.exp(a * x**2), "exp(a x^2), a < 0 (default -1/2)", ()),
    "rbf": (
        lambda g=sp.S.One: _sqrt2 * sp.sin(sp.sqrt(2 * g) * x + sp.pi / 4),
        "sqrt(2) sin(sqrt(2 gamma) x + pi/4), whose kernel is exp(-gamma (k11 + k22 - 2 k12))",
        (),
    ),
}
ALIASES = {"identity": "linear", "silu": "swish", "logistic": "sigmoid", "heaviside": "step", "gelu_erf": "gelu"}
NAMES = tuple(sorted(LIBRARY))


def library_activation(name: str, *params) -> Activation:
    """The library activation ``name`` with exact parameters (ints, Rationals or SymPy numbers).

    Parameters
    ----------
    name : str
        A library name (:data:`NAMES`) or an alias (``identity``, ``silu``, ``logistic``, ``heaviside``,
        ``gelu_erf``).
    *params : int, float or sympy number
        The parameters (floats become the exact decimals written); none: the library's defaults.

    Returns
    -------
    Activation
        Named ``name(p1, ...)`` when parameters are given, with its library description as the source.

    Raises
    ------
    ValueError
        If the name is unknown or the parameters do not fit the activation.

    Examples
    --------
    >>> import numpy as np
    >>> from ntk_theory.activations import library_activation
    >>> act = library_activation("leaky_relu", 0.2)
    >>> act.name, act.params
    ('leaky_relu(1/5)', (1/5,))
    >>> z = np.array([-1.0, 3.0])
    >>> bool(np.allclose(library_activation("silu").numpy(z), z / (1 + np.exp(-z)), rtol=1e-15))
    True
    """
    key = ALIASES.get(name, name)
    if key not in LIBRARY:
        raise ValueError(f"unknown activation {name!r}; library names: {', '.join(NAMES)}")
    factory, _, defaults = LIBRARY[key]
    params = tuple(sp.nsimplify(p, rational=True) if isinstance(p, float) else sp.sympify(p) for p in params) or defaults
    try:
        expr = factory(*params)
    except TypeError:
        raise ValueError(f"activation {key!r} got parameters {params}; see its description: {LIBRARY[key][1]}") from None
    label = key if not params else f"{key}({', '.join(map(str, params))})"
    return Activation(label, sp.sympify(expr), source=f"library: {LIBRARY[key][1]}", params=params)
