r"""Four-point (and two-point) Gaussian moment tensors of an activation at N inputs, compiled (Numba).

For z ~ N(0, K), K (N, N) symmetric positive semi-definite (the kernel of one layer at N inputs),
and an activation given as compiled s, s' (:class:`FourPointKernel`: ``numba.njit`` functions of
one float64 and the kinks), :func:`four_point_moments` returns

    ssss[a,b,c,d] = E[s(z_a) s(z_b) s(z_c) s(z_d)]          (fully symmetric)
    ddss[a,b,c,d] = E[s'(z_a) s'(z_b) s(z_c) s(z_d)]        (symmetric in (a,b) and in (c,d))
    dddd[a,b,c,d] = E[s'(z_a) s'(z_b) s'(z_c) s'(z_d)]      (fully symmetric)
    ss[a,b] = E[s(z_a) s(z_b)],  dd[a,b] = E[s'(z_a) s'(z_b)]

with s' the almost-everywhere derivative (no Dirac deltas, as backpropagation computes it), each
with an estimated absolute error (``error_ssss`` ...).  :func:`derivative_moments` returns, by the
same method, error control and estimate, the tensors E[s^(o_1)(z_a) s^(o_2)(z_b) ...] of any terms
(o_1, ..., o_k), k <= 4, of derivative orders 0..3 (the kernel's optional s'', s^(3): the
integrator's factors are products of powers of four function slots s, s', s'', s^(3); a set of m
inputs integrates, in one pass, every way of giving each term's factors to its m variables).

Method
------
Every entry depends only on the *set* S of distinct sample indices it involves (|S| = 1..4) and
on the powers s^p s'^q of each variable, so the work is organised by sets: for N inputs there are
C(N,1) + ... + C(N,4) sets (162 for N = 8, of which 70 are four-dimensional), and for each set one
nested quadrature computes all the products it is needed for at once (for |S| = 4: ssss, the six
ddss pairings and dddd; for |S| = 3: the 36 products s^p s'^q with one doubled variable; ...).

In pivoted-Cholesky coordinates of K_S (largest remaining conditional variance first; rank
revealing, so coincident inputs give fewer variables), z_v = sum_(j <= l(v)) L_vj u_j with u iid
N(0, 1), and

    E[prod_v f_v(z_v)] = int phi(u_0) int phi(u_1) ... prod_v f_v(z_v) du_r-1 ... du_0 ,

where variable v is "resolved" at level l(v) (its last non-zero column).  Each level carries, as
it integrates, the partial integrals of all distinct suffixes of the needed products (the factor
products of the variables resolved at that level times the inner partial integrals), so each
activation value s(z), s'(z) is computed once per node.  The pivoting gives |L_vj| <= L_jj, so
the integrand varies in u_j on the scale 1 / L_jj: levels of small conditional variance (nearly
parallel inputs) need few nodes.

One-dimensional rules at level l (the integration range is the ball |u| <= R, R = 9 by default;
nodes outside it carry Gaussian weight below exp(-R^2/2)):

* no split point in the range (smooth activations): the trapezoidal rule with step
  h_u = min(h_z / max_v |L_vl|, h_g min(1, h_z / 0.5)) (exponentially convergent for analytic
  integrands; the cap shrinks with h_z below 0.5 so that every refinement refines every level);
* split points: composite Gauss-Legendre panels on the pieces between them, panel widths at most
  min(W_g, c h_z / max_v |L_vl|).  Split points are the kinks c of the variables resolved at
  this level, u_l = (c - sum_(j<l) L_vj u_j) / L_vl (exact kinks: the integrand is analytic on
  each piece), and the smoothed kinks of deeper variables whose conditional standard deviation
  sigma_v (over the deeper levels) is small compared with |L_vl|: there the inner integral has a
  kink smoothed over the width w = sigma_v / |L_vl|, and the panels are graded geometrically
  (ratio 2) from width w at that point (nearly parallel inputs with kinked activations).

Error estimate
--------------
Each set is integrated with a fine rule and two coarse ones (steps h, 1.5 h and 2.25 h; Gauss-
Legendre with 12 nodes per panel in the fine rule, 8 in the coarse ones).  Panel widths and
the panel cap W_g shrink with the step, so every panel of a finer rule is finer (the geometric
grading at smoothed kinks starts at the kink's width in every rule).  With d = |I_fine - I_coarse| and the contraction
rho = d / |I_coarse - I_coarse2| of the step before (rho <= 1), the estimate is

    err = max(d sqrt(rho), 2 E|prod| (d / E|prod|)^1.5) + 512 eps E|prod|,

(err = d while d > 1e-3 E|prod|), and the step is reduced by 1.5 until err <= tol E|prod| for
every product of the set (at most ``max_refine`` times; the remaining estimate is reported, not
hidden); the fine rule of one step is the first coarse rule of the next, so a refinement costs
one pass.  This is a model, not a bound.  Measured against exact references (tests): ReLU's
dddd at N = 8 is a four-dimensional orthant probability (Plackett's identity, 70 sets): the
actual error is at most 4e-12 relative to E|prod| (tol 1e-10) and exceeds the estimate in 3
of 70 sets, by at most 13x (the convergence of kinked integrands has a small prefactor,
ln(err / E|prod|) = a - c / h with a < 0, which a two-rule model d^1.5 misses).
The step is continuous: from the last pair of each set the model ln(err(h) / E|prod|) = -c / h
predicts the step h* at which a (h*, 1.5 h*) pair would just pass (with a factor 8 margin); the
next call of the same smooth activation and tol starts at the 30th percentile of h* over the
sets (``FourPointKernel.hz_hint``; kinked activations start at h = 0.5), and a first pair that
the model says cannot pass after one 1.5 refinement restarts as a fresh pair at h* (the
acceptance test is always the one above, so the prediction only chooses steps, never the
reported error).  The truncation to the ball is estimated from the integrand's mass in the shell
R - 1.5 < |u| <= R (times 1e-3); when it exceeds the tolerance the radius grows (up to 38), and
an integrand still not decaying there raises :class:`ValueError` (a divergent expectation).

Innermost level and compilation
-------------------------------
The integrator is :mod:`._fourpoint_core`: generic, with s and s' passed as first-class
functions, compiled once per machine (Numba disk cache); an activation costs only the compile
of its two small njit functions.  When the deepest level resolves one variable (the
usual case), its integral is the Gaussian smoothing G_f(mu) = E[f(mu + sigma u)] of each of
that variable's factors f, tabulated per set by adaptive piecewise Chebyshev interpolation
(graded at the kinks from width sigma), so a four-dimensional integral costs a three-
dimensional one; the table's error bound is propagated through the outer levels and added to
the estimate (see that module).  Sets are spread over two threads.  Its compiled code lives in
two independent modules, :mod:`._fourpoint_integrate` and :mod:`._fourpoint_table`; on a cold
cache the first is compiled by a child process while this one compiles the second
(:func:`prefetch_core`; ``NTK_THEORY_PARALLEL_COMPILE=0`` turns it off); the block expansion's kernels
(:mod:`._fourpoint_pairs`) compile in this process during the same wait.

Block expansion for smooth activations
--------------------------------------
For an activation without kinks the sets of four and three inputs first go to :mod:`.pair_expansion`:
each set is split into two pairs (or a pair and one input) with the smallest canonical correlation r, and
its moments are the Kibble-Slepian series in the whitened cross covariance, summed by total degree from
Hermite coefficients computed once per pair of inputs (C(N, 2) two-dimensional quadratures instead of
C(N, 4) four-dimensional ones).  Its error estimate bounds the truncation (Cauchy-Schwarz, r^d per degree),
the coefficients' quadrature error (two rules) and the rounding; sets whose estimate exceeds tol E|prod|
(r near 1: nearly parallel inputs across the split) or whose pairs are singular are integrated by the
nested quadrature above, which also takes the sets of one and two inputs (``info["expansion"]`` counts the
sets of each route).  By default the expansion is taken only where its cost model predicts it cheaper than the
quadrature of the same sets (:func:`.pair_expansion.cheaper_than_quadrature`: the pair tables are a fixed cost
per call, more than the quadrature of the one three-input set at N = 3); ``expansion=True`` (or
``NTK_THEORY_FOURPOINT_EXPANSION=1``) takes it for every call, ``expansion=False`` (``=0``) never.

Set bookkeeping
---------------
All of it is array code, linear in the number of sets and of entries: the sets are enumerated
once per N (sizes 4, 3, 2, 1, each in lexicographic order, so their base-N codes are sorted); the
pivoted Cholesky factors of the sets of one size are computed together
(:func:`_batched_pivoted_cholesky`: the same pivots, stopping rule and zeroing as
:func:`.cholesky.pivoted_cholesky`); the level structures are built once per distinct pattern of
levels and shared through a table; and each tensor entry finds its set by a binary search of the
sorted codes of its distinct indices and its product by a lookup of its powers (:func:`_index_maps`,
cached per N), so the (N, N, N, N) tensors are gathers of the per-set values.

Exact route for piecewise-linear activations
--------------------------------------------
For s(x) = b x (x > 0), a x (x < 0) (relu, leaky_relu, abs; ``slopes=(a, b)``, recognised
symbolically by :func:`ntk_theory.gaussian.fourpoint.piecewise_linear_slopes`) every product
s^p s'^q is, on each orthant, a monomial times a constant, so each entry is a sum of truncated
orthant moments E[z^k 1{sigma z > 0}], computed exactly by the integration-by-parts recursion of
:mod:`.orthant` (Tallis 1961; Kan & Robotti 2017) down to orthant
probabilities (Sheppard's closed forms for up to three variables, Plackett's one-dimensional
integral for four), batched over the sets of each size.  Singular sets (more inputs than
dimensions with C_b = 0, repeated or antiparallel inputs) are reduced to their rank: exactly
parallel variables merged, rank-2 sets (and every pair) as arcs in polar coordinates, rank-3 sets
of four as cones with a closed-form orthant probability and the recursion in the factor's
coordinates.  Its error is rounding (bounded by the terms' absolute sum, amplified by
1 / lambda_min of the set's correlation matrix for full-rank sets) plus the propagated quadrature
estimate of the four-variable orthant probabilities: ~1e-14 relative for well-separated inputs.
Sets whose estimate exceeds tol (anti-correlated inputs, whose terms cancel) are recomputed with
mpmath at 40 digits.  Full-rank sets still above tol, nearly singular sets without an exact
linear relation (lambda_min below orthant.MIN_EIGENVALUE) and sets with a zero variance go to the
numerical integrator, which is compiled only when such a set occurs (``info["method"]`` and
``info["exact_kinds"]`` say how many sets took which route).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._checks import warn_accuracy


__all__ = ["DerivativeMoments", "FourPointKernel", "FourPointMoments", "SetBatch", "check_covariance", "compiled_pair",
           "derivative_moments", "family_products", "four_point_moments", "integrator_loaded", "prefetch_core",
           "products"]


@dataclass
class FourPointKernel:
    """An activation's compiled s, s' and optionally s'', s^(3) (numba.njit functions of one float64;
    pointwise derivatives, no Dirac terms) and kinks; the integrator itself (:mod:`._fourpoint_core`)
    is generic and compiled once per machine."""

    name: str
    s: object
    ds: object
    kinks: np.ndarray
    source: str
    compile_seconds: float = 0.0
    from_cache: bool = False
    _warm: bool = False
    hz_hint: dict = field(default_factory=dict)
    d2s: object = None
    d3s: object = None

    def functions(self, order: int = 1) -> tuple:
        """The integrator's four function slots (s, s', s'', s^(3)) for factors of derivative order at
        most ``order``; slots above it hold s' (never called: no factor uses them).  ValueError when
        a needed derivative is missing."""
        fns = [self.s, self.ds, self.d2s, self.d3s]
        for o in range(2, 4):
            if o <= order and fns[o] is None:
                raise ValueError(f"the compiled activation {self.name} has no derivative of order {o}")
            if o > order:
                fns[o] = self.ds
        return tuple(fns)

    def warm_up(self):
        if not self._warm:
            t0 = time.perf_counter()
            K = np.array([[1.0, 0.5], [0.5, 1.0]])
            _run(self, K, tol=1e-6, max_refine=0)
            self.compile_seconds += time.perf_counter() - t0
            self.from_cache = bool(_core()._integrate.stats.cache_hits)
            self._warm = True


_BACKGROUND = {}
_INTEGRATE = __name__.rpartition(".")[0] + "._fourpoint_integrate"
_CORE = __name__.rpartition(".")[0] + "._fourpoint_core"


def integrator_loaded() -> bool:
    """Whether the compiled integrator is imported in this process already."""
    return _CORE in sys.modules


def prefetch_core() -> None:
    """Start compiling the integrator's larger half (:mod:`._fourpoint_integrate`) into the Numba
    disk cache in a child process, unless it is imported already (or
    ``NTK_THEORY_PARALLEL_COMPILE=0``).  :func:`_core` then compiles the other half
    (:mod:`._fourpoint_table`) in this process meanwhile and loads the first from the cache: the
    two halves share no compiled code, so a cold start costs the longer of the two instead of their
    sum (on a machine with two or more cores; with the cache filled, the child only loads it).
    Callers that know they will need the integrator (the N-input finite-width tensors of a
    numerical activation) call this before their symbolic work, which then overlaps the
    compilation too."""
    if ("proc" in _BACKGROUND or _INTEGRATE in sys.modules
            or os.environ.get("NTK_THEORY_PARALLEL_COMPILE", "1") == "0" or (os.cpu_count() or 1) < 2):
        return
    import subprocess

    # the child loads just the compiled module's files: bare parent packages stand in for
    # ntk_theory and ntk_theory.numerics (so that their imports are skipped); the file paths and
    # module names are the real ones, so Numba's cache entries are the ones read here
    pkg = Path(__file__).resolve().parent
    parent = __name__.rpartition(".")[0]
    script = ("import sys, types\n"
              f"for name, path in (('ntk_theory', {str(pkg.parent)!r}), ({parent!r}, {str(pkg)!r})):\n"
              "    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m\n"
              f"import {_INTEGRATE}\n")
    try:
        _BACKGROUND["proc"] = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:  # no child processes here: compile in this process
        _BACKGROUND["proc"] = None


def _core():
    """The integrator (:mod:`._fourpoint_core`), its two compiled halves built in parallel on the
    first call of a process with a cold Numba cache (:func:`prefetch_core`)."""
    if not integrator_loaded():
        prefetch_core()
        from . import _fourpoint_table  # noqa: F401  (compiles here while the child compiles the rest)
        from . import _fourpoint_pairs  # noqa: F401  (the block expansion's kernels: here too, meanwhile)

        proc = _BACKGROUND.get("proc")
        if proc is not None:
            try:
                proc.wait(timeout=600)
            except Exception:  # a stuck child: this process compiles instead
                proc.kill()
    from . import _fourpoint_core

    return _fourpoint_core


_PAIRS: dict = {}


def compiled_pair(s, ds, kinks=(), d2s=None, d3s=None) -> FourPointKernel:
    """The :class:`FourPointKernel` of a pair of ``numba.njit`` functions (s, ds) of one float64
    with ``kinks`` (points where s or s' is not smooth), warmed up; shared within a process.
    ``d2s``, ``d3s``: optional njit s'' and s^(3) (for :func:`derivative_moments`)."""
    t0 = time.perf_counter()
    if s is None or ds is None:
        raise ValueError("pass both s and ds (numba.njit functions of one float64)")
    import numba

    for nm, f in (("s", s), ("ds", ds), ("d2s", d2s), ("d3s", d3s)):
        if (f is not None or nm in ("s", "ds")) and not isinstance(f, numba.core.registry.CPUDispatcher):
            raise ValueError(f"{nm} must be a numba.njit function; got {f!r}")
    key = (id(s), id(ds), id(d2s), id(d3s), tuple(float(k) for k in kinks))
    if key in _PAIRS:
        return _PAIRS[key]
    kern = FourPointKernel(f"({s.__name__}, {ds.__name__})", s, ds,
                           np.array(sorted(set(float(k) for k in kinks)), dtype=np.float64), "", d2s=d2s, d3s=d3s)
    kern.compile_seconds = time.perf_counter() - t0
    kern.warm_up()
    _PAIRS[key] = kern
    return kern


# ------------------------------------------------------------------------------------------------
# Task preparation (Python): sets of inputs, pivoted Cholesky, products needed, level structure
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def products(m: int) -> tuple:
    """Products needed for a set of m distinct variables: tuples ((p_0, q_0), ..., (p_(m-1), q_(m-1)))
    of powers of s and s' per variable, each variable present, total degree 4 with an even number
    (0, 2, 4) of s' factors, or (m <= 2) total degree 2 with 0 or 2 s' factors."""
    out = []
    for total, qs in ((4, (0, 2, 4)), (2, (0, 2))):
        if m > total:
            continue
        for mult in itertools.product(range(1, total + 1), repeat=m):
            if sum(mult) != total:
                continue
            for q in itertools.product(*[range(mu + 1) for mu in mult]):
                if sum(q) in qs:
                    out.append(tuple((mu - qi, qi) for mu, qi in zip(mult, q)))
    return tuple(out)


def _canonical_terms(terms) -> tuple:
    """The terms of a :func:`derivative_moments` call as a sorted tuple of order tuples, checked."""
    out = set()
    try:
        items = list(terms)
    except TypeError:
        raise ValueError(f"terms must be a sequence of tuples of derivative orders; got {terms!r}") from None
    if not items:
        raise ValueError("terms is empty: pass tuples of derivative orders such as (2, 1, 1, 0)")
    for t in items:
        try:
            t = tuple(operator.index(o) for o in t)
        except TypeError:
            raise ValueError(f"a term must be a tuple of integer derivative orders; got {t!r}") from None
        if not 1 <= len(t) <= 4 or any(o < 0 or o > 3 for o in t):
            raise ValueError(f"a term has 1 to 4 derivative orders, each 0..3; got {t!r}")
        out.add(t)
    return tuple(sorted(out))


@functools.lru_cache(maxsize=None)
def family_products(family, m: int) -> tuple:
    """Products integrated for a set of m distinct variables, each a tuple per variable of the powers
    (p, q, r, t) of s, s', s'', s^(3).  ``family`` None: :func:`products` (the moment tensors);
    else a tuple of terms (tuples of derivative orders; its multiset of orders matters): every way of
    giving the term's factors to the m variables, each variable at least one factor, in sorted order."""
    if family is None:
        return tuple(tuple((p, q, 0, 0) for p, q in prod) for prod in products(m))
    out = set()
    for term in family:
        for assign in itertools.product(range(m), repeat=len(term)):
            if len(set(assign)) != m:
                continue
            e = [[0, 0, 0, 0] for _ in range(m)]
            for o, v in zip(term, assign):
                e[v][o] += 1
            out.add(tuple(tuple(row) for row in e))
    return tuple(sorted(out))


@functools.lru_cache(maxsize=None)
def _structure(m: int, levels: tuple, family=None):
    """Arrays describing the nested accumulation for m variables resolved at ``levels``, for the
    products :func:`family_products` (family, m)."""
    prods = family_products(family, m)
    if len(prods) > _MAXPROD or any(len({p[v] for p in prods}) > _MAXFAC for v in range(m)):
        raise ValueError(f"too many products for one set ({len(prods)}; at most {_MAXPROD}, {_MAXFAC} factors "
                         "per variable): split the terms over several calls")
    facs = [sorted({p[v] for p in prods}) for v in range(m)]
    fidx = [{f: i for i, f in enumerate(fl)} for fl in facs]
    F = max(len(f) for f in facs)
    facpow = np.zeros((4, _MAXFAC, 4), dtype=np.int64)
    nfac = np.zeros(4, dtype=np.int64)
    for v in range(m):
        nfac[v] = len(facs[v])
        for i, f in enumerate(facs[v]):
            facpow[v, i] = f
    # combos as factor-index tuples
    combos = [tuple(fidx[v][p[v]] for v in range(m)) for p in prods]
    vars_at = [[v for v in range(m) if levels[v] == ell] for ell in range(4)]
    # suffix keys: tuple of factor indices of vars resolved at levels >= ell
    lf_lists = []
    suf_lists = [None] * 5
    suf_lists[4] = {(): 0}
    suf_lf = np.zeros((4, 64), dtype=np.int64)
    suf_inner = np.zeros((4, 64), dtype=np.int64)
    nsuf = np.zeros(5, dtype=np.int64)
    nsuf[4] = 1
    lf_fac = -np.ones((4, 64, 4), dtype=np.int64)
    nlf = np.zeros(4, dtype=np.int64)

    def suffix(c, ell):
        return tuple(c[v] for lev in range(ell, 4) for v in vars_at[lev])

    for ell in range(3, -1, -1):
        lfs = {}
        sufs = {}
        for c in combos:
            key = suffix(c, ell)
            if key in sufs:
                continue
            lkey = tuple(c[v] for v in vars_at[ell])
            if lkey not in lfs:
                e = len(lfs)
                lfs[lkey] = e
                for v, f in zip(vars_at[ell], lkey):
                    lf_fac[ell, e, v] = f
            k = len(sufs)
            sufs[key] = k
            suf_lf[ell, k] = lfs[lkey]
            suf_inner[ell, k] = suf_lists[ell + 1][suffix(c, ell + 1)]
        if not lfs:
            lfs[()] = 0
        nlf[ell] = len(lfs)
        nsuf[ell] = len(sufs)
        suf_lists[ell] = sufs
        lf_lists.append(lfs)
    combo_suf = np.array([suf_lists[0][suffix(c, 0)] for c in combos], dtype=np.int64)
    return facpow, nfac, lf_fac, nlf, nsuf, suf_lf, suf_inner, combo_suf, prods, F


def check_covariance(K) -> np.ndarray:
    try:
        K = np.array(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"K must be a numeric (N, N) matrix; got {type(K).__name__}") from None
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"K must be a square (N, N) matrix with N >= 1; got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("K has non-finite entries (NaN or inf)")
    scale = float(np.max(np.abs(K)))
    asym = float(np.max(np.abs(K - K.T)))
    if asym > 1e-12 * scale:
        raise ValueError(f"K is not symmetric: max |K - K^T| = {asym:.3g} (> 1e-12 max |K|)")
    K = 0.5 * (K + K.T)
    dmin = float(np.min(np.diag(K)))
    if dmin < 0:
        raise ValueError(f"K is not positive semi-definite: negative variance {dmin:.3g} on the diagonal")
    ev = float(np.min(np.linalg.eigvalsh(K)))
    if ev < -1e-12 * scale * K.shape[0]:
        raise ValueError(f"K is not positive semi-definite: smallest eigenvalue {ev:.3g}")
    return K


def _family_order(family) -> int:
    """The highest derivative order the products of ``family`` use (1 for the moment tensors)."""
    return 1 if family is None else max(1, max(max(t) for t in family))


_MAXFAC = 24  # distinct factors s^p s'^q s''^r s'''^t per variable of a set (the integrator reads it from facpow)
_MAXPROD = 63  # products per set (the value vectors have 64 slots; the integrator keeps its node count in the last)
_GPARAM = np.array([0.6, 4.5, 6.0, 0.5])  # h_g (Gaussian step cap), W_g (panel cap at h_z = 0.5; scales with h_z), c (panel/h_z), w_thr (near-kink)


@functools.lru_cache(maxsize=4)
def _all_sets(N: int) -> tuple:
    """(sets (T, 4) int64 padded with -1, sizes (T,), offsets {m: first task of size m}, keys {m: sorted
    base-N codes of the sets of size m}): every set of 1..4 distinct indices of range(N), sizes 4, 3,
    2, 1 in turn, each size in lexicographic order (so its codes are ascending)."""
    blocks, sizes, offsets, keys = [], [], {}, {}
    start = 0
    for m in (4, 3, 2, 1):
        n = math.comb(N, m)
        c = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(N), m)), dtype=np.int64,
                        count=n * m).reshape(n, m)
        blocks.append(np.hstack([c, -np.ones((n, 4 - m), dtype=np.int64)]))
        sizes.append(np.full(n, m, dtype=np.int64))
        offsets[m] = start
        keys[m] = c @ (N ** np.arange(m - 1, -1, -1, dtype=np.int64))
        start += n
    return np.vstack(blocks), np.concatenate(sizes), offsets, keys


def _product_code(prod) -> int:
    """A product's code: sum_i c_i 625^i over its variables, c_i = p + 5 q + 25 r + 125 t (each power <= 4)."""
    return sum(sum(e * 5 ** k for k, e in enumerate(powers)) * 625 ** i for i, powers in enumerate(prod))


@functools.lru_cache(maxsize=None)
def _product_lookup(family, m: int) -> tuple:
    """(sorted codes, their positions in family_products(family, m)) for a binary search."""
    codes = np.array([_product_code(p) for p in family_products(family, m)], dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    return codes[order], order.astype(np.int64)


_MOMENT_ORDERS = {"ssss": (0, 0, 0, 0), "ddss": (1, 1, 0, 0), "dddd": (1, 1, 1, 1), "ss": (0, 0), "dd": (1, 1)}


@functools.lru_cache(maxsize=2)
def _index_maps(N: int) -> dict:
    """For each tensor (ssss, ddss, dddd, ss, dd): (task, product position) of every entry
    (:func:`_term_index_map` of its derivative orders)."""
    return {nm: _term_index_map(N, orders, None) for nm, orders in _MOMENT_ORDERS.items()}


@functools.lru_cache(maxsize=16)
def _term_index_map(N: int, orders: tuple, family) -> tuple:
    """(task, product position) of every entry (flattened C order) of the tensor
    T[a, b, ...] = E[prod_j s^(orders_j)(z_(a_j))], int32 and int16 arrays; the task numbers are those of
    :func:`_all_sets`, the positions those of :func:`family_products` (family, m).  Vectorised over the
    entries in chunks of one first index."""
    _, _, offsets, keys = _all_sets(N)
    n = len(orders)
    ords = np.array(orders, dtype=np.int64)
    rest = np.indices((N,) * (n - 1)).reshape(n - 1, -1).T if n > 1 else np.zeros((1, 0), dtype=np.int64)
    M = rest.shape[0]
    ts = np.empty(N * M, dtype=np.int32 if offsets[1] + N < 2 ** 31 else np.int64)
    cs = np.empty(N * M, dtype=np.int16)
    ar = np.arange(M)
    weight = 625 ** np.arange(n, dtype=np.int64)
    for a in range(N):
        idx = np.hstack([np.full((M, 1), a, dtype=np.int64), rest])
        order = np.argsort(idx, axis=1, kind="stable")
        v = np.take_along_axis(idx, order, 1)
        pw = 5 ** ords[order]
        new = np.ones_like(v, dtype=bool)
        new[:, 1:] = v[:, 1:] != v[:, :-1]
        g = np.cumsum(new, axis=1) - 1
        m = g[:, -1] + 1
        code_v = np.zeros((M, n), dtype=np.int64)
        Sv = np.zeros((M, n), dtype=np.int64)
        for j in range(n):
            code_v[ar, g[:, j]] += pw[:, j]
            Sv[ar, g[:, j]] = v[:, j]
        code = (code_v * weight).sum(axis=1)
        t = np.empty(M, dtype=np.int64)
        c = np.empty(M, dtype=np.int64)
        for mm in range(1, n + 1):
            sel = m == mm
            if not np.any(sel):
                continue
            key = Sv[sel, :mm] @ (N ** np.arange(mm - 1, -1, -1, dtype=np.int64))
            t[sel] = offsets[mm] + np.searchsorted(keys[mm], key)
            codes, pos = _product_lookup(family, mm)
            k = np.minimum(np.searchsorted(codes, code[sel]), max(codes.size - 1, 0))
            if codes.size == 0 or np.any(codes[k] != code[sel]):
                raise ValueError(f"the products of {family!r} do not cover the term {orders!r}")
            c[sel] = pos[k]
        ts[a * M:(a + 1) * M] = t
        cs[a * M:(a + 1) * M] = c
    return ts, cs


def _batched_pivoted_cholesky(Ks: np.ndarray) -> tuple:
    """:func:`.cholesky.pivoted_cholesky` of T matrices (T, m, m) at once: (L (T, m, m) with the
    columns beyond each rank zero, ranks (T,), levels (T, m)); the same pivots, stopping rule and
    zeroing of rounding-level entries."""
    T, m = Ks.shape[:2]
    eps = float(np.finfo(np.float64).eps)
    d = np.einsum("tii->ti", Ks).copy()
    scale = np.maximum(d.max(axis=1), 0.0)
    L = np.zeros((T, m, m))
    remaining = np.ones((T, m), dtype=bool)
    active = np.ones(T, dtype=bool)
    rank = np.zeros(T, dtype=np.int64)
    ar = np.arange(T)
    for r in range(m):
        i = np.argmax(np.where(remaining, d, -np.inf), axis=1)
        active &= d[ar, i] > 64 * eps * scale
        sel = ar[active]
        if sel.size == 0:
            break
        ii = i[sel]
        remaining[sel, ii] = False
        piv = np.sqrt(d[sel, ii])
        L[sel, ii, r] = piv
        dot = np.einsum("tkj,tj->tk", L[sel, :, :r], L[sel, ii, :r]) if r else 0.0
        col = (Ks[sel, :, ii] - dot) / piv[:, None]
        rem = remaining[sel]
        L[sel, :, r] = np.where(rem, col, L[sel, :, r])
        d[sel] = np.where(rem, np.maximum(d[sel] - col ** 2, 0.0), d[sel])
        rank[sel] += 1
    L[np.abs(L) < (64 * eps * np.sqrt(scale))[:, None, None]] = 0.0
    nz = L != 0.0
    levels = np.where(nz.any(axis=2), m - 1 - np.argmax(nz[:, :, ::-1], axis=2), 0).astype(np.int64)
    return L, rank, levels


@dataclass
class _Tasks:
    """Input sets of one call and the integrator's description of each: ``sets`` (T, 4) padded with
    -1, ``sizes`` (T,), ``arrays`` the per-task arrays of :func:`._fourpoint_core.run_tasks` (the
    level structures as a table indexed by task), ``combo`` (T, 64) the position of product c of
    products(m) in a task's value vector; ``family`` the products' family (:func:`family_products`)."""

    sets: np.ndarray
    sizes: np.ndarray
    arrays: tuple
    combo: np.ndarray
    family: object = None

    def __len__(self) -> int:
        return self.sizes.size

    def members(self, t: int) -> tuple:
        return tuple(int(i) for i in self.sets[t, :self.sizes[t]])


def _tasks(K, only=None, family=None) -> _Tasks:
    """The sets of :func:`_all_sets` (or the task numbers ``only`` of them, in that order), factored
    (pivoted Cholesky of K restricted to each set, batched over the sets of one size) and with their
    level structures (:func:`_structure`, once per distinct (size, levels)) for the products of
    ``family``; sizes without products get an empty structure (never integrated)."""
    N = K.shape[0]
    sets, sizes, _, _ = _all_sets(N)
    if only is not None:
        sets, sizes = sets[only], sizes[only]
    T = sizes.size
    Ls = np.zeros((T, 4, 4))
    ranks = np.zeros(T, dtype=np.int64)
    vlevels = np.zeros((T, 4), dtype=np.int64)
    sids = np.zeros(T, dtype=np.int64)
    combo = np.zeros((T, 64), dtype=np.int64)
    structs = []
    for m in (4, 3, 2, 1):
        ts = np.flatnonzero(sizes == m)
        if ts.size == 0:
            continue
        S = sets[ts, :m]
        L, r, lev = _batched_pivoted_cholesky(K[S[:, :, None], S[:, None, :]])
        Ls[ts, :m, :m] = L
        ranks[ts] = r
        vlevels[ts, :m] = lev
        uniq, inv = np.unique(lev, axis=0, return_inverse=True)
        inv = np.asarray(inv).ravel()
        for u, row in enumerate(uniq):
            st = _structure(m, tuple(int(x) for x in row), family)
            sel = ts[inv == u]
            sids[sel] = len(structs)
            combo[sel, :len(st[7])] = st[7]
            structs.append(st)
    tables = tuple(np.stack([st[k] for st in structs]) if structs else np.zeros((0,)) for k in range(7))
    order = np.argsort(-ranks, kind="stable").astype(np.int64)
    return _Tasks(sets, sizes, (Ls, sizes.copy(), ranks, vlevels, sids, *tables, order), combo, family)


_THREADS = max(1, min(2, os.cpu_count() or 1))


def _run(kern, K, tol, max_refine, hz0=0.5, R0=9.0, use_table=True, only=None, tasks=None, tick=None, map=None):
    """Integrate the sets of K numerically (all, or the task indices ``only``); ``tick(k)`` is called
    after each chunk of k sets (a progress bar's update).  ``map``: the chunks of sets as work units
    :class:`SetBatch` of ``map(fn, chunks)`` (:func:`four_point_moments`), else two threads here."""
    core = _core()
    tasks = _tasks(K) if tasks is None else tasks
    arrays = tasks.arrays
    order = arrays[-1]
    if only is not None:
        order = order[np.isin(order, np.asarray(only, dtype=np.int64))]
    arrs = arrays[:-1]
    T = len(tasks)
    vals = np.zeros((T, 64))
    errs = np.zeros((T, 64))
    scales = np.zeros((T, 64))
    levels = np.zeros(T, dtype=np.int64)
    status = np.zeros(T, dtype=np.int64)
    stats = np.zeros((T, 4), dtype=np.int64)
    hst = np.zeros(T)
    kinks = np.ascontiguousarray(kern.kinks, dtype=np.float64)
    fns = kern.functions(_family_order(tasks.family))

    def work(tasks):
        core.run_tasks(fns, kinks, tasks, *arrs, _GPARAM, float(hz0), float(tol), int(max_refine),
                       float(R0), bool(use_table), vals, errs, scales, levels, status, stats, hst)
        if tick is not None:
            tick(len(tasks))

    ranks = arrs[2]
    big = [np.array([t], dtype=np.int64) for t in order if ranks[t] >= 3]
    small = [t for t in order if ranks[t] < 3]
    chunks = big + [np.array(small[i:i + 16], dtype=np.int64) for i in range(0, len(small), 16)]
    if map is not None and chunks:
        unit = SetBatch(kern, K, tasks, float(tol), int(max_refine), float(hz0), float(R0), bool(use_table))
        for chunk, part in zip(chunks, map(unit, chunks), strict=True):
            for full, p in zip((vals, errs, scales, levels, status, stats, hst), part, strict=True):
                full[chunk] = p
            if tick is not None:
                tick(len(chunk))
    elif _THREADS > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(work, chunks))
    else:
        for c in chunks:
            work(c)
    return vals, errs, scales, levels, status, tasks, stats, hst


@dataclass
class SetBatch:
    """One work unit of the numerical integrator, a picklable callable: ``unit(sets)`` integrates the
    task numbers ``sets`` (int64 array) of ``tasks`` (all sets of K, factored) with the given starting step
    and tolerances and returns ``(vals, errs, scales, levels, status, stats, hst)``, each array's first axis
    running over ``sets`` in their order.  A set's values depend only on the set, K and these parameters
    (not on the other sets of the unit, nor on the process or thread), so any split of the sets into units
    gives the same numbers as one in-process run."""

    kern: FourPointKernel
    K: np.ndarray
    tasks: _Tasks
    tol: float
    max_refine: int
    hz0: float
    R0: float
    use_table: bool

    def __call__(self, sets) -> tuple:
        sets = np.asarray(sets, dtype=np.int64)
        out = _run(self.kern, self.K, self.tol, self.max_refine, hz0=self.hz0, R0=self.R0, use_table=self.use_table,
                   only=sets, tasks=self.tasks)
        vals, errs, scales, levels, status, _, stats, hst = out
        return tuple(a[sets] for a in (vals, errs, scales, levels, status, stats, hst))


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


@dataclass
class FourPointMoments:
    """Gaussian moment tensors of one activation at N inputs (see the module docstring).

    ``ssss``, ``ddss``, ``dddd`` (N, N, N, N); ``ss``, ``dd`` (N, N); ``error_*`` the estimated
    absolute errors of each entry; ``scale_*`` the E|product| each tolerance is relative to;
    ``info``: timings, refinement levels, sets not converged.
    """

    activation: str
    K: np.ndarray
    ssss: np.ndarray
    ddss: np.ndarray
    dddd: np.ndarray
    ss: np.ndarray
    dd: np.ndarray
    error_ssss: np.ndarray
    error_ddss: np.ndarray
    error_dddd: np.ndarray
    error_ss: np.ndarray
    error_dd: np.ndarray
    scale_ssss: np.ndarray = field(repr=False)
    scale_ddss: np.ndarray = field(repr=False)
    scale_dddd: np.ndarray = field(repr=False)
    tol: float = 1e-10
    info: dict = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return float(max(np.max(self.error_ssss), np.max(self.error_ddss), np.max(self.error_dddd),
                         np.max(self.error_ss), np.max(self.error_dd)))

    def __repr__(self) -> str:
        N = self.K.shape[0]
        rel = max(float(np.max(e / np.maximum(s, 1e-300))) for e, s in (
            (self.error_ssss, self.scale_ssss), (self.error_ddss, self.scale_ddss), (self.error_dddd, self.scale_dddd)))
        return (f"FourPointMoments({self.activation}; N={N}; ssss, ddss, dddd (N,N,N,N), ss, dd (N,N); "
                f"max estimated error {self.max_error:.1e} absolute, {rel:.1e} relative to E|product| "
                f"(tol {self.tol:g}); {self.info.get('seconds', float('nan')):.3f} s, "
                f"{self.info.get('not_converged', 0)} sets not converged)")


def _step_hint(predicted) -> float:
    """The starting step of the next call from the sets' predicted passing steps: 0.9 times their
    30th percentile, in [0.05, 0.75] (the prediction runs high, so the plain percentile would have
    most sets fail their first pair)."""
    return min(max(0.9 * float(np.percentile(predicted, 30)), 0.05), 0.75)


def four_point_moments(kernel, K, *, tol: float = 1e-10, max_refine: int = 6, strict: bool = False, slopes=None,
                       name: str | None = None, progress=None, map=None, expansion=None) -> FourPointMoments:
    r"""E[s s s s], E[s' s' s s], E[s' s' s' s'] (and E[s s], E[s' s']) for z ~ N(0, K).

    ``kernel``: the activation's :class:`FourPointKernel` (:func:`compiled_pair`), or a callable of
    no arguments returning it (called only when a set needs the numerical integrator).  ``K``:
    (N, N) symmetric positive semi-definite, singular allowed.  ``tol``: the target error relative
    to E|product| of each entry.  Entries whose estimate stays above the target after
    ``max_refine`` refinements are reported with that estimate (``info["not_converged"]``) and one
    :class:`ntk_theory.AccuracyWarning` (the largest estimate relative to E|product|, the number of sets), or
    raise ArithmeticError with ``strict=True``.  ``slopes=(a, b)`` for s(x) = b x (x > 0), a x
    (x < 0): the exact orthant-moment route of :mod:`.orthant` (sets of nearly parallel inputs
    numerically); ``name`` names the activation in the result (default: the kernel's).
    Raises ValueError for a bad K and for divergent expectations.  ``progress``: a bar over the input
    sets (:func:`ntk_theory.progress.progress_bar`: True, False, or None for a terminal and a run of
    more than a few seconds).  ``map``: where the numerically integrated sets run: None (this process, two
    threads) or a callable ``map(fn, chunks)`` returning ``[fn(c) for c in chunks]`` in order, possibly
    elsewhere (:func:`ntk_theory.distributed.dask_map`); ``fn`` is a picklable :class:`SetBatch` and each
    chunk an int64 array of set numbers.  The result is the same either way, bit for bit.
    ``expansion``: whether the four- and three-input sets of a smooth activation go first to the block expansion of
    :mod:`.pair_expansion` (the sets it does not accept, and all others, to the nested quadrature): True always,
    False never, None (default) reads ``NTK_THEORY_FOURPOINT_EXPANSION`` (``1`` always, ``0`` never, unset or
    ``auto``: where :func:`.pair_expansion.cheaper_than_quadrature` predicts it cheaper).
    """
    from ..progress import progress_bar

    K = check_covariance(K)
    if map is not None and not callable(map):
        raise ValueError(f"map must be a callable map(fn, chunks) or None; got {map!r}")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
    if slopes is None and not isinstance(kernel, FourPointKernel):
        kernel = kernel()
    t0 = time.perf_counter()
    n_sets = sum(math.comb(K.shape[0], m) for m in (1, 2, 3, 4))
    with progress_bar(total=n_sets, desc=f"four-point moments, {K.shape[0]} inputs", unit="set", enabled=progress) as bar:
        if slopes is not None:
            factory = kernel if callable(kernel) and not isinstance(kernel, FourPointKernel) else (lambda: kernel)
            return _exact_moments(name or factory().name, slopes, factory, K, float(tol), int(max_refine), strict,
                                  t0, bar.update, map)
        return _numerical_moments(kernel, K, tol, max_refine, strict, t0, bar.update, map, expansion)


def _numerical_moments(kern, K, tol, max_refine, strict, t0, tick, map=None, expansion=None) -> FourPointMoments:
    """Every set by the compiled nested quadrature (:func:`four_point_moments`, smooth or kinked), the
    four- and three-input sets of smooth activations first by the block expansion (:func:`_expand_sets`)."""
    tasks, vals, errs, scales, info = _integrate_sets(kern, K, tol, max_refine, strict, t0, tick, map,
                                                      expansion=expansion)
    return _assemble(kern.name, K, tasks.combo, vals, errs, scales, float(tol), info)


#: NTK_THEORY_FOURPOINT_EXPANSION's values -> the ``expansion`` argument
_EXPANSION_ENV = {"0": False, "1": True, "auto": None, "": None}


def _expansion_mode(kern, expansion):
    """The block expansion's mode: False (a kinked activation, or not wanted), True (always tried) or None (tried
    where the cost model prefers it); ``expansion`` None reads ``NTK_THEORY_FOURPOINT_EXPANSION``."""
    if len(kern.kinks):
        return False
    if expansion is None:
        value = os.environ.get("NTK_THEORY_FOURPOINT_EXPANSION", "auto").strip().lower()
        if value not in _EXPANSION_ENV:
            raise ValueError(f"NTK_THEORY_FOURPOINT_EXPANSION must be 0, 1 or auto; got {value!r}")
        return _EXPANSION_ENV[value]
    return bool(expansion)


def _expand_sets(kern, K, tasks, todo, tol, family, forced=True) -> tuple:
    """The sets of four and three inputs among the task numbers ``todo`` by :func:`.pair_expansion.expand`:
    (the accepted task numbers, a list of (task numbers, values, errors, scales) per size, the values in
    family_products(family, m) order, info dict).  ``forced`` False: none (info ``{"route": "quadrature",
    "pairs": P}``) where :func:`.pair_expansion.cheaper_than_quadrature` predicts the quadrature cheaper."""
    from . import pair_expansion

    t0 = time.perf_counter()
    groups, tids = {}, {}
    for m in (4, 3):
        ts = todo[tasks.sizes[todo] == m]
        prods = family_products(family, m)
        if ts.size and prods:
            groups[m], tids[m] = (tasks.sets[ts, :m], prods), ts
    if not groups:
        return todo[:0], [], {}
    if not forced and not pair_expansion.cheaper_than_quadrature(groups):
        return todo[:0], [], {"route": "quadrature", "pairs": pair_expansion.count_pairs(groups), "sets": 0}
    res, pairs = pair_expansion.expand(kern.functions(_family_order(family)), K, groups, tol)
    parts, accepted = [], []
    info = {"pairs": pairs}
    for m, r in res.items():
        acc = r.accepted
        parts.append((tids[m][acc], r.values[acc], r.errors[acc], r.scales[acc]))
        accepted.append(tids[m][acc])
        info[f"sets{m}"] = int(acc.sum())
        info[f"fallback{m}"] = int(acc.size - acc.sum())
        info[f"max_degree{m}"] = int(r.degrees[acc].max()) if acc.any() else 0
    info["sets"] = sum(int(a.size) for a in accepted)
    info["seconds"] = time.perf_counter() - t0
    return np.concatenate(accepted), parts, info


#: extra refinements (factor 1.5 each) of the sets retried without the table: the step goes down to 0.5 / 1.5^(6 + 10)
#: ~ 7e-4, enough for activations varying on scales down to ~1/100 (x (1 + erf(beta x)) / 2 at beta = 64 passes
#: tol 1e-10 after 11-12)
_SHARP_EXTRA = 10


def _retry_sharp(kern, K, tol, max_refine, tasks, map, vals, errs, scales, levels, status) -> None:
    """Sets of at most two variables of a smooth activation that did not converge, integrated again without the
    deepest level's table and with ``_SHARP_EXTRA`` more refinements; their results replace the first ones where
    they converge (in place).  The table's Gaussian smoothing G_f(mu) = E[f(mu + sigma u)] is a Gauss-Legendre sum
    on panels of fixed width 1.5 in z, blind to an activation that varies on a smaller scale (x (1 + erf(beta x)) / 2
    for beta >~ 8: s'' and s''' have width 1/beta), and its error check halves the same panels, so refining the
    outer step never repairs it; the nested trapezoidal rule without the table converges geometrically once the step
    resolves the scale.  Sets of three and four variables are not retried (a nested rule at that step is too
    costly): they stay counted as not converged."""
    ranks = tasks.arrays[2]
    redo = np.flatnonzero((status == 1) & (ranks <= 2))
    if not redo.size:
        return
    out = _run(kern, K, float(tol), int(max_refine) + _SHARP_EXTRA, hz0=0.5, use_table=False, only=redo,
               tasks=tasks, map=map)
    ok = redo[out[4][redo] == 0]
    for full, new in zip((vals, errs, scales, levels, status), out[:5]):
        full[ok] = new[ok]


def _integrate_sets(kern, K, tol, max_refine, strict, t0, tick, map=None, family=None, only=None,
                    expansion=None) -> tuple:
    """The sets of K (all, or the task numbers ``only``) by the compiled nested quadrature, for the
    products of ``family`` (:func:`family_products`): (tasks, vals, errs, scales, info); the four- and
    three-input sets of a smooth activation first by the block expansion (:func:`_expansion_mode`), the sets
    it does not accept by the quadrature."""
    # start where the sets of the previous call at this tol converged (a layer recursion calls
    # this with similar K again and again): the refinements below that step are skipped
    # (smooth activations only: for kinked ones the panel caps shrink with the step, and a start
    # at 0.5 is cheaper than the hint)
    hinted = len(kern.kinks) == 0
    hkey = float(tol) if family is None else (float(tol), family)
    hz0 = kern.hz_hint.get(hkey, 0.5) if hinted else 0.5
    tasks = _tasks(K, family=family)
    T = len(tasks)
    todo = np.arange(T) if only is None else np.asarray(only, dtype=np.int64)
    requested = todo
    parts, xinfo = [], {}
    mode = _expansion_mode(kern, expansion)
    if mode is not False:
        acc, parts, xinfo = _expand_sets(kern, K, tasks, todo, float(tol), family, forced=mode is True)
        if acc.size:
            todo = todo[~np.isin(todo, acc)]
            only = todo
            if tick is not None:
                tick(int(acc.size))
    multi = todo[tasks.sizes[todo] >= 3]
    if hinted and hkey not in kern.hz_hint and len(multi) >= 24:
        # no hint yet (first call): integrate 6 of the sets of 3-4 variables from 0.5 first and
        # start the others at the step their predictions give
        probe = multi[:: len(multi) // 6][:6]
        first = _run(kern, K, float(tol), int(max_refine), hz0=0.5, only=probe, tasks=tasks, tick=tick,
                     map=map)
        hz0 = _step_hint(first[7][probe]) if not np.any(first[4] == 1) else 0.5
        keep = np.zeros(T, dtype=bool)
        keep[todo] = True
        keep[probe] = False
        rest = np.flatnonzero(keep)
        second = _run(kern, K, float(tol), int(max_refine), hz0=hz0, only=rest, tasks=tasks, tick=tick,
                      map=map)
        vals, errs, scales, levels, status, _, stats, hst = second
        for a, b in zip((vals, errs, scales, levels, status, stats, hst),
                        (first[0], first[1], first[2], first[3], first[4], first[6], first[7])):
            a[probe] = b[probe]
    else:
        vals, errs, scales, levels, status, _, stats, hst = _run(kern, K, float(tol), int(max_refine), hz0=hz0,
                                                                    only=only, tasks=tasks, tick=tick, map=map)
    for acc, xv, xe, xs in parts:
        cols = tasks.combo[acc, :xv.shape[1]]
        rows = acc[:, None]
        vals[rows, cols], errs[rows, cols], scales[rows, cols] = xv, xe, xs
    if hinted:
        _retry_sharp(kern, K, tol, max_refine, tasks, map, vals, errs, scales, levels, status)
    if hinted and multi.size and not np.any(status == 1):
        # the predicted largest passing step of each set (see _fourpoint_core._task); start the
        # next call where ~70% of the sets pass at once (a continuous step, not a 1.5^k grid;
        # cheaper than starting where all pass)
        kern.hz_hint[hkey] = _step_hint(hst[multi])
    if np.any(status == 2):
        bad = [tasks.members(t) for t in np.nonzero(status == 2)[0]][:3]
        raise ValueError(f"the Gaussian expectation diverges or the integrand is not finite "
                         f"(activation {kern.name}, input sets {bad} ...)")
    not_conv = int(np.sum(status == 1))
    if strict and not_conv:
        raise ArithmeticError(f"{not_conv} sets did not reach tol {tol:g}")
    seconds = time.perf_counter() - t0
    method = "numerical (nested quadrature)"
    if xinfo.get("sets"):
        method = (f"numerical (block expansion: {xinfo.get('sets4', 0)} four-input and {xinfo.get('sets3', 0)} "
                  f"three-input sets; nested quadrature: {todo.size} sets)")
    info = {"seconds": seconds, "sets": int(requested.size), "not_converged": not_conv,
            "refinements": levels[requested], "compile_seconds": kern.compile_seconds, "from_cache": kern.from_cache,
            "passes_fine": int(stats[:, 0].sum()), "passes_coarse": int(stats[:, 1].sum()),
            "table_panels": int(stats[:, 2].sum()), "method": method, "expansion": xinfo}
    return tasks, vals, errs, scales, info


@dataclass
class DerivativeMoments:
    """Gaussian moments of an activation's derivatives at N inputs (:func:`derivative_moments`):
    ``values[term]`` the tensor T[a, b, ...] = E[prod_j s^(term_j)(z_(a_j))] of shape (N,) * len(term),
    ``errors[term]`` the estimated absolute errors, ``scales[term]`` the E|product| each tolerance is
    relative to; ``info`` as :class:`FourPointMoments`'s."""

    activation: str
    K: np.ndarray
    values: dict
    errors: dict
    scales: dict = field(repr=False)
    tol: float = 1e-10
    info: dict = field(default_factory=dict)

    def __getitem__(self, term) -> np.ndarray:
        return self.values[tuple(term)]

    @property
    def max_error(self) -> float:
        return max((float(np.max(e)) for e in self.errors.values()), default=0.0)


def derivative_moments(kernel, K, terms, *, tol: float = 1e-10, max_refine: int = 6, strict: bool = False,
                       progress=None, map=None, expansion=None) -> DerivativeMoments:
    r"""E[s^(o_1)(z_a) s^(o_2)(z_b) s^(o_3)(z_c) s^(o_4)(z_d)] for z ~ N(0, K), all input tuples, per term.

    ``terms``: tuples (o_1, ..., o_k) of derivative orders 0..3 (k = 1..4; s^(0) = s, s^(1) = s', ...,
    pointwise derivatives: the Dirac terms of kinks are not included).  ``kernel``: the activation's
    :class:`FourPointKernel` with the derivatives needed (``d2s``, ``d3s``; or a callable of no arguments
    returning it).  The same method, tolerance and error estimate as :func:`four_point_moments` (every set
    of 1..k distinct inputs integrated once by the compiled nested quadrature for every product its
    entries need: for a set of m inputs every way of giving the term's factors to the m variables, each at
    least one; the terms of one call share the activation values of each node).  ``tol`` relative to
    E|product| of each entry; ``max_refine``, ``strict``, ``progress``, ``map``, ``expansion`` as there.  Raises
    ValueError for a bad K or bad terms and for divergent expectations."""
    from ..progress import progress_bar

    K = check_covariance(K)
    terms = _canonical_terms(terms)
    if map is not None and not callable(map):
        raise ValueError(f"map must be a callable map(fn, chunks) or None; got {map!r}")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1); got {tol!r}")
    if not isinstance(kernel, FourPointKernel):
        kernel = kernel()
    family = tuple(sorted({tuple(sorted(t)) for t in terms}))
    kernel.functions(_family_order(family))  # ValueError if a derivative is missing
    N = K.shape[0]
    kmax = max(len(t) for t in terms)
    _, sizes, _, _ = _all_sets(N)
    only = np.flatnonzero(sizes <= kmax)
    t0 = time.perf_counter()
    with progress_bar(total=int(only.size), desc=f"derivative moments, {N} inputs", unit="set",
                      enabled=progress) as bar:
        tasks, vals, errs, scales, info = _integrate_sets(kernel, K, tol, max_refine, strict, t0, bar.update, map,
                                                          family, only, expansion)
    values, errors, scs = {}, {}, {}
    for term in terms:
        t, c = _term_index_map(N, term, family)
        k = tasks.combo[t, c]
        shape = (N,) * len(term)
        values[term], errors[term], scs[term] = (x[t, k].reshape(shape) for x in (vals, errs, scales))
    info["seconds"] = time.perf_counter() - t0
    _warn_not_converged("derivative moments", kernel.name, errs, scales, float(tol), info)
    return DerivativeMoments(kernel.name, K, values, errors, scs, float(tol), info)


def _warn_not_converged(what, name, errs, scales, tol, info) -> None:
    """The accuracy policy (:class:`ntk_theory._checks.AccuracyWarning`): when input sets stay above ``tol`` after
    the refinements (``info["not_converged"]`` > 0, not ``strict``), one warning naming the moments, the largest
    error estimate relative to E|product| and the number of sets; the moments are returned with their estimates."""
    count = int(info.get("not_converged", 0))
    if not count:
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scales > 0, errs / np.where(scales > 0, scales, 1.0), np.where(errs > 0, np.inf, 0.0))
    worst = float(np.nanmax(rel, initial=0.0))
    warn_accuracy(f"the {what} of {name}", worst, tol,
                  f"{count} of {info.get('sets', '?')} input sets did not converge (estimates relative to E|product|; "
                  "a sharper activation needs a larger max_refine, or it is beyond this integrator)")


def _assemble(name, K, combo, vals, errs, scales, tol, info) -> FourPointMoments:
    """The (N, N, N, N) and (N, N) tensors from the per-set values: entry -> (task t, product c of
    products(m)) by :func:`_index_maps`, value vals[t, combo[t, c]] (gathers, no Python loop over
    entries)."""
    N = K.shape[0]
    maps = _index_maps(N)
    out = {}
    for nm in ("ssss", "ddss", "dddd", "ss", "dd"):
        t, c = maps[nm]
        k = combo[t, c]
        shape = (N,) * len(nm)
        out[nm], out["error_" + nm], out["scale_" + nm] = (x[t, k].reshape(shape) for x in (vals, errs, scales))
    _warn_not_converged("four-point moments", name, errs, scales, tol, info)
    return FourPointMoments(name, K, out["ssss"], out["ddss"], out["dddd"], out["ss"], out["dd"],
                            out["error_ssss"], out["error_ddss"], out["error_dddd"], out["error_ss"], out["error_dd"],
                            out["scale_ssss"], out["scale_ddss"], out["scale_dddd"], tol, info)


def _exact_moments(name, ab, kernel, K, tol, max_refine, strict, t0, tick=None, map=None) -> FourPointMoments:
    """Every set by the orthant moments of :func:`.orthant.set_moments`, batched over the sets of each
    size: full-rank sets by the recursion, exactly singular ones (more inputs than dimensions with
    C_b = 0, repeated or antiparallel inputs) as planar or solid cones of their rank, sets above tol
    recomputed with mpmath.  Sets go to the numerical integrator when nearly singular without an
    exact linear relation (smallest correlation eigenvalue below orthant.MIN_EIGENVALUE), with a
    zero variance, or full-rank with an estimate still above tol E|prod|; singular sets still
    above tol (the integrator is no better there) are kept and counted in info["not_converged"].
    ``kernel()`` gives the compiled activation, called only when a set needs the integrator."""
    from . import orthant

    a, b = ab
    N = K.shape[0]
    sets, sizes, _, _ = _all_sets(N)
    T = sizes.size
    vals = np.zeros((T, 64))
    errs = np.zeros((T, 64))
    scales = np.zeros((T, 64))
    combo = np.broadcast_to(np.arange(64, dtype=np.int64), (T, 64))  # values kept in products(m) order
    numeric = []
    kinds: dict = {}
    above_tol = 0
    for m in (4, 3, 2, 1):
        ts = np.flatnonzero(sizes == m)
        if ts.size == 0:
            continue
        S = sets[ts, :m]
        C = len(products(m))
        res = orthant.set_moments(K[S[:, :, None], S[:, None, :]], products(m), a, b, tol=tol)
        with np.errstate(invalid="ignore"):
            above = np.any(res.errors > tol * res.scales, axis=1)
        full = np.array([k == "full" for k in res.kinds])
        to_numeric = ~res.done | (above & full)
        numeric.extend(int(t) for t in ts[to_numeric])
        ok = ~to_numeric
        vals[ts[ok], :C], errs[ts[ok], :C], scales[ts[ok], :C] = res.values[ok], res.errors[ok], res.scales[ok]
        for n in np.flatnonzero(ok):
            kinds[res.kinds[n]] = kinds.get(res.kinds[n], 0) + 1
        above_tol += int(np.sum(above & ok))  # singular sets: the integrator is no better; reported as they are
        if tick is not None:
            tick(int(np.sum(ok)))
    numeric.sort()
    info = {"method": f"exact orthant moments ({T - len(numeric)} sets), numerical ({len(numeric)} sets)",
            "sets": T, "exact_sets": T - len(numeric), "exact_kinds": kinds, "not_converged": above_tol}
    if numeric:
        kern = kernel()
        sub = _tasks(K, only=np.array(numeric, dtype=np.int64))
        nv, ne, ns, levels, status, _, stats, _ = _run(kern, K, tol, max_refine, tasks=sub, tick=tick, map=map)
        for j, t in enumerate(numeric):
            cs = sub.combo[j, :len(products(int(sizes[t])))]
            C = cs.size
            vals[t, :C], errs[t, :C], scales[t, :C] = nv[j, cs], ne[j, cs], ns[j, cs]
        if np.any(status == 2):
            raise ValueError(f"the Gaussian expectation diverges or the integrand is not finite (activation {name})")
        info["not_converged"] += int(np.sum(status == 1))
        info.update(compile_seconds=kern.compile_seconds, from_cache=kern.from_cache,
                    passes_fine=int(stats[:, 0].sum()), passes_coarse=int(stats[:, 1].sum()))
    if strict and info["not_converged"]:
        raise ArithmeticError(f"{info['not_converged']} sets did not reach tol {tol:g}")
    info["seconds"] = time.perf_counter() - t0
    return _assemble(name, K, combo, vals, errs, scales, tol, info)
