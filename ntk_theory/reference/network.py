r"""The reference finite-width MLP in NumPy: a description plus parameters, run by the description
interpreter (:mod:`.graph`).

Conventions (PDLT, see :mod:`ntk_theory.conventions`)::

    z(1) = W(1) x + b(1),   z(l+1) = W(l+1) s(z(l)) + b(l+1),   f = z(L+1)
    W(l) ~ N(0, C_W(l) / n_(l-1)),  b(l) ~ N(0, C_b(l))

Parameters are stored in PDLT coordinates ``theta = (W(1), b(1), ..., W(L+1), b(L+1))``; a tangent
``v`` is a list of ``(dW(l), db(l))`` of the same shapes (or a flat vector in :meth:`MLP.flatten`
order).

:meth:`MLP.as_description` is ``serial(Dense(n_1), s, ..., Dense(n_out))`` with the network's C_W, C_b and
param (:func:`~ntk_theory.architecture.mlp.mlp_description`), its elementwise layers evaluated by the MLP's
NumPy pair (hand-written for the library names, :mod:`.activations`) and its Dense layers acting in PDLT
coordinates, ``z = x W(l)^T + b(l)`` (:mod:`.mlp_graph`); :attr:`MLP.params` are the same parameters in
neural-tangents' layout.  Every derivative is the interpreter's rule for that layer type, run on its tape
(:func:`~ntk_theory.reference.graph.trace`):

- :meth:`MLP.forward`: z(l), a(l) = s(z(l)) and s'(z(l)) read off the tape;
- :meth:`MLP.jvp`: forward mode, ``dz(l+1) = W(l+1) [s'(z(l)) * dz(l)] + dW(l+1) a(l) + db(l+1)``;
- :meth:`MLP.vjp`, :meth:`MLP.output_sensitivities`: reverse mode, ``g(l) = (g(l+1) W(l+1)) * s'(z(l))``,
  the O output cotangents e_o at all inputs at once giving ``T(l) = df/dz(l)``;
- :meth:`MLP.jacobian`: the structure of a dense layer, ``df/dW(l)_ij = T(l)_{., i} a(l-1)_j``,
  ``df/db(l)_i = T(l)_{., i}``;
- :meth:`MLP.ntk`: ``Theta = J Lambda J^T`` with ``Lambda`` the learning-rate factors of ``param``, by the
  structured rule (:func:`~ntk_theory.reference.graph.structured_ntk`)::

    Theta_ab = sum_l (T(l)_a . T(l)_b) [lambda_b(l) + lambda_W(l) / n_(l-1) a(l-1)_a . a(l-1)_b]

Everything is float64, exact up to the rounding of the NumPy operations.  The module itself loads no
symbolic module (an :class:`MLP` is built, and its parameters handled, without SymPy); the description and
its interpreter are imported on the first forward pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import _checks
from ..architecture import MLPSpec
from ..docstrings import filled, returns
from .activations import NumpyActivation, numpy_activation

Array = np.ndarray


@dataclass(frozen=True)
class Trace:
    """Everything the forward pass computes at inputs X (N, n_0).

    ``z[l-1]`` is z(l) of shape (N, n_l) for l = 1 .. L+1 (``z[-1]`` is the output f);
    ``a[l]`` is a(l) = s(z(l)) for l = 1 .. L, with ``a[0] = X``;
    ``ds[l-1]`` is s'(z(l)) for l = 1 .. L;
    ``tape`` the interpreter's :class:`~ntk_theory.reference.graph.Tape` (reverse and forward mode reuse it).

    Parameters
    ----------
    z, a, ds : list of ndarray
        As above.
    tape : Tape, optional

    Examples
    --------
    >>> import numpy as np
    >>> net = MLP.random((2, 3, 1), "tanh", C_W=1.5, C_b=0.1, seed=0)
    >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
    >>> tr = net.forward(X)
    >>> z1 = X @ net.weights[0].T + net.biases[0]                 # PDLT: z(1) = W(1) x + b(1)
    >>> bool(np.allclose(tr.z[0], z1)), bool(np.allclose(tr.a[1], np.tanh(z1))), bool(np.allclose(tr.ds[0], 1 - np.tanh(z1) ** 2))
    (True, True, True)
    >>> bool(np.allclose(tr.output, np.tanh(z1) @ net.weights[1].T + net.biases[1]))
    True
    """

    z: list
    a: list
    ds: list
    tape: object = field(default=None, repr=False, compare=False)

    @property
    def output(self) -> Array:
        """The network's output f = z(L+1), (N, n_out)."""
        return self.z[-1]


# the Parameters section of MLP's methods of the inputs alone and their Returns header, written once
_INPUTS = """Parameters
----------
X : array_like
    Inputs (N, n_0).

Returns
-------"""


class MLP:
    """A finite-width MLP with explicit parameters, run by the description interpreter (module docstring).

    Build one with :meth:`MLP.random` (parameters drawn from the PDLT initialisation) or from
    explicit parameters ``MLP(spec, activation, weights, biases)``.

    Parameters
    ----------
    spec : MLPSpec
        Widths (n_0, ..., n_L, n_out), C_W, C_b and param (:class:`ntk_theory.architecture.MLPSpec`).
    activation : str, NumpyActivation or sympy.Expr
        The hidden layers' activation (:func:`~ntk_theory.reference.numpy_activation`).
    weights : sequence of ndarray
        W(l) of shape (n_l, n_(l-1)), l = 1 .. L+1 (PDLT coordinates: z(l) = W(l) a(l-1) + b(l)).
    biases : sequence of ndarray
        b(l) of shape (n_l,).

    Examples
    --------
    >>> net = MLP.random((3, 64, 64, 1), "relu", C_W=2.0, C_b=0.0, param="ntk", seed=0)
    >>> X = np.eye(3)[:2]
    >>> net.ntk(X).shape
    (2, 2)
    """

    def __init__(self, spec: MLPSpec, activation, weights: Sequence[Array], biases: Sequence[Array]):
        self.spec = spec
        self.activation: NumpyActivation = numpy_activation(activation)
        if len(weights) != spec.n_layers or len(biases) != spec.n_layers:
            raise ValueError(
                f"need {spec.n_layers} weight matrices and bias vectors; got {len(weights)} and {len(biases)}"
            )
        self.weights, self.biases = [], []
        for l, (W, b) in enumerate(zip(weights, biases), start=1):
            n_in, n_out = spec.widths[l - 1], spec.widths[l]
            W = np.asarray(W, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64)
            if W.shape != (n_out, n_in) or b.shape != (n_out,):
                raise ValueError(
                    f"layer {l}: W must have shape {(n_out, n_in)} and b shape {(n_out,)}; "
                    f"got {W.shape} and {b.shape}"
                )
            self.weights.append(W)
            self.biases.append(b)
        self._lambdas = spec.learning_rate_factors()
        self._description = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        widths: Sequence[int],
        activation,
        *,
        C_W=1.0,
        C_b=0.0,
        param: str = "ntk",
        seed=None,
    ) -> MLP:
        """Draw ``W(l) ~ N(0, C_W(l)/n_(l-1))``, ``b(l) ~ N(0, C_b(l))`` for the given widths.

        Parameters
        ----------
        widths : sequence of int
            ``(n_0, n_1, ..., n_L, n_out)``.
        activation : str, NumpyActivation or sympy.Expr
            The activation of every hidden layer (library names have hand-written NumPy pairs).
        C_W, C_b : float or sequence of float, default 1.0 and 0.0
            Weight and bias variances, scalars or one per layer (readout last).
        param : {'ntk', 'standard', 'unit'}, default 'ntk'
            The parameterization, which sets the NTK's learning-rate factors.
        seed : int, numpy.random.Generator or None, default None
            Anything ``np.random.default_rng`` takes.

        Returns
        -------
        MLP
            The network with its drawn parameters (PDLT coordinates, W(l) of shape (n_l, n_(l-1))).

        Raises
        ------
        ValueError
            If a width is not a positive integer, a variance is negative, the number of per-layer values
            does not match, or the parameterization or activation is unknown.

        Notes
        -----
        The parameters are drawn at their PDLT scale in every parameterization; the parameterization only
        changes the learning-rate factors Lambda of :meth:`ntk`.

        Examples
        --------
        >>> import numpy as np
        >>> from ntk_theory.reference.network import MLP
        >>> net = MLP.random((3, 64, 64, 1), "relu", C_W=2.0, C_b=0.0, seed=0)
        >>> [W.shape for W in net.weights]
        [(64, 3), (64, 64), (1, 64)]
        >>> bool(abs(net.weights[1].var() / (2.0 / 64) - 1) < 0.1)   # 4096 draws: standard error ~0.02
        True
        """
        spec = MLPSpec(tuple(widths), C_W=C_W, C_b=C_b, param=param)
        rng = np.random.default_rng(seed)
        weights, biases = [], []
        for l in range(spec.n_layers):
            n_in, n_out = spec.widths[l], spec.widths[l + 1]
            weights.append(rng.standard_normal((n_out, n_in)) * np.sqrt(spec.C_W[l] / n_in))
            biases.append(rng.standard_normal(n_out) * np.sqrt(spec.C_b[l]))
        return cls(spec, activation, weights, biases)

    def __repr__(self) -> str:
        return f"MLP({self.spec!r}, activation={self.activation.name!r})"

    # ------------------------------------------------------------------ parameters
    @property
    def n_params(self) -> int:
        """The number of parameters P, sum_l n_l (n_(l-1) + 1)."""
        return self.spec.n_params()

    @filled(returns=returns("ndarray", "(P,)."))
    def flatten(self, params=None) -> Array:
        """Flatten ``[(W(1), b(1)), ...]`` (default: this network's) into one vector; W row-major.

        Parameters
        ----------
        params : list of (ndarray, ndarray), optional

        %(returns)s
        >>> import numpy as np
        >>> net = MLP.random((2, 3, 1), "relu", seed=0)
        >>> theta = net.flatten()
        >>> theta.shape, net.n_params                          # 3 (2 + 1) + 1 (3 + 1)
        ((13,), 13)
        >>> bool(np.array_equal(theta[:6], net.weights[0].ravel()))
        True
        >>> all(np.array_equal(a, w) for (a, _), w in zip(net.unflatten(theta), net.weights))
        True
        """
        if params is None:
            params = list(zip(self.weights, self.biases))
        return np.concatenate([np.concatenate([np.ravel(W), np.ravel(b)]) for W, b in params])

    def unflatten(self, vector: Array) -> list:
        """Inverse of :meth:`flatten` (a leading batch axis is kept: (K, P) -> [(K, ...), ...]).

        Parameters
        ----------
        vector : array_like
            (P,) or (K, P).

        Returns
        -------
        list of (ndarray, ndarray)

        Raises
        ------
        ValueError
            If the last axis is not P long.

        Examples
        --------
        See :meth:`flatten`.
        """
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape[-1] != self.n_params:
            raise ValueError(f"a flat tangent needs {self.n_params} entries; got shape {vector.shape}")
        lead = vector.shape[:-1]
        out, i = [], 0
        for W, b in zip(self.weights, self.biases):
            dW = vector[..., i : i + W.size].reshape(*lead, *W.shape)
            i += W.size
            db = vector[..., i : i + b.size].reshape(*lead, *b.shape)
            i += b.size
            out.append((dW, db))
        return out

    @filled(returns=returns("ndarray", "(P,)."))
    def learning_rate_vector(self) -> Array:
        """The diagonal of Lambda in :meth:`flatten` order: lambda_W/n_(l-1) for W, lambda_b for b.

        %(returns)s
        In 'ntk' lambda_W = C_W and lambda_b = C_b:

        >>> net = MLP.random((2, 3, 1), "relu", C_W=2.0, C_b=0.5, seed=0)
        >>> lam = net.learning_rate_vector()
        >>> import numpy as np
        >>> bool(np.allclose(lam, [2.0 / 2] * 6 + [0.5] * 3 + [2.0 / 3] * 3 + [0.5]))   # W(1), b(1), W(2), b(2)
        True
        """
        parts = []
        for (lam_b, lam_W), W, b in zip(self._lambdas, self.weights, self.biases):
            parts.append(np.full(W.size, lam_W / W.shape[1]))
            parts.append(np.full(b.size, lam_b))
        return np.concatenate(parts)

    # ------------------------------------------------------------------ the description
    def as_description(self):
        """The network's architecture description (``stax.serial(Dense, s, ..., Dense)``,
        :func:`ntk_theory.reference.mlp_graph.description`): the stax layers of ``activation`` evaluated by
        this network's NumPy pair; with :attr:`params` the same network for every interpreter of
        descriptions.  (A method, not a ``description`` attribute: objects with one are read as stax networks
        without parameters.)  Loads the symbolic layer on first use.

        Returns
        -------
        Layer

        Examples
        --------
        The description with :attr:`params` computes the same outputs:

        >>> import numpy as np
        >>> from ntk_theory.reference import apply_description
        >>> net = MLP.random((2, 3, 1), "tanh", C_W=1.5, C_b=0.1, seed=0)
        >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
        >>> bool(np.allclose(apply_description(net.as_description(), net.params, X), net(X)))
        True
        """
        if self._description is None:
            self._description = _mlp_graph().description(self.spec, self.activation)
        return self._description

    @property
    def params(self) -> list:
        """The parameters in neural-tangents' layout: ``[(w(1), beta(1)), (), ...,
        (w(L+1), beta(L+1))]`` of :meth:`as_description`, ``w`` (n_(l-1), n_l) and ``beta`` (1, n_l), with ``W(l)^T = W_s w``,
        ``b(l) = b_s beta`` (``W_s = sqrt(C_W / n_(l-1))``, ``b_s = sqrt(C_b)`` in 'ntk'; 1 in 'standard' and
        'unit').  ValueError where a scale is 0 but the PDLT parameters are not (no such ``w`` or ``beta``);
        there zero parameters map to zeros.

        Examples
        --------
        >>> import numpy as np
        >>> net = MLP.random((2, 3, 1), "relu", C_W=2.0, C_b=0.5, seed=0)
        >>> (w1, beta1), _, (w2, beta2) = net.params
        >>> bool(np.allclose(w1.T * np.sqrt(2.0 / 2), net.weights[0])), bool(np.allclose(beta1[0] * np.sqrt(0.5), net.biases[0]))
        (True, True)
        """
        out = []
        for l, (W, b) in enumerate(zip(self.weights, self.biases), start=1):
            if self.spec.param == "ntk":
                w_s, b_s = np.sqrt(self.spec.C_W[l - 1] / W.shape[1]), np.sqrt(self.spec.C_b[l - 1])
            else:
                w_s = b_s = 1.0
            out.append((_unscaled(W.T, w_s, f"W({l})", "C_W"), _unscaled(b[None, :], b_s, f"b({l})", "C_b")))
            if l <= self.spec.depth:
                out.append(())
        return out

    def _action(self):
        return _mlp_graph().pdlt_action(self.weights, self.biases)

    # ------------------------------------------------------------------ forward pass
    def _inputs(self, X, name="X") -> Array:
        return _checks.inputs(X, name, dim=self.spec.input_dim)

    @filled(inputs=_INPUTS)
    def forward(self, X) -> Trace:
        """Preactivations z(l), activations a(l) and derivatives s'(z(l)) at inputs X (N, n_0), read off the
        description interpreter's tape (:func:`ntk_theory.reference.graph.trace`).

        %(inputs)s
        Trace

        Examples
        --------
        See :class:`Trace`.
        """
        X = self._inputs(X)
        tape = _graph().trace(self.as_description(), X, self._action())
        steps = tape.steps  # Dense, s, Dense, s, ..., Dense
        return Trace([st.output.array for st in steps[0::2]], [X] + [st.output.array for st in steps[1::2]],
                     [st.cache for st in steps[1::2]], tape)

    def __call__(self, X) -> Array:
        """The output f(X), shape (N, n_out)."""
        return self.forward(X).output

    def _trace(self, X) -> Trace:
        if isinstance(X, Trace):
            if X.tape is None:
                raise ValueError("this Trace carries no tape of the forward pass; pass the inputs X")
            return X
        return self.forward(X)

    # ------------------------------------------------------------------ forward mode
    def jvp(self, X, tangent) -> tuple[Array, Array]:
        """``(f(X), J(X) v)`` for a parameter tangent v, by forward mode through the tape
        (:meth:`ntk_theory.reference.graph.Tape.push_forward`).

        Parameters
        ----------
        X : array_like or Trace
            Inputs (N, n_0), or the :class:`Trace` of a forward pass at them.
        tangent : list of (array, array) or numpy.ndarray
            A list of ``(dW(l), db(l))`` with the parameters' shapes, or a flat vector (see :meth:`flatten`);
            a leading batch axis K on every array (or a (K, P) flat array) pushes K tangents at once.

        Returns
        -------
        f : numpy.ndarray
            The outputs f(X), (N, n_out).
        jv : numpy.ndarray
            ``J v``, (N, n_out), or (K, N, n_out) for K tangents.

        Raises
        ------
        ValueError
            If the tangent does not have one pair per layer with the parameters' shapes.

        Notes
        -----
        ``dz(l+1) = W(l+1) [s'(z(l)) * dz(l)] + dW(l+1) a(l) + db(l+1)``, exact up to float64 rounding.

        Examples
        --------
        The directional derivative agrees with a central finite difference (error O(h^2)):

        >>> import numpy as np
        >>> from ntk_theory.reference.network import MLP
        >>> net = MLP.random((2, 5, 1), "tanh", C_W=1.5, C_b=0.1, seed=1)
        >>> X = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> v = np.random.default_rng(2).standard_normal(net.n_params)
        >>> f, jv = net.jvp(X, v)
        >>> theta, h = net.flatten(), 1e-5
        >>> def f_at(p):
        ...     return MLP(net.spec, "tanh", *zip(*net.unflatten(p)))(X)
        >>> fd = (f_at(theta + h * v) - f_at(theta - h * v)) / (2 * h)
        >>> bool(np.allclose(jv, fd, rtol=1e-7, atol=1e-9))
        True
        """
        tr = self._trace(X)
        if isinstance(tangent, np.ndarray):
            tangent = self.unflatten(tangent)
        if len(tangent) != self.spec.n_layers:
            raise ValueError(f"tangent must have one (dW, db) pair per layer ({self.spec.n_layers})")
        rows = []
        for l, ((W, b), (dW, db)) in enumerate(zip(zip(self.weights, self.biases), tangent)):
            dW, db = np.asarray(dW, np.float64), np.asarray(db, np.float64)
            if dW.shape[-2:] != W.shape or db.shape[-1:] != b.shape:
                raise ValueError(
                    f"tangent of layer {l + 1} must have shapes {W.shape} and {b.shape}; "
                    f"got {dW.shape} and {db.shape}"
                )
            rows.append((np.swapaxes(dW, -1, -2), db[..., None, :]))  # the action's (n_in, n_out), (1, n_out)
        index = _mlp_graph().dense_index
        dz = tr.tape.push_forward(lambda path: rows[index(path)])
        return tr.output, dz

    # ------------------------------------------------------------------ reverse mode
    def _sensitivities(self, tr: Trace) -> list:
        """The tape's reverse pass from the O output cotangents e_o at every input: per Dense layer its
        :class:`~ntk_theory.reference.graph.Sensitivity`, ``g`` (O, N, n_l) = df_o(x_a)/dz(l)_a."""
        N, O = tr.output.shape
        return tr.tape.backward(np.broadcast_to(np.eye(O)[:, None, :], (O, N, O)))

    def vjp(self, X, cotangent) -> list:
        """``J(X)^T u``: the gradient of ``sum(u * f(X))`` with respect to the PDLT parameters.

        Parameters
        ----------
        X : array_like or Trace
            Inputs (N, n_0), or the :class:`Trace` of a forward pass at them.
        cotangent : array_like
            u, of the output's shape (N, n_out).

        Returns
        -------
        list of (numpy.ndarray, numpy.ndarray)
            ``[(dW(l) (n_l, n_(l-1)), db(l) (n_l,)) for l = 1 .. L+1]``.

        Raises
        ------
        ValueError
            If ``cotangent`` does not have the output's shape.

        Notes
        -----
        By the tape's reverse pass: ``dW(l) = g(l)^T a(l-1)``, ``db(l) = sum_a g(l)_a``, g(l) the cotangent
        of z(l), ``g(l) = (g(l+1) W(l+1)) * s'(z(l))``.

        Examples
        --------
        The gradient of sum(u * f) agrees with central finite differences in each parameter:

        >>> import numpy as np
        >>> from ntk_theory.reference.network import MLP
        >>> net = MLP.random((2, 4, 1), "tanh", C_W=1.5, C_b=0.1, seed=1)
        >>> X = np.array([[1.0, 0.0], [0.6, 0.8]]); u = np.array([[1.0], [-2.0]])
        >>> grad = net.flatten(net.vjp(X, u))
        >>> theta, h = net.flatten(), 1e-6
        >>> def loss(p):
        ...     return float(np.sum(u * MLP(net.spec, "tanh", *zip(*net.unflatten(p)))(X)))
        >>> fd = [(loss(theta + h * e) - loss(theta - h * e)) / (2 * h) for e in np.eye(net.n_params)]
        >>> bool(np.allclose(grad, fd, rtol=1e-6, atol=1e-8))
        True
        """
        tr = self._trace(X)
        u = np.asarray(cotangent, dtype=np.float64)
        if u.shape != tr.output.shape:
            raise ValueError(f"cotangent must have the output's shape {tr.output.shape}; got {u.shape}")
        return [(s.g.T @ s.x, s.g.sum(axis=0)) for s in tr.tape.backward(u)]

    def output_sensitivities(self, X=None, trace: Trace | None = None) -> list:
        """``[T(l) = df/dz(l) for l = 1 .. L+1]``, each (N, n_out, n_l), by reverse mode (one pass per output,
        all inputs at once).

        Parameters
        ----------
        X : array_like, optional
            Inputs (N, n_0); or give ``trace``.
        trace : Trace, optional
            A forward pass at the inputs.

        Returns
        -------
        list of ndarray

        Examples
        --------
        The readout's sensitivity is the identity, and T(L) = s'(z(L)) W(L+1):

        >>> import numpy as np
        >>> net = MLP.random((2, 3, 1), "tanh", seed=0)
        >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
        >>> T = net.output_sensitivities(X)
        >>> bool(np.allclose(T[-1], 1.0)), bool(np.allclose(T[0][:, 0, :], net.forward(X).ds[0] * net.weights[1][0]))
        (True, True)
        """
        tr = trace if trace is not None else self.forward(X)
        return [np.ascontiguousarray(s.g.transpose(1, 0, 2)) for s in self._sensitivities(self._trace(tr))]

    def jacobian(self, X, flat: bool = False, scaled: bool = False):
        """The parameter Jacobian at X: ``df/dW(l)_ij = T(l)_{., i} a(l-1)_j``, ``df/db(l) = T(l)``.

        Returns a list of ``(dF/dW(l), dF/db(l))`` with shapes (N, n_out, n_l, n_(l-1)) and
        (N, n_out, n_l), or with ``flat=True`` one array (N, n_out, P) in :meth:`flatten` order.
        ``scaled=True`` multiplies by sqrt(Lambda) so that ``Theta = J J^T``.

        Parameters
        ----------
        X : array_like
            Inputs (N, n_0).
        flat : bool, default False
        scaled : bool, default False

        Returns
        -------
        list of tuple or ndarray

        Examples
        --------
        >>> import numpy as np
        >>> net = MLP.random((2, 3, 1), "tanh", C_W=1.5, C_b=0.1, seed=0)
        >>> X = np.array([[1.0, -0.5], [0.3, 0.8]])
        >>> J = net.jacobian(X, flat=True, scaled=True)[:, 0, :]
        >>> bool(np.allclose(J @ J.T, net.ntk(X)))
        True
        >>> J1 = net.jacobian(X, flat=True)[:, 0, :]                # df/db(L+1) = 1
        >>> bool(np.allclose(J1[:, -1], 1.0))
        True
        """
        tr = self.forward(X)
        blocks = []
        for l, T in enumerate(self.output_sensitivities(trace=tr)):
            a_prev = tr.a[l]
            dW = T[:, :, :, None] * a_prev[:, None, None, :]
            db = T
            if scaled:
                lam_b, lam_W = self._lambdas[l]
                dW = dW * np.sqrt(lam_W / a_prev.shape[1])
                db = db * np.sqrt(lam_b)
            blocks.append((dW, db))
        if not flat:
            return blocks
        N, O = tr.output.shape
        return np.concatenate([np.concatenate([dW.reshape(N, O, -1), db], axis=-1) for dW, db in blocks], axis=-1)

    @filled(inputs=_INPUTS)
    def input_jacobian(self, X) -> Array:
        """``df/dx`` at X, shape (N, n_out, n_0): the cotangent of z(1) pulled back through W(1).

        %(inputs)s
        ndarray

        Examples
        --------
        Against a central finite difference in the first input coordinate:

        >>> import numpy as np
        >>> net = MLP.random((2, 3, 1), "tanh", C_W=1.5, C_b=0.1, seed=0)
        >>> X = np.array([[1.0, -0.5], [0.3, 0.8]]); e = np.array([1e-6, 0.0])
        >>> bool(np.allclose(net.input_jacobian(X)[:, 0, 0], (net(X + e) - net(X - e))[:, 0] / 2e-6))
        True
        """
        first = self._sensitivities(self.forward(X))[0]
        return np.ascontiguousarray(first.action.backward(first.g).transpose(1, 0, 2))

    # its Parameters section words X1, X2 as every kernel function's (numpydoc: each documents its own arguments)
    def ntk(self, X1, X2=None, trace_outputs: bool = True) -> Array:
        """The empirical NTK ``Theta(X1, X2) = J(X1) Lambda J(X2)^T`` with this ``param``'s factors.

        Parameters
        ----------
        X1 : array_like
            Inputs (N1, n_0).
        X2 : array_like or None, default None
            Inputs (N2, n_0); None: ``X1``.
        trace_outputs : bool, default True
            True: the mean over the output axis (neural-tangents' ``trace_axes=(-1,)``; the NTK itself when
            n_out = 1); False: the full tensor.

        Returns
        -------
        numpy.ndarray
            (N1, N2), or (N1, N2, n_out, n_out) with ``trace_outputs=False``.

        Raises
        ------
        ValueError
            If the inputs are not (N, n_0) arrays of finite numbers.

        Notes
        -----
        By the structured rule of the description interpreter
        (:func:`ntk_theory.reference.graph.structured_ntk`):
        Theta_ab = sum_l (T(l)_a . T(l)_b) [lambda_b(l) + lambda_W(l) / n_(l-1) a(l-1)_a . a(l-1)_b],
        with T(l) = df/dz(l); Lambda per parameter is :meth:`learning_rate_vector`.

        Examples
        --------
        Against J Lambda J^T with J from central finite differences of the outputs:

        >>> import numpy as np
        >>> from ntk_theory.reference.network import MLP
        >>> net = MLP.random((2, 4, 1), "tanh", C_W=1.5, C_b=0.1, seed=1)
        >>> X = np.array([[1.0, 0.0], [0.6, 0.8]])
        >>> theta, h = net.flatten(), 1e-6
        >>> def f_at(p):
        ...     return MLP(net.spec, "tanh", *zip(*net.unflatten(p)))(X)[:, 0]
        >>> J = np.stack([(f_at(theta + h * e) - f_at(theta - h * e)) / (2 * h) for e in np.eye(net.n_params)], 1)
        >>> bool(np.allclose(net.ntk(X), J @ np.diag(net.learning_rate_vector()) @ J.T, rtol=1e-6))
        True
        >>> net.ntk(X, trace_outputs=False).shape
        (2, 2, 1, 1)
        """
        graph = _graph()
        tr1 = self.forward(X1)
        tr2 = tr1 if X2 is None else self.forward(self._inputs(X2, "X2"))
        s1 = self._sensitivities(tr1)
        s2 = s1 if X2 is None else self._sensitivities(tr2)
        O = self.spec.output_dim
        if trace_outputs:  # output o against output o only: the leading axis O on both sides
            return graph.structured_ntk(s1, s2).sum(axis=0) / O
        s1 = [graph.Sensitivity(s.layer, s.path, s.x, s.g[:, None], s.action) for s in s1]
        s2 = [graph.Sensitivity(s.layer, s.path, s.x, s.g[None, :], s.action) for s in s2]
        theta = np.broadcast_to(graph.structured_ntk(s1, s2), (O, O, tr1.output.shape[0], tr2.output.shape[0]))
        return np.ascontiguousarray(np.transpose(theta, (2, 3, 0, 1)))


def _unscaled(a: Array, scale: float, name: str, variance: str) -> Array:
    """``a / scale``; a zero scale needs a zero ``a`` (then zeros)."""
    if scale != 0:
        return a / scale
    if np.any(a != 0):
        raise ValueError(f"{name} is not zero but {variance} = 0 in 'ntk': neural-tangents' parameters cannot "
                         "represent it")
    return np.zeros_like(a)


def _graph():
    """The description interpreter (loads the symbolic layer)."""
    return importlib.import_module(".graph", __package__)


def _mlp_graph():
    """The MLP's description and its PDLT Dense actions (loads the symbolic layer)."""
    return importlib.import_module(".mlp_graph", __package__)
