r"""S reference MLPs of one shape held as stacked arrays, with forward and reverse passes written out over a
leading network axis, and full-batch gradient descent of all S at once.

Conventions are those of :class:`~ntk_theory.reference.MLP` (PDLT coordinates, :mod:`ntk_theory.conventions`):
network s has ``W(l)[s]`` (n_l, n_(l-1)) and ``b(l)[s]`` (n_l,), drawn as ``W ~ N(0, C_W / n_(l-1))``,
``b ~ N(0, C_b)`` and

    z(1) = x W(1)^T + b(1),   z(l+1) = s(z(l)) W(l+1)^T + b(l+1),   f = z(L+1)              (rows: inputs)

Reverse pass for a cotangent g of f (``(S, [K,] N, O)``, optional axis K of several cotangents):

    g(L+1) = g,   g(l) = (g(l+1) W(l+1)) * s'(z(l)),   dW(l) = g(l)^T a(l-1),   db(l) = sum_a g(l)_a

NTK (the structured rule of :func:`ntk_theory.reference.graph.structured_ntk`, T(l) = df/dz(l) from the O
output cotangents, traced over outputs):

    Theta_ab = (1/O) sum_o sum_l (T_o(l)_a . T_o(l)_b) [lambda_b(l) + lambda_W(l) / n_(l-1) a(l-1)_a . a(l-1)_b]

Gradient descent on L = ||f - y||^2 / (2 N O) (``loss="mean"``; ``"sum"`` drops 1/(N O)) with step eta
updates, as :func:`ntk_theory.dynamics.train` does,

    W(l) <- W(l) - eta lambda_W(l) / n_(l-1) dL/dW(l),     b(l) <- b(l) - eta lambda_b(l) dL/db(l)

which for param="ntk" (lambda_W = C_W, lambda_b = C_b) is plain gradient descent with step eta on
neural-tangents' standard-normal parameters w = W sqrt(n_(l-1)/C_W), beta = b / sqrt(C_b).  Each network
sees exactly the arithmetic of a single :class:`MLP` (same formulas, float64), so a stacked network trains
as :func:`ntk_theory.dynamics.train` trains it, to the rounding of the matrix products (their summation
order may differ).  Nothing here loads the symbolic layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from .activations import NumpyActivation, numpy_activation
from .network import MLP

Array = np.ndarray

LOSS_SCALES = {"mean": lambda N, O: 1.0 / (N * O), "sum": lambda N, O: 1.0}


@dataclass(frozen=True)
class BatchedTrace:
    """The forward pass of S networks at N inputs: ``a[l]`` (S, N, n_l) for l = 0 .. L (``a[0]`` the inputs,
    broadcast over S), ``ds[l-1]`` = s'(z(l)) for l = 1 .. L, ``output`` (S, N, O)."""

    a: list
    ds: list
    output: Array


@dataclass
class BatchedRun:
    """Gradient descent of S networks: ``steps`` (R,) recorded, ``train_outputs`` (R, S, N, O),
    ``test_outputs`` (R, S, M, O) or None, ``network`` the trained :class:`BatchedMLP` (the input one is not
    modified)."""

    steps: Array
    train_outputs: Array
    test_outputs: Array | None
    network: BatchedMLP


class BatchedMLP:
    """S MLPs of one :class:`~ntk_theory.architecture.MLPSpec` and activation: ``weights[l]`` (S, n_(l+1), n_l),
    ``biases[l]`` (S, n_(l+1)) (module docstring)."""

    def __init__(self, spec: MLPSpec, activation, weights, biases):
        self.spec = spec
        self.activation: NumpyActivation = numpy_activation(activation)
        if len(weights) != spec.n_layers or len(biases) != spec.n_layers:
            raise ValueError(f"need {spec.n_layers} weight and bias stacks; got {len(weights)} and {len(biases)}")
        self.weights = [np.ascontiguousarray(W, dtype=np.float64) for W in weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float64) for b in biases]
        S = self.weights[0].shape[0]
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            shape = (spec.widths[l + 1], spec.widths[l])
            if W.shape != (S, *shape) or b.shape != (S, shape[0]):
                raise ValueError(f"layer {l + 1}: weights must have shape {(S, *shape)} and biases {(S, shape[0])}; "
                                 f"got {W.shape} and {b.shape}")
        self.lambdas = spec.learning_rate_factors()

    @property
    def size(self) -> int:
        """The number of networks S."""
        return self.weights[0].shape[0]

    @classmethod
    def random(cls, spec: MLPSpec, activation, samples: int, rng) -> BatchedMLP:
        """``samples`` networks drawn from the initialisation of ``spec`` with the generator ``rng``."""
        S = _checks.positive_int("samples", samples)
        weights, biases = [], []
        for l in range(spec.n_layers):
            n_in, n_out = spec.widths[l], spec.widths[l + 1]
            weights.append(rng.standard_normal((S, n_out, n_in)) * np.sqrt(spec.C_W[l] / n_in))
            biases.append(rng.standard_normal((S, n_out)) * np.sqrt(spec.C_b[l]))
        return cls(spec, activation, weights, biases)

    @classmethod
    def stack(cls, nets) -> BatchedMLP:
        """The networks ``nets`` (:class:`MLP` of one spec and activation) as one stack (copies)."""
        nets = list(nets)
        if not nets:
            raise ValueError("stack needs at least one network")
        spec, act = nets[0].spec, nets[0].activation
        if any(n.spec != spec or n.activation.name != act.name for n in nets):
            raise ValueError("stacked networks must share their spec and activation")
        L = spec.n_layers
        return cls(spec, act, [np.stack([n.weights[l] for n in nets]) for l in range(L)],
                   [np.stack([n.biases[l] for n in nets]) for l in range(L)])

    def network(self, s: int) -> MLP:
        """Network ``s`` as an :class:`MLP` (copies of its parameters)."""
        return MLP(self.spec, self.activation, [W[s].copy() for W in self.weights], [b[s].copy() for b in self.biases])

    def copy(self) -> BatchedMLP:
        return BatchedMLP(self.spec, self.activation, [W.copy() for W in self.weights], [b.copy() for b in self.biases])

    def negated_readout(self) -> BatchedMLP:
        """The same networks with W(L+1), b(L+1) negated (an equally likely draw; f -> -f, Theta unchanged)."""
        out = self.copy()
        out.weights[-1] *= -1.0
        out.biases[-1] *= -1.0
        return out

    def __repr__(self) -> str:
        return f"BatchedMLP({self.size} x {self.spec!r}, activation={self.activation.name!r})"

    # ------------------------------------------------------------------ passes
    def forward(self, X) -> BatchedTrace:
        """a(l), s'(z(l)) and f at inputs X (N, n_0), all networks."""
        X = _checks.inputs(X, "X", dim=self.spec.input_dim)
        a, ds = [X], []
        act = self.activation
        x = X
        L = self.spec.depth
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            z = np.matmul(x, np.swapaxes(W, -1, -2)) + b[:, None, :]
            if l == L:
                return BatchedTrace(a, ds, z)
            x = act.value(z)
            ds.append(act.derivative(z))
            a.append(x)
        raise AssertionError("unreachable")

    def __call__(self, X) -> Array:
        """f(X), (S, N, O)."""
        return self.forward(X).output

    def cotangents(self, trace: BatchedTrace, g: Array) -> list:
        """[g(l) for l = 1 .. L+1]: the cotangents of z(l) for the output cotangent g ((S, [K,] N, O))."""
        g = np.asarray(g, dtype=np.float64)
        extra = g.ndim - 3
        out = [g]
        for l in range(self.spec.depth, 0, -1):
            W = self.weights[l]
            W = W.reshape(W.shape[:1] + (1,) * extra + W.shape[1:])
            ds = trace.ds[l - 1]
            g = np.matmul(g, W) * ds.reshape(ds.shape[:1] + (1,) * extra + ds.shape[1:])
            out.append(g)
        out.reverse()
        return out

    def vjp(self, trace: BatchedTrace, g: Array) -> list:
        """[(dW(l) (S, n_l, n_(l-1)), db(l) (S, n_l))]: the gradients of sum(g * f) (g: (S, N, O))."""
        gs = self.cotangents(trace, g)
        return [(np.matmul(np.swapaxes(gl, -1, -2), np.broadcast_to(a, gl.shape[:1] + a.shape[-2:])), gl.sum(axis=-2))
                for gl, a in zip(gs, trace.a)]

    def ntk(self, X1, X2=None) -> Array:
        """The empirical NTK Theta(X1, X2) of every network, traced over outputs: (S, N1, N2)."""
        tr1 = self.forward(X1)
        tr2 = tr1 if X2 is None else self.forward(X2)
        O = self.spec.output_dim
        S = self.size

        def sens(tr):
            N = tr.output.shape[1]
            e = np.broadcast_to(np.eye(O)[None, :, None, :], (S, O, N, O))
            return self.cotangents(tr, e)  # each (S, O, N, n_l)

        s1 = sens(tr1)
        s2 = s1 if X2 is None else sens(tr2)
        theta = 0.0
        for l, ((lam_b, lam_W), g1, g2) in enumerate(zip(self.lambdas, s1, s2)):
            a1, a2 = np.broadcast_to(tr1.a[l], (S,) + tr1.a[l].shape[-2:]), np.broadcast_to(tr2.a[l], (S,) + tr2.a[l].shape[-2:])
            gg = np.matmul(g1, np.swapaxes(g2, -1, -2)).sum(axis=1)  # (S, N1, N2), summed over outputs
            xx = np.matmul(a1, np.swapaxes(a2, -1, -2))
            theta = theta + gg * (lam_b + (lam_W / a1.shape[-1]) * xx)
        return theta / O


def train_batched(net: BatchedMLP, X, y, learning_rate: float, steps, loss: str = "mean", X_test=None,
                  record=None) -> BatchedRun:
    """Full-batch gradient descent of every network of ``net`` (copied) on (X, y) for ``steps`` steps.

    ``y``: (N,) or (N, O) targets shared by all networks; ``record``: the steps at which outputs are stored
    (default 0 and ``steps``), at X and, if given, at ``X_test``.  FloatingPointError if any output stops being
    finite (a learning rate above the stable one)."""
    _checks.choice("loss", loss, tuple(LOSS_SCALES))
    lr = _checks.positive("learning_rate", learning_rate)
    steps = _checks.nonnegative_int("steps", steps)
    X = _checks.inputs(X, "X", dim=net.spec.input_dim)
    Xt = None if X_test is None else _checks.inputs(X_test, "X_test", dim=net.spec.input_dim)
    N, O = X.shape[0], net.spec.output_dim
    y = _checks.targets(y, (N, O), "the networks' outputs at X")
    record = np.unique(np.asarray([0, steps] if record is None else record, dtype=int))
    if record.size and (record[0] < 0 or record[-1] > steps):
        raise ValueError(f"record must lie in [0, {steps}]; got {record.min()} .. {record.max()}")
    work = net.copy()
    scale = LOSS_SCALES[loss](N, O)
    scale_W = [lr * lam_W / W.shape[2] for (lam_b, lam_W), W in zip(work.lambdas, work.weights)]
    scale_b = [lr * lam_b for lam_b, _ in work.lambdas]
    todo = set(record.tolist())
    rec_train, rec_test = [], []
    k = 0
    while True:
        tr = work.forward(X)
        f = tr.output
        if not np.all(np.isfinite(f)):
            raise FloatingPointError(f"outputs became non-finite at step {k}: learning rate {lr:g} is too large")
        if k in todo:
            rec_train.append(f.copy())
            if Xt is not None:
                rec_test.append(work(Xt))
        if k == steps:
            break
        for l, (dW, db) in enumerate(work.vjp(tr, scale * (f - y))):
            dW *= scale_W[l]
            work.weights[l] -= dW
            work.biases[l] -= scale_b[l] * db
        k += 1
    return BatchedRun(record, np.array(rec_train), np.array(rec_test) if Xt is not None else None, work)


__all__ = ["BatchedMLP", "BatchedRun", "BatchedTrace", "train_batched"]
