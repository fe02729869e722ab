r"""Finite-width predictions for a network's output at N inputs: the public API.

For L hidden layers of width n and a scalar readout (the network of ``ntk-theory kernel``)::

    E[f_a f_b]                = nngp_ab + nngp_correction_ab / n + O(1/n^2)
    E[Theta_ab]               = ntk_ab  + ntk_correction_ab / n  + O(1/n^2)
    Cov(Theta_ab, Theta_cd)   = ntk_covariance_abcd / n           + O(1/n^2)
    E[f_a f_b f_c f_d] - (3 pairings of E[f f]) = output_cumulant_abcd / n + O(1/n^2)
    Cov(Theta_ab, f_c f_d)    = ntk_output_covariance_abcd / n    + O(1/n^2)

with ntk_covariance = A_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc), output_cumulant = V_(ab)(cd) +
V_(ac)(bd) + V_(ad)(bc), ntk_output_covariance = D_abcd + F_(ac)(bd) + F_(ad)(bc), and the
readout layer's tensors V, A, B, D, F (index conventions in :mod:`.tensors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..conventions import PARAMETERIZATIONS
from ..docstrings import filled, returns
from .network import FiniteWidthRecursion
from .residual import ResidualRecursion

ARRAYS = ("nngp", "ntk", "nngp_correction", "ntk_correction", "ntk_covariance", "output_cumulant",
          "ntk_output_covariance", "V", "A", "B", "D", "F")


@dataclass
class FiniteWidthPredictions:
    """The infinite-width kernels and the 1/n coefficients at N inputs (see the module docstring).

    Made by :func:`~ntk_theory.finite_width.finite_width`.

    Parameters
    ----------
    nngp, ntk : numpy.ndarray
        (N, N) infinite-width kernels.
    nngp_correction, ntk_correction : numpy.ndarray
        (N, N) coefficients of 1/n of E[f f] and E[Theta].
    ntk_covariance, output_cumulant, ntk_output_covariance : numpy.ndarray
        (N, N, N, N) coefficients of 1/n (names as :mod:`ntk_theory.quantities`).
    V, A, B, D, F : numpy.ndarray
        The readout's four-index tensors.
    layers : list, default []
        The states of every layer.
    quadrature_error : float, default 0.0
        The largest quadrature error estimate of the averages used.
    description : str, default ''
        What was computed.

    Examples
    --------
    ReLU at criticality, L = 2 hidden layers, one unit input (K = 1): the output cumulant is 15 L and
    E[f^2] gets no 1/n correction:

    >>> import numpy as np
    >>> from ntk_theory.finite_width import finite_width
    >>> p = finite_width("relu", np.array([[1.0, 0.0]]), depth=2, C_W=2.0, progress=False)
    >>> type(p).__name__, round(float(p.output_cumulant[0, 0, 0, 0]), 9), round(float(p.nngp_correction[0, 0]), 12)
    ('FiniteWidthPredictions', 30.0, 0.0)
    """

    nngp: np.ndarray
    ntk: np.ndarray
    nngp_correction: np.ndarray
    ntk_correction: np.ndarray
    ntk_covariance: np.ndarray
    output_cumulant: np.ndarray
    ntk_output_covariance: np.ndarray
    V: np.ndarray
    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    F: np.ndarray
    layers: list = field(repr=False, default_factory=list)
    quadrature_error: float = 0.0
    description: str = ""

    def at_width(self, width: int) -> dict:
        """The leading-order values at hidden width n: E[f f], E[Theta], Cov(Theta, Theta), the
        output cumulant and Cov(Theta, f f).

        Parameters
        ----------
        width : int
            The hidden width n >= 1.

        Returns
        -------
        dict
            ``output_second_moment``, ``ntk_mean`` (N, N) and ``ntk_covariance``, ``output_cumulant``,
            ``ntk_output_covariance`` (N, N, N, N): infinite-width value + coefficient / n.

        Raises
        ------
        ValueError
            If ``width`` < 1.

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.finite_width import finite_width
        >>> p = finite_width("relu", np.array([[1.0, 0.0]]), depth=2, C_W=2.0, progress=False)
        >>> w = p.at_width(100)
        >>> bool(np.allclose(w["output_cumulant"], p.output_cumulant / 100)), sorted(w)[:2]
        (True, ['ntk_covariance', 'ntk_mean'])
        """
        n = float(width)
        if not n >= 1:
            raise ValueError(f"width must be >= 1; got {width!r}")
        return {
            "output_second_moment": self.nngp + self.nngp_correction / n,
            "ntk_mean": self.ntk + self.ntk_correction / n,
            "ntk_covariance": self.ntk_covariance / n,
            "output_cumulant": self.output_cumulant / n,
            "ntk_output_covariance": self.ntk_output_covariance / n,
        }

    @filled(returns=returns("dict"))
    def arrays(self) -> dict:
        """The arrays by name (what :meth:`save` writes).

        %(returns)s
        >>> import numpy as np
        >>> from ntk_theory.finite_width import finite_width
        >>> a = finite_width("relu", np.array([[1.0, 0.0]]), depth=1, C_W=2.0, progress=False).arrays()
        >>> a["nngp"].shape, a["output_cumulant"].shape
        ((1, 1), (1, 1, 1, 1))
        """
        return {name: getattr(self, name) for name in ARRAYS}

    def save(self, path) -> None:
        """Write :meth:`arrays`, ``quadrature_error`` and ``description`` to an ``.npz`` file.

        Parameters
        ----------
        path : str or path
            The file (NumPy adds ``.npz`` if missing).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from ntk_theory.finite_width import finite_width
        >>> p = finite_width("relu", np.array([[1.0, 0.0]]), depth=1, C_W=2.0, progress=False)
        >>> path = os.path.join(tempfile.mkdtemp(), "p.npz")
        >>> p.save(path)
        >>> bool(np.array_equal(np.load(path)["output_cumulant"], p.output_cumulant))
        True
        """
        np.savez(path, **self.arrays(), quadrature_error=self.quadrature_error,
                 description=np.array(self.description))

    def __repr__(self) -> str:
        N = self.nngp.shape[0]
        lines = [f"FiniteWidthPredictions({self.description}; N = {N} inputs, quadrature error "
                 f"<= {self.quadrature_error:.1e})"]
        with np.printoptions(precision=5, suppress=False, linewidth=100):
            for name in ("nngp", "ntk", "nngp_correction", "ntk_correction"):
                lines.append(f"  {name:16s} {np.array2string(getattr(self, name), prefix=' ' * 19)}")
            idx = (0,) * 4
            for name in ("ntk_covariance", "output_cumulant", "ntk_output_covariance"):
                lines.append(f"  {name:22s} (N,N,N,N); [0,0,0,0] = {getattr(self, name)[idx]:.6g}")
        return "\n".join(lines)


@dataclass
class ResidualPredictions:
    """The one-input finite-width statistics of a residual network at each of N inputs: per input and layer
    (layers 1 .. L, the readout last) the fields of :class:`~.residual.ResidualState` (K, Theta, V, K1, M3 and the
    NTK's A, B, D, F, Theta1; :mod:`.residual`), each input run through
    :meth:`~.residual.ResidualRecursion.one_input` on its own (the diagonal a = b = c = d of the several-input
    tensors).  ``arrays()``: those fields as (N, L + 1) arrays, and the readout's entries of the
    :class:`FiniteWidthPredictions` arrays at each input alone: nngp, ntk, nngp_correction, ntk_correction
    (N, 1, 1) and output_cumulant = 3 V, ntk_covariance = A + 2 B, ntk_output_covariance = D + 2 F
    (N, 1, 1, 1, 1).  ``tensors``: the several-input states of every layer
    (:meth:`~.residual.ResidualRecursion.tensors`: K, Theta, V, M3 and K1 at all pairs of inputs); when given,
    ``arrays()`` has the readout's nngp, ntk, nngp_correction (N, N) and output_cumulant (N, N, N, N) at all
    inputs (E[f_a f_b] = nngp + nngp_correction / n at every pair); ``ntk_tensors``: the readout's (and every
    layer's) A, B, D, F at all inputs (:meth:`~.residual.ResidualRecursion.ntk_tensors`); when given,
    ``arrays()``' ntk_covariance and ntk_output_covariance are (N, N, N, N) at all inputs, and for smooth
    activations (with the entry "Th1", :meth:`~.residual.ResidualRecursion.ntk_correction`) ntk_correction is
    Theta1_(ab), (N, N), for smooth and piecewise-linear activations (relu, leaky_relu, abs); for other kinked ones
    it stays per input, (N, 1, 1) (their Dirac terms are not derived).

    Made by :func:`~ntk_theory.finite_width.finite_width` for residual descriptions.

    Parameters
    ----------
    layers : list of list of ResidualState
        Per input, the states of layers 1 .. L and the readout.
    quadrature_error : float, default 0.0
        The largest quadrature error estimate.
    description : str, default ''
        What was computed.
    tensors : list, default []
        The several-input states of every layer (optional).

    Examples
    --------
    A linear residual network (xi = 0.8, gamma = 1, C_W = 0.5, C_b = 0.1, G0 = 1): K(1) = 0.6,
    K(l+1) = xi^2 K + C_b + C_W K, readout C_b + C_W K(3):

    >>> import numpy as np
    >>> from ntk_theory.finite_width import ResidualPredictions, ResidualRecursion
    >>> rec = ResidualRecursion("linear", 3, C_W=0.5, C_b=0.1, xi=0.8, gamma=1.0)
    >>> p = ResidualPredictions([rec.one_input(G0=1.0)])
    >>> K = 0.6
    >>> for _ in range(2):
    ...     K = 0.64 * K + 0.1 + 0.5 * K
    >>> bool(np.isclose(p.arrays()["nngp"][0, 0, 0], 0.1 + 0.5 * K, rtol=1e-14)), p.arrays()["K"].shape
    (True, (1, 4))
    """

    layers: list
    quadrature_error: float = 0.0
    description: str = ""
    tensors: list = field(default_factory=list, repr=False)
    ntk_tensors: list = field(default_factory=list, repr=False)

    def arrays(self) -> dict:
        """The states' fields as (N, L + 1) arrays and the readout's prediction arrays (class docstring).

        Returns
        -------
        dict

        Examples
        --------
        >>> from ntk_theory.finite_width import ResidualPredictions, ResidualRecursion
        >>> rec = ResidualRecursion("linear", 2, C_W=0.5, C_b=0.1, xi=0.8)
        >>> a = ResidualPredictions([rec.one_input(G0=1.0), rec.one_input(G0=2.0)]).arrays()
        >>> a["V"].shape, a["nngp"].shape, a["output_cumulant"].shape
        ((2, 3), (2, 1, 1), (2, 1, 1, 1, 1))
        """
        names = list(self.layers[0][0].values())
        out = {name: np.array([[getattr(s, name) for s in states] for states in self.layers]) for name in names}
        top = [states[-1] for states in self.layers]
        for name, value in READOUT.items():
            shape = (-1, 1, 1) if name in PAIR else (-1, 1, 1, 1, 1)
            out[name] = np.array([value(s) for s in top], dtype=float).reshape(shape)
        if self.tensors:
            t = self.tensors[-1]
            out.update(nngp=t.K, ntk=t.Th, nngp_correction=t.K1, output_cumulant=t.output_cumulant)
        if self.ntk_tensors:
            top = self.ntk_tensors[-1]
            B, F = top["B"], top["F"]
            out.update(ntk_covariance=top["A"] + B.transpose(0, 2, 1, 3) + B.transpose(0, 2, 3, 1),
                       ntk_output_covariance=top["D"] + F.transpose(0, 2, 1, 3) + F.transpose(0, 2, 3, 1))
            if "Th1" in top:
                out["ntk_correction"] = top["Th1"]
        return out

    def save(self, path) -> None:
        """Write :meth:`arrays`, ``quadrature_error`` and ``description`` to an ``.npz`` file.

        Parameters
        ----------
        path : str or path
            The file.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from ntk_theory.finite_width import ResidualPredictions, ResidualRecursion
        >>> p = ResidualPredictions([ResidualRecursion("linear", 2, C_W=0.5, xi=0.8).one_input(G0=1.0)])
        >>> path = os.path.join(tempfile.mkdtemp(), "r.npz")
        >>> p.save(path)
        >>> bool(np.array_equal(np.load(path)["K"], p.arrays()["K"]))
        True
        """
        np.savez(path, **self.arrays(), quadrature_error=self.quadrature_error,
                 description=np.array(self.description))

    def __repr__(self) -> str:
        lines = [f"ResidualPredictions({self.description}; {len(self.layers)} input(s), one at a time, quadrature "
                 f"error <= {self.quadrature_error:.1e})"]
        for a, states in enumerate(self.layers):
            lines.append(f"  input {a}:")
            for l, st in enumerate(states, 1):
                label = "readout" if l == len(states) else f"layer {l}"
                lines.append(f"    {label:8s} " + ", ".join(f"{n} = {v:.6g}" for n, v in st.values().items()))
        if self.tensors:
            with np.printoptions(precision=5, suppress=False, linewidth=100):
                for name, value in (("nngp", self.tensors[-1].K), ("nngp_correction", self.tensors[-1].K1)):
                    lines.append(f"  all inputs, {name:16s} {np.array2string(value, prefix=' ' * 31)}")
        return "\n".join(lines)


#: the FiniteWidthPredictions arrays of one input, from the readout's ResidualState
READOUT = {
    "nngp": lambda s: s.K, "ntk": lambda s: s.Th, "nngp_correction": lambda s: s.K1, "ntk_correction": lambda s: s.Th1,
    "output_cumulant": lambda s: s.output_cumulant, "ntk_covariance": lambda s: s.ntk_variance,
    "ntk_output_covariance": lambda s: s.ntk_kernel_covariance,
}
PAIR = ("nngp", "ntk", "nngp_correction", "ntk_correction")


def finite_width(activation, X, depth: int | None = None, *, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None,
                 tol: float = 1e-10, progress=None):
    """The finite-width predictions of a network at X (N, d).

    Parameters
    ----------
    activation : Network, Layer, str or sympy.Expr
        A network description (a :mod:`ntk_theory.stax` network or an :mod:`ntk_theory.architecture`
        layer), read by :func:`.description.recursion_for`; or, as MLP shorthand, an activation (library
        name, expression or activation object) with ``depth`` hidden layers.
    X : array_like
        Inputs (N, d).
    depth : int, optional
        The number of hidden layers of the MLP shorthand (required with an activation).
    C_W, C_b : float or sequence of float, default 1.0 and 0.0
        MLP shorthand: weight and bias variances, scalars or depth + 1 values.
    param : {'ntk', 'unit'}, default 'ntk'
        MLP shorthand: the parameterization.
    widths : int or sequence of int, optional
        MLP shorthand: the hidden widths if unequal (corrections per 1/n_L).
    tol : float, default 1e-10
        Relative tolerance of the four-point Gaussian averages.
    progress : bool or None, default None
        A bar over the layers (True, False, or None: when standard error is a terminal and the run takes
        seconds).

    Returns
    -------
    FiniteWidthPredictions or ResidualPredictions
        A plain MLP gives :class:`FiniteWidthPredictions` (the N-input tensors); a residual MLP gives
        :class:`ResidualPredictions` (every statistic at each input on its own, and all at all inputs but
        Theta1 of kinked activations other than the piecewise-linear ones).

    Raises
    ------
    NotDerived
        (a ValueError) Naming the first layer without a derived 1/n rule.
    ValueError
        If the MLP shorthand lacks ``depth`` or has invalid values, or a description is given together with
        MLP arguments (the description carries the whole network).

    Notes
    -----
    The coefficients of the module docstring: E[f_a f_b] = nngp + nngp_correction / n, E[Theta] = ntk +
    ntk_correction / n, and the 1/n connected four-point functions (output_cumulant, ntk_covariance,
    ntk_output_covariance), each up to O(1/n^2).  The MLP shorthand builds the description
    (:func:`ntk_theory.architecture.mlp.mlp_description`) and reads it the same way.  The error estimate of
    the Gaussian averages is ``quadrature_error``.

    Examples
    --------
    ReLU at criticality (C_W = 2, C_b = 0) at one input with x.x/n_0 = 1/2: K = 1 in every layer, and since
    E[relu(z)^2 | K] = K/2 is linear there is no 1/n shift of E[f^2].  With z ~ N(0, K), Var(relu(z)^2) =
    5/4 K^2, so each hidden layer adds C_W^2 (5/4) K^2 = 5 to n Var of the next layer's preactivation
    variance, and the output cumulant E[f^4] - 3 E[f^2]^2 = 3 Var is 15 L / n for L hidden layers.

    >>> import numpy as np
    >>> from ntk_theory.finite_width.predictions import finite_width
    >>> p = finite_width("relu", np.array([[1.0, 0.0]]), depth=2, C_W=2.0, progress=False)
    >>> float(p.nngp[0, 0]), abs(float(p.nngp_correction[0, 0])) < 1e-12
    (1.0, True)
    >>> round(float(p.output_cumulant[0, 0, 0, 0]), 9)   # 15 * 2
    30.0

    The same with one hidden layer, from a stax description:

    >>> from ntk_theory import stax
    >>> net = stax.serial(stax.Dense(8, W_std=2 ** 0.5), stax.Relu(), stax.Dense(1, W_std=2 ** 0.5))
    >>> p = finite_width(net, np.array([[1.0, 0.0]]), progress=False)
    >>> round(float(p.output_cumulant[0, 0, 0, 0]), 9)
    15.0
    >>> p.at_width(100)["output_cumulant"].shape
    (1, 1, 1, 1)
    """
    from .description import description_of, recursion_for

    layer = description_of(activation)
    if layer is None:
        layer, text = _mlp(activation, depth, C_W, C_b, param, widths)
    else:
        given = [name for name, value, default in (("depth", depth, None), ("C_W", C_W, 1.0), ("C_b", C_b, 0.0),
                                                   ("param", param, "ntk"), ("widths", widths, None))
                 if value is not default and value != default]
        if given:
            raise ValueError(f"the description carries the whole network; drop {', '.join(given)}")
        text = repr(layer)
    rec = recursion_for(layer)
    return PREDICTIONS[type(rec)](rec, X, tol, progress, text)


def _mlp(activation, depth, C_W, C_b, param, widths):
    """The description of the MLP shorthand and the predictions' description text."""
    from .. import _checks
    from ..architecture.mlp import mlp_description
    from .description import activation_as_layer

    if depth is None:
        raise ValueError("depth is required with an activation (or give a network description)")
    depth = _checks.positive_int("depth", depth)
    cw = _checks.per_layer("C_W", C_W, depth + 1)
    cb = _checks.per_layer("C_b", C_b, depth + 1)
    param = _checks.choice("param", param, PARAMETERIZATIONS)
    hidden = 1 if widths is None else list(_checks.per_layer("widths", widths, depth, check=_checks.positive_int))
    act = activation_as_layer(activation)
    desc = mlp_description(act, depth, C_W=cw, C_b=cb, param=param, widths=hidden)
    return desc, (f"{act.activation.name}, depth {depth}, C_W {cw[-1]:g}, C_b {cb[-1]:g}, param {param}")


def _tensor_predictions(rec: FiniteWidthRecursion, X, tol, progress, text) -> FiniteWidthPredictions:
    layers = rec.tensors(X, tol=tol, progress=progress)
    top = layers[-1]
    F = top.F
    return FiniteWidthPredictions(
        nngp=top.K, ntk=top.Th, nngp_correction=top.K1, ntk_correction=top.Th1,
        ntk_covariance=top.ntk_covariance, output_cumulant=top.output_cumulant,
        ntk_output_covariance=top.D + F.transpose(0, 2, 1, 3) + F.transpose(0, 2, 3, 1),
        V=top.V, A=top.A, B=top.B, D=top.D, F=top.F, layers=layers,
        quadrature_error=max(s.error for s in layers), description=text,
    )


def _residual_predictions(rec: ResidualRecursion, X, tol, progress, text) -> ResidualPredictions:
    from .. import _checks

    X = _checks.inputs(X, "X")
    layers = [rec.one_input(x[None, :]) for x in X]
    tensors = rec.tensors(X, tol=tol)
    ntk = rec._ntk_several(X, tol, th1=rec.theta1_derived)  # Theta1_(ab): smooth and piecewise-linear activations
    return ResidualPredictions(layers, max([s.error for states in layers for s in states] + [tensors[-1].error]), text,
                               tensors, ntk)


#: recursion type -> its predictions at the inputs X
PREDICTIONS = {FiniteWidthRecursion: _tensor_predictions, ResidualRecursion: _residual_predictions}
