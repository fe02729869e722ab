"""The reference finite-width network: NumPy MLP with hand-written forward-mode derivatives.

It is the ground truth the symbolic layer is validated against, written independently of it.
"""

from .activations import NAMES as ACTIVATION_NAMES
from .activations import NumpyActivation, numpy_activation
from .network import MLP, Trace

__all__ = ["MLP", "Trace", "NumpyActivation", "numpy_activation", "ACTIVATION_NAMES"]
