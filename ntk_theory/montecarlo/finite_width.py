r"""Monte Carlo estimators of the finite-width (1/n) statistics, with standard errors, and 1/n fits.

This is the independent judge of the recursions in :mod:`ntk_theory.finite_width`: it measures, on
finite networks drawn from the PDLT initialisation, every quantity defined in
``FINITE_WIDTH.md`` for the readout layer L+1 of an MLP with L hidden layers (widths n_1..n_L),
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

* every hidden layer l: (1/n_l) z(l) z(l)^T - (C_b + C_W Ghat(l-1)) (Ghat(0) = X X^T / n_0);
* layer 1: Ghat(1) - T(K(1)) and (1/n_1) s' s'^T - Tdot(K(1)) at the deterministic K(1) (Gaussian
  expectations of :mod:`ntk_theory.recursions`, any library activation);
* layers l >= 2, activations with closed-form kernels (relu, erf, gelu, ...): Ghat(l) - T(Khat(l)),
  Ghat'(l) - Tdot(Khat(l)) at the network's own Khat(l) = C_b + C_W Ghat(l-1) (exactly zero mean
  given layer l-1): together these remove the linear response of the readout kernel to every
  layer's sampling noise, leaving O(1/n^2) variance;
* the readout: mean_i z_i z_i - Khat and mean_i |W_i|^2 / C_W - 1.

``control_variates=False`` gives the Rao-Blackwellised estimators alone (``K_rb`` is always reported,
and ``K_plain``, ``ntk_plain`` are the raw means).  The control variates rely on the Gaussian
expectations T, Tdot of the symbolic layer (tested against mpmath) and are unbiased only if those
are right; the plain and Rao-Blackwellised estimates do not use them.

Standard errors: networks are split into ``batches``; every estimate is a smooth function of
batch means and its standard error is the delete-one-batch jackknife (as :mod:`ntk_theory.montecarlo`).
Blocks of networks are drawn from ``SeedSequence(seed).spawn(...)`` and combined in order, so results
do not depend on the number of threads.

:func:`fit_inverse_width` runs :func:`layer_statistics` at several widths and fits, per entry and by
weighted least squares with the Monte Carlo standard errors, E[z z] = K + K1/n + K2/n^2,
E[Theta] = Theta + Theta1/n + Theta2/n^2 (intercepts fitted or fixed) and X(n) = X + X_slope/n for
the n-scaled tensors X = V, A, B, D, F.

Measured (2 shared cores; inputs X3 = sqrt(3) [[1,0,0], [1/2,sqrt(3)/2,0], [-0.3,0.2,0.9]]):

* ReLU, C_W = 2, C_b = 0, depth 3, 1e5 networks per width at n = 16, 32, 64, 128, 256 (240 s): the
  standard error of n (E[z_0 z_1] - K_01) is 0.004 at every width (Rao-Blackwellised only: 0.07 at
  n = 16 and 0.37 at n = 256; raw readout: ~n / sqrt(S) x 3), so K1_01 = -0.5218 +- 0.0026 (intercept
  fixed to the recursion; +- 0.006 with the intercept fitted), K1_02 = -1.658 +- 0.005,
  K1_12 = -1.250 +- 0.005, K1_aa = 0 exactly; Theta1_01 = 3.00 +- 0.08, Theta1_aa consistent with 0
  (+- 0.2); V_(00)(00) -> 59.54 +- 0.28 and V_(11)(11) -> 59.72 +- 0.25 against 5 (l-1) K^2 = 60
  (readout l = 4), V_(22)(22) -> 53.07 +- 0.25 against 53.02; fitted intercepts within 1.9 SE of
  :class:`~ntk_theory.recursions.KernelRecursion`.
* throughput, N = 3, n = 64, depth 3: ~3300 networks/s with control variates, ~4200 without.
* tanh at criticality (C_W = 1, C_b = 0, depth 3, 5e4 networks x 4 widths): K1 = -0.0514 +- 0.0023
  (diagonal), -0.0273 +- 0.0018; the control variates (z z^T and layer-1 ones only: tanh has no closed
  form for per-network T) give a 4x smaller SE than Rao-Blackwellisation alone at n = 64.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import _checks
from .architecture import MLPSpec
from .montecarlo import Estimate, run_blocks
from .reference import ensemble
from .reference.activations import numpy_activation

Array = np.ndarray

__all__ = ["layer_statistics", "fit_inverse_width", "fit_widths", "LayerStatistics", "WidthFit"]

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

# --------------------------------------------------------------------------- symmetrisation
_PERMS = {
    "pair": [(0, 1), (1, 0)],
    "pp": [(0, 1, 2, 3), (1, 0, 2, 3), (0, 1, 3, 2), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 0, 1), (2, 3, 1, 0), (3, 2, 1, 0)],
    "B": [(0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0)],
    "D": [(0, 1, 2, 3), (1, 0, 2, 3), (0, 1, 3, 2), (1, 0, 3, 2)],
    "F": [(0, 1, 2, 3), (2, 3, 0, 1)],
    "full": list(itertools.permutations(range(4))),
}


def symmetrise(T: Array, symmetry: str) -> Array:
    """Average a (N,)*k tensor over the index permutations of ``symmetry`` (see ``QUANTITIES``)."""
    perms = _PERMS[symmetry]
    return sum(np.transpose(T, p) for p in perms) / len(perms)


def _distinct(shape, symmetry: str) -> list:
    N = shape[0]
    if symmetry == "pair":
        return [(a, b) for a in range(N) for b in range(a, N)]
    keys, seen = [], set()
    for idx in itertools.product(range(N), repeat=len(shape)):
        canon = min(tuple(idx[i] for i in p) for p in _PERMS[symmetry])
        if canon not in seen:
            seen.add(canon)
            keys.append(canon)
    return keys


def _resolve(prediction, name):
    """prediction[name] from a dict or an attribute, trying the aliases; None if absent."""
    names = [name] + [k for k, v in ALIASES.items() if v == name]
    for nm in names:
        if isinstance(prediction, dict):
            if nm in prediction:
                return prediction[nm]
        elif hasattr(prediction, nm):
            return getattr(prediction, nm)
    return None


class _Table:
    estimates: dict

    def __getitem__(self, name: str) -> Estimate:
        name = ALIASES.get(name, name)
        try:
            return self.estimates[name]
        except KeyError:
            raise KeyError(f"no estimate {name!r}; have {', '.join(self.estimates)}") from None

    def __getattr__(self, name):
        estimates = self.__dict__.get("estimates", {})
        name = ALIASES.get(name, name)
        if name in estimates:
            return estimates[name]
        raise AttributeError(name)

    def z_score(self, prediction) -> dict:
        """(estimate - prediction) / stderr for every quantity the prediction has.

        ``prediction``: a dict or an object with attributes named as the estimates (or the aliases
        ``nngp``, ``Theta``, ``nngp_correction``, ``ntk_correction``, ``Theta1``).  Returns
        {name: z array}; ``max_abs_z`` summarises.
        """
        out = {}
        for name, est in self.estimates.items():
            value = _resolve(prediction, name)
            if value is not None:
                out[name] = est.z_score(np.asarray(value, dtype=float))
        return out

    @staticmethod
    def max_abs_z(z: dict) -> float:
        return max((float(np.nanmax(np.abs(v))) for v in z.values()), default=0.0)

    def _rows(self, names, max_rows):
        lines = []
        for name in names:
            est = self.estimates[name]
            sym = _symmetry_of(name)
            lines.append(f"{name}: {est.description}")
            keys = _distinct(est.value.shape, sym) if est.value.ndim else [()]
            for idx in keys[:max_rows]:
                label = ",".join(str(i) for i in idx)
                extra = self._extra(name, idx)
                lines.append(f"  [{label:>7}]  {est.value[idx]: .6e} +- {est.stderr[idx]:.2e}{extra}")
            if len(keys) > max_rows:
                lines.append(f"  ... {len(keys) - max_rows} more distinct entries")
        return lines

    def _extra(self, name, idx) -> str:
        return ""


def _symmetry_of(name: str) -> str:
    base = name
    for suffix in ("_slope",):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if base in ("K1", "K2", "ntk1", "ntk2"):
        return "pair"
    return QUANTITIES.get(base, ("", "full"))[1]


@dataclass
class LayerStatistics(_Table):
    """Estimates (value, stderr) of the readout layer's finite-width statistics at one width."""

    estimates: dict
    X: Array
    info: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.info["n"]

    def table(self, names=None, max_rows: int = 10) -> str:
        i = self.info
        lines = [
            f"{i['samples']} networks ({i['activation']}, depth {i['depth']}, widths {i['widths'][1:-1]}, "
            f"C_W={i['C_W'][-1]}, C_b={i['C_b'][-1]}, param={i['param']!r}, {i['readouts']} readouts, "
            f"{i['controls']} control variates, {i['seconds']:.1f} s = {i['networks_per_second']:.0f} networks/s)"
        ]
        return "\n".join(lines + self._rows(names or list(self.estimates), max_rows))

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        i = self.info
        return (
            f"<LayerStatistics {i['activation']} depth {i['depth']} n={i['n']} N={self.X.shape[0]}, "
            f"{i['samples']} networks: {', '.join(self.estimates)}>"
        )

    def _repr_pretty_(self, p, cycle):
        p.text(self.table())


# --------------------------------------------------------------------------- per-network features
class _Controls:
    """Builds the zero-mean control variates of a block (see the module docstring)."""

    def __init__(self, act_name: str, spec: MLPSpec, X: Array, enabled: bool):
        self.spec, self.enabled = spec, enabled
        N = X.shape[0]
        self.iu = np.triu_indices(N)
        self.G0 = X @ X.T / X.shape[1]
        self.K1 = spec.C_b[0] + spec.C_W[0] * self.G0
        self.kernels = None
        self.T1 = None
        self.per_network_T = False
        if not enabled:
            return
        try:
            from .recursions.layer import activation_kernels

            self.kernels = activation_kernels(act_name)
            self.T1, self.Td1 = self._T(self.K1[None])
            self.T1, self.Td1 = self.T1[0], self.Td1[0]
            if not (np.all(np.isfinite(self.T1)) and np.all(np.isfinite(self.Td1))):
                self.T1 = None
        except Exception:  # custom activations: only the z z^T controls
            self.kernels = None
            self.T1 = None
        self.per_network_T = self.kernels is not None and self.kernels.closed_form

    def _T(self, K: Array):
        """T, Tdot at the distinct entries (S, M) of a batch of kernels (S, N, N)."""
        ia, ib = self.iu
        d = np.diagonal(K, axis1=-2, axis2=-1)
        k11, k22, k12 = d[:, ia], d[:, ib], K[:, ia, ib]
        bound = np.sqrt(k11 * k22)
        k12 = np.clip(k12, -bound, bound)
        with np.errstate(all="ignore"):
            T, Td, _ = self.kernels.offdiagonal(k11, k22, k12)
            Tdg, Tddg, _ = self.kernels.diagonal(d)
        T, Td = np.array(T, dtype=float), np.array(Td, dtype=float)
        on = ia == ib
        T[:, on], Td[:, on] = np.asarray(Tdg)[:, ia[on]], np.asarray(Tddg)[:, ia[on]]
        return T, Td

    def __call__(self, out: ensemble.ReadoutOutputs, Khat: Array) -> Array:
        if not self.enabled:
            return None
        spec, iu = self.spec, self.iu
        S = Khat.shape[0]
        cols = []
        prev_kernel = np.broadcast_to(self.K1, (S, *self.K1.shape))
        for l in range(spec.depth):
            cols.append((out.pre_grams[l] - prev_kernel)[:, iu[0], iu[1]])
            if l == 0 and self.T1 is not None:
                cols.append(out.act_grams[0][:, iu[0], iu[1]] - self.T1[None])
                cols.append(out.der_grams[0][:, iu[0], iu[1]] - self.Td1[None])
            elif l > 0 and self.per_network_T:
                T, Td = self._T(prev_kernel)
                cols.append(out.act_grams[l][:, iu[0], iu[1]] - T)
                cols.append(out.der_grams[l][:, iu[0], iu[1]] - Td)
            prev_kernel = spec.C_b[l + 1] + spec.C_W[l + 1] * out.act_grams[l]
        zz = np.einsum("sia,sib->sab", out.f, out.f) / out.f.shape[1]
        cols.append((zz - Khat)[:, iu[0], iu[1]])
        if out.readout_sq is not None:
            cols.append(out.readout_sq.mean(axis=1, keepdims=True) / spec.C_W[-1] - 1.0)
        c = np.concatenate(cols, axis=1)
        return np.where(np.isfinite(c), c, 0.0)


def _features(out: ensemble.ReadoutOutputs, spec: MLPSpec, controls: _Controls) -> dict:
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
    outer = lambda x, y: np.einsum("sab,scd->sabcd", x, y)  # noqa: E731
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


def _batch_sums(feats: dict, batch_ids: Array) -> dict:
    out = {}
    for b in np.unique(batch_ids):
        sel = batch_ids == b
        sums = {"count": int(sel.sum())}
        for key, x in feats.items():
            sums[key] = x[sel].sum(axis=0)
        if "c" in feats:
            c = feats["c"][sel]
            sums["cc"] = c.T @ c
            sums["cy"] = c.T @ feats["y"][sel]
        out[int(b)] = sums
    return out


def _cv_adjust(means: dict, count: float) -> tuple[Array, int]:
    """Control-variate corrections -beta^T E[c] for the targets y (least squares beta), and rank."""
    c, y = means["c"], means["y"]
    Scc = means["cc"] - np.outer(c, c)
    Scy = means["cy"] - np.outer(c, y)
    scale = np.sqrt(np.clip(np.diag(Scc), 0, None))
    keep = scale > 1e-12 * max(scale.max(), 1e-300)
    s = scale[keep]
    A = Scc[np.ix_(keep, keep)] / np.outer(s, s)
    beta, _, rank, _ = np.linalg.lstsq(A, Scy[keep] / s[:, None], rcond=1e-10)
    beta /= s[:, None]
    return -(beta.T @ c[keep]), int(rank)


_FOUR_INDEX = ("kk", "tk", "tt1", "z4", "tzz1", "tt", "zzzz", "tzz2", "B", "Fp", "F")


def _estimates(means: dict, count: float, N: int, n: int, cv: bool) -> dict:
    sh2, sh4 = (N, N), (N, N, N, N)
    unbias = count / (count - 1.0)
    g = {k: v.reshape(sh4) if k in _FOUR_INDEX else v for k, v in means.items()}
    k, th, zz = g["k"].reshape(sh2), g["th"].reshape(sh2), g["zz"].reshape(sh2)
    o = np.multiply.outer
    est = {"K": k.copy(), "ntk": th.copy()}
    if cv and "c" in means:
        adj, _ = _cv_adjust(means, count)
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
    return {name: symmetrise(v, _symmetry_of(name)) for name, v in est.items()}


def _jackknife(batch_sums: list, N: int, n: int, cv: bool):
    keys = [k for k in batch_sums[0] if k != "count"]
    counts = np.array([b["count"] for b in batch_sums], dtype=float)
    totals = {k: sum(b[k] for b in batch_sums) for k in keys}
    n_total = counts.sum()
    full = _estimates({k: v / n_total for k, v in totals.items()}, n_total, N, n, cv)
    B = len(batch_sums)
    leave = [
        _estimates({k: (totals[k] - s[k]) / (n_total - counts[i]) for k in keys}, n_total - counts[i], N, n, cv)
        for i, s in enumerate(batch_sums)
    ]
    stderr = {}
    for name in full:
        stack = np.stack([lo[name] for lo in leave])
        stderr[name] = np.sqrt((B - 1) / B * ((stack - stack.mean(axis=0)) ** 2).sum(axis=0))
    rank = _cv_adjust({k: v / n_total for k, v in totals.items()}, n_total)[1] if cv and "c" in totals else 0
    return full, stderr, rank


def _block_size(spec: MLPSpec, N: int, m: int, memory_mb: float) -> int:
    rows = m * N + N * N
    widest = max(spec.widths[1:-1])
    per_net = 4 * (N + rows) * widest * spec.n_layers + 2 * rows * rows + 16 * N**4 + m * m * N * N * 4
    per_net += m * widest  # dense readout
    per_net *= 8 * 2
    return int(np.clip(memory_mb * 2**20 // per_net, 1, 4096))


# --------------------------------------------------------------------------- main entry
def layer_statistics(
    activation,
    X,
    depth: int,
    width,
    C_W=2.0,
    C_b=0.0,
    param: str = "ntk",
    samples: int = 20_000,
    seed=0,
    *,
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
    """
    X = _checks.inputs(X)
    N = X.shape[0]
    readouts = _checks.positive_int("readouts", readouts)
    if readouts < 2:
        raise ValueError("readouts must be >= 2 (the i != j statistics need two readout neurons)")
    spec = MLPSpec.build(X.shape[1], depth, width, readouts, C_W, C_b, param)
    act = numpy_activation(activation)
    samples = _checks.positive_int("samples", samples)
    batches = _checks.positive_int("batches", batches)
    _checks.choice("sampler", sampler, ensemble.SAMPLERS)
    if batches < 2 or samples < 2 * batches:
        raise ValueError(f"need batches >= 2 and samples >= 2 * batches (got {samples}, {batches})")
    workers = workers or min(os.cpu_count() or 1, 2)
    n = spec.widths[spec.depth]
    controls = _Controls(act.name, spec, X, control_variates)

    block = _block_size(spec, N, readouts, memory_mb)
    starts = list(range(0, samples, block))
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    seeds = root.spawn(len(starts))

    def run_block(k: int) -> dict:
        i0 = starts[k]
        S = min(block, samples - i0)
        rng = np.random.default_rng(seeds[k])
        out = ensemble.sample_readouts(X, spec, act, S, rng, sampler, virtual=True)
        ids = (np.arange(i0, i0 + S) * batches) // samples
        return _batch_sums(_features(out, spec, controls), ids)

    t0 = time.perf_counter()
    batch_sums = run_blocks(run_block, len(starts), batches, workers, progress, f"n={n}: {samples} networks")
    seconds = time.perf_counter() - t0
    values, errors, rank = _jackknife(batch_sums, N, n, control_variates)
    # rounding floor: quantities the control variates determine exactly (the ReLU diagonal K) would
    # otherwise get standard errors of 1e-15 and meaningless z-scores
    estimates = {
        name: Estimate(name, values[name], np.hypot(errors[name], 1e-12 * np.abs(values[name])), QUANTITIES[name][0])
        for name in QUANTITIES
        if name in values
    }
    info = {
        "activation": act.name,
        "depth": spec.depth,
        "widths": list(spec.widths),
        "n": n,
        "C_W": list(spec.C_W),
        "C_b": list(spec.C_b),
        "param": spec.param,
        "samples": samples,
        "seed": seed if isinstance(seed, (int, type(None))) else str(seed),
        "batches": batches,
        "readouts": readouts,
        "sampler": sampler,
        "block": block,
        "workers": workers,
        "controls": rank,
        "per_network_T_controls": bool(controls.per_network_T),
        "seconds": seconds,
        "networks_per_second": samples / max(seconds, 1e-12),
    }
    return LayerStatistics(estimates, X, info)


# --------------------------------------------------------------------------- fits in 1/n
@dataclass
class WidthFit(_Table):
    """Coefficients of the 1/n fits with standard errors, chi^2 per entry, and the per-width runs.

    ``K``, ``K1``, ``K2``: E[z z] = K + K1/n + K2/n^2; ``ntk``, ``ntk1``, ``ntk2`` (aliases ``Theta``,
    ``Theta1``): the same for E[Theta_ii]; ``V``, ``A``, ``B``, ``D``, ``F`` (and the single-neuron
    combinations): the n -> infinity limits of a + b/n fits, ``<name>_slope`` the b.  ``chi2[name]``
    (per entry) with ``dof[name]`` degrees of freedom.
    """

    estimates: dict
    chi2: dict
    dof: dict
    widths: list
    runs: list
    info: dict = field(default_factory=dict)

    def _extra(self, name, idx) -> str:
        base = {"K1": "K", "K2": "K", "ntk1": "ntk", "ntk2": "ntk"}.get(name, name.replace("_slope", ""))
        if base in self.chi2 and not name.endswith("_slope") and name not in ("K1", "K2", "ntk1", "ntk2"):
            return f"   chi2 {self.chi2[base][idx]:.1f}/{self.dof[base]}"
        return ""

    def table(self, names=None, max_rows: int = 10) -> str:
        i = self.info
        head = (
            f"1/n fits over widths {self.widths} ({i.get('activation')}, depth {i.get('depth')}, "
            f"C_W={i.get('C_W')}, C_b={i.get('C_b')}, param={i.get('param')!r}, "
            f"{i.get('samples')} networks per width, {i.get('seconds', 0):.0f} s)"
        )
        return "\n".join([head] + self._rows(names or list(self.estimates), max_rows))

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"<WidthFit widths {self.widths}: {', '.join(self.estimates)}>"

    def _repr_pretty_(self, p, cycle):
        p.text(self.table())


def _wls(widths, values, errors, powers, fixed=None):
    """Per-entry weighted least squares y(n) = fixed + sum_k c_k n^-k over k in ``powers``.

    values, errors: (W, ...) arrays.  Returns (coefficients (P, ...), stderr (P, ...), chi2 (...)).
    """
    x = 1.0 / np.asarray(widths, dtype=float)
    Dm = np.stack([x**p for p in powers], axis=1)  # (W, P)
    W = values.shape[0]
    shape = values.shape[1:]
    y = values.reshape(W, -1)
    if fixed is not None:
        y = y - np.asarray(fixed, dtype=float).reshape(1, -1)
    w = 1.0 / np.maximum(errors.reshape(W, -1), 1e-300) ** 2
    M = np.einsum("wp,we,wq->epq", Dm, w, Dm)
    rhs = np.einsum("wp,we,we->ep", Dm, w, y)
    cov = np.linalg.inv(M)
    coef = np.einsum("epq,eq->ep", cov, rhs)
    resid = y - (Dm @ coef.T)
    chi2 = (w * resid**2).sum(axis=0)
    se = np.sqrt(np.einsum("epp->ep", cov))
    P = len(powers)
    return coef.T.reshape(P, *shape), se.T.reshape(P, *shape), chi2.reshape(shape)


def fit_widths(runs: list, infinite=None, mean_order: int = 2, tensor_order: int = 1) -> WidthFit:
    """Fit the 1/n expansions to :class:`LayerStatistics` at several widths (see :class:`WidthFit`).

    ``infinite``: None (fit the n -> infinity K and Theta) or a pair (K, Theta) of known infinite-width
    values (then only the 1/n, ..., 1/n^mean_order coefficients are fitted).  ``mean_order``: highest
    power of 1/n for the means (2: K + K1/n + K2/n^2); ``tensor_order``: for the n-scaled tensors.
    """
    widths = [r.info["n"] for r in runs]
    if len(set(widths)) != len(widths):
        raise ValueError(f"the runs must have distinct widths; got {widths}")
    est, chi2, dof = {}, {}, {}
    W = len(runs)
    for name, fixed in (("K", None if infinite is None else infinite[0]), ("ntk", None if infinite is None else infinite[1])):
        vals = np.stack([r[name].value for r in runs])
        errs = np.stack([r[name].stderr for r in runs])
        powers = list(range(1, mean_order + 1)) if fixed is not None else list(range(0, mean_order + 1))
        if W < len(powers):
            raise ValueError(f"{W} widths cannot fit {len(powers)} coefficients")
        coef, se, c2 = _wls(widths, vals, errs, powers, fixed)
        labels = [name if p == 0 else f"{name}{p}" for p in powers]
        if fixed is not None:
            est[name] = Estimate(name, np.asarray(fixed, dtype=float), np.zeros_like(vals[0]), "given")
        for lab, cf, s in zip(labels, coef, se):
            desc = "n -> infinity limit" if lab == name else f"coefficient of 1/n^{lab[len(name):]}"
            est[lab] = Estimate(lab, cf, s, desc)
        chi2[name], dof[name] = c2, W - len(powers)
    tensors = [k for k in ("V", "A", "B", "D", "F", "ntk_cov_single", "cumulant_single", "ntk_z_single") if k in runs[0].estimates]
    powers = list(range(0, tensor_order + 1))
    for name in tensors:
        vals = np.stack([r[name].value for r in runs])
        errs = np.stack([r[name].stderr for r in runs])
        coef, se, c2 = _wls(widths, vals, errs, powers)
        est[name] = Estimate(name, coef[0], se[0], f"n -> infinity limit of {QUANTITIES[name][0]}")
        if tensor_order >= 1:
            est[name + "_slope"] = Estimate(name + "_slope", coef[1], se[1], "coefficient of 1/n")
        chi2[name], dof[name] = c2, W - len(powers)
    info = dict(runs[0].info)
    info["samples"] = [r.info["samples"] for r in runs]
    info["seconds"] = sum(r.info["seconds"] for r in runs)
    return WidthFit(est, chi2, dof, widths, runs, info)


def fit_inverse_width(
    activation,
    X,
    depth: int,
    widths=(16, 32, 64, 128, 256),
    C_W=2.0,
    C_b=0.0,
    param: str = "ntk",
    samples: int = 20_000,
    seed=0,
    *,
    infinite="fit",
    mean_order: int = 2,
    tensor_order: int = 1,
    **kwargs,
) -> WidthFit:
    """Run :func:`layer_statistics` at each width (equal hidden widths) and fit the 1/n expansions.

    ``infinite``: ``"fit"`` (fit the infinite-width K and Theta too), ``"recursion"`` (fix them to
    :class:`ntk_theory.recursions.KernelRecursion`, library activations only) or a pair (K, Theta).
    ``samples``: an int or one per width.  Other keywords go to :func:`layer_statistics`.
    """
    X = _checks.inputs(X)
    widths = [int(w) for w in widths]
    per = list(samples) if isinstance(samples, (list, tuple)) else [samples] * len(widths)
    seeds = np.random.SeedSequence(seed).spawn(len(widths))
    runs = [
        layer_statistics(activation, X, depth, w, C_W, C_b, param, s, sd, **kwargs)
        for w, s, sd in zip(widths, per, seeds)
    ]
    fixed = None
    if isinstance(infinite, str):
        if infinite == "recursion":
            from .recursions import KernelRecursion

            if param == "standard":
                raise ValueError("param='standard': the infinite-width NTK grows with n; give (K, Theta) or fit them")
            rec = KernelRecursion(numpy_activation(activation).name, depth, C_W, C_b, param)
            res = rec(X)
            fixed = (res.nngp, res.ntk)
        elif infinite != "fit":
            raise ValueError("infinite must be 'fit', 'recursion' or a pair (K, Theta)")
    elif infinite is not None:
        fixed = tuple(np.asarray(v, dtype=float) for v in infinite)
    fit = fit_widths(runs, fixed, mean_order, tensor_order)
    fit.info["seed"] = seed if isinstance(seed, (int, type(None))) else str(seed)
    return fit
