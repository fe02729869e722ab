"""Activations: SymPy expressions in x with derivatives and NumPy/mpmath callables, and a library of names."""

from .activation import Activation, drop_deltas, lambdify_numpy, x
from .library import LIBRARY, NAMES, library_activation
from .parse import DivergentExpectation, activation, checked

__all__ = ["Activation", "x", "drop_deltas", "lambdify_numpy", "activation", "checked", "library_activation", "LIBRARY", "NAMES", "DivergentExpectation"]
