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
quadrature               E[f(u)], E[f(u) g(v)], E[prod_i f_i(z_i)] (n <= 4) by nested tanh-sinh rules
                         split at kinks, float64, with error estimates
quadrature_batch         the same rule at a fixed step for arrays of covariances (kernel matrices)
quadrature_mp            the same rule in mpmath at any precision: the reference the tests use
onepoint                 d^n<g(z)>/dK^n, z ~ N(0, K), n = 0, 1, 2: the one-input moments (float64 and
                         mpmath; the first derivative in Stein's form for continuous g)
hermite                  Hermite tables a_n(k) = E[f(sqrt(k) x) h_n(x)], their tail model and the
                         truncation order of Mehler's series; NumPy back end and series sums
hermite_numba            the Numba back end of the tables (Gauss-Hermite / graded Gauss-Legendre)
mehler                   Mehler's series and its truncation order as scalar Numba functions
                         (inlined into generated kernels)
gauss_legendre           compiled composite Gauss-Legendre E[f(u)], E[f(u) g(v)] split at kinks
bivariate                2-D Gauss-Legendre of E[f(u) f(v) H(u, v)] split at kinks (covariance
                         derivatives of kinked f by Gaussian integration by parts)
fourpoint                four-point moment tensors E[s s s s], E[s' s' s s], E[s' s' s' s'] at N inputs:
                         compiled nested quadrature (_fourpoint_*: Numba) or exact orthant moments
orthant                  exact truncated orthant moments E[z^k 1{z > 0}], m <= 4 (piecewise-linear s)
pair_expansion           the three- and four-input moments of smooth activations by a block Kibble-Slepian
                         expansion from Hermite coefficients of each pair of inputs (_fourpoint_pairs: Numba)
dirac                    E[prod_i f_i^(k_i)(z_i)], f_i products of a piecewise-linear s and s', derivatives
                         as distributions (Dirac terms): integration by parts onto the density + orthant
=======================  ==============================================================================
"""
