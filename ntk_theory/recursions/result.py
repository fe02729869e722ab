"""The kernel result type shared by every kernel evaluator, and the equal-rows rule for exact diagonals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class KernelResult:
    """Output kernels with a note on how they were computed.  Iterating gives the quantities named in
    ``get`` in that order (default ``nngp, ntk``), as neural-tangents' ``kernel_fn(..., get=(...))``.

    Parameters
    ----------
    nngp, ntk : numpy.ndarray
        The (N1, N2) kernels (object arrays of mpmath.mpf from the mpmath evaluations).
    info : dict, default {}
        How they were computed (``quadrature_error``, ``evaluated_by``, ...).
    get : tuple of str, default ('nngp', 'ntk')
        The order of iteration.

    Examples
    --------
    >>> import numpy as np
    >>> from ntk_theory.recursions import KernelResult
    >>> r = KernelResult(np.eye(2), 2 * np.eye(2), get=("ntk", "nngp"))
    >>> r
    KernelResult(nngp (2, 2), ntk (2, 2))
    >>> ntk, nngp = r
    >>> float(ntk[0, 0]), float(nngp[0, 0])
    (2.0, 1.0)
    """

    nngp: np.ndarray
    ntk: np.ndarray
    info: dict = field(default_factory=dict)
    get: tuple = ("nngp", "ntk")

    def __iter__(self):
        return iter(tuple(getattr(self, name) for name in self.get))

    def __repr__(self) -> str:
        err = self.info.get("quadrature_error")
        extra = f", quadrature error estimate {err:.1e}" if err else ""
        return f"KernelResult(nngp {self.nngp.shape}, ntk {self.ntk.shape}{extra})"


def equal_rows(X1: np.ndarray, X2: np.ndarray) -> np.ndarray:
    """Boolean (N1, N2): row a of X1 equals row b of X2 exactly (the kernel's diagonal entries,
    evaluated by the exact one-variable recursion)."""
    index = {}
    for b, row in enumerate(X2):
        index.setdefault(row.tobytes(), []).append(b)
    same = np.zeros((len(X1), len(X2)), dtype=bool)
    for a, row in enumerate(X1):
        for b in index.get(row.tobytes(), ()):
            same[a, b] = True
    return same


def check_get(get) -> tuple:
    """``get`` (neural-tangents' argument: ``"nngp"``, ``"ntk"`` or a tuple of them) as a tuple of names."""
    names = (get,) if isinstance(get, str) else tuple(get)
    if not names or any(g not in ("nngp", "ntk") for g in names):
        raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them; got {get!r}")
    return names
