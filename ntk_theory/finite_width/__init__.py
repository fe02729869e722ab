"""Finite-width 1/n corrections (PDLT): one-input scalar and N-input tensor recursions."""

from .moments import OneInputAverages
from .network import FiniteWidthRecursion
from .predictions import FiniteWidthPredictions, finite_width
from .single import State

__all__ = ["FiniteWidthRecursion", "FiniteWidthPredictions", "OneInputAverages", "State", "finite_width"]
