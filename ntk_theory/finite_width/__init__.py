"""Finite-width 1/n corrections (PDLT): one-input scalar and N-input tensor recursions; residual MLPs (one input)."""

from .moments import OneInputAverages
from .network import FiniteWidthRecursion
from .predictions import FiniteWidthPredictions, finite_width
from .residual import ResidualRecursion
from .single import State

__all__ = [
           "FiniteWidthPredictions",
           "FiniteWidthRecursion",
           "OneInputAverages",
           "ResidualRecursion",
           "State",
           "finite_width",
]
