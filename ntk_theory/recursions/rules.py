r"""The structure of the infinite-width rules, shared by the two interpretations of a description: the
NumPy/mpmath interpreter (:mod:`ntk_theory.recursions.graph`, values are arrays) and the code generator
(:mod:`ntk_theory.codegen.graph`, values are names of emitted variables and per-input row slots).

A value is a *node* (a sum of terms F(c g) of distinct Gaussian sources) or a value known only by its
*moments*.  What this module decides, once for both: which terms of a ``FanInSum`` merge (the same source
at the same scale: F_1 + F_2), when a sum of Gaussian terms becomes one Gaussian (before a nonlinearity or a
LayerNorm), the composition s(F(c g)) of a nonlinearity with a single term, and what is refused, with the
same message in both.  The arithmetic (the new sources' covariances, the moments, their sums) is the
interpretation's *algebra*, an object with

- ``node_type``, ``moments_type``: its two value classes (``node_type(terms, channels, layout)``; terms carry
  ``source``, ``fn``, ``is_gaussian``, ``with_fn(fn, origin)`` (the same source and scale, another F) and
  ``same_scale(other)``; values carry ``channels`` and ``layout``; moments carry ``base`` and ``origin``);
- ``gaussian_sum(terms, path)``: independent Gaussian terms summed into one Gaussian term;
- ``moments(value)`` and ``sum_moments(moments, channels, origin, layout)`` (sum of values of independent
  Dense layers, with the cross products of their means).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import sympy as sp

from ..activations import Activation, x
from ..architecture import where
from ..gaussian import expectation1


def no_rule(layer, path):
    """Refuse a layer type that has no infinite-width rule."""
    raise NotImplementedError(f"{layer!r} at {where(path)}: no infinite-width kernel rule for {type(layer).__name__}")


def dependencies(value, algebra) -> frozenset:
    """The Dense layers (paths) a value depends on."""
    if isinstance(value, algebra.moments_type):
        return value.base
    return frozenset().union(*(t.source.base for t in value.terms))


def is_gaussian_sum(value, algebra) -> bool:
    """A node whose terms are all Gaussian (F = identity)."""
    return isinstance(value, algebra.node_type) and bool(value.terms) and all(t.is_gaussian for t in value.terms)


def gaussian_term(value, path, algebra):
    """The one Gaussian term of a sum of Gaussian terms (``None`` for any other value)."""
    if not is_gaussian_sum(value, algebra):
        return None
    return value.terms[0] if len(value.terms) == 1 else algebra.gaussian_sum(value.terms, path)


def elementwise(layer, state, path, algebra):
    """A nonlinearity s: on a single term F(c g) the term s(F(c g)); on a sum of Gaussian terms, s of their
    sum (one Gaussian); refused after a value known only by its moments and on a sum of non-Gaussian terms."""
    if layer.is_identity:
        return state
    if isinstance(state, algebra.moments_type):
        raise NotImplementedError(
            f"{layer!r} at {where(path)} follows {state.origin}: its input is not a function of Gaussian processes "
            "whose kernel rules are known (a nonlinearity after FanInConcat or after LayerNorm of a non-Gaussian "
            "value, or after pooling or Flatten of one); put a Dense or Conv layer before it")
    if len(state.terms) > 1 and all(t.is_gaussian for t in state.terms):
        state = algebra.node_type((algebra.gaussian_sum(state.terms, path),), state.channels, state.layout)
    if len(state.terms) > 1:
        raise NotImplementedError(
            f"{layer!r} at {where(path)} acts on a sum of non-Gaussian functions of {len(state.terms)} independent "
            "Gaussian processes (e.g. relu(z) + Dense(...) from a residual branch): its kernel is a Gaussian "
            f"expectation in {2 * len(state.terms)} dimensions, not implemented; a Dense layer or a nonlinearity "
            "inside the branch (pre-activation residual blocks) avoids it")
    (t,) = state.terms
    fn = layer.expr.subs(x, t.fn)
    return algebra.node_type((t.with_fn(fn, f"{layer!r} at {where(path)}"),), state.channels, state.layout)


def same_layout(layer, states, path):
    """The one spatial layout of a layer's inputs (refused if they differ)."""
    layouts = {s.layout for s in states}
    if len(layouts) > 1:
        raise ValueError(f"{layer!r} at {where(path)} combines inputs of different spatial shapes "
                         f"{sorted(lay.shape for lay in layouts)}")
    return layouts.pop()


def fan_in_sum(layer, states, path, algebra):
    """``FanInSum``: the union of the inputs' terms, terms of the same source at the same scale added into one
    F; values known only by their moments summed with the rest by their moments (independent branches only)."""
    channels = {s.channels for s in states}
    if len(channels) > 1:
        raise ValueError(f"{layer!r} at {where(path)} sums inputs of different widths {sorted(channels)}")
    layout = same_layout(layer, states, path)
    origin = f"{layer!r} at {where(path)}"
    opaque = [s for s in states if isinstance(s, algebra.moments_type)]
    terms: list = []
    for s in states:
        for t in (s.terms if isinstance(s, algebra.node_type) else ()):
            for i, u in enumerate(terms):
                if u.source is t.source and u.same_scale(t):
                    terms[i] = u.with_fn(u.fn + t.fn, origin)
                    break
                if u.source.base & t.source.base:
                    raise NotImplementedError(
                        f"{origin} sums branches that depend on the same Dense output through "
                        "different scalings or partial sums (LayerNorm in one branch only, or a sum over a "
                        "long skip); their cross moments are not implemented")
            else:
                terms.append(t)
    node = algebra.node_type(tuple(terms), channels.pop(), layout)
    if not opaque:
        return node
    parts = opaque + ([node] if terms else [])
    for a, b in itertools.combinations(parts, 2):
        if dependencies(a, algebra) & dependencies(b, algebra):
            raise NotImplementedError(f"{origin} sums a value known only by its moments "
                                      f"({opaque[0].origin}) with a branch that shares its Dense layers")
    ms = [algebra.moments(p) for p in parts]
    return algebra.sum_moments(ms, node.channels, origin, layout)


@functools.lru_cache(maxsize=64)
def mean_function(fn: sp.Expr):
    """E[F(u)], u ~ N(0, k), as a float64 function of an array of k returning (values, error or None): the
    closed form where :func:`ntk_theory.gaussian.expectation1` finds one (error None), else its numerical
    evaluation with the largest error estimate."""
    e = expectation1(Activation(sp.sstr(fn), fn, "stax"))
    if e.is_closed_form:
        return lambda k: (np.asarray(e.evaluate(k), dtype=float), None)

    def numerical(k):
        values, errors = e.evaluate(k, with_error=True)
        return values, float(np.max(errors)) if np.size(errors) else 0.0

    return numerical
