"""Network descriptions: the MLP shape (:class:`MLPSpec`) and the layer algebra every interpretation reads
(:mod:`.layers`, :mod:`.elementwise`, :mod:`.convolution`).

The layer algebra carries activations as SymPy expressions; it is imported on first use of one of its
names, so ``MLPSpec`` alone (what the MLP reference network and its samplers need) loads no symbolic module.
"""

import importlib

from .spec import MLPSpec

_LAYERS = ("Dense", "Elementwise", "FanInConcat", "FanInSum", "FanOut", "Identity", "Layer", "LayerNorm", "Parallel",
           "Serial", "leaves", "map_leaves", "parallel", "serial", "walk", "where")


_CONVOLUTION = ("AvgPool", "Conv", "Flatten", "GlobalAvgPool")


def __getattr__(name):
    if name in _LAYERS:
        return getattr(importlib.import_module(".layers", __name__), name)
    if name in _CONVOLUTION:
        return getattr(importlib.import_module(".convolution", __name__), name)
    raise AttributeError(f"module 'ntk_theory.architecture' has no attribute {name!r}")


__all__ = ["MLPSpec", *_LAYERS, *_CONVOLUTION]
