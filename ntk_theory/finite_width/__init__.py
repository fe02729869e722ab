"""Finite-width 1/n corrections (PDLT): one-input scalar and N-input tensor recursions; residual MLPs (one input);
the dNTK tensors P, Q (:mod:`.dntk`);
:func:`recursion_for` picks the recursion of a network description."""

from .description import NotDerived, recursion_for, why_not_derived
from .dntk import DNTKState  # also attaches FiniteWidthRecursion.dntk, .dntk_symbolic, .dntk_layer_map
from .moments import OneInputAverages
from .network import FiniteWidthRecursion
from .predictions import FiniteWidthPredictions, ResidualPredictions, finite_width
from .residual import ResidualRecursion
from .single import State

__all__ = [
           "DNTKState",
           "FiniteWidthPredictions",
           "FiniteWidthRecursion",
           "NotDerived",
           "OneInputAverages",
           "ResidualPredictions",
           "ResidualRecursion",
           "State",
           "finite_width",
           "recursion_for",
           "why_not_derived",
]
