r"""Monte Carlo of residual MLPs at one input: the finite-width statistics of every layer, with standard errors.

The network of :mod:`ntk_theory.finite_width.residual` (PDLT appendix B): z(1) = W(1) x + b(1),
z(l+1) = xi z(l) + gamma [W(l+1) s(z(l)) + b(l+1)] for l = 1 .. L-1 (width n), readout
f = W(L+1) s(z(L)) + b(L+1); W(l) ~ N(0, C_W(l) / n_(l-1)), b(l) ~ N(0, C_b(l)).  Nothing here imports the
symbolic layer or the recursions: this judges them.

Sampling.  ``sampler="projected"`` (default): each weight matrix is applied once, to one vector, so
W(l+1) s(z(l)) + b(l+1) is exactly N(0, Ghat I_n) with Ghat = C_b + C_W |s(z(l))|^2 / n given the layer
(rotation invariance of the Gaussian rows), drawn as sqrt(Ghat) g, g ~ N(0, I_n): O(n) per layer instead of
O(n^2).  ``"dense"`` draws the full matrices (n^2 per layer: for checking the projection).

Estimators (per network: the means over the n neurons, over pairs i != j; then the means over networks;
jackknife standard errors over ``batches``, :mod:`ntk_theory.montecarlo.estimate`), hidden layers l = 1 .. L
and the readout (index L, last):

==============  ==============================================================================
``K[l]``        E[z_i^2]; readout: E[Ghat(L)] (= E[f^2], Rao-Blackwellised over the readout weights)
``V[l]``        n (E[z_i^2 z_j^2] - E[z_i^2]^2), i != j; readout: n Var(Ghat(L)) (= n Cov(f_i^2, f_j^2))
``T[l]``        n E[z_i^2 z_j], i != j (hidden layers only)
``kappa3[l]``   n E[z_i^3] (hidden layers only)
``kappa4[l]``   n (E[z_i^4] - 3 E[z_i^2]^2) (hidden layers only)
==============  ==============================================================================

The estimates are at the width n; their n -> infinity limits and 1/n coefficients come from fits over
several widths (:func:`ntk_theory.validation.fits.weighted_fit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import _checks
from ..reference.activations import numpy_activation
from .estimate import Estimate, EstimateTable, jackknife, run_blocks, run_settings

Array = np.ndarray

__all__ = ["RESIDUAL_ESTIMATES", "ResidualMonteCarlo", "sample_residual"]

RESIDUAL_ESTIMATES = {
    "K": "E[z_i^2] per layer (readout: E[Ghat(L)])",
    "V": "n Cov(z_i^2, z_j^2) per layer (readout: n Var(Ghat(L)))",
    "T": "n E[z_i^2 z_j] per hidden layer",
    "kappa3": "n E[z_i^3] per hidden layer",
    "kappa4": "n (E[z_i^4] - 3 E[z_i^2]^2) per hidden layer",
}


@dataclass
class ResidualMonteCarlo(EstimateTable):
    """Estimates (value, stderr) of :data:`RESIDUAL_ESTIMATES` at one width, set-up in ``info``."""

    estimates: dict
    info: dict = field(default_factory=dict)

    def symmetry(self, name: str) -> str:
        return "full"

    @property
    def width(self) -> int:
        return self.info["n"]

    def __repr__(self) -> str:
        i = self.info
        return f"<ResidualMonteCarlo n={i['n']} depth={i['depth']}, {i['samples']} networks: {', '.join(self.estimates)}>"


def _real_per_layer(name, value, count) -> Array:
    v = np.broadcast_to(np.asarray(value, dtype=float), (count,)) if np.ndim(value) == 0 else np.asarray(value, float)
    if v.shape != (count,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be a finite scalar or {count} finite values; got {value!r}")
    return v


def _branch(rng, s: Array, C_W: float, C_b: float, sampler: str) -> Array:
    """W s + b for S networks (s: (S, n)), W ~ N(0, C_W / n), b ~ N(0, C_b)."""
    S, n = s.shape
    if sampler == "dense":
        W = rng.standard_normal((S, n, n)) * np.sqrt(C_W / n)
        return np.einsum("sij,sj->si", W, s) + rng.standard_normal((S, n)) * np.sqrt(C_b)
    G = C_b + C_W * np.mean(s * s, axis=1, keepdims=True)
    return np.sqrt(G) * rng.standard_normal((S, n))


def sample_residual(activation, G0: float, depth: int, width: int, C_W=1.0, C_b=0.0, *, xi=1.0, gamma=1.0,
                    samples: int = 100_000, seed=0, batches: int = 40, sampler: str = "projected",
                    workers: int | None = 2, memory_mb: float = 32.0, progress: bool | None = None
                    ) -> ResidualMonteCarlo:
    """Estimate the statistics of the module docstring from ``samples`` residual networks of width ``width``.

    ``G0`` = x.x / n_0 of the input (the first layer sees the input only through it: z(1) ~ N(0, C_b + C_W G0)
    exactly); ``depth`` L hidden layers (layer 1 Dense, 2..L residual); ``C_W``, ``C_b`` scalars or L + 1
    values (readout last); ``xi``, ``gamma`` scalars or L - 1 values."""
    act = numpy_activation(activation)
    L = _checks.positive_int("depth", depth)
    n = _checks.positive_int("width", width)
    if n < 2:
        raise ValueError("width must be >= 2 (the i != j statistics need two neurons)")
    G0 = _checks.variance("G0", G0)
    C_W = np.array(_checks.per_layer("C_W", C_W, L + 1))
    C_b = np.array(_checks.per_layer("C_b", C_b, L + 1))
    xi = _real_per_layer("xi", xi, L - 1)
    gamma = _real_per_layer("gamma", gamma, L - 1)
    samples, batches = run_settings(samples, batches, "projected")
    if sampler not in ("projected", "dense"):
        raise ValueError(f"sampler must be 'projected' or 'dense'; got {sampler!r}")
    per_net = 8 * n * (8 + (n if sampler == "dense" else 0))
    block = int(np.clip(memory_mb * 2**20 // per_net, 1, 65536))
    pairs = n * (n - 1)

    def layer_features(z: Array, l: int, out: dict):
        z2 = z * z
        s1, s2 = z.sum(axis=1), z2.sum(axis=1)
        out[f"g{l}"] = s2 / n
        out[f"p{l}"] = (s2 * s2 - (z2 * z2).sum(axis=1)) / pairs
        out[f"t{l}"] = (s2 * s1 - (z2 * z).sum(axis=1)) / pairs
        out[f"c{l}"] = (z2 * z).sum(axis=1) / n
        out[f"q{l}"] = (z2 * z2).sum(axis=1) / n

    def sample_block(rng, S: int) -> dict:
        out = {}
        z = np.sqrt(C_b[0] + C_W[0] * G0) * rng.standard_normal((S, n))
        layer_features(z, 0, out)
        for l in range(1, L):
            z = xi[l - 1] * z + gamma[l - 1] * _branch(rng, act.value(z), C_W[l], C_b[l], sampler)
            layer_features(z, l, out)
        s = act.value(z)
        gh = C_b[L] + C_W[L] * np.mean(s * s, axis=1)
        out["gh"], out["gh2"] = gh, gh * gh
        return {k: v.reshape(S, 1) for k, v in out.items()}

    def estimator(m: dict, count: float) -> dict:
        g = np.array([m[f"g{l}"][0] for l in range(L)] + [m["gh"][0]])
        p = np.array([m[f"p{l}"][0] for l in range(L)] + [m["gh2"][0]])
        scale = np.array([n] * L + [n])
        return {
            "K": g,
            "V": scale * (p - g * g),
            "T": n * np.array([m[f"t{l}"][0] for l in range(L)]),
            "kappa3": n * np.array([m[f"c{l}"][0] for l in range(L)]),
            "kappa4": n * (np.array([m[f"q{l}"][0] for l in range(L)]) - 3 * g[:L] ** 2),
        }

    t0 = time.perf_counter()
    sums = run_blocks(sample_block, samples, batches, block, seed, workers=workers or 1, progress=progress,
                      desc=f"{samples} residual networks, n={n}")
    values, errors = jackknife(sums, estimator)
    est = {k: Estimate(k, values[k], errors[k], RESIDUAL_ESTIMATES[k]) for k in RESIDUAL_ESTIMATES}
    info = {"activation": act.name, "G0": G0, "depth": L, "n": n, "C_W": C_W.tolist(), "C_b": C_b.tolist(),
            "xi": xi.tolist(), "gamma": gamma.tolist(), "samples": samples, "batches": batches, "sampler": sampler,
            "seed": seed if isinstance(seed, (int, type(None))) else str(seed), "block": block,
            "seconds": time.perf_counter() - t0}
    return ResidualMonteCarlo(est, info)
