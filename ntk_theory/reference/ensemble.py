r"""A block of S independent networks evaluated at once: outputs, exact NTKs and last-layer kernels.

The Monte Carlo needs, per network and at N inputs, the scalar output f_a, the exact empirical NTK
Theta_ab and the last hidden layer's kernel Khat_ab = (1/n_L) sum_i z(L)_i;a z(L)_i;b.  For a scalar
output the NTK is cheapest by a hand-written reverse pass (O(L n^2) per input, against O(L^2 n^3)
for the forward-mode Jacobian of :class:`~ntk_theory.reference.MLP`, which checks this module
network by network in the tests)::

    delta(L+1) = 1,   delta(l) = s'(z(l)) * W(l+1)^T delta(l+1)
    Theta_ab   = sum_l (delta(l)_a . delta(l)_b) [lambda_b(l) + lambda_W(l)/n_(l-1) a(l-1)_a . a(l-1)_b]

A weight matrix enters the pass only through ``W A`` (forward) and ``W^T G`` (backward).  Two
samplers provide these products:

* :class:`DenseWeights` holds the S matrices explicitly: the literal network.
* :class:`ProjectedWeights` samples only what the pass touches, exactly in distribution.  With
  ``A = Q R`` (thin QR of the N activation vectors), ``W = Xi Q^T + W' (1 - Q Q^T)`` where
  ``Xi = W Q`` and ``W'`` are independent with iid N(0, sigma^2) entries.  Hence
  ``W A = Xi R`` and, for a G that depends on W only through ``W A`` (true in the backward pass:
  delta(l+1) depends on z(l+1) and on later, independent layers),
  ``W^T G = Q Xi^T G + (1 - Q Q^T) Psi R_G`` with ``G = Q_G R_G`` and ``Psi`` iid N(0, sigma^2).
  This draws O(n N) normals per layer instead of n^2, so wide networks cost what narrow ones do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..architecture import MLPSpec
from .activations import NumpyActivation

Array = np.ndarray


class DenseWeights:
    """S explicit weight matrices ``W`` of shape (S, n_out, n_in)."""

    def __init__(self, W: Array):
        self.W = W

    @classmethod
    def sample(cls, rng: np.random.Generator, S: int, n_out: int, n_in: int, sigma: float) -> "DenseWeights":
        return cls(rng.standard_normal((S, n_out, n_in)) * sigma)

    def forward(self, A: Array) -> Array:
        """``W a`` for each of the N rows of A: (S, N, n_in) or (N, n_in) -> (S, N, n_out)."""
        return np.matmul(A, np.swapaxes(self.W, -1, -2))

    def backward(self, G: Array) -> Array:
        """``W^T g`` for each of the N rows of G: (S, N, n_out) -> (S, N, n_in)."""
        return np.matmul(G, self.W)


class ProjectedWeights:
    """S weight matrices with iid N(0, sigma^2) entries, sampled only along the directions used.

    See the module docstring for the construction; :meth:`forward` must be called before
    :meth:`backward`, and the G given to :meth:`backward` may depend on W only through the
    forward product.
    """

    def __init__(self, rng: np.random.Generator, S: int, n_out: int, n_in: int, sigma: float):
        self.rng, self.S, self.n_out, self.n_in, self.sigma = rng, S, n_out, n_in, sigma

    def forward(self, A: Array) -> Array:
        At = np.swapaxes(A, -1, -2)  # (S, n_in, N) or (n_in, N)
        Q, R = np.linalg.qr(At)  # Q (..., n_in, k), R (..., k, N)
        k = Q.shape[-1]
        self.Q = np.broadcast_to(Q, (self.S, *Q.shape[-2:]))
        self.Xi = self.rng.standard_normal((self.S, self.n_out, k)) * self.sigma  # = W Q
        Z = np.matmul(self.Xi, R)  # (S, n_out, N) = W A
        return np.swapaxes(Z, -1, -2)

    def backward(self, G: Array) -> Array:
        Gt = np.swapaxes(G, -1, -2)  # (S, n_out, N)
        Q, Xi = self.Q, self.Xi
        along = np.matmul(Q, np.matmul(np.swapaxes(Xi, -1, -2), Gt))  # Q Xi^T G, (S, n_in, N)
        if Q.shape[-1] == self.n_in:  # W is fully determined by W Q
            return np.swapaxes(along, -1, -2)
        R_G = np.linalg.qr(Gt, mode="r")  # (S, m, N), G^T G = R_G^T R_G
        Psi = self.rng.standard_normal((self.S, self.n_in, R_G.shape[-2])) * self.sigma
        Y = np.matmul(Psi, R_G)  # rows iid N(0, sigma^2 G^T G): the law of W'^T G
        Y -= np.matmul(Q, np.matmul(np.swapaxes(Q, -1, -2), Y))  # (1 - Q Q^T) W'^T G
        return np.swapaxes(along + Y, -1, -2)


SAMPLERS = ("projected", "dense")


def _weights(sampler: str, rng, S, n_out, n_in, sigma, N):
    # The projected sampler draws ~(n_out + n_in) N normals against n_out n_in for dense ones.
    if sampler == "projected" and (n_out + n_in) * N < n_out * n_in:
        return ProjectedWeights(rng, S, n_out, n_in, sigma)
    return DenseWeights.sample(rng, S, n_out, n_in, sigma)


@dataclass(frozen=True)
class EnsembleOutputs:
    """Per-network results for S networks at N inputs."""

    f: Array  # (S, N) scalar outputs
    ntk: Array  # (S, N, N) exact empirical NTK
    kernel: Array  # (S, N, N) last hidden layer's Khat = z(L) z(L)^T / n_L


def evaluate(
    X: Array,
    spec: MLPSpec,
    activation: NumpyActivation,
    weights: list,
    biases: list,
) -> EnsembleOutputs:
    """Forward and reverse pass of S networks given their weight actions and biases (S, n_l).

    ``weights[l]`` is a :class:`DenseWeights` or :class:`ProjectedWeights` for layer l+1.
    """
    if spec.output_dim != 1:
        raise ValueError("the ensemble evaluates scalar-output networks (output_dim = 1)")
    S = biases[0].shape[0]
    acts = [np.broadcast_to(X, (S, *X.shape))]
    ds, z = [], None
    for l in range(spec.n_layers):
        z = weights[l].forward(acts[-1] if l else X) + biases[l][:, None, :]
        if l < spec.depth:
            acts.append(activation.value(z))
            ds.append(activation.derivative(z))
            if l == spec.depth - 1:
                z_last = z
    f = z[:, :, 0]

    lambdas = spec.learning_rate_factors()
    N = X.shape[0]
    delta = np.ones((S, N, 1))  # df/dz(L+1)
    theta = np.zeros((S, N, N))
    for l in range(spec.n_layers - 1, -1, -1):
        lam_b, lam_W = lambdas[l]
        a_prev = acts[l]
        gram_a = np.matmul(a_prev, np.swapaxes(a_prev, -1, -2))  # (S, N, N)
        gram_d = np.matmul(delta, np.swapaxes(delta, -1, -2))
        theta += gram_d * (lam_b + (lam_W / a_prev.shape[-1]) * gram_a)
        if l > 0:
            delta = ds[l - 1] * weights[l].backward(delta)
    kernel = np.matmul(z_last, np.swapaxes(z_last, -1, -2)) / z_last.shape[-1]
    return EnsembleOutputs(f, theta, kernel)


def sample(
    X: Array,
    spec: MLPSpec,
    activation: NumpyActivation,
    S: int,
    rng: np.random.Generator,
    sampler: str = "projected",
) -> EnsembleOutputs:
    """Draw S networks from the PDLT initialisation and evaluate them at X (N, n_0)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    N = X.shape[0]
    weights, biases = [], []
    for l in range(spec.n_layers):
        n_in, n_out = spec.widths[l], spec.widths[l + 1]
        weights.append(_weights(sampler, rng, S, n_out, n_in, np.sqrt(spec.C_W[l] / n_in), N))
        biases.append(rng.standard_normal((S, n_out)) * np.sqrt(spec.C_b[l]))
    return evaluate(X, spec, activation, weights, biases)
