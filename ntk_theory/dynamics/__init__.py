"""Training dynamics in function space (Jacot et al. 2018): closed-form outputs under gradient flow and
gradient descent on the squared loss, their ensemble mean and covariance, and real training of the
reference network to check them.

Modules: :mod:`.loss` (normalisation; the map to neural-tangents), :mod:`.spectral` (checked eigh),
:mod:`.schedule` (per-mode factors of flow / GD / t = inf), :mod:`.predict` (:class:`MSEDynamics`),
:mod:`.ensemble` (mean and covariance over initialisations), :mod:`.finite_width`
(:class:`FiniteWidthDynamics`: the finite network's linearised model at O(1/n)), :mod:`.training` (full-batch GD of the
reference MLP by a hand-written backward pass).
"""

from .ensemble import EnsemblePrediction, Gaussian, ensemble
from .finite_width import Expansion, FiniteWidthDynamics
from .loss import LOSSES, loss_value, rate
from .predict import Modes, MSEDynamics
from .schedule import Schedule
from .spectral import Eigenbasis, IllConditionedKernelWarning
from .training import TrainingRun, gradient, train

__all__ = [
    "MSEDynamics", "Modes", "ensemble", "Gaussian", "EnsemblePrediction", "Schedule", "Eigenbasis",
    "IllConditionedKernelWarning", "rate", "loss_value", "LOSSES", "train", "gradient", "TrainingRun",
    "FiniteWidthDynamics", "Expansion",
]
