r"""A block of S independent networks evaluated at once: outputs, exact NTKs and last-layer kernels.

The Monte Carlo needs, per network and at N inputs, the scalar output f_a, the exact empirical NTK
Theta_ab and the last hidden layer's kernel Khat_ab = (1/n_L) sum_i z(L)_i;a z(L)_i;b.  For a scalar
output the NTK is cheapest by a reverse pass (O(L n^2) per input; :class:`~ntk_theory.reference.MLP`, run
by the description interpreter, checks this module network by network in the tests)::

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

Why the MLP keeps its own sampler beside the sampler of any description
(:mod:`ntk_theory.montecarlo.graph`, which runs the description interpreter with S networks per block):

* that sampler uses the same per-layer trick: its Dense action draws :class:`ProjectedWeights` (or
  :class:`DenseWeights`) from this module, exact for the same reason (every Dense layer is applied once, so
  the cotangent of its output depends on its weights only through the forward product);
* this module computes what the finite-width Monte Carlo of an MLP needs and the description sampler does
  not: the last hidden layer's kernel Khat, per-layer Gram matrices, the full readout NTK Theta_ij;ab of m
  readouts, the hidden NTK contracted with virtual readouts (:func:`evaluate_readouts`) and the squared
  readout weights for the control variates (:mod:`ntk_theory.montecarlo.controls`);
* it loads no symbolic module: descriptions carry SymPy expressions, and the Monte Carlo of library
  activations is a check of the symbolic layer, run without it;
* it is one loop over the layers of one activation, without the tape, the dispatch per layer and the
  Python objects per step of the interpreter (which matter most with dense weights, where the work per
  block is larger).
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
    def sample(cls, rng: np.random.Generator, S: int, n_out: int, n_in: int, sigma: float) -> DenseWeights:
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


def _draw(X: Array, spec: MLPSpec, S: int, rng: np.random.Generator, sampler: str):
    """S networks' weights (``sampler``: dense or projected on the N inputs' directions) and biases, drawn
    from the PDLT initialisation W(l) ~ N(0, C_W(l) / n_(l-1)), b(l) ~ N(0, C_b(l))."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    N = X.shape[0]
    weights, biases = [], []
    for l in range(spec.n_layers):
        n_in, n_out = spec.widths[l], spec.widths[l + 1]
        weights.append(_weights(sampler, rng, S, n_out, n_in, np.sqrt(spec.C_W[l] / n_in), N))
        biases.append(rng.standard_normal((S, n_out)) * np.sqrt(spec.C_b[l]))
    return weights, biases


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


# the same arguments as sample_readouts (two samplers of the same networks returning different outputs)
def sample(
    X: Array,
    spec: MLPSpec,
    activation: NumpyActivation,
    S: int,
    rng: np.random.Generator,
    sampler: str = "projected",
) -> EnsembleOutputs:
    """Draw S networks from the PDLT initialisation and evaluate them at X (N, n_0)."""
    weights, biases = _draw(X, spec, S, rng, sampler)
    return evaluate(X, spec, activation, weights, biases)


# ---------------------------------------------------------------------------- several readouts
@dataclass(frozen=True)
class ReadoutOutputs:
    r"""Per-network results for S networks with m readout neurons at N inputs (finite-width Monte Carlo).

    ``f[s, i, a]`` = z(L+1)_i;a; ``ntk[s, i, j, a, b]`` = Theta_ij;ab (readout neurons i, j);
    ``hidden[s, q, p, t, r]`` = a_q^T H_pr a_t with a_q = s(z(L)_q) (the n_L-vector at input q) and
    H_pr;km = s'(z(L)_k;p) Theta(L)_km;pr s'(z(L)_m;r) (Theta(L) the layer-L NTK between hidden neurons),
    i.e. the NTK (layers 1..L only) between "virtual readouts" with weight vectors a_q at input p and a_t
    at input r (None unless asked for).  Per hidden layer l = 1..L, (1/n_l) times the Gram matrices over
    neurons of z(l), s(z(l)) and s'(z(l)): ``pre_grams``, ``act_grams``, ``der_grams`` (S, N, N).
    ``readout_sq`` (S, m): sum_k W(L+1)_ik^2 when the readout weights are dense, else None.
    """

    f: Array
    ntk: Array
    hidden: Array | None
    pre_grams: list
    act_grams: list
    der_grams: list
    readout_sq: Array | None


def _gram(A: Array) -> Array:
    return np.matmul(A, np.swapaxes(A, -1, -2)) / A.shape[-1]


def evaluate_readouts(
    X: Array,
    spec: MLPSpec,
    activation: NumpyActivation,
    weights: list,
    biases: list,
    virtual: bool = True,
) -> ReadoutOutputs:
    """Like :func:`evaluate` for ``spec.output_dim = m >= 1`` readout neurons: the full readout NTK
    Theta_ij;ab, per-layer Gram matrices, and (``virtual``) the hidden NTK contracted with the last
    layer's activations (see :class:`ReadoutOutputs`).

    The reverse pass carries one row per (readout i, input a), delta(L) = s'(z(L)_a) * W(L+1)_i, and,
    with ``virtual``, one row per (q, p) with delta(L) = s'(z(L)_p) * s(z(L)_q) (it depends on the
    weights only through the forward products, as :class:`ProjectedWeights` requires).
    """
    S = biases[0].shape[0]
    N = X.shape[0]
    L, m = spec.depth, spec.output_dim
    acts = [np.broadcast_to(X, (S, *X.shape))]
    ds, pre, ag, dg = [], [], [], []
    z = None
    for l in range(spec.n_layers):
        z = weights[l].forward(acts[-1] if l else X) + biases[l][:, None, :]
        if l < L:
            a, d = activation.value(z), activation.derivative(z)
            pre.append(_gram(z))
            ag.append(_gram(a))
            dg.append(_gram(d))
            acts.append(a)
            ds.append(d)
    f = np.swapaxes(z, -1, -2)  # (S, m, N)
    lambdas = spec.learning_rate_factors()
    fan_in = [np.broadcast_to(X @ X.T / X.shape[1], (S, N, N))] + ag  # (1/n_(l-1)) a(l-1) a(l-1)^T

    # readout layer's own parameters: delta_ij (lambda_b + lambda_W fan_in gram)
    lam_b, lam_W = lambdas[L]
    theta = np.zeros((S, m, N, m, N))
    own = lam_b + lam_W * fan_in[L]
    for i in range(m):
        theta[:, i, :, i, :] = own
    theta = theta.reshape(S, m * N, m * N)

    # rows (i, p) -> i * N + p
    rows_in = np.tile(np.arange(N), m)
    G = np.zeros((S, m * N, m))
    G[:, np.arange(m * N), np.repeat(np.arange(m), N)] = 1.0
    delta = weights[L].backward(G) * ds[L - 1][:, rows_in, :]
    n_real = m * N
    if virtual:  # rows (q, p) -> q * N + p: s'(z(L)_p) * s(z(L)_q)
        dv = (acts[L][:, :, None, :] * ds[L - 1][:, None, :, :]).reshape(S, N * N, -1)
        delta = np.concatenate([delta, dv], axis=1)
        rows_in = np.concatenate([rows_in, np.tile(np.arange(N), N)])
        psi = np.zeros((S, N * N, N * N))
    for l in range(L - 1, -1, -1):
        lam_b, lam_W = lambdas[l]
        fac = lam_b + lam_W * fan_in[l]  # (S, N, N)
        dr = delta[:, :n_real]
        theta += np.matmul(dr, np.swapaxes(dr, -1, -2)) * fac[:, rows_in[:n_real, None], rows_in[None, :n_real]]
        if virtual:
            dv = delta[:, n_real:]
            vin = rows_in[n_real:]
            psi += np.matmul(dv, np.swapaxes(dv, -1, -2)) * fac[:, vin[:, None], vin[None, :]]
        if l > 0:
            delta = ds[l - 1][:, rows_in, :] * weights[l].backward(delta)
    ntk = theta.reshape(S, m, N, m, N).transpose(0, 1, 3, 2, 4)
    hidden = psi.reshape(S, N, N, N, N) if virtual else None
    readout_sq = (weights[L].W ** 2).sum(axis=-1) if isinstance(weights[L], DenseWeights) else None
    return ReadoutOutputs(f, ntk, hidden, pre, ag, dg, readout_sq)


# the same arguments as sample (two samplers of the same networks returning different outputs)
def sample_readouts(
    X: Array,
    spec: MLPSpec,
    activation: NumpyActivation,
    S: int,
    rng: np.random.Generator,
    sampler: str = "projected",
    virtual: bool = True,
) -> ReadoutOutputs:
    """Draw S networks with ``spec.output_dim`` readout neurons and evaluate :func:`evaluate_readouts`."""
    weights, biases = _draw(X, spec, S, rng, sampler)
    return evaluate_readouts(X, spec, activation, weights, biases, virtual)
