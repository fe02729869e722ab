"""Criticality of deep networks at initialisation: fixed points of the kernel map, susceptibilities,
depth scales, the critical line and point, universality classes, and the order/chaos phase diagram.

Modules: :mod:`.moments` (<s^2>, <s'^2>, d<s^2>/dK in float64 and mpmath), :mod:`.fixed_points`
(K*, chi_parallel, chi_perp, depth scales), :mod:`.universality` (scale-invariant and K* = 0 classes,
exact), :mod:`.critical` (critical line and points), :mod:`.phase` (phase diagram; matplotlib lazily).
"""

from .critical import Criticality, CriticalPoint, critical_line, criticality
from .fixed_points import FixedPoint, at, fixed_points, iterate
from .moments import Moments
from .phase import PhaseDiagram, phase_diagram
from .universality import Universality, universality

__all__ = [
    "criticality", "Criticality", "CriticalPoint", "critical_line", "fixed_points", "FixedPoint", "at", "iterate",
    "Moments", "universality", "Universality", "phase_diagram", "PhaseDiagram",
]
