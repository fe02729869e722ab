r"""The finite-width recursion of a network description: which networks have derived 1/n rules.

:func:`recursion_for` reads a description (a layer of :mod:`ntk_theory.architecture`, or a
:class:`ntk_theory.stax.Network`) and returns the recursion that computes its leading 1/n corrections:

- a plain MLP (:func:`ntk_theory.architecture.mlp.as_mlp`; per-layer C_W, C_b and hidden widths) ->
  :class:`~.network.FiniteWidthRecursion`;
- a residual MLP -> :class:`~.residual.ResidualRecursion` (one input).  In stax form, after flattening
  nested ``serial`` and dropping ``Identity``::

      Dense(n), [block or (s, Dense(n))] * (L - 1), s, Dense(n_out)
      block = FanOut(2), parallel(skip, branch), FanInSum()
      skip   = Identity()  (xi = 1)   or   a scaling Activation('xi*x')        (either order in parallel)
      branch = serial(s, Dense(n, W_std, b_std))  [optionally followed by a scaling Activation('gamma*x')]

  which is z(l+1) = xi z(l) + gamma [W s(z(l)) + b] with C_W = W_std**2, C_b = b_std**2 of the branch Dense
  (a plain step ``s, Dense(n)`` between blocks is xi = 0, gamma = 1).  A branch scale written into the Dense
  (``Dense(n, gamma*W_std, gamma*b_std)``) is read as C_W = gamma**2 W_std**2, C_b = gamma**2 b_std**2,
  gamma = 1: the same network, and in the 'ntk' parameterization the same NTK (lambda = C of the scaled
  Dense = gamma**2 C, which is gamma**2 times the unscaled layer's lambda, as the recursion's gamma gives).
  In 'unit' the scale inside the Dense leaves lambda = 1, so there the two forms are different networks
  (each read as what it is).

All hidden Dense layers of a residual network have the width n of the first one; every hidden layer has
the same activation s; all Dense layers one parameterization ('ntk' or 'unit'; 'standard' mixes the orders
of the 1/n expansion); in 'unit' every Dense has a bias (the recursions train a bias in every layer).

Anything else raises :class:`~.residual.NotDerived` naming the first layer without a derived 1/n rule:
``<layer repr> at <path> (ntk_theory.architecture.where): <why>``.  The recogniser reads parameters only;
the numbers (and their error model) are those of the recursion returned.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy as sp

from ..activations import x as _x
from ..architecture import layers as L
from ..architecture.mlp import as_mlp, why_not_mlp
from ..docstrings import filled
from .network import FiniteWidthRecursion
from .residual import NotDerived, ResidualRecursion

#: parameterizations with derived 1/n rules (the lambdas do not grow with the width)
DERIVED_PARAMETERIZATIONS = ("ntk", "unit")


def description_of(value):
    """The layer description of ``value`` (a layer, or a stax Network's ``.description``), else None."""
    layer = getattr(value, "description", value)
    return layer if isinstance(layer, L.Layer) else None


def is_description(value) -> bool:
    """Whether ``value`` is a network description (a layer or a stax Network)."""
    return description_of(value) is not None


# ------------------------------------------------------------------------------------------- reading
def _flat(layer: L.Layer, path: tuple) -> list:
    """``(path, layer)`` of the layers of nested ``serial`` in order, ``Identity`` dropped."""
    if isinstance(layer, L.Serial):
        return [item for i, sub in enumerate(layer.layers) for item in _flat(sub, path + (i,))]
    if isinstance(layer, L.Identity):
        return []
    return [(path, layer)]


def _refuse(path, layer, why: str) -> NotDerived:
    return NotDerived(f"{layer!r} at {L.where(path)}: {why}")


def _scale(layer) -> float | None:
    """c for an Elementwise layer c*x (a fixed linear scaling), else None."""
    if not isinstance(layer, L.Elementwise):
        return None
    c = sp.simplify(layer.expr / _x)
    return float(c) if c.is_number and c.is_real else None


#: layer type -> why it has no derived 1/n rule anywhere
NO_RULE = {
    L.LayerNorm: "no derived 1/n rule for LayerNorm (the finite-width corrections of normalised layers are not "
                 "derived)",
    L.FanInConcat: "no derived 1/n rule for concatenated branches (FanInConcat); a residual block sums its skip "
                   "and branch with FanInSum()",
}

#: layer type -> why it is out of place where the reader expected something else
MISPLACED = {
    L.FanInSum: "FanInSum without FanOut(2), parallel(skip, branch) before it",
    L.Parallel: "parallel(...) without FanOut(2) before it",
    L.FanOut: "a residual block FanOut(2), parallel(skip, branch), FanInSum() follows a Dense layer (its branch "
              "starts with the activation)",
    L.Dense: "two Dense layers in a row (the recursions have an activation between Dense layers)",
    L.Elementwise: "two activations in a row (the recursions have one activation between Dense layers)",
}


def _no_rule(path, layer, expected: str) -> NotDerived:
    if type(layer) in NO_RULE:
        return _refuse(path, layer, NO_RULE[type(layer)])
    why = MISPLACED.get(type(layer), f"{type(layer).__name__} has no derived 1/n rule")
    return _refuse(path, layer, f"{why}; expected {expected}")


@dataclass
class _Step:
    """One Dense layer of the network and how it enters: ``act`` before it (None for the first Dense),
    the residual ``xi`` (0 for a plain step) and ``gamma``."""

    path: tuple
    dense: L.Dense
    act: tuple | None = None  # (path, Elementwise)
    xi: float = 0.0
    gamma: float = 1.0
    residual: bool = False


@dataclass
class _Reader:
    """Reads the flattened sequence into steps (module docstring's grammar)."""

    items: list
    pos: int = 0
    steps: list = field(default_factory=list)

    def peek(self):
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self, kind, expected: str, end_path=()):
        item = self.peek()
        if item is None:
            if not self.items:
                raise NotDerived(f"an empty serial() where {expected} is expected")
            raise _refuse(*self.items[-1], f"the network (or branch) ends here; expected {expected} after it")
        path, layer = item
        if not isinstance(layer, kind):
            raise _no_rule(path, layer, expected)
        self.pos += 1
        return item

    def read(self) -> list:
        if not self.items:
            raise NotDerived("the network has no layers")
        path, dense = self.take(L.Dense, "a Dense layer from the input")
        self.steps.append(_Step(path, dense))
        while self.peek() is not None:
            path, layer = self.peek()
            READERS.get(type(layer), _Reader.unexpected)(self)
        if len(self.steps) < 2 or self.steps[-1].residual:
            last = self.items[-1]
            raise _refuse(*last, "the network must end with an activation and a Dense readout")
        return self.steps

    # one reader per layer type that can start a step
    def plain(self):
        act = self.take(L.Elementwise, "an activation")
        path, dense = self.take(L.Dense, "a Dense layer after the activation")
        self.steps.append(_Step(path, dense, act))

    def block(self):
        path, fan = self.take(L.FanOut, "FanOut(2)")
        if fan.num != 2:
            raise _refuse(path, fan, "a residual block has FanOut(2) (a skip and a branch)")
        ppath, par = self.take(L.Parallel, "parallel(skip, branch) after FanOut(2)")
        self.take(L.FanInSum, "FanInSum() closing the residual block")
        if len(par.layers) != 2:
            raise _refuse(ppath, par, "a residual block has two branches, a skip and a branch with a Dense layer")
        branches = [_flat(sub, ppath + (i,)) for i, sub in enumerate(par.layers)]
        with_dense = [i for i, b in enumerate(branches) if any(isinstance(lay, L.Dense) for _, lay in b)]
        if len(with_dense) != 1:
            raise _refuse(ppath, par, "a residual block has exactly one branch with a Dense layer (the other is "
                                      "the skip: Identity() or a scaling Activation('xi*x'))")
        skip, branch = branches[1 - with_dense[0]], branches[with_dense[0]]
        xi = 1.0
        for k, (spath, slayer) in enumerate(skip):
            xi = _scale(slayer) if k == 0 else None
            if xi is None:
                raise _refuse(spath, slayer, "a residual skip is Identity() or one scaling Activation('xi*x')")
        inner = _Reader(branch)
        act = inner.take(L.Elementwise, "the activation that starts a residual branch")
        dpath, dense = inner.take(L.Dense, "a Dense layer after the branch's activation")
        gamma = 1.0
        for k, (gpath, glayer) in enumerate(branch[inner.pos:]):
            gamma = _scale(glayer) if k == 0 else None
            if gamma is None:
                raise _refuse(gpath, glayer, "a residual branch is serial(activation, Dense(n)), optionally followed "
                                             "by one scaling Activation('gamma*x')")
        self.steps.append(_Step(dpath, dense, act, xi, gamma, residual=True))

    def unexpected(self):
        path, layer = self.peek()
        raise _no_rule(path, layer, "an activation followed by Dense, a residual block FanOut(2), parallel(skip, "
                                    "branch), FanInSum(), or the readout")


READERS = {L.Elementwise: _Reader.plain, L.FanOut: _Reader.block}


def _check(steps: list) -> None:
    """One activation, one derived parameterization, a bias in every 'unit' Dense (module docstring)."""
    first = steps[1].act
    for step in steps[1:]:
        path, act = step.act
        if act.expr != first[1].expr:
            raise _refuse(path, act, f"a second activation (the first hidden layer's is {first[1]!r} at "
                                     f"{L.where(first[0])}); the recursions have one activation")
    param = steps[0].dense.parameterization
    for step in steps:
        d = step.dense
        if d.parameterization not in DERIVED_PARAMETERIZATIONS:
            raise _refuse(step.path, d, f"param={d.parameterization!r} has lambda_W = n_(l-1), which "
                                        "grows with the width and mixes the orders of the 1/n expansion; use 'ntk' "
                                        "or 'unit'")
        if d.parameterization != param:
            raise _refuse(step.path, d, f"parameterization {d.parameterization!r} after {param!r} (one "
                                        "parameterization per network)")
        if param != "ntk" and not d.has_bias:
            raise _refuse(step.path, d, f"a {param!r} Dense without a bias (b_std=None): the recursions train a "
                                        "bias in every layer (give b_std=0. for a bias starting at zero)")


def _read(description) -> list:
    layer = description_of(description)
    if layer is None:
        raise TypeError(f"expected a network description (stax.serial(...), a layer); got {description!r}")
    steps = _Reader(_flat(layer, ())).read()
    _check(steps)
    return steps


# ------------------------------------------------------------------------------------------- recursions
def _plain(steps, description):
    params = as_mlp(description)
    if params is None:  # the reader and as_mlp read plain MLPs alike; this guards their agreement
        raise NotDerived(f"not a plain MLP: {why_not_mlp(description)}")
    hidden = params.hidden_widths
    return FiniteWidthRecursion(params.activation, params.depth, C_W=params.C_W, C_b=params.C_b, param=params.param,
                                widths=None if len(set(hidden)) == 1 else hidden)


def _residual(steps, description):
    n = steps[0].dense.out_dim
    for step in steps[1:-1]:
        if step.dense.out_dim != n:
            raise _refuse(step.path, step.dense, f"width {step.dense.out_dim} in a residual network whose first layer "
                                                 f"has width {n} (residual layers need equal widths)")
    return ResidualRecursion(steps[1].act[1].activation, len(steps) - 1,
                             C_W=[s.dense.C_W for s in steps], C_b=[s.dense.C_b for s in steps],
                             xi=[s.xi for s in steps[1:-1]], gamma=[s.gamma for s in steps[1:-1]],
                             param=steps[0].dense.parameterization)


#: is any hidden step residual -> the recursion that has the network's derived 1/n rules
RECURSIONS = {False: _plain, True: _residual}

# recursion_for's and why_not_derived's argument and the head of their Returns section, written once
_DESCRIPTION = """Parameters
----------
description : Network or Layer
    A stax network or an architecture description.

Returns
-------"""



@filled(description=_DESCRIPTION)
def recursion_for(description):
    """The finite-width recursion of ``description`` (module docstring): a
    :class:`~.network.FiniteWidthRecursion` for a plain MLP, a :class:`~.residual.ResidualRecursion` for a
    residual MLP; :class:`~.residual.NotDerived` naming the first layer without a derived 1/n rule otherwise.

    %(description)s
    FiniteWidthRecursion or ResidualRecursion
        With the per-layer C_W, C_b (and xi, gamma, widths) read from the layers.

    Raises
    ------
    NotDerived
        Naming the first layer without a derived 1/n rule.

    Examples
    --------
    A residual block ``FanOut(2), parallel(Identity(), serial(activation, Dense)), FanInSum()`` after a Dense
    layer makes a :class:`~ntk_theory.finite_width.ResidualRecursion` (xi = gamma = 1):

    >>> from ntk_theory import stax
    >>> from ntk_theory.finite_width import recursion_for
    >>> recursion_for(stax.serial(stax.Dense(8, W_std=2 ** 0.5), stax.Relu(), stax.Dense(1)))
    FiniteWidthRecursion(Max(0, x), depth=1, C_W=1, C_b=0, param='ntk')
    >>> block = [stax.FanOut(2), stax.parallel(stax.Identity(), stax.serial(stax.Relu(), stax.Dense(8))), stax.FanInSum()]
    >>> rec = recursion_for(stax.serial(stax.Dense(8), *block, stax.Relu(), stax.Dense(1)))
    >>> type(rec).__name__, rec.depth, rec.xi, rec.gamma
    ('ResidualRecursion', 2, (1.0,), (1.0,))
    """
    steps = _read(description)
    return RECURSIONS[any(s.residual for s in steps)](steps, description_of(description))


@filled(description=_DESCRIPTION)
def why_not_derived(description) -> str | None:
    """The :class:`~.residual.NotDerived` message of ``description``, or None if it has a recursion.

    %(description)s
    str or None

    Examples
    --------
    >>> from ntk_theory import stax
    >>> from ntk_theory.finite_width import why_not_derived
    >>> why_not_derived(stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))) is None
    True
    >>> why_not_derived(stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(8), stax.Dense(1)))
    'Dense(1) at layer 3: two Dense layers in a row (the recursions have an activation between Dense layers); expected ...'
    """
    try:
        recursion_for(description)
    except NotDerived as exc:
        return str(exc)
    return None


@functools.singledispatch
def activation_as_layer(act) -> L.Elementwise:
    """The activation as a description layer that keeps its name (``Activation('relu')``), so that the
    recursion built from the description is the one built from the activation, name and all."""
    from ..activations import activation

    return activation_as_layer(activation(act))


@activation_as_layer.register
def _(act: L.Elementwise) -> L.Elementwise:
    return act


def _from_activation(act) -> L.Elementwise:
    return L.Elementwise("Activation", (act.name,), act.expr)


def _register() -> None:
    from ..activations import Activation

    activation_as_layer.register(Activation, _from_activation)


_register()


__all__ = ["DERIVED_PARAMETERIZATIONS", "NotDerived", "activation_as_layer", "description_of", "is_description",
           "recursion_for", "why_not_derived"]
