r"""The reference MLP as a description run by the description interpreter (:mod:`.graph`).

An :class:`~ntk_theory.reference.MLP` of activation s, depth L, C_W, C_b, param and widths is the description
:func:`~ntk_theory.architecture.mlp.mlp_description` (``Dense.from_variances(n_l, C_W=C_W(l), C_b=C_b(l), parameterization=param)`` and
s alternating, readout last) with two bindings:

- its elementwise layers are :class:`NumpyElementwise`: the stax layer of s (same name and SymPy expression,
  so every interpretation reads the same network) evaluated by the MLP's own NumPy pair (s, s') — for the
  library names the hand-written functions of :mod:`.activations`, independent of the symbolic layer — and
  never dropped as an identity (the linear activation keeps its a(l) and s'(z(l)) = 1 in the tape);
- its Dense layers act in PDLT coordinates: :func:`pdlt_action` gives layer l the action ``z = x W(l)^T +
  b(l)`` of a unit-scale layer (the effective coordinates of :mod:`ntk_theory.empirical.graph`: for the
  description's 'ntk' layer with neural-tangents' parameters (w, beta) these are ``W^T = sqrt(C_W / n) w``,
  ``b = sqrt(C_b) beta``; for 'standard' and 'unit' they are neural-tangents' parameters themselves).

The NTK factors stay those of the description's Dense layers (``(C_b, C_W)`` in 'ntk', ``(1, n_in)`` in
'standard', ``(1, 1)`` in 'unit', :meth:`~ntk_theory.architecture.Dense.learning_rate_factors`): the
structured NTK ``sum_l (g_a . g_b) [lambda_b + lambda_W / n_(l-1) a_a . a_b]`` reads only activations and
cotangents, which do not depend on the coordinates of the parameters, so it is PDLT's ``J Lambda J^T``.

Activations without a symbolic counterpart (a ``(value, derivative)`` pair of NumPy callables whose name the
symbolic layer does not read) get the placeholder expression ``s(x)`` (an undefined SymPy function): the
reference interpreter runs them; interpretations that need the expression (infinite-width kernels) cannot.

This module loads SymPy (descriptions carry SymPy expressions); :mod:`.network` imports it on first use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import sympy as sp

from ..activations import Activation
from ..activations import x as _x_symbol
from ..architecture import Elementwise, Serial
from ..architecture.mlp import activation_layer, mlp_description
from .activations import NumpyActivation
from .graph import DenseParameters


@dataclass(frozen=True, eq=False)
class NumpyBoundActivation(Activation):
    """An :class:`~ntk_theory.activations.Activation` whose NumPy functions are a given pair (s, s') instead of
    the lambdified expression; everything symbolic (expr, derivatives, kinks) is the expression's."""

    pair: NumpyActivation | None = None

    # two one-line delegating properties (alike in shape to codegen.kernel's and recursions.graph's)
    @property
    def numpy(self):
        return self.pair.value

    @property
    def numpy_derivative(self):
        return self.pair.derivative


@dataclass(frozen=True, repr=False)
class NumpyElementwise(Elementwise):
    """An elementwise layer (name, args and SymPy expression as written in stax) evaluated by a NumPy pair:
    ``activation.numpy`` is ``pair.value`` and ``activation.numpy_derivative`` is ``pair.derivative``.  Never
    an identity, so the interpreter records its output and derivative even for the linear activation."""

    pair: NumpyActivation | None = field(default=None, repr=False)

    @property
    def activation(self) -> Activation:
        base = super().activation
        return NumpyBoundActivation(base.name, base.expr, base.source, base.params, pair=self.pair)

    @property
    def is_identity(self) -> bool:
        return False


@functools.lru_cache(maxsize=256)
def _stax_layer(name: str) -> Elementwise | None:
    try:
        return activation_layer(name)
    except (ValueError, TypeError, SyntaxError):
        return None


def bound_layer(pair: NumpyActivation) -> NumpyElementwise:
    """The stax layer of the activation named ``pair.name`` (``Relu()``, ``Activation('leaky_relu(0.1)')``,
    ...) evaluated by ``pair``; a name the symbolic layer does not read gives ``Activation(name)`` with the
    placeholder expression ``s(x)``."""
    layer = _stax_layer(pair.name)
    if layer is None:
        return NumpyElementwise("Activation", (pair.name,), sp.Function("s")(_x_symbol), pair)
    return NumpyElementwise(layer.name, layer.args, layer.expr, pair)


def description(spec, pair: NumpyActivation) -> Serial:
    """The description of the MLP of ``spec`` (:class:`~ntk_theory.architecture.MLPSpec`) and activation
    ``pair``: Dense layer l at path ``(2 (l - 1),)``, its activation at ``(2 l - 1,)``."""
    return mlp_description(bound_layer(pair), spec.depth, C_W=spec.C_W, C_b=spec.C_b, param=spec.param,
                           widths=spec.hidden_widths, output_dim=spec.output_dim)


@functools.lru_cache(maxsize=512)
def _unit(layer):
    return replace(layer, W_std=1.0, b_std=1.0, parameterization="standard", variances=None)


def pdlt_action(weights, biases):
    """The Dense actions of :func:`description` in PDLT coordinates: layer l (path ``(2 (l - 1),)``) acts as
    ``z = x W(l)^T + b(l)`` (a :class:`~ntk_theory.reference.graph.DenseParameters` of unit scales on views
    of ``weights[l-1]`` and ``biases[l-1]``, so updates of those arrays in place are seen)."""

    def action(layer, path, n_in):
        l = path[0] // 2
        return DenseParameters(_unit(layer), (weights[l].T, biases[l][None, :]), n_in, path)

    return action


def dense_index(path: tuple) -> int:
    """The 0-based index l - 1 of the Dense layer at ``path`` of :func:`description`."""
    return path[0] // 2


__all__ = ["NumpyBoundActivation", "NumpyElementwise", "bound_layer", "dense_index", "description", "pdlt_action"]
