"""The verdict on one compared entry: z = (estimate - prediction) / SE, and pass when ``|z| < sigmas``.

An entry is judged only when its standard error is a positive finite number and estimate and prediction are
finite.  Otherwise it has no z-score (NaN) and fails, with the reason in its table row: a zero standard error
is not "no deviation" (z = 0) but a Monte Carlo that measured nothing, and a NaN is a computation that went
wrong.  Both checks (:mod:`ntk_theory.validation.infinite_width`, :mod:`ntk_theory.validation.finite_width`)
judge every entry here.
"""

from __future__ import annotations

import math

__all__ = ["outcome", "passes", "z_score"]

#: the Parameters/Returns sections of every check row's ``outcome(sigmas)`` (written once, filled in there)
OUTCOME_SECTIONS = """Parameters
----------
sigmas : float
    The threshold on ``|z|``.

Returns
-------
str
    As :func:`~ntk_theory.validation.verdict.outcome`."""

#: Parameters entries the check functions share (written once, filled in there)
CHECK_PARAMETERS = dict(
    run="""seed : int, default 0
sigmas : float, default 4.0
    An entry passes when ``|z| < sigmas``.
progress : bool or None, default None""",
    variances="""C_W, C_b : float or sequence of float, default 2.0 and 0.0
    Weight and bias variances.
param : {'ntk', 'standard', 'unit'}, default 'ntk'
    The NTK's learning-rate factors.""",
)


def _finite(x) -> bool:
    return math.isfinite(float(x))


def z_score(estimate, prediction, stderr) -> float:
    """(estimate - prediction) / stderr as a float; NaN when the entry cannot be judged (module docstring).

    Parameters
    ----------
    estimate, prediction, stderr : float
        The Monte Carlo estimate, the prediction it is compared with, and the estimate's standard error.

    Returns
    -------
    float
        The z-score, or NaN when ``stderr`` is not a positive finite number or a value is not finite.

    Examples
    --------
    >>> z_score(1.3, 1.0, 0.1)                  # (1.3 - 1.0) / 0.1
    3.0000000000000004
    >>> import math
    >>> math.isnan(z_score(1.3, 1.0, 0.0)), math.isnan(z_score(float("nan"), 1.0, 0.1))
    (True, True)
    """
    estimate, prediction, stderr = float(estimate), float(prediction), float(stderr)
    if not (_finite(estimate) and _finite(prediction) and _finite(stderr)) or stderr <= 0:
        return math.nan
    return (estimate - prediction) / stderr


def passes(z, sigmas: float) -> bool:
    """``|z| < sigmas`` for a finite z; a NaN z (no standard error) fails.

    Parameters
    ----------
    z : float
        A z-score (:func:`z_score`).
    sigmas : float
        The threshold, in standard errors.

    Returns
    -------
    bool

    Examples
    --------
    >>> passes(3.9, 4.0), passes(-4.0, 4.0), passes(float("nan"), 4.0)
    (True, False, False)
    """
    return _finite(z) and abs(float(z)) < sigmas


def outcome(z, sigmas: float, estimate=0.0, prediction=0.0, stderr=1.0) -> str:
    """The table's result cell: ``pass``, ``FAIL``, or ``FAIL (...)`` naming why the entry has no z-score.

    Parameters
    ----------
    z : float
        The entry's z-score (NaN if it has none).
    sigmas : float
        The threshold of :func:`passes`.
    estimate, prediction, stderr : float, default 0.0, 0.0 and 1.0
        The values z was computed from, used only to name why a NaN z fails.

    Returns
    -------
    str
        ``"pass"``, ``"FAIL"``, ``"FAIL (not a number)"``, ``"FAIL (standard error not finite)"`` or
        ``"FAIL (standard error 0)"``.

    Examples
    --------
    >>> outcome(z_score(1.1, 1.0, 0.1), 4.0), outcome(z_score(1.5, 1.0, 0.1), 4.0)
    ('pass', 'FAIL')
    >>> outcome(z_score(1.1, 1.0, 0.0), 4.0, 1.1, 1.0, 0.0)
    'FAIL (standard error 0)'
    """
    if passes(z, sigmas):
        return "pass"
    if _finite(z):
        return "FAIL"
    if not (_finite(estimate) and _finite(prediction)):
        return "FAIL (not a number)"
    if not _finite(stderr):
        return "FAIL (standard error not finite)"
    return "FAIL (standard error 0)"
