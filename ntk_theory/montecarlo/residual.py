r"""Monte Carlo of residual MLPs: the finite-width statistics of every layer, with standard errors, at one input
(:func:`sample_residual`, :func:`sample_residual_ntk`) and at several inputs (:func:`sample_residual_tensors`).

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
``M3[l]``       n E[z_i^2 z_j], i != j (hidden layers only)
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

__all__ = ["RESIDUAL_ESTIMATES", "RESIDUAL_NTK_ESTIMATES", "RESIDUAL_TENSOR_ESTIMATES", "ResidualMonteCarlo",
           "RESIDUAL_NTK_TENSOR_ESTIMATES", "residual_ntk_rows", "sample_residual", "sample_residual_ntk",
           "sample_residual_ntk_tensors", "sample_residual_tensors"]

RESIDUAL_ESTIMATES = {
    "K": "E[z_i^2] per layer (readout: E[Ghat(L)])",
    "V": "n Cov(z_i^2, z_j^2) per layer (readout: n Var(Ghat(L)))",
    "M3": "n E[z_i^2 z_j] per hidden layer",
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
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite scalar or {count} finite values; got {value!r}") from None
    v = np.broadcast_to(v, (count,)) if v.ndim == 0 else v
    if v.shape != (count,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be a finite scalar or {count} finite values; got {value!r}")
    return v


def _block_size(memory_mb, per_net: float, cap: int) -> int:
    """Networks per block: as many as ``memory_mb`` MiB hold at ``per_net`` bytes each, 1 to ``cap``."""
    budget = _checks.positive("memory_mb", memory_mb)
    return int(np.clip(budget * 2**20 // per_net, 1, cap))


def _layer_settings(L: int, C_W, C_b, xi, gamma) -> tuple:
    """(C_W, C_b, xi, gamma) as arrays of L + 1, L + 1, L - 1 and L - 1 checked values (scalars repeated)."""
    C_W = np.array(_checks.per_layer("C_W", C_W, L + 1))
    C_b = np.array(_checks.per_layer("C_b", C_b, L + 1))
    return C_W, C_b, _real_per_layer("xi", xi, L - 1), _real_per_layer("gamma", gamma, L - 1)


def _lambdas(param: str, C_W: Array, C_b: Array) -> tuple:
    """(lambda_b, lambda_W) per layer of ``param``: 'ntk' (C_b, C_W), 'unit' (1, 1); ValueError otherwise."""
    if param == "ntk":
        return C_b.copy(), C_W.copy()
    if param == "unit":
        return np.ones(len(C_b)), np.ones(len(C_W))
    raise ValueError(f"param must be 'ntk' or 'unit' (the 1/n expansion of 'standard' mixes orders); got {param!r}")


def _neurons(neurons, n: int) -> int:
    """The number of observed neurons, checked: an integer from 2 (the i != j statistics) to the width n."""
    k = _checks.positive_int("neurons", neurons)
    if k < 2 or k > n:
        raise ValueError(f"neurons must be between 2 and the width {n} (the i != j statistics need two); got {k}")
    return k


def _layer_info(L: int, n: int, C_W: Array, C_b: Array, xi: Array, gamma: Array) -> dict:
    """The network's settings as they stand in a result's ``info`` (lists, JSON-ready)."""
    return {"depth": L, "n": n, "C_W": C_W.tolist(), "C_b": C_b.tolist(), "xi": xi.tolist(), "gamma": gamma.tolist()}


def _estimate(sample_block, estimator, names: dict, settings: dict, sampler: str, *, samples: int, batches: int,
              block: int, seed, workers, progress, desc: str) -> "ResidualMonteCarlo":
    """Runs ``sample_block`` over ``samples`` networks (:func:`.estimate.run_blocks`), the jackknife of
    ``estimator`` over ``batches`` (:func:`.estimate.jackknife`), one :class:`Estimate` per key of ``names``;
    ``info``: ``settings``, then samples, batches, sampler, seed, block and the wall-clock seconds."""
    t0 = time.perf_counter()
    sums = run_blocks(sample_block, samples, batches, block, seed, workers=workers or 1, progress=progress, desc=desc)
    values, errors = jackknife(sums, estimator)
    est = {k: Estimate(k, values[k], errors[k], names[k]) for k in names}
    info = {**settings, "samples": samples, "batches": batches, "sampler": sampler,
            "seed": seed if isinstance(seed, (int, type(None))) else str(seed), "block": block,
            "seconds": time.perf_counter() - t0}
    return ResidualMonteCarlo(est, info)


def _branch(rng, s: Array, C_W: float, C_b: float, sampler: str) -> Array:
    """W s + b for S networks (s: (S, n)), W ~ N(0, C_W / n), b ~ N(0, C_b)."""
    S, n = s.shape
    if sampler == "dense":
        W = rng.standard_normal((S, n, n)) * np.sqrt(C_W / n)
        return np.einsum("sij,sj->si", W, s) + rng.standard_normal((S, n)) * np.sqrt(C_b)
    G = C_b + C_W * np.mean(s * s, axis=1, keepdims=True)
    return np.sqrt(G) * rng.standard_normal((S, n))


def sample_residual(activation, G0: float, depth: int, width: int, *, C_W=1.0, C_b=0.0, xi=1.0, gamma=1.0,
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
    C_W, C_b, xi, gamma = _layer_settings(L, C_W, C_b, xi, gamma)
    samples, batches = run_settings(samples, batches, "projected")
    if sampler not in ("projected", "dense"):
        raise ValueError(f"sampler must be 'projected' or 'dense'; got {sampler!r}")
    per_net = 8 * n * (8 + (n if sampler == "dense" else 0))
    block = _block_size(memory_mb, per_net, 65536)
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
            "M3": n * np.array([m[f"t{l}"][0] for l in range(L)]),
            "kappa3": n * np.array([m[f"c{l}"][0] for l in range(L)]),
            "kappa4": n * (np.array([m[f"q{l}"][0] for l in range(L)]) - 3 * g[:L] ** 2),
        }

    settings = {"activation": act.name, "G0": G0, **_layer_info(L, n, C_W, C_b, xi, gamma)}
    return _estimate(sample_block, estimator, RESIDUAL_ESTIMATES, settings, sampler, samples=samples, batches=batches,
                     block=block, seed=seed, workers=workers, progress=progress,
                     desc=f"{samples} residual networks, n={n}")


# a data table: RESIDUAL_NTK_TENSOR_ESTIMATES has the same keys on purpose (its statistics at N inputs)
RESIDUAL_NTK_ESTIMATES = {
    "K": "E[z_i^2] per layer (readout included)",
    "Th": "E[Theta_ii] per layer",
    "A": "n Cov(Theta_ii, Theta_jj), i != j",
    "B": "n E[Theta_ij^2], i != j",
    "D": "n Cov(Theta_ii, z_j^2), i != j",
    "F": "n E[Theta_ij z_i z_j], i != j",
    "ntk_variance": "n Var(Theta_ii) (= A + 2B at leading order)",
    "ntk_kernel_covariance": "n Cov(Theta_ii, z_i^2) (= D + 2F at leading order)",
    "V": "n Cov(z_i^2, z_j^2), i != j (over the observed neurons)",
}


def sample_residual_ntk(activation, G0: float, depth: int, width: int, *, C_W=1.0, C_b=0.0, xi=1.0, gamma=1.0,
                        param: str = "ntk", neurons: int = 4, samples: int = 20_000, seed=0, batches: int = 40,
                        workers: int | None = 2, memory_mb: float = 32.0, progress: bool | None = None
                        ) -> ResidualMonteCarlo:
    r"""The NTK of ``neurons`` observed neurons of every hidden layer and of the readout (width ``width``
    readout, as the hidden layers), from ``samples`` residual networks with dense weight matrices.

    NTK (one input x, G0 = x.x / n_0): Theta_ij(l) = sum over the parameters theta of layers m <= l of
    lambda dz_i(l)/dtheta dz_j(l)/dtheta with lambda_b for biases and lambda_W / n_(m-1) for weights, i.e.

        Theta(l) = sum_(m <= l) gamma_m^2 H(m) J(l, m) J(l, m)^T,    H(m) = lambda_b + lambda_W |s(z(m-1))|^2 / n

    (H(1) = lambda_b + lambda_W G0, gamma_1 = 1, the readout's gamma 1), with the Jacobians J(l, m) = dz(l)/dz(m)
    of the observed rows backpropagated, J(l, m-1) = J(l, m) (xi_m I + gamma_m W(m) diag(s'(z(m-1)))) (the
    readout: J(L+1, L) = W(L+1) diag(s'(z(L)))).  Layer 1 enters through z(1) ~ N(0, C_b + C_W G0) exactly and
    H(1) (the derivatives of z(1) do not involve W(1)).  Cost O(neurons L^2 n^2) per network plus the n^2
    Gaussian draws of each weight matrix.  (lambda_b, lambda_W) of ``param`` ('ntk': (C_b, C_W); 'unit': (1, 1)).

    Estimates (:data:`RESIDUAL_NTK_ESTIMATES`; per network the means over the observed neurons i and ordered
    pairs i != j among them, then over networks; jackknife standard errors over ``batches``), arrays over the
    layers 1 .. L and the readout (last)."""
    act = numpy_activation(activation)
    L = _checks.positive_int("depth", depth)
    n = _checks.positive_int("width", width)
    k = _neurons(neurons, n)
    G0 = _checks.variance("G0", G0)
    C_W, C_b, xi, gamma = _layer_settings(L, C_W, C_b, xi, gamma)
    lam_b, lam_W = _lambdas(param, C_W, C_b)
    samples, batches = run_settings(samples, batches, "projected")
    per_net = 8 * (n * n * (L + 1) + 4 * n * (L + 2) + k * n * (L + 1))
    block = _block_size(memory_mb, per_net, 4096)
    off = ~np.eye(k, dtype=bool)
    kp = k * (k - 1)
    xs = np.concatenate([[0.0], xi])  # xs[m - 1]: xi of layer m (m >= 2)
    gs = np.concatenate([[1.0], gamma, [1.0]])  # gs[m - 1]: branch factor of layer m (readout last)

    def features(z: Array, Th: Array, l: int, out: dict):
        zs = z[:, :k]
        z2 = zs * zs
        d = np.diagonal(Th, axis1=1, axis2=2)
        out[f"g{l}"] = z2.mean(axis=1)
        out[f"zz{l}"] = (z2.sum(1) ** 2 - (z2 * z2).sum(1)) / kp
        out[f"t{l}"] = d.mean(axis=1)
        out[f"tt{l}"] = (d.sum(1) ** 2 - (d * d).sum(1)) / kp
        out[f"t2{l}"] = (d * d).mean(axis=1)
        out[f"b{l}"] = (Th * Th * off).sum(axis=(1, 2)) / kp
        out[f"d{l}"] = (d.sum(1) * z2.sum(1) - (d * z2).sum(1)) / kp
        out[f"ds{l}"] = (d * z2).mean(axis=1)
        out[f"f{l}"] = (Th * zs[:, :, None] * zs[:, None, :] * off).sum(axis=(1, 2)) / kp

    def sample_block(rng, S: int) -> dict:
        out = {}
        zs = [np.sqrt(C_b[0] + C_W[0] * G0) * rng.standard_normal((S, n))]
        H = [np.full(S, lam_b[0] + lam_W[0] * G0)]
        Ws, dss = [None], []
        for m in range(2, L + 2):  # layer m from layer m-1
            z = zs[-1]
            s = act.value(z)
            dss.append(act.derivative(z))
            H.append(lam_b[m - 1] + lam_W[m - 1] * np.mean(s * s, axis=1))
            rows = n if m <= L else k
            W = rng.standard_normal((S, rows, n)) * np.sqrt(C_W[m - 1] / n)
            Ws.append(W)
            branch = np.einsum("sij,sj->si", W, s) + np.sqrt(C_b[m - 1]) * rng.standard_normal((S, rows))
            zs.append(xs[m - 1] * z[:, :rows] + gs[m - 1] * branch if m <= L else branch)
        for l, Th in enumerate(residual_ntk_rows(Ws, dss, H, xs, gs, k)):
            features(zs[l], Th, l, out)
        return {key: v.reshape(S, 1) for key, v in out.items()}

    def estimator(mm: dict, count: float) -> dict:
        get = lambda p: np.array([mm[f"{p}{l}"][0] for l in range(L + 1)])
        g, t = get("g"), get("t")
        return {
            "K": g, "Th": t,
            "A": n * (get("tt") - t * t), "B": n * get("b"),
            "D": n * (get("d") - t * g), "F": n * get("f"),
            "ntk_variance": n * (get("t2") - t * t), "ntk_kernel_covariance": n * (get("ds") - t * g),
            "V": n * (get("zz") - g * g),
        }

    settings = {"activation": act.name, "G0": G0, **_layer_info(L, n, C_W, C_b, xi, gamma), "param": param,
                "neurons": k}
    return _estimate(sample_block, estimator, RESIDUAL_NTK_ESTIMATES, settings, "dense", samples=samples,
                     batches=batches, block=block, seed=seed, workers=workers, progress=progress,
                     desc=f"{samples} residual networks (NTK), n={n}")


def residual_ntk_rows(Ws: list, dss: list, H: list, xs, gs, k: int) -> list:
    r"""The NTK block Theta(l)[:k, :k] of the first k neurons of every layer l = 1 .. L+1 (readout last) of S
    residual networks, by backpropagating their Jacobian rows (docstring of :func:`sample_residual_ntk`).

    ``Ws[m - 1]`` = W(m), (S, n, n) for m = 2..L and (S, >= k, n) for the readout m = L + 1 (``Ws[0]`` unused);
    ``dss[m - 1]`` = s'(z(m)) (S, n), m = 1..L; ``H[m - 1]`` = H(m) (S,), m = 1..L+1; ``xs[m - 1]``, ``gs[m - 1]``
    xi_m and gamma_m of layer m (gs[0] = 1 for layer 1, the readout's 1 last).  Returns L + 1 arrays (S, k, k)."""
    L = len(Ws) - 1
    S, n = dss[0].shape
    out = []
    for l in range(1, L + 2):
        if l <= L:
            Jm = np.array(np.broadcast_to(np.eye(k, n), (S, k, n)))
            Th = (H[l - 1] * gs[l - 1] ** 2)[:, None, None] * np.eye(k)
            top = l
        else:  # readout: J(L+1, L) = W(L+1) diag(s'(z(L)))
            Jm = Ws[L][:, :k] * dss[L - 1][:, None, :]
            Th = H[L][:, None, None] * np.eye(k) + (H[L - 1] * gs[L - 1] ** 2)[:, None, None] * (Jm @ Jm.transpose(0, 2, 1))
            top = L
        for m in range(top, 1, -1):  # J(l, m-1) = J(l, m) (xi_m I + gamma_m W(m) diag(s'(z(m-1))))
            Jm = xs[m - 1] * Jm + gs[m - 1] * (Jm @ Ws[m - 1]) * dss[m - 2][:, None, :]
            Th = Th + (H[m - 2] * gs[m - 2] ** 2)[:, None, None] * (Jm @ Jm.transpose(0, 2, 1))
        out.append(Th)
    return out


RESIDUAL_TENSOR_ESTIMATES = {
    "K": "E[z_ia z_ib] per layer (readout: E[Ghat_ab(L)]), (L + 1, N, N)",
    "V": "n (E[z_ia z_ib z_jc z_jd] - E[z_ia z_ib] E[z_jc z_jd]), i != j, per layer (readout: n Cov(Ghat_ab, "
         "Ghat_cd)), (L + 1, N, N, N, N)",
    "M3": "n E[z_ia z_ib z_jc], i != j, per hidden layer, (L, N, N, N)",
}


def _psd_root(G: Array) -> Array:
    """R with R R^T = G for a batch (S, N, N) of symmetric positive semi-definite matrices (eigenvalues clipped
    at 0: exact for singular G, e.g. equal inputs or N > n)."""
    lam, U = np.linalg.eigh(G)
    return U * np.sqrt(np.maximum(lam, 0.0))[:, None, :]


def sample_residual_tensors(activation, X, depth: int, width: int, *, C_W=1.0, C_b=0.0, xi=1.0, gamma=1.0,
                            samples: int = 20_000, seed=0, batches: int = 40, workers: int | None = 2,
                            memory_mb: float = 32.0, progress: bool | None = None) -> ResidualMonteCarlo:
    r"""The several-input statistics of :data:`RESIDUAL_TENSOR_ESTIMATES` at inputs X (N, d), from ``samples``
    residual networks of width ``width`` (the network of the module docstring; ``C_W``, ``C_b`` scalars or
    L + 1 values, ``xi``, ``gamma`` scalars or L - 1 values).

    Sampling (projected, exact): z(1) has iid rows N(0, C_b + C_W X X^T / d); given layer l the branch
    W(l+1) s(z(l)) + b(l+1) applied to the N inputs has iid rows N(0, Ghat), Ghat = C_b + C_W s^T s / n (N, N)
    (rotation invariance of the Gaussian rows of W), drawn as g R^T with R R^T = Ghat: O(n N^2) per layer.
    Per network the means over neurons and over ordered pairs i != j, then over networks; jackknife standard
    errors over ``batches``.  One input (N = 1) is the statistics ``K``, ``V``, ``M3`` of :func:`sample_residual`."""
    act = numpy_activation(activation)
    L = _checks.positive_int("depth", depth)
    n = _checks.positive_int("width", width)
    if n < 2:
        raise ValueError("width must be >= 2 (the i != j statistics need two neurons)")
    X = _checks.inputs(X, "X")
    N, d = X.shape
    C_W, C_b, xi, gamma = _layer_settings(L, C_W, C_b, xi, gamma)
    samples, batches = run_settings(samples, batches, "projected")
    per_net = 8 * (4 * n * N + 2 * N**4 * (L + 1) + N**3 * L)
    block = _block_size(memory_mb, per_net, 65536)
    pairs = n * (n - 1)
    R1 = _psd_root((C_b[0] + C_W[0] * (X @ X.T) / d)[None])[0]

    def layer_features(z: Array, l: int, out: dict):
        S = z.shape[0]
        P = z[:, :, :, None] * z[:, :, None, :]                       # (S, n, N, N)
        sP, sz = P.sum(axis=1), z.sum(axis=1)
        out[f"g{l}"] = (sP / n).reshape(S, -1)
        pp = (np.einsum("sab,scd->sabcd", sP, sP) - np.einsum("siab,sicd->sabcd", P, P)) / pairs
        out[f"p{l}"] = pp.reshape(S, -1)
        tt = (np.einsum("sab,sc->sabc", sP, sz) - np.einsum("siab,sic->sabc", P, z)) / pairs
        out[f"t{l}"] = tt.reshape(S, -1)

    def sample_block(rng, S: int) -> dict:
        out = {}
        z = rng.standard_normal((S, n, N)) @ R1.T
        layer_features(z, 0, out)
        for l in range(1, L + 1):
            s = act.value(z)
            G = C_b[l] + C_W[l] * np.einsum("sia,sib->sab", s, s) / n
            if l == L:
                out["gh"] = G.reshape(S, -1)
                out["gh2"] = np.einsum("sab,scd->sabcd", G, G).reshape(S, -1)
                break
            branch = np.einsum("sic,sac->sia", rng.standard_normal((S, n, N)), _psd_root(G))
            z = xi[l - 1] * z + gamma[l - 1] * branch
            layer_features(z, l, out)
        return out

    def estimator(m: dict, count: float) -> dict:
        g = np.stack([m[f"g{l}"].reshape(N, N) for l in range(L)] + [m["gh"].reshape(N, N)])
        p = np.stack([m[f"p{l}"].reshape((N,) * 4) for l in range(L)] + [m["gh2"].reshape((N,) * 4)])
        return {
            "K": g,
            "V": n * (p - np.einsum("lab,lcd->labcd", g, g)),
            "M3": n * np.stack([m[f"t{l}"].reshape((N,) * 3) for l in range(L)]),
        }

    settings = {"activation": act.name, "X": X.tolist(), **_layer_info(L, n, C_W, C_b, xi, gamma)}
    return _estimate(sample_block, estimator, RESIDUAL_TENSOR_ESTIMATES, settings, "projected", samples=samples,
                     batches=batches, block=block, seed=seed, workers=workers, progress=progress,
                     desc=f"{samples} residual networks at {N} inputs, n={n}")


# a data table: the keys of RESIDUAL_NTK_ESTIMATES on purpose, each statistic at N inputs
RESIDUAL_NTK_TENSOR_ESTIMATES = {
    "K": "E[z_ia z_ib] per layer (readout included), (L + 1, N, N)",
    "Th": "E[Theta_ii;ab] per layer, (L + 1, N, N)",
    "A": "n Cov(Theta_ii;ab, Theta_jj;cd), i != j, (L + 1, N, N, N, N)",
    "B": "n E[Theta_ij;pr Theta_ij;qs] at [p, q, r, s], i != j, (L + 1, N, N, N, N)",
    "D": "n Cov(Theta_ii;ab, z_jc z_jd), i != j, (L + 1, N, N, N, N)",
    "F": "n E[Theta_ij;pr z_iq z_js] at [p, q, r, s], i != j, (L + 1, N, N, N, N)",
    "V": "n Cov(z_ia z_ib, z_jc z_jd), i != j (over the observed neurons), (L + 1, N, N, N, N)",
}


def sample_residual_ntk_tensors(activation, X, depth: int, width: int, *, C_W=1.0, C_b=0.0, xi=1.0, gamma=1.0,
                                param: str = "ntk", neurons: int = 4, samples: int = 20_000, seed=0,
                                batches: int = 40, workers: int | None = 2, memory_mb: float = 32.0,
                                progress: bool | None = None) -> ResidualMonteCarlo:
    r"""The several-input NTK statistics of :data:`RESIDUAL_NTK_TENSOR_ESTIMATES` at inputs X (N, d) of ``neurons``
    observed neurons of every hidden layer and of the readout, from ``samples`` residual networks of width
    ``width`` with dense weight matrices (the network of the module docstring).

    NTK: Theta_ij;ab(l) = sum_(m <= l) gamma_m^2 H(m)_ab J_a(l, m) J_b(l, m)^T with H(m)_ab = lambda_b + lambda_W
    s(z_a(m-1)) . s(z_b(m-1)) / n (H(1)_ab = lambda_b + lambda_W x_a . x_b / n_0) and the Jacobian rows
    J_a(l, m) = dz_a(l)/dz_a(m) of the observed neurons backpropagated at each input, J_a(l, m-1) = J_a(l, m)
    (xi_m I + gamma_m W(m) diag(s'(z_a(m-1)))) (readout J(L+1, L) = W(L+1) diag(s'(z(L)))), as in
    :func:`sample_residual_ntk`.  One input (N = 1) is that function's statistics.  Per network the means over
    the observed neurons and ordered pairs i != j among them, then over networks; jackknife standard errors over
    ``batches``."""
    act = numpy_activation(activation)
    L = _checks.positive_int("depth", depth)
    n = _checks.positive_int("width", width)
    k = _neurons(neurons, n)
    X = _checks.inputs(X, "X")
    N, d = X.shape
    C_W, C_b, xi, gamma = _layer_settings(L, C_W, C_b, xi, gamma)
    lam_b, lam_W = _lambdas(param, C_W, C_b)
    samples, batches = run_settings(samples, batches, "projected")
    per_net = 8 * (n * n * (L + 1) + 4 * n * N * (L + 2) + 2 * k * n * N * (L + 1) + 8 * N**4 * (L + 1))
    block = _block_size(memory_mb, per_net, 4096)
    off = ~np.eye(k, dtype=bool)
    kp = k * (k - 1)
    xs = np.concatenate([[0.0], xi])
    gs = np.concatenate([[1.0], gamma, [1.0]])
    G0 = X @ X.T / d
    R1 = _psd_root((C_b[0] + C_W[0] * G0)[None])[0]

    def features(z: Array, Th: Array, l: int, out: dict):
        S = z.shape[0]
        zs = z[:, :k]                                                   # (S, k, N)
        P = zs[:, :, :, None] * zs[:, :, None, :]                      # (S, k, N, N)
        T = np.einsum("siiab->siab", Th)                                # Theta_ii;ab (S, k, N, N)
        sP, sT = P.sum(1), T.sum(1)
        pair = lambda X1, X2, sX1, sX2: (np.einsum("sab,scd->sabcd", sX1, sX2)
                                         - np.einsum("siab,sicd->sabcd", X1, X2)) / kp
        out[f"g{l}"] = (sP / k).reshape(S, -1)
        out[f"t{l}"] = (sT / k).reshape(S, -1)
        out[f"zz{l}"] = pair(P, P, sP, sP).reshape(S, -1)
        out[f"tt{l}"] = pair(T, T, sT, sT).reshape(S, -1)
        out[f"d{l}"] = pair(T, P, sT, sP).reshape(S, -1)
        out[f"b{l}"] = (np.einsum("xijpr,xijqs,ij->xpqrs", Th, Th, off) / kp).reshape(S, -1)
        out[f"f{l}"] = (np.einsum("xijpr,xiq,xjs,ij->xpqrs", Th, zs, zs, off) / kp).reshape(S, -1)

    def sample_block(rng, S: int) -> dict:
        out = {}
        zs = [rng.standard_normal((S, n, N)) @ R1.T]
        H = [np.broadcast_to(lam_b[0] + lam_W[0] * G0, (S, N, N))]
        Ws, dss = [None], []
        for m in range(2, L + 2):
            z = zs[-1]
            s = act.value(z)
            dss.append(act.derivative(z))
            H.append(lam_b[m - 1] + lam_W[m - 1] * np.einsum("sia,sib->sab", s, s) / n)
            rows = n if m <= L else k
            W = rng.standard_normal((S, rows, n)) * np.sqrt(C_W[m - 1] / n)
            Ws.append(W)
            branch = np.einsum("sij,sja->sia", W, s) + np.sqrt(C_b[m - 1]) * rng.standard_normal((S, rows, 1))
            zs.append(xs[m - 1] * z[:, :rows] + gs[m - 1] * branch if m <= L else branch)
        for l in range(1, L + 2):
            if l <= L:
                Jm = np.array(np.broadcast_to(np.eye(k, n)[None, :, :, None], (S, k, n, N)))   # (S, k, n, N)
                Th = np.einsum("sab,ij->sijab", H[l - 1] * gs[l - 1] ** 2, np.eye(k))
                top = l
            else:
                Jm = Ws[L][:, :k, :, None] * dss[L - 1][:, None, :, :]
                Th = (np.einsum("sab,ij->sijab", H[L], np.eye(k))
                      + np.einsum("sab,sina,sjnb->sijab", H[L - 1] * gs[L - 1] ** 2, Jm, Jm, optimize=True))
                top = L
            for m in range(top, 1, -1):
                Jm = xs[m - 1] * Jm + gs[m - 1] * np.einsum("sina,snp->sipa", Jm, Ws[m - 1]) * dss[m - 2][:, None]
                Th = Th + np.einsum("sab,sina,sjnb->sijab", H[m - 2] * gs[m - 2] ** 2, Jm, Jm, optimize=True)
            features(zs[l - 1], Th, l - 1, out)
        return out

    def estimator(mm: dict, count: float) -> dict:
        get = lambda p, shape: np.stack([mm[f"{p}{l}"].reshape(shape) for l in range(L + 1)])
        g, t = get("g", (N, N)), get("t", (N, N))
        outer = lambda a, b: np.einsum("lab,lcd->labcd", a, b)
        return {"K": g, "Th": t, "A": n * (get("tt", (N,) * 4) - outer(t, t)), "B": n * get("b", (N,) * 4),
                "D": n * (get("d", (N,) * 4) - outer(t, g)), "F": n * get("f", (N,) * 4),
                "V": n * (get("zz", (N,) * 4) - outer(g, g))}

    settings = {"activation": act.name, "X": X.tolist(), **_layer_info(L, n, C_W, C_b, xi, gamma), "param": param,
                "neurons": k}
    return _estimate(sample_block, estimator, RESIDUAL_NTK_TENSOR_ESTIMATES, settings, "dense", samples=samples,
                     batches=batches, block=block, seed=seed, workers=workers, progress=progress,
                     desc=f"{samples} residual networks (NTK) at {N} inputs, n={n}")
