"""Validation: predictions against the reference network's Monte Carlo (:mod:`ntk_theory.montecarlo`).

* :func:`check` (:mod:`.infinite_width`): the infinite-width NNGP and NTK against Monte Carlo at several
  widths, extrapolated in 1/n, and the float64 evaluation against an independent quadrature
  (``ntk-theory check``);
* :func:`check_architecture` (:mod:`.architecture`): the same for any architecture description (its kernel by
  :func:`ntk_theory.recursions.graph.kernel` against the Monte Carlo of its finite networks,
  ``ntk-theory check --arch``); :func:`compare_entries` its per-entry 1/n fit and verdict;
* :func:`check_finite_width` (:mod:`.finite_width`): the 1/n corrections K1, Theta1 and the readout tensors
  V, A, B, D, F against the Monte Carlo 1/n fits (``ntk-theory check --finite-width``);
* :func:`check_residual_finite_width` (:mod:`.residual`): a residual MLP's readout K1, V, Theta1, A, B, D, F at
  each input on its own against Monte Carlo 1/n fits of finite residual networks
  (``ntk-theory check --finite-width --arch``);
* :func:`fit_inverse_width`, :func:`fit_widths` (:mod:`.fits`): those fits;
* :mod:`.verdict`: the one rule by which every compared entry passes or fails.

Pipeline: reference -> montecarlo -> validation; the validation may use the symbolic layer (it computes
the predictions), the Monte Carlo it judges by does not.
"""

from .architecture import (
    SE_FLOOR,
    ArchitectureCheck,
    ArchitectureRow,
    check_architecture,
    compare_entries,
)
from .finite_width import COMPARED, FiniteWidthCheck, check_finite_width
from .fits import WidthFit, fit_inverse_width, fit_widths, weighted_fit
from .infinite_width import CROSSCHECK_RTOL, CheckReport, CheckRow, check, crosscheck
from .plot import Panel, plot_panels, require_matplotlib
from .residual import ResidualFiniteWidthCheck, check_residual_finite_width
from .verdict import outcome, passes, z_score

__all__ = [
    "COMPARED",
    "CROSSCHECK_RTOL",
    "SE_FLOOR",
    "ArchitectureCheck",
    "ArchitectureRow",
    "CheckReport",
    "CheckRow",
    "FiniteWidthCheck",
    "Panel",
    "ResidualFiniteWidthCheck",
    "WidthFit",
    "check",
    "check_architecture",
    "check_finite_width",
    "check_residual_finite_width",
    "compare_entries",
    "crosscheck",
    "fit_inverse_width",
    "fit_widths",
    "outcome",
    "passes",
    "plot_panels",
    "require_matplotlib",
    "weighted_fit",
    "z_score",
]
