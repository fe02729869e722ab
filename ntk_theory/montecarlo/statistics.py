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
from pathlib import Path

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from ..docstrings import filled
from ..reference import ensemble
from ..reference.activations import numpy_activation
from .estimate import (
    DOC_SECTIONS,
    Estimate,
    NetworkEstimates,
    jackknife,
    run_blocks,
    run_info,
    run_settings,
)

Array = np.ndarray

# a data table laid out like finite_width.QUANTITIES and dntk.DNTK_QUANTITIES: names and descriptions, not shared logic
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


class MonteCarloResult(NetworkEstimates):
    """Estimates from S networks, with the set-up that produced them.

    Parameters
    ----------
    estimates : dict
        {name: :class:`~ntk_theory.montecarlo.Estimate`}, names of :data:`ESTIMATES`.
    X : ndarray
        Inputs (N, n_0).
    info : dict
        The run's set-up.

    Examples
    --------
    :meth:`save` and :meth:`load` round-trip:

    >>> import numpy as np, tempfile, pathlib
    >>> mc = sample_statistics(np.array([[1.0, 0.0]]), "relu", depth=1, width=8, samples=64, batches=4,
    ...                        workers=1, progress=False)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     back = [MonteCarloResult.load(mc.save(pathlib.Path(d) / f"mc.{ext}")) for ext in ("npz", "json")]
    >>> all(np.array_equal(b["ntk_mean"].value, mc["ntk_mean"].value) for b in back)
    True
    """

    @filled(**DOC_SECTIONS)
    def symmetry(self, name: str) -> str:
        """The symmetry of estimate ``name`` (:data:`ESTIMATES`).

        %(symmetry)s
        See :class:`MonteCarloResult`.
        """
        return ESTIMATES.get(name, ("", "full"))[1]

    # -------------------------------------------------------------- display
    def heading(self) -> list:
        """The set-up line above :meth:`~ntk_theory.montecarlo.estimate.NetworkEstimates.table`'s estimates.

        Returns
        -------
        list of str
        """
        info = self.info
        return [f"Monte Carlo over {info.get('samples')} networks "
                f"({info.get('activation')}, widths {info.get('widths')}, C_W={info.get('C_W')}, "
                f"C_b={info.get('C_b')}, param={info.get('param')!r}, sampler={info.get('sampler')!r}, "
                f"{info.get('batches')} batches, seed={info.get('seed')}, {info.get('seconds', 0):.2f} s)"]

    def __repr__(self) -> str:
        names = ", ".join(self.estimates)
        return f"<MonteCarloResult: {self.info.get('samples')} networks, N={self.X.shape[0]}; {names}>"

    # -------------------------------------------------------------- saving
    def save(self, path) -> Path:
        """Write to ``.npz`` (arrays ``NAME`` and ``NAME_stderr``, plus ``X`` and ``info``) or ``.json``.

        Parameters
        ----------
        path : str or path-like
            Ending in ``.npz`` or ``.json``.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        ValueError
            For another suffix.

        Examples
        --------
        See :class:`MonteCarloResult`.
        """
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
        """Read a result written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        MonteCarloResult

        Examples
        --------
        See :class:`MonteCarloResult`.
        """
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

    Parameters
    ----------
    X : array_like
        Inputs (N, n_0).
    activation : str, tuple or NumpyActivation, default 'relu'
        A name, a (value, derivative) pair or an activation object.
    depth : int, default 3
        The number of hidden layers.
    width : int or sequence of int, default 256
        The hidden width, or one per hidden layer.
    C_W, C_b : float or sequence of float, default 2.0 and 0.0
        Weight and bias variances, scalars or one per layer (readout included).
    param : {'ntk', 'standard', 'unit'}, default 'ntk'
        The NTK's learning-rate factors.
    samples : int, default 10000
        The number of networks S.
    seed : int, default 0
        Block k draws from ``SeedSequence(seed).spawn(...)[k]``: results do not depend on ``workers``.
    batches : int, default 32
        The number of batches B of the jackknife standard errors.
    sampler : {'projected', 'dense'}, default 'projected'
        "projected" draws each weight matrix only along the directions the forward and reverse passes
        use, exactly in distribution (:mod:`ntk_theory.reference.ensemble`); "dense" draws full matrices.
    fourth_order : bool or None, default None
        Include the (N, N, N, N) covariances and cumulant (None: when N <= 16).
    workers : int or None, default None
        Threads (None: the CPU count, at most 8).
    memory_mb : float, default 64.0
        The memory budget of one block of networks.
    progress : bool or None, default None
        A progress bar (None: on a terminal, for long runs).

    Returns
    -------
    MonteCarloResult
        ``estimates[name]`` an :class:`~ntk_theory.montecarlo.estimate.Estimate` (``value``, ``stderr``) per
        moment of the module docstring; ``info`` the set-up and run time.

    Raises
    ------
    ValueError
        If the inputs, widths, variances, parameterization, activation, sample or batch counts, or sampler are
        invalid.

    Notes
    -----
    Each estimate is a smooth function of batch-summed moments; its standard error is the delete-one-batch
    jackknife over the B batches (for plain means, the batch-means standard error).  The covariances use
    the unbiased factor S/(S-1); the cumulant subtracts the three pairings of E[f f] (E[f] = 0 by symmetry).

    Examples
    --------
    ReLU at criticality (C_W = 2, C_b = 0) keeps E[f^2] = C_W x.x / n_0 = 1 exactly at any width, since
    E[relu(z)^2] = Var(z)/2; the estimate agrees within its standard error (f^2 is heavy-tailed at small
    width, so its jackknife error is reliable only with many networks):

    >>> import numpy as np
    >>> from ntk_theory.montecarlo.statistics import sample_statistics
    >>> mc = sample_statistics(np.array([[1.0, 0.0]]), "relu", depth=2, width=8, samples=40000, batches=20,
    ...                        workers=1, progress=False)
    >>> e = mc.estimates["output_second_moment"]
    >>> bool(abs(e.value[0, 0] - 1.0) < 4 * e.stderr[0, 0])
    True
    >>> sorted(mc.estimates)
    ['kernel_covariance', 'kernel_mean', 'ntk_covariance', 'ntk_mean', 'output_cumulant', 'output_second_moment']
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
