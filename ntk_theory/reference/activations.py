"""Hand-written NumPy activations (value, derivative) for the reference network.

They are written independently of the symbolic layer on purpose: the reference network is the
ground truth the SymPy derivations are checked against, so it must not share their code.

An activation for the reference network is anything :func:`numpy_activation` accepts:

* a library name (``"relu"``, ``"tanh"``, ``"erf"``, ``"linear"``, ... see :data:`NAMES`), optionally
  with parameters, e.g. ``"leaky_relu(0.1)"`` or ``"elu(1.0)"``;
* a pair ``(value, derivative)`` of NumPy ufunc-like callables;
* a :class:`NumpyActivation`;
* any object with a ``numpy_activation()`` method returning one of the above (the hook through
  which the toolkit's symbolic activations plug in).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np
from scipy import special

Array = np.ndarray


@dataclass(frozen=True)
class NumpyActivation:
    """An elementwise activation ``s`` with its derivative ``s'``, both NumPy callables."""

    name: str
    value: Callable[[Array], Array]
    derivative: Callable[[Array], Array]

    def __call__(self, z: Array) -> Array:
        return self.value(z)

    def __repr__(self) -> str:
        return f"NumpyActivation({self.name!r})"


_SQRT_2 = np.sqrt(2.0)
_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)


def _sigmoid(z):
    return special.expit(z)


def _leaky_relu(a: float = 0.01):
    return (lambda z: np.where(z > 0, z, a * z), lambda z: np.where(z > 0, 1.0, a))


def _elu(alpha: float = 1.0):
    return (
        lambda z: np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0))),
        lambda z: np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0))),
    )


# name -> factory(*params) -> (value, derivative)
_LIBRARY: dict[str, Callable[..., tuple[Callable, Callable]]] = {
    "linear": lambda: (lambda z: z * 1.0, lambda z: np.ones_like(z)),
    "relu": lambda: (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
    "leaky_relu": _leaky_relu,
    "abs": lambda: (np.abs, np.sign),
    "tanh": lambda: (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "erf": lambda: (special.erf, lambda z: (2.0 / np.sqrt(np.pi)) * np.exp(-z * z)),
    "sigmoid": lambda: (_sigmoid, lambda z: _sigmoid(z) * _sigmoid(-z)),
    "softplus": lambda: (lambda z: np.logaddexp(0.0, z), _sigmoid),
    "swish": lambda: (lambda z: z * _sigmoid(z), lambda z: _sigmoid(z) * (1.0 + z * _sigmoid(-z))),
    "gelu": lambda: (
        lambda z: 0.5 * z * (1.0 + special.erf(z / _SQRT_2)),
        lambda z: 0.5 * (1.0 + special.erf(z / _SQRT_2)) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi),
    ),
    "elu": _elu,
    "sin": lambda: (np.sin, np.cos),
    "cos": lambda: (np.cos, lambda z: -np.sin(z)),
}
_ALIASES = {"identity": "linear", "silu": "swish", "logistic": "sigmoid"}

NAMES = tuple(sorted(_LIBRARY))


def _parse(name: str) -> tuple[str, tuple[float, ...]]:
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", name)
    if not m:
        raise ValueError(f"cannot parse activation {name!r}; expected a name like 'relu' or 'leaky_relu(0.1)'")
    base, args = m.group(1).lower(), m.group(2)
    try:  # numbers as the symbolic layer writes them too: 0.1, 1e-2, 1/2
        params = tuple(float(Fraction(a.strip())) for a in args.split(",")) if args and args.strip() else ()
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"cannot parse the parameters of activation {name!r}: expected numbers such as 0.1 or 1/2") from None
    return _ALIASES.get(base, base), params


@functools.singledispatch
def numpy_activation(act) -> NumpyActivation:
    """Turn a name, a ``(value, derivative)`` pair or an activation object into a NumpyActivation."""
    hook = getattr(act, "numpy_activation", None)
    if callable(hook):
        return numpy_activation(hook())
    raise ValueError(
        f"unknown activation {act!r}: give a library name ({', '.join(NAMES)}), "
        "a (value, derivative) pair of NumPy callables, or an activation object"
    )


@numpy_activation.register
def _(act: NumpyActivation) -> NumpyActivation:
    return act


@numpy_activation.register
def _(act: str) -> NumpyActivation:
    base, params = _parse(act)
    if base not in _LIBRARY:
        raise ValueError(f"unknown activation {act!r}; known names: {', '.join(NAMES)}")
    try:
        value, derivative = _LIBRARY[base](*params)
    except TypeError:
        raise ValueError(f"activation {base!r} does not take parameters {params}") from None
    return NumpyActivation(act.strip(), value, derivative)


@numpy_activation.register(tuple)
@numpy_activation.register(list)
def _(act) -> NumpyActivation:
    if len(act) != 2 or not all(callable(f) for f in act):
        raise ValueError("an activation pair must be (value, derivative), two callables")
    value, derivative = act
    name = getattr(value, "__name__", "custom")
    return NumpyActivation(name, value, derivative)
