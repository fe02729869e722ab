r"""A checked eigendecomposition of a training kernel, Theta = V diag(lambda) V^T (eigh, no inverse).

Every function of the kernel the dynamics needs (exp(-c Theta t), (I - c Theta)^k, Theta^+ (I - ...))
is applied in this eigenbasis: a function of the eigenvalues, never an explicit inverse.

Checks: square, symmetric (to 1e-10 relative; symmetrised), finite, positive semidefinite (an
eigenvalue below -1e-8 lambda_max is an error; smaller negative ones, rounding, are set to 0).
Eigenvalues below ``N eps lambda_max`` count as zero (null modes: they neither move nor enter the
infinite-time limit).  A condition number lambda_max / lambda_min above 1e12 raises an
:class:`IllConditionedKernelWarning`: the infinite-time test prediction then amplifies rounding of
the kernel by that factor.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..docstrings import filled

NEGATIVE_TOLERANCE = 1e-8
CONDITION_WARNING = 1e12


class IllConditionedKernelWarning(RuntimeWarning):
    """The training kernel is close to singular: infinite-time predictions amplify its rounding.

    Examples
    --------
    >>> import warnings, numpy as np
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     basis = Eigenbasis.of(np.array([[1.0, 1.0], [1.0, 1.0 + 1e-14]]))
    >>> [w.category.__name__ for w in caught]
    ['IllConditionedKernelWarning']
    """


def as_kernel(K, name: str = "kernel", shape=None) -> np.ndarray:
    """K as a finite float64 array of the given shape (None: any square 2-D), or ValueError."""
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array; got {type(K).__name__}") from None
    if shape is None:
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
            raise ValueError(f"{name} must be a square 2-D (N, N) array with N >= 1; got shape {K.shape}")
    elif K.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return K


# the Returns/Examples sections Eigenbasis's four basis maps share
_IN_BASIS = """Returns
-------
ndarray

Examples
--------
See :class:`Eigenbasis`."""


@dataclass(frozen=True)
class Eigenbasis:
    """Theta = V diag(eigenvalues) V^T, eigenvalues ascending and >= 0; ``null`` marks zero modes.

    Parameters
    ----------
    eigenvalues : ndarray
        (N,) ascending, >= 0.
    eigenvectors : ndarray
        (N, N) orthonormal columns.
    null : ndarray
        (N,) bool, eigenvalues below N eps lambda_max.
    condition : float
        lambda_max / lambda_min (inf for a singular kernel).

    Build one with :meth:`of`.

    Examples
    --------
    >>> import numpy as np
    >>> T = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> b = Eigenbasis.of(T)
    >>> bool(np.allclose(b.eigenvalues, [1.0, 3.0])), b.size, round(b.condition, 12)   # eigenvalues 2 -+ 1
    (True, 2, 3.0)
    >>> bool(np.allclose(b.matrix(b.eigenvalues), T)), bool(np.allclose(b.matrix(1 / b.eigenvalues), np.linalg.inv(T)))
    (True, True)
    >>> v = np.array([[1.0], [2.0]])
    >>> bool(np.allclose(b.from_basis(b.to_basis(v)), v)), bool(np.allclose(b.apply(b.eigenvalues, v), T @ v))
    (True, True)
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    null: np.ndarray
    condition: float

    @classmethod
    def of(cls, K, name: str = "ntk_train_train", warn: bool = True) -> "Eigenbasis":
        """The checked eigendecomposition of a symmetric positive semi-definite kernel K (module docstring).

        Parameters
        ----------
        K : array_like
            (N, N).
        name : str, default 'ntk_train_train'
            The kernel's name in messages.
        warn : bool, default True
            Warn (:class:`IllConditionedKernelWarning`) when lambda_max / lambda_min is large.

        Returns
        -------
        Eigenbasis

        Raises
        ------
        ValueError
            If K is not finite, square, symmetric and positive semi-definite, or has no positive eigenvalue.

        Examples
        --------
        See :class:`Eigenbasis`.
        """
        K = as_kernel(K, name)
        scale = float(np.max(np.abs(K)))
        asym = float(np.max(np.abs(K - K.T)))
        if asym > 1e-10 * max(scale, 1e-300):
            raise ValueError(f"{name} is not symmetric: max |K - K^T| = {asym:.3g} (max |K| = {scale:.3g})")
        lam, V = np.linalg.eigh(0.5 * (K + K.T))
        top = float(lam[-1]) if lam.size else 0.0
        if top <= 0.0:
            raise ValueError(f"{name} has no positive eigenvalue (largest {top:.3g}): nothing can be learned")
        if lam[0] < -NEGATIVE_TOLERANCE * top:
            raise ValueError(f"{name} is not positive semidefinite: smallest eigenvalue {lam[0]:.3g} "
                             f"(largest {top:.3g}); a kernel matrix must be PSD")
        lam = np.maximum(lam, 0.0)
        null = lam <= K.shape[0] * np.finfo(float).eps * top
        condition = float(top / lam[0]) if lam[0] > 0 else float("inf")
        if warn and condition > CONDITION_WARNING:
            warnings.warn(
                f"{name} is ill-conditioned (lambda_max/lambda_min = {condition:.2g}; {int(null.sum())} "
                f"eigenvalue(s) treated as zero): modes with tiny eigenvalues barely train and the "
                f"infinite-time test prediction amplifies rounding of the kernel by up to that factor",
                IllConditionedKernelWarning, stacklevel=3)
        return cls(lam, V, null, condition)

    @property
    def size(self) -> int:
        """N."""
        return self.eigenvalues.size

    @filled(in_basis=_IN_BASIS)
    def to_basis(self, v: np.ndarray) -> np.ndarray:
        """V^T v (v: (N, ...)).

        Parameters
        ----------
        v : ndarray

        %(in_basis)s
        """
        return np.tensordot(self.eigenvectors.T, v, axes=1)

    @filled(in_basis=_IN_BASIS)
    def from_basis(self, w: np.ndarray) -> np.ndarray:
        """V w along the mode axis (w: (..., N, O)) -> (..., N, O).

        Parameters
        ----------
        w : ndarray

        %(in_basis)s
        """
        return np.einsum("nm,...mo->...no", self.eigenvectors, w)

    @filled(in_basis=_IN_BASIS)
    def apply(self, diag: np.ndarray, v: np.ndarray) -> np.ndarray:
        """V diag V^T v for a diagonal (T..., N) and v (N, O) -> (T..., N, O).

        Parameters
        ----------
        diag : ndarray
        v : ndarray

        %(in_basis)s
        """
        return self.from_basis(diag[..., None] * self.to_basis(v))

    @filled(in_basis=_IN_BASIS)
    def matrix(self, diag: np.ndarray) -> np.ndarray:
        """V diag V^T, (T..., N, N).

        Parameters
        ----------
        diag : ndarray
            (T..., N).

        %(in_basis)s
        """
        V = self.eigenvectors
        return np.einsum("nm,...m,km->...nk", V, diag, V)

    def __repr__(self) -> str:
        lam = self.eigenvalues
        return (f"Eigenbasis(N={lam.size}, lambda in [{lam[0]:.3g}, {lam[-1]:.3g}], condition {self.condition:.3g}, "
                f"{int(self.null.sum())} null)")
