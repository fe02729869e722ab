r"""The finite-width empirical NTK of any architecture description by three methods (Novak,
Sohl-Dickstein, Schoenholz 2022).

A :class:`Model` is a description (:mod:`ntk_theory.architecture`) with the parameters of its Dense
layers.  Every Dense layer D acts as ``z = x W + b`` in *effective* coordinates (``W = W_s w``,
``b = b_s beta`` for neural-tangents' parameters ``(w, beta)``: ``W_s = W_std / sqrt(n_in)``, ``b_s = b_std``
in 'ntk', 1 in 'standard' and 'unit') and carries NTK factors ``(lambda_b, lambda_W)``
(:meth:`~ntk_theory.architecture.Dense.learning_rate_factors`).  The empirical NTK is::

    Theta_(ab, oq) = sum_D [ lambda_b  g_(a,o) . g_(b,q)  +  lambda_W / n_in  (g_(a,o) . g_(b,q)) (x_a . x_b) ]
                   = J(X1) Lambda J(X2)^T,

``g_(a,o) = df_o(x_a)/dz_D`` the cotangent of D's output and ``x_a`` its input at input a, J the Jacobian
with respect to the effective parameters and Lambda = diag(lambda_W / n_in on W, lambda_b on b).  For
'ntk' and 'standard' layers this is ``J J^T`` with respect to neural-tangents' parameters (its
``empirical_ntk_fn``); 'unit' is PDLT's ``J Lambda J^T``.

Derivatives come from the reference network (:mod:`ntk_theory.reference.graph`: its tape of the
forward pass, ``Tape.backward`` for reverse mode, ``Tape.push_forward`` for forward mode, one rule per
layer type: Dense, elementwise, LayerNorm, FanInSum, FanInConcat; FanOut, Identity, serial and
parallel are structural).  Every layer acts on each input separately, so one reverse pass started from
the cotangent ``e_o`` at every input at once gives ``g_(a,o)`` for all inputs a: the O output cotangents
are O VJPs per input.  The three methods:

``jacobian_contraction``
    J by reverse mode (one VJP per output and input, as the paper defines it): per Dense layer the
    blocks ``x_a (x) g_(a,o)`` and ``g_(a,o)`` are formed and contracted, ``Theta += (lambda_W / n_in)
    J1_W J2_W^T + lambda_b J1_b J2_b^T`` (the factors scale the small Gram, not J).  Cost ``N O [FP] + N^2 O^2 P``.
``ntk_vector_products``
    ``Theta e_(b,q) = J1 [Lambda J2^T e_(b,q)]``: the parameter cotangent of ``e_(b,q)`` (a VJP at x_b,
    per Dense ``(x_b^T g_(b,q), g_(b,q))``), scaled by Lambda, is the tangent of a JVP at X1 (forward
    mode through the tape).  J is never formed.  Cost ``N^2 O [FP]``.
``structured``
    The structure of each layer type's Jacobian: parameterless layers (elementwise, LayerNorm, fan-in,
    fan-out) only carry cotangents (their rules in the reverse pass); a Dense layer's parameter Jacobian
    is the Kronecker product ``x (x) g``, so its NTK is the product of two Gram matrices,
    ``(g1 . g2) * (lambda_b + lambda_W / n_in x1 . x2)`` (:data:`PARAMETER_RULES`; the readout, whose
    cotangent is the identity, gives ``delta_oq``).  Cost ``N O [FP] + N^2 O^2 sum_D (n_D + n_in,D)``.

Convolutions enter as the Dense layer on their patches (fan-in ``C_in prod(filter_shape)``; a Dense layer on
spatial inputs acts on the channels of every position): J is summed over the positions sharing the weights
(``sum_p x_(a,p) (x) g_(a,o,p)``), NTK-vector products sum ``x_(b,p)^T g_(b,q,p)`` over positions, and the
structured method contracts the Gram of the cotangents over (input, output, position) rows with the patch
Gram, ``sum_(p, q) (g_(a,o,p) . g_(b,r,q)) (lambda_b + c x_(a,p) . x_(b,q))`` (Novak, Sohl-Dickstein,
Schoenholz 2022, section 4; :meth:`DenseRule.shared_ntk`), or, when the cost model predicts it cheaper
(:func:`~ntk_theory.empirical.cost.shared_routes`: ``K n < S^2 n`` roughly, K the patch width, n the channels,
S the positions), forms the Jacobian rows ``sum_p g_(a,o,p) (x) x_(a,p)`` of each (input, output) and contracts
them (:meth:`DenseRule.shared_jacobian`, no (N S)^2 O^2 temporaries).  Inputs are (N, d), (N, W, C) or (N, H, W, C).
A network whose output keeps spatial axes (N, *S, C) (a Conv readout) has O = P C outputs, one per (position,
channel) in row-major order: the methods run on them as on any O outputs (the output cotangents are the O unit
arrays of the output's shape), and the result is returned in neural-tangents' layout (:func:`spatial_layout`:
(N1, N2, S, S, ..., C, C), or the mean over channels with ``trace_outputs``).

Every method is batched over inputs so that its intermediates stay under ``max_memory`` bytes (the cost
model's memory formula, :mod:`ntk_theory.empirical.cost`, picks the block size); with ``X2=None`` only
blocks on and above the diagonal are computed and mirrored.  Work is float64 (the reference network's
precision); the three methods agree to rounding (about 1e-15 relative per layer).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

import numpy as np

from .. import _checks
from ..architecture import Dense, Layer, where
from ..reference.graph import (
    DenseParameters,
    Tape,
    inputs,
    linear_layer,
    linear_params,
    params_at,
)
from ..reference.graph import trace as record
from . import cost as _cost
from .cost import DEFAULT_MEMORY, METHODS

Array = np.ndarray


# ---------------------------------------------------------------------- the model
@dataclass(frozen=True)
class DenseEntry:
    """A Dense layer occurrence of a :class:`Model`: its action in effective coordinates (``z = x W + b``,
    a :class:`~ntk_theory.reference.graph.DenseParameters`), ``lambda_b`` and ``c = lambda_W / n_in``."""

    layer: Dense
    path: tuple
    action: DenseParameters
    lambda_b: float
    c: float

    @property
    def has_bias(self) -> bool:
        return self.action.b is not None and self.lambda_b != 0.0


def _dot(a: Array, B: Array) -> Array:
    """``a @ B`` for a (..., m) and a 2-D B (m, n) as one matrix product over all leading axes (NumPy's
    stacked matmul runs a much slower loop for a 3-D a against a 2-D B).  A 3-D a stored with its first two
    axes swapped (cotangents (O, N, m) laid out (N, O, m), as :func:`run` starts them) gives a result stored
    the same way, (O, N, n) laid out (N, O, n): one product, no copy."""
    if a.ndim <= 2:
        return a @ B
    if a.ndim == 3 and not a.flags.c_contiguous and a.swapaxes(0, 1).flags.c_contiguous:
        return _dot(a.swapaxes(0, 1), B).swapaxes(0, 1)
    a2 = a.reshape(-1, a.shape[-1])
    return (a2 @ B).reshape(a.shape[:-1] + (B.shape[1],))


class EffectiveDense(DenseParameters):
    """A Dense layer ``z = x W + b`` in effective coordinates (unit scales), with the products of
    :class:`~ntk_theory.reference.graph.DenseParameters` done as single matrix products over the leading
    axes (cotangents and tangents carry a leading batch axis).  ``tangent``'s parameter tangent ``dW``
    (K, n_in, n_out) is best a transposed view of a contiguous (n_in, K, n_out) array (as
    :meth:`DenseRule.tangent` makes it): ``x dW`` is then one product ``x (n_in, K n_out)``."""

    def forward(self, x):
        z = _dot(x, self.W)
        if self.b is not None:
            if np.broadcast_shapes(z.shape, self.b.shape) == z.shape:
                z += self.b  # into the product's fresh array (no second array per layer)
            else:
                z = z + self.b
        return z

    def backward(self, g):
        return _dot(g, self.W.T)

    def tangent(self, x, dx, dW, db):
        dz = None if dx is None else _dot(dx, self.W)
        if dW is not None:
            if x.ndim == 2 and dW.ndim == 3:
                K, n_in, n_out = dW.shape
                t = (x @ dW.transpose(1, 0, 2).reshape(n_in, K * n_out)).reshape(x.shape[0], K, n_out)
                t = t.transpose(1, 0, 2)
            else:
                t = np.matmul(x, dW)
            dz = t if dz is None else dz + t
        if db is not None and self.b is not None:
            dz = db if dz is None else dz + db
        return dz


def _effective(layer: Dense, W, b, n_in: int, path: tuple) -> DenseParameters:
    """``z = x W + b`` (a 'standard' layer of unit scales) with the given effective parameters."""
    plain = replace(layer, W_std=1.0, b_std=None if b is None else 1.0, parameterization="standard", variances=None)
    return EffectiveDense(plain, (W, b), n_in, path)


@dataclass(frozen=True, eq=False)
class Model:
    """A description with Dense parameters in effective coordinates and NTK factors (module docstring).

    Build one with :meth:`of` (neural-tangents' parameter layout) or :meth:`from_dense` (effective
    parameters and factors given per Dense layer, in order).

    Parameters
    ----------
    description : Layer
    input_dim : int
        Features per input (flattened).
    output_dim : int
    dense : dict
        {path: entry} of the Dense (and Conv) layers' effective parameters and factors.
    problem_steps : tuple
        The cost model's steps.
    input_shape : tuple, default ()
        Per-input shape; () for (input_dim,).
    output_spatial : tuple, default ()

    Examples
    --------
    With neural-tangents' parameters ('ntk': effective W = W_std / sqrt(n_in) w):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.reference import init_description, description_ntk
    >>> from ntk_theory.empirical import empirical_ntk
    >>> net = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5))
    >>> _, params = init_description(net.description, 0, (-1, 2))
    >>> m = Model.of(net, params, 2)
    >>> m.n_params, m.shape                          # 2 x 3 + 3 + 3 x 1 (no readout bias)
    (12, (2,))
    >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
    >>> bool(np.allclose(empirical_ntk(m, X), description_ntk(net.description, params, X)))
    True
    """

    description: Layer
    input_dim: int
    output_dim: int
    dense: dict  # path -> DenseEntry
    problem_steps: tuple
    input_shape: tuple = ()  # per input: (d,), (W, C) or (H, W, C); () means (input_dim,)
    output_spatial: tuple = ()  # spatial sizes of the output ((W,) or (H, W)); () for outputs (N, O)

    # its params/input_dim/Returns/Raises stand again in ntk.model, which sends descriptions here (each its own)
    @classmethod
    def of(cls, description, params, input_dim) -> Model:
        """``description`` (a layer or a ``stax`` network) with ``params`` as neural-tangents' ``init_fn``
        returns them (serial: list, parallel: tuple, Dense, Conv: (W, b)), at inputs of ``input_dim`` features
        (or of per-input shape (W, C) / (H, W, C) for convolutional networks).  A Conv enters as the Dense
        layer on its patches (:func:`~ntk_theory.reference.graph.linear_layer`, fan-in ``C_in prod(filter)``).

        Parameters
        ----------
        description : Layer or Network
        params : list
            neural-tangents' layout.
        input_dim : int or tuple
            Input features, or the per-input image shape.

        Returns
        -------
        Model

        Raises
        ------
        ValueError
            If ``description`` is not a description or the parameters do not fit it.

        Examples
        --------
        See :class:`Model`.
        """
        description = getattr(description, "description", description)
        if not isinstance(description, Layer):
            raise ValueError(f"expected a description (stax.serial(...), a layer); got {type(description).__name__}")
        shape = _cost.input_shape(input_dim)
        found = _cost.steps(description, shape)
        dense = {}
        for s in found:
            row = linear_layer(s.layer)
            if row is None:
                continue
            k = s.fan_in
            nt = DenseParameters(row, linear_params(s.layer, params_at(params, s.path), k, s.path), k, s.path)
            if nt.W.ndim != 2:
                raise ValueError(f"{s.layer!r} at {where(s.path)}: W must be 2-D (one network); got {nt.W.shape}")
            W = nt.W * nt.w_scale
            b = None if nt.b is None else (nt.b * nt.b_scale).reshape(1, -1)
            lam_b, lam_W = s.layer.learning_rate_factors(k)
            dense[s.path] = DenseEntry(row, s.path, _effective(row, W, b, k, s.path),
                                       float(lam_b) if b is not None else 0.0, float(lam_W) / k)
        spatial = tuple(found[-1].size_out) if found else ()
        n_out = (found[-1].n_out if found else shape[-1]) * int(np.prod(spatial, dtype=int))
        return cls(description, shape[-1], n_out, dense, found, shape, spatial)

    @classmethod
    def from_dense(cls, description: Layer, input_dim: int, weights, biases, factors) -> Model:
        """Effective parameters per Dense layer in order: ``weights[k]`` (n_in, n_out), ``biases[k]`` (n_out,)
        or None, ``factors[k] = (lambda_b, lambda_W / n_in)``.

        Parameters
        ----------
        description : Layer
        input_dim : int
        weights, biases, factors : sequence
            One per Dense layer, in order.

        Returns
        -------
        Model

        Examples
        --------
        See :class:`Model`.
        """
        found = _cost.steps(description, input_dim)
        dense_steps = [s for s in found if isinstance(s.layer, Dense)]
        if not len(dense_steps) == len(weights) == len(biases) == len(factors):
            raise ValueError(f"{len(dense_steps)} Dense layers but {len(weights)} weights, {len(biases)} biases "
                             f"and {len(factors)} factors")
        dense = {}
        for s, W, b, (lam_b, c) in zip(dense_steps, weights, biases, factors):
            b = None if b is None else np.asarray(b, dtype=np.float64).reshape(1, -1)
            dense[s.path] = DenseEntry(s.layer, s.path, _effective(s.layer, W, b, s.n_in, s.path),
                                       float(lam_b) if b is not None else 0.0, float(c))
        return cls(description, int(input_dim), found[-1].n_out, dense, found)

    def action(self, layer, path, n_in):
        """The linear action of the Dense (or Conv) layer at ``path``: the description interpreter's hook.

        Parameters
        ----------
        layer : Layer
        path : tuple
        n_in : int

        Returns
        -------
        object
            The layer's effective parameters and their application.

        Examples
        --------
        See :class:`Model`.
        """
        return self.dense[path].action

    def problem(self, n1: int, n2: int | None, trace_outputs: bool, dtype=np.float64) -> _cost.Problem:
        """The cost model's :class:`~ntk_theory.empirical.cost.Problem` at N1, N2 inputs.

        Parameters
        ----------
        n1 : int
        n2 : int or None
            None: X2 = X1.
        trace_outputs : bool
        dtype : numpy dtype, default numpy.float64
            The returned kernel's.

        Returns
        -------
        Problem

        Examples
        --------
        See :class:`Model`.
        """
        n1 = _checks.positive_int("N1", n1)
        n2 = None if n2 is None else _checks.positive_int("N2", n2)
        return _cost.Problem(self.problem_steps, self.input_dim, n1, n1 if n2 is None else n2, n2 is None,
                             bool(trace_outputs), np.dtype(dtype).itemsize, self.shape)

    @property
    def shape(self) -> tuple:
        """The per-input shape."""
        return self.input_shape or (self.input_dim,)

    def inputs(self, X, name: str = "X"):
        """X checked against the per-input shape (a (d,) vector is one input of an MLP-like network).

        Parameters
        ----------
        X : array_like
        name : str, default 'X'

        Returns
        -------
        ndarray

        Examples
        --------
        See :class:`Model`.
        """
        if len(self.shape) == 1:
            return _checks.inputs(X, name, dim=self.input_dim)
        return inputs(X, name, shape=self.shape)

    @property
    def n_params(self) -> int:
        """The number of parameters."""
        return sum(e.action.W.size + (0 if e.action.b is None else e.action.b.size) for e in self.dense.values())


# ---------------------------------------------------------------------- passes
@dataclass(eq=False)
class Pass:
    """Forward pass at X and the reverse pass of the O output cotangents ``e_o`` at every input:
    ``cot`` (O, N, O), and per Dense path its input ``x`` (N, n_in) and cotangent ``g`` (O, N, n_out)
    (spatial layers: ``x`` (N, *spatial, n_in) (a Conv's patches), ``g`` (O, N, *spatial, n_out))."""

    tape: Tape
    cot: Array
    sens: dict

    @property
    def n(self) -> int:
        return self.tape.f.shape[0]

    def is_identity(self, path) -> bool:
        """The cotangent of this Dense output is the output cotangent itself (a readout with outputs (N, O);
        a spatial readout's cotangent stays a spatial array)."""
        return self.sens[path].g is self.cot and self.cot.ndim == 3


def run(model: Model, X: Array) -> Pass:
    """Forward pass at X (N, d) and one VJP per output and input (reverse mode, vectorised over inputs).

    Outputs (N, O): the cotangents (O, N, O) are stored input-major, (N, O, O), so that every cotangent of
    the reverse pass is stored (N, O, n) (:func:`_dot`, elementwise products keep the layout) and
    :func:`rows_first` is a view."""
    tape = record(model.description, X, model.action)
    N, shape = tape.f.shape[0], tape.f.shape[1:]
    O = int(np.prod(shape))  # spatial outputs (N, *S, C): O = P C outputs in row-major order
    if len(shape) == 1:
        cot = np.ascontiguousarray(np.broadcast_to(np.eye(O), (N, O, O))).swapaxes(0, 1)
    else:
        cot = np.broadcast_to(np.eye(O).reshape((O, 1) + shape), (O, N) + shape)
    sens = tape.backward(cot)
    return Pass(tape, cot, {s.path: s for s in sens})


def rows_first(g: Array) -> Array:
    """(O, N, ..., n) -> (N, O, ..., n), contiguous (a view when g is stored input-major)."""
    return np.ascontiguousarray(np.swapaxes(g, 0, 1))


def _positions(x: Array, g: Array) -> tuple:
    """A spatial layer's rows per input: x (N, *spatial, k) -> (N, P, k), g (N, O, *spatial, n) -> (N, O, P, n)."""
    return x.reshape(x.shape[0], -1, x.shape[-1]), g.reshape(g.shape[0], g.shape[1], -1, g.shape[-1])


# ---------------------------------------------------------------------- per-layer-type rules
class _Buffer:
    """One growing scratch array, reused for every block of the same role (writing into memory already in
    use avoids the page faults of a fresh allocation)."""

    def __init__(self):
        self.data = np.empty(0)

    def get(self, shape):
        size = int(np.prod(shape))
        if self.data.size < size:
            self.data = np.empty(size)
        return self.data[:size].reshape(shape)


class DenseRule:
    """The parameter derivatives of a Dense layer (``z = x W + b``): J_W = x (x) g, J_b = g."""

    @staticmethod
    def jacobian_blocks(entry: DenseEntry, x: Array, g: Array) -> list:
        """Scaled Jacobian blocks at the rows of x, g (N, O, n_out): ``sqrt(c) x_a (x) g_(a,o)`` (N, O, n_in,
        n_out) and, with a bias, ``sqrt(lambda_b) g`` (N, O, n_out).  Spatial rows (x (N, *spatial, n_in),
        g (N, O, *spatial, n_out)): the weights are shared, so the blocks are summed over positions,
        ``sqrt(c) sum_p x_(a,p) (x) g_(a,o,p)`` (one product over positions per input)."""
        if x.ndim > 2:
            xp, gp = _positions(x, g)
            N, O, P, n = gp.shape
            # per input one product (k, P) x (P, O n), then (N, k, O, n) -> (N, O, k, n)
            xg = np.matmul(np.swapaxes(xp, -1, -2), gp.transpose(0, 2, 1, 3).reshape(N, P, O * n))
            blocks = [np.sqrt(entry.c) * xg.reshape(N, -1, O, n).transpose(0, 2, 1, 3)]
            if entry.has_bias:
                blocks.append(np.sqrt(entry.lambda_b) * gp.sum(axis=2))
            return blocks
        blocks = [np.sqrt(entry.c) * x[:, None, :, None] * g[:, :, None, :]]
        if entry.has_bias:
            blocks.append(np.sqrt(entry.lambda_b) * g)
        return blocks

    @staticmethod
    def contraction_blocks(entry: DenseEntry, x: Array, g: Array, buffer: _Buffer | None = None) -> list:
        """The unscaled Jacobian blocks with their factors, ``[(c, J_W), (lambda_b, J_b)]`` (no bias: one
        pair), rows per (input, output), columns in any fixed order: ``J Lambda J^T = sum_i factor_i J_i J_i^T``.
        Dense rows: ``x_a (x) g_(a,o)`` (N, O, n_in, n_out), written into ``buffer`` when given (valid until
        its next use), and g; shared weights: :meth:`shared_jacobian`."""
        if x.ndim > 2:
            J, s = DenseRule.shared_jacobian(entry, x, g)
        else:
            shape = (x.shape[0], g.shape[1], x.shape[1], g.shape[2])
            J = np.empty(shape) if buffer is None else buffer.get(shape)
            np.multiply(x[:, None, :, None], g[:, :, None, :], out=J)
            s = g if entry.has_bias else None
        return [(entry.c, J)] + ([] if s is None else [(entry.lambda_b, s)])

    @staticmethod
    def tangent(entry: DenseEntry, x: Array, g: Array, buffer: _Buffer | None = None) -> tuple:
        """``Lambda J^T e`` for the cotangents g (K, N, n_out) at the rows of x (N, n_in), one per (k, a):
        ``(c x_a^T g_(k,a), lambda_b g_(k,a))`` as (K N, n_in, n_out) (a transposed view of a contiguous
        (n_in, K N, n_out) array) and (K N, 1, n_out)."""
        if x.ndim > 2:  # shared weights: c sum_p x_(a,p)^T g_(k,a,p), lambda_b sum_p g_(k,a,p)
            K, N, n = g.shape[0], g.shape[1], g.shape[-1]
            xp = x.reshape(N, -1, x.shape[-1])
            gp = g.reshape(K, N, -1, n)
            P = gp.shape[2]
            # per input one product (n_in, P) x (P, K n) -> (N, n_in, K, n) -> (K, N, n_in, n)
            xg = np.matmul(np.swapaxes(entry.c * xp, -1, -2), gp.transpose(1, 2, 0, 3).reshape(N, P, K * n))
            dW = np.ascontiguousarray(xg.reshape(N, -1, K, n).transpose(2, 0, 1, 3))
            db = entry.lambda_b * gp.sum(axis=2).reshape(K * N, 1, n) if entry.has_bias else None
            return dW.reshape(K * N, x.shape[-1], n), db
        K, N, n = g.shape
        shape = (x.shape[1], K, N, n)
        dW = np.empty(shape) if buffer is None else buffer.get(shape)  # (n_in, K, N, n_out), contiguous
        np.multiply((entry.c * x).T[:, None, :, None], g[None, :, :, :], out=dW)
        db = entry.lambda_b * g.reshape(K * N, 1, n) if entry.has_bias else None
        return dW.reshape(x.shape[1], K * N, n).transpose(1, 0, 2), db

    @staticmethod
    def ntk_factor(entry: DenseEntry, x1: Array, x2: Array | None, buffer: _Buffer | None = None) -> Array:
        """``lambda_b + c x1 . x2`` (N1, N2): the factor multiplying ``g1 . g2``; spatial rows: over
        (input, position) pairs, (N1, P, N2, P).  With a ``buffer`` it is written into it (valid until its
        next use)."""
        x2 = x1 if x2 is None else x2
        r1, r2 = x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1])
        F = _gram(r1, None if x2 is x1 else r2, (r1.shape[0], r2.shape[0]), buffer)
        if x1.ndim > 2:
            F = F.reshape(x1.shape[0], -1, x2.shape[0], r2.shape[0] // x2.shape[0])
        F *= entry.c
        F += entry.lambda_b
        return F

    @staticmethod
    def shared_jacobian(entry: DenseEntry, x: Array, g: Array) -> tuple:
        """The unscaled Jacobian rows of a layer with weights shared over positions, one per (input, output):
        ``sum_p g_(a,o,p) (x) x_(a,p)`` as (N, O, n_out n_in) (columns in (n_out, n_in) order: one product
        (O n_out, P) x (P, n_in) per input) and, with a bias, ``sum_p g_(a,o,p)`` (N, O, n_out), else None."""
        xp, gp = _positions(x, g)
        N, O, P, n = gp.shape
        gt = np.ascontiguousarray(gp.transpose(0, 2, 1, 3)).reshape(N, P, O * n)
        J = np.matmul(np.swapaxes(gt, 1, 2), xp).reshape(N, O, -1)  # (N, O n, k) -> rows (a, o), columns (n, k)
        return J, (gp.sum(axis=2) if entry.has_bias else None)

    @staticmethod
    def jacobian_ntk(entry: DenseEntry, A1: tuple, A2: tuple | None, trace: bool) -> Array:
        """The NTK block of a layer with shared weights from its Jacobian rows (:meth:`shared_jacobian` at the
        two row blocks; A2 None: the same block, symmetric product): ``c J1 . J2 + lambda_b s1 . s2`` over
        (input, output) rows, as (b1, b2, O, O) (trace: (b1, b2), the sum over o = r)."""
        J1, s1 = A1
        J2, s2 = (None, None) if A2 is None else A2
        b1, O = J1.shape[:2]
        b2 = b1 if A2 is None else J2.shape[0]
        rows = (b1, b2) if trace else (b1 * O, b2 * O)
        G = _gram(J1, J2, rows)
        G *= entry.c
        if s1 is not None:
            G += entry.lambda_b * _gram(s1, s2, rows)
        return _outputs_last(G, b1, b2, O, trace)

    @staticmethod
    def shared_ntk(F: Array, g1: Array, g2: Array | None, trace: bool) -> Array:
        """The NTK block of a layer with weights shared over positions (Novak, Sohl-Dickstein, Schoenholz
        2022, section 4): ``sum_(p, q) (g1_(a,o,p) . g2_(b,r,q)) F[a, p, b, q]`` as (b1, b2, O, O) (trace:
        ``sum_o`` of the o = r entries, (b1, b2)); the Gram of the cotangents over (input, output,
        position) rows contracted with the patch Gram F, J never formed."""
        g1p = g1.reshape(g1.shape[0], g1.shape[1], -1, g1.shape[-1])  # (b1, O, P, n)
        g2p = g1p if g2 is None else g2.reshape(g2.shape[0], g2.shape[1], -1, g2.shape[-1])
        b1, O, P, n = g1p.shape
        b2 = g2p.shape[0]
        if trace:  # only the o = r Grams: one product per output
            G = np.zeros((b1 * P, b2 * P))
            for o in range(O):
                G += g1p[:, o].reshape(-1, n) @ g2p[:, o].reshape(-1, n).T
            return np.einsum("apbq,apbq->ab", G.reshape(b1, P, b2, P), F)
        G = (g1p.reshape(-1, n) @ g2p.reshape(-1, n).T).reshape(b1, O, P, b2, O, P)
        return np.einsum("aopbrq,apbq->abor", G, F)


#: parameter rules per layer type (the only layer type with parameters is Dense; elementwise, LayerNorm,
#: fan-in and fan-out layers enter through their reverse- and forward-mode rules in reference.graph)
PARAMETER_RULES = {Dense: DenseRule}


def _rule(entry: DenseEntry):
    try:
        return PARAMETER_RULES[type(entry.layer)]
    except KeyError:
        raise NotImplementedError(f"{entry.layer!r} at {where(entry.path)}: no empirical-NTK parameter rule") from None


# ---------------------------------------------------------------------- output assembly
class _Output:
    """The result, filled block by block in its final layout: (N1, N2) for the trace (summed over
    outputs; divided by O at the end), else (N1, N2, O, O)."""

    def __init__(self, n1, n2, O, trace):
        self.trace, self.O = trace, O
        self.data = np.zeros((n1, n2) if trace else (n1, n2, O, O))

    def add(self, s1, s2, block):
        view = self.data[s1, s2]
        np.add(view, block, out=view)

    def add_diagonal(self, s1, s2, F):
        """Add F (b1, b2) to every output pair o = q (the trace: O F)."""
        if self.trace:
            self.add(s1, s2, self.O * F)
        else:
            idx = np.arange(self.O)
            self.data[s1, s2][:, :, idx, idx] += F[:, :, None]

    def mirror(self, s1, s2):
        """Fill block (s2, s1) of a symmetric kernel from block (s1, s2)."""
        self.data[s2, s1] = self.data[s1, s2].T if self.trace else self.data[s1, s2].transpose(1, 0, 3, 2)

    def symmetrize(self, s):
        """Average a diagonal block with its transpose (computed both ways, equal up to rounding)."""
        blk = self.data[s, s]
        blk += (blk.T if self.trace else blk.transpose(1, 0, 3, 2)).copy()
        blk *= 0.5

    def result(self, dtype):
        if self.trace and self.O > 1:
            self.data /= self.O
        return self.data.astype(dtype, copy=False)


def _gram(A1, A2, rows, buffer: _Buffer | None = None):
    """A1 A2^T with the rows of each flattened to ``rows`` entries; A2 None: A1 A1^T (symmetric).  With a
    ``buffer`` the product is written into it (valid until its next use)."""
    A1 = A1.reshape(rows[0], -1)
    A2 = A1 if A2 is None else A2.reshape(rows[1], -1)
    return A1 @ A2.T if buffer is None else np.matmul(A1, A2.T, out=buffer.get(rows))


def _outputs_last(G, b1, b2, O, trace):
    """A Gram matrix over (input, output) rows, (b1 O, b2 O), as (b1, b2, O, O) (a view); trace: as is."""
    return G if trace else G.reshape(b1, O, b2, O).transpose(0, 2, 1, 3)


def _pair_blocks(n1, n2, B, symmetric):
    """Index pairs of row blocks: all of them, or those with j >= i when the kernel is symmetric."""
    b1 = [slice(s, min(s + B, n1)) for s in range(0, n1, B)]
    b2 = b1 if symmetric else [slice(s, min(s + B, n2)) for s in range(0, n2, B)]
    for i, s1 in enumerate(b1):
        for j, s2 in enumerate(b2):
            if symmetric and j < i:
                continue
            yield i, j, s1, s2


def _mirror_all(out, n1, B):
    for i, j, s1, s2 in _pair_blocks(n1, n1, B, True):
        if j > i:
            out.mirror(s1, s2)


# ---------------------------------------------------------------------- the three methods
def _per_input(p: Pass) -> dict:
    """Per Dense path: (x (N, n_in), g (N, O, n_out) or None for an identity cotangent)."""
    return {path: (s.x, None if p.is_identity(path) else rows_first(s.g)) for path, s in p.sens.items()}


def _passes(model, X1, X2, trace):
    """The forward/backward passes at X1 and X2 (one pass when X2 is None) and the output accumulator."""
    sym = X2 is None
    p1 = run(model, X1)
    p2 = p1 if sym else run(model, X2)
    N1, O = p1.n, p1.cot.shape[0]
    N2 = p2.n
    return sym, p1, p2, N1, N2, O, _Output(N1, N2, O, trace)


def _jacobian_contraction(model, X1, X2, trace, B):
    sym, p1, p2, N1, N2, O, out = _passes(model, X1, X2, trace)
    eye = np.broadcast_to(np.eye(O), (max(N1, N2), O, O))
    d1, d2 = _per_input(p1), (None if sym else _per_input(p2))
    buffers = (_Buffer(), _Buffer())  # X1's and X2's J blocks, reused across row blocks and layers
    for path, (x1, g1) in d1.items():
        entry = model.dense[path]
        rule = _rule(entry)
        x2, g2 = (x1, g1) if sym else d2[path]
        g1 = eye[:N1] if g1 is None else g1
        g2 = eye[:N2] if g2 is None else g2
        J1, J1_rows = None, None
        for i, j, s1, s2 in _pair_blocks(N1, N2, B, sym):
            if J1_rows != (s1.start, s1.stop):  # J blocks of X1's rows, formed once per row block
                J1 = rule.contraction_blocks(entry, x1[s1], g1[s1], buffers[0])
                J1_rows = (s1.start, s1.stop)
            same = sym and i == j
            J2 = None if same else rule.contraction_blocks(entry, x2[s2], g2[s2], buffers[1])
            b1, b2 = J1[0][1].shape[0], s2.stop - s2.start
            rows = (b1, b2) if trace else (b1 * O, b2 * O)
            G = sum(factor * _gram(A, None if same else A2[1], rows)
                    for (factor, A), A2 in zip(J1, J2 or [None] * len(J1)))
            out.add(s1, s2, _outputs_last(G, b1, b2, O, trace))
    if sym:
        _mirror_all(out, N1, B)
    return out


def _structured(model, X1, X2, trace, B):
    sym, p1, p2, N1, N2, O, out = _passes(model, X1, X2, trace)
    d1 = _per_input(p1)
    d2 = d1 if sym else _per_input(p2)
    # layers with weights shared over positions: the cheaper of the two contractions (the cost model decides)
    routes = _cost.shared_routes(model.problem(N1, None if sym else N2, trace))
    rows_of_x1: dict = {}  # path -> (first row, Jacobian rows of X1's current row block)
    # the cotangent Gram and the input factor of every layer and block, added to the output before the next
    gram_buffer, factor_buffer = _Buffer(), _Buffer()
    for i, j, s1, s2 in _pair_blocks(N1, N2, B, sym):
        same = sym and i == j
        b1, b2 = s1.stop - s1.start, s2.stop - s2.start
        rows = (b1, b2) if trace else (b1 * O, b2 * O)
        for path, (x1, g1) in d1.items():
            entry = model.dense[path]
            rule = _rule(entry)
            x2, g2 = d2[path]
            if x1.ndim > 2 and routes.get(path) == "jacobian":
                if rows_of_x1.get(path, (None,))[0] != s1.start:
                    rows_of_x1[path] = (s1.start, rule.shared_jacobian(entry, x1[s1], g1[s1]))
                A2 = None if same else rule.shared_jacobian(entry, x2[s2], g2[s2])
                out.add(s1, s2, rule.jacobian_ntk(entry, rows_of_x1[path][1], A2, trace))
                continue
            F = rule.ntk_factor(entry, x1[s1], None if same else x2[s2], factor_buffer)
            if x1.ndim > 2:  # weights shared over positions: Gram matrices over (input, position) rows
                out.add(s1, s2, rule.shared_ntk(F, g1[s1], None if same else g2[s2], trace))
                continue
            if g1 is None:  # a readout: g1 . g2 = delta_oq
                out.add_diagonal(s1, s2, F)
                continue
            G = _outputs_last(_gram(g1[s1], None if same else g2[s2], rows, gram_buffer), b1, b2, O, trace)
            G *= F if trace else F[:, :, None, None]
            out.add(s1, s2, G)
    if sym:
        _mirror_all(out, N1, B)
    return out


def _ntk_vector_products(model, X1, X2, trace, B):
    """Blocks of B inputs of X2 give B O tangents; each is pushed through the JVP at the rows of X1 in
    chunks that keep the JVP's temporaries cache-sized.  X2 = X1: only rows up to the end of the current
    block (the rest is its mirror image)."""
    sym = X2 is None
    X2 = X1 if sym else X2
    N1, N2 = X1.shape[0], X2.shape[0]
    O = model.output_dim
    B1 = _cost.COSTS["ntk_vector_products"].jvp_rows(model.problem(N1, None if sym else N2, trace), B)
    out = _Output(N1, N2, O, trace)
    buffers: dict = {}
    for s2 in (slice(s, min(s + B, N2)) for s in range(0, N2, B)):
        p2 = run(model, X2[s2])
        b2 = p2.n
        tangents = {path: _rule(model.dense[path]).tangent(model.dense[path], s.x, s.g, buffers.setdefault(path, _Buffer()))
                    for path, s in p2.sens.items()}  # K = (q, b) tangents per Dense layer
        rows = s2.stop if sym else N1
        for s1 in (slice(s, min(s + B1, rows)) for s in range(0, rows, B1)):
            tape = record(model.description, X1[s1], model.action)
            jv = tape.push_forward(tangents.get)  # (K, b1, O): [q, b, a, o]
            jv = np.zeros((O * b2, s1.stop - s1.start, O)) if jv is None else jv
            jv = jv.reshape(O, b2, -1, O)
            out.add(s1, s2, np.einsum("qbaq->ab", jv) if trace else jv.transpose(2, 1, 3, 0))  # [a, b, o, q]
        if sym:
            out.mirror(slice(0, s2.start), s2)
            out.symmetrize(s2)
    return out


_METHODS = {
    "jacobian_contraction": _jacobian_contraction,
    "ntk_vector_products": _ntk_vector_products,
    "structured": _structured,
}


# ---------------------------------------------------------------------- entry points
def check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64; got {dt}")
    return dt


def plan_model(model: Model, N1: int, N2: int | None = None, method="auto", trace_outputs=True, batch_size=None,
               dtype=np.float64, max_memory=DEFAULT_MEMORY) -> _cost.Estimate:
    """The method and block size :func:`ntk` would use, with the cost model's estimate."""
    p = model.problem(N1, N2, trace_outputs, check_dtype(dtype))
    if not isinstance(method, str):
        raise ValueError(f"method must be a string; got {method!r}")
    if method == "auto":
        method = _cost.choose_method(p, batch_size, max_memory)
    elif method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected 'auto' or one of {', '.join(map(repr, METHODS))}")
    return _cost.estimate(method, p, batch_size, max_memory)


def ntk(model: Model, X1, X2=None, method: str = "auto", trace_outputs: bool = True, batch_size: int | None = None,
        dtype=np.float64, max_memory: float = DEFAULT_MEMORY) -> Array:
    """``Theta(X1, X2) = J(X1) Lambda J(X2)^T`` of a :class:`Model` (arguments as
    :func:`ntk_theory.empirical.empirical_ntk`)."""
    if not isinstance(trace_outputs, (bool, np.bool_)):
        raise ValueError(f"trace_outputs must be True or False; got {trace_outputs!r}")
    if isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Real) or not max_memory > 0:
        raise ValueError(f"max_memory must be a positive number of bytes; got {max_memory!r}")
    if not isinstance(method, str):
        raise ValueError(f"method must be a string; got {method!r}")
    dtype = check_dtype(dtype)
    X1 = model.inputs(X1, "X1")
    X2 = None if X2 is None else model.inputs(X2, "X2")
    spatial = model.output_spatial
    trace = bool(trace_outputs) and not spatial  # spatial outputs: every (position, channel) pair, then traced
    est = plan_model(model, X1.shape[0], None if X2 is None else X2.shape[0], method, trace, batch_size,
                     dtype, max_memory)
    out = _METHODS[est.method](model, X1, X2, trace, est.block).result(np.float64)
    if spatial:
        out = spatial_layout(out, spatial, bool(trace_outputs))
    return out.astype(dtype, copy=False)


def spatial_layout(theta: Array, spatial: tuple, trace: bool) -> Array:
    """The NTK (N1, N2, O, O) of spatial outputs (O = P C, row-major (*S, C)) in neural-tangents' layout:
    (N1, N2, S_1, S_1, ..., C, C), each spatial axis next to its twin; ``trace``: the mean over the channel
    pair's diagonal, (N1, N2, S_1, S_1, ...) (neural-tangents' ``trace_axes=(-1,)``)."""
    n1, n2, O = theta.shape[0], theta.shape[1], theta.shape[2]
    r = len(spatial)
    C = O // int(np.prod(spatial))
    t = theta.reshape((n1, n2) + tuple(spatial) + (C,) + tuple(spatial) + (C,))
    order = [0, 1] + [ax for i in range(r) for ax in (2 + i, 3 + r + i)] + [2 + r, 3 + 2 * r]
    t = t.transpose(order)
    if trace:
        t = np.trace(t, axis1=-2, axis2=-1) / C
    return np.ascontiguousarray(t)


def jacobian(model: Model, X) -> list:
    """The scaled Jacobian ``J sqrt(Lambda)`` by reverse mode: per Dense layer in order, ``(path, J_W
    (N, O, n_in, n_out), J_b (N, O, n_out) or None)``; ``Theta = sum J J^T``."""
    p = run(model, model.inputs(X, "X"))
    N, O = p.n, p.cot.shape[0]
    eye = np.broadcast_to(np.eye(O), (N, O, O))
    out = []
    for path, entry in model.dense.items():
        if path not in p.sens:
            n_in, n = entry.action.W.shape  # a Conv's n_in: its patch width, filter-major (HWIO order)
            out.append((path, np.zeros((N, O, n_in, n)), np.zeros((N, O, n)) if entry.has_bias else None))
            continue
        s = p.sens[path]
        g = eye if p.is_identity(path) else rows_first(s.g)
        blocks = _rule(entry).jacobian_blocks(entry, s.x, g)
        out.append((path, blocks[0], blocks[1] if len(blocks) > 1 else None))
    return out
