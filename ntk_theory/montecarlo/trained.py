r"""Ensembles of finite MLPs trained by full-batch gradient descent: the mean and covariance of the trained
outputs at recorded steps, with delete-one-batch jackknife standard errors, and the same initialisation's
linearised model as a control.

What is measured.  Each network (PDLT initialisation, :class:`~ntk_theory.reference.batched.BatchedMLP`) is
trained on (X, y) by gradient descent with step eta on L = ||f - y||^2 / (2 N O) (``loss="mean"``; on
neural-tangents' 'ntk' parameters for param="ntk", :func:`~ntk_theory.reference.batched.train_batched`),
and f(t) is recorded at the train inputs X (N) and test inputs X' (M), P = N + M rows, after t steps.
From the network's own empirical NTK at initialisation Theta = Theta_hat(X u X', X) with its output indices
(:func:`output_ntk`; rows and columns (input, output), the PO x NO matrix that gradient descent on all O
outputs uses) and its initial outputs f0, the linearised model is

    f_lin(t) = f0 - Theta V G_t V^T (f0(X) - y),   Theta(X, X) = V diag(lambda) V^T,
    G_t = diag((1 - (1 - c lambda)^t) / lambda)     (c = eta / (N O), or eta for loss="sum")

(on the train rows Theta V G_t V^T = I - (I - c Theta)^t: f_lin = f0 - (I - (I - c Theta)^t)(f0 - y)), the
model :class:`ntk_theory.dynamics.finite_width.FiniteWidthDynamics` expands in 1/n (its output-off-diagonal
NTK blocks, O(n^-1/2), included).  f_lin splits into a part odd and a part even in the readout layer
(W(L+1), b(L+1)),

    odd  = f0 - Theta V G_t V^T f0(X),          even = Theta V G_t V^T y.

Negating W(L+1), b(L+1) is an equally likely draw that negates f0 and leaves Theta unchanged, so E[odd] = 0
exactly, for every activation and width: E[f_lin] = E[even], and ``even`` fluctuates only through the
NTK's O(n^-1/2) fluctuations, while f0 fluctuates at O(1).

Estimates (each an :class:`~ntk_theory.montecarlo.estimate.Estimate`, shape (R, P) for one output given as
a vector y, else (R, P, O); covariances (R, P, P), the covariance over networks of one output's P values,
averaged over the O outputs):

* ``mean_plain``: the sample mean of f(t), no control (its variance is O(1) per network);
* ``motion``: E[f - f_lin], the part driven by the NTK's motion during training (dNTK, ddNTK); O(1/n),
  and O(1/n) in every network too (tanh, depth 2: its spread over networks falls about 12-fold from width 32
  to 512);
* ``linearised``: E[f_lin], measured as the mean of ``even`` (the control: ``odd`` dropped, its mean being
  exactly 0); it differs from the infinite-width mean through the NTK at initialisation: its O(1/n) mean
  shift and its fluctuations (A, B, D, F);
* ``mean``: ``motion + linearised`` = mean(f - odd), the variance-reduced E[f(t)] (the same expectation as
  ``mean_plain``);
* ``mean_optimal``: mean(f - beta odd) with beta = Cov(f, odd) / Var(odd) per entry (estimated from the same
  networks, inside the jackknife): the same expectation with the variance-minimising multiple of the control,
  never (to O(1/S)) worse than either ``mean`` (beta = 1) or ``mean_plain`` (beta = 0) — where a network's own
  NTK lags behind its actual training (a converged train row: f = y but odd not yet decayed) beta -> 0;
* ``odd``: the sample mean of ``odd`` (a check: zero within its standard error);
* ``linearised_plain``: the sample mean of f_lin (at t = 0 exactly the mean of f0);
* ``cov``: Cov[f(t)], S/(S - 1) (mean(f f^T) - mean(f) mean(f)^T); ``cov_linearised``: Cov[f_lin(t)];
  ``cov_motion``: ``cov - cov_linearised`` (the NTK-motion part of the covariance, estimated with the
  smaller variance of f f^T - f_lin f_lin^T).  With y (N, O): also ``cov_outputs``, ``cov_linearised_outputs``,
  ``cov_motion_outputs`` (R, P, O, P, O), the covariances with output indices (``cov`` is their output trace
  over O).

:meth:`TrainedEnsemble.variance_reduction` is SE(mean_plain)^2 / SE(name)^2 per entry (name ``mean`` or
``mean_optimal``): the factor by which the control cuts the number of networks needed for the mean.

Error model: every estimate is a smooth function of means over S independent networks; its standard error
is the delete-one-batch jackknife of :func:`~ntk_theory.montecarlo.estimate.jackknife` over B batches
(relative error of the SE about 1/sqrt(2 (B - 1))), and the run is reproducible for any thread count
(:func:`~ntk_theory.montecarlo.estimate.run_blocks`).  The outputs are float64; gradient descent is exact
up to rounding (no linearisation), so the only error is the sampling error.  A standard error that is 0 or
not finite is reported as such and fails :meth:`Estimate.z_score` (NaN) — except where the value is exact
(``motion``, ``linearised`` and ``mean`` at t = 0 are exactly 0 and so are their SEs).

Cost: one forward and one reverse pass per step over a stack of ``block`` networks; for width n and depth
L it is dominated by the (L - 1) hidden n x n weight matrices read three times and written once per step
(memory-bound): about 130 us per network per step at width 256, depth 2, N = 4 (blocks of 8, one idle core),
i.e. about 75 networks/s for 100 steps (10 networks/s on a 2-core machine under a load of 9); about 15 us per
network per step at width 64, and the NTK, the eigendecompositions and the control cost one step's worth.
Memory: block (L - 1) n^2 floats.  A 1/n fit with SE ~0.2 on the O(1/n) coefficient of the mean (ReLU depth
2, N = 3, 2048 networks at each of widths 32 .. 256, 60 steps) takes about 3 minutes on a loaded machine.
Nothing here imports the symbolic layer; the infinite-width prediction and the fits in 1/n are in
:mod:`ntk_theory.validation.trained`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from ..reference.activations import numpy_activation
from ..reference.batched import LOSS_SCALES, BatchedMLP, train_batched
from .estimate import Estimate, EstimateTable, jackknife, run_blocks

Array = np.ndarray

__all__ = ["TrainedEnsemble", "UnstableControlError", "linearised_parts", "output_ntk", "sample_trained"]

DESCRIPTIONS = {
    "mean": "E[f(t)] = motion + linearised (variance-reduced)",
    "mean_optimal": "E[f(t)] = mean(f - beta odd), beta per entry minimising the variance",
    "mean_plain": "E[f(t)], plain sample mean",
    "motion": "E[f - f_lin]: the NTK's motion during training",
    "linearised": "E[f_lin]: the linearised model of the network's own NTK (odd part dropped)",
    "linearised_plain": "E[f_lin], plain sample mean",
    "odd": "E[f0 - Theta G V^T f0]: zero by the readout sign symmetry (a check)",
    "cov": "Cov[f(t)] over networks",
    "cov_linearised": "Cov[f_lin(t)]",
    "cov_motion": "Cov[f(t)] - Cov[f_lin(t)]",
    "cov_outputs": "Cov[f(t)] with output indices (O outputs)",
    "cov_linearised_outputs": "Cov[f_lin(t)] with output indices (O outputs)",
    "cov_motion_outputs": "Cov[f(t)] - Cov[f_lin(t)] with output indices (O outputs)",
}


class UnstableControlError(ValueError):
    """A network's own NTK makes its linearised model diverge (c lambda_max >= 2): the control is undefined."""


def output_ntk(net: BatchedMLP, X1, X2) -> Array:
    """The empirical NTK of every network with its output indices, Theta_hat_(i j)(x1, x2) =
    sum_mu lambda_mu dz_(i;x1)/dth_mu dz_(j;x2)/dth_mu: (S, N1, O, N2, O) (the same reverse passes as
    :meth:`~ntk_theory.reference.batched.BatchedMLP.ntk`, which is its output trace divided by O)."""
    tr1, tr2 = net.forward(X1), net.forward(X2)
    O, S = net.spec.output_dim, net.size

    def sens(tr):
        n = tr.output.shape[1]
        return net.cotangents(tr, np.broadcast_to(np.eye(O)[None, :, None, :], (S, O, n, O)))  # (S, O, n, n_l)

    theta = 0.0
    for l, ((lam_b, lam_W), g1, g2) in enumerate(zip(net.lambdas, sens(tr1), sens(tr2))):
        a1 = np.broadcast_to(tr1.a[l], (S,) + tr1.a[l].shape[-2:])
        a2 = np.broadcast_to(tr2.a[l], (S,) + tr2.a[l].shape[-2:])
        gg = np.einsum("sixk,sjyk->sixjy", g1, g2)
        xx = lam_b + (lam_W / a1.shape[-1]) * np.matmul(a1, np.swapaxes(a2, -1, -2))  # (S, N1, N2)
        theta = theta + gg * xx[:, None, :, None, :]
    return np.transpose(theta, (0, 2, 1, 4, 3))


def linearised_parts(theta, f0, y, steps, c: float) -> tuple[Array, Array]:
    """The linearised model's (odd, even) parts (module docstring) of S networks.

    ``theta`` (S, P, N): Theta_hat(X u X', X) with the train inputs first; ``f0`` (S, P, O); ``y`` (N, O);
    ``steps`` (R,); ``c`` the function-space rate.  Returns two (R, S, P, O) arrays; odd + even = f_lin.
    (1 - c lambda)^t - 1 is evaluated as expm1(t log1p(-c lambda)) for c lambda < 1; modes with lambda <=
    N eps lambda_max are null (their gain is c t).
    """
    S, _, N = theta.shape
    lam, V = np.linalg.eigh(0.5 * (theta[:, :N, :] + np.swapaxes(theta[:, :N, :], 1, 2)))  # (S, N), (S, N, N)
    lam = np.maximum(lam, 0.0)
    unstable = int(np.sum(c * lam[:, -1] >= 2.0))
    if unstable:
        raise UnstableControlError(
            f"{unstable} of {S} networks have an empirical NTK with c lambda_max >= 2 (largest {c * lam.max():.3g}): "
            f"their linearised model diverges under this step; lower eta (the NTK of a narrow network fluctuates "
            f"well above its infinite-width value)")
    null = lam <= N * np.finfo(float).eps * lam[:, -1:]
    T = np.asarray(steps, dtype=float)[:, None, None]  # (R, 1, 1)
    x = c * lam
    small = x < 1.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        pm1 = np.where(small, np.expm1(T * np.log1p(-np.where(small, x, 0.0))), (1.0 - x) ** T - 1.0)
        gain = np.where(null, c * T, -pm1 / np.where(null, 1.0, lam))  # (R, S, N)
    TV = np.matmul(theta, V)  # (S, P, N)

    def moved(v):  # Theta V G_t V^T v, v (S, N, O) or (N, O)
        coords = np.matmul(np.swapaxes(V, 1, 2), v)  # (S, N, O)
        return np.matmul(TV, gain[..., None] * coords)  # (R, S, P, O)

    even = moved(np.broadcast_to(y, (S,) + y.shape))
    odd = f0 - moved(f0[:, :N])
    return odd, even


@dataclass
class TrainedEnsemble(EstimateTable):
    """Estimates over an ensemble of trained networks (module docstring): ``table[name]`` an
    :class:`Estimate`; ``steps`` (R,) the recorded steps; rows 0 .. N-1 of the input axis are the train
    inputs, N .. N+M-1 the test inputs; ``info`` the run's set-up (width, samples, seconds, networks/s)."""

    estimates: dict
    steps: Array
    n_train: int
    info: dict = field(default_factory=dict)

    def symmetry(self, name: str) -> str:
        return "none"

    @property
    def width(self) -> int:
        return self.info["width"]

    def variance_reduction(self, name: str = "mean") -> Array:
        """SE(mean_plain)^2 / SE(name)^2 per entry (inf where the controlled SE is 0), name ``mean`` or
        ``mean_optimal``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self["mean_plain"].stderr / self[name].stderr) ** 2

    def train(self, name: str) -> Estimate:
        """Estimate ``name`` restricted to the train inputs (covariances: the train-train block)."""
        return self._rows(name, slice(0, self.n_train))

    def test(self, name: str) -> Estimate:
        """Estimate ``name`` restricted to the test inputs (covariances: the test-test block)."""
        return self._rows(name, slice(self.n_train, None))

    def _rows(self, name, rows) -> Estimate:
        est = self[name]
        pick = (lambda a: a[:, rows, rows]) if name.startswith("cov") else (lambda a: a[:, rows])
        return Estimate(est.name, pick(est.value), pick(est.stderr), est.description)

    def table(self, names=None, max_rows: int = 10) -> str:
        i = self.info
        head = (f"{i['samples']} networks trained ({i['activation']}, depth {i['depth']}, width {i['width']}, "
                f"C_W={i['C_W']}, C_b={i['C_b']}, eta={i['learning_rate']:g}, steps {list(self.steps)}; "
                f"{i['seconds']:.1f} s = {i['networks_per_second']:.1f} networks/s)")
        return "\n".join([head] + self.rows(names, max_rows))

    def __repr__(self) -> str:
        return (f"<TrainedEnsemble width {self.info.get('width')}, {self.info.get('samples')} networks, "
                f"steps {list(self.steps)}: {', '.join(self.estimates)}>")


def _steps(steps) -> Array:
    try:
        s = np.asarray(steps, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"steps must be a sequence of non-negative integers; got {steps!r}") from None
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0) or np.any(s != np.round(s)):
        raise ValueError(f"steps must be a non-empty sequence of finite non-negative integers; got {steps!r}")
    s = s.astype(int)
    if np.any(np.diff(s) <= 0):
        raise ValueError(f"steps must be strictly increasing; got {list(s)}")
    return s


def sample_trained(activation, X_train, y_train, X_test, depth: int, width: int, *, C_W, C_b, eta: float, steps,
                   samples: int, seed=0, param: str = "ntk", loss: str = "mean", batches: int = 32, block: int = 8,
                   workers: int = 1, progress=None) -> TrainedEnsemble:
    """Train ``samples`` networks (depth hidden layers of ``width``) on (X_train, y_train) by gradient descent
    with step ``eta`` and estimate, after each of ``steps`` (increasing integers), the mean and covariance of
    their outputs at X_train and X_test with the linearised control (module docstring).

    ``y_train`` (N,) (one output; estimates then have no output axis) or (N, O); ``X_test`` (M, n_0) or None;
    ``batches``: jackknife batches; ``block``: networks trained as one stack (memory: block (depth - 1)
    width^2 floats); ``workers`` threads.  FloatingPointError if training diverges, :class:`UnstableControlError`
    if a network's own NTK has c lambda_max >= 2 (eta too large for the control)."""
    act = numpy_activation(activation)
    X = _checks.inputs(X_train, "X_train")
    Xt = None if X_test is None else _checks.inputs(X_test, "X_test", dim=X.shape[1])
    y = np.asarray(y_train, dtype=np.float64)
    vector = y.ndim == 1
    y = y[:, None] if vector else y
    if y.ndim != 2 or y.shape[0] != X.shape[0] or not np.all(np.isfinite(y)):
        raise ValueError(f"y_train must be finite with shape ({X.shape[0]},) or ({X.shape[0]}, O); "
                         f"got shape {np.shape(y_train)}")
    N, O = y.shape
    spec = MLPSpec.build(X.shape[1], depth, width, O, C_W=C_W, C_b=C_b, param=param)
    _checks.choice("loss", loss, tuple(LOSS_SCALES))
    eta = float(eta)
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a finite number > 0; got {eta!r}")
    samples, batches, block = (_checks.positive_int(k, v) for k, v in
                               (("samples", samples), ("batches", batches), ("block", block)))
    if batches < 2 or samples < 2 * batches:
        raise ValueError(f"need batches >= 2 and samples >= 2 batches; got samples={samples}, batches={batches}")
    steps = _steps(steps)
    record = np.union1d([0], steps)
    rows = np.searchsorted(record, steps)
    Xall = X if Xt is None else np.concatenate([X, Xt])
    P, R = Xall.shape[0], steps.size
    c = eta * LOSS_SCALES[loss](N, O)

    def sample_block(rng, S):
        net = BatchedMLP.random(spec, act, S, rng)
        theta = output_ntk(net, Xall, X).reshape(S, P * O, N * O)  # composite rows (input, output)
        run = train_batched(net, X, y, eta, int(record[-1]), loss=loss, X_test=Xt, record=record)
        f = run.train_outputs if Xt is None else np.concatenate([run.train_outputs, run.test_outputs], axis=2)
        odd, even = linearised_parts(theta, f[0].reshape(S, P * O, 1), y.reshape(N * O, 1), steps, c)
        odd, even = odd.reshape(R, S, P, O), even.reshape(R, S, P, O)  # (R, S, P, O)
        f = f[rows]
        lin = odd + even
        to_net = lambda a: np.moveaxis(a, 1, 0)  # (S, R, P, O)
        f, lin, odd, even = map(to_net, (f, lin, odd, even))
        ff = np.einsum("srpo,srqk->srpoqk", f, f)
        ll = np.einsum("srpo,srqk->srpoqk", lin, lin)
        flat = lambda a: a.reshape(S, -1)
        return {"f": flat(f), "lin": flat(lin), "odd": flat(odd), "even": flat(even), "delta": flat(f - lin),
                "ff": flat(ff), "ll": flat(ll), "f_odd": flat(f * odd), "odd_odd": flat(odd * odd)}

    def estimator(m, count):
        shp = (R, P, O)
        f, lin, d = m["f"].reshape(shp), m["lin"].reshape(shp), m["delta"].reshape(shp)
        even, odd = m["even"].reshape(shp), m["odd"].reshape(shp)
        corr = count / (count - 1.0)
        cov_full = corr * (m["ff"].reshape(R, P, O, P, O) - np.einsum("rpo,rqk->rpoqk", f, f))
        cov_lin_full = corr * (m["ll"].reshape(R, P, O, P, O) - np.einsum("rpo,rqk->rpoqk", lin, lin))
        cov = np.einsum("rpoqo->rpq", cov_full) / O
        cov_lin = np.einsum("rpoqo->rpq", cov_lin_full) / O
        var_odd = m["odd_odd"].reshape(shp) - odd * odd
        cov_f_odd = m["f_odd"].reshape(shp) - f * odd
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = np.where(var_odd > 0, cov_f_odd / np.where(var_odd > 0, var_odd, 1.0), 0.0)
        out = {"mean": d + even, "mean_optimal": f - beta * odd, "mean_plain": f, "motion": d, "linearised": even, "linearised_plain": lin,
               "odd": odd, "cov": cov, "cov_linearised": cov_lin, "cov_motion": cov - cov_lin}
        if vector:
            out = {k: (v[..., 0] if not k.startswith("cov") else v) for k, v in out.items()}
        else:
            out.update(cov_outputs=cov_full, cov_linearised_outputs=cov_lin_full,
                       cov_motion_outputs=cov_full - cov_lin_full)
        return out

    t0 = time.perf_counter()
    sums = run_blocks(sample_block, samples, batches, min(block, samples), seed, workers=workers, progress=progress,
                      desc=f"training width {width}")
    values, errors = jackknife(sums, estimator)
    seconds = time.perf_counter() - t0
    estimates = {k: Estimate(k, values[k], errors[k], DESCRIPTIONS[k]) for k in DESCRIPTIONS if k in values}
    info = {"activation": act.name, "depth": int(depth), "width": int(width), "C_W": list(spec.C_W),
            "C_b": list(spec.C_b), "param": param, "loss": loss, "learning_rate": eta, "samples": samples,
            "batches": batches, "block": block, "workers": workers, "seconds": seconds,
            "networks_per_second": samples / seconds, "n_train": N, "n_test": P - N, "outputs": O,
            "seed": seed if isinstance(seed, (int, type(None))) else str(seed)}
    return TrainedEnsemble(estimates, steps, N, info)
