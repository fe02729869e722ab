"""NumPy activations (value, derivative) for the reference network.

The library names below (:data:`NAMES`) are hand-written NumPy, independent of the symbolic layer
on purpose: the reference network is the ground truth the SymPy derivations are checked against,
so for these it does not share their code.  Every other activation the symbolic layer accepts
(``"selu"``, ``"gelu_tanh"``, ``"abrelu(1/2, 2)"``, ``"hermite(3)"``, expressions such as
``"x*erf(x)"`` or ``"relu(x)**2"``, SymPy expressions, :class:`ntk_theory.activations.Activation`)
gets a generated pair: s(x) is the expression printed to NumPy/SciPy by ``sympy.lambdify`` and
s'(x) its SymPy derivative, the almost-everywhere one (Dirac deltas at jumps dropped, so a step
contributes no gradient, as backpropagation through a finite network computes).  A generated
pair evaluates in float64 to the rounding of the NumPy functions it calls; it raises ValueError
where it returns NaN at a finite input instead of passing the NaN on.

The second and third derivatives s'' and s''' (for the dNTK and ddNTK, :mod:`~ntk_theory.reference.dntk`) are hand-written
for the library names, the almost-everywhere ones (0 for relu, leaky_relu and abs, as backpropagation
computes), and for a generated pair the SymPy derivatives of order 2 and 3 with Dirac deltas dropped,
printed to NumPy on first use.  A user pair ``(value, derivative)`` has none (give the four
``(s, s', s'', s''')`` for the dNTK); :meth:`NumpyActivation.higher` raises ValueError then.

An activation for the reference network is anything :func:`numpy_activation` accepts:

* a library name (``"relu"``, ``"tanh"``, ``"erf"``, ``"linear"``, ... see :data:`NAMES`), optionally
  with parameters, e.g. ``"leaky_relu(0.1)"`` or ``"elu(1.0)"``;
* any other name or expression the symbolic layer accepts (generated pair);
* a pair ``(value, derivative)`` of NumPy ufunc-like callables (or four, s to its third derivative);
* a :class:`NumpyActivation`;
* an object with a ``numpy_activation()`` method returning one of the above;
* a symbolic activation or SymPy expression in x (generated pair).
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
    """An elementwise activation ``s`` with its derivative ``s'``, both NumPy callables, and optionally
    ``second`` = s'' and ``third`` = s''' (None where unknown).

    Parameters
    ----------
    name : str
    value, derivative : callable
        s and s', elementwise on arrays.
    second, third : callable, optional
        s'' and s'''.

    Examples
    --------
    >>> import numpy as np
    >>> act = NumpyActivation("square", lambda z: z ** 2, lambda z: 2 * z)
    >>> act(np.array([3.0])), act.higher(1)(np.array([3.0]))
    (array([9.]), array([6.]))
    """

    name: str
    value: Callable[[Array], Array]
    derivative: Callable[[Array], Array]
    second: Callable[[Array], Array] | None = None
    third: Callable[[Array], Array] | None = None

    def __call__(self, z: Array) -> Array:
        return self.value(z)

    def higher(self, order: int) -> Callable[[Array], Array]:
        """The derivative of ``order`` 1, 2 or 3 as a NumPy callable; ValueError if this activation has none.

        Parameters
        ----------
        order : {1, 2, 3}

        Returns
        -------
        callable

        Raises
        ------
        ValueError
            If the derivative is not known.

        Examples
        --------
        Against a central finite difference of the library tanh's first derivative:

        >>> import numpy as np
        >>> t = numpy_activation("tanh"); z, h = np.array([0.3, -1.2]), 1e-5
        >>> bool(np.allclose(t.higher(2)(z), (t.derivative(z + h) - t.derivative(z - h)) / (2 * h), atol=1e-9))
        True
        """
        f = {1: self.derivative, 2: self.second, 3: self.third}.get(order)
        if f is None:
            raise ValueError(f"activation {self.name!r} has no derivative of order {order}: give a library name, "
                             "an expression, or four callables (s, s', s'', s''')")
        return f

    def __repr__(self) -> str:
        return f"NumpyActivation({self.name!r})"


_SQRT_2 = np.sqrt(2.0)
_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)


def _sigmoid(z):
    return special.expit(z)


def _sig1(z):
    return _sigmoid(z) * _sigmoid(-z)


def _sig2(z):
    return _sig1(z) * (1.0 - 2.0 * _sigmoid(z))


def _sig3(z):
    p = _sigmoid(z)
    return _sig1(z) * (1.0 - 6.0 * p + 6.0 * p * p)


def _zero(z):
    return np.zeros_like(np.asarray(z, dtype=np.float64))


def _leaky_relu(a: float = 0.01):
    return (lambda z: np.where(z > 0, z, a * z), lambda z: np.where(z > 0, 1.0, a), _zero, _zero)


def _elu(alpha: float = 1.0):
    def tail(z):
        return np.where(z > 0, 0.0, alpha * np.exp(np.minimum(z, 0.0)))

    return (
        lambda z: np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0))),
        lambda z: np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0))),
        tail,
        tail,
    )


def _phi(z):
    return np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def _sech2(z):
    return 1.0 / np.cosh(z) ** 2


def _erf1(z):
    return (2.0 / np.sqrt(np.pi)) * np.exp(-z * z)


# name -> factory(*params) -> (s, s', s'', s''')
_LIBRARY: dict[str, Callable[..., tuple[Callable, ...]]] = {
    "linear": lambda: (lambda z: z * 1.0, lambda z: np.ones_like(z), _zero, _zero),
    "relu": lambda: (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64), _zero, _zero),
    "leaky_relu": _leaky_relu,
    "abs": lambda: (np.abs, np.sign, _zero, _zero),
    "tanh": lambda: (
        np.tanh,
        _sech2,
        lambda z: -2.0 * np.tanh(z) * _sech2(z),
        lambda z: _sech2(z) * (6.0 * np.tanh(z) ** 2 - 2.0),
    ),
    "erf": lambda: (special.erf, _erf1, lambda z: -2.0 * z * _erf1(z), lambda z: (4.0 * z * z - 2.0) * _erf1(z)),
    "sigmoid": lambda: (_sigmoid, _sig1, _sig2, _sig3),
    "softplus": lambda: (lambda z: np.logaddexp(0.0, z), _sigmoid, _sig1, _sig2),
    "swish": lambda: (
        lambda z: z * _sigmoid(z),
        lambda z: _sigmoid(z) * (1.0 + z * _sigmoid(-z)),
        lambda z: 2.0 * _sig1(z) + z * _sig2(z),
        lambda z: 3.0 * _sig2(z) + z * _sig3(z),
    ),
    "gelu": lambda: (
        lambda z: 0.5 * z * (1.0 + special.erf(z / _SQRT_2)),
        lambda z: 0.5 * (1.0 + special.erf(z / _SQRT_2)) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi),
        lambda z: _phi(z) * (2.0 - z * z),
        lambda z: _phi(z) * (z**3 - 4.0 * z),
    ),
    "elu": _elu,
    "sin": lambda: (np.sin, np.cos, lambda z: -np.sin(z), lambda z: -np.cos(z)),
    "cos": lambda: (np.cos, lambda z: -np.sin(z), lambda z: -np.cos(z), np.sin),
}
_ALIASES = {"identity": "linear", "silu": "swish", "logistic": "sigmoid"}

NAMES = tuple(sorted(_LIBRARY))


_NAME_CALL = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*")


def _numbers(args: str | None) -> tuple[float, ...] | None:
    """Parameters written as numbers (0.1, 1e-2, 1/2, as the symbolic layer writes them), or None."""
    try:
        return tuple(float(Fraction(a.strip())) for a in args.split(",")) if args and args.strip() else ()
    except (ValueError, ZeroDivisionError):
        return None


def _nan_guarded(f: Callable[[Array], Array], name: str, what: str) -> Callable[[Array], Array]:
    def guarded(z):
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            out = f(z)
        bad = np.isnan(out) & ~np.isnan(z)
        if bad.any():
            raise ValueError(f"activation {name!r}: {what} is NaN at x = {np.asarray(z)[bad].flat[0]!r}")
        return out

    guarded.__name__ = f"{what}_{name}"
    return guarded


def generated(spec, name: str | None = None) -> NumpyActivation:
    """The NumPy pair of any activation the symbolic layer accepts: s by ``sympy.lambdify`` (NumPy and
    SciPy functions) of its expression, s' by lambdify of its SymPy derivative with Dirac deltas
    dropped (the almost-everywhere derivative; Heaviside at 0 is 1/2).  Raises ValueError (the
    symbolic layer's message) for names and expressions it does not accept."""
    from ..activations import activation  # SymPy is loaded only when a generated pair is needed

    act = activation(spec)
    label = name or act.name
    return NumpyActivation(
        label, _nan_guarded(act.numpy, label, "s"), _nan_guarded(act.numpy_derivative, label, "s'"),
        _LazyDerivative(act, 2, label), _LazyDerivative(act, 3, label),
    )


class _LazyDerivative:
    """The almost-everywhere derivative of ``order`` of a symbolic activation (SymPy, Dirac deltas dropped),
    printed to NumPy on the first call: most uses of a generated pair never need it."""

    def __init__(self, act, order: int, label: str):
        self.act, self.order, self.label, self._f = act, order, label, None

    def __call__(self, z):
        if self._f is None:
            from ..activations.activation import lambdify_numpy

            expr = self.act.ae_derivative(self.order)
            self._f = _nan_guarded(lambdify_numpy(expr), self.label, "s" + "'" * self.order)
        return self._f(z)


@functools.singledispatch
def numpy_activation(act) -> NumpyActivation:
    """Turn a name, an expression, a ``(value, derivative)`` pair or an activation object into a NumpyActivation.

    Parameters
    ----------
    act : str, sympy.Expr, tuple, NumpyActivation or Activation
        A library name (:data:`~ntk_theory.reference.ACTIVATION_NAMES`), an expression in x, a
        ``(value, derivative)`` pair of NumPy callables, or an object with a ``numpy_activation()`` method.

    Returns
    -------
    NumpyActivation

    Raises
    ------
    ValueError
        If ``act`` is none of these.

    Examples
    --------
    GELU is x Phi(x); its derivative is Phi(x) + x phi(x):

    >>> import numpy as np
    >>> from scipy.stats import norm
    >>> g = numpy_activation("gelu"); x = np.array([-1.0, 0.5, 2.0])
    >>> bool(np.allclose(g(x), x * norm.cdf(x))), bool(np.allclose(g.derivative(x), norm.cdf(x) + x * norm.pdf(x)))
    (True, True)
    >>> e = numpy_activation("x*sin(x)")               # an expression: NumPy code generated from it and s'
    >>> bool(np.allclose(e(x), x * np.sin(x))), bool(np.allclose(e.derivative(x), np.sin(x) + x * np.cos(x)))
    (True, True)
    """
    hook = getattr(act, "numpy_activation", None)
    if callable(hook):
        return numpy_activation(hook())
    return generated(act)  # an Activation or a SymPy expression; ValueError for anything else


@numpy_activation.register
def _(act: NumpyActivation) -> NumpyActivation:
    return act


# Parses names like activations.parse does, deliberately apart: the reference stays independent of the symbolic layer.
@numpy_activation.register
def _(act: str) -> NumpyActivation:
    text = act.strip()
    m = _NAME_CALL.fullmatch(text)
    base = _ALIASES.get(m.group(1).lower(), m.group(1).lower()) if m else None
    if base not in _LIBRARY:
        return generated(text, name=text)
    params = _numbers(m.group(2))
    if params is None:  # "elu(x)" is an expression; "elu(a)" is neither
        try:
            return generated(text, name=text)
        except ValueError:
            raise ValueError(f"cannot parse the parameters of activation {text!r}: expected numbers such as 0.1 "
                             f"or 1/2, or an expression in x such as {base}(2*x)") from None
    try:
        funcs = _LIBRARY[base](*params)
    except TypeError:
        raise ValueError(f"activation {base!r} does not take parameters {params}") from None
    return NumpyActivation(text, *funcs)


@numpy_activation.register(tuple)
@numpy_activation.register(list)
def _(act) -> NumpyActivation:
    if len(act) not in (2, 4) or not all(callable(f) for f in act):
        raise ValueError("an activation pair must be (value, derivative), two callables (or four: s, s1, s2, s3)")
    name = getattr(act[0], "__name__", "custom")
    return NumpyActivation(name, *act)
