r"""A network: an architecture description with neural-tangents' ``(init_fn, apply_fn, kernel_fn)``.

``Network`` unpacks as neural-tangents' triple, and is a value: immutable, hashable and equal by its
description, printed in stax syntax, shown in Jupyter with its layer maps.

- ``kernel_fn(x1, x2=None, get=None, compiled=None)``: infinite-width NNGP and NTK
  (:func:`ntk_theory.recursions.graph.kernel`, float64, or its compiled twin
  :mod:`ntk_theory.codegen.graph` for large inputs); ``get`` a name returns that array, a tuple
  (or None: both) a :class:`~ntk_theory.recursions.KernelResult` iterating in that order.
- ``init_fn(rng_or_seed, input_shape) -> (output_shape, params)`` and ``apply_fn(params, x)``: the
  reference network in NumPy with neural-tangents' parameter layout (:mod:`ntk_theory.reference.graph`).
"""

from __future__ import annotations

import numpy as np

from ..architecture import Layer, leaves
from ..recursions import graph
from ..blocks import check_chunks
from ..recursions.blocked import InterpreterTiles, blocked_result
from ..recursions.result import check_get
from .maps import layer_map
from ..reference import graph as reference_graph


class NoEvaluator(Exception):
    """Never raised: the NumPy interpreter evaluates every description (the last evaluator tried)."""


class Network:
    """A network description with its three interpretations (see the module docstring).

    Parameters
    ----------
    description : Layer
        The architecture description (:mod:`ntk_theory.architecture.layers`); the stax constructors make it.

    Raises
    ------
    TypeError
        If ``description`` is not a layer description.

    Examples
    --------
    A value equal by its description, unpacking as neural-tangents' triple; a linear two-layer network's
    NNGP is C_b + C_W (C_b + C_W x.x'/n_0):

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> from ntk_theory.architecture import Dense, serial
    >>> net = stax.Network(serial(Dense(4, W_std=2.0, b_std=0.5), Dense(1, W_std=2.0, b_std=0.5)))
    >>> net == stax.serial(stax.Dense(4, W_std=2.0, b_std=0.5), stax.Dense(1, W_std=2.0, b_std=0.5))
    True
    >>> init_fn, apply_fn, kernel_fn = net
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> bool(np.allclose(kernel_fn(x, get="nngp"), 0.25 + 4 * (0.25 + 4 * x @ x.T / 2), rtol=1e-14))
    True
    """

    __slots__ = ("description",)

    def __init__(self, description: Layer):
        if not isinstance(description, Layer):
            raise TypeError(f"Network wraps a layer description; got {description!r}")
        object.__setattr__(self, "description", description)

    def __setattr__(self, name, value):
        raise AttributeError("a Network is immutable")

    # ---------------------------------------------------------------- the triple
    def kernel_fn(self, x1, x2=None, get=None, compiled=None, *, chunks=None, scheduler=None, out=None,
                  diagonal_spatial=False, **kwargs):
        """NNGP and/or NTK at inputs x1 (N1, d), x2 (N2, d) (None: x1), float64.

        Parameters
        ----------
        x1 : array_like
            Inputs (N1, d); images (N1, W, C) or (N1, H, W, C) for convolutional networks.
        x2 : array_like or None, default None
            Second inputs (N2, ...); None: ``x1``.
        get : str, tuple of str or None, default None
            ``'nngp'`` or ``'ntk'`` returns that array; a tuple (or None: both) returns a
            :class:`~ntk_theory.recursions.KernelResult` iterating in that order.
        compiled : bool or None, default None
            True evaluates by the generated Numba kernel, False by the NumPy interpreter, None chooses
            by size (see Notes).
        chunks : int or None, default None
            Tile size T: the kernel computed as tiles of T x T entries, each a Dask task running the
            evaluator chosen for the whole (x1, x2) on its row and column blocks
            (:func:`ntk_theory.recursions.blocked.blocked_result`; needs the ``distributed`` extra).
            None: in this process, without importing Dask.
        scheduler : str, distributed.Client or None, default None
            With ``chunks``: where the tasks run, None or ``'local'`` (a LocalCluster started for the
            call), ``'processes'``, ``'threads'``, ``'synchronous'``, an address ``'tcp://host:port'`` or a
            Client.
        out : str, path or None, default None
            With ``chunks``: a Zarr directory for the result, resumed when it holds the same kernel (the
            arrays returned are then zarr arrays); None: numpy arrays.
        diagonal_spatial : bool, default False
            Images whose output keeps spatial axes: True returns the same-position kernels only,
            (N1, N2, H, W) (neural-tangents' option of that name; refused for networks that pool).

        Returns
        -------
        numpy.ndarray or KernelResult
            (N1, N2) kernels of the output; ``result.info["evaluated_by"]`` names the module that
            computed them.  A convolutional network whose output keeps spatial axes (no ``Flatten`` or
            ``GlobalAvgPool``; ending in a Conv, an activation, ``AvgPool`` or a Dense per position) gives
            the covariance of one output channel between every pair of output positions in neural-tangents
            0.6.5's layout, (N1, N2, H, H', W, W') (1-D images: (N1, N2, W, W')), with the spatial
            dimensions reversed, (N1, N2, W, W', H, H'), where neural-tangents reverses them (an odd number
            of Conv layers on the path; :func:`ntk_theory.recursions.spatial.output_spatial`).  The output
            channel count does not enter.  Monte Carlo estimates and empirical NTKs keep the order
            (H, H', W, W').

        Raises
        ------
        ValueError
            If ``compiled`` is not True, False or None, ``diagonal_spatial`` not True or False, the inputs
            do not fit the description (or ``diagonal_spatial=True`` a network that pools), ``chunks``
            is not a positive integer, or ``scheduler``/``out`` are given without ``chunks``.
        ntk_theory.blocks.DistributedUnavailable
            With ``chunks``, if dask, distributed (or, with ``out``, zarr) is not installed.
        TypeError
            If an unknown keyword argument is given.
        NotImplementedError
            With ``compiled=True``, if a layer has no compiled rule
            (:class:`~ntk_theory.codegen.graph.NotCompilable` for an activation Numba cannot evaluate,
            :class:`~ntk_theory.codegen.convolution.NotCompilableConv` for images).

        Notes
        -----
        ``compiled=True`` evaluates by the generated Numba kernel
        (:func:`ntk_theory.codegen.graph.compiled_graph_kernel`; activations without closed form, such as
        tanh, by compiled Hermite tables and Mehler series); False by the NumPy interpreter
        (:func:`ntk_theory.recursions.graph.kernel`); None (default): compiled when N1 * N2 >= 10^5 and the
        description compiles, else NumPy.  Both give the same numbers to ~1e-15 relative with closed forms
        (the equal-row entries identically), to their quadrature error estimates
        (``info["quadrature_error"]``, ~1e-14) without.  Images (N, W, C) / (N, H, W, C): compiled by
        :func:`ntk_theory.codegen.convolution.kernel` (serial chains of Conv, Dense, pooling, Flatten and
        activations: closed-form Gaussian expectations, or Hermite tables and Mehler series for activations
        without closed form) when ``compiled`` or N1 N2 P^2 >= 10^6 and it evaluates the description, else
        NumPy (``compiled=True`` raises :class:`~ntk_theory.codegen.convolution.NotCompilableConv` naming the
        layer it does not evaluate, e.g. ``SeriesTooShort`` where a series would need more than 1024 degrees).

        Examples
        --------
        ReLU between two Dense layers; with unit-norm inputs at angle theta (cos theta = 0.6),
        K1 = 0.01 + 2.25 x.x'/2 and K2 = 0.01 + 2.25 sqrt(K1 K1') (sin theta1 + (pi - theta1) cos theta1) / (2 pi):

        >>> import numpy as np
        >>> from ntk_theory import stax
        >>> init_fn, apply_fn, kernel_fn = stax.serial(
        ...     stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1, W_std=1.5, b_std=0.1))
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> k = kernel_fn(x, get="nngp")
        >>> k1 = 0.01 + 2.25 * np.array([0.5, 0.3]); t1 = np.arccos(k1[1] / k1[0])
        >>> bool(np.isclose(k[0, 1], 0.01 + 2.25 * k1[0] * (np.sin(t1) + (np.pi - t1) * np.cos(t1)) / (2 * np.pi)))
        True
        >>> kernel_fn(x, get=("nngp", "ntk"))
        KernelResult(nngp (2, 2), ntk (2, 2))
        >>> kernel_fn(x).info["evaluated_by"]
        'ntk_theory.recursions.graph'
        """
        if kwargs:
            raise TypeError(f"kernel_fn got unexpected arguments {sorted(kwargs)}")
        if compiled not in (None, True, False):
            raise ValueError(f"compiled must be True, False or None; got {compiled!r}")
        if chunks is None and (scheduler is not None or out is not None):
            raise ValueError("scheduler= and out= go with chunks= (the tile size of a Dask run)")
        if chunks is not None:
            check_chunks(chunks)
        get_ = check_get(("nngp", "ntk") if get is None else get)
        if diagonal_spatial not in (True, False):
            raise ValueError(f"diagonal_spatial must be True or False; got {diagonal_spatial!r}")
        spatial = (("diagonal_spatial", True),) if diagonal_spatial and np.ndim(x1) > 2 else ()
        for tiles, not_compilable in self.evaluators(x1, x2, compiled):
            tile = tiles(self.description, get=get_, options=spatial)
            try:  # without chunks: the kernel; with: one row, choosing (and compiling here) the tasks' evaluator
                result = tile.result(x1, x2) if chunks is None else tile(np.asarray(x1)[:1], None)
                break
            except not_compilable:
                if compiled:
                    raise
        if chunks is not None:
            result = blocked_result(tile, x1, x2, get=get_, chunks=chunks, scheduler=scheduler, out=out, warm=False)
        evaluated_by = tile.evaluated_by
        result.info["evaluated_by"] = evaluated_by
        return getattr(result, get) if isinstance(get, str) else result

    def evaluators(self, x1, x2=None, compiled=None) -> list:
        """The kernel evaluators ``kernel_fn`` tries in turn, as ``(tile class, exception)`` pairs (the
        exception: the evaluator does not evaluate this description; the next one is then tried): a
        compiled kernel when ``compiled`` or the inputs are large (Notes of :meth:`kernel_fn`), then the
        NumPy interpreter.

        Parameters
        ----------
        x1 : array_like
            Inputs (N1, d), or images (N1, ..., C).
        x2 : array_like or None, default None
            Second inputs; None: ``x1``.
        compiled : bool or None, default None
            As :meth:`kernel_fn`.

        Returns
        -------
        list of tuple
            ``(tile class, exception)`` in the order tried; the interpreter (which evaluates every
            description) last.

        Examples
        --------
        Two inputs are few: the interpreter only; ``compiled=True`` tries the generated kernel first:

        >>> import numpy as np
        >>> from ntk_theory import stax
        >>> net = stax.serial(stax.Dense(2), stax.Relu(), stax.Dense(1))
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> [tiles.__name__ for tiles, _ in net.evaluators(x)], [t.__name__ for t, _ in net.evaluators(x, compiled=True)]
        (['InterpreterTiles'], ['GraphTiles', 'InterpreterTiles'])
        """
        images = np.ndim(x1) > 2  # (N, W, C) / (N, H, W, C): convolutional inputs
        pairs = len(x1) * len(x1 if x2 is None else x2)
        if images:
            from ..codegen.convolution import NotCompilableConv
            from ..codegen.tiles import ConvTiles

            size = pairs * int(np.prod(np.shape(x1)[1:-1])) ** 2
            first = [(ConvTiles, NotCompilableConv)] if compiled or (compiled is None and size >= 10**6) else []
        else:
            from ..codegen.graph import NotCompilable
            from ..codegen.tiles import GraphTiles

            first = [(GraphTiles, NotCompilable)] if compiled or (compiled is None and pairs >= 10**5) else []
        return first + [(InterpreterTiles, NoEvaluator)]

    def init_fn(self, rng, input_shape):
        """``(output_shape, params)``: parameters drawn as neural-tangents draws them.

        Parameters
        ----------
        rng : int, numpy.random.Generator or array_like
            A seed, a generator, or a JAX PRNG key array (whose two words seed NumPy).
        input_shape : tuple of int
            The input shape, e.g. ``(-1, d)`` (-1: any batch size).

        Returns
        -------
        output_shape : tuple of int
            The output shape.
        params : tuple
            The parameters in neural-tangents' layout (per Dense layer ``(W, b)``, W of shape
            (n_in, n_out) with entries N(0, 1) in 'ntk', b of shape (n_out,) or None without bias; ``()`` for
            parameter-free layers).

        Notes
        -----
        Drawing is by NumPy (:mod:`ntk_theory.reference.graph`): the same seed gives the same parameters,
        not neural-tangents' JAX numbers.

        Examples
        --------
        >>> from ntk_theory import stax
        >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(1))
        >>> output_shape, params = init_fn(0, (-1, 2))
        >>> output_shape, params[0][0].shape, params[2][1] is None
        ((-1, 1), (2, 3), True)
        """
        return reference_graph.init(self.description, rng, input_shape)

    def apply_fn(self, params, x, **kwargs):
        """The network's output at inputs x (N, d), in NumPy float64.

        Parameters
        ----------
        params : tuple
            Parameters as :meth:`init_fn` returns them.
        x : array_like
            Inputs (N, d) (images (N, ..., C) for convolutional networks).
        **kwargs
            Accepted and ignored (neural-tangents' ``rng``, ``mode``).

        Returns
        -------
        numpy.ndarray
            The outputs (N, out_dim).

        Notes
        -----
        Dense 'ntk': z = W_std/sqrt(n_in) x W + b_std b (:mod:`ntk_theory.reference.graph`).

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory import stax
        >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(1, W_std=2.0, b_std=0.5))
        >>> _, params = init_fn(0, (-1, 2))
        >>> (W, b), = params
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> bool(np.allclose(apply_fn(params, x), 2.0 / np.sqrt(2) * x @ W + 0.5 * b))
        True
        """
        return reference_graph.apply(self.description, params, x)

    def __iter__(self):
        return iter((self.init_fn, self.apply_fn, self.kernel_fn))

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return (self.init_fn, self.apply_fn, self.kernel_fn)[i]

    # ---------------------------------------------------------------- a value
    def __eq__(self, other):
        return isinstance(other, Network) and other.description == self.description

    def __hash__(self):
        return hash(self.description)

    def __repr__(self) -> str:
        return repr(self.description)

    def latex(self) -> str:
        """The layer maps, one line per layer: (K, Theta) -> (K', Theta').

        Returns
        -------
        str
            A LaTeX ``aligned`` environment, one row per non-structural layer (Jupyter shows it).

        Examples
        --------
        >>> from ntk_theory import stax
        >>> text = stax.serial(stax.Dense(1, b_std=0.5), stax.Relu()).latex()
        >>> text.count("texttt"), "std=0.5" in text, "max" in text   # two layers; ReLU's s(x)
        (2, True, True)
        """
        lines = []
        for path, layer in leaves(self.description):
            label = r"\texttt{" + repr(layer).replace("_", r"\_") + "}"
            lines.append(label + r":\ " + layer_map(layer).latex)
        return r"\begin{aligned}" + r"\\ ".join("&" + ln for ln in lines) + r"\end{aligned}"

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"
