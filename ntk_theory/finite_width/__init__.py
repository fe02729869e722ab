"""Finite-width 1/n corrections (PDLT): one-input scalar and N-input tensor recursions."""

from .moments import OneInputAverages
from .network import FiniteWidthRecursion
from .single import State

__all__ = ["FiniteWidthRecursion", "OneInputAverages", "State"]
