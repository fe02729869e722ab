r"""Monte Carlo estimators of the finite-width (1/n) statistics of the readout layer, with standard errors.

This is the independent judge of the recursions in :mod:`ntk_theory.finite_width`: it measures, on
finite networks drawn from the PDLT initialisation, every quantity defined in
``docs/finite_width.md`` for the readout layer L+1 of an MLP with L hidden layers (widths n_1..n_L),
using ``readouts`` (default 2) readout neurons i != j.  The readout layer's statistics depend only
on the layers <= L, so two readout neurons give the "i != j" quantities.  ``n`` below is the last
hidden width n_L (equal widths: the width).

Measured (``layer_statistics``; arrays indexed as written, inputs a, b, c, d, p, q, r, s):

=====================  ======================================================================
``K[a,b]``             E[z_i;a z_i;b]
``ntk[a,b]``           E[Theta_ii;ab]
``V[a,b,c,d]``         V_(ab)(cd) = n (E[z_i;a z_i;b z_j;c z_j;d] - E[z_i;a z_i;b] E[z_j;c z_j;d])
``A[a,b,c,d]``         A_(ab)(cd) = n Cov(Theta_ii;ab, Theta_jj;cd)
``B[p,q,r,s]``         B_(pq)(rs) = n E[Theta_ij;pr Theta_ij;qs]
``D[a,b,c,d]``         D_abcd     = n Cov(Theta_ii;ab, z_j;c z_j;d)
``F[p,q,r,s]``         F_(pq)(rs) = n E[Theta_ij;pr z_i;q z_j;s]
``ntk_cov_single``     n Cov(Theta_ii;ab, Theta_ii;cd)       (= A_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc))
``cumulant_single``    n (E[z_a z_b z_c z_d] - 3 pairings)   (= V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc))
``ntk_z_single``       n Cov(Theta_ii;ab, z_i;c z_i;d)       (= D_abcd + F_(ac)(bd) + F_(ad)(bc))
=====================  ======================================================================

The identities in brackets follow from averaging the readout weights (Gaussian quadratic forms);
the ``*_single`` quantities and the ``*_plain`` estimates are measured directly from the sampled
readout neurons, so they check those identities and the variance-reduced estimators.

Estimators.  Given the layers <= L, the readout weights and biases are independent Gaussians, so
several conditional means are exact functions of the network below the readout
(Rao-Blackwellisation):

* E[z_i;a z_i;b | L] = Khat_ab = C_b + C_W (1/n) sum_k s(z_k;a) s(z_k;b): ``K`` is the mean of Khat,
  ``V`` = n Cov(Khat_ab, Khat_cd), ``D`` = n Cov(Theta_ii;ab, Khat_cd) (z_j averaged out);
* ``F`` = (C_W^2 / n) E[a_q^T H_pr a_s] with a_q = s(z(L)_q) and H_pr;km = s'_k;p Theta(L)_km;pr s'_m;r,
  computed by a reverse pass from "virtual readouts" a_q (:func:`ensemble.evaluate_readouts`);
* ``ntk``, ``A``, ``B`` use the sampled readout neurons, averaged over all (ordered) pairs.

The 1/n corrections to the means need more: ``K`` and ``ntk`` are further corrected by control
variates with exactly known (zero) means, fitted by least squares (the jackknife includes the fit):
z z^T - Khat at every layer, Ghat(l) - T(Khat(l)) and the same for s', the readout's
(:mod:`ntk_theory.montecarlo.controls`).  Together they remove the linear response of the readout kernel
to every layer's sampling noise, leaving O(1/n^2) variance.  Their means T(K) = E[s(u) s(v)] come from
an independent quadrature of the reference activation (:mod:`ntk_theory.montecarlo.quadrature`), chosen
accurate to 1e-10 of the scale; activations it cannot integrate to that accuracy (a kink away from 0) run
without the T controls, as ``info["control_variates"]`` reports.

``control_variates=False`` gives the Rao-Blackwellised estimators alone (``K_rb`` is always reported,
and ``K_plain``, ``ntk_plain`` are the raw means); the plain and Rao-Blackwellised estimates do not use
the quadrature.

Standard errors: networks are split into ``batches``; every estimate is a smooth function of batch
means and its standard error is the delete-one-batch jackknife of :mod:`ntk_theory.montecarlo.estimate`,
which also draws the blocks (reproducible whatever the number of threads).  Entries the control variates
determine exactly (the ReLU diagonal K) get a rounding floor of 1e-12 relative instead of a jackknife
error of ~1e-15.  Fits in 1/n over several widths: :mod:`ntk_theory.validation.fits`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from ..docstrings import filled
from ..reference import ensemble
from ..reference.activations import numpy_activation
from .controls import ControlVariates
from .estimate import (
    DOC_SECTIONS,
    Estimate,
    EstimateTable,
    WidthStatistics,
    jackknife,
    run_blocks,
    run_info,
    run_settings,
    symmetrise,
)

Array = np.ndarray

__all__ = ["ALIASES", "QUANTITIES", "FiniteWidthTable", "LayerStatistics", "layer_statistics", "symmetry_of"]

# a data table laid out like statistics.ESTIMATES and dntk.DNTK_QUANTITIES: names and descriptions, not shared logic
#: name -> (description, symmetry group used for symmetrising and printing)
QUANTITIES = {
    "K": ("E[z_i;a z_i;b] (Rao-Blackwellised, control variates)", "pair"),
    "ntk": ("E[Theta_ii;ab] (control variates)", "pair"),
    "V": ("n (E[z_i;a z_i;b z_j;c z_j;d] - E[z_i;a z_i;b] E[z_j;c z_j;d]) = V_(ab)(cd)", "pp"),
    "A": ("n Cov(Theta_ii;ab, Theta_jj;cd) = A_(ab)(cd)", "pp"),
    "B": ("n E[Theta_ij;pr Theta_ij;qs] = B_(pq)(rs), index [p,q,r,s]", "B"),
    "D": ("n Cov(Theta_ii;ab, z_j;c z_j;d) = D_abcd", "D"),
    "F": ("n E[Theta_ij;pr z_i;q z_j;s] = F_(pq)(rs), index [p,q,r,s]", "F"),
    "ntk_cov_single": ("n Cov(Theta_ii;ab, Theta_ii;cd)  (= A_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc))", "pp"),
    "cumulant_single": ("n x 4th cumulant of z_i;abcd  (= V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc))", "full"),
    "ntk_z_single": ("n Cov(Theta_ii;ab, z_i;c z_i;d)  (= D_abcd + F_(ac)(bd) + F_(ad)(bc))", "D"),
    "K_rb": ("E[Khat_ab] (Rao-Blackwellised only)", "pair"),
    "K_plain": ("E[z_i;a z_i;b] (raw)", "pair"),
    "ntk_plain": ("E[Theta_ii;ab] (raw)", "pair"),
    "V_plain": ("V from raw z_i, z_j", "pp"),
    "D_plain": ("D from raw Theta_ii, z_j", "D"),
    "F_plain": ("F from raw Theta_ij, z_i, z_j", "F"),
}

ALIASES = {
    "nngp": "K",
    "Theta": "ntk",
    "nngp_correction": "K1",
    "ntk_correction": "ntk1",
    "Theta1": "ntk1",
    "Theta2": "ntk2",
}

def symmetry_of(name: str) -> str:
    """The symmetry (a key of :data:`~ntk_theory.montecarlo.estimate.SYMMETRIES`) of a quantity's tensor; the
    fitted coefficients ``K1``, ``ntk1``, ... and ``<name>_slope`` share their quantity's.

    Parameters
    ----------
    name : str
        A quantity of :data:`QUANTITIES` or a fitted coefficient's name.

    Returns
    -------
    str

    Examples
    --------
    V_(ab)(cd) is symmetric within and between its pairs; B_(pq)(rs) = E[Theta_pr Theta_qs] swaps both pairs at once:

    >>> symmetry_of("K1"), symmetry_of("V"), symmetry_of("V_slope"), symmetry_of("B")
    ('pair', 'pp', 'pp', 'B')
    """
    base = name
    for suffix in ("_slope",):
        base = base.removesuffix(suffix)
    if base in ("K1", "K2", "ntk1", "ntk2"):
        return "pair"
    return QUANTITIES.get(base, ("", "full"))[1]


class FiniteWidthTable(EstimateTable):
    """Estimates of the finite-width quantities (:data:`QUANTITIES`; names or :data:`ALIASES`).

    Examples
    --------
    See :func:`layer_statistics`; ``table["nngp"]`` is ``table["K"]`` (:data:`ALIASES`).
    """

    aliases = ALIASES

    @filled(**DOC_SECTIONS)
    def symmetry(self, name: str) -> str:
        """:func:`symmetry_of` ``name``.

        %(symmetry)s
        See :func:`symmetry_of`.
        """
        return symmetry_of(name)


class LayerStatistics(FiniteWidthTable, WidthStatistics):
    """Estimates (value, stderr) of the readout layer's finite-width statistics at one width.

    Parameters
    ----------
    estimates : dict
        {name: :class:`~ntk_theory.montecarlo.Estimate`}, names of :data:`QUANTITIES`.
    X : ndarray
        Inputs (N, n_0).
    info : dict
        The run's set-up (width ``n``, samples, seconds, ...).

    Examples
    --------
    See :func:`layer_statistics`.
    """

    table_rows = 10

    def heading(self) -> list:
        """The set-up and sampling-rate lines above :meth:`~ntk_theory.montecarlo.estimate.NetworkEstimates.table`'s
        estimates.

        Returns
        -------
        list of str
        """
        i = self.info
        lines = [
            (f"{i['samples']} networks ({i['activation']}, depth {i['depth']}, widths {i['widths'][1:-1]}, "
             f"C_W={i['C_W'][-1]}, C_b={i['C_b'][-1]}, param={i['param']!r}, {i['readouts']} readouts, "
             f"{i['controls']} control variates, {i['seconds']:.1f} s = {i['networks_per_second']:.0f} networks/s)")
        ]
        status = i.get("control_variates", {})
        lines += [f"  T controls off: {status[k]}" for k in ("layer1_off", "per_network_off") if k in status]
        return lines

    def __repr__(self) -> str:
        i = self.info
        return (
            f"<LayerStatistics {i['activation']} depth {i['depth']} n={i['n']} N={self.X.shape[0]}, "
            f"{i['samples']} networks: {', '.join(self.estimates)}>"
        )


# --------------------------------------------------------------------------- per-network features
def _features(out: ensemble.ReadoutOutputs, spec: MLPSpec, controls: ControlVariates) -> dict:
    """Per-network quantities whose means determine every estimate (flattened to (S, k))."""
    L = spec.depth
    n = spec.widths[L]
    Cw, Cb = spec.C_W[L], spec.C_b[L]
    f, th = out.f, out.ntk  # (S, m, N), (S, m, m, N, N)
    S, m, N = f.shape
    pairs = m * (m - 1)
    Khat = Cb + Cw * out.act_grams[L - 1]
    tdiag = np.einsum("siiab->siab", th)  # (S, m, N, N)
    tbar = tdiag.mean(axis=1)
    zz = np.einsum("sia,sib->siab", f, f)  # (S, m, N, N)
    zbar = zz.mean(axis=1)
    outer = lambda x, y: np.einsum("sab,scd->sabcd", x, y)
    feats = {
        "k": Khat,
        "th": tbar,
        "zz": zbar,
        "kk": outer(Khat, Khat),
        "tk": outer(tbar, Khat),
        "tt1": np.einsum("siab,sicd->sabcd", tdiag, tdiag) / m,
        "z4": np.einsum("sia,sib,sic,sid->sabcd", f, f, f, f) / m,
        "tzz1": np.einsum("siab,sicd->sabcd", tdiag, zz) / m,
    }
    if m >= 2:
        tsum, zsum = tdiag.sum(axis=1), zz.sum(axis=1)
        feats["tt"] = (outer(tsum, tsum) - feats["tt1"] * m) / pairs
        feats["zzzz"] = (outer(zsum, zsum) - np.einsum("siab,sicd->sabcd", zz, zz)) / pairs
        feats["tzz2"] = (outer(tsum, zsum) - feats["tzz1"] * m) / pairs
        off = ~np.eye(m, dtype=bool)
        tij = th[:, off]  # (S, pairs, N, N): Theta_ij;pr for i != j
        fi = np.broadcast_to(f[:, :, None, :], (S, m, m, N))[:, off]  # z_i;q
        fj = np.broadcast_to(f[:, None, :, :], (S, m, m, N))[:, off]  # z_j;s
        feats["B"] = n * np.einsum("xepr,xeqs->xpqrs", tij, tij) / pairs
        feats["Fp"] = n * np.einsum("xepr,xeq,xes->xpqrs", tij, fi, fj) / pairs
    if out.hidden is not None:
        feats["F"] = (Cw * Cw / n) * out.hidden.transpose(0, 2, 1, 4, 3)
    flat = {k: v.reshape(S, -1) for k, v in feats.items()}
    c = controls(out, Khat)
    if c is not None:
        iu = controls.iu
        flat["c"] = c
        flat["y"] = np.concatenate([Khat[:, iu[0], iu[1]], tbar[:, iu[0], iu[1]]], axis=1)
    return flat


def _cv_adjust(means: dict, count: float, bounds: Array) -> tuple[Array, int, Array]:
    """Control-variate corrections -beta^T cbar for the targets y, the rank of the fit, and the bound
    |beta|^T b on the bias that the controls' mean errors (|E[c_i]| <= b_i, ``bounds``) leave.

    beta minimises the mean squared error of the corrected mean, Var(y - beta^T c) / S + (bias)^2, with
    the bias bounded by Cauchy-Schwarz, |beta^T E[c]| <= sqrt(k) ||beta o b|| (k controls with b_i > 0):
    beta = (S_cc + S k diag(b^2))^-1 S_cy, a ridge regression that gives no weight to a combination of
    controls whose spread is below its mean's error (S_cc, S_cy the per-network covariances)."""
    c, y = means["c"], means["y"]
    bounds = np.concatenate([bounds, np.zeros(len(c) - len(bounds))])  # the exact controls follow the T ones
    Scc = means["cc"] - np.outer(c, c)
    Scy = means["cy"] - np.outer(c, y)
    Scc = Scc + np.diag(count * np.count_nonzero(bounds) * bounds**2)
    scale = np.sqrt(np.clip(np.diag(Scc), 0, None))
    keep = scale > 1e-12 * max(scale.max(), 1e-300)
    s = scale[keep]
    A = Scc[np.ix_(keep, keep)] / np.outer(s, s)
    beta, _, rank, _ = np.linalg.lstsq(A, Scy[keep] / s[:, None], rcond=1e-10)
    beta /= s[:, None]
    return -(beta.T @ c[keep]), int(rank), np.abs(beta).T @ bounds[keep]


_FOUR_INDEX = ("kk", "tk", "tt1", "z4", "tzz1", "tt", "zzzz", "tzz2", "B", "Fp", "F")


def _estimates(means: dict, count: float, N: int, n: int, bounds: Array | None) -> dict:
    sh2, sh4 = (N, N), (N, N, N, N)
    unbias = count / (count - 1.0)
    g = {k: v.reshape(sh4) if k in _FOUR_INDEX else v for k, v in means.items()}
    k, th, zz = g["k"].reshape(sh2), g["th"].reshape(sh2), g["zz"].reshape(sh2)
    o = np.multiply.outer
    est = {"K": k.copy(), "ntk": th.copy()}
    if bounds is not None and "c" in means:
        adj = _cv_adjust(means, count, bounds)[0]
        iu = np.triu_indices(N)
        M = len(iu[0])
        for name, part in (("K", adj[:M]), ("ntk", adj[M:])):
            A = np.zeros(sh2)
            A[iu] = part
            A[iu[1], iu[0]] = part
            est[name] = est[name] + A
    est["V"] = n * (g["kk"] - o(k, k)) * unbias
    est["D"] = n * (g["tk"] - o(th, k)) * unbias
    est["ntk_cov_single"] = n * (g["tt1"] - o(th, th)) * unbias
    pairings = o(zz, zz) + np.einsum("ac,bd->abcd", zz, zz) + np.einsum("ad,bc->abcd", zz, zz)
    est["cumulant_single"] = n * (g["z4"] - pairings)
    est["ntk_z_single"] = n * (g["tzz1"] - o(th, zz)) * unbias
    if "tt" in g:
        est["A"] = n * (g["tt"] - o(th, th)) * unbias
        est["B"] = g["B"]
        est["V_plain"] = n * (g["zzzz"] - o(zz, zz)) * unbias
        est["D_plain"] = n * (g["tzz2"] - o(th, zz)) * unbias
        est["F_plain"] = g["Fp"]
    if "F" in g:
        est["F"] = g["F"]
    est["K_rb"], est["K_plain"], est["ntk_plain"] = k, zz, th
    return {name: symmetrise(v, symmetry_of(name)) for name, v in est.items()}


def _block_size(spec: MLPSpec, N: int, m: int, memory_mb: float) -> int:
    rows = m * N + N * N
    widest = max(spec.widths[1:-1])
    per_net = 4 * (N + rows) * widest * spec.n_layers + 2 * rows * rows + 16 * N**4 + m * m * N * N * 4
    per_net += m * widest  # dense readout
    per_net *= 8 * 2
    return int(np.clip(memory_mb * 2**20 // per_net, 1, 4096))


# --------------------------------------------------------------------------- main entry
@filled(**DOC_SECTIONS)
def layer_statistics(
    activation,
    X,
    depth: int,
    width,
    *,
    C_W=2.0,
    C_b=0.0,
    param: str = "ntk",
    samples: int = 20_000,
    seed=0,
    readouts: int = 2,
    batches: int = 40,
    sampler: str = "projected",
    control_variates: bool = True,
    workers: int | None = 2,
    memory_mb: float = 48.0,
    progress: bool | None = None,
) -> LayerStatistics:
    """Estimate the readout layer's finite-width statistics (module docstring) from ``samples`` networks.

    ``depth`` hidden layers of ``width`` (an int or one width per hidden layer; n = the last one),
    ``activation`` as :func:`ntk_theory.reference.numpy_activation` accepts, C_W and C_b scalars or
    one per layer (readout last), NTK factors of ``param``, inputs X (N, n_0).  ``readouts`` >= 2
    readout neurons (more give more pairs i != j at a higher cost).  Vectorised over blocks of
    networks (``memory_mb`` each) on ``workers`` threads.

    Parameters
    ----------
    activation : str, tuple or NumpyActivation
    %(network)s
    C_W, C_b : float or sequence of float, default 2.0 and 0.0
    param : {'ntk', 'standard', 'unit'}, default 'ntk'
    samples : int, default 20000
    seed : int, default 0
    readouts : int, default 2
    batches : int, default 40
        Batches of the jackknife standard errors.
    sampler : {'projected', 'dense'}, default 'projected'
    control_variates : bool, default True
        Subtract control variates with known means (:mod:`~ntk_theory.montecarlo.controls`).
    workers : int or None, default 2
    memory_mb : float, default 48.0
    progress : bool or None, default None

    Returns
    -------
    LayerStatistics

    Raises
    ------
    ValueError
        If an argument is invalid.

    Examples
    --------
    One ReLU hidden layer at C_W = 2, C_b = 0 and x = (1, 0): the first layer is exactly Gaussian, z1 ~ N(0, 1),
    so at every width E[z z] = C_W E[relu(z1)^2] = 1 and n Cov(z_i^2, z_j^2) = C_W^2 Var(relu(z1)^2)
    = 4 (3/2 - 1/4) = 5:

    >>> import numpy as np
    >>> stats = layer_statistics("relu", np.array([[1.0, 0.0]]), 1, 8, samples=4000, progress=False)
    >>> K, V = stats["nngp"], stats["V"]
    >>> bool(abs(K.value[0, 0] - 1.0) <= 4 * K.stderr[0, 0] + 1e-12), bool(abs(V.value[0, 0, 0, 0] - 5.0) < 4 * V.stderr[0, 0, 0, 0])
    (True, True)
    """
    X = _checks.inputs(X)
    N = X.shape[0]
    readouts = _checks.positive_int("readouts", readouts)
    if readouts < 2:
        raise ValueError("readouts must be >= 2 (the i != j statistics need two readout neurons)")
    spec = MLPSpec.build(X.shape[1], depth, width, readouts, C_W=C_W, C_b=C_b, param=param)
    act = numpy_activation(activation)
    samples, batches = run_settings(samples, batches, sampler)
    workers = workers or min(os.cpu_count() or 1, 2)
    n = spec.widths[spec.depth]
    controls = ControlVariates(act, spec, X, control_variates)
    block = _block_size(spec, N, readouts, memory_mb)

    def sample_block(rng, S: int) -> dict:
        out = ensemble.sample_readouts(X, spec, act, S, rng, sampler, virtual=True)
        return _features(out, spec, controls)

    t0 = time.perf_counter()
    sums = run_blocks(sample_block, samples, batches, block, seed, workers=workers, progress=progress,
                      desc=f"n={n}: {samples} networks", products=[("cc", "c", "c"), ("cy", "c", "y")])
    seconds = time.perf_counter() - t0
    bounds = controls.bounds if control_variates else None
    values, errors = jackknife(sums, lambda means, count: _estimates(means, count, N, n, bounds))
    rank = 0
    if bounds is not None and "c" in sums[0]:
        total = sum(s["count"] for s in sums)
        _, rank, bias = _cv_adjust({k: sum(s[k] for s in sums) / total for k in ("c", "y", "cc", "cy")}, total,
                                   bounds)
        iu, M = np.triu_indices(N), N * (N + 1) // 2
        for name, part in (("K", bias[:M]), ("ntk", bias[M:])):
            B = np.zeros((N, N))
            B[iu], B[iu[1], iu[0]] = part, part
            errors[name] = np.hypot(errors[name], B)
    # rounding floor: quantities the control variates determine exactly (the ReLU diagonal K) would
    # otherwise get standard errors of 1e-15 and meaningless z-scores
    estimates = {
        name: Estimate(name, values[name], np.hypot(errors[name], 1e-12 * np.abs(values[name])), QUANTITIES[name][0])
        for name in QUANTITIES
        if name in values
    }
    info = run_info(act, spec, samples, seed, batches, sampler, block, workers, seconds, depth=spec.depth, n=n,
                    readouts=readouts, controls=rank, per_network_T_controls=controls.per_network_T,
                    control_variates=controls.status, networks_per_second=samples / max(seconds, 1e-12))
    return LayerStatistics(estimates, X, info)
