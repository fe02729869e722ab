r"""Numerical methods for Gaussian expectations, below the symbolic layer.

Everything here takes Python / NumPy / Numba callables and covariance matrices; nothing imports
the symbolic packages (activations, gaussian, recursions, codegen, finite_width).  The symbolic
layer (:mod:`ntk_theory.gaussian`) chooses a closed form or one of these methods.

=======================  ==============================================================================
module                   what
=======================  ==============================================================================
compensated              Dekker's error-free product, the determinant p q - c^2 and c - a x without
                         cancellation (plain arithmetic; ``compensated_numba`` registers them for Numba)
cholesky                 pivoted, rank-revealing Cholesky factor of a small covariance
=======================  ==============================================================================
"""
