r"""Estimates with standard errors: the block runner, the batch sums and the delete-one-batch jackknife
shared by every Monte Carlo estimator of the package.

A run draws S independent networks in blocks.  Block k draws from ``SeedSequence(seed).spawn(K)[k]``
(K blocks of ``block`` networks), each network belongs to batch ``floor(i B / S)`` (i its index in the run,
B batches), and :func:`run_blocks` adds each block's per-network features up by batch, combining the
blocks in the order of k: the result does not depend on the number of threads.

Every estimate is a smooth function theta(m) of the mean features m (an *estimator*: a function of the
mean features and the number of networks, returning a dict of arrays).  :func:`jackknife` evaluates it
on all S networks and on the S - S_b networks left when batch b is deleted, and reports

    SE = sqrt((B - 1)/B sum_b (theta_(-b) - mean_b theta_(-b))^2),

the delete-one-batch jackknife.  For a plain mean it equals the batch-means standard error of the mean;
for a smooth function of means its error is O(1/S) relative, like the delta method's, and it needs no
derivative of theta.  The error of the SE itself is that of a chi-square with B - 1 degrees of freedom:
about 1/sqrt(2 (B - 1)) relative (13% for 32 batches).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .. import _checks
from ..docstrings import filled
from ..progress import progress_bar
from ..reference.ensemble import SAMPLERS

Array = np.ndarray

__all__ = [
    "SYMMETRIES",
    "Estimate",
    "EstimateTable",
    "NetworkEstimates",
    "WidthStatistics",
    "batch_sums",
    "distinct_entries",
    "jackknife",
    "run_blocks",
    "run_info",
    "run_settings",
    "symmetrise",
]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate with its standard error (same shape).

    Parameters
    ----------
    name : str
    value, stderr : ndarray
        Of the same shape.
    description : str, default ''

    Examples
    --------
    >>> import numpy as np
    >>> e = Estimate("K", np.array([1.1, 2.0]), np.array([0.05, 0.0]))
    >>> e.z_score([1.0, 2.0])                     # (1.1 - 1) / 0.05; no standard error: no z-score
    array([ 2., nan])
    """

    name: str
    value: Array
    stderr: Array
    description: str = ""

    def __repr__(self) -> str:
        return f"Estimate({self.name}: shape {self.value.shape}, max stderr {np.max(self.stderr):.3g})"

    def z_score(self, exact) -> Array:
        """(value - exact) / stderr, elementwise: how many standard errors off a prediction is.  An entry
        whose standard error is 0 or not finite has no z-score: NaN, never a silent 0 (and NaN fails every
        ``|z| < k`` test).

        Parameters
        ----------
        exact : array_like
            The prediction, broadcastable to the value's shape.

        Returns
        -------
        ndarray

        Examples
        --------
        See :class:`Estimate`.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (self.value - np.asarray(exact)) / self.stderr
        return np.where(np.isfinite(self.stderr) & (self.stderr > 0), z, np.nan)


# --------------------------------------------------------------------------- symmetries of tensors
#: index permutations under which a tensor of each symmetry is invariant
SYMMETRIES = {
    "pair": [(0, 1), (1, 0)],
    "pp": [(0, 1, 2, 3), (1, 0, 2, 3), (0, 1, 3, 2), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 0, 1), (2, 3, 1, 0),
           (3, 2, 1, 0)],
    "B": [(0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0)],
    "D": [(0, 1, 2, 3), (1, 0, 2, 3), (0, 1, 3, 2), (1, 0, 3, 2)],
    "F": [(0, 1, 2, 3), (2, 3, 0, 1)],
    "full": list(itertools.permutations(range(4))),
    "none": None,
}


def symmetrise(T: Array, symmetry: str) -> Array:
    """Average a (N,)*k tensor over the index permutations of ``symmetry`` (a key of :data:`SYMMETRIES`).

    Parameters
    ----------
    T : ndarray
        (N,) * k, k the permutations' length.
    symmetry : str
        'pair', 'pp', 'B', 'D', 'F', 'full' or 'none'.

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> T = np.arange(4.0).reshape(2, 2)
    >>> bool(np.array_equal(symmetrise(T, "pair"), (T + T.T) / 2))
    True
    >>> T4 = np.random.default_rng(0).standard_normal((2,) * 4)
    >>> S = symmetrise(T4, "full")                       # invariant under every permutation of the 4 indices
    >>> bool(np.allclose(S, S.transpose(1, 3, 0, 2))), bool(np.isclose(S.sum(), T4.sum()))
    (True, True)
    """
    perms = SYMMETRIES[symmetry]
    if perms is None:
        return T
    return sum(np.transpose(T, p) for p in perms) / len(perms)


def distinct_entries(shape, symmetry: str) -> list:
    """Index tuples of the distinct entries of a tensor of ``shape`` with ``symmetry``: one per orbit of
    the permutations, the smallest tuple of it, in lexicographic order of first appearance.

    Parameters
    ----------
    shape : tuple of int
    symmetry : str
        A key of :data:`SYMMETRIES`.

    Returns
    -------
    list of tuple

    Examples
    --------
    A symmetric N x N matrix has N (N + 1) / 2 distinct entries; a fully symmetric (N,)^4 tensor has
    binomial(N + 3, 4):

    >>> distinct_entries((2, 2), "pair")
    [(0, 0), (0, 1), (1, 1)]
    >>> from math import comb
    >>> len(distinct_entries((3,) * 4, "full")) == comb(3 + 3, 4)
    True
    """
    if not shape:
        return [()]
    perms = SYMMETRIES[symmetry]
    if perms is None or len(perms[0]) != len(shape):
        return list(itertools.product(*(range(n) for n in shape)))
    keys, seen = [], set()
    for idx in itertools.product(*(range(n) for n in shape)):
        canon = min(tuple(idx[i] for i in p) for p in perms)
        if canon not in seen:
            seen.add(canon)
            keys.append(canon)
    return keys


#: the sections every result table's ``symmetry`` and ``entry_note`` methods share (their subclasses'
#: overrides: each documents its own, the text written once here), and the samplers' network arguments
DOC_SECTIONS = dict(
    network="""X : array_like
    Inputs (N, n_0).
depth : int
    Hidden layers L.
width : int or sequence of int
    Hidden width(s); n the last one.""",
    symmetry="""Parameters
----------
name : str
    An estimate's name (or alias).

Returns
-------
str
    A key of :data:`~ntk_theory.montecarlo.estimate.SYMMETRIES`.

Examples
--------""",
    entry_note="""Parameters
----------
name : str
    An estimate's name.
idx : tuple of int
    The entry's index.

Returns
-------
str

Examples
--------""",
)

class EstimateTable:
    """Named estimates (``estimates``: {name: :class:`Estimate`}): ``table[name]`` and ``table.name`` (or an
    alias, :attr:`EstimateTable.aliases`: {alias: name}), z-scores against a prediction, and text rows of the distinct
    entries of each estimate (by its :meth:`EstimateTable.symmetry`).

    Examples
    --------
    >>> import numpy as np
    >>> table = EstimateTable()
    >>> table.estimates = {"K": Estimate("K", np.array([[1.1, 0.5], [0.5, 0.9]]), np.full((2, 2), 0.1), "E[f f]")}
    >>> z = table.z_score({"K": np.array([[1.0, 0.5], [0.5, 1.0]])})
    >>> bool(np.allclose(z["K"], [[1.0, 0.0], [0.0, -1.0]])), round(table.max_abs_z(z), 12)
    (True, 1.0)
    >>> print(table.table())                     # the base class knows no symmetry: every entry
    K: E[f f]
      [      0,0]   1.100000e+00 +- 1.00e-01
      [      0,1]   5.000000e-01 +- 1.00e-01
      [      1,0]   5.000000e-01 +- 1.00e-01
      [      1,1]   9.000000e-01 +- 1.00e-01
    """

    estimates: dict
    aliases: ClassVar[dict] = {}

    @filled(**DOC_SECTIONS)
    def symmetry(self, name: str) -> str:
        """The symmetry (a key of :data:`SYMMETRIES`) of estimate ``name``; subclasses know theirs.

        %(symmetry)s
        See :class:`EstimateTable`.
        """
        return "none"

    def __getitem__(self, name: str) -> Estimate:
        try:
            return self.estimates[self.aliases.get(name, name)]
        except KeyError:
            raise KeyError(f"no estimate {name!r}; have {', '.join(self.estimates)}") from None

    def __getattr__(self, name):
        estimates = self.__dict__.get("estimates", {})
        name = self.aliases.get(name, name)
        if name in estimates:
            return estimates[name]
        raise AttributeError(name)

    def prediction_of(self, prediction, name: str):
        """``prediction[name]`` from a dict, or its attribute, under the name or an alias of it; None if absent.

        Parameters
        ----------
        prediction : dict or object
        name : str

        Returns
        -------
        object or None

        Examples
        --------
        See :class:`EstimateTable`.
        """
        for nm in [name] + [k for k, v in self.aliases.items() if v == name]:
            if isinstance(prediction, dict):
                if nm in prediction:
                    return prediction[nm]
            elif hasattr(prediction, nm):
                return getattr(prediction, nm)
        return None

    def z_score(self, prediction) -> dict:
        """(estimate - prediction) / stderr for every estimate the prediction has (a dict, or an object with
        attributes, named as the estimates or their aliases): {name: z array}; :meth:`max_abs_z` summarises.

        Parameters
        ----------
        prediction : dict or object

        Returns
        -------
        dict

        Examples
        --------
        See :class:`EstimateTable`.
        """
        out = {}
        for name, est in self.estimates.items():
            value = self.prediction_of(prediction, name)
            if value is not None:
                out[name] = est.z_score(np.asarray(value, dtype=float))
        return out

    @staticmethod
    def max_abs_z(z: dict) -> float:
        """The largest ``|z|`` over ``z`` ({name: array}, :meth:`z_score`); NaN if any entry has no z-score.

        Parameters
        ----------
        z : dict

        Returns
        -------
        float

        Examples
        --------
        See :class:`EstimateTable`.
        """
        values = [np.abs(np.asarray(v, dtype=float)).ravel() for v in z.values()]
        return float(np.max(np.concatenate(values))) if values else 0.0

    def rows(self, names=None, max_rows: int = 10) -> list:
        """Text lines: per estimate its description and its first ``max_rows`` distinct entries, value +- SE
        (and :meth:`entry_note`), then how many more there are.

        Parameters
        ----------
        names : list of str, optional
        max_rows : int, default 10

        Returns
        -------
        list of str

        Examples
        --------
        See :class:`EstimateTable`.
        """
        lines = []
        for name in names or list(self.estimates):
            est = self.estimates[name]
            lines.append(f"{name}: {est.description}")
            keys = distinct_entries(est.value.shape, self.symmetry(name))
            for idx in keys[:max_rows]:
                label = ",".join(str(i) for i in idx)
                lines.append(f"  [{label:>9}]  {est.value[idx]: .6e} +- {est.stderr[idx]:.2e}{self.entry_note(name, idx)}")
            if len(keys) > max_rows:
                lines.append(f"  ... {len(keys) - max_rows} more distinct entries")
        return lines

    @filled(**DOC_SECTIONS)
    def entry_note(self, name: str, idx: tuple) -> str:
        """Text after an entry's row (subclasses: e.g. a fit's chi^2).

        %(entry_note)s
        See :class:`EstimateTable`.
        """
        return ""

    def table(self) -> str:
        """:meth:`rows` joined by newlines."""
        return "\n".join(self.rows())

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(self.table())


@dataclass
class NetworkEstimates(EstimateTable):
    """Estimates over sampled networks: ``estimates`` {name: :class:`Estimate`}, the inputs ``X`` (N, n_0) and
    ``info``, the run's set-up; the fields of every Monte Carlo result."""

    estimates: dict
    X: Array
    info: dict = field(default_factory=dict)

    #: how many distinct entries per estimate :meth:`table` shows by default
    table_rows: ClassVar[int] = 12

    def heading(self) -> list:
        """The lines :meth:`table` prints above the estimates: the run's set-up (none here; subclasses say theirs).

        Returns
        -------
        list of str
        """
        return []

    def table(self, names=None, max_rows: int | None = None) -> str:
        """The estimates as text (:meth:`~ntk_theory.montecarlo.EstimateTable.rows`) under :meth:`heading`.

        Parameters
        ----------
        names : list of str, optional
            The estimates to show (default: all).
        max_rows : int, optional
            Distinct entries per estimate (default: :attr:`table_rows`).

        Returns
        -------
        str
        """
        rows = self.rows(names, self.table_rows if max_rows is None else max_rows)
        return "\n".join(self.heading() + rows)


class WidthStatistics(NetworkEstimates):
    """The estimates of one Monte Carlo run at one width: ``estimates`` {name: :class:`Estimate`}, the inputs
    ``X`` (N, n_0), ``info`` the run's set-up (the width n under ``"n"``, samples, batches, seconds)."""

    @property
    def width(self) -> int:
        return self.info["n"]


# --------------------------------------------------------------------------- blocks and batches
def batch_sums(features: dict, batch_ids: Array, products=()) -> dict:
    """Per batch b present in ``batch_ids``: ``{"count": S_b, name: sum of features[name] over the batch,
    ...}`` and, for each ``(label, a, b)`` in ``products`` whose features are present,
    ``label: features[a]^T features[b]`` summed over the batch's networks (features are (S, k) arrays).

    Parameters
    ----------
    features : dict
        {name: (S, k) array}, one row per network.
    batch_ids : ndarray
        (S,) the batch of each network.
    products : sequence of tuple, default ()
        ``(label, a, b)``.

    Returns
    -------
    dict
        {batch: sums}.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0], [2.0], [3.0]])
    >>> sums = batch_sums({"x": x}, np.array([0, 0, 1]), products=[("xx", "x", "x")])
    >>> sums[0]["count"], sums[0]["x"], sums[0]["xx"], sums[1]["xx"]         # 1 + 2, 1 + 4, 9
    (2, array([3.]), array([[5.]]), array([[9.]]))
    """
    out = {}
    for b in np.unique(batch_ids):
        sel = batch_ids == b
        sums = {"count": int(sel.sum())}
        for key, x in features.items():
            sums[key] = x[sel].sum(axis=0)
        for label, a, c in products:
            if a in features and c in features:
                sums[label] = features[a][sel].T @ features[c][sel]
        out[int(b)] = sums
    return out


def run_settings(samples, batches, sampler: str) -> tuple[int, int]:
    """``samples`` and ``batches`` as integers, checked: batches >= 2 (a standard error needs two) and samples
    >= 2 batches; ``sampler`` one of the reference ensemble's.  ValueError naming the problem otherwise."""
    samples = _checks.positive_int("samples", samples)
    batches = _checks.positive_int("batches", batches)
    _checks.choice("sampler", sampler, SAMPLERS)
    if batches < 2:
        raise ValueError("batches must be >= 2 to estimate standard errors")
    if samples < 2 * batches:
        raise ValueError(f"samples ({samples}) must be at least twice the number of batches ({batches})")
    return samples, batches


def run_info(act, spec, samples: int, seed, batches: int, sampler: str, block: int, workers: int,
             seconds: float, **more) -> dict:
    """The set-up of a run, as the results' ``info`` records it (JSON-serialisable), and ``more``."""
    return {"activation": act.name, "widths": list(spec.widths), "C_W": list(spec.C_W), "C_b": list(spec.C_b),
            "param": spec.param, "samples": samples, "seed": seed if isinstance(seed, (int, type(None))) else str(seed),
            "batches": batches, "sampler": sampler, "block": block, "workers": workers, "seconds": seconds, **more}


def run_blocks(sample_block: Callable, samples: int, batches: int, block: int, seed, *, workers: int = 1,
               progress=None, desc: str = "", products=()) -> list:
    """Draw ``samples`` networks in blocks of ``block`` and return the per-batch sums (list of dicts, one per
    batch, as :func:`batch_sums` with ``products``).

    ``sample_block(rng, S)`` draws S networks with the generator ``rng`` and returns their features,
    ``{name: (S, k) array}``.  Blocks run on ``workers`` threads; block k uses the k-th child of
    ``SeedSequence(seed)`` (``seed`` an int, None or a SeedSequence) and blocks are combined in the order of
    k, so the result is the same for every thread count.  A progress bar as
    :func:`ntk_theory.progress.progress_bar` (``progress`` None: when standard error is a terminal).

    Parameters
    ----------
    sample_block : callable
        ``sample_block(rng, S) -> {name: (S, k) array}``.
    samples, batches, block : int
        Networks in all, batches, networks per block.
    seed : int, None or numpy.random.SeedSequence
    workers : int, default 1
    progress : bool or None, default None
    desc : str, default ''
        The progress bar's label.
    products : sequence of tuple, default ()
        As :func:`batch_sums`.

    Returns
    -------
    list of dict
        One per batch.

    Examples
    --------
    Standard normal "networks": the sums of x over the batches are the same on one thread or two, and
    :func:`jackknife` turns them into estimates:

    >>> import numpy as np
    >>> draw = lambda rng, S: {"x": rng.standard_normal((S, 1))}
    >>> one = run_blocks(draw, 1000, 10, 64, seed=3, workers=1)
    >>> two = run_blocks(draw, 1000, 10, 64, seed=3, workers=2)
    >>> len(one), all(np.array_equal(a["x"], b["x"]) for a, b in zip(one, two))
    (10, True)
    """
    starts = list(range(0, samples, block))
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    seeds = root.spawn(len(starts))

    def run(k: int) -> dict:
        i0 = starts[k]
        S = min(block, samples - i0)
        features = sample_block(np.random.default_rng(seeds[k]), S)
        ids = (np.arange(i0, i0 + S) * batches) // samples
        return batch_sums(features, ids, products)

    sums: list = [None] * batches
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = progress_bar(pool.map(run, range(len(starts))), total=len(starts), unit="block", desc=desc,
                               enabled=progress)
        for partial in results:
            for b, s in partial.items():
                if sums[b] is None:
                    sums[b] = s
                else:
                    for key, value in s.items():
                        sums[b][key] = sums[b][key] + value
    return sums


def jackknife(sums: list, estimator: Callable[[dict, float], dict]) -> tuple[dict, dict]:
    """The estimates on all networks and their delete-one-batch jackknife standard errors (module docstring).

    ``sums``: per-batch sums (:func:`run_blocks`); ``estimator(means, count)`` maps the mean features
    (each sum divided by the number of networks) and that number to ``{name: array}``.  Returns
    ``(values, stderr)``, two dicts with the estimator's names.

    Parameters
    ----------
    sums : list of dict
        Per-batch sums (:func:`run_blocks`, :func:`batch_sums`).
    estimator : callable
        ``estimator(means, count) -> {name: array}``.

    Returns
    -------
    values, stderr : dict
        {name: array}: the estimates on all networks, and sqrt((B - 1)/B sum_b (e_(-b) - mean e_(-b))^2).

    Examples
    --------
    For a plain mean with equal batches the jackknife standard error is the batch means' standard error,
    std(batch means) / sqrt(B); E[x^2] = 1 of a standard normal lies within a few standard errors:

    >>> import numpy as np
    >>> draw = lambda rng, S: {"x": rng.standard_normal((S, 1)), "x2": rng.standard_normal((S, 1)) ** 2}
    >>> sums = run_blocks(draw, 1000, 10, 100, seed=0)
    >>> value, se = jackknife(sums, lambda m, n: {"mean": m["x"], "second": m["x2"]})
    >>> batch_means = np.array([s["x"][0] / s["count"] for s in sums])
    >>> bool(np.isclose(se["mean"][0], batch_means.std(ddof=1) / np.sqrt(10)))
    True
    >>> bool(abs(value["second"][0] - 1.0) < 4 * se["second"][0])
    True
    """
    keys = [k for k in sums[0] if k != "count"]
    counts = np.array([s["count"] for s in sums], dtype=float)
    totals = {k: sum(s[k] for s in sums) for k in keys}
    n_total = counts.sum()
    full = estimator({k: v / n_total for k, v in totals.items()}, n_total)
    B = len(sums)
    leave_out = [estimator({k: (totals[k] - s[k]) / (n_total - counts[b]) for k in keys}, n_total - counts[b])
                 for b, s in enumerate(sums)]
    stderr = {}
    for name in full:
        stack = np.stack([lo[name] for lo in leave_out])
        stderr[name] = np.sqrt((B - 1) / B * ((stack - stack.mean(axis=0)) ** 2).sum(axis=0))
    return full, stderr
