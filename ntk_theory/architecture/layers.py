r"""Architecture descriptions: immutable values naming the layers of a network and how they connect.

A description is a tree of layers (frozen dataclasses, hashable, printable in neural-tangents' ``stax``
syntax).  The same description is read by every part of the toolkit -- the infinite-width kernels
(:mod:`ntk_theory.recursions.graph`), the reference network (:mod:`ntk_theory.reference.graph`) and the
``stax`` front end (:mod:`ntk_theory.stax`) -- each by its own rules, one per layer type.

Layers and their meaning (neural-tangents' semantics, channels last; PDLT notation with
``C_W = W_std**2``, ``C_b = b_std**2``):

- ``Dense(out_dim, W_std=1., b_std=None, parameterization='ntk')``: ``z = W_std / sqrt(n_in) x w + b_std b``
  with ``w, b ~ N(0, 1)`` ('ntk'), or ``z = x w + b`` with ``w ~ N(0, W_std**2 / n_in)``, ``b ~ N(0, b_std**2)``
  ('standard'); ``b_std=None``: no bias.
- ``Elementwise``: a pointwise nonlinearity ``s(x)`` given as a SymPy expression in ``x``.
- ``Identity``, ``FanOut(num)`` (one input to ``num`` copies), ``FanInSum``, ``FanInConcat(axis=-1)``
  (channels), ``LayerNorm(axis=-1, eps=1e-12)``: ``(x - mean) / sqrt(var + eps)`` over channels.
- ``Serial(layers)`` (composition) and ``Parallel(layers)`` (layer i applied to input i of a list).

:func:`walk` runs an interpretation over a description: it handles ``Serial``, ``Parallel``, ``FanOut``
and ``Identity`` and hands every other layer to the interpretation's rule with its *path* (the tuple of
indices leading to it, unique per layer occurrence: two applications of equal ``Dense`` values are
different layers with their own parameters, as in neural-tangents).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import sympy as sp

from .. import _checks
from ..activations import Activation, x
from ..docstrings import filled

PARAMETERIZATIONS = ("ntk", "standard", "unit")


class Layer:
    """Base class of all layer descriptions: frozen dataclasses, hashable, printed in stax syntax.

    Examples
    --------
    >>> from ntk_theory.architecture import Dense, Layer, serial
    >>> net = serial(Dense(3), Dense(1))
    >>> isinstance(net, Layer), net == serial(Dense(3), Dense(1)), hash(net) == hash(serial(Dense(3), Dense(1)))
    (True, True, True)
    >>> net
    serial(Dense(3), Dense(1))
    """

    def __repr__(self) -> str:
        args = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.default is not value and f.default != value or f.name in self._positional:
                text = _show(value)
                args.append(text if f.name in self._positional else f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(args)})"

    _positional: tuple = ()

    @property
    def children(self) -> tuple["Layer", ...]:
        """The sub-layers of a container (``Serial``, ``Parallel``); ``()`` for every other layer.

        Examples
        --------
        >>> from ntk_theory.architecture import Dense, Identity, serial
        >>> serial(Dense(2), Identity()).children, Dense(2).children
        ((Dense(2), Identity()), ())
        """
        return ()


def _show(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return repr(value)


def _std(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0{' or None' if allow_none else ''}; got {value!r}")
    return float(value)


class Weighted:
    """What layers with weights and biases (``Dense``, ``Conv``) share: the fields ``W_std``, ``b_std``,
    ``parameterization`` and ``variances`` (exact ``(C_W, C_b)`` or None), read as PDLT's variances."""

    @property
    def C_W(self) -> float:
        return self.variances[0] if self.variances else self.W_std**2

    @property
    def C_b(self) -> float:
        if self.variances:
            return self.variances[1]
        return 0.0 if self.b_std is None else self.b_std**2

    @property
    def has_bias(self) -> bool:
        return self.b_std is not None

    def learning_rate_factors(self, n_in: int) -> tuple[float, float]:
        """``(lambda_b, lambda_W)`` of the NTK for fan-in ``n_in``: ``(C_b, C_W)`` in 'ntk',
        ``(1, n_in)`` in 'standard' (W and b trained directly), ``(1, 1)`` in 'unit' (PDLT's choice, an
        extension of neural-tangents' two); lambda_b = 0 without a bias."""
        if self.parameterization == "ntk":
            return self.C_b, self.C_W
        return (1.0 if self.has_bias else 0.0), (float(n_in) if self.parameterization == "standard" else 1.0)


@dataclass(frozen=True, repr=False)
class Dense(Weighted, Layer):
    """A fully connected layer (see the module docstring for its parameterizations).

    Parameters
    ----------
    out_dim : int
        The number of output channels (positive).
    W_std : float, default 1.0
        Standard deviation of the weights (C_W = W_std**2), finite and >= 0.
    b_std : float or None, default None
        Standard deviation of the bias (C_b = b_std**2); None: no bias.
    parameterization : {'ntk', 'standard', 'unit'}, default 'ntk'
        How the weights are scaled (:mod:`ntk_theory.conventions`).
    variances : tuple of float or None, default None
        Exact ``(C_W, C_b)`` (set by :meth:`from_variances`; None: the squares of the standard deviations).

    Raises
    ------
    ValueError
        If ``out_dim`` is not a positive integer, a standard deviation is negative or not finite, or the
        parameterization is unknown.

    Examples
    --------
    >>> from ntk_theory.architecture import Dense
    >>> layer = Dense(4, W_std=1.5, b_std=0.5)
    >>> layer, layer.C_W == 1.5**2, layer.C_b == 0.5**2, layer.learning_rate_factors(10)
    (Dense(4, W_std=1.5, b_std=0.5), True, True, (0.25, 2.25))
    >>> Dense(4, parameterization="standard").learning_rate_factors(10)   # no bias: lambda_b = 0
    (0.0, 10.0)
    """

    out_dim: int
    W_std: float = 1.0
    b_std: float | None = None
    parameterization: str = "ntk"
    variances: tuple | None = field(default=None, repr=False)
    _positional = ("out_dim",)

    def __post_init__(self):
        object.__setattr__(self, "out_dim", _checks.positive_int("Dense out_dim", self.out_dim))
        object.__setattr__(self, "W_std", _std("Dense W_std", self.W_std))
        object.__setattr__(self, "b_std", _std("Dense b_std", self.b_std, allow_none=True))
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"Dense parameterization must be one of {PARAMETERIZATIONS}; got {self.parameterization!r}")

    @classmethod
    def from_variances(cls, out_dim: int, *, C_W: float, C_b: float, parameterization: str = "ntk") -> "Dense":
        """PDLT's variances: ``W_std = sqrt(C_W)``, ``b_std = sqrt(C_b)`` (a bias, possibly of variance 0),
        with C_W and C_b kept exactly (no rounding through the square root).

        Parameters
        ----------
        out_dim : int
            The number of output channels (positive).
        C_W, C_b : float
            Weight and bias variances, finite and >= 0 (keyword-only).
        parameterization : {'ntk', 'standard', 'unit'}, default 'ntk'
            How the weights are scaled.

        Returns
        -------
        Dense
            The layer, with ``C_W`` and ``C_b`` returning the given values exactly.

        Raises
        ------
        ValueError
            If a variance is negative or not finite.

        Examples
        --------
        sqrt(0.3)**2 != 0.3 in float64: through ``W_std`` alone C_W would come back rounded.

        >>> import math
        >>> from ntk_theory.architecture import Dense
        >>> layer = Dense.from_variances(3, C_W=0.3, C_b=0.0)
        >>> layer.C_W == 0.3, layer.C_b, layer.has_bias, math.sqrt(0.3)**2 == 0.3
        (True, 0.0, True, False)
        """
        C_W, C_b = _std("C_W", C_W), _std("C_b", C_b)
        return cls(out_dim, math.sqrt(C_W), math.sqrt(C_b), parameterization, (C_W, C_b))



@dataclass(frozen=True, repr=False)
class Elementwise(Layer):
    """A pointwise nonlinearity.  ``name`` and ``args`` are how it was written (``Relu``, ``()``);
    ``expr`` is the SymPy expression in ``x`` every interpretation uses.

    Parameters
    ----------
    name : str
        The constructor's name, as printed.
    args : tuple
        The constructor's arguments, as printed.
    expr : sympy.Expr
        The function s(x), in :data:`ntk_theory.activations.x`.

    Examples
    --------
    The constructors of :mod:`ntk_theory.architecture.elementwise` make these:

    >>> import sympy as sp
    >>> from ntk_theory.activations import x
    >>> from ntk_theory.architecture import Elementwise
    >>> from ntk_theory.architecture.elementwise import LeakyRelu
    >>> layer = LeakyRelu(0.5)
    >>> layer, isinstance(layer, Elementwise), layer.expr.subs(x, -2), layer.expr.subs(x, 3)
    (LeakyRelu(0.5), True, -1, 3)
    >>> Elementwise("Square", (), x**2)
    Square()
    """

    name: str
    args: tuple
    expr: sp.Expr

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(_show(a) for a in self.args)})"

    @property
    def activation(self) -> Activation:
        """The activation, named so that every part of the toolkit can read the name back: the text given to
        ``Activation(...)``, else the expression (``Erf()`` -> ``erf(x)``); its source says the layer.

        Examples
        --------
        >>> from ntk_theory.architecture.elementwise import Activation_, Erf
        >>> Erf().activation.name, Activation_("tanh").activation.name
        ('erf(x)', 'tanh')
        """
        name = self.args[0] if self.name == "Activation" and isinstance(self.args[0], str) else sp.sstr(self.expr)
        return Activation(name, self.expr, f"stax {self!r}")

    @property
    def is_identity(self) -> bool:
        """Whether s(x) = x exactly (the expression, not its values).

        Examples
        --------
        >>> from ntk_theory.architecture.elementwise import Activation_, Monomial
        >>> Monomial(1).is_identity, Activation_("linear").is_identity, Monomial(2).is_identity
        (True, True, False)
        """
        return self.expr == x


@dataclass(frozen=True, repr=False)
class Identity(Layer):
    """Passes its input on unchanged.

    Examples
    --------
    >>> from ntk_theory.architecture import Identity, walk
    >>> walk(Identity(), "input", rule=None)          # structural: no rule is called
    'input'
    """


@dataclass(frozen=True, repr=False)
class FanOut(Layer):
    """Copies its input into a list of ``num`` inputs.

    Parameters
    ----------
    num : int
        The number of copies (positive).

    Raises
    ------
    ValueError
        If ``num`` is not a positive integer.

    Examples
    --------
    >>> from ntk_theory.architecture import FanOut, walk
    >>> walk(FanOut(3), "x", rule=None)
    ('x', 'x', 'x')
    """

    num: int
    _positional = ("num",)

    def __post_init__(self):
        object.__setattr__(self, "num", _checks.positive_int("FanOut num", self.num))


@dataclass(frozen=True, repr=False)
class FanInSum(Layer):
    """Sums a list of inputs of equal shape.

    Examples
    --------
    An interpretation's rule receives the list; here one that sums numbers:

    >>> from ntk_theory.architecture import Dense, FanInSum, FanOut, parallel, serial, walk
    >>> net = serial(FanOut(2), parallel(Dense(1), Dense(1)), FanInSum())
    >>> walk(net, 1.0, lambda layer, v, path: sum(v) if isinstance(layer, FanInSum) else 2 * v)
    4.0
    """


@dataclass(frozen=True, repr=False)
class FanInConcat(Layer):
    """Concatenates a list of inputs along the channel axis (the only axis of a dense network).

    Parameters
    ----------
    axis : int, default -1
        The channel axis: -1 (or 1, the same axis of a dense network).

    Raises
    ------
    ValueError
        If ``axis`` is not -1 or 1.

    Examples
    --------
    >>> from ntk_theory.architecture import FanInConcat
    >>> FanInConcat(), FanInConcat(axis=1)
    (FanInConcat(), FanInConcat(axis=1))
    >>> FanInConcat(axis=0)
    Traceback (most recent call last):
    ...
    ValueError: FanInConcat(axis=0): dense networks have one channel axis, -1
    """

    axis: int = -1

    def __post_init__(self):
        if self.axis not in (-1, 1):
            raise ValueError(f"FanInConcat(axis={self.axis!r}): dense networks have one channel axis, -1")


@dataclass(frozen=True, repr=False)
class LayerNorm(Layer):
    """``(x - mean) / sqrt(var + eps)`` with mean and variance over the channels of each input.

    Parameters
    ----------
    axis : int, default -1
        The normalised axis: the channels, -1 (or 1).
    eps : float, default 1e-12
        Added to the variance, finite and >= 0.

    Raises
    ------
    ValueError
        If ``axis`` is not -1 or 1, or ``eps`` is negative or not finite.

    Examples
    --------
    >>> from ntk_theory.architecture import LayerNorm
    >>> LayerNorm(), LayerNorm(eps=1e-5).eps
    (LayerNorm(), 1e-05)
    """

    axis: int = -1
    eps: float = 1e-12

    def __post_init__(self):
        if self.axis not in (-1, 1):
            raise ValueError(f"LayerNorm(axis={self.axis!r}): dense networks normalise over their channel axis, -1")
        object.__setattr__(self, "eps", _std("LayerNorm eps", self.eps))


# Serial and Parallel are alike but for their name: separate types for every interpretation's dispatch
@dataclass(frozen=True, repr=False)
class Serial(Layer):
    """Layers applied one after the other.

    Parameters
    ----------
    layers : tuple of Layer
        The layers, first applied first (:func:`serial` checks and converts its arguments).

    Examples
    --------
    >>> from ntk_theory.architecture import Dense, Serial, serial
    >>> serial(Dense(2), Dense(1)) == Serial((Dense(2), Dense(1)))
    True
    """

    layers: tuple

    def __repr__(self) -> str:
        return f"serial({', '.join(map(repr, self.layers))})"

    @property
    def children(self):
        """The layers, in order.

        Examples
        --------
        >>> from ntk_theory.architecture import Dense, serial
        >>> serial(Dense(2), Dense(1)).children
        (Dense(2), Dense(1))
        """
        return self.layers


# alike Serial but for its name: separate types for every interpretation's dispatch
@dataclass(frozen=True, repr=False)
class Parallel(Layer):
    """Layer i applied to input i of a list of inputs.

    Parameters
    ----------
    layers : tuple of Layer
        One layer per branch (:func:`parallel` checks and converts its arguments).

    Examples
    --------
    >>> from ntk_theory.architecture import Dense, Identity, Parallel, parallel
    >>> parallel(Dense(2), Identity()) == Parallel((Dense(2), Identity()))
    True
    """

    layers: tuple

    def __repr__(self) -> str:
        return f"parallel({', '.join(map(repr, self.layers))})"

    @property
    def children(self):
        """The branches, in order.

        Examples
        --------
        >>> from ntk_theory.architecture import Dense, Identity, parallel
        >>> parallel(Dense(2), Identity()).children
        (Dense(2), Identity())
        """
        return self.layers


def _combined_sections(result: str) -> str:
    """The Returns/Raises sections of :func:`serial` and :func:`parallel` (``result``: the description type)."""
    return f"""Returns
-------
{result}
    The description.

Raises
------
TypeError
    If an argument is not a layer description.

Examples
--------"""


@filled(combined=_combined_sections("Serial"))
def serial(*layers: Layer) -> Serial:
    """The composition of ``layers``, first applied first.

    Parameters
    ----------
    *layers : Layer or Network
        Layer descriptions, or :class:`ntk_theory.stax.Network` values (their ``description`` is taken).

    %(combined)s
    >>> from ntk_theory import stax
    >>> from ntk_theory.architecture import Dense, serial
    >>> serial(Dense(2), stax.Relu(), Dense(1))
    serial(Dense(2), Relu(), Dense(1))
    """
    return Serial(tuple(_layer(l) for l in layers))


@filled(combined=_combined_sections("Parallel"))
def parallel(*layers: Layer) -> Parallel:
    """Layer i applied to input i of a list (made by ``FanOut``).

    Parameters
    ----------
    *layers : Layer or Network
        One description per branch (:class:`ntk_theory.stax.Network` values: their ``description``).

    %(combined)s
    >>> from ntk_theory.architecture import Dense, Identity, parallel
    >>> parallel(Dense(2), Identity())
    parallel(Dense(2), Identity())
    """
    return Parallel(tuple(_layer(l) for l in layers))


def _layer(value) -> Layer:
    layer = getattr(value, "description", value)
    if not isinstance(layer, Layer):
        raise TypeError(f"expected a layer description (Dense, Relu(), serial(...), ...); got {value!r}")
    return layer


# ---------------------------------------------------------------------- traversal
def walk(layer: Layer, value, rule: Callable, path: tuple = ()):
    """Apply ``rule(layer, value, path)`` to the leaves of ``layer`` in order; ``Serial``,
    ``Parallel``, ``FanOut`` and ``Identity`` are structural and handled here.  ``value`` is one
    input, or a tuple of inputs where a ``FanOut`` made a list.

    Parameters
    ----------
    layer : Layer
        The description.
    value : object
        What the interpretation propagates (an input, a kernel, ...), or a tuple of them after a FanOut.
    rule : callable
        ``rule(layer, value, path) -> value`` for every non-structural layer (FanInSum and FanInConcat
        receive the tuple).
    path : tuple of int, default ()
        The path of ``layer`` itself (indices into serial/parallel), prefixed to the leaves' paths.

    Returns
    -------
    object
        The value after the last layer (a tuple where the description ends in a list of outputs).

    Raises
    ------
    ValueError
        If a ``parallel`` receives a number of inputs other than its number of branches, a FanIn receives
        one input, or another layer receives a list (the message names the layer's path).

    Examples
    --------
    A linear network's variance, one rule per layer type: C_W v + C_b for Dense, the sum for FanInSum:

    >>> from ntk_theory.architecture import Dense, FanInSum, FanOut, parallel, serial, walk
    >>> net = serial(Dense(4, W_std=2.0), FanOut(2), parallel(Dense(4, b_std=1.0), Dense(4)), FanInSum())
    >>> def rule(layer, v, path):
    ...     return sum(v) if isinstance(layer, FanInSum) else layer.C_W * v + layer.C_b
    >>> walk(net, 0.5, rule) == (4 * 0.5 + 1) + 4 * 0.5
    True
    >>> paths = []
    >>> _ = walk(net, 0.5, lambda layer, v, path: paths.append(path) or rule(layer, v, path))
    >>> paths
    [(0,), (2, 0), (2, 1), (3,)]
    """
    if isinstance(layer, Serial):
        for i, sub in enumerate(layer.layers):
            value = walk(sub, value, rule, path + (i,))
        return value
    if isinstance(layer, Parallel):
        if not isinstance(value, tuple) or len(value) != len(layer.layers):
            got = f"{len(value)} inputs" if isinstance(value, tuple) else "one input"
            raise ValueError(f"{layer!r} at {where(path)} has {len(layer.layers)} branches but receives {got} "
                             "(a FanOut(n) before it makes n)")
        return tuple(walk(sub, v, rule, path + (i,)) for i, (sub, v) in enumerate(zip(layer.layers, value)))
    if isinstance(layer, FanOut):
        _single(layer, value, path)
        return (value,) * layer.num
    if isinstance(layer, Identity):
        return value
    if isinstance(layer, (FanInSum, FanInConcat)):
        if not isinstance(value, tuple):
            raise ValueError(f"{layer!r} at {where(path)} needs a list of inputs (after FanOut and parallel); got one")
    else:
        _single(layer, value, path)
    return rule(layer, value, path)


def _single(layer, value, path):
    if isinstance(value, tuple):
        raise ValueError(f"{layer!r} at {where(path)} receives a list of {len(value)} inputs; combine them first "
                         "(FanInSum, FanInConcat) or use parallel(...)")


def where(path: Sequence[int]) -> str:
    """A path as text: ``layer 3.1`` (0-based indices into serial/parallel).

    Parameters
    ----------
    path : sequence of int
        Indices into serial/parallel, as :func:`walk` and :func:`leaves` give them.

    Returns
    -------
    str
        ``'layer i.j...'``, or ``'the top'`` for the empty path.

    Examples
    --------
    >>> from ntk_theory.architecture import where
    >>> where((3, 1)), where(())
    ('layer 3.1', 'the top')
    """
    return "the top" if not path else "layer " + ".".join(map(str, path))


def map_leaves(layer: Layer, fn: Callable, path: tuple = ()) -> Layer:
    """The description with every non-structural layer replaced by ``fn(path, layer)`` (``Serial`` and
    ``Parallel`` rebuilt around them), e.g. to change every Dense layer's width or parameterization.

    Parameters
    ----------
    layer : Layer
        The description.
    fn : callable
        ``fn(path, layer) -> Layer`` for every layer other than Serial and Parallel.
    path : tuple of int, default ()
        The path of ``layer`` itself.

    Returns
    -------
    Layer
        The new description (the same structure).

    Examples
    --------
    >>> import dataclasses
    >>> from ntk_theory.architecture import Dense, map_leaves, serial
    >>> from ntk_theory.architecture.elementwise import Relu
    >>> net = serial(Dense(8), Relu(), Dense(1))
    >>> map_leaves(net, lambda path, l: dataclasses.replace(l, out_dim=64) if path == (0,) else l)
    serial(Dense(64), Relu(), Dense(1))
    """
    if isinstance(layer, (Serial, Parallel)):
        return type(layer)(tuple(map_leaves(sub, fn, path + (i,)) for i, sub in enumerate(layer.layers)))
    return fn(path, layer)


def leaves(layer: Layer, path: tuple = ()):
    """``(path, layer)`` of every non-structural layer, in order.

    Parameters
    ----------
    layer : Layer
        The description.
    path : tuple of int, default ()
        The path of ``layer`` itself.

    Yields
    ------
    path : tuple of int
        The layer's indices into serial/parallel.
    layer : Layer
        A layer that is not Serial or Parallel (FanOut, Identity and the FanIns included).

    Examples
    --------
    >>> from ntk_theory.architecture import Dense, FanInSum, FanOut, Identity, leaves, parallel, serial
    >>> net = serial(FanOut(2), parallel(Dense(2), Identity()), FanInSum())
    >>> list(leaves(net))
    [((0,), FanOut(2)), ((1, 0), Dense(2)), ((1, 1), Identity()), ((2,), FanInSum())]
    """
    if layer.children:
        for i, sub in enumerate(layer.children):
            yield from leaves(sub, path + (i,))
    else:
        yield path, layer
