r"""E[f(u) g(v)] for arrays of covariances (kernel matrices) by the tanh-sinh rule of :mod:`.quadrature`.

One fixed step h = 2^-level for the whole batch, vectorised in NumPy (chunks of about 2e6 grid
points); the nodes, splits at kinks and special cases are those of
:func:`.quadrature.expect2`.  Error estimate per entry: |I_h - I_2h| + the terms of the
outermost nodes (truncation) + 8 eps sum |w f g| (rounding); |I_h - I_2h| bounds the error of
the coarser rule, so it is pessimistic once converged.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .. import _checks
from .quadrature import (_EPS, _NEAR_KINK, _callable, _check_tails, _determinant, _error_parts, _evaluate,
                         _kinks, _nested, _pair_coefficients, _with_zero)

__all__ = ["expect2_vectorized"]

_CHUNK = 2_000_000  # grid points per batch chunk


def _nested_batch(funcs, kinks, coef, h):
    """_nested over a large batch in chunks of about _CHUNK grid points."""
    B = coef.shape[0]
    probe = _nested(funcs, kinks, coef[:1], h)
    per_element = max(probe["evaluations"], 1)
    step = max(1, _CHUNK // per_element)
    outs = [probe] if B == 1 else [_nested(funcs, kinks, coef[i : i + step], h) for i in range(0, B, step)]
    return {
        "I": np.concatenate([o["I"] for o in outs], axis=1),
        "l1": np.concatenate([o["l1"] for o in outs]),
        "edge": np.concatenate([o["edge"] for o in outs]),
        "evaluations": sum(o["evaluations"] for o in outs),
    }


def _batch_values(funcs, kinks, coef, h):
    """(values, errors) of the fixed rule at h for a batch of coefficient sets."""
    if coef.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    out = _nested_batch(funcs, kinks, coef, h)
    _check_tails(out)
    return out["I"][0], _error_parts(out, extrapolate=False)


def expect2_vectorized(
    f: Callable, g: Callable, k11, k22, k12, *, kinks_f: Sequence[float] = (),
    kinks_g: Sequence[float] = (), level: int | None = None,
) -> tuple:
    r"""E[f(u) g(v)] for many (k11, k22, k12) triples at once: (values, errors), arrays of their shape.

    The rule of :func:`.quadrature.expect2` at one fixed step h = 2^-level (default level 4, h = 1/16:
    about 1e5 evaluations per triple, 1e-15 for O(1) variances), vectorised in NumPy over the
    batch; errors are |I_h - I_2h| + truncation + rounding, as in :func:`.quadrature.expect2`.  Used to
    evaluate kernel matrices (N x N entries).  Triples with k11 = 0, k22 = 0, rho = 0 or rho = +-1
    are computed as in :func:`.quadrature.expect2`.
    """
    f, g = _callable("f", f), _callable("g", g)
    kf = _with_zero(_kinks("kinks_f", kinks_f))
    kg = _with_zero(_kinks("kinks_g", kinks_g))
    level = 4 if level is None else _checks.positive_int("level", level)
    h = 2.0**-level
    k11, k22, k12 = _triple_arrays(k11, k22, k12)
    shape = k11.shape
    k11, k22, k12 = k11.ravel(), k22.ravel(), k12.ravel()
    det = _determinant(k11, k22, k12)
    values, errors = np.zeros(k11.size), np.zeros(k11.size)
    for idx, fill in _pair_cases(k11, k22, k12, det):
        if idx.size:
            values[idx], errors[idx] = fill(f, g, kf, kg, k11[idx], k22[idx], k12[idx], det[idx], h)
    return values.reshape(shape), errors.reshape(shape)


def _triple_arrays(k11, k22, k12):
    arrays = []
    for name, k in (("k11", k11), ("k22", k22), ("k12", k12)):
        try:
            a = np.asarray(k, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a numeric array; got {type(k).__name__}") from None
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite numbers (no NaN or inf)")
        arrays.append(a)
    if not (arrays[0].shape == arrays[1].shape == arrays[2].shape):
        raise ValueError(
            f"k11, k22, k12 must have one shape; got {arrays[0].shape}, {arrays[1].shape}, {arrays[2].shape}"
        )
    for name, a in zip(("k11", "k22"), arrays[:2]):
        if np.any(a < 0):
            raise ValueError(f"{name} must be >= 0 (it is a variance); got a negative entry")
    return arrays


def _pair_cases(k11, k22, k12, det):
    """Index sets of the exact special cases and of the general case, with their evaluators."""
    zero = (k11 == 0) | (k22 == 0)
    product = ~zero & (k12 == 0)
    degenerate = ~zero & ~product & (det == 0)
    general = ~zero & ~product & ~degenerate
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.sqrt(det / k11) / np.abs(k12 / np.sqrt(k11))
    near = general & (eps < 1.0 / _NEAR_KINK)
    return [
        (np.flatnonzero(zero), _batch_zero),
        (np.flatnonzero(product), _batch_product),
        (np.flatnonzero(degenerate), _batch_pair),
        (np.flatnonzero(general & ~near), _batch_pair),
        (np.flatnonzero(near), _batch_pair),
    ]


def _batch_one(func, kinks, k, h):
    """E[func(sqrt(k) x)] for a batch of k > 0."""
    return _batch_values([func], [kinks], np.sqrt(k)[:, None, None], h)


def _batch_zero(f, g, kf, kg, k11, k22, k12, det, h):
    values, errors = np.zeros(k11.size), np.zeros(k11.size)
    f0 = float(_evaluate(f, np.zeros(1), np.ones(1))[0])
    g0 = float(_evaluate(g, np.zeros(1), np.ones(1))[0])
    both = (k11 == 0) & (k22 == 0)
    values[both] = f0 * g0
    for mask, func, kinks, k, const in (
        ((k11 == 0) & ~both, g, kg, k22, f0),
        ((k22 == 0) & ~both, f, kf, k11, g0),
    ):
        v, e = _batch_one(func, kinks, k[mask], h)
        values[mask], errors[mask] = const * v, abs(const) * e
    return values, errors


def _batch_product(f, g, kf, kg, k11, k22, k12, det, h):
    vf, ef = _batch_one(f, kf, k11, h)
    vg, eg = _batch_one(g, kg, k22, h)
    value = vf * vg
    return value, np.abs(vf) * eg + np.abs(vg) * ef + ef * eg + 2 * _EPS * np.abs(value)


def _batch_pair(f, g, kf, kg, k11, k22, k12, det, h):
    return _batch_values([f, g], [kf, kg], _pair_coefficients(k11, k22, k12, det), h)
