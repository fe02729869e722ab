r"""The finite-width empirical NTK by three methods (Novak, Sohl-Dickstein, Schoenholz 2022).

For a network of dense layers and elementwise activations in PDLT notation::

    z(1) = W(1) x + b(1),   z(l+1) = W(l+1) s_l(z(l)) + b(l+1),   f = z(L+1)

the empirical NTK with learning-rate factors Lambda (:mod:`ntk_theory.conventions`) is::

    Theta_(ab, oq) = sum_l [ lambda_b(l) df_o(x_a)/db(l) . df_q(x_b)/db(l)
                           + lambda_W(l)/n_(l-1) df_o(x_a)/dW(l) . df_q(x_b)/dW(l) ]  = (J1 Lambda J2^T)

Writing delta(l)_(a,o) = df_o(x_a)/dz(l) (the output sensitivity) and a(l-1)_a = s(z(l-1)(x_a)),
a dense layer's derivatives are df_o/dW(l) = delta(l)_(a,o) a(l-1)_a^T and df_o/db(l) = delta(l)_(a,o).
The three methods:

``jacobian_contraction``
    Forward-mode Jacobians, as ``MLP.jacobian(X, flat=True, scaled=True)``: the n_l unit tangents of
    z(l) are pushed to the output (dz(m+1) = W(m+1) [s'(z(m)) * dz(m)]), giving delta(l) (the first
    step W(l+1) [s' * e_j] = s'_j W(l+1)[:, j] is a product of entries, not of matrices); the blocks
    J(l) = delta(l) (x) a(l-1) are formed explicitly and contracted, Theta += J1(l) Lambda_l J2(l)^T.
``ntk_vector_products``
    Theta v = J1 [Lambda (J2^T v)] for each output cotangent v = e_(b,q): the VJP is a hand-written
    reverse pass, delta(L+1) = e_q, delta(l) = (delta(l+1) W(l+1)) * s'(z(l)), giving the parameter
    cotangent (delta(l) a(l-1)^T, delta(l)); scaled by Lambda it is the tangent of a JVP at X1.
    J is never formed; one parameter-sized tangent per cotangent is.
``structured``
    The structure of a dense layer: delta(l) by the reverse pass, then per layer
    Theta_l = (delta1(l) . delta2(l)) * (lambda_b + lambda_W/n_(l-1) a1(l-1) . a2(l-1)),
    two small Gram matrices instead of per-parameter Jacobians.

``auto`` runs the one with the smallest time predicted by :mod:`ntk_theory.empirical.cost` (FLOPs of
dense products and elements written by elementwise passes, each at its measured rate).  Every
method is batched over inputs so that its intermediates stay under ``max_memory`` bytes (the cost
model's memory formula picks the block size); with ``X2=None`` only blocks on and above the diagonal
are computed (and within a diagonal block, Jacobian contraction and structured use symmetric products).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import _checks
from ..reference.activations import NumpyActivation, numpy_activation
from . import cost as _cost
from .cost import DEFAULT_MEMORY, METHODS

Array = np.ndarray


# ---------------------------------------------------------------------- the network as layers
@dataclass(frozen=True)
class Dense:
    """A dense layer ``z -> W z + b`` with its learning-rate factors (the W term is weighted
    ``lambda_W / n_in``, see :mod:`ntk_theory.conventions`; ``learning_rate_factors(param, C_W, C_b,
    n_in)`` gives them for a parameterization).  Default: PDLT's lambda_b = lambda_W = 1."""

    W: Array
    b: Array
    lambda_W: float = 1.0
    lambda_b: float = 1.0


@dataclass(frozen=True)
class DenseStack:
    """Dense layers with elementwise activations between them, in one dtype.

    ``weights[l-1]`` is W(l) (n_l, n_(l-1)); ``activations[l-1]`` is the list of elementwise
    functions applied (in order) to z(l), l = 1 .. L (empty: identity); ``factors[l-1]`` is
    ``(lambda_b(l), lambda_W(l) / n_(l-1))``.
    """

    weights: tuple
    biases: tuple
    activations: tuple
    factors: tuple

    @classmethod
    def from_mlp(cls, net) -> "DenseStack":
        """The reference :class:`~ntk_theory.reference.MLP` (same parameters and factors)."""
        lams = net.spec.learning_rate_factors()
        factors = tuple((lb, lw / W.shape[1]) for (lb, lw), W in zip(lams, net.weights))
        acts = tuple((net.activation,) for _ in range(net.spec.depth))
        return cls(tuple(net.weights), tuple(net.biases), acts, factors)

    @classmethod
    def from_layers(cls, layers: Sequence) -> "DenseStack":
        """``[Dense, act, ..., Dense, act, ..., Dense]``: starts and ends with a Dense layer; between two
        Dense layers any number of activations (anything ``numpy_activation`` accepts; none = linear)."""
        layers = list(layers)
        if not layers or not isinstance(layers[0], Dense) or not isinstance(layers[-1], Dense):
            raise ValueError("a layer sequence must start and end with a Dense layer")
        weights, biases, factors, acts, pending = [], [], [], [], []
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
            else:
                pending.append(numpy_activation(item))
        if len(weights) < 2:
            raise ValueError("a layer sequence needs at least two Dense layers (one hidden layer)")
        return cls(tuple(weights), tuple(biases), tuple(acts), tuple(factors))

    @classmethod
    def of(cls, net) -> "DenseStack":
        """An MLP, a DenseStack or a layer sequence."""
        if isinstance(net, DenseStack):
            return net
        if hasattr(net, "weights") and hasattr(net, "spec") and hasattr(net, "activation"):
            return cls.from_mlp(net)
        if isinstance(net, (list, tuple)):
            return cls.from_layers(net)
        raise ValueError(
            f"net must be an MLP, a DenseStack or a sequence of Dense layers and activations; got {type(net).__name__}"
        )

    @property
    def widths(self) -> tuple:
        return (self.weights[0].shape[1],) + tuple(W.shape[0] for W in self.weights)

    @property
    def depth(self) -> int:
        return len(self.weights) - 1

    @property
    def n_params(self) -> int:
        return sum(W.size + b.size for W, b in zip(self.weights, self.biases))

    def astype(self, dtype) -> "DenseStack":
        return DenseStack(tuple(W.astype(dtype, copy=False) for W in self.weights),
                          tuple(b.astype(dtype, copy=False) for b in self.biases), self.activations, self.factors)


@dataclass(frozen=True)
class _Trace:
    """Forward pass at X: ``a[l]`` = a(l) (a[0] = X), ``ds[l-1]`` = s'(z(l)), ``output`` = f."""

    a: list
    ds: list
    output: Array

    def rows(self, s: slice) -> "_Trace":
        return _Trace([a[s] for a in self.a], [d[s] for d in self.ds], self.output[s])


def _activate(acts: Sequence[NumpyActivation], z: Array) -> tuple[Array, Array]:
    """``(s(z), s'(z))`` for the composition of ``acts`` (chain rule), in z's dtype."""
    value, deriv = z, None
    for act in acts:
        d = np.asarray(act.derivative(value), dtype=z.dtype)
        value = np.asarray(act.value(value), dtype=z.dtype)
        deriv = d if deriv is None else deriv * d
    return value, (np.ones_like(z) if deriv is None else deriv)


def forward(stack: DenseStack, X: Array) -> _Trace:
    """z(l+1) = W(l+1) a(l) + b(l+1) for the rows of X (already validated and in the stack's dtype)."""
    a, acts, ds = X, [X], []
    for l, (W, b) in enumerate(zip(stack.weights, stack.biases)):
        z = a @ W.T + b
        if l < stack.depth:
            a, d = _activate(stack.activations[l], z)
            acts.append(a)
            ds.append(d)
    return _Trace(acts, ds, z)


# ---------------------------------------------------------------------- derivatives
def _reverse_pass(stack: DenseStack, tr: _Trace) -> list:
    """delta(l) = df/dz(l) for l = 1 .. L, each (N, O, n_l), by the reverse pass (VJP) started from
    the O output cotangents e_q of every input: delta(L) = W(L+1) * s'(z(L)), then
    delta(l) = (delta(l+1) W(l+1)) * s'(z(l)), one matrix product per layer for all inputs."""
    L = stack.depth
    N = tr.output.shape[0]
    deltas = [None] * L
    d = stack.weights[L][None, :, :] * tr.ds[L - 1][:, None, :]
    deltas[L - 1] = d
    for l in range(L - 1, 0, -1):  # 1-based layer l, from L-1 down to 1
        W = stack.weights[l]  # W(l+1)
        O = d.shape[1]
        d = (d.reshape(N * O, W.shape[0]) @ W).reshape(N, O, W.shape[1]) * tr.ds[l - 1][:, None, :]
        deltas[l - 1] = d
    return deltas


def _forward_mode_sensitivity(stack: DenseStack, tr: _Trace, layer: int) -> Array:
    """delta(layer) = df/dz(layer), (N, O, n_layer), in forward mode: the n_layer unit tangents e_j
    of z(layer) pushed to the output, dz(m+1) = W(m+1) [s'(z(m)) * dz(m)] (as ``MLP.jacobian``).
    The first step needs no product, W(layer+1) [s' * e_j] = s'_j W(layer+1)[:, j]; the rest are one
    matrix product per layer with the tangents laid out (n_m, N, n_layer)."""
    L = stack.depth
    N = tr.output.shape[0]
    if layer == L + 1:
        O = stack.weights[L].shape[0]
        return np.broadcast_to(np.eye(O, dtype=tr.output.dtype), (N, O, O))
    G = stack.weights[layer][:, None, :] * tr.ds[layer - 1][None, :, :]  # dz(layer+1)/dz(layer)
    n = G.shape[2]
    for m in range(layer + 2, L + 2):  # through s'(z(m-1)), then W(m)
        W = stack.weights[m - 1]
        G *= np.ascontiguousarray(tr.ds[m - 2].T)[:, :, None]
        G = (W @ G.reshape(W.shape[1], N * n)).reshape(W.shape[0], N, n)
    return np.ascontiguousarray(G.transpose(1, 0, 2))  # (N, O, n): J blocks built from it reshape without copies


def _jvp(stack: DenseStack, tr: _Trace, tangents: list) -> Array:
    """J(X) v for K tangents at once: ``tangents[l-1] = (dW (K, n_l, n_(l-1)), db (K, n_l))``.

    dz(1) = dW(1) x + db(1),  dz(l+1) = W(l+1) [s'(z(l)) * dz(l)] + dW(l+1) a(l) + db(l+1),
    laid out (N, K, n) so that every step is one matrix product.  Returns (N, K, O)."""
    dz = None
    N = tr.output.shape[0]
    for l, (W, (dW, db)) in enumerate(zip(stack.weights, tangents)):
        K, n_out, n_in = dW.shape
        contribution = (tr.a[l] @ dW.reshape(K * n_out, n_in).T).reshape(N, K, n_out)
        contribution += db[None, :, :]
        if dz is None:
            dz = contribution
        else:
            dz *= tr.ds[l - 1][:, None, :]
            dz = (dz.reshape(N * K, n_in) @ W.T).reshape(N, K, n_out) + contribution
    return dz


# ---------------------------------------------------------------------- public derivative helpers
def _prepare(net, X, name="X", dtype=np.float64):
    stack = DenseStack.of(net)
    dtype = _dtype(dtype)
    X = _checks.inputs(X, name, dim=stack.widths[0]).astype(dtype, copy=False)
    return stack.astype(dtype), X


def jacobian(net, X, dtype=np.float64) -> Array:
    """The scaled parameter Jacobian J sqrt(Lambda) at X, (N, O, P), in ``MLP.flatten`` order
    (W(1) row-major, b(1), W(2), ...), by forward mode; ``Theta = J J^T``."""
    stack, X = _prepare(net, X, dtype=dtype)
    tr = forward(stack, X)
    N, O = tr.output.shape
    blocks = []
    for l, (lam_b, c) in enumerate(stack.factors, start=1):
        T = _forward_mode_sensitivity(stack, tr, l)
        a = tr.a[l - 1]
        blocks.append((np.sqrt(c) * T[:, :, :, None] * a[:, None, None, :]).reshape(N, O, -1))
        blocks.append(np.sqrt(lam_b) * T)
    return np.concatenate(blocks, axis=-1)


def vjp(net, X, cotangents, dtype=np.float64) -> list:
    """Per-input parameter cotangents J(x_a)^T c, by the hand-written reverse pass.

    ``cotangents`` (N, K, O): K output cotangents for every input (vectorised over inputs, as
    neural-tangents' ``vmap_axes=0``).  Returns ``[(dW(l) (N, K, n_l, n_(l-1)), db(l) (N, K, n_l))]``,
    unscaled (multiply by Lambda for a tangent)."""
    stack, X = _prepare(net, X, dtype=dtype)
    tr = forward(stack, X)
    N, O = tr.output.shape
    c = np.asarray(cotangents, dtype=X.dtype)
    if c.ndim != 3 or c.shape[0] != N or c.shape[2] != O:
        raise ValueError(f"cotangents must have shape (N, K, O) = ({N}, K, {O}); got {c.shape}")
    deltas = [np.einsum("ako,aoi->aki", c, d) for d in _reverse_pass(stack, tr)] + [c]
    return [(d[:, :, :, None] * tr.a[l][:, None, None, :], d) for l, d in enumerate(deltas)]


def jvp(net, X, tangent, dtype=np.float64) -> Array:
    """J(X) v; ``tangent`` a list of ``(dW(l), db(l))``, optionally with a leading batch axis K.
    Returns (N, O), or (K, N, O) for a batch (the layout of ``MLP.jvp``)."""
    stack, X = _prepare(net, X, dtype=dtype)
    if len(tangent) != len(stack.weights):
        raise ValueError(f"tangent must have one (dW, db) pair per layer ({len(stack.weights)})")
    batched = np.ndim(tangent[0][0]) == 3
    tangents = []
    for l, ((dW, db), W) in enumerate(zip(tangent, stack.weights), start=1):
        dW, db = np.asarray(dW, dtype=X.dtype), np.asarray(db, dtype=X.dtype)
        if not batched:
            dW, db = dW[None], db[None]
        if dW.shape[1:] != W.shape or db.shape[1:] != W.shape[:1] or db.shape[0] != dW.shape[0]:
            raise ValueError(f"tangent of layer {l} must have shapes {W.shape} and {W.shape[:1]} "
                             f"(with a common leading batch axis or none); got {dW.shape} and {db.shape}")
        tangents.append((dW, db))
    out = _jvp(stack, forward(stack, X), tangents).transpose(1, 0, 2)
    return out if batched else out[0]


# ---------------------------------------------------------------------- the three methods
class _Output:
    """The result, filled block by block in its final layout: (N1, N2) for the trace (summed over
    outputs; divided by O at the end), else (N1, N2, O, O)."""

    def __init__(self, n1, n2, O, trace, dtype):
        self.trace, self.O = trace, O
        self.data = np.zeros((n1, n2) if trace else (n1, n2, O, O), dtype=dtype)

    def add(self, s1, s2, block):
        """Add ``block`` ((b1, b2) or (b1, b2, O, O), any strides) to rows s1, columns s2."""
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

    def result(self):
        if self.trace and self.O > 1:
            self.data /= self.O
        return self.data


class _Buffer:
    """One growing scratch array, reused for every block of the same role (no allocation per block;
    writing into memory already in use is the fastest it gets)."""

    def __init__(self, dtype):
        self.data = np.empty(0, dtype=dtype)

    def get(self, shape):
        size = int(np.prod(shape))
        if self.data.size < size:
            self.data = np.empty(size, dtype=self.data.dtype)
        return self.data[:size].reshape(shape)

    def outer(self, T, A, scale=1.0):
        """``scale * T[:, :, :, None] * A[:, None, None, :]``, (b, O, n, m), written into the buffer."""
        out = self.get(T.shape + (A.shape[1],))
        np.multiply((scale * T)[:, :, :, None] if scale != 1.0 else T[:, :, :, None], A[:, None, None, :], out=out)
        return out

    def gram(self, A1, A2, rows):
        """A1 A2^T with the rows of each flattened to ``rows`` entries; A2 None: A1 A1^T (BLAS syrk)."""
        A1 = A1.reshape(rows[0], -1)
        A2 = A1 if A2 is None else A2.reshape(rows[1], -1)
        return np.matmul(A1, A2.T, out=self.get(rows))


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


def _sensitivities_forward_mode(stack, tr, layer, B):
    """delta(layer) for all rows of tr, B inputs per push (bounds the pushed tangents' memory)."""
    N = tr.output.shape[0]
    return np.concatenate([_forward_mode_sensitivity(stack, tr.rows(slice(s, s + B)), layer)
                           for s in range(0, N, B)]) if N > B else _forward_mode_sensitivity(stack, tr, layer)


def _jacobian_contraction(stack, tr1, tr2, trace, B):
    N1, O = tr1.output.shape
    sym = tr2 is None
    N2 = N1 if sym else tr2.output.shape[0]
    out = _Output(N1, N2, O, trace, tr1.output.dtype)
    p = _cost.Problem.of(stack.widths, N1, None if sym else N2, trace, tr1.output.dtype)
    B_push = min(B, _cost.COSTS["jacobian_contraction"].push_block(p))
    buf1, buf2, gram_W, gram_b = (_Buffer(tr1.output.dtype) for _ in range(4))
    for l, (lam_b, c) in enumerate(stack.factors, start=1):
        T1 = _sensitivities_forward_mode(stack, tr1, l, B_push)
        T2 = T1 if sym else _sensitivities_forward_mode(stack, tr2, l, B_push)
        A1 = tr1.a[l - 1]
        A2 = A1 if sym else tr2.a[l - 1]
        J1, J1_rows = None, None
        for i, j, s1, s2 in _pair_blocks(N1, N2, B, sym):
            if J1_rows != (s1.start, s1.stop):  # J(l) block of X1, (b1, O, n_l, n_(l-1)), formed once per row block
                J1 = buf1.outer(T1[s1], A1[s1])
                J1_rows = (s1.start, s1.stop)
            same = sym and i == j
            J2 = None if same else buf2.outer(T2[s2], A2[s2])
            b1, b2 = J1.shape[0], T2[s2].shape[0]
            rows = (b1, b2) if trace else (b1 * O, b2 * O)
            # J1 Lambda J2^T restricted to layer l: lambda_W/n_(l-1) on the W block, lambda_b on the b block
            G = gram_W.gram(J1, J2, rows)
            G *= c
            G += lam_b * gram_b.gram(T1[s1], None if same else T2[s2], rows)
            out.add(s1, s2, _outputs_last(G, b1, b2, O, trace))
    if sym:
        for i, j, s1, s2 in _pair_blocks(N1, N2, B, sym):
            if j > i:
                out.mirror(s1, s2)
    return out.result()


def _structured(stack, tr1, tr2, trace, B):
    N1, O = tr1.output.shape
    sym = tr2 is None
    N2 = N1 if sym else tr2.output.shape[0]
    d1 = _reverse_pass(stack, tr1)
    d2 = d1 if sym else _reverse_pass(stack, tr2)
    a2 = tr1.a if sym else tr2.a
    L = stack.depth
    out = _Output(N1, N2, O, trace, tr1.output.dtype)
    gram_a, gram_d = _Buffer(tr1.output.dtype), _Buffer(tr1.output.dtype)
    for i, j, s1, s2 in _pair_blocks(N1, N2, B, sym):
        same = sym and i == j
        b1, b2 = tr1.a[0][s1].shape[0], a2[0][s2].shape[0]
        rows = (b1, b2) if trace else (b1 * O, b2 * O)
        for l, (lam_b, c) in enumerate(stack.factors, start=1):
            F = gram_a.gram(tr1.a[l - 1][s1], None if same else a2[l - 1][s2], (b1, b2))
            F *= c
            F += lam_b  # lambda_b + lambda_W / n_(l-1) a1(l-1) . a2(l-1)
            if l == L + 1:  # delta(L+1) = identity: (delta1 . delta2) = delta_oq
                out.add_diagonal(s1, s2, F)
                continue
            G = gram_d.gram(d1[l - 1][s1], None if same else d2[l - 1][s2], rows)  # delta1(l) . delta2(l)
            G = _outputs_last(G, b1, b2, O, trace)
            G *= F if trace else F[:, :, None, None]
            out.add(s1, s2, G)
    if sym:
        for i, j, s1, s2 in _pair_blocks(N1, N2, B, sym):
            if j > i:
                out.mirror(s1, s2)
    return out.result()


def _ntk_vector_products(stack, tr1, tr2, trace, B):
    """Blocks of B inputs of X2 give B O tangents (reused buffers); each is pushed through the JVP at
    the rows of X1 in chunks that keep the JVP's temporaries cache-sized.  X2 = X1: only rows up to
    the end of the current block (the rest is its mirror image)."""
    N1, O = tr1.output.shape
    sym = tr2 is None
    tr2 = tr1 if sym else tr2
    N2 = tr2.output.shape[0]
    p = _cost.Problem.of(stack.widths, N1, None if sym else N2, trace, tr1.output.dtype)
    B1 = _cost.COSTS["ntk_vector_products"].jvp_rows(p, B)
    out = _Output(N1, N2, O, trace, tr1.output.dtype)
    eye = np.eye(O, dtype=tr1.output.dtype)
    buffers = [_Buffer(tr1.output.dtype) for _ in stack.weights]  # the tangents of each layer
    for s2 in (slice(s, min(s + B, N2)) for s in range(0, N2, B)):
        t2 = tr2.rows(s2)
        b2 = t2.output.shape[0]
        K = b2 * O
        # VJP: the parameter cotangent of e_(b,q) is (delta(l)_(b,q) a(l-1)_b^T, delta(l)_(b,q));
        # scaled by Lambda it is the tangent pushed through the JVP at X1.
        deltas = _reverse_pass(stack, t2) + [np.broadcast_to(eye, (b2, O, O))]
        tangents = []
        for l, ((lam_b, c), d) in enumerate(zip(stack.factors, deltas)):
            n_l = d.shape[2]
            dW = buffers[l].outer(d, t2.a[l], c).reshape(K, n_l, -1)
            tangents.append((dW, lam_b * d.reshape(K, n_l)))
        rows = s2.stop if sym else N1
        for s1 in (slice(s, min(s + B1, rows)) for s in range(0, rows, B1)):
            jv = _jvp(stack, tr1.rows(s1), tangents)  # (b1, K = (b, q), O = o)
            jv = jv.reshape(jv.shape[0], b2, O, O)  # [a, b, q, o]
            out.add(s1, s2, np.einsum("abqq->ab", jv) if trace else jv.transpose(0, 1, 3, 2))  # [a, b, o, q]
        if sym:
            out.mirror(slice(0, s2.start), s2)
            out.symmetrize(s2)
    return out.result()


_METHODS = {
    "jacobian_contraction": _jacobian_contraction,
    "ntk_vector_products": _ntk_vector_products,
    "structured": _structured,
}


def _dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64; got {dt}")
    return dt


def plan(net, N1: int, N2: int | None = None, method="auto", trace_outputs=True, batch_size=None,
         dtype=np.float64, max_memory=DEFAULT_MEMORY) -> _cost.Estimate:
    """The method and block size :func:`empirical_ntk` would use, with the cost model's estimate."""
    stack = DenseStack.of(net)
    p = _cost.Problem.of(stack.widths, N1, N2, trace_outputs, _dtype(dtype))
    if method == "auto":
        method = _cost.choose_method(p, batch_size, max_memory)
    elif method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected 'auto' or one of {', '.join(map(repr, METHODS))}")
    return _cost.estimate(method, p, batch_size, max_memory)


def empirical_ntk(net, X1, X2=None, method: str = "auto", trace_outputs: bool = True, batch_size: int | None = None,
                  dtype=np.float64, max_memory: float = DEFAULT_MEMORY) -> Array:
    """The empirical NTK ``Theta(X1, X2) = J(X1) Lambda J(X2)^T`` of a finite network.

    ``net``: an :class:`~ntk_theory.reference.MLP` (its ``param``'s learning-rate factors), a
    :class:`DenseStack`, or a sequence ``[Dense, act, Dense, ..., Dense]``.  ``X1`` (N1, n_0),
    ``X2`` (N2, n_0) or None for X2 = X1 (symmetric: half the products).
    ``method``: ``"jacobian_contraction"``, ``"ntk_vector_products"``, ``"structured"`` or ``"auto"``
    (the smallest time predicted by :mod:`ntk_theory.empirical.cost`).  ``trace_outputs=True`` returns (N1, N2), the
    mean over the output axis (as ``MLP.ntk`` and neural-tangents' ``trace_axes=(-1,)``); False the
    full (N1, N2, O, O) tensor.  ``batch_size``: inputs per block; None picks the largest block whose
    intermediates fit in ``max_memory`` bytes (the output itself is not counted).  ``dtype``: float32
    or float64, the working and the returned precision.
    """
    if not isinstance(trace_outputs, (bool, np.bool_)):
        raise ValueError(f"trace_outputs must be True or False; got {trace_outputs!r}")
    if not isinstance(max_memory, numbers.Real) or not max_memory > 0:
        raise ValueError(f"max_memory must be a positive number of bytes; got {max_memory!r}")
    if not isinstance(method, str):
        raise ValueError(f"method must be a string; got {method!r}")
    stack, X1 = _prepare(net, X1, "X1", dtype)
    X2 = None if X2 is None else _checks.inputs(X2, "X2", dim=stack.widths[0]).astype(X1.dtype, copy=False)
    est = plan(stack, X1.shape[0], None if X2 is None else X2.shape[0], method, trace_outputs, batch_size,
               X1.dtype, max_memory)
    tr1 = forward(stack, X1)
    tr2 = None if X2 is None else forward(stack, X2)
    return _METHODS[est.method](stack, tr1, tr2, bool(trace_outputs), est.block)
