r"""Monte Carlo of the readout layer's dNTK and ddNTK moments, with standard errors.

Networks are drawn from the PDLT initialisation (W(l) ~ N(0, C_W(l)/n_(l-1)), b(l) ~ N(0, C_b(l)), dense
weights) in blocks of S at once; for each, the exact dNTK dH and ddNTKs ddI, ddII of the readout layer
L+1 at the N inputs X come from :func:`ntk_theory.reference.dntk.readout_derivatives` (hand-written
higher-order forward mode, float64).  With ``outputs`` = m >= 2 readout neurons, n = the last hidden width
and the average over the m (m - 1) ordered pairs i != j of readout neurons, the estimators are::

    P_{a0 a1 a2 a3} = n E[dH_{i j j; a0 a1 a2} z_{i;a3}]      Q_{a0 a1 a2 a3} = n E[dH_{i i j; a0 a1 a2} z_{j;a3}]
    R_{a0 a1 a2 a3} = n E[ddIH_{i i j j; a0 a1 a2 a3}]
    S = n E[ddIIH_{i i j j}]      T = n E[ddIIH_{i j i j}]      U = n E[ddIIH_{i j j i}]

the coefficients of the leading-order decompositions (1/n times Kronecker deltas in the neurons) that
``E[dH z]``, ``E[ddIH]`` and ``E[ddIIH]`` take at initialization; every one is zero at layer 1.  Each is the
plain mean over networks of a per-network average, so its value carries the O(1/n) corrections of the
width n (fit them in 1/n over several widths, :func:`ntk_theory.validation.fits.weighted_fit`).

Error model: the networks are split into ``batches`` (B) of consecutive draws and the standard error is the
delete-one-batch jackknife of :mod:`ntk_theory.montecarlo.estimate` (for these plain means, the batch-means
standard error), itself uncertain by about 1/sqrt(2 (B - 1)) relative.  An entry that is exactly the same on
every network (a zero by symmetry, e.g. P of a one-hidden-layer linear network) has standard error 0: its
z-score is NaN and :meth:`DNTKStatistics.agrees_with` fails on it, never z = 0; test such entries by equality.
"""

from __future__ import annotations

import time

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from ..docstrings import filled
from ..reference.activations import numpy_activation
from ..reference.dntk import readout_derivatives
from .estimate import DOC_SECTIONS, WidthStatistics, jackknife, run_blocks, run_info, run_settings

Array = np.ndarray

__all__ = ["DNTK_QUANTITIES", "DNTKStatistics", "sample_dntk"]

# a data table laid out like finite_width.QUANTITIES and statistics.ESTIMATES: names and descriptions, not shared logic
#: name -> (description, the tensor it needs)
DNTK_QUANTITIES = {
    "P": ("n E[dH_{i j j; a0 a1 a2} z_{i;a3}], i != j", "dntk"),
    "Q": ("n E[dH_{i i j; a0 a1 a2} z_{j;a3}], i != j", "dntk"),
    "R": ("n E[ddIH_{i i j j; a0 a1 a2 a3}], i != j", "ddI"),
    "S": ("n E[ddIIH_{i i j j; a1 a2 a3 a4}], i != j", "ddII"),
    "T": ("n E[ddIIH_{i j i j; a1 a2 a3 a4}], i != j", "ddII"),
    "U": ("n E[ddIIH_{i j j i; a1 a2 a3 a4}], i != j", "ddII"),
}

# the neuron-index pattern of each estimator: einsum taking the (S, O, ...) tensor to (S, O_i, O_j, inputs)
_PATTERNS = {
    "P": "sijjabc->sijabc",
    "Q": "siijabc->sijabc",
    "R": "siijjabcd->sijabcd",
    "S": "siijjabcd->sijabcd",
    "T": "sijijabcd->sijabcd",
    "U": "sijjiabcd->sijabcd",
}


class DNTKStatistics(WidthStatistics):
    """Estimates (value, stderr), each (N, N, N, N), of the quantities of :data:`DNTK_QUANTITIES` at one width;
    ``info`` the run's set-up (width ``n``, samples, batches, seconds).

    Parameters
    ----------
    estimates : dict
        {name: :class:`~ntk_theory.montecarlo.Estimate`}.
    X : ndarray
        The inputs (N, n_0).
    info : dict

    Examples
    --------
    See :func:`sample_dntk`.
    """

    def agrees_with(self, prediction, sigmas: float = 4.0) -> bool:
        """True iff every entry of every estimate the prediction has (a dict or an object with attributes P, Q,
        ...) is within ``sigmas`` standard errors of it; an entry with a zero or non-finite standard error
        fails (its z-score is NaN).

        Parameters
        ----------
        prediction : dict or object
            P, Q, ... (N, N, N, N) as keys or attributes.
        sigmas : float, default 4.0

        Returns
        -------
        bool

        Raises
        ------
        ValueError
            If the prediction has none of the estimates.

        Examples
        --------
        See :func:`sample_dntk`.
        """
        z = self.z_score(prediction)
        if not z:
            raise ValueError(f"the prediction has none of the estimates {list(self.estimates)}")
        value = self.max_abs_z(z)
        return bool(np.isfinite(value) and value < sigmas)

    table_rows = 10

    def heading(self) -> list:
        """The set-up line above :meth:`~ntk_theory.montecarlo.estimate.NetworkEstimates.table`'s estimates.

        Returns
        -------
        list of str
        """
        i = self.info
        return [f"{i['samples']} networks ({i['activation']}, depth {i['depth']}, n = {i['n']}, C_W={i['C_W'][-1]}, "
                f"C_b={i['C_b'][-1]}, param={i['param']!r}, {i['outputs']} readout neurons, {i['seconds']:.1f} s)"]

    def __repr__(self) -> str:
        i = self.info
        return (f"<DNTKStatistics {i['activation']} depth {i['depth']} n={i['n']} N={self.X.shape[0]}, "
                f"{i['samples']} networks: {', '.join(self.estimates)}>")


def _draw(spec: MLPSpec, S: int, rng: np.random.Generator):
    weights, biases = [], []
    for l in range(spec.n_layers):
        n_in, n_out = spec.widths[l], spec.widths[l + 1]
        weights.append(rng.standard_normal((S, n_out, n_in)) * np.sqrt(spec.C_W[l] / n_in))
        biases.append(rng.standard_normal((S, n_out)) * np.sqrt(spec.C_b[l]))
    return weights, biases


def _features(res: dict, quantities, n: int) -> dict:
    """Per network, n times the average over ordered pairs i != j of each estimator (flattened to (S, N^4))."""
    z = res["z"]  # (S, O, N)
    S, O, _ = z.shape
    pairs = O * (O - 1)
    out = {}
    for name in quantities:
        per = np.einsum(_PATTERNS[name], res[DNTK_QUANTITIES[name][1]])  # (S, O_i, O_j, ...)
        if name == "P":
            per = np.einsum("sijabc,sid->sijabcd", per, z)
        elif name == "Q":
            per = np.einsum("sijabc,sjd->sijabcd", per, z)
        total = per.sum(axis=(1, 2)) - np.einsum("siiabcd->sabcd", per)
        out[name] = (n / pairs) * total.reshape(S, -1)
    return out


def _block_size(spec: MLPSpec, N: int, memory_mb: float) -> int:
    O = spec.output_dim
    K = O * N
    directions = K + K * (K + 1) // 2 + K * (K + 1) * (K + 2) // 6
    weights = sum(a * b for a, b in zip(spec.widths[:-1], spec.widths[1:]))
    per_net = 8 * (2 * weights + 6 * directions * N * sum(spec.widths[1:]) + 3 * K * K * max(spec.widths) + 8 * K**4)
    return int(np.clip(memory_mb * 2**20 // per_net, 1, 1024))


@filled(**DOC_SECTIONS)
def sample_dntk(
    activation,
    X,
    depth: int,
    width,
    *,
    C_W=1.0,
    C_b=0.0,
    param: str = "ntk",
    outputs: int = 2,
    samples: int = 4000,
    seed=0,
    quantities=("P", "Q", "R", "S", "T", "U"),
    batches: int = 40,
    workers: int = 1,
    memory_mb: float = 64.0,
    progress: bool | None = None,
) -> DNTKStatistics:
    """Monte Carlo estimates of the readout layer's dNTK / ddNTK moments P, Q, R, S, T, U (module docstring)
    from ``samples`` networks, each (N, N, N, N) with its jackknife standard error.

    ``depth`` hidden layers of ``width`` (an int or one per hidden layer; n = the last one), ``activation`` as
    :func:`ntk_theory.reference.numpy_activation` accepts (it needs s'', and s''' for R), C_W and C_b scalars
    or one per layer (readout last), learning-rate factors of ``param``, inputs X (N, n_0), ``outputs`` >= 2
    readout neurons: more give outputs (outputs - 1) pairs i != j per network at a cost growing like
    (outputs N)^2 for P, Q and (outputs N)^3 for R and (outputs N)^4 for S, T, U, but the hidden layers are shared:
    at width 64, depth 3, one input, 8 outputs reach a given standard error on ReLU's P ~7 times faster than 2.
    Vectorised over blocks of networks (``memory_mb`` each) on ``workers`` threads; reproducible for a seed
    whatever the number of threads.

    Parameters
    ----------
    activation : str, tuple or NumpyActivation
        With s'' (and s''' for R).
    %(network)s
    C_W, C_b : float or sequence of float, default 1.0 and 0.0
    param : {'ntk', 'standard', 'unit'}, default 'ntk'
    outputs : int, default 2
        Readout neurons, >= 2.
    samples : int, default 4000
    seed : int, default 0
    quantities : sequence of str, default ('P', 'Q', 'R', 'S', 'T', 'U')
    batches : int, default 40
    workers : int, default 1
    memory_mb : float, default 64.0
    progress : bool or None, default None

    Returns
    -------
    DNTKStatistics

    Raises
    ------
    ValueError
        If an argument is invalid (fewer than 2 outputs, an unknown quantity, an activation without the
        derivatives needed).

    Examples
    --------
    A one-hidden-layer linear network: only d^2 f_i / dW(2)_ik dW(1)_km = x_m is nonzero, so P = 0 on every
    network (its standard error is 0: checked by equality) and Q = C_W K_(a0 a2) K_(a1 a3) with
    K = C_W x.x' / n_0 (at one input x = (1, 0), C_W = 1: Q = 1/4), at every width:

    >>> import numpy as np
    >>> mc = sample_dntk("linear", np.array([[1.0, 0.0]]), 1, 8, C_W=1.0, samples=2000, quantities=("P", "Q"),
    ...                  progress=False)
    >>> bool(np.all(mc["P"].value == 0)), bool(np.all(mc["P"].stderr == 0))
    (True, True)
    >>> mc.agrees_with({"Q": np.full((1, 1, 1, 1), 0.25)})
    True
    """
    X = _checks.inputs(X)
    N = X.shape[0]
    outputs = _checks.positive_int("outputs", outputs)
    if outputs < 2:
        raise ValueError("outputs must be >= 2 (the estimators need two readout neurons i != j)")
    quantities = tuple(quantities)
    unknown = [q for q in quantities if q not in DNTK_QUANTITIES]
    if unknown or not quantities:
        raise ValueError(f"unknown quantities {unknown}; choose from {list(DNTK_QUANTITIES)}")
    spec = MLPSpec.build(X.shape[1], depth, width, outputs, C_W=C_W, C_b=C_b, param=param)
    act = numpy_activation(activation)
    orders = {DNTK_QUANTITIES[q][1] for q in quantities}
    for order in (2, 3) if "ddI" in orders else (2,):
        act.higher(order)  # ValueError now if the activation has no such derivative
    samples, batches = run_settings(samples, batches, "dense")
    n = spec.widths[spec.depth]
    factors = spec.learning_rate_factors()
    block = _block_size(spec, N, memory_mb)

    def sample_block(rng, S: int) -> dict:
        weights, biases = _draw(spec, S, rng)
        res = readout_derivatives(X, weights, biases, factors, act, orders=orders)
        return _features(res, quantities, n)

    t0 = time.perf_counter()
    sums = run_blocks(sample_block, samples, batches, block, seed, workers=workers, progress=progress,
                      desc=f"dNTK n={n}: {samples} networks")
    seconds = time.perf_counter() - t0
    shape = (N,) * 4
    values, stderr = jackknife(sums, lambda means, count: {k: v.reshape(shape) for k, v in means.items()})
    from .estimate import Estimate

    estimates = {q: Estimate(q, values[q], stderr[q], DNTK_QUANTITIES[q][0]) for q in quantities}
    info = run_info(act, spec, samples, seed, batches, "dense", block, workers, seconds, n=n, depth=spec.depth,
                    outputs=outputs, quantities=list(quantities))
    return DNTKStatistics(estimates, X, info)
