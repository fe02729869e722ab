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


def _finite(x) -> bool:
    return math.isfinite(float(x))


def z_score(estimate, prediction, stderr) -> float:
    """(estimate - prediction) / stderr as a float; NaN when the entry cannot be judged (module docstring)."""
    estimate, prediction, stderr = float(estimate), float(prediction), float(stderr)
    if not (_finite(estimate) and _finite(prediction) and _finite(stderr)) or stderr <= 0:
        return math.nan
    return (estimate - prediction) / stderr


def passes(z, sigmas: float) -> bool:
    """``|z| < sigmas`` for a finite z; a NaN z (no standard error) fails."""
    return _finite(z) and abs(float(z)) < sigmas


def outcome(z, sigmas: float, estimate=0.0, prediction=0.0, stderr=1.0) -> str:
    """The table's result cell: ``pass``, ``FAIL``, or ``FAIL (...)`` naming why the entry has no z-score."""
    if passes(z, sigmas):
        return "pass"
    if _finite(z):
        return "FAIL"
    if not (_finite(estimate) and _finite(prediction)):
        return "FAIL (not a number)"
    if not _finite(stderr):
        return "FAIL (standard error not finite)"
    return "FAIL (standard error 0)"
