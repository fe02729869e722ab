r"""Infinite-width NNGP kernel and NTK of an MLP's output, in float64 or at any mpmath precision.

For L hidden layers and a readout (PDLT conventions, :mod:`ntk_theory.conventions`), with
G0_ab = x_a . x_b / n_0::

    K(1)   = C_b(1) + C_W(1) G0,            Theta(1) = lambda_b(1) + lambda_W(1) G0
    K(l+1) = C_b(l+1) + C_W(l+1) T_l(K(l)), Theta(l+1) = lambda_b(l+1) + lambda_W(l+1) T_l(K(l))
                                                          + C_W(l+1) Tdot_l(K(l)) Theta(l)

for l = 1 .. L, where T_l, Tdot_l are the Gaussian expectations of layer l's activation; the output
kernels are K(L+1), Theta(L+1).  ``param="standard"`` has lambda_W(l) = n_(l-1) and needs ``widths``.

Numerics (float64): the diagonal (a = b, and rows of X2 equal to rows of X1) uses the one-variable
forms T(K) = E[s^2], so the NTK diagonal is exact rather than computed through an angle that rounding
makes ~1e-8 instead of 0; off the diagonal K_ab is clipped to |K_ab| <= sqrt(K_aa K_bb) and closed
forms are evaluated in their stable rewriting (:mod:`ntk_theory.gaussian.stable`).
"""

from __future__ import annotations

import functools
from typing import Sequence

from .. import _checks
from ..architecture import Serial
from ..architecture.mlp import mlp_description
from ..conventions import PARAMETERIZATIONS, learning_rate_factors
from ..docstrings import INPUT_PAIR, RETURNS_TEXT, filled
from . import graph
from .layer import LayerMap, activation_kernels
from .result import KernelResult, equal_rows  # noqa: F401  (equal_rows: re-exported)

#: The hidden width written into MLP descriptions when none is given (infinite-width kernels in the 'ntk' and
#: 'unit' parameterizations do not depend on it).
HIDDEN_WIDTH = 512


class KernelRecursion:
    """The infinite-width recursion of an MLP: symbolic layer maps and their evaluation.

    Parameters
    ----------
    activations : str, sympy.Expr or list
        One activation (name, string or SymPy expression) for every hidden layer, or a list of
        ``depth`` of them.
    depth : int
        The number of hidden layers L (positive).
    C_W, C_b : float or sequence of float, default 1.0 and 0.0
        Weight and bias variances: scalars or ``depth + 1`` values (readout last).
    param : {'ntk', 'standard', 'unit'}, default 'ntk'
        The parameterization (:mod:`ntk_theory.conventions`).
    widths : int or sequence of int, optional
        The hidden widths; required by ``param='standard'`` (lambda_W(l) = n_(l-1)), else unused.
    input_dim : int, optional
        Accepted for signature compatibility; the input dimension is read from the inputs.

    Raises
    ------
    ValueError
        If ``depth`` is not a positive integer, the number of activations or of per-layer values does not
        match, the parameterization is unknown, or ``param='standard'`` is given without ``widths``.

    Notes
    -----
    The recursion of the module docstring: K(1) = C_b(1) + C_W(1) G0 with G0_ab = x_a . x_b / n_0, then
    K(l+1) = C_b + C_W T_l(K(l)), Theta(l+1) = lambda_b + lambda_W T_l(K(l)) + C_W Tdot_l(K(l)) Theta(l).
    :meth:`evaluate` is float64 (diagonal by the one-variable forms, off-diagonal correlations clipped to
    [-1, 1]); :meth:`evaluate_mp` the same at ``dps`` digits.

    Examples
    --------
    One ReLU layer at criticality C_W = 2 on unit-norm inputs at angle t, cos t = 0.6: the arc-cosine
    kernel K = (sin t + (pi - t) cos t) / pi and Theta = K + (pi - t) cos t / pi.

    >>> import numpy as np
    >>> from ntk_theory.recursions.network import KernelRecursion
    >>> rec = KernelRecursion("relu", 1, C_W=2.0)
    >>> rec
    KernelRecursion(relu; depth=1, C_W=2.0, C_b=0.0, param='ntk')
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> r = rec.evaluate(x)
    >>> t = np.arccos(0.6)
    >>> bool(np.isclose(r.nngp[0, 1], (np.sin(t) + (np.pi - t) * 0.6) / np.pi))
    True
    >>> bool(np.isclose(r.ntk[0, 1], r.nngp[0, 1] + (np.pi - t) * 0.6 / np.pi))
    True
    >>> float(r.ntk[0, 0])
    2.0
    >>> float(abs(rec.evaluate_mp(x, dps=30).nngp[0, 1] - r.nngp[0, 1])) < 1e-15
    True
    """

    def __init__(self, activations, depth: int, *, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None, input_dim=None):
        self.depth = _checks.positive_int("depth", depth)
        acts = list(activations) if isinstance(activations, (list, tuple)) else [activations] * self.depth
        if len(acts) != self.depth:
            raise ValueError(f"got {len(acts)} activations for depth {self.depth}")
        self.kernels = [activation_kernels(a) for a in acts]
        n = self.depth + 1
        self.C_W = _checks.per_layer("C_W", C_W, n)
        self.C_b = _checks.per_layer("C_b", C_b, n)
        self.param = _checks.choice("param", param, PARAMETERIZATIONS)
        if param == "standard":
            if widths is None:
                raise ValueError("param='standard' has lambda_W = n_(l-1): give the hidden widths (widths=...)")
            self.widths = _checks.per_layer("widths", widths, self.depth, check=_checks.positive_int)
        else:
            self.widths = None

    def _lambdas(self, input_dim: int) -> list:
        fan_in = [input_dim] + (list(self.widths) if self.widths else [1] * self.depth)
        return [learning_rate_factors(self.param, C_W=self.C_W[l], C_b=self.C_b[l], fan_in=fan_in[l]) for l in range(self.depth + 1)]

    def layer_maps(self, input_dim: int = 1) -> list[LayerMap]:
        """The maps of the hidden layers: activation l and the affine layer after it.

        Parameters
        ----------
        input_dim : int, default 1
            n_0 (it enters 'standard''s lambda_W of the first layer only, not these maps).

        Returns
        -------
        list of LayerMap
            ``depth`` maps, first hidden layer first.

        Examples
        --------
        >>> from ntk_theory.recursions import KernelRecursion
        >>> maps = KernelRecursion(["relu", "linear"], 2, C_W=[1.0, 2.0, 3.0]).layer_maps()
        >>> [(m.kernels.activation.name, m.C_W) for m in maps]
        [('relu', 2.0), ('linear', 3.0)]
        """
        lam = self._lambdas(input_dim)
        return [
            LayerMap(self.kernels[l], C_W=self.C_W[l + 1], C_b=self.C_b[l + 1], lambda_b=lam[l + 1][0],
                     lambda_W=lam[l + 1][1]) for l in range(self.depth)
        ]

    # ------------------------------------------------------------------ float64
    def __call__(self, X1, X2=None) -> KernelResult:
        return self.evaluate(X1, X2)

    @functools.cached_property
    def description(self) -> Serial:
        """The MLP as an architecture description, which :meth:`evaluate` interprets
        (:func:`ntk_theory.recursions.graph.kernel`): ``depth`` times [Dense, activation], then a
        Dense readout of width 1.  C_W, C_b are kept exactly; hidden widths are ``widths`` ('standard')
        or HIDDEN_WIDTH (ignored at infinite width in 'ntk' and 'unit')."""
        acts = [kern.activation for kern in self.kernels]
        return mlp_description(acts, self.depth, C_W=self.C_W, C_b=self.C_b, param=self.param, widths=self.widths or HIDDEN_WIDTH)

    @filled(inputs=INPUT_PAIR)
    def evaluate(self, X1, X2=None) -> KernelResult:
        """NNGP and NTK of the output at inputs X1 (N1, d), X2 (N2, d) (default X1), float64.

        Parameters
        ----------
        %(inputs)s

        Returns
        -------
        KernelResult
            ``nngp`` and ``ntk`` (N1, N2); ``info["quadrature_error"]`` for activations without closed form.

        Examples
        --------
        Two ReLU layers at C_W = 2, C_b = 0.1 on unit-norm inputs: K = 0.1 + K_prev on the diagonal, so
        K = 1.1, 1.2, 1.3 through the three Dense layers:

        >>> import numpy as np
        >>> from ntk_theory.recursions import KernelRecursion
        >>> r = KernelRecursion("relu", 2, C_W=2.0, C_b=0.1).evaluate(np.array([[1.0, 0.0], [0.6, 0.8]]))
        >>> bool(np.allclose(np.diag(r.nngp), 1.3, rtol=1e-15))
        True
        """
        return graph.kernel(self.description, X1, X2)

    # ------------------------------------------------------------------ mpmath
    @filled(inputs=INPUT_PAIR)
    def evaluate_mp(self, X1, X2=None, dps: int = 30) -> KernelResult:
        """The same recursion in mpmath at ``dps`` digits; inputs are taken as exact binary floats.
        ``nngp`` and ``ntk`` are (N1, N2) NumPy object arrays of ``mpmath.mpf``
        (``.astype(float)`` rounds them to float64).

        Parameters
        ----------
        %(inputs)s
        dps : int, default 30
            Decimal digits.

        Returns
        -------
        KernelResult
            Object arrays of ``mpmath.mpf``.

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.recursions import KernelRecursion
        >>> rec = KernelRecursion("relu", 2, C_W=2.0, C_b=0.1)
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> mp = rec.evaluate_mp(x, dps=30)
        >>> type(mp.nngp[0, 1]).__name__, bool(np.allclose(mp.nngp.astype(float), rec.evaluate(x).nngp, rtol=1e-14))
        ('mpf', True)
        """
        return graph.kernel(self.description, X1, X2, dps=dps)

    # ------------------------------------------------------------------ display
    @filled(returns_text=RETURNS_TEXT)
    def latex(self) -> str:
        """The recursion in LaTeX: the first layer, then the hidden layers' maps (once when all are equal).

        %(returns_text)s
        >>> from ntk_theory.recursions import KernelRecursion
        >>> "MLP: 3 hidden layers, param=ntk" in KernelRecursion("relu", 3).latex()
        True
        """
        maps = self.layer_maps()
        body = maps[0].latex() if len({id(m.kernels) for m in maps}) == 1 else r"\\".join(m.latex() for m in maps)
        return (
            rf"\text{{MLP: {self.depth} hidden layers, param={self.param}}}\\ "
            r"K^{(1)} = C_b + C_W G_0,\ \Theta^{(1)} = \lambda_b + \lambda_W G_0 \\ " + body
        )

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"

    def __repr__(self) -> str:
        names = [k.activation.name for k in self.kernels]
        acts = names[0] if len(set(names)) == 1 else "[" + ", ".join(names) + "]"
        return f"KernelRecursion({acts}; depth={self.depth}, C_W={_short(self.C_W)}, C_b={_short(self.C_b)}, param={self.param!r})"


def _short(v: Sequence):
    return v[0] if len(set(v)) == 1 else list(v)


# its Parameters section words X1, X2 as every kernel function's (numpydoc: each documents its own arguments)
# its X1/X2 entries word every kernel function's (numpydoc: each documents its own arguments)
def kernel(X1, X2=None, activation="relu", depth: int = 1, *, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None,
           chunks=None, scheduler=None, out=None) -> KernelResult:
    """Infinite-width NNGP and NTK of an MLP's output, float64.

    Shortcut for ``KernelRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param,
    widths=widths).evaluate(X1, X2)``.

    Parameters
    ----------
    X1 : array_like
        Inputs (N1, n_0).
    X2 : array_like or None, default None
        Inputs (N2, n_0); None: ``X1``.
    activation : str, sympy.Expr or list, default 'relu'
        The activation of every hidden layer, or a list of ``depth`` of them.
    depth : int, default 1
        The number of hidden layers.
    C_W, C_b : float or sequence of float, default 1.0 and 0.0
        Weight and bias variances: scalars or ``depth + 1`` values (readout last).
    param : {'ntk', 'standard', 'unit'}, default 'ntk'
        The parameterization.
    widths : int or sequence of int, optional
        Hidden widths, required by ``param='standard'``.
    chunks : int, optional
        Tile size T: the kernel computed as tiles of T x T entries, each a Dask task
        (:func:`ntk_theory.recursions.blocked.blocked_result`; needs the ``distributed`` extra).  None
        (default): in this process, without importing Dask.
    scheduler : str or distributed.Client, optional
        With ``chunks``: where the tasks run, None or ``'local'`` (a LocalCluster started for the call),
        ``'processes'``, ``'threads'``, ``'synchronous'``, an address ``'tcp://host:port'`` or a Client.
    out : str or path, optional
        With ``chunks``: a Zarr directory for the result (resumed when it holds the same kernel); the
        result's arrays are then zarr arrays.

    Returns
    -------
    KernelResult
        ``nngp`` and ``ntk``, (N1, N2) float64 arrays (iterating as ``nngp, ntk``).

    Raises
    ------
    ValueError
        As :class:`KernelRecursion`, or if the inputs are not 2-d with equal feature dimension, or
        ``scheduler``/``out`` are given without ``chunks``.
    ntk_theory.blocks.DistributedUnavailable
        With ``chunks``, if dask, distributed (or, with ``out``, zarr) is not installed.

    Notes
    -----
    The recursion is the module docstring's; see :class:`KernelRecursion` for the numerics.  With
    ``chunks`` each tile is the same NumPy evaluation on its row and column inputs, so the entries equal
    the untiled ones up to BLAS's rounding of the input Gram products in other block shapes (~1e-15
    relative).

    Examples
    --------
    A linear network: K = C_b + C_W (C_b + C_W x.x'/n_0) for one hidden layer.

    >>> import numpy as np
    >>> from ntk_theory.recursions.network import kernel
    >>> x = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> nngp, ntk = kernel(x, activation="linear", depth=1, C_W=2.0, C_b=0.5)
    >>> nngp
    array([[3.5, 2.7],
           [2.7, 3.5]])
    """
    rec = KernelRecursion(activation, depth, C_W=C_W, C_b=C_b, param=param, widths=widths)
    if chunks is None:
        if scheduler is not None or out is not None:
            raise ValueError("scheduler= and out= go with chunks= (the tile size of a Dask run)")
        return rec.evaluate(X1, X2)
    from .blocked import InterpreterTiles, blocked_result

    return blocked_result(InterpreterTiles(rec.description), X1, X2, chunks=chunks, scheduler=scheduler, out=out)
