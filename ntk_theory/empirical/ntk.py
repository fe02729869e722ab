r"""The empirical NTK of an MLP, a layer sequence or any architecture description (Novak, Sohl-Dickstein,
Schoenholz 2022): the public entry points.

Every network is turned into a :class:`~ntk_theory.empirical.graph.Model` (a description with its Dense
parameters in effective coordinates and NTK factors) and runs through the same code
(:mod:`ntk_theory.empirical.graph`):

- a description (``stax.serial(...)`` or a layer) with ``params`` in neural-tangents' layout;
- an :class:`~ntk_theory.reference.MLP` (PDLT ``z(l+1) = W(l+1) s(z(l)) + b(l+1)``, W (n_l, n_(l-1))): the
  description :meth:`~ntk_theory.reference.MLP.as_description` (``mlp_description`` of its activation,
  depth, C_W, C_b and param, evaluated by the MLP's NumPy activation), effective parameters ``W(l)^T, b(l)`` and the MLP's factors ``(lambda_b(l), lambda_W(l) / n_(l-1))``;
- a :class:`DenseStack` or a sequence ``[Dense, act, ..., Dense]`` of :class:`Dense` layers (explicit W, b and
  factors) and activations (anything :func:`~ntk_theory.architecture.mlp.activation_layer` accepts; none
  between two Dense layers: linear).

The empirical NTK is ``Theta = J Lambda J^T``: PDLT's ``sum_l lambda_b(l) df/db(l) . df/db(l) + lambda_W(l) /
n_(l-1) df/dW(l) . df/dW(l)`` for an MLP; neural-tangents' ``J J^T`` (with respect to its parameters) for
'ntk' and 'standard' Dense layers of a description.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..architecture import Dense as DenseLayer
from ..architecture import Layer, Serial
from ..architecture.mlp import activation_layer
from ..docstrings import filled
from ..reference.graph import inputs as _spatial_inputs
from . import graph
from .cost import DEFAULT_MEMORY, input_shape, steps

Array = np.ndarray


# the sections the functions and DenseStack constructors of this module share, written once
_DOCS = dict(
    network=""">>> import numpy as np
>>> from ntk_theory.empirical import Dense, empirical_ntk, jacobian, jvp, vjp, model
>>> rng = np.random.default_rng(0)
>>> W1, b1, W2, b2 = rng.standard_normal((4, 2)), rng.standard_normal(4), rng.standard_normal((1, 4)), rng.standard_normal(1)
>>> layers = [Dense(W1, b1), "relu", Dense(W2, b2)]
>>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
>>> z = X @ W1.T + b1; h = np.maximum(z, 0); g = (z > 0) * W2[0]        # g = df/dz(1)""",
    stack_inputs="""Parameters
----------
net : MLP, DenseStack or sequence
X : array_like
    (N, n_0).""",
    stack_returns="""Returns
-------
DenseStack

Examples
--------
See :class:`DenseStack`.""",
)

# ---------------------------------------------------------------------- MLPs and layer sequences
@functools.lru_cache(maxsize=256)
def _cached_layer(spec):
    return activation_layer(spec)


def _activation_layer(spec):
    """:func:`~ntk_theory.architecture.mlp.activation_layer`, remembered for hashable specs (names)."""
    try:
        return _cached_layer(spec)
    except TypeError:  # unhashable spec
        return activation_layer(spec)


# a record of arrays and factors shaped like empirical.cost.LayerCost's fields: different data, no shared logic
@dataclass(frozen=True)
class Dense:
    """A dense layer ``z -> W z + b`` (W of shape (n_out, n_in)) with its learning-rate factors (the W
    term is weighted ``lambda_W / n_in``, see :mod:`ntk_theory.conventions`; ``learning_rate_factors(param,
    C_W=C_W, C_b=C_b, fan_in=n_in)`` gives them for a parameterization).  Default: PDLT's lambda_b = lambda_W = 1.

    Parameters
    ----------
    W : ndarray
        (n_out, n_in).
    b : ndarray
        (n_out,).
    lambda_W, lambda_b : float, default 1.0
        The learning-rate factors.

    Examples
    --------
    See :func:`empirical_ntk`.
    """

    W: Array
    b: Array
    lambda_W: float = 1.0
    lambda_b: float = 1.0


@dataclass(frozen=True)
class DenseStack:
    """Dense layers with elementwise activations between them (PDLT layout).

    ``weights[l-1]`` is W(l) (n_l, n_(l-1)); ``activations[l-1]`` the activation layers applied (in order)
    to z(l), l = 1 .. L (empty: identity); ``factors[l-1]`` is ``(lambda_b(l), lambda_W(l) / n_(l-1))``;
    ``description`` the network's architecture description.

    Parameters
    ----------
    weights, biases : tuple of ndarray
        W(l) (n_l, n_(l-1)) and b(l) (n_l,).
    activations : tuple of tuple
        The activation layers after each hidden Dense layer.
    factors : tuple of tuple
        ``(lambda_b(l), lambda_W(l) / n_(l-1))``.
    description : Layer

    Build one with :meth:`of`, :meth:`from_layers` or :meth:`from_mlp`.

    Examples
    --------
    >>> import numpy as np
    >>> from ntk_theory.reference import MLP
    >>> net = MLP.random((2, 4, 1), "relu", C_W=2.0, C_b=0.5, seed=0)
    >>> stack = DenseStack.of(net)
    >>> stack.widths, stack.depth, stack.n_params                    # 4 (2 + 1) + 1 (4 + 1)
    ((2, 4, 1), 1, 17)
    >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
    >>> bool(np.allclose(empirical_ntk(stack.model(), X), net.ntk(X)))
    True
    """

    weights: tuple
    biases: tuple
    activations: tuple
    factors: tuple
    description: Layer

    @classmethod
    @filled(**_DOCS)
    def from_mlp(cls, net) -> DenseStack:
        """The reference :class:`~ntk_theory.reference.MLP` (same parameters and factors); its description
        is the MLP's own (:meth:`~ntk_theory.reference.MLP.as_description`: ``mlp_description`` with the MLP's
        NumPy activation).

        Parameters
        ----------
        net : MLP

        %(stack_returns)s
        """
        spec = net.spec
        description = net.as_description()
        act = description.layers[1]
        factors = tuple((lb, lw / W.shape[1]) for (lb, lw), W in zip(spec.learning_rate_factors(), net.weights))
        return cls(tuple(net.weights), tuple(net.biases), tuple((act,) for _ in range(spec.depth)), factors,
                   description)

    @classmethod
    def from_layers(cls, layers: Sequence) -> DenseStack:
        """``[Dense, act, ..., Dense, act, ..., Dense]``: starts and ends with a Dense layer; between two
        Dense layers any number of activations (none = linear).

        Parameters
        ----------
        layers : sequence
            :class:`Dense` layers and activations (names, expressions or activation layers).

        Returns
        -------
        DenseStack

        Raises
        ------
        ValueError
            If the sequence does not start and end with a Dense layer, or widths do not chain.

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.empirical import Dense
        >>> stack = DenseStack.from_layers([Dense(np.ones((4, 2)), np.zeros(4)), "relu", Dense(np.ones((1, 4)), np.zeros(1))])
        >>> stack.widths, stack.depth, stack.n_params                 # 4 (2 + 1) + 1 (4 + 1)
        ((2, 4, 1), 1, 17)
        """
        layers = list(layers)
        if not layers or not isinstance(layers[0], Dense) or not isinstance(layers[-1], Dense):
            raise ValueError("a layer sequence must start and end with a Dense layer")
        weights, biases, factors, acts, pending, described = [], [], [], [], [], []
        for item in layers:
            if isinstance(item, Dense):
                l = len(weights) + 1
                W, b = np.asarray(item.W, dtype=np.float64), np.asarray(item.b, dtype=np.float64)
                if W.ndim != 2 or b.shape != (W.shape[0],):
                    raise ValueError(f"Dense layer {l}: W must be 2-D (n_out, n_in) and b of shape (n_out,); "
                                     f"got {W.shape} and {b.shape}")
                if weights and W.shape[1] != weights[-1].shape[0]:
                    raise ValueError(f"Dense layer {l} takes {W.shape[1]} inputs but layer {l - 1} has "
                                     f"{weights[-1].shape[0]} outputs")
                lam_b = _checks.variance(f"Dense layer {l}: lambda_b", item.lambda_b)
                lam_W = _checks.variance(f"Dense layer {l}: lambda_W", item.lambda_W)
                if weights:
                    acts.append(tuple(pending))
                pending = []
                weights.append(W)
                biases.append(b)
                factors.append((lam_b, lam_W / W.shape[1]))
                described.append(DenseLayer(W.shape[0], 1.0, 1.0, "standard"))
            else:
                layer = _activation_layer(item)
                pending.append(layer)
                described.append(layer)
        if len(weights) < 2:
            raise ValueError("a layer sequence needs at least two Dense layers (one hidden layer)")
        return cls(tuple(weights), tuple(biases), tuple(acts), tuple(factors), Serial(tuple(described)))

    @classmethod
    @filled(**_DOCS)
    def of(cls, net) -> DenseStack:
        """An MLP, a DenseStack or a layer sequence.

        Parameters
        ----------
        net : MLP, DenseStack or sequence

        %(stack_returns)s
        """
        if isinstance(net, DenseStack):
            return net
        if hasattr(net, "weights") and hasattr(net, "spec") and hasattr(net, "activation"):
            return cls.from_mlp(net)
        if isinstance(net, (list, tuple)):
            return cls.from_layers(net)
        raise ValueError(
            f"net must be an MLP, a DenseStack, a sequence of Dense layers and activations, or a description "
            f"with params=; got {type(net).__name__}"
        )

    @property
    def widths(self) -> tuple:
        """(n_0, n_1, ..., n_out)."""
        return (self.weights[0].shape[1],) + tuple(W.shape[0] for W in self.weights)

    @property
    def depth(self) -> int:
        """The number of hidden layers L."""
        return len(self.weights) - 1

    @property
    def n_params(self) -> int:
        """The number of parameters."""
        return sum(W.size + b.size for W, b in zip(self.weights, self.biases))

    def model(self) -> graph.Model:
        """The network as a :class:`~ntk_theory.empirical.graph.Model`: effective parameters W(l)^T, b(l).

        Returns
        -------
        Model

        Examples
        --------
        See :class:`DenseStack`.
        """
        return graph.Model.from_dense(self.description, self.widths[0], [W.T for W in self.weights],
                                      list(self.biases), list(self.factors))


def _is_description(net) -> bool:
    """A description (a layer or a stax network) without its own parameters; an MLP or a DenseStack, whose
    ``description`` names its architecture, carries its parameters."""
    if isinstance(net, DenseStack) or (hasattr(net, "weights") and hasattr(net, "spec")):
        return False
    return isinstance(getattr(net, "description", net), Layer)


# model's params/input_dim/Returns/Raises repeat graph.Model.of's, where it sends descriptions (each its own)
@filled(**_DOCS)
def model(net, params=None, input_dim: int | None = None) -> graph.Model:
    """The :class:`~ntk_theory.empirical.graph.Model` of ``net``: a description with ``params`` (neural-tangents'
    layout) at ``input_dim`` input features, or an MLP / DenseStack / layer sequence (no params).

    Parameters
    ----------
    net : Layer, Network, MLP, DenseStack, sequence or Model
    params : list, optional
        A description's parameters (neural-tangents' layout).
    input_dim : int or tuple, optional
        A description's input features (or per-input image shape).

    Returns
    -------
    Model

    Raises
    ------
    ValueError
        If a description comes without ``params``.

    Examples
    --------
    %(network)s
    >>> m = model(layers)
    >>> m.n_params, m.shape                                  # 4 (2 + 1) + 1 (4 + 1)
    (17, (2,))
    """
    if isinstance(net, graph.Model):
        return net
    if _is_description(net):
        if params is None:
            raise ValueError("a description needs its parameters: params=... (as neural-tangents' init_fn "
                             "returns them)")
        if input_dim is None:
            raise ValueError("input_dim is needed to read a description's parameters")
        return graph.Model.of(net, params, input_dim)
    if params is not None:
        raise ValueError("params= is for descriptions; an MLP or a layer sequence carries its own parameters")
    return DenseStack.of(net).model()


def _input_dim(X, name="X1"):
    return _checks.inputs(X, name).shape[1]


# ---------------------------------------------------------------------- the empirical NTK
def plan(net, N1: int, N2: int | None = None, method="auto", trace_outputs=True, batch_size=None,
         dtype=np.float64, max_memory=DEFAULT_MEMORY, *, params=None, input_dim: int | None = None):
    """The method and block size :func:`empirical_ntk` would use, with the cost model's estimate
    (a description needs ``input_dim``, the number of input features or the per-input shape (W, C) /
    (H, W, C) of a convolutional network; its ``params`` are not needed).

    Parameters
    ----------
    net
        As :func:`empirical_ntk`.
    N1 : int
    N2 : int, optional
    method, trace_outputs, batch_size, dtype, max_memory, params
        As :func:`empirical_ntk`.
    input_dim : int or tuple, optional
        A description's input features.

    Returns
    -------
    Estimate
        ``method`` and ``block`` are what :func:`empirical_ntk` would use.

    Examples
    --------
    >>> from ntk_theory import stax
    >>> from ntk_theory.empirical import Problem, choose_method
    >>> net = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(1))
    >>> est = plan(net, 100, input_dim=8)
    >>> est.method == choose_method(Problem.of(net, 100, input_dim=8)), est.block <= 100
    (True, True)
    """
    if _is_description(net) and not isinstance(net, graph.Model):
        if input_dim is None:
            raise ValueError("planning a description needs input_dim (the number of input features)")
        shape = input_shape(input_dim)
        found = steps(net, shape)
        m = graph.Model(getattr(net, "description", net), shape[-1], found[-1].n_out if found else 0, {}, found, shape)
    else:
        m = model(net, params, input_dim)
    return graph.plan_model(m, N1, N2, method, trace_outputs, batch_size, dtype, max_memory)


@filled(**_DOCS)
def empirical_ntk(net, X1, X2=None, method: str = "auto", trace_outputs: bool = True, batch_size: int | None = None,
                  dtype=np.float64, max_memory: float = DEFAULT_MEMORY, *, params=None) -> Array:
    """The empirical NTK ``Theta(X1, X2) = J(X1) Lambda J(X2)^T`` of a finite network.

    ``net``: an architecture description (``stax.serial(...)``, a layer) with ``params`` as neural-tangents'
    ``init_fn`` returns them (then Theta is neural-tangents' ``J J^T`` for 'ntk' and 'standard' layers), an
    :class:`~ntk_theory.reference.MLP` (its ``param``'s learning-rate factors), a :class:`DenseStack`, or a
    sequence ``[Dense, act, Dense, ..., Dense]``.  ``X1`` (N1, n_0) (a description with convolutions:
    (N1, W, C) or (N1, H, W, C)), ``X2`` (N2, n_0) or None for X2 = X1
    (symmetric: half the products).  ``method``: ``"jacobian_contraction"`` (J by reverse mode, one VJP
    per output and input, contracted), ``"ntk_vector_products"``, ``"structured"`` or ``"auto"`` (the
    smallest time predicted by :mod:`ntk_theory.empirical.cost`).  ``trace_outputs=True`` returns (N1,
    N2), the mean over the output axis (neural-tangents' ``trace_axes=(-1,)``); False the full (N1, N2,
    O, O) tensor (``trace_axes=()``).  ``batch_size``: inputs per block; None picks the largest block
    whose intermediates fit in ``max_memory`` bytes (the output itself is not counted).  ``dtype``:
    float32 or float64, the returned precision (the work is float64).  The methods agree to rounding.

    Parameters
    ----------
    net : Layer, Network, MLP, DenseStack or sequence
    X1 : array_like
    X2 : array_like, optional
    method : {'auto', 'jacobian_contraction', 'ntk_vector_products', 'structured'}, default 'auto'
    trace_outputs : bool, default True
    batch_size : int, optional
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
    max_memory : float, default 2 GiB
        Bytes for intermediates.
    params : list, optional
        A description's parameters.

    Returns
    -------
    ndarray
        (N1, N2), or (N1, N2, O, O) with ``trace_outputs=False``.

    Raises
    ------
    ValueError
        If the network, inputs or method are invalid.

    Examples
    --------
    Dense-ReLU-Dense in PDLT coordinates with lambda_b = lambda_W = 1: Theta = 1 + h.h' / n_1 +
    (g.g') (1 + x.x' / n_0), by every method:

    %(network)s
    >>> theta = 1 + h @ h.T / 4 + (g @ g.T) * (1 + X @ X.T / 2)
    >>> methods = ("jacobian_contraction", "ntk_vector_products", "structured")
    >>> [bool(np.allclose(empirical_ntk(layers, X, method=m), theta)) for m in methods]
    [True, True, True]
    """
    if _is_description(net) and not isinstance(net, graph.Model):  # spatial inputs for convolutional networks
        X1c = _spatial_inputs(X1, "X1")
        m = model(net, params, X1c.shape[1:] if X1c.ndim > 2 else X1c.shape[1])
    else:
        X1c = _checks.inputs(X1, "X1")
        m = model(net, params, X1c.shape[1])
    return graph.ntk(m, X1c, X2, method, trace_outputs, batch_size, dtype, max_memory)


# ---------------------------------------------------------------------- derivatives of MLPs
@filled(**_DOCS)
def jacobian(net, X, dtype=np.float64) -> Array:
    """The scaled parameter Jacobian J sqrt(Lambda) at X, (N, O, P), in ``MLP.flatten`` order
    (W(l) row-major (n_l, n_(l-1)), b(l), ...), by reverse mode (one VJP per output and input);
    ``Theta = J J^T``.

    %(stack_inputs)s
    dtype : numpy dtype, default numpy.float64

    Returns
    -------
    ndarray
        (N, O, P).

    Examples
    --------
    The readout bias's column is 1 and the readout weights' columns are h / sqrt(n_1) (scaled by sqrt(lambda_W / n_1)):

    %(network)s
    >>> J = jacobian(layers, X)
    >>> J.shape, bool(np.allclose(J[:, 0, -1], 1.0)), bool(np.allclose(J[:, 0, -5:-1], h / 2))
    ((2, 1, 17), True, True)
    """
    stack = DenseStack.of(net)
    X = _checks.inputs(X, "X", dim=stack.widths[0])
    blocks = []
    for (_, JW, Jb), W in zip(graph.jacobian(stack.model(), X), stack.weights):
        N, O = JW.shape[:2]
        blocks.append(JW.transpose(0, 1, 3, 2).reshape(N, O, -1))  # (n_in, n_out) -> PDLT (n_out, n_in)
        blocks.append(np.zeros((N, O, W.shape[0])) if Jb is None else Jb)
    return np.concatenate(blocks, axis=-1).astype(graph.check_dtype(dtype), copy=False)


@filled(**_DOCS)
def vjp(net, X, cotangents, dtype=np.float64) -> list:
    """Per-input parameter cotangents J(x_a)^T c by the reverse pass.

    ``cotangents`` (N, K, O): K output cotangents for every input (vectorised over inputs, as
    neural-tangents' ``vmap_axes=0``).  Returns ``[(dW(l) (N, K, n_l, n_(l-1)), db(l) (N, K, n_l))]``,
    unscaled (multiply by Lambda for a tangent).

    %(stack_inputs)s
    cotangents : array_like
        (N, K, O).
    dtype : numpy dtype, default numpy.float64

    Returns
    -------
    list of tuple

    Examples
    --------
    With cotangent 1 the readout's gradients are h (weights) and 1 (bias), the first layer's g x^T and g:

    %(network)s
    >>> (dW1, db1), (dW2, db2) = vjp(layers, X, np.ones((2, 1, 1)))
    >>> bool(np.allclose(dW2[:, 0, 0], h)), bool(np.allclose(db2, 1.0)), bool(np.allclose(dW1[:, 0], g[:, :, None] * X[:, None, :]))
    (True, True, True)
    """
    stack = DenseStack.of(net)
    X = _checks.inputs(X, "X", dim=stack.widths[0])
    m = stack.model()
    tape = graph.record(m.description, X, m.action)
    N, O = tape.f.shape
    c = np.asarray(cotangents, dtype=np.float64)
    if c.ndim != 3 or c.shape[0] != N or c.shape[2] != O:
        raise ValueError(f"cotangents must have shape (N, K, O) = ({N}, K, {O}); got {c.shape}")
    sens = {s.path: s for s in tape.backward(np.ascontiguousarray(c.transpose(1, 0, 2)))}  # g (K, N, n)
    dt = graph.check_dtype(dtype)
    out = []
    for path in m.dense:
        g = sens[path].g.transpose(1, 0, 2)  # (N, K, n_l)
        x = sens[path].x
        out.append(((g[:, :, :, None] * x[:, None, None, :]).astype(dt, copy=False), g.astype(dt)))
    return out


@filled(**_DOCS)
def jvp(net, X, tangent, dtype=np.float64) -> Array:
    """J(X) v; ``tangent`` a list of ``(dW(l), db(l))`` in PDLT shapes, optionally with a leading batch axis K.
    Returns (N, O), or (K, N, O) for a batch (the layout of ``MLP.jvp``).

    %(stack_inputs)s
    tangent : list of tuple
    dtype : numpy dtype, default numpy.float64

    Returns
    -------
    ndarray

    Examples
    --------
    Against a central finite difference of the forward pass written out:

    %(network)s
    >>> v = [(rng.standard_normal(W.shape), rng.standard_normal(b.shape)) for W, b in ((W1, b1), (W2, b2))]
    >>> def f(e):
    ...     return np.maximum(X @ (W1 + e * v[0][0]).T + b1 + e * v[0][1], 0) @ (W2 + e * v[1][0]).T + b2 + e * v[1][1]
    >>> bool(np.allclose(jvp(layers, X, v), (f(1e-6) - f(-1e-6)) / 2e-6, atol=1e-7))
    True
    """
    stack = DenseStack.of(net)
    X = _checks.inputs(X, "X", dim=stack.widths[0])
    if len(tangent) != len(stack.weights):
        raise ValueError(f"tangent must have one (dW, db) pair per layer ({len(stack.weights)})")
    batched = np.ndim(tangent[0][0]) == 3
    m = stack.model()
    tangents = {}
    for l, ((dW, db), W, path) in enumerate(zip(tangent, stack.weights, m.dense), start=1):
        dW, db = np.asarray(dW, dtype=np.float64), np.asarray(db, dtype=np.float64)
        if not batched:
            dW, db = dW[None], db[None]
        if dW.shape[1:] != W.shape or db.shape[1:] != W.shape[:1] or db.shape[0] != dW.shape[0]:
            raise ValueError(f"tangent of layer {l} must have shapes {W.shape} and {W.shape[:1]} "
                             f"(with a common leading batch axis or none); got {dW.shape} and {db.shape}")
        tangents[path] = (np.swapaxes(dW, -1, -2), db[:, None, :])
    tape = graph.record(m.description, X, m.action)
    out = tape.push_forward(tangents.get)
    out = np.zeros((1,) + tape.f.shape) if out is None else np.broadcast_to(out, (out.shape[0],) + tape.f.shape)
    out = out.astype(graph.check_dtype(dtype))
    return out if batched else out[0]


__all__ = ["Dense", "DenseStack", "empirical_ntk", "jacobian", "jvp", "model", "plan", "vjp"]
