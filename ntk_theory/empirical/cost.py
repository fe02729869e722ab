r"""Cost model of the three empirical-NTK methods for any architecture description: FLOPs, elementwise
traffic and memory as formulas with one term per layer type.

The formulas count what :mod:`ntk_theory.empirical.graph` does, following the analysis of Novak,
Sohl-Dickstein, Schoenholz 2022 ("Fast Finite Width Neural Tangent Kernel", section 3 and its cost
table).  Two kinds of work are counted separately, because they run at very different rates:
**FLOPs** of dense matrix products (2 per multiply-add, BLAS) and **elements** written by elementwise
array passes (broadcast products, scalings, additions), which are memory-bound.  The predicted time is
``FLOPs / FLOP_RATE + elements / ELEMENT_RATE``; ``auto`` picks the smallest.  It is the steady state:
the first time a process touches memory it never used before, writes are 10-20x slower on the
development VM (pages faulted in), a one-time cost the model leaves out.

Per layer occurrence (:func:`layer_cost`, one rule per layer type; ``n`` its output width, ``n_in`` its
input width, ``k`` the number of inputs of a fan-in), per input and per pushed vector
(``FLOPs | elements``)::

                  forward [FP]          reverse (one VJP)        forward mode (one JVP)     params
    Dense         2 n_in n | 2 n        2 n_in n | n_in          4 n_in n | 3 n             n_in n (+ n bias)
    Elementwise   0 | 2 n (s, s')       0 | n                    0 | n                      0
    LayerNorm     0 | 7 n               0 | 6 n                  0 | 6 n                    0
    FanInSum      0 | (k-1) n           0 | (k-1) n (*)          0 | (k-1) n                0
    FanInConcat   0 | n                 0 | n (*)                0 | n                      0
    Conv          2 P K n | P K + 2 P n  2 P K n | P K + P_in C    4 P K n | 2 P K + 3 P n     K n (+ n bias)
    AvgPool       0 | P (w + 1) n        0 | P w n + P_in n       0 | P (w + 1) n            0
    GlobalAvgPool 0 | P_in n             0 | P_in n               0 | P_in n                 0
    Flatten       0 | 0                  0 | 0                    0 | 0                      0
    FanOut, Identity, serial, parallel: no work (the same array is passed on)

On spatial values every other layer does its per-position work at each of the P output positions
(:attr:`Step.cost`); a Conv of C input channels has ``K = C prod(filter_shape)`` (its patches, written by
im2col and scattered back by its transpose), P output and ``P_in`` input positions; a pool's window has
w pixels.  Layers with weights shared over P > 1 positions add the sum over positions to forming J blocks
and tangents (``2 O P K n`` FLOPs per input), and the structured method contracts each such layer by the
cheaper of Grams over (input, position) rows (``P^2`` times the cotangent and input Gram work of a dense
layer, plus ``2 pairs O_c P^2`` FLOPs contracting them, ``B^2 P^2 (2 O_c + 2)`` memory per block) and its
Jacobian rows (``2 O P K n`` per input to form, ``2 pairs O_c K n`` to contract; :func:`shared_cost`).

(*) the sum of the branch cotangents where the branches split (after the ``FanOut``), counted at the
fan-in that closes them.  ``[FP]`` is the forward pass, ``[VJP]``/``[JVP]`` the reverse and forward-mode
passes of one vector, per input.  With ``D`` the Dense layers, ``P`` the parameters, ``O`` outputs,
``O_c = O`` for the trace over outputs and ``O^2`` for the full (N1, N2, O, O) kernel::

    N_f = N (X2 = None) or N1 + N2      inputs whose per-input quantities are computed
    pairs = N (N + 1) / 2 (X2 = None: blocks j >= i, symmetric products in diagonal blocks) or N1 N2
    B = inputs per block (memory-bounded batching)

    every method      forward pass                    N_f [FP]

    jacobian_contraction (J by reverse mode: one VJP per output and input, then J1 Lambda J2^T)
      VJP of the O output cotangents         N_f O [VJP]
      form J blocks (x (x) g per Dense)      | O P per input and time a block is formed (shared weights:
                                             2 O S K n | O S n more, the sum over S positions)
      contract                               2 pairs O_c P    | 2 (|D| + b) pairs O_c + 2 N1 N2 O_c
      memory  N_f (T + O G) + j B O max_D p_D + B^2 O_c     (j = 1 or 2 J block buffers)

    ntk_vector_products (Theta e_(b,q) = J1 [Lambda J2^T e_(b,q)]: a VJP at X2, then a JVP at X1 for
                         each of the N2 O output cotangents; J never formed)
      forward again at X1 per block          N1 ceil(N2 / B) [FP] (rows up to the block for X2 = X1)
      VJP                                    N2 O [VJP]
      tangents Lambda J2^T e                 | N2 O P
      JVP                                    pairs_B O [JVP]
      assemble                               | pairs_B O_c + 2 N1 N2 O_c
      memory  N_f T + B O P + 3 B_1 B O n_max      (B_1 rows of X1 per JVP)

    structured (per Dense layer Theta_D = (g1 . g2) * (lambda_b + lambda_W / n_in x1 . x2))
      VJP of the O output cotangents         N_f O [VJP]
      cotangent grams                        2 pairs O_c sum_D n_D     (the readout: none, g = identity)
      input grams                            2 pairs sum_D n_in,D
      combine                                | pairs (2 |D| + 2 |D| O_c) + 2 N1 N2 O_c
      shared weights (S > 1 positions)       per layer the cheaper route of :func:`shared_cost`: Grams over
                                             (input, position) rows, or Jacobian rows sum_p g (x) x
      memory  N_f (T + O G) + B^2 S_max^2 (2 O_c + 2) + B (sum + max of the Jacobian-row layers' O (K + 1) n + O S n)

where ``T`` is the tape (every step's output and cache per input) and ``G = sum_D n_D`` the Dense output
widths (the stored cotangents).  Leading orders: Jacobian contraction ``N O [FP] + N^2 O_c P`` (the
paper's), NTK-vector products ``N^2 O [FP]``, structured ``N O [FP] + N^2 O_c sum_D (n_D + n_in,D)``;
for L hidden layers of width n, ``[FP] ~ 2 L n^2`` and ``P ~ L n^2``.  The output ``N1 N2 O_c`` is held by
every method and is not counted against the memory budget.  Intermediates are float64 (the reference
network's precision); memory figures are bytes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import _checks
from ..architecture import (AvgPool, Conv, Dense, Elementwise, FanInConcat, FanInSum, Flatten, GlobalAvgPool,
                            Layer, LayerNorm, walk, where)
from ..docstrings import filled

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured")
DEFAULT_MEMORY = 2 * 2**30  # bytes of intermediates the batching aims to stay under
WORKING_SET = 32 * 2**20  # bytes of per-step temporaries beyond which larger blocks gain nothing (measured)
TANGENT_SET = 256 * 2**20  # bytes of NTK-vector-product tangents per block (beyond: memory, no speed)
WORK_ITEMSIZE = 8  # intermediates are float64
# Rates measured on the development machine (2-core AMD EPYC VM, OpenBLAS, float64): dense products run
# at 50-100 GFLOP/s; elementwise passes write 0.7-3 G elements/s (the lower end for arrays beyond the
# cache).  Only their ratio matters for ``auto`` and for the predicted scaling exponents.  The short, wide
# products of a CNN's Jacobian rows (N O rows of K n columns) run near these rates on one OpenBLAS thread (a
# 3-conv CNN of 16-64 channels within 1.2-1.6x of the model); with OpenBLAS's threads on cores oversubscribed
# by other jobs they run 5-10x slower and absolute times are optimistic; the ordering held in every case.
FLOP_RATE = 60e9
ELEMENT_RATE = 1e9


# ---------------------------------------------------------------------- per layer type
# a record of numbers shaped like empirical.ntk.Dense's fields: different data, no shared logic
@dataclass(frozen=True)
class LayerCost:
    """One layer occurrence's work per input and vector: ``(FLOPs, elements)`` of the forward pass, of
    one reverse-mode (VJP) and one forward-mode (JVP) vector; its parameters; floats it stores per input
    on the tape (output and cache).

    Parameters
    ----------
    forward, vjp, jvp : tuple of float
        ``(FLOPs, elements)``.
    params : int, default 0
    stored : int, default 0

    Examples
    --------
    A Dense layer 3 -> 4 with bias (module docstring's table):

    >>> from ntk_theory import stax
    >>> c = layer_cost(stax.Dense(4, b_std=0.1).description, (3,), 4)
    >>> c.forward, c.vjp, c.jvp, c.params                 # (2 n_in n, 2 n), (2 n_in n, n_in), (4 n_in n, 3 n), n_in n + n
    ((24.0, 8.0), (24.0, 3.0), (48.0, 12.0), 16)
    """

    forward: tuple
    vjp: tuple
    jvp: tuple
    params: int = 0
    stored: int = 0


@dataclass(frozen=True)
class Step:
    """A non-structural layer occurrence: the layer, its path, input widths (channels) and output width, and
    the spatial shapes of its (first) input and of its output (() without spatial axes)."""

    layer: Layer
    path: tuple
    n_ins: tuple
    n_out: int
    size_in: tuple = ()
    size_out: tuple = ()

    @property
    def n_in(self) -> int:
        return self.n_ins[0]

    @property
    def positions(self) -> int:
        """Output positions (1 without spatial axes)."""
        return math.prod(self.size_out)

    @property
    def fan_in(self) -> int:
        """The width of the rows a layer with weights multiplies: n_in, ``C_in prod(filter_shape)`` for a Conv."""
        return self.layer.fan_in(self.n_in) if isinstance(self.layer, Conv) else self.n_in

    @property
    def elements(self) -> int:
        """Floats of the output per input (positions times channels)."""
        return self.positions * self.n_out

    @functools.cached_property  # a frozen record: computed once (the block-size search asks many times)
    def cost(self) -> LayerCost:
        c = layer_cost(self.layer, self.n_ins, self.n_out, (math.prod(self.size_in), self.positions))
        P = self.positions
        if P == 1 or isinstance(self.layer, SPATIAL_LAYERS):
            return c
        # a per-position layer: its per-row work at every position
        scale = lambda t: (t[0] * P, t[1] * P)
        return LayerCost(scale(c.forward), scale(c.vjp), scale(c.jvp), c.params, c.stored * P)


@functools.singledispatch
def layer_cost(layer: Layer, n_ins: tuple, n_out: int, positions: tuple = (1, 1)) -> LayerCost:
    """The work of one layer per input and vector (module docstring), by layer type; ``positions`` (input,
    output) counts the spatial positions, which only the layers of :data:`SPATIAL_LAYERS` read (every
    other layer acts per position and :attr:`~ntk_theory.empirical.cost.Step.cost` scales its per-position work).

    Parameters
    ----------
    layer : Layer
        One layer (not serial/parallel).
    n_ins : tuple of int
        The input widths (channels), one per input of a fan-in.
    n_out : int
        The output width.
    positions : tuple of int, default (1, 1)
        (input, output) spatial positions.

    Returns
    -------
    LayerCost

    Examples
    --------
    An elementwise activation writes s and s' (2 n elements) and no FLOPs; a sum of k = 3 branches (k - 1) n:

    >>> from ntk_theory import stax
    >>> layer_cost(stax.Relu().description, (5,), 5).forward, layer_cost(stax.FanInSum().description, (5, 5, 5), 5).forward
    ((0.0, 10.0), (0.0, 10.0))
    """
    raise NotImplementedError(f"the empirical-NTK cost model has no rule for {type(layer).__name__}")


@layer_cost.register
def _(layer: Dense, n_ins, n, positions=(1, 1)):
    (m,) = n_ins
    return LayerCost((2.0 * m * n, 2.0 * n), (2.0 * m * n, float(m)), (4.0 * m * n, 3.0 * n),
                     m * n + (n if layer.has_bias else 0), n)


@layer_cost.register
def _(layer: Elementwise, n_ins, n, positions=(1, 1)):
    if layer.is_identity:
        return LayerCost((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    return LayerCost((0.0, 2.0 * n), (0.0, float(n)), (0.0, float(n)), 0, 2 * n)


@layer_cost.register
def _(layer: LayerNorm, n_ins, n, positions=(1, 1)):
    return LayerCost((0.0, 7.0 * n), (0.0, 6.0 * n), (0.0, 6.0 * n), 0, n + 1)


@layer_cost.register
def _(layer: FanInSum, n_ins, n, positions=(1, 1)):
    k = len(n_ins)
    return LayerCost((0.0, (k - 1.0) * n), (0.0, (k - 1.0) * n), (0.0, (k - 1.0) * n), 0, n)


@layer_cost.register
def _(layer: FanInConcat, n_ins, n, positions=(1, 1)):
    return LayerCost((0.0, float(n)), (0.0, float(n)), (0.0, float(n)), 0, n)


@layer_cost.register
def _(layer: Conv, n_ins, n, positions=(1, 1)):
    # im2col (patches written), the product of P_out patches (K) with W (K, n); reverse: the product with W^T
    # and the scatter-add of the patches (P_out K) into the input (P_in C)
    (C,) = n_ins
    P_in, P = positions
    K = layer.fan_in(C)
    return LayerCost((2.0 * P * K * n, P * K + 2.0 * P * n), (2.0 * P * K * n, P * K + P_in * C),
                     (4.0 * P * K * n, 2.0 * P * K + 3.0 * P * n), K * n + (n if layer.has_bias else 0),
                     P * (K + n))


@layer_cost.register
def _(layer: AvgPool, n_ins, n, positions=(1, 1)):
    P_in, P = positions
    w = math.prod(layer.window_shape)
    return LayerCost((0.0, P * (w + 1.0) * n), (0.0, P * w * n + P_in * n), (0.0, P * (w + 1.0) * n), 0, P * n)


@layer_cost.register
def _(layer: GlobalAvgPool, n_ins, n, positions=(1, 1)):
    P_in, _ = positions
    return LayerCost((0.0, float(P_in * n)), (0.0, float(P_in * n)), (0.0, float(P_in * n)), 0, n)


@layer_cost.register
def _(layer: Flatten, n_ins, n, positions=(1, 1)):
    return LayerCost((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), 0, 0)


#: layer types whose cost rule counts positions itself
SPATIAL_LAYERS = (Conv, AvgPool, GlobalAvgPool, Flatten)

#: layer types with weights (a Dense layer on the rows of their inputs or patches)
WEIGHTED = (Dense, Conv)


@dataclass(frozen=True)
class _Width:
    n: int
    size: tuple = ()


@functools.singledispatch
def _out_width(layer: Layer, n_ins: tuple, path) -> int:
    return n_ins[0]


@_out_width.register
def _(layer: Dense, n_ins, path):
    return layer.out_dim


@_out_width.register
def _(layer: FanInSum, n_ins, path):
    if len(set(n_ins)) > 1:
        raise ValueError(f"{layer!r} at {where(path)} sums inputs of different widths {sorted(set(n_ins))}")
    return n_ins[0]


@_out_width.register
def _(layer: FanInConcat, n_ins, path):
    return sum(n_ins)


@_out_width.register
def _(layer: Conv, n_ins, path):
    return layer.out_chan


@functools.singledispatch
def _out_size(layer: Layer, size: tuple, path) -> tuple:
    return size


@_out_size.register(Conv)
@_out_size.register(AvgPool)
def _(layer, size, path):
    if len(size) != layer.rank:
        raise ValueError(f"{layer!r} at {where(path)} acts on {layer.rank} spatial axes; it receives values with "
                         f"{len(size)}")
    return layer.output_size(size)


@_out_size.register(GlobalAvgPool)
@_out_size.register(Flatten)
def _(layer, size, path):
    if isinstance(layer, GlobalAvgPool) and not size:
        raise ValueError(f"{layer!r} at {where(path)} needs spatial inputs (N, ..., C); it receives (N, C)")
    return ()


def input_shape(input_dim) -> tuple:
    """The per-input shape: ``(d,)`` for an int, else the tuple ``(d,)``, ``(W, C)`` or ``(H, W, C)``."""
    if isinstance(input_dim, (tuple, list)):
        if not 1 <= len(input_dim) <= 3:
            raise ValueError(f"input shape must be (d,), (W, C) or (H, W, C); got {tuple(input_dim)}")
        return tuple(_checks.positive_int("input shape", d) for d in input_dim)
    return (_checks.positive_int("input_dim", input_dim),)


def steps(description: Layer, input_dim) -> tuple:
    """The :class:`~ntk_theory.empirical.cost.Step` of every non-structural layer occurrence, in order, at input dimension ``input_dim``
    (an int, or the per-input shape (W, C) / (H, W, C) of convolutional networks).

    Parameters
    ----------
    description : Layer
    input_dim : int or tuple

    Returns
    -------
    tuple of Step

    Examples
    --------
    >>> from ntk_theory import stax
    >>> net = stax.serial(stax.Dense(5), stax.Relu(), stax.Dense(1))
    >>> [(type(s.layer).__name__, s.n_ins, s.n_out) for s in steps(net.description, 3)]
    [('Dense', (3,), 5), ('Elementwise', (5,), 5), ('Dense', (5,), 1)]
    """
    shape = input_shape(input_dim)
    found = []

    def rule(layer, value, path):
        values = value if isinstance(value, tuple) else (value,)
        n_ins = tuple(v.n for v in values)
        n_out = _out_width(layer, n_ins, path)
        if len({v.size for v in values}) > 1:
            raise ValueError(f"{layer!r} at {where(path)} combines inputs of different spatial shapes "
                             f"{sorted({v.size for v in values})}")
        size = _out_size(layer, values[0].size, path)
        if isinstance(layer, Flatten):
            n_out = n_ins[0] * math.prod(values[0].size)
        found.append(Step(layer, path, n_ins, n_out, values[0].size, size))
        return _Width(n_out, size)

    out = walk(getattr(description, "description", description), _Width(shape[-1], shape[:-1]), rule)
    if isinstance(out, tuple):
        raise ValueError(f"{description!r} ends with a list of {len(out)} outputs; combine them (FanInSum, "
                         "FanInConcat)")
    return tuple(found)


#: the sections Problem's three pass costs share: one example of all three (the per-Dense-layer FLOPs
#: 2 n_in n, 2 n_in n and 4 n_in n of the module docstring: 2 F, 2 F and 4 F)
_PASSES = """Parameters
----------
n : float
    The number of passes.

Returns
-------
tuple of float
    ``(FLOPs, elements)``.

Examples
--------
A forward pass and a VJP cost 2 n_in n FLOPs per Dense layer, a JVP 4 n_in n (module docstring):

>>> p = Problem.of((3, 5, 1), 10)
>>> p.forward_pass(1)[0] == 2 * p.F, p.reverse_pass(1)[0] == 2 * p.F, p.forward_mode(1)[0] == 4 * p.F
(True, True, True)"""


# ---------------------------------------------------------------------- the problem
@dataclass(frozen=True)
class Problem:
    """The sizes that determine the cost: the network's steps, input dimension, N1, N2, symmetry, trace,
    and the itemsize of the returned kernel.

    Parameters
    ----------
    steps : tuple of Step
    input_dim : int
    n1, n2 : int
    symmetric : bool
        X2 = X1.
    trace : bool
        Trace over outputs.
    itemsize : int, default 8
    input_shape : tuple, default ()

    Build one with :meth:`of`.

    Examples
    --------
    An MLP 3 -> 5 -> 5 -> 1 has P = 3*5 + 5 + 5*5 + 5 + 5 + 1 = 56 parameters and F = 15 + 25 + 5 multiply-adds
    per forward pass; N = 10 inputs give N (N + 1) / 2 = 55 symmetric pairs:

    >>> p = Problem.of((3, 5, 5, 1), 10)            # an MLP 3 -> 5 -> 5 -> 1, N = 10 inputs, X2 = X1
    >>> p.P, p.F, p.L, p.O, p.widths, p.pairs
    (56, 45, 2, 1, (3, 5, 5, 1), 55.0)
    >>> p.forward_pass(2)[0] == 2 * 2 * p.F          # 2 FLOPs per multiply-add, 2 inputs
    True
    """

    steps: tuple
    input_dim: int
    n1: int
    n2: int
    symmetric: bool
    trace: bool
    itemsize: int = 8
    input_shape: tuple = ()

    @classmethod
    def of(cls, net, n1: int, n2: int | None = None, trace_outputs: bool = True, dtype=np.float64,
           input_dim: int | None = None) -> Problem:
        """From a description (a layer or a ``stax`` network, with ``input_dim``), or an MLP given as an
        MLPSpec, an object with ``.spec`` or ``.widths``, or a widths tuple (n_0, n_1, ..., n_L, O);
        ``n2=None``: X2 = X1.

        Parameters
        ----------
        net : Layer, Network, MLPSpec, tuple or object with ``spec`` / ``widths``
        n1 : int
        n2 : int, optional
        trace_outputs : bool, default True
        dtype : numpy dtype, default numpy.float64
        input_dim : int or tuple, optional
            A description's input features.

        Returns
        -------
        Problem

        Examples
        --------
        A description and the MLP's widths give the same problem (here with biases: 3*5 + 5 + 5 + 1 = 26 parameters):

        >>> from ntk_theory import stax
        >>> net = stax.serial(stax.Dense(5, b_std=0.1), stax.Relu(), stax.Dense(1, b_std=0.1))
        >>> p, q = Problem.of(net, 10, input_dim=3), Problem.of((3, 5, 1), 10)
        >>> p.widths == q.widths, p.P, q.P
        (True, 26, 26)
        """
        description = getattr(net, "description", net)
        if isinstance(description, Layer):
            if input_dim is None:
                raise ValueError("the cost of a description needs input_dim (the number of input features)")
            found = steps(description, input_dim)
            shape = input_shape(input_dim)
        else:
            widths = net
            for attr in ("spec", "widths"):
                if hasattr(widths, attr):
                    widths = getattr(widths, attr)
            widths = tuple(_checks.positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
            if len(widths) < 3:
                raise ValueError(f"widths must be (input_dim, hidden widths..., output_dim); got {widths}")
            from ..architecture.mlp import mlp_description

            input_dim = widths[0]
            found = steps(mlp_description("relu", len(widths) - 2, widths=widths[1:-1], output_dim=widths[-1]),
                          input_dim)
            shape = (input_dim,)
        n1 = _checks.positive_int("N1", n1)
        symmetric = n2 is None
        n2 = n1 if symmetric else _checks.positive_int("N2", n2)
        return cls(found, int(shape[-1]), n1, n2, symmetric, bool(trace_outputs), np.dtype(dtype).itemsize, shape)

    # ---------------------------------------------------------------- derived sizes
    @functools.cached_property  # a frozen record: computed once
    def dense(self) -> list:
        """The steps with weights (Dense, Conv)."""
        return [s for s in self.steps if isinstance(s.layer, WEIGHTED)]

    @property
    def input_size(self) -> int:
        """Floats per input."""
        return math.prod(self.input_shape) if self.input_shape else self.input_dim

    @property
    def widths(self) -> tuple:
        """(input dimension, output width of every Dense layer in order): an MLP's widths."""
        return (self.input_dim,) + tuple(s.n_out for s in self.dense)

    @property
    def L(self) -> int:
        """Dense layers minus one (an MLP's depth)."""
        return len(self.dense) - 1

    @property
    def O(self) -> int:
        """Outputs per input (positions times channels for spatial outputs)."""
        return self.steps[-1].positions * self.steps[-1].n_out if self.steps else self.input_dim

    @property
    def layer_params(self) -> list:
        """Parameters of each layer with weights."""
        return [s.cost.params for s in self.dense]

    @property
    def P(self) -> int:
        """The number of parameters."""
        return sum(self.layer_params)

    @property
    def F(self) -> int:
        """Multiply-adds of a forward pass per input (layers with weights, at every output position)."""
        return sum(s.positions * s.fan_in * s.n_out for s in self.dense)

    @property
    def G(self) -> int:
        """Output entries of the layers with weights (the stored cotangents per output and input)."""
        return sum(s.elements for s in self.dense)

    @functools.cached_property  # a frozen record: computed once
    def tape(self) -> int:
        """Floats stored per input by the forward pass."""
        return self.input_size + sum(s.cost.stored for s in self.steps)

    @property
    def n_feat(self) -> int:
        """Inputs whose per-input quantities are computed: N (X2 = X1) or N1 + N2."""
        return self.n1 if self.symmetric else self.n1 + self.n2

    @property
    def pairs(self) -> float:
        """Entries computed: N (N + 1) / 2 (X2 = X1) or N1 N2."""
        return self.n1 * (self.n1 + 1) / 2 if self.symmetric else float(self.n1 * self.n2)

    @property
    def Oc(self) -> int:
        """O with the trace over outputs, O^2 without."""
        return self.O if self.trace else self.O**2

    @property
    def n_max(self) -> int:
        """The largest value per input (positions times channels; a Conv's patches)."""
        return max([self.input_size] + [s.elements for s in self.steps]
                   + [s.positions * s.fan_in for s in self.dense])

    @property
    def shared(self) -> list:
        """``(positions, fan-in, width)`` of the layers with weights applied at several positions."""
        return [(s.positions, s.fan_in, s.n_out) for s in self.dense if s.positions > 1]

    @property
    def out_elements(self) -> float:
        """N1 N2 O_c."""
        return float(self.n1) * self.n2 * self.Oc

    def _sum(self, which: str, n: float) -> tuple:
        costs = [getattr(s.cost, which) for s in self.steps]
        return n * sum(f for f, _ in costs), n * sum(e for _, e in costs)

    @filled(passes=_PASSES)
    def forward_pass(self, n: float) -> tuple:
        """``n [FP]``: the forward pass of n inputs.

        %(passes)s
        """
        return self._sum("forward", n)

    @filled(passes=_PASSES)
    def reverse_pass(self, n: float) -> tuple:
        """``n [VJP]``: n reverse passes (input, cotangent pairs).

        %(passes)s
        """
        return self._sum("vjp", n)

    @filled(passes=_PASSES)
    def forward_mode(self, n: float) -> tuple:
        """``n [JVP]``: n forward-mode passes (input, tangent pairs).

        %(passes)s
        """
        return self._sum("jvp", n)

    def by_layer_type(self, which: str = "forward") -> dict:
        """``{type name: (FLOPs, elements)}`` per input of one pass (``forward``, ``vjp`` or ``jvp``).

        Parameters
        ----------
        which : {'forward', 'vjp', 'jvp'}, default 'forward'

        Returns
        -------
        dict

        Examples
        --------
        >>> p = Problem.of((3, 5, 5, 1), 10)            # an MLP 3 -> 5 -> 5 -> 1, N = 10 inputs, X2 = X1
        >>> p.by_layer_type()                         # Dense: 2 (15 + 25 + 5) FLOPs; ReLU: s and s' of 10 units
        {'Dense': (90.0, 22.0), 'Elementwise': (0.0, 20.0)}
        """
        out: dict = {}
        for s in self.steps:
            f, e = getattr(s.cost, which)
            name = type(s.layer).__name__
            f0, e0 = out.get(name, (0.0, 0.0))
            out[name] = (f0 + f, e0 + e)
        return out


def _blocks(n: int, B: int) -> list:
    return [min(B, n - s) for s in range(0, n, B)]


@dataclass(frozen=True)
class JacobianContraction:
    """J by reverse mode (one VJP per output and input), blocks x (x) g per Dense layer, contracted."""

    name: ClassVar[str] = "jacobian_contraction"
    leading: ClassVar[str] = "N O [FP] + N^2 O_c P"

    def terms(self, p: Problem, B: int) -> dict:
        formed = _formed(p, B)  # block j of X2 formed again for every row block i < j
        n_bias = sum(1 for s in p.dense if s.layer.has_bias)
        return {
            "forward pass": p.forward_pass(p.n_feat),
            "VJP (reverse pass)": p.reverse_pass(p.n_feat * p.O),
            "form J blocks": (2.0 * p.O * formed * sum(P * k * n for P, k, n in p.shared),
                              float(p.O) * formed * (p.P + sum(P * n for P, _, n in p.shared))),
            "contract J Lambda J^T": (2.0 * p.pairs * p.Oc * p.P,
                                      2.0 * (len(p.dense) + n_bias) * p.pairs * p.Oc + 2 * p.out_elements),
        }

    def memory(self, p: Problem, B: int) -> float:
        stored = p.n_feat * (p.tape + p.O * p.G + p.O * p.G)  # tape, cotangents, their per-input layout
        blocks = 1 if p.symmetric and B >= p.n1 else 2  # J block buffers: X1's, and X2's unless X2 = X1 in one block
        return stored + blocks * B * p.O * max(p.layer_params) + 2.0 * float(B) ** 2 * p.Oc

    def efficient_block(self, p: Problem) -> int | None:
        return None


@dataclass(frozen=True)
class NTKVectorProducts:
    """Theta e_(b,q) = J1 Lambda J2^T e_(b,q): a VJP then a JVP per output cotangent, J never formed."""

    name: ClassVar[str] = "ntk_vector_products"
    leading: ClassVar[str] = "N^2 O [FP]"

    @staticmethod
    def pairs(p: Problem, B: int) -> float:
        """(input, cotangent-input) pairs pushed: X2 = X1 takes the rows up to the end of each block."""
        if not p.symmetric:
            return float(p.n1) * p.n2
        return float(sum(min(s + B, p.n1) * min(B, p.n1 - s) for s in range(0, p.n1, B)))

    def terms(self, p: Problem, B: int) -> dict:
        pairs = self.pairs(p, B)
        blocks = _blocks(p.n2, B)
        again = sum(min((j + 1) * B, p.n1) for j in range(len(blocks))) if p.symmetric else p.n1 * len(blocks)
        return {
            "forward pass": p.forward_pass(p.n2 + again),
            "VJP (reverse pass)": p.reverse_pass(p.n2 * p.O),
            "tangents Lambda J^T e": (2.0 * p.n2 * p.O * sum(P * k * n for P, k, n in p.shared),
                                      float(p.n2) * p.O * p.P),
            "JVP": p.forward_mode(pairs * p.O),
            "assemble": (0.0, pairs * p.Oc + 2 * p.out_elements),
        }

    def jvp_rows(self, p: Problem, B: int) -> int:
        """Rows of X1 per JVP: its (B O, B1, n) temporaries within WORKING_SET."""
        return max(1, int(WORKING_SET // (3 * B * p.O * p.n_max * WORK_ITEMSIZE)))

    def memory(self, p: Problem, B: int) -> float:
        B1 = min(self.jvp_rows(p, B), p.n1)
        return (B + B1) * (p.tape + p.O * p.G) + B * p.O * p.P + 3.0 * B1 * B * p.O * p.n_max + 2.0 * B1 * B * p.Oc

    def efficient_block(self, p: Problem) -> int | None:
        """The tangents of a block, B O P floats, within TANGENT_SET: larger blocks only cost memory."""
        return max(1, int(TANGENT_SET // (p.O * (p.P + p.G) * WORK_ITEMSIZE)))


def _formed(p: Problem, B: int) -> float:
    """Inputs whose per-input blocks are formed when the row blocks of X1 are formed once and those of X2
    once per row block of X1 (X2 = X1: block j again for every block i < j)."""
    if p.symmetric:
        sizes = _blocks(p.n1, B)
        return float(p.n1 + sum(sizes[j] * j for j in range(len(sizes))))
    return float(p.n1 + len(_blocks(p.n1, B)) * p.n2)


def shared_cost(p: Problem, s: Step, route: str, formed: float) -> tuple:
    """``(FLOPs, elements)`` of one layer with weights at ``s.positions`` = P > 1 positions (fan-in K, width n)
    in the structured method, by ``route``:

    ``gram``      Grams over (input, position) rows contracted with each other:
                  ``pairs (2 O_c P^2 n + 2 P^2 K + 2 O_c P^2) | pairs P^2 (2 + 2 O_c)``;
    ``jacobian``  the rows ``sum_p g_(a,o,p) (x) x_(a,p)`` formed per input (``2 O P K n | O K n + O P n``
                  each time an input's block is formed) and contracted, ``2 pairs O_c (K n + n_b)``."""
    P, K, n = float(s.positions), float(s.fan_in), float(s.n_out)
    if route == "gram":
        return (2.0 * p.pairs * (p.Oc * P * P * n + P * P * K + p.Oc * P * P), p.pairs * P * P * (2.0 + 2.0 * p.Oc))
    nb = n if s.layer.has_bias else 0.0
    return (2.0 * formed * p.O * P * K * n + 2.0 * p.pairs * p.Oc * (K * n + nb),
            formed * p.O * (K * n + P * n + nb) + 2.0 * p.pairs * p.Oc)


def shared_routes(p: Problem) -> dict:
    """``{path: "gram" or "jacobian"}`` for the layers with shared weights: the smaller predicted time of
    :func:`shared_cost` (forming each input's rows once)."""
    def seconds(s, route):
        f, e = shared_cost(p, s, route, float(p.n_feat))
        return f / FLOP_RATE + e / ELEMENT_RATE
    return {s.path: min(("jacobian", "gram"), key=lambda r: seconds(s, r)) for s in p.dense if s.positions > 1}


@dataclass(frozen=True)
class Structured:
    """Per Dense layer (g1 g2^T) * (lambda_b + lambda_W / n_in x1 x2^T), no per-parameter Jacobian; layers
    with weights shared over positions by the cheaper of their two contractions (:func:`shared_cost`)."""

    name: ClassVar[str] = "structured"
    leading: ClassVar[str] = "N O [FP] + N^2 O_c sum_D (n_D + n_in,D)"

    def terms(self, p: Problem, B: int) -> dict:
        inner = p.dense[:-1] if p.steps and p.steps[-1] is p.dense[-1] else p.dense  # readout: g = identity
        routes = shared_routes(p)
        plain = [s for s in p.dense if s.positions == 1]
        formed = _formed(p, B)
        by_route = {r: [shared_cost(p, s, r, formed) for s in p.dense if routes.get(s.path) == r]
                    for r in ("gram", "jacobian")}
        total = lambda r: (sum(f for f, _ in by_route[r]), sum(e for _, e in by_route[r]))
        return {
            "forward pass": p.forward_pass(p.n_feat),
            "VJP (reverse pass)": p.reverse_pass(p.n_feat * p.O),
            "cotangent grams": (2.0 * p.pairs * p.Oc * sum(s.n_out for s in inner if s.positions == 1), 0.0),
            "input grams": (2.0 * p.pairs * sum(s.fan_in for s in plain), 0.0),
            "combine": (0.0, p.pairs * sum(2.0 + 2.0 * p.Oc for _ in plain) + 2 * p.out_elements),
            "shared weights: position grams": total("gram"),
            "shared weights: Jacobian rows": total("jacobian"),
        }

    def memory(self, p: Problem, B: int) -> float:
        stored = p.n_feat * (p.tape + 2 * p.O * p.G)
        routes = shared_routes(p)
        pos2 = max([1.0] + [float(s.positions) ** 2 for s in p.dense if routes.get(s.path) != "jacobian"])
        rows = [p.O * (s.fan_in + 1) * s.n_out + s.elements * p.O for s in p.dense if routes.get(s.path) == "jacobian"]
        return stored + float(B) ** 2 * pos2 * (2 * p.Oc + 2) + B * (sum(rows) + max([0] + rows))

    def efficient_block(self, p: Problem) -> int | None:
        return None


COSTS = {c.name: c for c in (JacobianContraction(), NTKVectorProducts(), Structured())}


@dataclass(frozen=True)
class Estimate:
    """The model's prediction for one method at block size ``block``: FLOPs and elements (by term),
    predicted seconds, bytes of intermediates (batched and unbatched) and of the output.

    Parameters
    ----------
    method : str
    flops, elements, seconds : float
    terms : dict
        {term: (FLOPs, elements)}.
    memory, memory_unbatched, output_bytes : float
    block : int

    Examples
    --------
    The Jacobian contraction's last term is 2 pairs O_c P FLOPs, and the time is FLOPs / FLOP_RATE +
    elements / ELEMENT_RATE:

    >>> p = Problem.of((3, 5, 5, 1), 10)            # an MLP 3 -> 5 -> 5 -> 1, N = 10 inputs, X2 = X1
    >>> e = estimate("jacobian_contraction", p)
    >>> e.terms["contract J Lambda J^T"][0] == 2 * 55 * 1 * 56
    True
    >>> bool(abs(e.seconds - (e.flops / FLOP_RATE + e.elements / ELEMENT_RATE)) < 1e-15)
    True
    """

    method: str
    flops: float
    elements: float
    seconds: float
    terms: dict
    memory: float
    memory_unbatched: float
    output_bytes: float
    block: int


def block_size(method: str, p: Problem, max_memory: float = DEFAULT_MEMORY) -> int:
    """The largest number of inputs per block whose intermediates fit in ``max_memory`` bytes (at least 1),
    no larger than the method's cache-friendly block if it has one, then evened out over the blocks.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    p : Problem
    max_memory : float, default 2 GiB

    Returns
    -------
    int

    Examples
    --------
    A tiny problem fits in one block; a budget of a few bytes leaves one input per block:

    >>> p = Problem.of((3, 5, 5, 1), 10)            # an MLP 3 -> 5 -> 5 -> 1, N = 10 inputs, X2 = X1
    >>> block_size("structured", p), block_size("structured", p, max_memory=1)
    (10, 1)
    """
    cost = _cost(method)
    n_all = max(p.n1, p.n2)
    cap = cost.efficient_block(p)
    lo, hi = 1, n_all if cap is None else min(n_all, cap)
    while lo < hi:  # memory is increasing in B: bisect for the largest B that fits
        mid = (lo + hi + 1) // 2
        if cost.memory(p, mid) * WORK_ITEMSIZE <= max_memory:
            lo = mid
        else:
            hi = mid - 1
    return math.ceil(n_all / math.ceil(n_all / lo))  # equal blocks: 256 in blocks of 128, not 254 + 2



#: the parameters estimate, estimates, choose_method and cost_table share, and the problem of their examples
_PROBLEM_PARAMETERS = """Parameters
----------
p : Problem
    The network, inputs and output (:meth:`Problem.of`).
block : int, optional
    The number of inputs per batch; None: the largest batch whose intermediates fit ``max_memory``
    (:func:`block_size`).
max_memory : float, default 2 GiB
    The memory budget for intermediates, in bytes."""
_MLP_EXAMPLE = """Examples
--------
>>> p = Problem.of((3, 5, 5, 1), 10)            # an MLP 3 -> 5 -> 5 -> 1, N = 10 inputs, X2 = X1"""

@filled(problem=_PROBLEM_PARAMETERS, mlp=_MLP_EXAMPLE)
def estimate(method: str, p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> Estimate:
    """Evaluate one method's formulas; ``block=None`` uses :func:`block_size` under ``max_memory``.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    %(problem)s

    Returns
    -------
    Estimate

    Examples
    --------
    See :class:`Estimate`.
    """
    cost = _cost(method)
    n_all = max(p.n1, p.n2)
    B = block_size(method, p, max_memory) if block is None else min(_checks.positive_int("batch_size", block), n_all)
    terms = cost.terms(p, B)
    flops = float(sum(f for f, _ in terms.values()))
    elements = float(sum(e for _, e in terms.values()))
    return Estimate(
        method=method,
        flops=flops,
        elements=elements,
        seconds=flops / FLOP_RATE + elements / ELEMENT_RATE,
        terms=terms,
        memory=cost.memory(p, B) * WORK_ITEMSIZE,
        memory_unbatched=cost.memory(p, n_all) * WORK_ITEMSIZE,
        output_bytes=p.out_elements * p.itemsize,
        block=B,
    )


@filled(problem=_PROBLEM_PARAMETERS, mlp=_MLP_EXAMPLE)
def estimates(p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> list:
    """:func:`estimate` for every method, in :data:`METHODS` order.

    %(problem)s

    Returns
    -------
    list of Estimate

    %(mlp)s
    >>> [e.method for e in estimates(p)] == list(METHODS)
    True
    """
    return [estimate(m, p, block, max_memory) for m in METHODS]


@filled(problem=_PROBLEM_PARAMETERS, mlp=_MLP_EXAMPLE)
def choose_method(p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> str:
    """What ``method="auto"`` runs: the smallest predicted time (every method is batched to fit memory).

    %(problem)s

    Returns
    -------
    str

    %(mlp)s
    >>> choose_method(p) == min(estimates(p), key=lambda e: e.seconds).method
    True
    """
    return min(estimates(p, block, max_memory), key=lambda e: e.seconds).method


def _cost(method: str):
    try:
        return COSTS[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(map(repr, METHODS))}") from None


def _si(x: float) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}"
    return f"{x:.3g}"


def _bytes(x: float) -> str:
    for factor, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if x >= factor:
            return f"{x / factor:.3g} {unit}"
    return f"{x:.0f} B"


def _seconds(t: float) -> str:
    return f"{t:.3g} s" if t >= 1 else f"{t * 1e3:.3g} ms"


@filled(problem=_PROBLEM_PARAMETERS, mlp=_MLP_EXAMPLE)
def cost_table(p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> str:
    """A printable table: per method FLOPs, elements, predicted time, memory batched and unbatched, the
    terms of each method, and the per-layer-type work of one forward, reverse and forward-mode pass.

    %(problem)s

    Returns
    -------
    str

    %(mlp)s
    >>> print(cost_table(p).splitlines()[0])
    empirical NTK cost model: 5 layers (3 Dense, P = 56 parameters, input dimension 3), N1 = 10, X2 = X1, ...
    """
    rows = estimates(p, block, max_memory)
    chosen = min(rows, key=lambda e: e.seconds).method
    kind = f"trace over {p.O} outputs" if p.trace else f"full ({p.n1}, {p.n2}, {p.O}, {p.O}) kernel"
    x2 = "X2 = X1" if p.symmetric else f"N2 = {p.n2}"
    lines = [
        f"empirical NTK cost model: {len(p.steps)} layers ({len(p.dense)} Dense, P = {p.P:,} parameters, input "
        f"dimension {p.input_dim}), N1 = {p.n1}, {x2}, {kind}, float64 work, {p.itemsize * 8}-bit output",
        f"memory budget for intermediates {_bytes(max_memory)}; the output itself is "
        f"{_bytes(p.out_elements * p.itemsize)}; time = FLOPs / {FLOP_RATE / 1e9:.0f} GFLOP/s + elements / "
        f"{ELEMENT_RATE / 1e9:.0f} G/s",
        "",
        f"{'method':<22} {'FLOPs':>9} {'elements':>9} {'time':>9} {'memory':>10} {'block':>6} {'unbatched':>10}"
        "   leading order",
    ]
    for e in rows:
        mark = "  <- auto" if e.method == chosen else ""
        lines.append(
            f"{e.method:<22} {_si(e.flops):>9} {_si(e.elements):>9} {_seconds(e.seconds):>9} {_bytes(e.memory):>10} "
            f"{e.block:>6} {_bytes(e.memory_unbatched):>10}   {COSTS[e.method].leading}{mark}"
        )
    lines.append("")
    lines.append("terms (FLOPs | elements):")
    for e in rows:
        lines.append(f"  {e.method}: " + "; ".join(f"{k} {_si(f)} | {_si(el)}" for k, (f, el) in e.terms.items()))
    lines.append("per input and vector, by layer type (FLOPs | elements):")
    for which, label in (("forward", "[FP]"), ("vjp", "[VJP]"), ("jvp", "[JVP]")):
        lines.append(f"  {label}: " + "; ".join(f"{k} {_si(f)} | {_si(el)}"
                                                 for k, (f, el) in p.by_layer_type(which).items()))
    lines.append(f"auto chooses: {chosen}")
    return "\n".join(lines)
