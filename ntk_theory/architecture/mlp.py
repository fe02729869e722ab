r"""The MLP as a description, and back: :func:`mlp_description` builds the ``serial`` description of an MLP
from the toolkit's MLP parameters; :func:`as_mlp` reads those parameters off a description, or
:func:`why_not_mlp` says in one line why a description is not a plain MLP.

A *plain MLP* is, after flattening nested ``serial`` and dropping ``Identity``,

    Dense(n_1), s, Dense(n_2), s, ..., s, Dense(n_out)        (L >= 1 activations, one activation s)

with one parameterization.  Its toolkit parameters (PDLT conventions, :mod:`ntk_theory.conventions`):
depth ``L``, ``C_W(l) = W_std(l)**2``, ``C_b(l) = b_std(l)**2`` (0 without a bias) for
``l = 1 .. L+1``, ``param`` the Dense parameterization, ``widths = (n_1, ..., n_L, n_out)``.

The toolkit's MLP always has a bias: in 'ntk' a missing bias (``b_std=None``) and ``b_std=0`` are the
same network (lambda_b = C_b = 0), but in 'standard' and 'unit' a bias is trained with lambda_b = 1 even
at ``b_std=0``, so a Dense without a bias in those parameterizations is not a toolkit MLP.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from ..activations import Activation, activation
from . import elementwise
from .layers import Dense, Elementwise, Identity, Layer, Serial

#: stax activations without arguments, tried in this order when an MLP's activation is written back as a layer
_NAMED = ("Relu", "Erf", "Tanh", "Abs", "Sign", "Gelu", "Sigmoid", "Softplus", "Swish", "Elu", "Selu", "Sin", "Cos",
          "Exp", "Gaussian")


# a record with derived properties, shaped like reference.graph.Tape: different data, no shared logic
@dataclass(frozen=True)
class MLPParameters:
    """A plain MLP's parameters: its activation layer and :class:`~ntk_theory.activations.Activation`,
    ``depth`` L, ``C_W`` and ``C_b`` (L + 1 values each, readout last), ``param`` ('ntk', 'standard', 'unit'),
    ``widths`` (n_1 .. n_L, n_out) and ``has_bias`` per layer."""

    layer: Elementwise
    depth: int
    C_W: tuple
    C_b: tuple
    param: str
    widths: tuple
    has_bias: tuple

    @property
    def activation(self) -> Activation:
        return self.layer.activation

    @property
    def hidden_widths(self) -> tuple:
        return self.widths[:-1]

    @property
    def output_dim(self) -> int:
        return self.widths[-1]


def _flat(layer: Layer) -> list:
    """The layers of nested ``serial`` in order, ``Identity`` dropped (other layers kept as they are)."""
    if isinstance(layer, Serial):
        return [leaf for sub in layer.layers for leaf in _flat(sub)]
    if isinstance(layer, Identity):
        return []
    return [layer]


def _read(description: Layer) -> tuple[MLPParameters | None, str]:
    """``(parameters, "")`` for a plain MLP, else ``(None, why not)``."""
    layer = getattr(description, "description", description)
    if not isinstance(layer, Layer):
        raise TypeError(f"expected a network description (stax.serial(...), a layer); got {description!r}")
    flat = _flat(layer)
    if not flat:
        return None, "the network has no layers"
    for i, item in enumerate(flat):
        expected = Dense if i % 2 == 0 else Elementwise
        if not isinstance(item, expected):
            what = "a Dense layer" if expected is Dense else "an activation"
            return None, f"{item!r} (layer {i + 1} of the flattened serial) where a plain MLP has {what}"
    if len(flat) % 2 == 0:
        return None, f"it ends with the activation {flat[-1]!r}, not a Dense readout"
    if len(flat) == 1:
        return None, "a single Dense layer has no hidden layer (a plain MLP has depth >= 1)"
    dense, acts = flat[0::2], flat[1::2]
    if len({a.expr for a in acts}) > 1:
        return None, f"more than one activation ({', '.join(sorted({repr(a) for a in acts}))})"
    params = {d.parameterization for d in dense}
    if len(params) > 1:
        return None, "Dense layers with different parameterizations"
    param = params.pop()
    if param != "ntk" and not all(d.has_bias for d in dense):
        return None, (f"a {param!r} Dense without a bias (b_std=None): the toolkit's MLP trains a bias in every "
                      "layer (give b_std=0. for a bias starting at zero)")
    return MLPParameters(acts[0], len(acts), tuple(d.C_W for d in dense), tuple(d.C_b for d in dense), param,
                         tuple(d.out_dim for d in dense), tuple(d.has_bias for d in dense)), ""


def as_mlp(description) -> MLPParameters | None:
    """The MLP parameters of a plain-MLP description (a layer or a ``stax`` network), else None
    (:func:`why_not_mlp` says why)."""
    return _read(description)[0]


def why_not_mlp(description) -> str | None:
    """One line saying why ``description`` is not a plain MLP, or None if it is one."""
    params, reason = _read(description)
    return None if params is not None else reason


def _per_layer(name: str, value, n: int) -> tuple:
    values = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values; depth + 1 = {n} are needed (one per layer, readout last)")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be finite numbers >= 0; got {value!r}")
    return tuple(float(v) for v in values)


@functools.cache
def _named_layers() -> tuple:
    return tuple(getattr(elementwise, name)() for name in _NAMED)


def activation_layer(spec) -> Elementwise:
    """The stax activation layer of an activation (library name, expression or Activation): the named
    layer (``Relu()``, ``Erf()``, ...) with the same expression if there is one, else ``Activation(spec)``."""
    if isinstance(spec, Elementwise):
        return spec
    expr = activation(spec).expr
    for layer in _named_layers():
        if layer.expr == expr:
            return layer
    return elementwise.Activation_(spec.expr if isinstance(spec, Activation) else spec)


def mlp_description(activation, depth: int, *, C_W=1.0, C_b=0.0, param: str = "ntk", widths=512,
                    output_dim: int = 1) -> Serial:
    """The ``serial`` description of the toolkit's MLP: ``depth`` hidden layers of ``widths`` (an int or one
    per hidden layer) with ``activation`` (one, or a list of one per hidden layer), C_W and C_b (scalars or depth + 1 values, readout last), ``param``
    ('ntk', 'standard' or 'unit') and a Dense readout of ``output_dim``.  Every Dense layer is
    ``Dense.from_variances`` (``W_std = sqrt(C_W)``, ``b_std = sqrt(C_b)``, a bias even at C_b = 0, C_W and
    C_b kept exactly), so ``as_mlp(mlp_description(...))`` returns the same numbers."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1; got {depth!r}")
    n = depth + 1
    cw, cb = _per_layer("C_W", C_W, n), _per_layer("C_b", C_b, n)
    hidden = tuple(widths) if isinstance(widths, Sequence) and not isinstance(widths, str) else (widths,) * depth
    if len(hidden) != depth:
        raise ValueError(f"widths has {len(hidden)} entries but depth is {depth}")
    if isinstance(activation, (list, tuple)):
        if len(activation) != depth:
            raise ValueError(f"got {len(activation)} activations for depth {depth}")
        acts = [activation_layer(a) for a in activation]
    else:
        acts = [activation_layer(activation)] * depth
    layers = []
    for l, out in enumerate((*hidden, output_dim)):
        layers.append(Dense.from_variances(out, C_W=cw[l], C_b=cb[l], parameterization=param))
        if l < depth:
            layers.append(acts[l])
    return Serial(tuple(layers))


__all__ = ["MLPParameters", "activation_layer", "as_mlp", "mlp_description", "why_not_mlp"]
