"""Network descriptions: the MLP shape (:class:`MLPSpec`) and the layer algebra every interpretation reads
(:mod:`.layers`, :mod:`.elementwise`)."""

from .layers import (Dense, Elementwise, FanInConcat, FanInSum, FanOut, Identity, Layer, LayerNorm, Parallel, Serial,
                     leaves, parallel, serial, walk, where)
from .spec import MLPSpec

__all__ = ["MLPSpec", "Layer", "Dense", "Elementwise", "Identity", "FanOut", "FanInSum", "FanInConcat", "LayerNorm",
           "Serial", "Parallel", "serial", "parallel", "walk", "where", "leaves"]
