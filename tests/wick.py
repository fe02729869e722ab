"""Isserlis' (Wick's) theorem, the exact reference for Gaussian moments of polynomials in the tests."""


def wick(K, indices):
    """E[prod_a z_(indices[a])] for z ~ N(0, K): sum over perfect matchings of prod K (Wick)."""
    if not indices:
        return 1.0
    if len(indices) % 2:
        return 0.0
    first, rest = indices[0], indices[1:]
    return sum(K[first, rest[j]] * wick(K, rest[:j] + rest[j + 1:]) for j in range(len(rest)))
