r"""Architecture descriptions: immutable values naming the layers of a network and how they connect.

A description is a tree of layers (frozen dataclasses, hashable, printable in neural-tangents' ``stax``
syntax).  The same description is read by every part of the toolkit -- the infinite-width kernels
(:mod:`ntk_theory.recursions.graph`), the reference network (:mod:`ntk_theory.reference.graph`) and the
``stax`` front end (:mod:`ntk_theory.stax`) -- each by its own rules, one per layer type.

Layers and their meaning (neural-tangents' semantics, channels last; PDLT notation with
``C_W = W_std**2``, ``C_b = b_std**2``):

- ``Dense(out_dim, W_std=1., b_std=None, parameterization='ntk')``: ``z = W_std / sqrt(n_in) x w + b_std b``
  with ``w, b ~ N(0, 1)`` ('ntk'), or ``z = x w + b`` with ``w ~ N(0, W_std**2 / n_in)``, ``b ~ N(0, b_std**2)``
  ('standard'); ``b_std=None``: no bias.
- ``Elementwise``: a pointwise nonlinearity ``s(x)`` given as a SymPy expression in ``x``.
- ``Identity``, ``FanOut(num)`` (one input to ``num`` copies), ``FanInSum``, ``FanInConcat(axis=-1)``
  (channels), ``LayerNorm(axis=-1, eps=1e-12)``: ``(x - mean) / sqrt(var + eps)`` over channels.
- ``Serial(layers)`` (composition) and ``Parallel(layers)`` (layer i applied to input i of a list).

:func:`walk` runs an interpretation over a description: it handles ``Serial``, ``Parallel``, ``FanOut``
and ``Identity`` and hands every other layer to the interpretation's rule with its *path* (the tuple of
indices leading to it, unique per layer occurrence: two applications of equal ``Dense`` values are
different layers with their own parameters, as in neural-tangents).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import sympy as sp

from .. import _checks
from ..activations import Activation, x

PARAMETERIZATIONS = ("ntk", "standard", "unit")


class Layer:
    """Base class of all layer descriptions."""

    def __repr__(self) -> str:
        args = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.default is not value and f.default != value or f.name in self._positional:
                text = _show(value)
                args.append(text if f.name in self._positional else f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(args)})"

    _positional: tuple = ()

    @property
    def children(self) -> tuple["Layer", ...]:
        return ()


def _show(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return repr(value)


def _std(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0{' or None' if allow_none else ''}; got {value!r}")
    return float(value)


class Weighted:
    """What layers with weights and biases (``Dense``, ``Conv``) share: the fields ``W_std``, ``b_std``,
    ``parameterization`` and ``variances`` (exact ``(C_W, C_b)`` or None), read as PDLT's variances."""

    @property
    def C_W(self) -> float:
        return self.variances[0] if self.variances else self.W_std**2

    @property
    def C_b(self) -> float:
        if self.variances:
            return self.variances[1]
        return 0.0 if self.b_std is None else self.b_std**2

    @property
    def has_bias(self) -> bool:
        return self.b_std is not None

    def learning_rate_factors(self, n_in: int) -> tuple[float, float]:
        """``(lambda_b, lambda_W)`` of the NTK for fan-in ``n_in``: ``(C_b, C_W)`` in 'ntk',
        ``(1, n_in)`` in 'standard' (W and b trained directly), ``(1, 1)`` in 'unit' (PDLT's choice, an
        extension of neural-tangents' two); lambda_b = 0 without a bias."""
        if self.parameterization == "ntk":
            return self.C_b, self.C_W
        return (1.0 if self.has_bias else 0.0), (float(n_in) if self.parameterization == "standard" else 1.0)


@dataclass(frozen=True, repr=False)
class Dense(Weighted, Layer):
    """A fully connected layer (see the module docstring for its parameterizations)."""

    out_dim: int
    W_std: float = 1.0
    b_std: float | None = None
    parameterization: str = "ntk"
    variances: tuple | None = field(default=None, repr=False)
    _positional = ("out_dim",)

    def __post_init__(self):
        object.__setattr__(self, "out_dim", _checks.positive_int("Dense out_dim", self.out_dim))
        object.__setattr__(self, "W_std", _std("Dense W_std", self.W_std))
        object.__setattr__(self, "b_std", _std("Dense b_std", self.b_std, allow_none=True))
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"Dense parameterization must be one of {PARAMETERIZATIONS}; got {self.parameterization!r}")

    @classmethod
    def from_variances(cls, out_dim: int, *, C_W: float, C_b: float, parameterization: str = "ntk") -> "Dense":
        """PDLT's variances: ``W_std = sqrt(C_W)``, ``b_std = sqrt(C_b)`` (a bias, possibly of variance 0),
        with C_W and C_b kept exactly (no rounding through the square root)."""
        C_W, C_b = _std("C_W", C_W), _std("C_b", C_b)
        return cls(out_dim, math.sqrt(C_W), math.sqrt(C_b), parameterization, (C_W, C_b))



@dataclass(frozen=True, repr=False)
class Elementwise(Layer):
    """A pointwise nonlinearity.  ``name`` and ``args`` are how it was written (``Relu``, ``()``);
    ``expr`` is the SymPy expression in ``x`` every interpretation uses."""

    name: str
    args: tuple
    expr: sp.Expr

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(_show(a) for a in self.args)})"

    @property
    def activation(self) -> Activation:
        """The activation, named so that every part of the toolkit can read the name back: the text given to
        ``Activation(...)``, else the expression (``Erf()`` -> ``erf(x)``); its source says the layer."""
        name = self.args[0] if self.name == "Activation" and isinstance(self.args[0], str) else sp.sstr(self.expr)
        return Activation(name, self.expr, f"stax {self!r}")

    @property
    def is_identity(self) -> bool:
        return self.expr == x


@dataclass(frozen=True, repr=False)
class Identity(Layer):
    """Passes its input on unchanged."""


@dataclass(frozen=True, repr=False)
class FanOut(Layer):
    """Copies its input into a list of ``num`` inputs."""

    num: int
    _positional = ("num",)

    def __post_init__(self):
        object.__setattr__(self, "num", _checks.positive_int("FanOut num", self.num))


@dataclass(frozen=True, repr=False)
class FanInSum(Layer):
    """Sums a list of inputs of equal shape."""


@dataclass(frozen=True, repr=False)
class FanInConcat(Layer):
    """Concatenates a list of inputs along the channel axis (the only axis of a dense network)."""

    axis: int = -1

    def __post_init__(self):
        if self.axis not in (-1, 1):
            raise ValueError(f"FanInConcat(axis={self.axis!r}): dense networks have one channel axis, -1")


@dataclass(frozen=True, repr=False)
class LayerNorm(Layer):
    """``(x - mean) / sqrt(var + eps)`` with mean and variance over the channels of each input."""

    axis: int = -1
    eps: float = 1e-12

    def __post_init__(self):
        if self.axis not in (-1, 1):
            raise ValueError(f"LayerNorm(axis={self.axis!r}): dense networks normalise over their channel axis, -1")
        object.__setattr__(self, "eps", _std("LayerNorm eps", self.eps))


@dataclass(frozen=True, repr=False)
class Serial(Layer):
    """Layers applied one after the other."""

    layers: tuple

    def __repr__(self) -> str:
        return f"serial({', '.join(map(repr, self.layers))})"

    @property
    def children(self):
        return self.layers


@dataclass(frozen=True, repr=False)
class Parallel(Layer):
    """Layer i applied to input i of a list of inputs."""

    layers: tuple

    def __repr__(self) -> str:
        return f"parallel({', '.join(map(repr, self.layers))})"

    @property
    def children(self):
        return self.layers


def serial(*layers: Layer) -> Serial:
    return Serial(tuple(_layer(l) for l in layers))


def parallel(*layers: Layer) -> Parallel:
    return Parallel(tuple(_layer(l) for l in layers))


def _layer(value) -> Layer:
    layer = getattr(value, "description", value)
    if not isinstance(layer, Layer):
        raise TypeError(f"expected a layer description (Dense, Relu(), serial(...), ...); got {value!r}")
    return layer


# ---------------------------------------------------------------------- traversal
def walk(layer: Layer, value, rule: Callable, path: tuple = ()):
    """Apply ``rule(layer, value, path)`` to the leaves of ``layer`` in order; ``Serial``,
    ``Parallel``, ``FanOut`` and ``Identity`` are structural and handled here.  ``value`` is one
    input, or a tuple of inputs where a ``FanOut`` made a list."""
    if isinstance(layer, Serial):
        for i, sub in enumerate(layer.layers):
            value = walk(sub, value, rule, path + (i,))
        return value
    if isinstance(layer, Parallel):
        if not isinstance(value, tuple) or len(value) != len(layer.layers):
            got = f"{len(value)} inputs" if isinstance(value, tuple) else "one input"
            raise ValueError(f"{layer!r} at {where(path)} has {len(layer.layers)} branches but receives {got} "
                             "(a FanOut(n) before it makes n)")
        return tuple(walk(sub, v, rule, path + (i,)) for i, (sub, v) in enumerate(zip(layer.layers, value)))
    if isinstance(layer, FanOut):
        _single(layer, value, path)
        return (value,) * layer.num
    if isinstance(layer, Identity):
        return value
    if isinstance(layer, (FanInSum, FanInConcat)):
        if not isinstance(value, tuple):
            raise ValueError(f"{layer!r} at {where(path)} needs a list of inputs (after FanOut and parallel); got one")
    else:
        _single(layer, value, path)
    return rule(layer, value, path)


def _single(layer, value, path):
    if isinstance(value, tuple):
        raise ValueError(f"{layer!r} at {where(path)} receives a list of {len(value)} inputs; combine them first "
                         "(FanInSum, FanInConcat) or use parallel(...)")


def where(path: Sequence[int]) -> str:
    """A path as text: ``layer 3.1`` (0-based indices into serial/parallel)."""
    return "the top" if not path else "layer " + ".".join(map(str, path))


def map_leaves(layer: Layer, fn: Callable, path: tuple = ()) -> Layer:
    """The description with every non-structural layer replaced by ``fn(path, layer)`` (``Serial`` and
    ``Parallel`` rebuilt around them), e.g. to change every Dense layer's width or parameterization."""
    if isinstance(layer, (Serial, Parallel)):
        return type(layer)(tuple(map_leaves(sub, fn, path + (i,)) for i, sub in enumerate(layer.layers)))
    return fn(path, layer)


def leaves(layer: Layer, path: tuple = ()):
    """``(path, layer)`` of every non-structural layer, in order."""
    if layer.children:
        for i, sub in enumerate(layer.children):
            yield from leaves(sub, path + (i,))
    else:
        yield path, layer
