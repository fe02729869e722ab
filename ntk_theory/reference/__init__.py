"""The reference finite-width networks, in NumPy with hand-written derivatives: the ground truth the symbolic
layer is validated against, written independently of it.

* :class:`MLP` (:mod:`.network`): the dense MLP, forward-mode derivatives (:class:`Trace`);
* :mod:`.graph`: any architecture description (``stax``) with neural-tangents' parameter layout, exported as
  :func:`init_description` (``graph.init``), :func:`apply_description` (``graph.apply``),
  :func:`description_jacobian` (``graph.jacobian``) and :func:`description_ntk` (``graph.ntk``, the
  empirical NTK);
* :func:`numpy_activation` (:mod:`.activations`): the NumPy activations of both.
"""

from . import graph
from .activations import NAMES as ACTIVATION_NAMES
from .activations import NumpyActivation, numpy_activation
from .graph import apply as apply_description
from .graph import init as init_description
from .graph import jacobian as description_jacobian
from .graph import ntk as description_ntk
from .network import MLP, Trace

__all__ = ["ACTIVATION_NAMES", "MLP", "NumpyActivation", "Trace", "apply_description", "description_jacobian",
           "description_ntk", "graph", "init_description", "numpy_activation"]
