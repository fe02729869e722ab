r"""The reference finite-width MLP in NumPy, differentiated in forward mode by hand.

Conventions (PDLT, see :mod:`ntk_theory.conventions`)::

    z(1) = W(1) x + b(1),   z(l+1) = W(l+1) s(z(l)) + b(l+1),   f = z(L+1)
    W(l) ~ N(0, C_W(l) / n_(l-1)),  b(l) ~ N(0, C_b(l))

Parameters are stored in PDLT coordinates ``theta = (W(1), b(1), ..., W(L+1), b(L+1))``; a tangent
``v`` is a list of ``(dW(l), db(l))`` of the same shapes (or a flat vector in :meth:`MLP.flatten`
order).  Forward mode propagates tangents through the layers::

    dz(1)   = dW(1) x + db(1)
    dz(l+1) = W(l+1) [s'(z(l)) * dz(l)] + dW(l+1) s(z(l)) + db(l+1)

giving the Jacobian-vector product ``J(x) v = dz(L+1)``.  The full Jacobian uses the structure of a
dense layer: the tangent ``dW(l) = e_i e_j^T`` enters as ``dz(l) = a(l-1)_j e_i``, so pushing the
``n_l`` unit tangents ``e_i`` of ``z(l)`` forward (one batched matrix product per layer, all
directions at once, no loop over parameters) gives

    df/dW(l)_ij = T(l)_{., i} a(l-1)_j,     df/db(l)_i = T(l)_{., i},     T(l) = df/dz(l).

The empirical NTK is ``Theta = J Lambda J^T`` with ``Lambda`` the learning-rate factors of ``param``::

    Theta_ab = sum_l (T(l)_a . T(l)_b) [lambda_b(l) + lambda_W(l) / n_(l-1) a(l-1)_a . a(l-1)_b]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from .activations import NumpyActivation, numpy_activation

Array = np.ndarray


@dataclass(frozen=True)
class Trace:
    """Everything the forward pass computes at inputs X (N, n_0).

    ``z[l-1]`` is z(l) of shape (N, n_l) for l = 1 .. L+1 (``z[-1]`` is the output f);
    ``a[l]`` is a(l) = s(z(l)) for l = 1 .. L, with ``a[0] = X``;
    ``ds[l-1]`` is s'(z(l)) for l = 1 .. L.
    """

    z: list
    a: list
    ds: list

    @property
    def output(self) -> Array:
        return self.z[-1]


class MLP:
    """A finite-width MLP with explicit parameters and hand-written forward-mode derivatives.

    Build one with :meth:`MLP.random` (parameters drawn from the PDLT initialisation) or from
    explicit parameters ``MLP(spec, activation, weights, biases)``.

    >>> net = MLP.random((3, 64, 64, 1), "relu", C_W=2.0, C_b=0.0, param="ntk", seed=0)
    >>> X = np.eye(3)[:2]
    >>> net.ntk(X).shape
    (2, 2)
    """

    def __init__(self, spec: MLPSpec, activation, weights: Sequence[Array], biases: Sequence[Array]):
        self.spec = spec
        self.activation: NumpyActivation = numpy_activation(activation)
        if len(weights) != spec.n_layers or len(biases) != spec.n_layers:
            raise ValueError(
                f"need {spec.n_layers} weight matrices and bias vectors; got {len(weights)} and {len(biases)}"
            )
        self.weights, self.biases = [], []
        for l, (W, b) in enumerate(zip(weights, biases), start=1):
            n_in, n_out = spec.widths[l - 1], spec.widths[l]
            W = np.asarray(W, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64)
            if W.shape != (n_out, n_in) or b.shape != (n_out,):
                raise ValueError(
                    f"layer {l}: W must have shape {(n_out, n_in)} and b shape {(n_out,)}; "
                    f"got {W.shape} and {b.shape}"
                )
            self.weights.append(W)
            self.biases.append(b)
        self._lambdas = spec.learning_rate_factors()

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        widths: Sequence[int],
        activation,
        C_W=1.0,
        C_b=0.0,
        param: str = "ntk",
        seed=None,
    ) -> "MLP":
        """Draw ``W(l) ~ N(0, C_W(l)/n_(l-1))``, ``b(l) ~ N(0, C_b(l))`` for the given widths.

        ``widths = (n_0, n_1, ..., n_L, n_out)``; ``seed`` is anything ``np.random.default_rng`` takes.
        """
        spec = MLPSpec(tuple(widths), C_W, C_b, param)
        rng = np.random.default_rng(seed)
        weights, biases = [], []
        for l in range(spec.n_layers):
            n_in, n_out = spec.widths[l], spec.widths[l + 1]
            weights.append(rng.standard_normal((n_out, n_in)) * np.sqrt(spec.C_W[l] / n_in))
            biases.append(rng.standard_normal(n_out) * np.sqrt(spec.C_b[l]))
        return cls(spec, activation, weights, biases)

    def __repr__(self) -> str:
        return f"MLP({self.spec!r}, activation={self.activation.name!r})"

    # ------------------------------------------------------------------ parameters
    @property
    def n_params(self) -> int:
        return self.spec.n_params()

    def flatten(self, params=None) -> Array:
        """Flatten ``[(W(1), b(1)), ...]`` (default: this network's) into one vector; W row-major."""
        if params is None:
            params = list(zip(self.weights, self.biases))
        return np.concatenate([np.concatenate([np.ravel(W), np.ravel(b)]) for W, b in params])

    def unflatten(self, vector: Array) -> list:
        """Inverse of :meth:`flatten` (a leading batch axis is kept: (K, P) -> [(K, ...), ...])."""
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape[-1] != self.n_params:
            raise ValueError(f"a flat tangent needs {self.n_params} entries; got shape {vector.shape}")
        lead = vector.shape[:-1]
        out, i = [], 0
        for W, b in zip(self.weights, self.biases):
            dW = vector[..., i : i + W.size].reshape(*lead, *W.shape)
            i += W.size
            db = vector[..., i : i + b.size].reshape(*lead, *b.shape)
            i += b.size
            out.append((dW, db))
        return out

    def learning_rate_vector(self) -> Array:
        """The diagonal of Lambda in :meth:`flatten` order: lambda_W/n_(l-1) for W, lambda_b for b."""
        parts = []
        for (lam_b, lam_W), W, b in zip(self._lambdas, self.weights, self.biases):
            parts.append(np.full(W.size, lam_W / W.shape[1]))
            parts.append(np.full(b.size, lam_b))
        return np.concatenate(parts)

    # ------------------------------------------------------------------ forward pass
    def _inputs(self, X, name="X") -> Array:
        return _checks.inputs(X, name, dim=self.spec.input_dim)

    def forward(self, X) -> Trace:
        """Preactivations z(l), activations a(l) and derivatives s'(z(l)) at inputs X (N, n_0)."""
        a = self._inputs(X)
        zs, acts, ds = [], [a], []
        s = self.activation
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            z = a @ W.T + b
            zs.append(z)
            if l < self.spec.depth:
                a = s.value(z)
                acts.append(a)
                ds.append(s.derivative(z))
        return Trace(zs, acts, ds)

    def __call__(self, X) -> Array:
        """The output f(X), shape (N, n_out)."""
        return self.forward(X).output

    # ------------------------------------------------------------------ forward mode
    def jvp(self, X, tangent) -> tuple[Array, Array]:
        """``(f(X), J(X) v)`` for a parameter tangent v.

        ``tangent`` is a list of ``(dW(l), db(l))`` or a flat vector (see :meth:`flatten`); a leading
        batch axis K on every array (or a (K, P) flat array) pushes K tangents at once and returns
        ``J v`` of shape (K, N, n_out); otherwise (N, n_out).
        """
        tr = self.forward(X)
        if isinstance(tangent, np.ndarray):
            tangent = self.unflatten(tangent)
        if len(tangent) != self.spec.n_layers:
            raise ValueError(f"tangent must have one (dW, db) pair per layer ({self.spec.n_layers})")
        dz = None
        for l, ((W, b), (dW, db)) in enumerate(zip(zip(self.weights, self.biases), tangent)):
            dW, db = np.asarray(dW, np.float64), np.asarray(db, np.float64)
            if dW.shape[-2:] != W.shape or db.shape[-1:] != b.shape:
                raise ValueError(
                    f"tangent of layer {l + 1} must have shapes {W.shape} and {b.shape}; "
                    f"got {dW.shape} and {db.shape}"
                )
            a_prev = tr.a[l]
            # dz(l+1) = W [s'(z(l)) * dz(l)] + dW a(l) + db
            contribution = np.matmul(a_prev, np.swapaxes(dW, -1, -2)) + db[..., None, :]
            if dz is None:
                dz = contribution
            else:
                dz = np.matmul(tr.ds[l - 1] * dz, W.T) + contribution
        return tr.output, dz

    def _push_forward(self, tr: Trace, layer: int, tangent: Array) -> Array:
        """Push tangents of z(layer) (shape (N, n_layer, k): k directions per input) to the output.

        Returns d f / d(direction), shape (N, n_out, k).  ``layer`` is 1-based.
        """
        T = tangent
        for m in range(layer, self.spec.n_layers):
            # dz(m+1) = W(m+1) [s'(z(m)) * dz(m)]
            T = np.matmul(self.weights[m], tr.ds[m - 1][:, :, None] * T)
        return T

    def output_sensitivities(self, X=None, trace: Trace | None = None) -> list:
        """``[T(l) = df/dz(l) for l = 1 .. L+1]``, each (N, n_out, n_l), by forward mode."""
        tr = trace if trace is not None else self.forward(X)
        N = tr.output.shape[0]
        out = []
        for l in range(1, self.spec.n_layers + 1):
            n_l = self.spec.widths[l]
            eye = np.broadcast_to(np.eye(n_l), (N, n_l, n_l))
            out.append(self._push_forward(tr, l, eye))
        return out

    def jacobian(self, X, flat: bool = False, scaled: bool = False):
        """The parameter Jacobian at X, all tangent directions at once.

        Returns a list of ``(dF/dW(l), dF/db(l))`` with shapes (N, n_out, n_l, n_(l-1)) and
        (N, n_out, n_l), or with ``flat=True`` one array (N, n_out, P) in :meth:`flatten` order.
        ``scaled=True`` multiplies by sqrt(Lambda) so that ``Theta = J J^T``.
        """
        tr = self.forward(X)
        blocks = []
        for l, T in enumerate(self.output_sensitivities(trace=tr)):
            a_prev = tr.a[l]
            dW = T[:, :, :, None] * a_prev[:, None, None, :]
            db = T
            if scaled:
                lam_b, lam_W = self._lambdas[l]
                dW = dW * np.sqrt(lam_W / a_prev.shape[1])
                db = db * np.sqrt(lam_b)
            blocks.append((dW, db))
        if not flat:
            return blocks
        N, O = tr.output.shape
        return np.concatenate([np.concatenate([dW.reshape(N, O, -1), db], axis=-1) for dW, db in blocks], axis=-1)

    def input_jacobian(self, X) -> Array:
        """``df/dx`` at X, shape (N, n_out, n_0), by pushing the n_0 input tangents forward."""
        tr = self.forward(X)
        N = tr.output.shape[0]
        # the input tangent e_k enters as dz(1) = W(1) e_k
        W1 = np.broadcast_to(self.weights[0], (N, *self.weights[0].shape))
        return self._push_forward(tr, 1, W1)

    def ntk(self, X1, X2=None, trace_outputs: bool = True) -> Array:
        """The empirical NTK ``Theta(X1, X2) = J(X1) Lambda J(X2)^T`` with this ``param``'s factors.

        Returns (N1, N2) with ``trace_outputs=True`` (the mean over the output axis, as
        neural-tangents' ``trace_axes=(-1,)``; the NTK itself when n_out = 1), or the full
        (N1, N2, n_out, n_out) tensor.
        """
        tr1 = self.forward(X1)
        tr2 = tr1 if X2 is None else self.forward(self._inputs(X2, "X2"))
        T1 = self.output_sensitivities(trace=tr1)
        T2 = T1 if X2 is None else self.output_sensitivities(trace=tr2)
        N1, N2, O = tr1.output.shape[0], tr2.output.shape[0], self.spec.output_dim
        theta = np.zeros((N1, N2, O, O))
        for l, (lam_b, lam_W) in enumerate(self._lambdas):
            a1, a2 = tr1.a[l], tr2.a[l]
            factor = lam_b + (lam_W / a1.shape[1]) * (a1 @ a2.T)  # (N1, N2)
            theta += np.einsum("aoi,bpi->abop", T1[l], T2[l]) * factor[:, :, None, None]
        if trace_outputs:
            return np.einsum("aboo->ab", theta) / O
        return theta
