r"""Convolution and pooling layers: descriptions with neural-tangents' names, arguments and semantics.

Inputs are channels last, one batch axis first: ``(N, W, C)`` (1-D) or ``(N, H, W, C)`` (2-D); a layer's
spatial rank is the length of its ``filter_shape`` / ``window_shape``.  PDLT notation as for ``Dense``
(``C_W = W_std**2``, ``C_b = b_std**2``), with the fan-in ``n_in = C_in * prod(filter_shape)``:

- ``Conv(out_chan, filter_shape, strides=None, padding='VALID', W_std=1., b_std=None,
  parameterization='ntk')``: ``z[p, o] = W_std / sqrt(n_in) sum_(q in window(p), i) w[q - p, i, o] x[q, i]
  + b_std b[o]`` with ``w, b ~ N(0, 1)`` ('ntk'), or ``w ~ N(0, W_std**2 / n_in)``, ``b ~ N(0, b_std**2)``
  used directly ('standard'); weights shared over positions; filter layout ``HWIO`` (``WIO`` in 1-D), bias
  shape ``(1, ..., 1, out_chan)``.  ``padding``: 'VALID' (no padding), 'SAME' (zeros, output size
  ``ceil(size / stride)``), 'CIRCULAR' (periodic; the 'SAME' output size).
- ``AvgPool(window_shape, strides=None, padding='VALID', normalize_edges=False)``: the mean over each
  window (``strides=None``: stride 1 per axis, as in neural-tangents); with 'SAME' padding the sum is divided
  by the window size, or by the number of pixels inside the image when ``normalize_edges``.
- ``GlobalAvgPool()``: the mean over all spatial positions, ``(N, ..., C) -> (N, C)``.
- ``Flatten()``: ``(N, ..., C) -> (N, prod(...) C)``, pixels major, channels minor (NumPy's C order).

In the infinite-width limit (every channel count to infinity) a convolution's output is a Gaussian process
over inputs and positions with covariance ``C_b + C_W mean_(filter offsets) E[x_(p+q) x'_(p'+q)]``
(Novak et al. 2019, "Bayesian deep convolutional networks with many channels are Gaussian processes";
Arora et al. 2019, "On exact computation with an infinitely wide neural net").
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from .. import _checks
from ..docstrings import filled
from .layers import PARAMETERIZATIONS, Layer, Weighted, _std

PADDINGS = ("VALID", "SAME", "CIRCULAR")


def _shape(name: str, value, rank: int | None = None, allow_none: bool = False) -> tuple | None:
    if value is None and allow_none:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        values = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of positive integers; got {value!r}") from None
    if not values or len(values) > 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
                                            for v in values):
        raise ValueError(f"{name} must be a tuple of 1 or 2 positive integers (1-D or 2-D inputs); got {value!r}")
    if rank is not None and len(values) != rank:
        raise ValueError(f"{name} {values} must have one entry per spatial axis ({rank})")
    return tuple(int(v) for v in values)


def _padding(name: str, value) -> str:
    text = str(value).upper()
    if text not in PADDINGS:
        raise ValueError(f"{name} padding must be one of {PADDINGS}; got {value!r}")
    return text


def _default_axes(layer: str, **axes) -> None:
    defaults = {"batch_axis": 0, "channel_axis": -1, "batch_axis_out": 0}
    for key, value in axes.items():
        if value != defaults[key]:
            raise ValueError(f"{layer}({key}={value!r}): only neural-tangents' default layout (batch first, "
                             "channels last) is supported")


# GlobalAvgPool's and Flatten's axis arguments' description and Raises section, written once
_LAYOUT = """    Only neural-tangents' default layout.

Raises
------
ValueError
    If an axis is not the default.

Examples
--------"""

def _output_size_sections(window: str) -> str:
    """The Parameters/Returns/Raises sections of Conv's and AvgPool's ``output_size`` (``window``: what
    slides, 'filter' or 'window'), written once."""
    return f"""Parameters
----------
size : tuple of int
    The input's spatial shape (one entry per spatial axis).

Returns
-------
tuple of int
    ``floor((size - {window}) / stride) + 1`` per axis ('VALID'), ``ceil(size / stride)`` ('SAME',
    'CIRCULAR').

Raises
------
ValueError
    If the number of axes differs from the {window}'s, or the {window} does not fit ('VALID').

Examples
--------"""

def window_step(layer) -> tuple:
    """The strides of a Conv or AvgPool: ``layer.strides``, or 1 per spatial axis when None (neural-tangents'
    default).  ``Conv.step`` and ``AvgPool.step``.

    Parameters
    ----------
    layer : Conv or AvgPool
        The layer.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> from ntk_theory.architecture import AvgPool, Conv
    >>> Conv(1, (3, 3)).step, AvgPool((2,), strides=(2,)).step
    ((1, 1), (2,))
    """
    return layer.strides or (1,) * layer.rank


@dataclass(frozen=True, repr=False)
class Conv(Weighted, Layer):
    """A convolution with weights shared over positions (see the module docstring); ``C_W``, ``C_b``,
    ``has_bias`` and ``learning_rate_factors(n_in)`` as ``Dense`` with ``n_in`` the
    :meth:`~ntk_theory.architecture.convolution.Conv.fan_in`.

    Parameters
    ----------
    out_chan : int
        The number of output channels (positive).
    filter_shape : tuple of int
        The filter's spatial shape, one entry per spatial axis (1 or 2 axes).
    strides : tuple of int or None, default None
        The strides per spatial axis; None: 1.
    padding : {'VALID', 'SAME', 'CIRCULAR'}, default 'VALID'
        The padding of the spatial axes.
    W_std : float, default 1.0
        Standard deviation of the weights (C_W = W_std**2).
    b_std : float or None, default None
        Standard deviation of the bias (C_b = b_std**2); None: no bias.
    dimension_numbers : None
        Only neural-tangents' default layout (NHWC inputs, HWIO filters).
    parameterization : {'ntk', 'standard', 'unit'}, default 'ntk'
        As for ``Dense``, with n_in the fan-in (filter size times input channels).
    variances : tuple of float or None, default None
        Exact ``(C_W, C_b)`` (set by ``from_variances``).

    Raises
    ------
    ValueError
        If a size is not a positive integer, the padding is unknown, a standard deviation is negative, or
        ``dimension_numbers`` is given.

    Examples
    --------
    >>> from ntk_theory.architecture import Conv
    >>> layer = Conv(8, (3, 3), strides=(2, 2), padding="SAME", W_std=2.0)
    >>> layer, layer.rank, layer.filter_size, layer.C_W
    (Conv(8, (3, 3), strides=(2, 2), padding='SAME', W_std=2.0), 2, 9, 4.0)
    """

    out_chan: int
    filter_shape: tuple
    strides: tuple | None = None
    padding: str = "VALID"
    W_std: float = 1.0
    b_std: float | None = None
    dimension_numbers: None = None
    parameterization: str = "ntk"
    variances: tuple | None = field(default=None, repr=False)
    _positional = ("out_chan", "filter_shape")

    def __post_init__(self):
        object.__setattr__(self, "out_chan", _checks.positive_int("Conv out_chan", self.out_chan))
        object.__setattr__(self, "filter_shape", _shape("Conv filter_shape", self.filter_shape))
        object.__setattr__(self, "strides", _shape("Conv strides", self.strides, len(self.filter_shape), True))
        object.__setattr__(self, "padding", _padding("Conv", self.padding))
        object.__setattr__(self, "W_std", _std("Conv W_std", self.W_std))
        object.__setattr__(self, "b_std", _std("Conv b_std", self.b_std, allow_none=True))
        if self.dimension_numbers is not None:
            raise ValueError("Conv(dimension_numbers=...): only neural-tangents' default layout (NHWC inputs, "
                             "HWIO filters) is supported")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"Conv parameterization must be one of {PARAMETERIZATIONS}; got {self.parameterization!r}")

    @classmethod
    def from_variances(cls, out_chan: int, filter_shape, *, C_W: float, C_b: float, strides=None, padding="VALID",
                       parameterization: str = "ntk") -> "Conv":
        """PDLT's variances, kept exactly (``W_std = sqrt(C_W)``, ``b_std = sqrt(C_b)``).

        Parameters
        ----------
        out_chan : int
            The number of output channels.
        filter_shape : tuple of int
            The filter's spatial shape.
        C_W, C_b : float
            Weight and bias variances, finite and >= 0 (keyword-only).
        strides, padding, parameterization
            As for the constructor.

        Returns
        -------
        Conv
            The layer, with ``C_W`` and ``C_b`` returning the given values exactly.

        Examples
        --------
        >>> import math
        >>> from ntk_theory.architecture import Conv
        >>> layer = Conv.from_variances(4, (3,), C_W=0.3, C_b=0.5)
        >>> (layer.C_W, layer.C_b) == (0.3, 0.5), math.sqrt(0.3)**2 == 0.3
        (True, False)
        """
        C_W, C_b = _std("C_W", C_W), _std("C_b", C_b)
        return cls(out_chan, filter_shape, strides, padding, math.sqrt(C_W), math.sqrt(C_b), None, parameterization,
                   (C_W, C_b))

    @property
    def rank(self) -> int:
        """The number of spatial axes (1 or 2).

        Examples
        --------
        >>> from ntk_theory.architecture import Conv
        >>> Conv(1, (3,)).rank, Conv(1, (3, 2)).rank
        (1, 2)
        """
        return len(self.filter_shape)

    step = property(window_step)

    @property
    def filter_size(self) -> int:
        """prod(filter_shape), the number of filter positions.

        Examples
        --------
        >>> from ntk_theory.architecture import Conv
        >>> Conv(1, (3, 2)).filter_size
        6
        """
        return math.prod(self.filter_shape)

    def fan_in(self, in_chan: int) -> int:
        """``in_chan * prod(filter_shape)``.

        Parameters
        ----------
        in_chan : int
            The number of input channels.

        Returns
        -------
        int
            The fan-in n_in of one output unit (the n_in of the 'standard' and 'ntk' scalings).

        Examples
        --------
        >>> from ntk_theory.architecture import Conv
        >>> Conv(8, (3, 2)).fan_in(5) == 5 * 3 * 2
        True
        """
        return int(in_chan) * self.filter_size

    @filled(output_size=_output_size_sections("filter"))
    def output_size(self, size: tuple) -> tuple:
        """The spatial output shape for the spatial input shape ``size``.

        %(output_size)s
        >>> from ntk_theory.architecture import Conv
        >>> Conv(1, (3, 3), strides=(2, 1)).output_size((8, 5)), Conv(1, (3,), (2,), "SAME").output_size((7,))
        ((3, 3), (4,))
        """
        return pooled_size(size, self.filter_shape, self.step, self.padding)


def pooled_size(size, window, strides, padding: str) -> tuple:
    """Output positions per axis: ``floor((size - window) / stride) + 1`` ('VALID'), ``ceil(size / stride)``
    ('SAME', 'CIRCULAR')."""
    size = tuple(size)
    if len(size) != len(window):
        raise ValueError(f"a window {tuple(window)} needs {len(window)} spatial axes; the input has {len(size)}")
    if padding == "VALID":
        if any(s < w for s, w in zip(size, window)):
            raise ValueError(f"a window {tuple(window)} does not fit into the image {size} with padding 'VALID'")
        return tuple((s - w) // st + 1 for s, w, st in zip(size, window, strides))
    return tuple(-(-s // st) for s, st in zip(size, strides))


@dataclass(frozen=True, repr=False)
class AvgPool(Layer):
    """Average pooling over windows of positions (see the module docstring).

    Parameters
    ----------
    window_shape : tuple of int
        The window's spatial shape, one entry per spatial axis (1 or 2 axes).
    strides : tuple of int or None, default None
        The strides per spatial axis; None: 1 (neural-tangents' default).
    padding : {'VALID', 'SAME', 'CIRCULAR'}, default 'VALID'
        The padding of the spatial axes.
    normalize_edges : bool, default False
        With 'SAME' padding, divide by the number of pixels inside the image rather than the window size.
    batch_axis, channel_axis : int, default 0, -1
        Only neural-tangents' default layout.

    Raises
    ------
    ValueError
        If a shape is not positive integers, the padding is unknown, or an axis is not the default.

    Examples
    --------
    >>> from ntk_theory.architecture import AvgPool
    >>> pool = AvgPool((2, 2), strides=(2, 2))
    >>> pool, pool.rank, pool.output_size((5, 4))
    (AvgPool((2, 2), strides=(2, 2)), 2, (2, 2))
    """

    window_shape: tuple
    strides: tuple | None = None
    padding: str = "VALID"
    normalize_edges: bool = False
    batch_axis: int = 0
    channel_axis: int = -1
    _positional = ("window_shape",)

    def __post_init__(self):
        object.__setattr__(self, "window_shape", _shape("AvgPool window_shape", self.window_shape))
        object.__setattr__(self, "strides", _shape("AvgPool strides", self.strides, len(self.window_shape), True))
        object.__setattr__(self, "padding", _padding("AvgPool", self.padding))
        if not isinstance(self.normalize_edges, bool):
            raise ValueError(f"AvgPool normalize_edges must be True or False; got {self.normalize_edges!r}")
        _default_axes("AvgPool", batch_axis=self.batch_axis, channel_axis=self.channel_axis)

    @property
    def rank(self) -> int:
        """The number of spatial axes (1 or 2).

        Examples
        --------
        >>> from ntk_theory.architecture import AvgPool
        >>> AvgPool((2,)).rank
        1
        """
        return len(self.window_shape)

    step = property(window_step)

    @filled(output_size=_output_size_sections("window"))
    def output_size(self, size: tuple) -> tuple:
        """The spatial output shape for the spatial input shape ``size``.

        %(output_size)s
        >>> from ntk_theory.architecture import AvgPool
        >>> AvgPool((3,)).output_size((7,)), AvgPool((3,), (2,), "SAME").output_size((7,))
        ((5,), (4,))
        """
        return pooled_size(size, self.window_shape, self.step, self.padding)


@filled(layout=_LAYOUT)
@dataclass(frozen=True, repr=False)
class GlobalAvgPool(Layer):
    """The mean over all spatial positions, (N, ..., C) -> (N, C).

    Parameters
    ----------
    batch_axis, channel_axis : int, default 0, -1
    %(layout)s
    >>> from ntk_theory.architecture import GlobalAvgPool
    >>> GlobalAvgPool()
    GlobalAvgPool()
    >>> GlobalAvgPool(channel_axis=1)
    Traceback (most recent call last):
    ...
    ValueError: GlobalAvgPool(channel_axis=1): ...
    """

    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self):
        _default_axes("GlobalAvgPool", batch_axis=self.batch_axis, channel_axis=self.channel_axis)


@filled(layout=_LAYOUT)
@dataclass(frozen=True, repr=False)
class Flatten(Layer):
    """All non-batch axes into one (pixels major, channels minor: NumPy's C order).

    Parameters
    ----------
    batch_axis, batch_axis_out : int, default 0, 0
    %(layout)s
    The reference network flattens as NumPy's C order:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.architecture import Flatten
    >>> Flatten()
    Flatten()
    >>> x = np.arange(12.0).reshape(2, 3, 2)
    >>> _, params = stax.Flatten().init_fn(0, (-1, 3, 2))
    >>> bool(np.array_equal(stax.Flatten().apply_fn(params, x), x.reshape(2, 6)))
    True
    """

    batch_axis: int = 0
    batch_axis_out: int = 0

    def __post_init__(self):
        _default_axes("Flatten", batch_axis=self.batch_axis, batch_axis_out=self.batch_axis_out)
