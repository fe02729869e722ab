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
    """Layers applied one after the other (neural-tangents' ``stax.serial``).

    Parameters
    ----------
    *layers : Network or Layer
        The layers, first applied first: stax constructors' results or architecture descriptions.

    Returns
    -------
    Network
        The composition; unpacks as ``init_fn, apply_fn, kernel_fn``.

    Raises
    ------
    TypeError
        If an argument is not a layer description.

    Notes
    -----
    The kernel of the composition is the composition of the layer maps (K, Theta) -> (K', Theta'),
    applied in order.

    Examples
    --------
    >>> from ntk_theory import stax
    >>> stax.serial(stax.Dense(512, W_std=1.5), stax.Relu(), stax.Dense(1))
    serial(Dense(512, W_std=1.5), Relu(), Dense(1))
    """
    return Network(_layers.serial(*layers))


def parallel(*layers) -> Network:
    """Layer i applied to input i of a list (neural-tangents' ``stax.parallel``).

    Parameters
    ----------
    *layers : Network or Layer
        One layer per branch.

    Returns
    -------
    Network
        A layer taking a list of ``len(layers)`` inputs (made by ``FanOut(len(layers))``) and returning the
        list of branch outputs (joined by ``FanInSum`` or ``FanInConcat``).

    Raises
    ------
    TypeError
        If an argument is not a layer description.

    Notes
    -----
    The branches are independent: branch i's kernel is layer i's map of input i's kernel.  Evaluating a
    ``parallel`` on a number of inputs other than its number of branches raises ValueError.

    Examples
    --------
    >>> from ntk_theory import stax
    >>> import numpy as np
    >>> net = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(2), stax.Identity()), stax.FanInSum())
    >>> net
    serial(FanOut(2), parallel(Dense(2), Identity()), FanInSum())
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> net.kernel_fn(x, get="nngp")   # Dense(2), no bias: x.x'/2; identity: x.x'/2
    array([[1. , 0.6],
           [0.6, 1. ]])
    """
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

Dense.__doc__ = """A fully connected layer (neural-tangents' ``stax.Dense``).

Parameters
----------
out_dim : int
    The number of output channels (positive).
W_std : float, default 1.0
    Standard deviation of the weights (C_W = W_std**2), non-negative.
b_std : float or None, default None
    Standard deviation of the bias (C_b = b_std**2); None: no bias.
parameterization : {'ntk', 'standard', 'unit'}, default 'ntk'
    How the weights are scaled (:mod:`ntk_theory.conventions`).

Returns
-------
Network
    The layer; unpacks as ``init_fn, apply_fn, kernel_fn``.

Raises
------
ValueError
    If ``out_dim`` is not a positive integer, a standard deviation is negative or not finite, or the
    parameterization is unknown.

Notes
-----
'ntk': z = W_std/sqrt(n_in) x w + b_std b with w, b ~ N(0, 1), so the layer maps the NNGP kernel
K -> C_b + C_W K / n_in (input layer: K = x x'^T) and the NTK Theta -> lambda_b + lambda_W K / n_in + C_W Theta / n_in
with lambda_b = C_b, lambda_W = C_W.  'standard': w ~ N(0, W_std^2/n_in), lambda_b = 1 (0 without bias),
lambda_W = n_in.  ``Dense.from_variances(out_dim, C_W=..., C_b=...)`` keeps C_W and C_b exactly.

Examples
--------
>>> import numpy as np
>>> from ntk_theory import stax
>>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
>>> stax.Dense(1, W_std=2.0, b_std=0.5).kernel_fn(x, get="nngp")   # 0.25 + 4 x.x'/2
array([[2.25, 1.45],
       [1.45, 2.25]])
"""

Conv.__doc__ = """A convolution with weights shared over positions (neural-tangents' ``stax.Conv``).

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
    As for :func:`Dense`, with n_in the fan-in (filter size times input channels).

Returns
-------
Network
    The layer; its kernel_fn takes images (N, W, C) or (N, H, W, C).

Raises
------
ValueError
    If a size is not a positive integer, the padding is unknown, a standard deviation is negative, or
    ``dimension_numbers`` is given.

Notes
-----
The NNGP kernel of output positions p, p' is C_b plus C_W times the mean over filter offsets of the input
kernel at (p + offset, p' + offset) (per channel fan-in n_in = filter size x channels); the NTK adds the
same map of Theta and the 'ntk' learning-rate factors as Dense.

Examples
--------
>>> from ntk_theory import stax
>>> stax.serial(stax.Conv(8, (3,), padding="SAME"), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1))
serial(Conv(8, (3,), padding='SAME'), Relu(), GlobalAvgPool(), Dense(1))
"""

LayerNorm.__doc__ = """Layer normalisation (neural-tangents' ``stax.LayerNorm``): (x - mean) / sqrt(var + eps),
mean and variance over the channels of each input.

Parameters
----------
axis : int, default -1
    The normalised axis; dense networks normalise over their channel axis, -1 (1 is the same axis).
eps : float, default 1e-12
    Added to the variance, non-negative.

Returns
-------
Network
    The layer.

Raises
------
ValueError
    If ``axis`` is not -1 or 1, or ``eps`` is negative.

Notes
-----
At infinite width, after a Dense layer of zero-mean pre-activations, LayerNorm divides the kernels by
sqrt(K_aa K_bb) (the NNGP becomes a correlation matrix); after a nonlinearity the channel mean is
subtracted exactly (:mod:`ntk_theory.recursions.graph`).

Examples
--------
>>> import numpy as np
>>> from ntk_theory import stax
>>> x = np.array([[2.0, 0.0], [0.0, 1.0]])
>>> stax.serial(stax.Dense(4, W_std=1.0), stax.LayerNorm()).kernel_fn(x, get="nngp")
array([[1., 0.],
       [0., 1.]])
"""

ACTIVATIONS = _elementwise.NEURAL_TANGENTS + _elementwise.BEYOND
for _name in ACTIVATIONS:
    globals()[_name] = _wrap(getattr(_elementwise, _name if _name != "Activation" else "Activation_"))
    globals()[_name].__name__ = _name

LAYERS = ("serial", "parallel", "Dense", "Identity", "FanOut", "FanInSum", "FanInConcat", "LayerNorm", "Conv", "AvgPool",
          "GlobalAvgPool", "Flatten", *ACTIVATIONS)


def parse(text: str) -> Network:
    """A network from stax text, read safely (never ``eval``).

    Parameters
    ----------
    text : str
        A call tree of this module's layer constructors (``stax.`` prefixes allowed) with numbers
        (and ``+ - * / **`` of numbers), strings, booleans, None, lists and tuples as arguments.

    Returns
    -------
    Network
        The network the text describes, equal to the one the same calls build.

    Raises
    ------
    ArchitectureSyntaxError
        (a ValueError) If the text is not valid syntax, names an unknown layer, has any other expression
        than a layer call or a literal, passes ``**kwargs``, a constructor rejects its arguments, or the
        value is not a network.

    Notes
    -----
    The text is parsed with :mod:`ast`; only calls of the names in ``LAYERS`` are evaluated.  This is how
    the command line's ``--arch`` is read.

    Examples
    --------
    >>> from ntk_theory import stax
    >>> net = stax.parse("serial(Dense(512, W_std=1.5), Relu(), Dense(1))")
    >>> net
    serial(Dense(512, W_std=1.5), Relu(), Dense(1))
    >>> net == stax.serial(stax.Dense(512, W_std=1.5), stax.Relu(), stax.Dense(1))
    True
    >>> stax.parse("serial(Dense(1), Softmax())")
    Traceback (most recent call last):
    ...
    ntk_theory.stax.parse.ArchitectureSyntaxError: unknown layer 'Softmax' in --arch; known: ...
    """
    value = _parse(text, {name: globals()[name] for name in LAYERS})
    if not isinstance(value, Network):
        raise ArchitectureSyntaxError(f"--arch must describe a network (a layer call); got {value!r}")
    return value


__all__ = ["Network", "parse", "ArchitectureSyntaxError", *LAYERS]
