"""The reference finite-width networks, in NumPy with hand-written derivatives: the ground truth the symbolic
layer is validated against, written independently of it.

* :class:`MLP` (:mod:`.network`): the dense MLP in PDLT coordinates, a thin constructor of its description
  (:meth:`MLP.as_description`, :mod:`.mlp_graph`) and parameters, run by :mod:`~ntk_theory.reference.graph` (:class:`Trace`: the
  forward pass);
* :mod:`~ntk_theory.reference.graph`: any architecture description (``stax``) with neural-tangents' parameter layout, exported as
  :func:`init_description` (``graph.init``), :func:`apply_description` (``graph.apply``),
  :func:`description_jacobian` (``graph.jacobian``) and :func:`description_ntk` (``graph.ntk``, the
  empirical NTK);
* :func:`numpy_activation` (:mod:`.activations`): the NumPy activations of both.
"""

import importlib

from .activations import NAMES as ACTIVATION_NAMES
from .activations import NumpyActivation, numpy_activation
from .network import MLP, Trace

# descriptions carry SymPy expressions: their interpreter is imported on first use, so importing the MLP
# and its samplers loads no symbolic module (the MLP imports it on its first forward pass)
_GRAPH = {"graph": None, "apply_description": "apply", "init_description": "init",
          "description_jacobian": "jacobian", "description_ntk": "ntk"}


def __getattr__(name):
    if name in _GRAPH:
        graph = importlib.import_module(".graph", __name__)
        return graph if _GRAPH[name] is None else getattr(graph, _GRAPH[name])
    raise AttributeError(f"module 'ntk_theory.reference' has no attribute {name!r}")


__all__ = ["ACTIVATION_NAMES", "MLP", "NumpyActivation", "Trace", "apply_description", "description_jacobian",
           "description_ntk", "graph", "init_description", "numpy_activation"]
