r"""The finite-width recursions of an MLP: L hidden layers (widths n_1..n_L), scalar readout.

:class:`FiniteWidthRecursion` runs the one-input scalar recursions of :mod:`.single` (numbers,
or SymPy layer maps) and the N-input tensor recursions of :mod:`.tensors`.  Conventions as in
:mod:`ntk_theory.conventions`: z(1) = W(1) x + b(1), z(l+1) = W(l+1) s(z(l)) + b(l+1),
W ~ N(0, C_W / n_(l-1)), b ~ N(0, C_b), NTK factors (lambda_b, lambda_W) from ``param``.
Layer 1 has K = C_b + C_W G0, Theta = lambda_b + lambda_W G0 (G0 = x.x / n_0) and no 1/n terms.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .. import _checks
from ..activations import activation as _activation
from ..conventions import PARAMETERIZATIONS, learning_rate_factors
from . import single
from .moments import OneInputAverages, one_input_averages


class FiniteWidthRecursion:
    """Leading 1/n corrections of an MLP with one activation for all hidden layers.

    ``depth`` L >= 1 hidden layers; ``C_W``, ``C_b`` scalars or L + 1 values (readout last);
    ``param`` 'ntk' or 'unit' ('standard' has lambda_W = n_(l-1), which mixes the orders of the
    1/n expansion, and is refused); ``widths``: None (equal widths: ratios 1) or the L hidden
    widths (the ratios r_l = n_l / n_(l-1) enter; corrections are then per 1/n_L).

    Parameters
    ----------
    act : str, sympy.Expr or Activation
        The activation of every hidden layer.
    depth : int
        The number of hidden layers L >= 1.
    C_W, C_b : float or sequence of float, default 1.0, 0.0
        Weight and bias variances (keyword-only): scalars or L + 1 values (readout last).
    param : {'ntk', 'unit'}, default 'ntk'
        The NTK's learning-rate factors (lambda_b, lambda_W) = (C_b, C_W) or (1, 1).
    widths : sequence of int or None, default None
        The L hidden widths (None: equal).

    Raises
    ------
    ValueError
        If ``depth`` is not a positive integer, a per-layer list has the wrong length, or ``param`` is
        'standard' or unknown.

    Examples
    --------
    ReLU at criticality (C_W = 2, C_b = 0, 'ntk': lambda_b = 0, lambda_W = 2) with G0 = x.x/n_0 = 1/2 keeps K = 1 and gives, per layer,
    Theta' = K + Theta, V' = 5 K^2 + V and B' = 2 Theta^2 + B (the module :mod:`~ntk_theory.finite_width.single`'s
    recursion with <s^2> = K/2, <s^4> = 3K^2/2, <s'^2> = <s'^4> = 1/2), so at the output of L = 2 hidden layers
    Theta = 3, V = 10, B = 2 + 2 * 2^2 = 10 and the output cumulant 3 V = 15 L:

    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> rec = FiniteWidthRecursion("relu", 2, C_W=2.0)
    >>> out = rec.one_input(G0=0.5)[-1]
    >>> (out.K, out.Th, out.V, out.B, out.K1), out.output_cumulant
    ((1.0, 3.0, 10.0, 10.0, 0.0), 30.0)
    """

    def __init__(self, act, depth: int, *, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None):
        self.activation = act if hasattr(act, "expr") else _activation(act)
        self.depth = _checks.positive_int("depth", depth)
        self.C_W = _checks.per_layer("C_W", C_W, self.depth + 1)
        self.C_b = _checks.per_layer("C_b", C_b, self.depth + 1)
        self.param = _checks.choice("param", param, PARAMETERIZATIONS)
        if self.param == "standard":
            raise ValueError(
                "param='standard' has lambda_W = n_(l-1), which grows with the width and mixes the orders of "
                "the 1/n expansion; use param='ntk' (lambda = C) or 'unit' (lambda = 1)"
            )
        if widths is None:
            self.ratios = [1.0] * (self.depth + 1)
        else:
            w = _checks.per_layer("widths", widths, self.depth, check=_checks.positive_int)
            self.ratios = [1.0, 1.0] + [w[l] / w[l - 1] for l in range(1, self.depth)]
        self.widths = widths

    @classmethod
    def from_description(cls, description) -> "FiniteWidthRecursion":
        """The recursion of a plain-MLP description (a stax network or a layer; per-layer C_W, C_b and
        widths read from its Dense layers); :class:`~ntk_theory.finite_width.NotDerived` naming the first
        layer otherwise (a residual description: :func:`~ntk_theory.finite_width.recursion_for`).

        Parameters
        ----------
        description : Network or Layer
            Dense, activation, Dense, ..., Dense (one activation throughout).

        Returns
        -------
        FiniteWidthRecursion

        Raises
        ------
        NotDerived
            If the description is not a plain MLP of one activation (a residual one included).

        Examples
        --------
        >>> from ntk_theory import stax
        >>> from ntk_theory.finite_width import FiniteWidthRecursion
        >>> net = stax.serial(stax.Dense(8, W_std=2 ** 0.5), stax.Relu(), stax.Dense(1, W_std=2 ** 0.5))
        >>> rec = FiniteWidthRecursion.from_description(net)
        >>> rec.depth, [round(c, 12) for c in rec.C_W]        # W_std**2 = 2 up to rounding
        (1, [2.0, 2.0])
        """
        from .description import recursion_for
        from .residual import NotDerived

        rec = recursion_for(description)
        if not isinstance(rec, cls):
            raise NotDerived(f"{description!r} is a residual network, not a plain MLP: use "
                             "ntk_theory.finite_width.recursion_for (a ResidualRecursion)")
        return rec

    @functools.cached_property
    def averages(self) -> OneInputAverages:
        return one_input_averages(self.activation)

    def lambdas(self, layer: int) -> tuple[float, float]:
        """(lambda_b, lambda_W) of layer ``layer`` (1-based, L + 1 = readout).

        Parameters
        ----------
        layer : int
            1 .. L + 1.

        Returns
        -------
        tuple of float
            (C_b, C_W) of that layer in 'ntk', (1, 1) in 'unit'.

        Examples
        --------
        >>> from ntk_theory.finite_width import FiniteWidthRecursion
        >>> FiniteWidthRecursion("relu", 2, C_W=[1.0, 2.0, 3.0], C_b=0.1).lambdas(3)
        (0.1, 3.0)
        >>> FiniteWidthRecursion("relu", 2, C_W=2.0, param="unit").lambdas(1)
        (1.0, 1.0)
        """
        return learning_rate_factors(self.param, C_W=self.C_W[layer - 1], C_b=self.C_b[layer - 1], fan_in=1)

    # ------------------------------------------------------------------ one input, numbers
    def one_input(self, x=None, *, G0=None) -> list[single.State]:
        """States of layers 1 .. L+1 for one input x (or its G0 = x.x / n_0), float64.

        Each state's ``error`` is the largest quadrature error estimate of the averages used
        in that layer (0 for closed forms).

        Parameters
        ----------
        x : array_like, optional
            One input (n_0,) or (1, n_0).
        G0 : float, optional
            x.x / n_0 instead of ``x`` (keyword-only).

        Returns
        -------
        list of State
            L + 1 states, the readout's last (K, Th, V, K1, A, B, D, F, Th1; 1/n coefficients).

        Raises
        ------
        ValueError
            If neither or several inputs are given, or a variance vanishes (zero input and C_b = 0).

        Examples
        --------
        ReLU at criticality (C_W = 2, C_b = 0, 'ntk': lambda_b = 0, lambda_W = 2) with G0 = x.x/n_0 = 1/2 keeps K = 1, Theta = 1, 2, 3 and V = 0, 5, 10 (V' = 5 K^2 + V):

        >>> import numpy as np
        >>> from ntk_theory.finite_width import FiniteWidthRecursion
        >>> states = FiniteWidthRecursion("relu", 2, C_W=2.0).one_input(np.array([1.0, 0.0]))
        >>> [(s.K, s.Th, s.V) for s in states]
        [(1.0, 1.0, 0), (1.0, 2.0, 5.0), (1.0, 3.0, 10.0)]

        tanh at one hidden layer: V = C_W^2 (<s^4> - <s^2>^2) at the readout, against scipy quadrature:

        >>> from scipy import integrate, stats
        >>> gauss = lambda f: integrate.quad(lambda z: f(z) * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-14)[0]
        >>> V = FiniteWidthRecursion("tanh", 1, C_W=1.5).one_input(G0=1 / 1.5)[-1].V    # K(1) = 1
        >>> bool(np.isclose(V, 1.5**2 * (gauss(lambda z: np.tanh(z)**4) - gauss(lambda z: np.tanh(z)**2)**2), rtol=1e-9))
        True
        """
        if G0 is None:
            xa = _checks.inputs(np.atleast_2d(np.asarray(x, dtype=float)), "x")
            if xa.shape[0] != 1:
                raise ValueError(f"one_input takes one input; got {xa.shape[0]} (use tensors for several)")
            G0 = float(xa[0] @ xa[0]) / xa.shape[1]
        G0 = _checks.variance("G0", G0)
        lb, lw = self.lambdas(1)
        st = single.State(K=self.C_b[0] + self.C_W[0] * G0, Th=lb + lw * G0)
        states = [st]
        for l in range(1, self.depth + 1):
            if not st.K > 0:
                raise ValueError(f"the variance of layer {l} is {st.K}: the input and C_b are both zero")
            errors = []

            def avg(name, order, K=st.K):
                v, e = self.averages[name].evaluate(K, order)
                errors.append(e)
                return v

            lb, lw = self.lambdas(l + 1)
            st = single.step(st, avg, self.C_W[l], self.C_b[l], lb, lw, self.ratios[l])
            st.error = max(errors)
            states.append(st)
        return states

    # ------------------------------------------------------------------ one input, SymPy
    def layer_map(self, layer: int = 2) -> single.State:
        """The map from layer ``layer - 1`` to ``layer`` as SymPy expressions in the symbols of
        :func:`ntk_theory.finite_width.single.symbols` (closed forms in K where derived, placeholders <g>(K)
        otherwise).

        Parameters
        ----------
        layer : int, default 2
            2 .. L + 1 (its C_W, C_b, lambdas and width ratio are used).

        Returns
        -------
        State
            SymPy expressions for K', Theta', V', ... in the previous layer's K, Theta, V, ...

        Examples
        --------
        ReLU at C_W = 2: V' = 5 K^2 + V (<s^4> - <s^2>^2 = 5 K^2 / 4):

        >>> from ntk_theory.finite_width import FiniteWidthRecursion
        >>> FiniteWidthRecursion("relu", 2, C_W=2.0).layer_map(2).V
        5*K**2 + V
        """
        st = single.symbols()
        C_W, C_b = (sp.nsimplify(v) for v in (self.C_W[layer - 1], self.C_b[layer - 1]))
        lb, lw = (sp.nsimplify(v) for v in self.lambdas(layer))
        r = sp.nsimplify(self.ratios[layer - 1])
        new = single.step(st, lambda name, order: self.averages[name].symbol(st.K, order), C_W, C_b, lb, lw, r)
        return single.State(**{n: _tidy(v) for n, v in new.values().items()})

    def symbolic(self, G0=None, simplify: bool = True) -> list[single.State]:
        """Layers 1 .. L+1 for one input as SymPy expressions in G0 (closed-form averages only).

        Parameters
        ----------
        G0 : sympy.Expr or None, default None
            The input's x.x / n_0 (None: the symbol ``G_0``).
        simplify : bool, default True
            Simplify each layer's expressions.

        Returns
        -------
        list of State

        Raises
        ------
        ValueError
            If an average has no closed form (use :meth:`layer_map` or :meth:`one_input`).

        Examples
        --------
        ReLU at C_W = 2: K = 2 G0 in every layer and V = 5 L K^2 at the output:

        >>> from ntk_theory.finite_width import FiniteWidthRecursion
        >>> out = FiniteWidthRecursion("relu", 2, C_W=2.0).symbolic()[-1]
        >>> out.K, out.V
        (2*G_0, 40*G_0**2)
        """
        if not self.averages.closed_form:
            missing = [n for n, a in self.averages.averages.items() if not a.is_closed_form]
            raise ValueError(f"no closed form for the averages {missing} of {self.activation.name}; "
                             "use layer_map() (placeholders) or one_input() (numbers)")
        G0 = sp.Symbol("G_0", positive=True) if G0 is None else G0
        lb, lw = (sp.nsimplify(v) for v in self.lambdas(1))
        st = single.State(K=sp.nsimplify(self.C_b[0]) + sp.nsimplify(self.C_W[0]) * G0, Th=lb + lw * G0)
        out = [st]
        for l in range(1, self.depth + 1):
            C_W, C_b = sp.nsimplify(self.C_W[l]), sp.nsimplify(self.C_b[l])
            lb, lw = (sp.nsimplify(v) for v in self.lambdas(l + 1))
            K = st.K
            st = single.step(st, lambda name, order: self.averages[name].symbol(K, order), C_W, C_b, lb, lw,
                             sp.nsimplify(self.ratios[l]))
            if simplify:
                st = single.State(**{n: _tidy(v) for n, v in st.values().items()})
            out.append(st)
        return out

    def __repr__(self) -> str:
        return (f"FiniteWidthRecursion({self.activation.name}, depth={self.depth}, C_W={self.C_W[-1]:g}, "
                f"C_b={self.C_b[-1]:g}, param={self.param!r})")


def _tensor_method(self, X, tol: float = 1e-10, progress=None, map=None):
    """States (:class:`~.tensors.TensorState`) of layers 1 .. L+1 at the N inputs X (N, n_0);
    ``progress`` as :func:`ntk_theory.progress.progress_bar` (a bar over the layers).  ``map``: where the
    four-point input sets that are integrated numerically run, a callable ``map(fn, chunks)`` returning
    ``[fn(c) for c in chunks]`` (:func:`ntk_theory.numerics.fourpoint.four_point_moments`;
    :func:`ntk_theory.distributed.dask_map` for Dask tasks); None: this process.  Same result either way.

    Parameters
    ----------
    X : array_like
        Inputs (N, n_0).
    tol : float, default 1e-10
        Relative tolerance of the numerically integrated four-point averages.
    progress : bool or None, default None
        A progress bar over the layers.
    map : callable or None, default None
        Where the four-point input sets run.

    Returns
    -------
    list of TensorState
        L + 1 states with K, Th (N, N) and V, A, B, D, F (N, N, N, N), K1, Th1 (N, N).

    Examples
    --------
    The diagonal entries are the one-input values (ReLU at C_W = 2, unit inputs: V = 5 L at the output):

    >>> import numpy as np
    >>> from ntk_theory.finite_width import FiniteWidthRecursion
    >>> out = FiniteWidthRecursion("relu", 2, C_W=2.0).tensors(np.array([[1.0, 0.0], [0.6, 0.8]]), progress=False)[-1]
    >>> out.V.shape, float(out.V[0, 0, 0, 0]), float(out.V[1, 1, 1, 1])
    ((2, 2, 2, 2), 10.0, 10.0)
    """
    from .. import _checks as checks
    from ..progress import progress_bar
    from . import tensors
    from .twopoint import TwoPoint, derivative_tensors

    X = checks.inputs(X, "X")
    uniq, inv = np.unique(X, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel()
    overlap = False
    if uniq.shape[0] > 1:
        from ..gaussian.fourpoint import piecewise_linear_slopes
        from ..numerics import fourpoint

        if piecewise_linear_slopes(self.activation) is None:
            fourpoint.prefetch_core()  # the numerical four-point integrator: compile it meanwhile
            overlap = uniq.shape[0] <= 16 and not fourpoint.integrator_loaded()
    d = X.shape[1]
    G0 = uniq @ uniq.T / d
    lb, lw = self.lambdas(1)
    st = tensors.TensorState.first_layer(self.C_b[0] + self.C_W[0] * G0, lb + lw * G0)
    tp_ss, tp_dd = TwoPoint(self.activation, "ss"), TwoPoint(self.activation, "dd")
    if overlap:
        # while the four-point integrator compiles (a child process, cold start only): the kernels
        # K of all layers and their two-point tensors, kept for the layer steps below (same K, bit
        # for bit: K_(l+1) = C_b + C_W <s s> as in tensors.step)
        K = st.K
        for l in range(1, self.depth + 1):
            if not np.all(np.diag(K) > 0):
                break
            derivative_tensors(tp_dd, K, keep=True)
            K = self.C_b[l] + self.C_W[l] * derivative_tensors(tp_ss, K, keep=True).value
    states = [st]
    with progress_bar(total=self.depth, desc=f"finite-width tensors, {uniq.shape[0]} inputs", unit="layer",
                      enabled=progress) as bar:
        for l in range(1, self.depth + 1):
            if not np.all(np.diag(st.K) > 0):
                raise ValueError(f"a variance of layer {l} is zero: an input is zero and C_b = 0")
            lb, lw = self.lambdas(l + 1)
            st = tensors.step(st, self.activation, tp_ss, tp_dd, self.C_W[l], self.C_b[l], lb, lw, self.ratios[l],
                              tol, progress, map=map)
            states.append(st)
            bar.update(1)
    return [s.expand(inv) for s in states]


FiniteWidthRecursion.tensors = _tensor_method


#: expressions with more operations than this are left as they are: sp.simplify's cost grows
#: steeply with size (prohibitively for the nested erfc iterates of activations with kinks away from 0)
SIMPLIFY_MAX_OPS = 120


def _tidy(expr):
    """sp.simplify for expressions of at most SIMPLIFY_MAX_OPS operations, else the expression as is
    (equal either way; only its printed form differs)."""
    return sp.simplify(expr) if sp.count_ops(expr) <= SIMPLIFY_MAX_OPS else expr
