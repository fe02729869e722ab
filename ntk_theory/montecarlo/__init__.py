"""Monte Carlo over finite reference networks (:mod:`ntk_theory.reference`): estimates with standard errors.

* :func:`sample_statistics` (:mod:`.statistics`): moments of the outputs, the NTK and the last kernel;
* :func:`layer_statistics` (:mod:`.finite_width`): the readout layer's finite-width statistics (K, Theta,
  V, A, B, D, F) with variance-reduced estimators and control variates (:mod:`.controls`);
* :func:`sample_kernels` (:mod:`~ntk_theory.montecarlo.graph`): E[f f] and E[Theta] of any architecture description, with
  :func:`with_width` setting its hidden widths (:class:`GraphMonteCarlo` the result);
* :func:`sample_dntk` (:mod:`~ntk_theory.montecarlo.dntk`): the readout layer's dNTK / ddNTK moments P, Q, R, S, T, U;
* :mod:`.estimate`: the one block runner and the one delete-one-batch jackknife every estimator uses;
* :mod:`.quadrature`: Gaussian expectations of the reference activations by plain quadrature (the control
  variates' means, and the independent float64 cross-check of ``ntk-theory check``).

Nothing here imports the symbolic layer (``activations``, ``gaussian``, ``recursions``, ``finite_width``,
``codegen``): the Monte Carlo is independent of what it judges.  Fits in 1/n and verdicts are in
:mod:`ntk_theory.validation`.
"""

from .dntk import DNTKStatistics, sample_dntk
from .estimate import (
    Estimate,
    EstimateTable,
    batch_sums,
    distinct_entries,
    jackknife,
    run_blocks,
    symmetrise,
)
from .finite_width import (
    ALIASES,
    QUANTITIES,
    FiniteWidthTable,
    LayerStatistics,
    layer_statistics,
    symmetry_of,
)
from .statistics import ESTIMATES, MonteCarloResult, sample_statistics

_GRAPH = ("GraphMonteCarlo", "sample_kernels", "with_width")


def __getattr__(name):
    """The Monte Carlo of architecture descriptions (:mod:`.graph`) on first use: descriptions carry their
    activations as SymPy expressions, which the MLP samplers above do not load."""
    if name in _GRAPH:
        from . import graph

        return getattr(graph, name)
    raise AttributeError(f"module 'ntk_theory.montecarlo' has no attribute {name!r}")


__all__ = [
    "ALIASES",
    "DNTKStatistics",
    "ESTIMATES",
    "QUANTITIES",
    "Estimate",
    "EstimateTable",
    "FiniteWidthTable",
    "GraphMonteCarlo",
    "LayerStatistics",
    "MonteCarloResult",
    "batch_sums",
    "distinct_entries",
    "jackknife",
    "layer_statistics",
    "run_blocks",
    "sample_dntk",
    "sample_kernels",
    "sample_statistics",
    "symmetrise",
    "symmetry_of",
    "with_width",
]
