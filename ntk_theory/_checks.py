"""Input validation shared by every module: bad input raises ValueError naming the problem.

Also the accuracy policy shared by every module: a result whose estimated error exceeds the tolerance it was asked
for (relative to the quantity's scale) is returned with its estimate and one :class:`AccuracyWarning` naming the
quantity, the estimate and the tolerance (as SciPy's ``quad`` warns with ``IntegrationWarning``).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Sequence

import numpy as np


class AccuracyWarning(UserWarning):
    """A returned result's estimated error is far above the tolerance it was asked for.

    The result is returned unchanged with its (large) error estimate; the warning names the quantity, the estimate
    and the tolerance.  ``warnings.simplefilter("error", AccuracyWarning)`` turns it into an exception; the CLI
    prints it as one line on standard error.  Public as ``ntk_theory.AccuracyWarning``.
    """


def warn_accuracy(quantity: str, estimate: float, tol: float, detail: str = "") -> None:
    """Emit one :class:`AccuracyWarning`: ``quantity``'s estimated error ``estimate`` exceeds ``tol`` (both in the
    same units, e.g. relative to the quantity's scale); ``detail`` adds the cause or the count of failed parts."""
    more = f"; {detail}" if detail else ""
    warnings.warn(f"{quantity}: estimated error {estimate:.2g} exceeds the tolerance {tol:.2g}{more} "
                  "(the result is returned with this estimate)", AccuracyWarning, stacklevel=3)


def positive_int(name: str, value) -> int:
    """Return ``value`` as an int >= 1, or raise ValueError naming ``name``.

    Integral floats (``3.0``) are accepted; booleans are not (``True`` is not a depth or a width).
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer >= 1; got the boolean {value!r}")
    if not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value}")
    return int(value)


def nonnegative_int(name: str, value) -> int:
    """Return ``value`` as an int >= 0 (a step count), or raise ValueError naming ``name``; integral floats
    (``3.0``) are accepted, other floats and booleans are not (no silent truncation)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or (
            not isinstance(value, numbers.Integral) and not float(value).is_integer()):
        raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {int(value)}")
    return int(value)


def variance(name: str, value) -> float:
    """Return ``value`` as a finite float >= 0 (a variance such as C_W or C_b); booleans are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a finite number >= 0; got the boolean {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (it is a variance); got {value!r}")
    return v


def positive(name: str, value) -> float:
    """Return ``value`` as a finite float > 0 (a learning rate, a step size), or raise ValueError naming ``name``."""
    return _finite_float(name, value, "> 0", lambda v: v > 0)


def nonnegative(name: str, value) -> float:
    """Return ``value`` as a finite float >= 0 (a regularisation), or raise ValueError naming ``name``."""
    return _finite_float(name, value, ">= 0", lambda v: v >= 0)


def finite(name: str, value) -> float:
    """Return ``value`` as a finite float of any sign (a correlation, a multiplier), or raise ValueError naming
    ``name``."""
    return _finite_float(name, value, "", lambda v: True)


def _finite_float(name, value, bound, ok) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v) or not ok(v):
        raise ValueError(f"{name} must be a finite number{' ' + bound if bound else ''}; got {value!r}")
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


#: The rule for inputs, everywhere (Python API, .npy and text files on the command line).
INPUT_RULE = ("inputs are rows: an array of shape (N, d) holds N inputs of dimension d, a 1-D array of shape (d,) "
              "is one input of dimension d, and each line of a text file is one input")


def inputs(X, name: str = "X", dim: int | None = None, images: bool = False) -> np.ndarray:
    """Return ``X`` as a C-contiguous float64 array of shape (N, d) with finite entries.

    The rule (:data:`INPUT_RULE`): a 2-D array (N, d) is N inputs of dimension d; a 1-D array (d,)
    is ONE input of dimension d (returned as (1, d)).  Raises ValueError when X has another number
    of dimensions, is empty, is complex (the imaginary part would be dropped), is not numeric, has
    non-finite entries, or when ``dim`` is given and X does not have ``dim`` columns.
    ``images``: (N, W, C) and (N, H, W, C) arrays (channels last, inputs of convolutional networks) are
    accepted too and checked entry by entry in the same way.
    """
    if images and np.ndim(X) in (3, 4):
        arr = np.asarray(X)
        if arr.size == 0:
            raise ValueError(f"{name} is empty: shape {arr.shape}; need at least one input and one feature")
        return inputs(arr.reshape(arr.shape[0], -1), name).reshape(arr.shape)
    raw = X if isinstance(X, np.ndarray) else None
    if raw is None:
        try:
            raw = np.asarray(X)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a numeric array of shape (N, d) or (d,); got {type(X).__name__}") from None
    if np.iscomplexobj(raw) or (raw.dtype == object and any(isinstance(v, complex) for v in raw.ravel()[:1000])):
        raise ValueError(f"{name} is complex; inputs must be real (N, d) arrays")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape (N, d) or (d,); got {type(X).__name__} "
                         f"of {raw.dtype}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, d) (one input per row) or a 1-D array of "
                         f"shape (d,) (one input); got shape {arr.shape}")
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


def targets(y, shape: tuple, outputs: str = "the network's outputs at X") -> np.ndarray:
    """Training targets ``y`` as float64 of ``shape`` (N, O) ((N,) accepted when O = 1), finite."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1 and shape[1] == 1:
        y = y[:, None]
    if y.shape != tuple(shape):
        raise ValueError(f"y must have shape {tuple(shape)} ({outputs}); got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains non-finite values (NaN or inf)")
    return y


def choice(name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")
    return value
