"""ntk-theory: exact kernels of wide neural networks, and the finite networks that check them.

Pipeline: activations -> gaussian -> recursions -> codegen (symbolic, infinite and finite width);
reference -> montecarlo -> validation (finite networks, the ground truth).
"""

from .architecture import MLPSpec
from .conventions import PARAMETERIZATIONS, learning_rate_factors
from .reference import MLP

__version__ = "0.1.0"

__all__ = ["MLP", "MLPSpec", "PARAMETERIZATIONS", "learning_rate_factors", "__version__"]
