r"""Validation of any architecture description: its infinite-width kernels against Monte Carlo over its finite
networks at several widths, extrapolated in 1/n.

At width n the description is ``with_width(description, n)`` (:func:`ntk_theory.montecarlo.graph.with_width`:
every hidden Dense layer n channels wide, the readout kept) and the prediction k_n is its kernel,
:func:`ntk_theory.recursions.graph.kernel` by default (computed per width: a FanInConcat's channel weights and a
'standard' NTK depend on the widths).  The Monte Carlo (:func:`ntk_theory.montecarlo.graph.sample_kernels`,
jackknife standard errors) estimates E_n = k_n + c_1/n + O(1/n^2) per entry, for E[f_a f_b] and E[Theta_ab].
Per entry ab the deviations

    y_n = (E_n - k_n) / s_n = c0 + c1/n,      s_n = sqrt(|k_n,aa k_n,bb|)   (1 where that is 0)

are fitted by weighted least squares with weights 1/SE_n^2 (:func:`ntk_theory.validation.fits.weighted_fit`); s_n
makes a 'standard' NTK, linear in n, comparable across widths.  The entry passes when |c0| < ``sigmas`` SE(c0)
(:mod:`ntk_theory.validation.verdict`).  It fails, with the reason in its row, when a standard error is NaN or 0,
or at the rounding level (a relative standard error at some width, or of c0, at most :data:`SE_FLOOR`): such an
entry is the same in every network, the Monte Carlo measured nothing.

E[f_a f_b] is the Rao-Blackwellised estimate (the readout's weights integrated out given its input).  Where that
estimate is deterministic (its relative standard error at some width at most :data:`SE_FLOOR`, e.g. the diagonal
C_b + C_W |x_a|^2 / n_in when the readout's input x is a LayerNorm output) the entry is judged by the plain mean
of f_a f_b over the networks instead (``E[f f] plain`` in the table); both estimate the same expectation.

Error model: SE(c0) is the weighted least-squares standard error from the jackknife standard errors (the widths
are independent runs); the neglected O(1/n^2) terms are part of what the check tests.  At 6000 networks per
width and widths 64, 128, 256, SE(c0) is 0.1-0.4% of the kernel's scale, so a kernel off by 2% fails.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..architecture import Layer
from ..docstrings import filled
from ..montecarlo.graph import sample_kernels, with_width
from ..recursions.spatial import require_vector_output
from .fits import weighted_fit
from .infinite_width import CheckReport, CheckRow
from .infinite_width import _reference_size as reference_size
from .verdict import OUTCOME_SECTIONS

__all__ = ["SE_FLOOR", "ArchitectureCheck", "ArchitectureRow", "check_architecture", "compare_entries"]

#: a relative standard error at or below this is rounding, not sampling: the entry cannot be judged
SE_FLOOR = 1e-12


@dataclass
class ArchitectureRow(CheckRow):
    """One compared entry of :func:`check_architecture`: :class:`CheckRow` with ``scale`` the per-width s_n, and
    failing when a standard error is at the rounding level (module docstring).

    Parameters
    ----------
    quantity, entry, prediction, estimates, r_inf, r_inf_se, slope, predictions
        As :class:`CheckRow`; ``r_inf``, ``slope`` are c0, c1.
    scale : list of float
        s_n per width.

    Examples
    --------
    An entry whose Monte Carlo does not vary between networks (standard error 1e-16 of the scale) has no
    verdict:

    >>> row = ArchitectureRow("E[f f]", (0, 0), 1.0, [(8, 1.0, 1e-16), (16, 1.0, 1e-16)], 0.0, 1e-16, 0.0,
    ...                       [1.0, 1.0], [1.0, 1.0])
    >>> row.rounding_level, row.outcome(4.0)
    (True, 'FAIL (standard error at the rounding level: the same in every network)')
    """

    @property
    def relative_stderrs(self) -> list:
        """SE_n / s_n per width, then SE(c0)."""
        scales = np.broadcast_to(np.asarray(self.scale, dtype=float), (len(self.estimates),))
        return [float(e) / abs(float(s)) for (_, _, e), s in zip(self.estimates, scales)] + [self.r_inf_se]

    @property
    def rounding_level(self) -> bool:
        """A relative standard error (per width, or of c0) is positive and at most :data:`SE_FLOOR`."""
        return any(0 < e <= SE_FLOOR for e in self.relative_stderrs if math.isfinite(e))

    @property
    def z(self) -> float:
        """c0 / SE(c0); NaN when a standard error is at the rounding level, 0 or not finite."""
        return math.nan if self.rounding_level else super().z

    @filled(outcome=OUTCOME_SECTIONS)
    def outcome(self, sigmas: float) -> str:
        """As :meth:`CheckRow.outcome`, failing with the reason at the rounding level.

        %(outcome)s

        Examples
        --------
        See :class:`ArchitectureRow`.
        """
        if self.rounding_level:
            return "FAIL (standard error at the rounding level: the same in every network)"
        return super().outcome(sigmas)


@dataclass
class ArchitectureCheck(CheckReport):
    """The result of :func:`check_architecture`: ``rows`` (:class:`ArchitectureRow`), ``passed``, ``table()``,
    ``plot(path)`` as :class:`ntk_theory.validation.CheckReport`; ``activation`` holds the description's repr.

    Parameters
    ----------
    activation : str
        The description's repr.
    rows : list of ArchitectureRow
    sigmas : float
    info : dict
        The set-up (widths, samples, seed, sampler, kernel under test, seconds).

    Examples
    --------
    See :func:`check_architecture`.
    """

    def _title(self) -> str:
        i = self.info
        return (f"check {self.activation}: widths {list(i.get('widths', ()))}, {i.get('samples')} networks per "
                f"width; kernel by {i.get('predict')}; deviations (MC - kernel)/sqrt(|k_aa k_bb|) fitted as c0 + c1/n")

    def _plot_title(self) -> str:
        i = self.info
        return (f"check {textwrap.shorten(self.activation, 110, placeholder=' ...')}: widths {list(i.get('widths', ()))}, "
                f"{i.get('samples')} networks per width")

    def _crosscheck_line(self) -> str:
        mp = self.info.get("f64_vs_mp")
        if mp is None:
            return ""
        return "float64 vs the same rules in mpmath (30 digits, reported): max relative difference " + (
            f"{mp:.1e}" if isinstance(mp, float) else str(mp))

    def _verdict_line(self) -> str:
        if self.passed:
            return f"Monte Carlo: all within {self.sigmas} standard errors: PASS"
        return "Monte Carlo: some entries FAIL: FAIL"


def _pair_scale(M) -> np.ndarray:
    d = np.sqrt(np.abs(np.diagonal(np.asarray(M, dtype=float))))
    s = np.outer(d, d)
    return np.where(s > 0, s, 1.0)


def compare_entries(quantity: str, widths, values, stderrs, predictions, row=ArchitectureRow) -> list:
    """The rows of one quantity: per entry a <= b of the (W, N, N) Monte Carlo ``values`` +- ``stderrs`` and the
    (W, N, N) ``predictions`` at the W ``widths``, the fit (E_n - k_n)/s_n = c0 + c1/n (module docstring).
    ``quantity`` may be a (N, N) array of labels (one per entry).

    Parameters
    ----------
    quantity : str or ndarray
        The label of the rows, or an (N, N) array of labels.
    widths : sequence of int
        The W widths.
    values, stderrs, predictions : array_like
        (W, N, N) Monte Carlo estimates, their standard errors and the predictions at each width.
    row : type, default ArchitectureRow
        The row class.

    Returns
    -------
    list of ArchitectureRow
        One row per entry a <= b.

    Raises
    ------
    ValueError
        If the three arrays are not all (W, N, N).

    Examples
    --------
    Estimates E_n = k (1 + 0.3/n) exactly, s_n = sqrt(k_aa k_bb) = 2: the fit recovers c0 = 0 and
    c1 = 0.3 k_ab / 2:

    >>> import numpy as np
    >>> k = np.array([[2.0, 1.0], [1.0, 2.0]]); n = np.array([8.0, 16.0])
    >>> E = np.stack([k * (1 + 0.3 / w) for w in n]); se = np.full_like(E, 0.01)
    >>> rows = compare_entries("E[f f]", n, E, se, np.stack([k, k]))
    >>> [r.entry for r in rows], bool(np.allclose([r.slope for r in rows], [0.3, 0.15, 0.3]))
    ([(0, 0), (0, 1), (1, 1)], True)
    >>> bool(np.allclose([r.r_inf for r in rows], 0.0)), rows[0].outcome(4.0)
    (True, 'pass')
    """
    widths = tuple(int(w) for w in widths)
    values, stderrs, predictions = (np.asarray(a, dtype=float) for a in (values, stderrs, predictions))
    if not values.shape == stderrs.shape == predictions.shape or values.shape[0] != len(widths):
        raise ValueError(f"values, stderrs and predictions must all be (W, N, N) with W = {len(widths)} widths; "
                         f"got {values.shape}, {stderrs.shape}, {predictions.shape}")
    scales = np.stack([_pair_scale(p) for p in predictions])
    coef, se, _ = weighted_fit(widths, (values - predictions) / scales, stderrs / scales, [0, 1])
    labels = np.broadcast_to(np.asarray(quantity, dtype=object), values.shape[1:])
    rows = []
    for a in range(values.shape[1]):
        for b in range(a, values.shape[2]):
            rows.append(row(str(labels[a, b]), (a, b), float(predictions[-1, a, b]),
                            list(zip(widths, values[:, a, b].tolist(), stderrs[:, a, b].tolist())),
                            float(coef[0, a, b]), float(se[0, a, b]), float(coef[1, a, b]),
                            predictions[:, a, b].tolist(), scales[:, a, b].tolist()))
    return rows


def _default_predict(description: Layer, X):
    from ..recursions.graph import kernel

    return kernel(description, X)


def check_architecture(
    description,
    X=None,
    widths=(64, 128, 256),
    samples: int = 20_000,
    seed: int = 0,
    sigmas: float = 4.0,
    progress: bool | None = None,
    mp_check: bool = False,
    *,
    predict: Callable | None = None,
    batches: int = 32,
    sampler: str = "projected",
    workers: int | None = None,
) -> ArchitectureCheck:
    """Compare the infinite-width NNGP and NTK of ``description`` (a layer description or a stax Network) with
    Monte Carlo over its finite networks at ``widths``, extrapolated in 1/n (module docstring).

    ``X``: inputs (N, d) (images (N, W, C) / (N, H, W, C) for convolutional descriptions), default :func:`ntk_theory.defaults.default_inputs`.  ``samples`` networks per width;
    width i draws with the i-th child of ``SeedSequence(seed)``.  ``predict(description, X)``: the kernel under
    test, returning an object with ``.nngp`` and ``.ntk`` (default :func:`ntk_theory.recursions.graph.kernel`).
    ``mp_check``: also report the largest relative difference of float64 from the same rules in 30-digit
    mpmath at the largest width (relative to ``|mpmath|``, or to ``1e-6 sqrt(|K_aa K_bb|)`` where that is larger; slow
    where expectations are numerical).  ``batches``, ``sampler``, ``workers``: as
    :func:`ntk_theory.montecarlo.graph.sample_kernels`.  ``progress``: True, False or None (bars when
    standard error is a terminal).  The kernel is computed at every width before any sampling, so a description
    it refuses (``NotImplementedError`` naming the layer) fails at once.

    Parameters
    ----------
    description : Layer or Network
        The architecture (``stax.serial(...)``).
    X : array_like, optional
        Inputs (N, d), or images.
    widths : sequence of int, default (64, 128, 256)
        At least two distinct hidden widths.
    samples : int, default 20000
        Networks per width.
    seed : int, default 0
    sigmas : float, default 4.0
        An entry passes when ``|c0| < sigmas SE(c0)``.
    progress : bool or None, default None
    mp_check : bool, default False
    predict : callable, optional
        ``predict(description, X)`` -> object with ``.nngp``, ``.ntk``.
    batches : int, default 32
    sampler : {'projected', 'dense'}, default 'projected'
    workers : int or None, default None

    Returns
    -------
    ArchitectureCheck

    Raises
    ------
    ValueError
        If ``description`` is not a description, or fewer than two distinct widths are given.

    Examples
    --------
    A one-hidden-layer ReLU network with W_std^2 = 2 at two unit inputs pi/3 apart (first-layer kernel cos theta):
    the predictions are the arc-cosine NNGP (1/pi)(sin theta + (pi - theta) cos theta) and the NTK
    NNGP + 2 (pi - theta)/(2 pi) cos theta, and the finite networks agree:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> net = stax.serial(stax.Dense(8, W_std=2 ** 0.5), stax.Relu(), stax.Dense(1, W_std=2 ** 0.5))
    >>> X = np.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]])
    >>> report = check_architecture(net, X, widths=(8, 16), samples=2000, progress=False)
    >>> t = np.pi / 3; nngp = (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi
    >>> bool(np.isclose(report.rows[1].prediction, nngp))
    True
    >>> bool(np.isclose(report.rows[4].prediction, nngp + 2 * (np.pi - t) / (2 * np.pi) * np.cos(t)))
    True
    >>> report.passed
    True
    """
    from ..defaults import default_inputs

    description = getattr(description, "description", description)
    if not isinstance(description, Layer):
        raise ValueError(f"expected an architecture description (stax.serial(...)); got {description!r}")  # noqa: TRY004 (bad input: a ValueError)
    X = default_inputs() if X is None else _checks.inputs(X, images=True)
    require_vector_output(description, X, "check (entries of (N, N) kernels)")
    widths = tuple(_checks.positive_int("widths", w) for w in widths)
    if len(set(widths)) < 2:
        raise ValueError(f"check needs at least two distinct widths to extrapolate to infinite width; got {widths}")
    predict = predict or _default_predict
    nets = [with_width(description, n) for n in widths]
    preds = [predict(d, X) for d in nets]
    info = {"widths": widths, "samples": samples, "seed": seed, "sampler": sampler,
            "predict": "recursions.graph.kernel" if predict is _default_predict else getattr(predict, "__name__", "predict")}
    if mp_check:
        from ..recursions.graph import kernel

        try:
            mp = kernel(nets[-1], X, dps=30)
            deviations = []
            for q in ("nngp", "ntk"):
                ref = np.asarray(getattr(mp, q), dtype=float)
                size = np.maximum(reference_size(ref), 1e-300)
                deviations.append(float(np.max(np.abs(getattr(preds[-1], q) - ref) / size)))
            info["f64_vs_mp"] = max(deviations)
        except (ValueError, ArithmeticError, NotImplementedError) as exc:  # reported; the Monte Carlo check goes on
            info["f64_vs_mp"] = f"not available ({exc})"
    seeds = np.random.SeedSequence(seed).spawn(len(widths))
    runs = [sample_kernels(d, X, samples, seed=sd, batches=batches, sampler=sampler, workers=workers, progress=progress)
            for d, sd in zip(nets, seeds)]
    rb = np.stack([r["nngp"].value for r in runs]), np.stack([r["nngp"].stderr for r in runs])
    plain = np.stack([r["output_second_moment"].value for r in runs]), np.stack([r["output_second_moment"].stderr for r in runs])
    k = np.stack([p.nngp for p in preds])
    # the Rao-Blackwellised estimate where it varies between networks, else the plain mean of f_a f_b
    deterministic = np.any(np.isfinite(rb[1]) & (rb[1] <= SE_FLOOR * np.stack([_pair_scale(m) for m in k])), axis=0)
    nngp = tuple(np.where(deterministic, p, r) for r, p in zip(rb, plain))
    rows = compare_entries(np.where(deterministic, "E[f f] plain", "E[f f]"), widths, *nngp, k)
    rows += compare_entries("E[Theta]", widths, np.stack([r["ntk"].value for r in runs]),
                            np.stack([r["ntk"].stderr for r in runs]), np.stack([p.ntk for p in preds]))
    info["seconds"] = sum(r.info["seconds"] for r in runs)
    return ArchitectureCheck(repr(description), rows, sigmas, info)
