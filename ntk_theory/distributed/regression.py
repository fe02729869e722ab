r"""Kernel regression (NNGP/NTK posterior mean and variance) from a blocked kernel.

With the train-train kernel K (N, N), targets Y (N, O), the test-train kernel K_* (M, N) and the test variances
k_** (M,), and r >= 0 the regularisation,

    mean     = K_* (K + r I)^-1 Y
    variance = k_** - diag(K_* (K + r I)^-1 K_*^T)

which is the exact GP posterior for the NNGP, and for the NTK the infinite-time prediction of squared-loss
gradient descent from f0 = 0 (:meth:`ntk_theory.dynamics.MSEDynamics.test` at t = inf with the same r).
``diag_reg`` means what it means in :func:`ntk_theory.dynamics.ensemble` and neural-tangents:
r = diag_reg * trace(K) / N, or r = diag_reg with ``diag_reg_absolute_scale=True``.  Without K_* the mean
at the training inputs, K (K + r I)^-1 Y = Y - r (K + r I)^-1 Y, is returned.

Two solvers, float64 throughout:

* ``method="cholesky"``: blocked Cholesky factor L of K + r I (``dask.array.linalg.cholesky`` on the kernel's
  tiles, which must be square), then two blocked triangular solves; memory ~N^2/2 floats across the workers
  (to ~1e5 points).  Error: backward stable, relative error ~ cond(K + r I) eps.  The kernel is refused
  (:class:`SingularKernel`) when the factorisation fails (not numerically positive definite), and a
  RuntimeWarning is given when (max L_ii / min L_ii)^2, a lower bound on cond(K + r I), exceeds 1e12
  (fewer than ~4 correct digits left): pass ``diag_reg``.
* ``method="cg"``: matrix-free conjugate gradients on all columns at once (:func:`conjugate_gradient`), the
  products K V computed tile by tile from the store (or recomputed from the description,
  :func:`kernel_operator`), preconditioned by a rank-m Nystrom approximation of K
  (:class:`NystromPreconditioner`, m landmark columns as in Falkon); stops when every column's residual
  ||B - (K + r I) X|| <= tol ||B||; the solution's relative error is at most cond(K + r I) tol.
  :class:`SingularKernel` when it does not converge in ``maxiter`` iterations.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..blocks import Tiling, require

__all__ = ["kernel_regression", "conjugate_gradient", "NystromPreconditioner", "SingularKernel", "Posterior",
           "kernel_operator", "as_dask"]

#: (max L_ii / min L_ii)^2 above which the Cholesky route warns
CONDITION_WARNING = 1e12


class SingularKernel(ValueError):
    """The regularised kernel is numerically singular (not positive definite in float64, or CG stalls).

    Examples
    --------
    >>> import numpy as np
    >>> try:
    ...     kernel_regression(np.ones((2, 2)), [1.0, -1.0], chunks=1, scheduler="synchronous")
    ... except SingularKernel as exc:
    ...     print(str(exc)[:37])
    the kernel is numerically singular (t
    """


@dataclass
class Posterior:
    """``mean`` (M[, O]) and ``variance`` (M,) (None without test variances), ``info``: the solver's account.

    Parameters
    ----------
    mean : ndarray
    variance : ndarray or None
    info : dict

    Examples
    --------
    See :func:`kernel_regression`.
    """

    mean: np.ndarray
    variance: np.ndarray | None
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- kernels as dask arrays
def as_dask(K, chunks=None):
    """A (N1, N2) kernel as a float64 dask array: a dask array, a zarr array (a store of
    :func:`ntk_theory.distributed.blocked_kernel`, chunks = its tiles) or a numpy array (``chunks``)."""
    (da,) = require("dask.array")
    if isinstance(K, da.Array):
        A = K
    elif type(K).__module__.split(".")[0] == "zarr":
        A = da.from_zarr(K)
    else:
        K = np.asarray(K, dtype=np.float64)
        A = da.from_array(K, chunks=chunks or max(1, min(K.shape[0], 2048)))
    return A.astype(np.float64)


def kernel_operator(description, X, *, chunks: int, get: str = "ntk"):
    """The kernel of ``description`` at X (N, d) as a lazy dask array whose tiles are recomputed by the
    compiled kernel each time they are read (matrix-free; the lower tiles are the transposes of the upper
    ones, each computed once per read).

    Parameters
    ----------
    description : Network, Layer, CompiledKernel or KernelRecursion
    X : array_like
        (N, d).
    chunks : int
        The tile size.
    get : {'ntk', 'nngp'}, default 'ntk'

    Returns
    -------
    dask.array.Array
        (N, N), lazy.

    Raises
    ------
    ValueError
        If ``get`` is neither 'nngp' nor 'ntk'.

    Examples
    --------
    Reading it computes the tiles (compiled kernel: not run as a doctest):

    >>> import numpy as np
    >>> from ntk_theory.recursions import KernelRecursion
    >>> rec = KernelRecursion("relu", 2, C_W=2.0, C_b=0.0)
    >>> X = np.random.default_rng(0).standard_normal((5, 3))
    >>> A = kernel_operator(rec, X, chunks=2)                                   # doctest: +SKIP
    >>> bool(np.allclose(A.compute(scheduler="synchronous"), rec(X).ntk))      # doctest: +SKIP
    True
    """
    dask, da = require("dask", "dask.array")
    from .tiles import as_inputs, tile_evaluator

    if get not in ("nngp", "ntk"):
        raise ValueError(f"get must be 'nngp' or 'ntk'; got {get!r}")
    X = as_inputs(X, "X")
    ev = tile_evaluator(description, X.ndim)
    tiling = Tiling(len(X), len(X), int(chunks), True)
    b1, _ = tiling.grid
    blocks = [[None] * b1 for _ in range(b1)]
    for i, j in tiling.tasks():
        r0, r1 = tiling.rows(i)
        c0, c1 = tiling.cols(j)
        tile = dask.delayed(lambda A, B, ev=ev, get=get: ev(A, B)[get])(
            X[r0:r1], None if i == j else X[c0:c1])
        blocks[i][j] = da.from_delayed(tile, shape=(r1 - r0, c1 - c0), dtype=np.float64)
        if i != j:
            blocks[j][i] = blocks[i][j].T
    return da.block(blocks)


# ---------------------------------------------------------------------- the preconditioner
class NystromPreconditioner:
    r"""P^-1 for K + mu I from a rank-m Nystrom approximation K ~ U diag(lam) U^T on ``m`` landmark columns S
    (uniform without replacement, ``seed``): C = K[:, S], W = K[S, S] + nu I (nu = eps N trace(W)/m, a shift for
    a stable factorisation), B = C chol(W)^-T = U Sigma V^T, lam = max(Sigma^2 - nu, 0);
    P^-1 v = (lam_m + mu) U (diag(lam) + mu)^-1 U^T v + (I - U U^T) v (Frangella, Tropp and Udell's randomized
    Nystrom preconditioner).  ``mu`` > 0 (the regularisation r).

    Parameters
    ----------
    columns : ndarray
        (N, m) the kernel's landmark columns K[:, S].
    landmarks : ndarray
        (m,) the landmark indices S.
    mu : float
        The regularisation, > 0.

    Examples
    --------
    For a kernel of exact rank m, P^-1 (K + mu I) has the eigenvalue lam_m + mu on K's range and mu off it
    (lam_m the smallest nonzero eigenvalue of K):

    >>> import numpy as np
    >>> F = np.random.default_rng(0).standard_normal((6, 2)); K = F @ F.T
    >>> P = NystromPreconditioner(K[:, [0, 1]], np.array([0, 1]), 0.1)
    >>> A = K + 0.1 * np.eye(6)
    >>> ev = np.sort(np.linalg.eigvals(P(A)).real)
    >>> lam_m = np.linalg.eigvalsh(K)[-2]
    >>> P.rank, bool(np.allclose(ev, [0.1] * 4 + [lam_m + 0.1] * 2))
    (2, True)
    """

    def __init__(self, columns: np.ndarray, landmarks: np.ndarray, mu: float):
        from scipy.linalg import cholesky, solve_triangular

        C = np.asarray(columns, dtype=np.float64)
        N, m = C.shape
        W = C[landmarks]
        W = 0.5 * (W + W.T)
        nu = np.finfo(float).eps * N * max(np.trace(W), 1e-300) / m
        L = cholesky(W + nu * np.eye(m), lower=True)
        B = solve_triangular(L, C.T, lower=True).T  # C L^-T
        U, s, _ = np.linalg.svd(B, full_matrices=False)
        lam = np.maximum(s**2 - nu, 0.0)
        keep = lam > 0
        self.U, self.lam, self.mu = U[:, keep], lam[keep], float(mu)
        self.rank = int(keep.sum())

    def __call__(self, R: np.ndarray) -> np.ndarray:
        if self.rank == 0:
            return R.copy()
        UR = self.U.T @ R
        scale = (self.lam[-1] + self.mu) / (self.lam + self.mu) - 1.0
        return R + self.U @ (scale[:, None] * UR)


# ---------------------------------------------------------------------- conjugate gradients
def conjugate_gradient(matvec, B: np.ndarray, precondition=None, tol: float = 1e-12, maxiter: int = 1000):
    """Solve A X = B (A symmetric positive definite, given by ``matvec(V) = A V`` on (N, k) blocks) by
    preconditioned conjugate gradients, one recurrence per column sharing each product.  Stops when
    ||B_j - A X_j|| <= tol ||B_j|| for every column j (the recursively updated residual, checked at the end
    against a true residual).  Returns (X, info) with ``iterations`` and ``residual`` (largest relative true
    residual); :class:`SingularKernel` when ``maxiter`` is reached first.

    Parameters
    ----------
    matvec : callable
        ``matvec(V) -> A V`` for (N, k) V.
    B : ndarray
        (N, k) right-hand sides.
    precondition : callable, optional
        ``P^-1 R`` (e.g. :class:`NystromPreconditioner`).
    tol : float, default 1e-12
    maxiter : int, default 1000

    Returns
    -------
    X : ndarray
    info : dict

    Raises
    ------
    SingularKernel
        If ``maxiter`` iterations do not converge.

    Examples
    --------
    In exact arithmetic CG solves an N x N system in N steps:

    >>> import numpy as np
    >>> A = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> X, info = conjugate_gradient(lambda V: A @ V, np.eye(2))
    >>> bool(np.allclose(X, np.linalg.inv(A))), info["iterations"]
    (True, 2)
    """
    B = np.asarray(B, dtype=np.float64)
    vector = B.ndim == 1
    B = B.reshape(len(B), -1)
    P = precondition or (lambda R: R.copy())
    X = np.zeros_like(B)
    R = B.copy()
    norm_b = np.linalg.norm(B, axis=0)
    norm_b[norm_b == 0] = 1.0
    Z = P(R)
    D = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    it = 0
    active = np.linalg.norm(R, axis=0) > tol * norm_b
    while active.any():
        if it >= maxiter:
            worst = float(np.max(np.linalg.norm(R, axis=0) / norm_b))
            raise SingularKernel(f"conjugate gradients did not converge in {maxiter} iterations (relative residual "
                                 f"{worst:.1e} > {tol:.0e}): the kernel is numerically singular or badly "
                                 "conditioned; pass diag_reg > 0")
        Q = matvec(D)
        dq = np.einsum("ij,ij->j", D, Q)
        alpha = np.where(active, rz / np.where(dq > 0, dq, 1.0), 0.0)
        if np.any(active & ~(dq > 0)):
            raise SingularKernel("conjugate gradients met a direction of non-positive curvature: the kernel is not "
                                 "positive definite in float64; pass diag_reg > 0")
        X += alpha * D
        R -= alpha * Q
        it += 1
        active = np.linalg.norm(R, axis=0) > tol * norm_b
        Z = P(R)
        rz_new = np.einsum("ij,ij->j", R, Z)
        beta = np.where(active, rz_new / np.where(rz != 0, rz, 1.0), 0.0)
        D = Z + beta * D
        rz = rz_new
    true = float(np.max(np.linalg.norm(B - matvec(X), axis=0) / norm_b))
    return (X[:, 0] if vector else X), {"iterations": it, "residual": true}


# ---------------------------------------------------------------------- regression
def kernel_regression(k_train_train, y_train, k_test_train=None, k_test_test=None, *, diag_reg: float = 0.0,
                      diag_reg_absolute_scale: bool = False, method: str = "cholesky", chunks: int | None = None,
                      tol: float = 1e-12, maxiter: int = 1000, rank: int = 500, seed: int = 0,
                      in_memory: bool = False, scheduler=None) -> Posterior:
    """Posterior mean and variance of kernel regression (module docstring).

    ``k_train_train`` (N, N): a blocked kernel (a zarr array of a :func:`~ntk_theory.distributed.blocked_kernel`
    store, a dask array, e.g. :func:`kernel_operator`) or a numpy array (tiles of ``chunks``); ``y_train``
    (N,) or (N, O); ``k_test_train`` (M, N) (numpy, zarr or dask); ``k_test_test``: the test variances (M,)
    (or the (M, M) test kernel, whose diagonal is used).  ``method``: "cholesky" or "cg" (``tol``, ``maxiter``,
    Nystrom ``rank`` and ``seed`` of its landmarks; ``in_memory``: read the kernel once into memory for the
    products instead of tile by tile at each iteration).  ``scheduler``: passed to ``dask.compute`` (None: Dask's
    default, a ``distributed.Client`` if one is active).

    Parameters
    ----------
    k_train_train : array_like
        (N, N) numpy, zarr or dask.
    y_train : array_like
        (N,) or (N, O).
    k_test_train : array_like, optional
        (M, N).
    k_test_test : array_like, optional
        (M,) or (M, M).
    diag_reg : float, default 0.0
    diag_reg_absolute_scale : bool, default False
        As :func:`ntk_theory.dynamics.ensemble`: r = diag_reg (True) or diag_reg trace(K) / N.
    method : {'cholesky', 'cg'}, default 'cholesky'
    chunks : int, optional
        Tiles of a numpy kernel.
    tol : float, default 1e-12
    maxiter : int, default 1000
    rank : int, default 500
    seed : int, default 0
    in_memory : bool, default False
    scheduler : optional

    Returns
    -------
    Posterior

    Raises
    ------
    SingularKernel
        If K + r I is numerically singular.
    ValueError
        If the shapes do not match or an argument is invalid.

    Examples
    --------
    The GP posterior written out: mean k K^-1 y, variance k(x, x) - k K^-1 k^T, by both solvers:

    >>> import numpy as np
    >>> K = np.array([[2.0, 1.0], [1.0, 2.0]]); y = np.array([1.0, -1.0]); k = np.array([[1.0, 0.5]])
    >>> for method in ("cholesky", "cg"):
    ...     post = kernel_regression(K, y, k, [2.0], method=method, rank=1, chunks=1, scheduler="synchronous")
    ...     print(bool(np.allclose(post.mean, k @ np.linalg.solve(K, y))),
    ...           bool(np.allclose(post.variance, 2.0 - k @ np.linalg.solve(K, k.T))))
    True True
    True True
    """
    dask, da = require("dask", "dask.array")
    A = as_dask(k_train_train, chunks)
    N = A.shape[0]
    if A.ndim != 2 or A.shape != (N, N):
        raise ValueError(f"k_train_train must be square (N, N); got {A.shape}")
    Y = np.asarray(y_train, dtype=np.float64)
    vector = Y.ndim == 1
    Y = Y.reshape(len(Y), -1)
    if len(Y) != N:
        raise ValueError(f"y_train has {len(Y)} rows but k_train_train is {N} x {N}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("y_train has non-finite entries")
    reg = float(diag_reg)
    if not (math.isfinite(reg) and reg >= 0):
        raise ValueError(f"diag_reg must be a finite number >= 0; got {diag_reg!r}")
    if method not in ("cholesky", "cg"):
        raise ValueError(f"method must be 'cholesky' or 'cg'; got {method!r}")
    options = {} if scheduler is None else {"scheduler": scheduler}
    diag = np.asarray(dask.compute(da.diagonal(A), **options)[0], dtype=np.float64)
    if not np.all(np.isfinite(diag)):
        raise ValueError("k_train_train has non-finite diagonal entries (an incomplete store?)")
    r = reg if diag_reg_absolute_scale else reg * float(np.sum(diag)) / N
    Kt = None if k_test_train is None else as_dask(k_test_train, A.chunks[0][0])
    if Kt is not None and (Kt.ndim != 2 or Kt.shape[1] != N):
        raise ValueError(f"k_test_train must have shape (M, {N}); got {Kt.shape}")
    kss = None
    if k_test_test is not None:
        if Kt is None:
            raise ValueError("k_test_test needs k_test_train")
        kss = np.asarray(k_test_test, dtype=np.float64)
        kss = np.diagonal(kss).copy() if kss.ndim == 2 else kss
        if kss.shape != (Kt.shape[0],):
            raise ValueError(f"k_test_test must have {Kt.shape[0]} variances; got shape {np.shape(k_test_test)}")
    info = {"method": method, "N": N, "regularisation": r}
    solve = _cholesky if method == "cholesky" else _cg
    alpha, V2, more = solve(A, r, Y, Kt, kss is not None, options, tol=tol, maxiter=maxiter, rank=rank, seed=seed,
                            in_memory=in_memory)
    info.update(more)
    if Kt is None:
        mean = Y - r * alpha
    else:
        mean = np.asarray(dask.compute(Kt @ alpha, **options)[0])
    variance = None if kss is None else kss - V2
    if not np.all(np.isfinite(mean)):
        raise SingularKernel("the posterior mean is not finite: the kernel is numerically singular; pass diag_reg > 0")
    return Posterior(mean[:, 0] if vector else mean, variance, info)


def _cholesky(A, r, Y, Kt, want_variance, options, **_):
    dask, da = require("dask", "dask.array")
    from scipy.linalg import LinAlgError

    c = A.chunks[0][0]
    if A.chunks[0] != A.chunks[1]:
        A = A.rechunk((c, c))
    N = A.shape[0]
    S = A + r * da.eye(N, chunks=c) if r else A
    pad = (-N) % c  # dask's blocked Cholesky needs equal square tiles: [[S, 0], [0, I]] has factor [[L, 0], [0, I]]
    if pad:
        S = da.block([[S, da.zeros((N, pad), chunks=c)], [da.zeros((pad, N), chunks=c), da.eye(pad, chunks=c)]])
        S = S.rechunk((c, c))
        Y = np.concatenate([Y, np.zeros((pad, Y.shape[1]))])
    L = da.linalg.cholesky(S, lower=True)
    Yd = da.from_array(Y, chunks=(c, Y.shape[1]))
    try:
        L = L.persist(**options)
        d = np.asarray(dask.compute(da.diagonal(L), **options)[0])[:N]
    except (LinAlgError, np.linalg.LinAlgError) as exc:
        raise SingularKernel(f"the kernel is numerically singular (the Cholesky factorisation of K + {r:.3g} I failed: "
                             f"{exc}); pass diag_reg > 0 (r = diag_reg * trace(K) / N)") from None
    if not (np.all(np.isfinite(d)) and np.all(d > 0)):
        raise SingularKernel(f"the kernel is numerically singular (the Cholesky factor of K + {r:.3g} I has zero or "
                             "non-finite pivots); pass diag_reg > 0")
    bound = float((d.max() / d.min()) ** 2)
    if bound > CONDITION_WARNING:
        warnings.warn(f"the kernel is nearly singular: cond(K + r I) >= {bound:.1e}, the solution keeps fewer than "
                      f"~{max(0, 16 - math.log10(bound)):.0f} digits; pass diag_reg > 0", RuntimeWarning,
                      stacklevel=3)
    Z = da.linalg.solve_triangular(L, Yd, lower=True)
    alpha = da.linalg.solve_triangular(L.T, Z, lower=False)
    out = [alpha[:N]]
    if want_variance:
        KtT = Kt.T
        if pad:
            KtT = da.concatenate([KtT, da.zeros((pad, KtT.shape[1]))], axis=0)
        V = da.linalg.solve_triangular(L, KtT.rechunk((c, Kt.chunks[0][0])), lower=True)
        out.append((V**2).sum(axis=0))
    got = dask.compute(*out, **options)
    return np.asarray(got[0]), (np.asarray(got[1]) if want_variance else None), {"condition_lower_bound": bound}


def _cg(A, r, Y, Kt, want_variance, options, *, tol, maxiter, rank, seed, in_memory):
    dask, da = require("dask", "dask.array")
    N = A.shape[0]
    m = int(min(N, rank))
    landmarks = np.sort(np.random.default_rng(seed).choice(N, size=m, replace=False))
    columns = np.asarray(dask.compute(A[:, landmarks], **options)[0], dtype=np.float64)
    mu = r if r > 0 else np.finfo(float).eps * float(np.trace(columns[landmarks])) / m
    P = NystromPreconditioner(columns, landmarks, mu)
    counter = {"products": 0}

    dense = np.asarray(dask.compute(A, **options)[0], dtype=np.float64) if in_memory else None

    def matvec(V):
        counter["products"] += 1
        if dense is not None:
            out = dense @ V
        else:
            out = np.asarray(dask.compute(A @ da.from_array(V, chunks=(A.chunks[1], V.shape[1])), **options)[0])
        return out + r * V if r else out

    B = Y
    if want_variance:
        KtT = np.asarray(dask.compute(Kt.T, **options)[0], dtype=np.float64)
        B = np.concatenate([Y, KtT], axis=1)
    X, info = conjugate_gradient(matvec, B, P, tol=tol, maxiter=maxiter)
    alpha = X[:, :Y.shape[1]]
    V2 = None
    if want_variance:
        V2 = np.einsum("nm,nm->m", KtT, X[:, Y.shape[1]:])
    info.update({"products": counter["products"], "nystrom_rank": P.rank})
    return alpha, V2, info
