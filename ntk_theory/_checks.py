"""Input validation shared by every module: bad input raises ValueError naming the problem."""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np


def positive_int(name: str, value) -> int:
    """Return ``value`` as an int >= 1, or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value}")
    return int(value)


def variance(name: str, value) -> float:
    """Return ``value`` as a finite float >= 0 (a variance such as C_W or C_b)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (it is a variance); got {value!r}")
    return v


def per_layer(name: str, value, n_layers: int, check=variance) -> tuple:
    """A scalar broadcast to ``n_layers`` entries, or a sequence of exactly ``n_layers`` entries."""
    if np.ndim(value) == 0:
        return (check(name, value),) * n_layers
    values = list(np.asarray(value, dtype=object).ravel())
    if len(values) != n_layers:
        raise ValueError(
            f"{name} must be a scalar or have one entry per layer ({n_layers} layers); "
            f"got {len(values)} entries"
        )
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(values))


def inputs(X, name: str = "X", dim: int | None = None) -> np.ndarray:
    """Return ``X`` as a C-contiguous float64 array of shape (N, d) with finite entries.

    Raises ValueError when X is not 2-D, is empty, has non-finite entries, or when ``dim`` is
    given and X does not have ``dim`` columns.
    """
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape (N, d); got {type(X).__name__}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, d) (one input per row); got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}; need at least one input and one feature")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])[:5].tolist()
        raise ValueError(f"{name} contains non-finite values (NaN or inf) in rows {rows}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{name} has {arr.shape[1]} features per input but the network's input dimension is {dim}"
        )
    return np.ascontiguousarray(arr)


def choice(name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")
    return value
