r"""Compiled NNGP/NTK kernels of an MLP: the compiled kernel (:class:`ntk_theory.codegen.graph.CompiledGraphKernel`)
of the MLP's architecture description (:attr:`ntk_theory.recursions.KernelRecursion.description`,
``depth`` times [Dense, activation] and a Dense readout, per-layer C_W, C_b, widths and activations).

>>> kern = CompiledKernel("relu", depth=10, C_W=2.0, C_b=0.0)      # doctest: +SKIP
>>> nngp, ntk = kern(X)                                              # doctest: +SKIP
>>> print(kern.source)                                               # the generated code

The hidden layers of one activation are a run of equal blocks, which the generated module runs as one
loop over the layers with their constants read from arrays: one compiled module (one disk-cache entry)
serves every depth, C_W, C_b and width of a given sequence of activations (a run of one activation, or
each block of a repeated pattern).  Evaluation, error model and the per-entry fallback of activations
without closed form (Hermite tables, Mehler's series, 2-D quadrature) are those of
:mod:`ntk_theory.codegen.graph`.
"""

from __future__ import annotations

import numpy as np

from ..recursions import KernelRecursion, KernelResult
from .graph import CompiledGraphKernel, evaluation_arrays

__all__ = ["CompiledKernel", "compiled_kernel", "evaluation_arrays"]


class CompiledKernel:
    """NNGP and NTK of an MLP's output by generated, compiled and cached Numba code.

    Arguments as :class:`~ntk_theory.recursions.KernelRecursion`; ``tol`` the truncation tolerance
    of Hermite series (numerical activations), ``max_order`` their largest degree, ``tile_mb`` the
    size of the row tiles.  ``graph``: the :class:`~ntk_theory.codegen.graph.CompiledGraphKernel` of
    ``recursion.description`` that evaluates it.

    Parameters
    ----------
    activations : str, sympy.Expr or list
        One activation for every hidden layer, or a list of ``depth`` of them.
    depth : int
        The number of hidden layers.
    C_W, C_b : float or sequence of float, default 1.0, 0.0
        Weight and bias variances (keyword-only), scalars or ``depth + 1`` values.
    param : {'ntk', 'standard', 'unit'}, default 'ntk'
        The parameterization.
    widths : int or sequence of int, optional
        Hidden widths (``param='standard'``).
    tol : float, default 1e-15
        Truncation tolerance of the Hermite/Mehler series of activations without closed form.
    max_order : int, default 128
        The largest series degree; entries needing more are finished by 2-D quadrature.
    tile_mb : float, default 64.0
        The memory of one tile of rows.

    Raises
    ------
    ValueError
        As :class:`~ntk_theory.recursions.KernelRecursion`.

    Notes
    -----
    Nothing is compiled until the first evaluation; the module is then read from the disk cache
    (:attr:`key`) or compiled and stored.  Networks of one activation share one module whatever their
    depth and variances (these are arguments of the generated code).

    Examples
    --------
    >>> from ntk_theory.codegen import CompiledKernel
    >>> ck = CompiledKernel("relu", 2, C_W=2.0)
    >>> ck, ck.fallback_entries
    (CompiledKernel(relu; depth=2, key=graph_..., not compiled), 0)
    """

    def __init__(self, activations, depth: int, *, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None,
                 tol: float = 1e-15, max_order: int = 128, tile_mb: float = 64.0):
        self.recursion = KernelRecursion(activations, depth, C_W=C_W, C_b=C_b, param=param, widths=widths)
        self.tol, self.max_order, self.tile_mb = float(tol), int(max_order), float(tile_mb)
        self.graph = CompiledGraphKernel(self.recursion.description, tile_mb=tile_mb, tol=tol, max_order=max_order)

    # the properties below delegate to the graph kernel, one documented attribute each (alike by design)
    @property
    def source(self) -> str:
        """The generated module.

        Examples
        --------
        >>> from ntk_theory.codegen import CompiledKernel
        >>> "def fused(" in CompiledKernel("relu", 2, C_W=2.0).source
        True
        """
        return self.graph.source

    @property
    def key(self) -> str:
        """Its cache key (a hash of the source and of the runtime modules it imports).

        Examples
        --------
        >>> from ntk_theory.codegen import CompiledKernel
        >>> CompiledKernel("relu", 2, C_W=2.0).key.startswith("graph_")
        True
        """
        return self.graph.key

    @property
    def compile_seconds(self):
        """Seconds spent compiling or loading the module, None before the first evaluation.

        Examples
        --------
        >>> from ntk_theory.codegen import CompiledKernel
        >>> CompiledKernel("relu", 2, C_W=2.0).compile_seconds is None
        True
        """
        return self.graph.compile_seconds

    @property
    def from_cache(self):
        """Whether the module was read from the disk cache (None before the first evaluation).

        Examples
        --------
        >>> from ntk_theory.codegen import CompiledKernel
        >>> CompiledKernel("relu", 2, C_W=2.0).from_cache is None
        True
        """
        return self.graph.from_cache

    @property
    def fallback_entries(self) -> int:
        """Entries finished by 2-D quadrature (a Mehler series would need more than ``max_order`` terms).

        Examples
        --------
        >>> from ntk_theory.codegen import CompiledKernel
        >>> CompiledKernel("relu", 2, C_W=2.0).fallback_entries      # closed forms: never
        0
        """
        return self.graph.fallback_entries

    @property
    def module(self):
        """The compiled module (loaded from the disk cache or compiled on first use).

        Returns
        -------
        module
            The generated Python module; its ``fused`` function is the Numba kernel.

        Examples
        --------
        The module's source is the printed :attr:`source` (the same ReLU kernel as :meth:`evaluate`'s example,
        so the compiled module is loaded, not compiled again):

        >>> from ntk_theory.codegen import CompiledKernel
        >>> mod = CompiledKernel("relu", 2, C_W=2.0).module
        >>> callable(mod.fused), "def fused(" in CompiledKernel("relu", 2, C_W=2.0).source
        (True, True)
        """
        return self.graph.module()

    @property
    def _module(self):
        """The compiled module, None before the first evaluation."""
        return next(iter(self.graph._modules.values()), None)

    def __repr__(self) -> str:
        names = sorted({k.activation.name for k in self.recursion.kernels})
        status = ("not compiled" if self.compile_seconds is None
                  else f"compiled in {self.compile_seconds:.2f} s" + (" (disk cache)" if self.from_cache else ""))
        return f"CompiledKernel({', '.join(names)}; depth={self.recursion.depth}, key={self.key}, {status})"

    def __call__(self, X1, X2=None, out=None, dtype=np.float64, progress=None) -> KernelResult:
        return self.evaluate(X1, X2, out=out, dtype=dtype, progress=progress)

    def evaluate(self, X1, X2=None, out=None, dtype=np.float64, progress=None) -> KernelResult:
        """NNGP and NTK (N1, N2) of the output; ``out=(nngp, ntk)`` writes into given arrays
        (e.g. ``np.memmap``), ``dtype`` float64 (default) or float32 for the stored result
        (arithmetic is float64 either way).  ``progress``: a bar over the row tiles
        (:func:`ntk_theory.progress.progress_bar`: True, False, or None for a terminal).
        ``info``: ``quadrature_error`` (largest error estimate of one expectation), ``compile_seconds``,
        ``from_cache``, ``tile_rows``, ``key``.

        Parameters
        ----------
        X1 : array_like
            Inputs (N1, d), finite.
        X2 : array_like or None, default None
            Inputs (N2, d); None: ``X1``.
        out : tuple of numpy.ndarray or None, default None
            ``(nngp, ntk)`` arrays of shape (N1, N2) to write into.
        dtype : {numpy.float64, numpy.float32}, default numpy.float64
            The stored result's type.
        progress : bool or None, default None
            A progress bar over the row tiles.

        Returns
        -------
        KernelResult
            ``nngp``, ``ntk`` and ``info``.

        Raises
        ------
        ValueError
            If an input is not finite, the feature dimensions differ, ``out`` has the wrong shape, or
            ``dtype`` is not float64/float32 (before any compilation).

        Examples
        --------
        Two ReLU layers at C_W = 2 on unit-norm inputs keep unit variances and map the correlation by
        rho -> (sqrt(1 - rho^2) + (pi - arccos rho) rho) / pi, starting from C_W x.x'/n_0 = 0.6:

        >>> import numpy as np
        >>> from ntk_theory.codegen import CompiledKernel
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> r = CompiledKernel("relu", 2, C_W=2.0).evaluate(x)
        >>> f = lambda rho: (np.sqrt(1 - rho**2) + (np.pi - np.arccos(rho)) * rho) / np.pi
        >>> bool(np.allclose(r.nngp, [[1.0, f(f(0.6))], [f(f(0.6)), 1.0]], rtol=1e-14))
        True
        """
        return self.graph.evaluate(X1, X2, out=out, dtype=dtype, progress=progress)


def compiled_kernel(activations, depth: int, *, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None, **options) -> CompiledKernel:
    """A :class:`CompiledKernel`, shared by identical arguments within a process.

    Parameters
    ----------
    activations, depth, C_W, C_b, param, widths
        As :class:`CompiledKernel` (C_W, C_b keyword-only).
    **options
        ``tol``, ``max_order``, ``tile_mb`` of :class:`CompiledKernel`.

    Returns
    -------
    CompiledKernel
        The same object for equal arguments.

    Examples
    --------
    >>> from ntk_theory.codegen import compiled_kernel
    >>> compiled_kernel("relu", 2, C_W=2.0) is compiled_kernel("relu", 2, C_W=2.0)
    True
    >>> compiled_kernel("relu", 2, C_W=2.0) is compiled_kernel("relu", 2, C_W=2.0, tol=1e-12)
    False
    """
    key = (repr(activations), depth, repr(C_W), repr(C_b), param, repr(widths), tuple(sorted(options.items())))
    if key not in _KERNELS:
        _KERNELS[key] = CompiledKernel(activations, depth, C_W=C_W, C_b=C_b, param=param, widths=widths, **options)
    return _KERNELS[key]


_KERNELS: dict = {}
