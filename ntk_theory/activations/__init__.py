"""Activations: SymPy expressions in x with derivatives and NumPy/mpmath callables, and a library of names."""

from .activation import Activation, x
from .library import LIBRARY, NAMES, library_activation
from .parse import DivergentExpectation, activation, checked

__all__ = ["Activation", "x", "activation", "checked", "library_activation", "LIBRARY", "NAMES", "DivergentExpectation"]
