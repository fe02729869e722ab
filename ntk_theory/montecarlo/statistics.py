r"""Monte Carlo over independent finite networks: moments of outputs, NTK and kernels with errors.

For an MLP with L hidden layers and a scalar readout (PDLT conventions, :mod:`ntk_theory.conventions`)
at inputs X (N, n_0), :func:`sample_statistics` draws S independent networks in vectorised blocks
and estimates

==========================  ==============================================================
``output_second_moment``    E[f_a f_b]                                          (N, N)
``ntk_mean``                E[Theta_ab]                                         (N, N)
``ntk_covariance``          Cov[Theta_ab, Theta_cd]                             (N, N, N, N)
``kernel_mean``             E[Khat_ab],  Khat_ab = (1/n_L) sum_i z(L)_i;a z(L)_i;b   (N, N)
``kernel_covariance``       Cov[Khat_ab, Khat_cd]                               (N, N, N, N)
``output_cumulant``         kappa_abcd = E[f_a f_b f_c f_d] - E[f_a f_b] E[f_c f_d]
                            - E[f_a f_c] E[f_b f_d] - E[f_a f_d] E[f_b f_c]      (N, N, N, N)
==========================  ==============================================================

(E[f] = 0 by the symmetry W -> -W of the readout, so the cumulant uses raw moments.)

Standard errors: the S networks are split into B batches; each estimate is a smooth function of
batch-summed moments and its standard error is the delete-one-batch jackknife
(:mod:`ntk_theory.montecarlo.estimate`), which for plain means equals the batch-means standard error.
Runs are reproducible: block k draws from ``SeedSequence(seed).spawn(...)[k]`` and blocks are combined
in order, whatever the thread count.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from ..reference import ensemble
from ..reference.activations import numpy_activation
from .estimate import (
    Estimate,
    EstimateTable,
    jackknife,
    run_blocks,
    run_info,
    run_settings,
)

Array = np.ndarray

#: name -> (description, symmetry used when printing distinct entries)
ESTIMATES = {
    "output_second_moment": ("E[f_a f_b]", "pair"),
    "ntk_mean": ("E[Theta_ab]", "pair"),
    "ntk_covariance": ("Cov[Theta_ab, Theta_cd]", "pp"),
    "kernel_mean": ("E[Khat_ab] (last hidden layer)", "pair"),
    "kernel_covariance": ("Cov[Khat_ab, Khat_cd] (last hidden layer)", "pp"),
    "output_cumulant": ("kappa_abcd = 4th cumulant of the outputs", "full"),
}

FOURTH_ORDER_MAX_INPUTS = 16


@dataclass
class MonteCarloResult(EstimateTable):
    """Estimates from S networks, with the set-up that produced them."""

    estimates: dict
    X: Array
    info: dict = field(default_factory=dict)

    def symmetry(self, name: str) -> str:
        return ESTIMATES.get(name, ("", "full"))[1]

    # -------------------------------------------------------------- display
    def table(self, max_rows: int = 12) -> str:
        """A text table of the distinct entries of every estimate: value +- standard error."""
        info = self.info
        head = (f"Monte Carlo over {info.get('samples')} networks "
                f"({info.get('activation')}, widths {info.get('widths')}, C_W={info.get('C_W')}, "
                f"C_b={info.get('C_b')}, param={info.get('param')!r}, sampler={info.get('sampler')!r}, "
                f"{info.get('batches')} batches, seed={info.get('seed')}, {info.get('seconds', 0):.2f} s)")
        return "\n".join([head] + self.rows(max_rows=max_rows))

    def __repr__(self) -> str:
        names = ", ".join(self.estimates)
        return f"<MonteCarloResult: {self.info.get('samples')} networks, N={self.X.shape[0]}; {names}>"

    # -------------------------------------------------------------- saving
    def save(self, path) -> Path:
        """Write to ``.npz`` (arrays ``NAME`` and ``NAME_stderr``, plus ``X`` and ``info``) or ``.json``."""
        path = Path(path)
        if path.suffix == ".json":
            payload = {
                "info": self.info,
                "X": self.X.tolist(),
                "estimates": {
                    k: {"value": e.value.tolist(), "stderr": e.stderr.tolist(), "description": e.description}
                    for k, e in self.estimates.items()
                },
            }
            path.write_text(json.dumps(payload, indent=1))
        elif path.suffix == ".npz":
            arrays = {"X": self.X, "info": np.array(json.dumps(self.info))}
            for k, e in self.estimates.items():
                arrays[k] = e.value
                arrays[k + "_stderr"] = e.stderr
            np.savez(path, **arrays)
        else:
            raise ValueError(f"cannot save to {path}: use a .npz or .json file name")
        return path

    @classmethod
    def load(cls, path) -> MonteCarloResult:
        path = Path(path)
        if path.suffix == ".json":
            payload = json.loads(path.read_text())
            est = {
                k: Estimate(k, np.array(v["value"]), np.array(v["stderr"]), v.get("description", ""))
                for k, v in payload["estimates"].items()
            }
            return cls(est, np.array(payload["X"]), payload["info"])
        with np.load(path) as data:
            info = json.loads(str(data["info"]))
            names = [k for k in data.files if k not in ("X", "info") and not k.endswith("_stderr")]
            est = {k: Estimate(k, data[k], data[k + "_stderr"], ESTIMATES.get(k, ("",))[0]) for k in names}
            return cls(est, data["X"], info)


# ---------------------------------------------------------------------------- estimation
def _block_moments(out: ensemble.EnsembleOutputs) -> dict:
    """Per-network f f^T, Theta and Khat, flattened to (S, N^2)."""
    S, N = out.f.shape
    return {
        "ff": (out.f[:, :, None] * out.f[:, None, :]).reshape(S, N * N),
        "th": out.ntk.reshape(S, N * N),
        "k": out.kernel.reshape(S, N * N),
    }


def _estimators(means: dict, count: float, N: int, fourth_order: bool) -> dict:
    """The estimates as functions of the mean moments (used for the full sample and jackknife)."""
    ff = means["ff"].reshape(N, N)
    th = means["th"].reshape(N, N)
    k = means["k"].reshape(N, N)
    est = {"output_second_moment": ff, "ntk_mean": th, "kernel_mean": k}
    if fourth_order:
        unbias = count / (count - 1.0)
        est["ntk_covariance"] = (means["thth"].reshape(N, N, N, N) - np.multiply.outer(th, th)) * unbias
        est["kernel_covariance"] = (means["kk"].reshape(N, N, N, N) - np.multiply.outer(k, k)) * unbias
        pairings = (
            np.einsum("ab,cd->abcd", ff, ff) + np.einsum("ac,bd->abcd", ff, ff) + np.einsum("ad,bc->abcd", ff, ff)
        )
        est["output_cumulant"] = means["f4"].reshape(N, N, N, N) - pairings
    return est


def _block_size(spec: MLPSpec, N: int, sampler: str, memory_mb: float) -> int:
    """Networks per block so that one block's arrays stay within ``memory_mb``."""
    widest = max(spec.widths)
    if sampler == "dense":
        per_net = sum(a * b for a, b in zip(spec.widths[:-1], spec.widths[1:]))
    else:
        per_net = 0
    per_net += 6 * N * widest * spec.n_layers + 4 * N * N * N * N
    per_net *= 8 * 2  # float64, temporaries
    return int(np.clip(memory_mb * 2**20 // per_net, 1, 2048))


def sample_statistics(
    X,
    activation="relu",
    depth: int = 3,
    width=256,
    *,
    C_W=2.0,
    C_b=0.0,
    param: str = "ntk",
    samples: int = 10_000,
    seed=0,
    batches: int = 32,
    sampler: str = "projected",
    fourth_order: bool | None = None,
    workers: int | None = None,
    memory_mb: float = 64.0,
    progress: bool | None = None,
) -> MonteCarloResult:
    """Estimate the moments listed in the module docstring from ``samples`` independent networks.

    The network: ``depth`` hidden layers of ``width`` (an int or one per hidden layer), activation
    ``activation`` (a name, a (value, derivative) pair or an activation object), variances C_W,
    C_b (scalars or one per layer, readout included), NTK learning-rate factors of ``param``, a
    scalar readout.  ``sampler="projected"`` (default) draws each weight matrix only along the
    directions the forward and reverse passes use, exactly in distribution
    (:mod:`ntk_theory.reference.ensemble`); ``"dense"`` draws full matrices.
    ``fourth_order`` (default: N <= 16) includes the (N, N, N, N) covariances and cumulant.
    """
    X = _checks.inputs(X)
    N = X.shape[0]
    spec = MLPSpec.build(X.shape[1], depth, width, 1, C_W=C_W, C_b=C_b, param=param)
    act = numpy_activation(activation)
    samples, batches = run_settings(samples, batches, sampler)
    if fourth_order is None:
        fourth_order = N <= FOURTH_ORDER_MAX_INPUTS
    workers = workers or min(os.cpu_count() or 1, 8)

    block = _block_size(spec, N, sampler, memory_mb)

    def sample_block(rng, S: int) -> dict:
        return _block_moments(ensemble.sample(X, spec, act, S, rng, sampler))

    products = [("f4", "ff", "ff"), ("thth", "th", "th"), ("kk", "k", "k")] if fourth_order else []
    t0 = time.perf_counter()
    hidden = sorted(set(spec.widths[1:-1]))
    desc = f"n={hidden[0] if len(hidden) == 1 else list(spec.widths[1:-1])}: {samples} networks"
    sums = run_blocks(sample_block, samples, batches, block, seed, workers=workers, progress=progress, desc=desc,
                      products=products)
    seconds = time.perf_counter() - t0

    values, errors = jackknife(sums, lambda means, count: _estimators(means, count, N, fourth_order))
    estimates = {
        name: Estimate(name, values[name], errors[name], ESTIMATES[name][0]) for name in ESTIMATES if name in values
    }
    info = run_info(act, spec, samples, seed, batches, sampler, block, workers, seconds)
    return MonteCarloResult(estimates, X, info)
