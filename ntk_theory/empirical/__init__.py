"""Fast finite-width empirical NTK (Novak, Sohl-Dickstein, Schoenholz 2022) and its cost model.

``empirical_ntk(net, X1, X2=None, method="auto", trace_outputs=True, batch_size=None, dtype=np.float64)``
with ``method`` one of ``"jacobian_contraction"``, ``"ntk_vector_products"``, ``"structured"``,
``"auto"`` (:mod:`.ntk`); FLOPs and memory of each method as formulas, and ``auto``'s choice (:mod:`.cost`).
"""

from .cost import (
    DEFAULT_MEMORY,
    ELEMENT_RATE,
    FLOP_RATE,
    METHODS,
    Estimate,
    Problem,
    block_size,
    choose_method,
    cost_table,
    estimate,
    estimates,
)
from .ntk import Dense, DenseStack, empirical_ntk, jacobian, jvp, plan, vjp

__all__ = [
    "empirical_ntk",
    "plan",
    "Dense",
    "DenseStack",
    "jacobian",
    "jvp",
    "vjp",
    "METHODS",
    "DEFAULT_MEMORY",
    "FLOP_RATE",
    "ELEMENT_RATE",
    "Problem",
    "Estimate",
    "estimate",
    "estimates",
    "choose_method",
    "block_size",
    "cost_table",
]
