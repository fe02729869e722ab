"""neural-tangents-compatible layers: ``from ntk_theory import stax`` in place of
``from neural_tangents import stax``.

Every constructor returns a :class:`Network` that unpacks as ``init_fn, apply_fn, kernel_fn``, with
neural-tangents' names, arguments and semantics (``Dense(out_dim, W_std=1., b_std=None,
parameterization='ntk')``, ``serial``, ``parallel``, ``FanOut``, ``FanInSum``, ``FanInConcat``,
``LayerNorm``, ``Identity``, ``Conv``, ``AvgPool``, ``GlobalAvgPool``, ``Flatten`` and the activations of :mod:`ntk_theory.architecture.elementwise`).
``parse(text)`` reads the same syntax from text (as ``--arch`` does), safely.
"""

from __future__ import annotations

import functools

from ..architecture import elementwise as _elementwise
from ..architecture import convolution as _convolution
from ..architecture import layers as _layers
from .network import Network
from .parse import ArchitectureSyntaxError
from .parse import parse as _parse


def _wrap(constructor):
    @functools.wraps(constructor)
    def make(*args, **kwargs):
        return Network(constructor(*args, **kwargs))

    return make


def serial(*layers) -> Network:
    """Layers applied one after the other (neural-tangents' ``stax.serial``)."""
    return Network(_layers.serial(*layers))


def parallel(*layers) -> Network:
    """Layer i applied to input i of a list (neural-tangents' ``stax.parallel``)."""
    return Network(_layers.parallel(*layers))


Dense = _wrap(_layers.Dense)
Identity = _wrap(_layers.Identity)
FanOut = _wrap(_layers.FanOut)
FanInSum = _wrap(_layers.FanInSum)
FanInConcat = _wrap(_layers.FanInConcat)
LayerNorm = _wrap(_layers.LayerNorm)
Conv = _wrap(_convolution.Conv)
AvgPool = _wrap(_convolution.AvgPool)
GlobalAvgPool = _wrap(_convolution.GlobalAvgPool)
Flatten = _wrap(_convolution.Flatten)

ACTIVATIONS = _elementwise.NEURAL_TANGENTS + _elementwise.BEYOND
for _name in ACTIVATIONS:
    globals()[_name] = _wrap(getattr(_elementwise, _name if _name != "Activation" else "Activation_"))
    globals()[_name].__name__ = _name

LAYERS = ("serial", "parallel", "Dense", "Identity", "FanOut", "FanInSum", "FanInConcat", "LayerNorm", "Conv", "AvgPool",
          "GlobalAvgPool", "Flatten", *ACTIVATIONS)


def parse(text: str) -> Network:
    """A network from stax text: ``parse("serial(Dense(512, W_std=1.5), Relu(), Dense(1))")``."""
    value = _parse(text, {name: globals()[name] for name in LAYERS})
    if not isinstance(value, Network):
        raise ArchitectureSyntaxError(f"--arch must describe a network (a layer call); got {value!r}")
    return value


__all__ = ["Network", "parse", "ArchitectureSyntaxError", *LAYERS]
