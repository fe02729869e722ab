r"""Validation: infinite-width predictions against the reference network's Monte Carlo at several widths.

At width n the Monte Carlo estimates y(n) of E[f_a f_b] and E[Theta_ab] differ from the infinite-width
prediction p by O(1/n).  For every distinct entry the relative deviation r(n) = (y(n) - p)/p (where p = 0,
an off-diagonal entry of orthogonal inputs, (y(n) - p)/sqrt(|p_aa p_bb|)) is fitted by weighted least
squares to r(n) = r_inf + c/n (weights 1/SE^2, :func:`ntk_theory.validation.fits.weighted_fit`); the entry
passes when the extrapolated r_inf is within ``sigmas`` standard errors of 0
(:mod:`ntk_theory.validation.verdict`: an entry whose standard error is 0 or not finite fails).  (For
``param="standard"`` the prediction is computed at each width, since its NTK grows with n.)

Numerical cross-check of the float64 evaluation: the same kernels by an independent quadrature
(:mod:`ntk_theory.montecarlo.quadrature`: polar Gauss-Legendre of the reference network's NumPy
activation, no symbolic layer), entry by entry.  It passes when
|float64 - quadrature| <= ``crosscheck_rtol`` |quadrature| + 4 (quadrature error estimate) + the float64
evaluation's own quadrature error estimate.  ``mp_check=True`` adds the recursion at 30 digits in
mpmath (:meth:`ntk_theory.recursions.KernelRecursion.evaluate_mp`), entry by entry with a progress
bar; it is slow for activations without a closed form (tens of seconds per entry for tanh) and is
reported, not judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..montecarlo import sample_statistics
from ..montecarlo.quadrature import quadrature_kernels
from ..docstrings import filled, returns
from ..progress import progress_bar
from ..recursions import KernelRecursion
from .fits import weighted_fit
from .plot import PLOT_SECTIONS, Panel, plot_panels
from .verdict import CHECK_PARAMETERS, OUTCOME_SECTIONS, outcome, passes, z_score

#: relative tolerance of the float64-vs-quadrature cross-check (on top of both error estimates)
CROSSCHECK_RTOL = 1e-9

@dataclass
class CheckRow:
    """One compared entry: the fit r(n) = (y(n) - p(n)) / scale = r_inf + slope/n of the Monte Carlo y(n)
    against the prediction p(n), with scale = p (a relative deviation) or, where p = 0, ``sqrt(|p_aa p_bb|)``.

    Parameters
    ----------
    quantity : str
        ``"E[f f]"`` or ``"E[Theta]"``.
    entry : tuple of int
        (a, b), a <= b.
    prediction : float
        The prediction at the largest width (at every width unless ``param="standard"``).
    estimates : list of tuple
        (width, value, stderr) of the Monte Carlo per width.
    r_inf, r_inf_se, slope : float
        The fitted intercept, its standard error and the 1/n coefficient.
    predictions : list of float
        The prediction at each width.
    scale : float or None
        The divisor of the deviations where it is not the prediction.

    Examples
    --------
    An entry is judged by z = r_inf / SE(r_inf) (:func:`~ntk_theory.validation.verdict.z_score`); a zero
    standard error is no verdict:

    >>> row = CheckRow("E[f f]", (0, 0), 1.0, [(8, 1.1, 0.05), (16, 1.05, 0.05)], r_inf=0.5, r_inf_se=0.25, slope=0.6)
    >>> row.z, row.outcome(4.0)
    (2.0, 'pass')
    >>> CheckRow("E[f f]", (0, 0), 1.0, [(8, 1.1, 0.0), (16, 1.0, 0.0)], 0.02, 0.0, 0.6).outcome(4.0)
    'FAIL (standard error 0)'
    """

    quantity: str
    entry: tuple
    prediction: float
    estimates: list  # (width, value, stderr)
    r_inf: float
    r_inf_se: float
    slope: float
    predictions: list = field(default_factory=list)  # the prediction at each width (param="standard": grows with n)
    scale: float | list | None = None  # the divisor of the deviations (one per width, or one); None: the prediction

    @property
    def z(self) -> float:
        """r_inf / SE(r_inf); NaN (a failing entry) when the standard error is 0 or not finite."""
        return z_score(self.r_inf, 0.0, self.r_inf_se)

    @filled(outcome=OUTCOME_SECTIONS)
    def outcome(self, sigmas: float) -> str:
        """``pass``/``FAIL``, with the reason when a width's estimate or standard error is missing.

        %(outcome)s

        Examples
        --------
        See :class:`CheckRow`.
        """
        values = [v for _, v, _ in self.estimates] + self.predictions
        missing = [e for _, _, e in self.estimates if not (np.isfinite(e) and e > 0)]
        se = missing[0] if missing else self.r_inf_se
        return outcome(self.z, sigmas, 0.0 if np.all(np.isfinite(values)) else np.nan, 0.0, se)


@dataclass
class CheckReport:
    """The result of :func:`check`: one :class:`CheckRow` per compared entry and the quadrature cross-check.

    Parameters
    ----------
    activation : str
        The activation checked.
    rows : list of CheckRow
        E[f f] entries, then E[Theta] entries, a <= b.
    sigmas : float
        The verdict's threshold.
    info : dict
        The set-up and the cross-check's numbers (:func:`crosscheck`).

    Examples
    --------
    See :func:`check`.
    """

    activation: str
    rows: list
    sigmas: float
    info: dict = field(default_factory=dict)

    @property
    def monte_carlo_passed(self) -> bool:
        """Every entry within ``sigmas`` standard errors."""
        return all(passes(r.z, self.sigmas) for r in self.rows)

    @property
    def crosscheck_passed(self) -> bool:
        """The float64 kernels agree with the independent quadrature (True when not run)."""
        return bool(self.info.get("crosscheck_passed", True))

    @property
    def passed(self) -> bool:
        """Both the Monte Carlo comparison and the quadrature cross-check pass."""
        return self.monte_carlo_passed and self.crosscheck_passed

    def table(self) -> str:
        """The report as text (``ntk-theory check``'s output): set-up, cross-check, one line per entry, verdict."""
        widths = [w for w, _, _ in self.rows[0].estimates]
        head = f"{'quantity':<12}{'entry':>6}{'prediction':>14}" + "".join(f"{'n=' + str(w):>20}" for w in widths)
        head += f"{'fit n->inf (rel.)':>22}{'z':>7}  result"
        lines = [line for line in (self._title(), self._crosscheck_line()) if line] + [head]
        for r in self.rows:
            cells = "".join(f"{v:>12.5g}±{se:<7.1g}" for _, v, se in r.estimates)
            fit = f"{r.r_inf:+.2e}±{r.r_inf_se:.1e}"
            ok = r.outcome(self.sigmas)
            lines.append(f"{r.quantity:<12}{','.join(map(str, r.entry)):>6}{r.prediction:>14.7g}{cells}{fit:>22}{r.z:>7.2f}  {ok}")
        lines.append(self._verdict_line())
        return "\n".join(lines)

    def _verdict_line(self) -> str:
        verdict = [f"Monte Carlo: all within {self.sigmas} standard errors" if self.monte_carlo_passed
                   else "Monte Carlo: some entries FAIL"]
        verdict.append("quadrature cross-check " + ("passes" if self.crosscheck_passed else "FAILS"))
        return "; ".join(verdict) + (": PASS" if self.passed else ": FAIL")

    def _title(self) -> str:
        i = self.info
        return (
            f"check {self.activation}: depth {i.get('depth')}, C_W={i.get('C_W')}, C_b={i.get('C_b')}, "
            f"param={i.get('param')!r}; {i.get('samples')} networks per width; kernels {i.get('kernels')}"
        )

    def _crosscheck_line(self) -> str:
        i = self.info
        line = (f"float64 vs independent quadrature: max relative difference {i.get('f64_vs_quadrature', float('nan')):.1e}"
                f" (quadrature error estimate {i.get('quadrature_error', float('nan')):.1e}, tolerance "
                f"{i.get('crosscheck_rtol', CROSSCHECK_RTOL):g} + estimates): "
                + ("pass" if self.crosscheck_passed else "FAIL"))
        if "f64_vs_mp" in i:
            mp = i["f64_vs_mp"]
            line += ("; float64 vs mpmath (30 digits): " + (f"{mp:.1e}" if isinstance(mp, float) else str(mp)))
        return line

    def __str__(self) -> str:
        return self.table()

    @filled(plot=PLOT_SECTIONS)
    def plot(self, path=None):
        """One panel per compared entry: the Monte Carlo estimates against 1/n with their standard
        errors, the weighted 1/n fit extrapolated to 1/n = 0 (with its standard error) and the
        infinite-width prediction.  Needs matplotlib (the ``plot`` extra); saves to ``path`` if given
        and returns the figure.

        %(plot)s
        With matplotlib (the ``plot`` extra), after :func:`check`: ``report.plot("check.png")``.
        """
        panels = []
        for r in self.rows:
            n = np.array([w for w, _, _ in r.estimates], dtype=float)
            y = np.array([v for _, v, _ in r.estimates])
            se = np.array([e for _, _, e in r.estimates])
            p = np.array(r.predictions or [r.prediction] * len(n), dtype=float)
            scale = np.array(r.scale if r.scale is not None else p, dtype=float) * np.ones_like(p)
            label = f"{r.quantity} {','.join(map(str, r.entry))}"
            if np.ptp(p) > 0:  # the prediction depends on n (param="standard"): relative deviations
                panels.append(Panel(label + "  ((y - p)/p)", 1 / n, (y - p) / scale, se / np.abs(scale),
                                    lambda x, r=r: r.r_inf + r.slope * x, 0.0, r.r_inf, r.r_inf_se, r.z))
            else:
                p0, s0 = float(p[0]), float(scale[0])
                panels.append(Panel(label, 1 / n, y, se, lambda x, r=r, p0=p0, s0=s0: p0 + s0 * (r.r_inf + r.slope * x),
                                    p0, p0 + s0 * r.r_inf, abs(s0) * r.r_inf_se, r.z))
        return plot_panels(panels, self._plot_title(), path)

    def _plot_title(self) -> str:
        return self._title()


def pair_scale(M) -> np.ndarray:
    """sqrt(|M_aa M_bb|) for a kernel M (N, N): the Cauchy-Schwarz scale of its entry ab."""
    d = np.sqrt(np.abs(np.diagonal(np.asarray(M, dtype=float))))
    return np.outer(d, d)


def _reference_size(ref) -> np.ndarray:
    """|ref_ab|, floored at 1e-6 sqrt(|ref_aa ref_bb|): an entry that vanishes (orthogonal inputs of an odd
    activation) is judged against a millionth of its scale, not against its own rounding error."""
    return np.maximum(np.abs(ref), 1e-6 * pair_scale(ref))


@filled(returns=returns("dict"))
def crosscheck(activation, X, depth, *, C_W, C_b, param, width, f64, rtol=CROSSCHECK_RTOL, progress=None) -> dict:
    """float64 kernels ``f64`` (a KernelResult at inputs X; ``width`` the hidden width for
    param="standard") against the independent quadrature, entry by entry (module docstring).  Returns
    ``f64_vs_quadrature`` (largest relative difference), ``quadrature_error`` (largest relative error
    estimate), ``crosscheck_passed`` and ``crosscheck_rtol``; relative to ``|quadrature|`` (or, for an entry
    below 1e-6 of ``sqrt(|K_aa K_bb|)``, to that).

    Parameters
    ----------
    activation : str
        The activation.
    X : ndarray
        Inputs (N, d).
    depth : int
        Hidden layers.
    C_W, C_b : float or sequence of float
        Weight and bias variances.
    param : {'ntk', 'standard', 'unit'}
        The NTK's learning-rate factors.
    width : int or None
        The hidden width (``param="standard"`` only).
    f64 : KernelResult
        The float64 kernels under test (``.nngp``, ``.ntk`` (N, N), ``info``).
    rtol : float, default CROSSCHECK_RTOL
        Relative tolerance on top of both error estimates.
    progress : bool or None, default None
        A progress bar.

    %(returns)s
    >>> import numpy as np
    >>> from ntk_theory.recursions import KernelRecursion
    >>> X = np.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]])
    >>> f64 = KernelRecursion("relu", 2, C_W=2.0, C_b=0.0)(X)
    >>> out = crosscheck("relu", X, 2, C_W=2.0, C_b=0.0, param="ntk", width=None, f64=f64, progress=False)
    >>> out["crosscheck_passed"], bool(out["f64_vs_quadrature"] < 1e-12)
    (True, True)
    """
    q = quadrature_kernels(activation, X, depth, C_W=C_W, C_b=C_b, param=param, widths=width, progress=progress)
    f64_err = float(f64.info.get("quadrature_error", 0.0) or 0.0)
    ok, dev, est = True, 0.0, 0.0
    for name in ("nngp", "ntk"):
        ref, err, val = q[name], q[name + "_error"], getattr(f64, name)
        size = np.maximum(_reference_size(ref), 1e-300)
        ok &= bool(np.all(np.abs(val - ref) <= rtol * size + 4 * err + f64_err))
        dev = max(dev, float(np.max(np.abs(val - ref) / size)))
        est = max(est, float(np.max(err / size)))
    return {"f64_vs_quadrature": dev, "quadrature_error": est, "crosscheck_passed": ok, "crosscheck_rtol": rtol}


def _mp_crosscheck(rec, X, f64, progress) -> float:
    """The largest relative difference of float64 from the 30-digit mpmath recursion, one entry at a time."""
    N = X.shape[0]
    worst = 0.0
    pairs = [(a, b) for a in range(N) for b in range(a, N)]
    for a, b in progress_bar(pairs, desc="mpmath cross-check (30 digits)", unit="entry", enabled=progress):
        mp = rec.evaluate_mp(X[a:a + 1], X[b:b + 1], dps=30)
        for name in ("nngp", "ntk"):
            ref = float(getattr(mp, name)[0, 0])
            worst = max(worst, abs(getattr(f64, name)[a, b] - ref) / max(abs(ref), 1e-300))
    return worst


@filled(**CHECK_PARAMETERS)
def check(
    activation="relu",
    X=None,
    depth: int = 3,
    *,
    C_W=2.0,
    C_b=0.0,
    param: str = "ntk",
    widths=(64, 128, 256, 512),
    samples: int = 20_000,
    seed: int = 0,
    sigmas: float = 4.0,
    progress: bool | None = None,
    mp_check: bool = False,
    crosscheck_rtol: float = CROSSCHECK_RTOL,
) -> CheckReport:
    """Compare the infinite-width NNGP and NTK of the output with Monte Carlo over finite networks,
    and the float64 evaluation with an independent quadrature (and with mpmath if ``mp_check``).

    ``X``: inputs (N, d) (a 1-D array is one input), default :func:`ntk_theory.defaults.default_inputs`.
    ``progress``: True, False or None (bars when standard error is a terminal).

    Parameters
    ----------
    activation : str, default 'relu'
        A library activation name or an expression in x.
    X : array_like, optional
        Inputs (N, d).
    depth : int, default 3
        Hidden layers L.
    %(variances)s
    widths : sequence of int, default (64, 128, 256, 512)
        The hidden widths of the Monte Carlo (at least two).
    samples : int, default 20000
        Networks per width; width i uses seed ``seed + i``.
    seed : int, default 0
    sigmas : float, default 4.0
        An entry passes when ``|r_inf| < sigmas SE(r_inf)``.
    progress : bool or None, default None
    mp_check : bool, default False
        Also report float64 against the 30-digit mpmath recursion.
    crosscheck_rtol : float, default CROSSCHECK_RTOL
        As :func:`crosscheck`.

    Returns
    -------
    CheckReport

    Raises
    ------
    ValueError
        If fewer than two widths are given, or an input, width or variance is invalid.

    Examples
    --------
    One ReLU hidden layer at C_W = 2, C_b = 0, inputs with C_W x.x / n_0 = 1 at angle theta = pi/3: the output
    NNGP is the arc-cosine kernel (C_W / 2 pi) (sin theta + (pi - theta) cos theta) off the diagonal:

    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]])
    >>> report = check("relu", X, depth=1, widths=(8, 16), samples=2000, progress=False)
    >>> t = np.pi / 3
    >>> bool(np.isclose(report.rows[1].prediction, 2 / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t))))
    True
    >>> report.passed, [row.outcome(report.sigmas) for row in report.rows]
    (True, ['pass', 'pass', 'pass', 'pass', 'pass', 'pass'])
    """
    from .. import _checks
    from ..defaults import default_inputs

    X = default_inputs() if X is None else _checks.inputs(X)
    N = X.shape[0]
    widths = tuple(_checks.positive_int("widths", w) for w in widths)
    if len(widths) < 2:
        raise ValueError("check needs at least two widths to extrapolate to infinite width")
    preds = []
    for n in widths:
        rec = KernelRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param, widths=n if param == "standard" else None)
        preds.append(rec(X))
    rec = KernelRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param, widths=widths[-1] if param == "standard" else None)
    info = {
        "depth": depth, "C_W": C_W, "C_b": C_b, "param": param, "samples": samples, "widths": widths,
        "kernels": "closed form" if all(k.closed_form for k in rec.kernels) else "numerical quadrature",
    }
    # the cross-checks first: they are quick (mpmath on request only) and fail early
    info.update(crosscheck(activation, X, depth, C_W=C_W, C_b=C_b, param=param, width=widths[-1] if param == "standard" else None,
                            f64=preds[-1], rtol=crosscheck_rtol, progress=progress))
    if mp_check:
        try:
            info["f64_vs_mp"] = _mp_crosscheck(rec, X, preds[-1], progress)
        except (ValueError, ArithmeticError, NotImplementedError) as exc:  # reported; the Monte Carlo check goes on
            info["f64_vs_mp"] = f"not available ({exc})"
    runs = [
        sample_statistics(X, activation, depth, n, C_W=C_W, C_b=C_b, param=param, samples=samples, seed=seed + i,
                          fourth_order=False, progress=progress)
        for i, n in enumerate(widths)
    ]
    rows = []
    for qty, est_name, attr in (("E[f f]", "output_second_moment", "nngp"), ("E[Theta]", "ntk_mean", "ntk")):
        for a in range(N):
            for b in range(a, N):
                p = np.array([getattr(pr, attr)[a, b] for pr in preds])
                y = np.array([run[est_name].value[a, b] for run in runs])
                se = np.array([run[est_name].stderr[a, b] for run in runs])
                scale = _scale(p, [pair_scale(getattr(pr, attr))[a, b] for pr in preds])
                (r_inf, slope), (r_se, _), _ = weighted_fit(widths, (y - p) / scale, se / np.abs(scale), [0, 1])
                rows.append(CheckRow(qty, (a, b), float(p[-1]), list(zip(widths, y, se)), float(r_inf), float(r_se),
                                     float(slope), [float(v) for v in p], None if scale is p else float(scale[-1])))
    return CheckReport(str(activation), rows, sigmas, info)


def _scale(p, diagonal):
    """The divisor of an entry's deviations: the prediction p (per width) where it is nonzero at every width, else
    sqrt(|p_aa p_bb|) (a zero off-diagonal prediction, orthogonal inputs of an odd activation), else 1."""
    p = np.asarray(p, dtype=float)
    if np.all(p != 0):
        return p
    d = np.asarray(diagonal, dtype=float)
    return d if np.all(d > 0) else np.ones_like(p)
