"""Fast finite-width empirical NTK of any architecture description (Novak, Sohl-Dickstein, Schoenholz 2022)
and its cost model.

``empirical_ntk(net, X1, X2=None, method="auto", trace_outputs=True, batch_size=None, dtype=np.float64,
params=None)`` with ``net`` a description (``stax.serial(...)``, with ``params`` in neural-tangents' layout),
an MLP or a layer sequence, and ``method`` one of ``"jacobian_contraction"`` (J by reverse mode),
``"ntk_vector_products"``, ``"structured"``, ``"auto"`` (:mod:`.ntk`, :mod:`~ntk_theory.empirical.graph`); FLOPs and memory of
each method as formulas with one term per layer type, and ``auto``'s choice (:mod:`.cost`).
"""

from .cost import (
    DEFAULT_MEMORY,
    ELEMENT_RATE,
    FLOP_RATE,
    METHODS,
    Estimate,
    LayerCost,
    Problem,
    block_size,
    choose_method,
    cost_table,
    estimate,
    estimates,
    layer_cost,
    steps,
)
from .graph import PARAMETER_RULES, Model
from .ntk import Dense, DenseStack, empirical_ntk, jacobian, jvp, model, plan, vjp

__all__ = [
    "DEFAULT_MEMORY",
    "ELEMENT_RATE",
    "FLOP_RATE",
    "METHODS",
    "PARAMETER_RULES",
    "Dense",
    "DenseStack",
    "Estimate",
    "LayerCost",
    "Model",
    "Problem",
    "block_size",
    "choose_method",
    "cost_table",
    "empirical_ntk",
    "estimate",
    "estimates",
    "jacobian",
    "jvp",
    "layer_cost",
    "model",
    "plan",
    "steps",
    "vjp",
]
