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
import inspect

from ..architecture import elementwise as _elementwise
from ..architecture import convolution as _convolution
from ..architecture import layers as _layers
from ..docstrings import fill, filled
from .network import Network
from .parse import ArchitectureSyntaxError
from .parse import parse as _parse


def _wrap(constructor):
    @functools.wraps(constructor)
    def make(*args, **kwargs):
        return Network(constructor(*args, **kwargs))

    return make


# the images and the kernel of Conv(1, (2,)) at positions p, r that GlobalAvgPool's and Flatten's examples check
_CONV_EXAMPLE = """>>> import numpy as np
>>> from ntk_theory import stax
>>> x = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0]])[..., None]
>>> def conv(a, b):
...     return np.array([[np.mean([a[p + q] * b[r + q] for q in range(2)]) for r in range(2)] for p in range(2)])
>>> X = x[..., 0]"""


def _sections(description, drop: tuple = ("variances",)) -> dict:
    """The numpydoc sections of an architecture description's docstring by title, written once there and
    filled into its stax constructor's docstring (``%(Parameters)s``, ``%(Raises)s``); the Parameters
    without the entries ``drop`` (what the description takes beyond the stax constructor)."""
    lines = (inspect.getdoc(description) or "").split("\n")
    heads = [i for i in range(len(lines) - 1) if lines[i] and set(lines[i + 1]) == {"-"}] + [len(lines)]
    found = {}
    for start, end in zip(heads, heads[1:]):
        body = lines[start + 2:end]
        if lines[start] == "Parameters":
            entries = [i for i, line in enumerate(body) if line and not line[0].isspace()] + [len(body)]
            body = [line for a, b in zip(entries, entries[1:]) if body[a].split(" :")[0] not in drop
                    for line in body[a:b]]
        found[lines[start]] = "\n".join(lines[start:start + 2] + body).rstrip()
    return found


@filled(**_sections(_layers.serial))
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

    %(Raises)s

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


@filled(**_sections(_layers.parallel))
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

    %(Raises)s

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

Dense.__doc__ = fill("""A fully connected layer (neural-tangents' ``stax.Dense``).

%(Parameters)s

Returns
-------
Network
    The layer; unpacks as ``init_fn, apply_fn, kernel_fn``.

%(Raises)s

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
""", **_sections(_layers.Dense))

Conv.__doc__ = fill("""A convolution with weights shared over positions (neural-tangents' ``stax.Conv``).

%(Parameters)s

Returns
-------
Network
    The layer; its kernel_fn takes images (N, W, C) or (N, H, W, C).

%(Raises)s

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
""", **_sections(_convolution.Conv))

LayerNorm.__doc__ = fill("""Layer normalisation (neural-tangents' ``stax.LayerNorm``): (x - mean) / sqrt(var + eps),
mean and variance over the channels of each input.

%(Parameters)s

Returns
-------
Network
    The layer.

%(Raises)s

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
""", **_sections(_layers.LayerNorm))

Identity.__doc__ = """Passes its input on unchanged (neural-tangents' ``stax.Identity``).

Returns
-------
Network
    The layer: the kernels K and Theta pass unchanged.

Examples
--------
A residual block ``x -> Dense(x) + x``: the input's kernel is x.x'/n_0 (as in neural-tangents), so the NNGP is
(C_W + 1) x.x'/n_0 (independent branches):

>>> import numpy as np
>>> from ntk_theory import stax
>>> net = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(2, W_std=2.0), stax.Identity()), stax.FanInSum())
>>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
>>> bool(np.allclose(net.kernel_fn(x, get="nngp"), (4.0 + 1) * x @ x.T / 2, rtol=1e-14))
True
"""

FanOut.__doc__ = fill("""Copies its input into a list of ``num`` inputs (neural-tangents' ``stax.FanOut``).

%(Parameters)s

Returns
-------
Network
    The layer; a ``parallel`` of ``num`` branches or a ``FanInSum`` / ``FanInConcat`` follows it.

%(Raises)s

Examples
--------
Two copies of one Dense layer's output, summed: 2 z, so the NNGP is 4 C_W x.x'/n_0:

>>> import numpy as np
>>> from ntk_theory import stax
>>> net = stax.serial(stax.Dense(3), stax.FanOut(2), stax.FanInSum())
>>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
>>> bool(np.allclose(net.kernel_fn(x, get="nngp"), 4 * x @ x.T / 2, rtol=1e-14))
True
""", **_sections(_layers.FanOut))

FanInSum.__doc__ = """Sums a list of inputs of equal shape (neural-tangents' ``stax.FanInSum``).

Returns
-------
Network
    The layer; the kernel of the sum is the sum of the branches' kernels and cross-covariances (zero
    between branches with independent weights).

Examples
--------
Two independent Dense branches with W_std = 1 and 2: NNGP (1 + 4) x.x'/n_0:

>>> import numpy as np
>>> from ntk_theory import stax
>>> net = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Dense(3, W_std=2.0)), stax.FanInSum())
>>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
>>> bool(np.allclose(net.kernel_fn(x, get="nngp"), 5 * x @ x.T / 2, rtol=1e-14))
True
"""

FanInConcat.__doc__ = fill("""Concatenates a list of inputs along the channel axis (neural-tangents' ``stax.FanInConcat``).

%(Parameters)s

Returns
-------
Network
    The layer; the kernel of the concatenation is the channel-weighted mean of the branches' kernels.

%(Raises)s

Examples
--------
Branches of 1 and 3 channels with W_std = 1 and 2, then Dense(1): NNGP (1 * 1 + 3 * 4) / 4 x.x'/n_0:

>>> import numpy as np
>>> from ntk_theory import stax
>>> net = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(1), stax.Dense(3, W_std=2.0)),
...                   stax.FanInConcat(), stax.Dense(1))
>>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
>>> bool(np.allclose(net.kernel_fn(x, get="nngp"), 13 / 4 * x @ x.T / 2, rtol=1e-14))
True
""", **_sections(_layers.FanInConcat))

AvgPool.__doc__ = fill("""Average pooling over windows of positions (neural-tangents' ``stax.AvgPool``).

%(Parameters)s

Returns
-------
Network
    The layer; the output kernel at positions (p, p') is the mean of the input kernel over the two windows.

%(Raises)s

Examples
--------
A linear pooling of 1-D images (N, 3, 1): windows of 2 then the global mean, (x0 + 2 x1 + x2) / 4 per image:

>>> import numpy as np
>>> from ntk_theory import stax
>>> x = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0]])[..., None]
>>> k = stax.serial(stax.AvgPool((2,)), stax.GlobalAvgPool()).kernel_fn(x, get="nngp")
>>> m = (x[:, 0, 0] + 2 * x[:, 1, 0] + x[:, 2, 0]) / 4
>>> bool(np.allclose(k, np.outer(m, m), rtol=1e-14))
True
""", **_sections(_convolution.AvgPool))

GlobalAvgPool.__doc__ = fill("""The mean over all spatial positions, (N, ..., C) -> (N, C) (neural-tangents' ``stax.GlobalAvgPool``).

%(Parameters)s

Returns
-------
Network
    The layer; the output kernel is the mean of the input kernel over all pairs of positions (p, p').

%(Raises)s

Examples
--------
After ``Conv(1, (2,))`` ('VALID', W_std = 1) the kernel of positions p, p' is mean_q x[p+q] x'[p'+q]; the
pool averages it over (p, p'):

%(conv_example)s
>>> k = stax.serial(stax.Conv(1, (2,)), stax.GlobalAvgPool()).kernel_fn(x, get="nngp")
>>> bool(np.allclose(k, [[conv(a, b).mean() for b in X] for a in X], rtol=1e-14))
True
""", **_sections(_convolution.GlobalAvgPool), conv_example=_CONV_EXAMPLE)

Flatten.__doc__ = fill("""All non-batch axes into one, pixels major, channels minor (neural-tangents' ``stax.Flatten``).

%(Parameters)s

Returns
-------
Network
    The layer; a Dense layer after it sees the mean over positions of the input kernel's diagonal
    (p = p') blocks.

%(Raises)s

Examples
--------
After ``Conv(1, (2,))`` ('VALID', W_std = 1) the kernel of positions p, p' is mean_q x[p+q] x'[p'+q];
``Flatten`` then ``Dense(1)`` gives its mean over p = p':

%(conv_example)s
>>> k = stax.serial(stax.Conv(1, (2,)), stax.Flatten(), stax.Dense(1)).kernel_fn(x, get="nngp")
>>> bool(np.allclose(k, [[np.trace(conv(a, b)) / 2 for b in X] for a in X], rtol=1e-14))
True
""", **_sections(_convolution.Flatten), conv_example=_CONV_EXAMPLE)

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
