r"""Compiled NNGP/NTK kernels: the recursion of :class:`~ntk_theory.recursions.KernelRecursion`,
generated as Numba code (:mod:`ntk_theory.codegen.emit`), cached on disk, evaluated in row tiles.

>>> kern = CompiledKernel("relu", depth=10, C_W=2.0, C_b=0.0)      # doctest: +SKIP
>>> nngp, ntk = kern(X)                                              # doctest: +SKIP
>>> print(kern.source)                                               # the generated code

Evaluation of X1 (N1, d), X2 (N2, d):

1. per row and column, the diagonal recursion K_aa(l) (and the NTK diagonal where rows of X1 equal
   rows of X2), in NumPy for closed forms and from the norms of the Hermite tables otherwise;
2. for activations without closed form, Hermite coefficient tables of s and s' at each layer's
   distinct row and column variances (Mehler's formula, :mod:`ntk_theory.numerics.hermite_numba`);
3. row tiles: G0 = X1_tile X2^T / d by BLAS into a tile buffer, then the fused kernel turns it into
   K and Theta in place (all layers per entry, parallel over rows), then the tile is copied into the
   output (any dtype, memory-mapped arrays too).  Temporaries are tile-sized (``tile_mb``).
   With X2 = X1 only entries j >= i are computed and the upper triangle is mirrored.
4. entries whose rows are equal get the exact diagonal values.

Numerical activations: the truncation of each series is bounded by tol sqrt(E s(u)^2 E s(v)^2)
(Parseval tails), plus the coefficients' quadrature error; entries where the series would need
more than ``max_order`` terms use compiled 2-D quadrature with its own error estimate.  The result
reports the largest per-entry estimate of one layer (``info["quadrature_error"]``).
"""

from __future__ import annotations

import time

import numpy as np

from .. import _checks
from ..recursions import KernelRecursion, KernelResult
from ..recursions.network import equal_rows
from ..jit import modules as cache
from . import emit
from ..numerics.mehler import order_from_log_tails, series


class CompiledKernel:
    """NNGP and NTK of an MLP's output by generated, compiled and cached Numba code.

    Arguments as :class:`~ntk_theory.recursions.KernelRecursion`; ``tol`` the truncation tolerance
    of Hermite series (numerical activations), ``max_order`` their largest degree, ``tile_mb`` the
    size of the row-tile buffers.
    """

    def __init__(self, activations, depth: int, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None,
                 tol: float = 1e-15, max_order: int = 128, tile_mb: float = 64.0):
        self.recursion = KernelRecursion(activations, depth, C_W, C_b, param, widths)
        self.tol, self.max_order, self.tile_mb = float(tol), int(max_order), float(tile_mb)
        distinct = {k.activation.name: k for k in self.recursion.kernels}
        # sorted: the source (and its cache entry) depends on the set of activations, not their order
        self._distinct = [distinct[name] for name in sorted(distinct)]
        distinct = self._distinct
        self.source, codes = emit.emit(distinct)
        self.key = emit.source_hash(self.source)
        self._codes = np.array([codes[k.activation.name] for k in self.recursion.kernels], dtype=np.int64)
        self._numeric = [not (k.T.is_closed_form and k.Tdot.is_closed_form) for k in self.recursion.kernels]
        self._qidx = np.cumsum(self._numeric, dtype=np.int64) - 1
        self._module = None
        self.fallback_entries = 0
        self.compile_seconds = None
        self.from_cache = None

    def __repr__(self) -> str:
        r = self.recursion
        status = "not compiled" if self._module is None else f"compiled in {self.compile_seconds:.2f} s" + (" (disk cache)" if self.from_cache else "")
        return f"CompiledKernel({', '.join(k.activation.name for k in self._distinct)}; depth={r.depth}, key={self.key}, {status})"

    # ------------------------------------------------------------------ compilation
    @property
    def module(self):
        if self._module is None:
            self._compile()
        return self._module

    def _compile(self) -> None:
        """Load (or compile) the generated module and every compiled routine its evaluation uses
        (the fused kernel; for numerical activations also s_a, ds_a and the Hermite coefficient
        routines), so that ``compile_seconds`` is the whole start-up cost and ``from_cache`` says
        whether all of it came from Numba's disk cache."""
        t0 = time.perf_counter()
        try:
            module = cache.import_module(self.key, self.source)
            self._warm_up(module)
        except Exception:  # noqa: BLE001 - a corrupt Numba cache: clear it and compile afresh
            import sys

            cache.clear_numba_cache(self.key)
            sys.modules.pop(f"ntk_theory_kernel_{self.key}", None)
            module = cache.import_module(self.key, self.source)
            self._warm_up(module)
        compiled = 0
        if any(self._numeric):
            from ..numerics import gauss_legendre, hermite_numba

            for a in {int(c) for c, numeric in zip(self._codes, self._numeric) if numeric}:
                for fn in (getattr(module, f"s_{a}"), getattr(module, f"ds_{a}")):
                    hermite_numba.coefficients(fn, np.array([1.0]), kinks=tuple(getattr(module, f"KINKS_{a}")), max_order=4)
            compiled += _compiled_afresh(hermite_numba) + _compiled_afresh(gauss_legendre)
        compiled += _compiled_afresh(module)
        self.compile_seconds = time.perf_counter() - t0
        self.from_cache = compiled == 0
        self._module = module

    def _warm_up(self, module) -> None:
        z3, z2 = np.zeros((0, 1, 1)), np.zeros((0, 1))
        tables = (z3, z3, z2, z2) * 2
        D = np.ones((len(self._codes), 2))
        ones = np.ones(len(self._codes) + 1)
        # both array layouts the evaluation passes: contiguous tiles and strided views of the output
        for K, T in ((np.zeros((1, 1)), np.zeros((1, 1))), (np.zeros((2, 2))[:, 1:], np.zeros((2, 2))[:, 1:])):
            module.fused(K, T, 0, 0, False, D, D, ones, ones, ones, ones,
                         np.full(len(self._codes), -1, dtype=np.int64), self._qidx, *tables, *tables, self.tol, np.zeros(K.shape[0]))

    # ------------------------------------------------------------------ diagonal recursion
    def _layer_constants(self, d: int):
        lam = self.recursion._lambdas(d)
        CW = np.array(self.recursion.C_W, dtype=float)
        CB = np.array(self.recursion.C_b, dtype=float)
        LB = np.array([a for a, _ in lam], dtype=float)
        LW = np.array([b for _, b in lam], dtype=float)
        return CW, CB, LB, LW

    def _diagonals(self, sq, CW, CB, LB, LW, with_ntk: bool):
        """Per hidden layer the variances D[l] (inputs of activation l), the output variance, the
        output NTK diagonal (if asked) and the Hermite tables of numerical layers."""
        L = len(self._codes)
        D = np.empty((L, sq.size))
        k = CB[0] + CW[0] * sq
        t = LB[0] + LW[0] * sq if with_ntk else None
        tables = []
        for l, kern in enumerate(self.recursion.kernels):
            kern.check_variances(k, l + 1)
            D[l] = k
            if self._numeric[l]:
                tab_s, tab_ds = self._tables(l, k)
                T, Td = tab_s["norm"], tab_ds["norm"]
                tables.append((tab_s, tab_ds))
            else:
                T, Td, _ = kern.diagonal(k, derivative=with_ntk)
            if with_ntk:
                t = LB[l + 1] + LW[l + 1] * T + CW[l + 1] * Td * t
            k = CB[l + 1] + CW[l + 1] * T
        return D, k, t, tables

    def _tables(self, l: int, variances: np.ndarray):
        from ..numerics import hermite_numba

        module = self.module
        a = int(self._codes[l])
        unique, inverse = np.unique(variances, return_inverse=True)
        out = []
        for fn in (getattr(module, f"s_{a}"), getattr(module, f"ds_{a}")):
            kinks = tuple(getattr(module, f"KINKS_{a}"))
            tab = hermite_numba.coefficients(fn, unique, kinks=kinks, max_order=self.max_order, tol=self.tol)
            with np.errstate(divide="ignore"):
                half_log_tail = 0.5 * np.log(tab.tail)
            out.append({"coef": tab.coef[inverse], "tail": half_log_tail[inverse], "norm": tab.norm2[inverse],
                        "sqrt_norm": np.sqrt(tab.norm2)[inverse], "err": tab.error[inverse]})
        return out

    @staticmethod
    def _stack(tables, which: int, transpose: bool = False):
        """Stack one kind of table over the numerical layers: coefficients (q, row, n), or
        (q, n, column) with ``transpose`` (the fused kernel runs across columns), log-tails
        (q, row, n), square roots of the norms E s^2 and errors (q, row)."""
        if not tables:
            z3, z2 = np.zeros((0, 1, 1)), np.zeros((0, 1))
            return z3, z3, z2, z2
        parts = [t[which] for t in tables]
        coef = np.stack([p["coef"].T if transpose else p["coef"] for p in parts])
        return (np.ascontiguousarray(coef), np.ascontiguousarray(np.stack([p["tail"] for p in parts])),
                np.ascontiguousarray(np.stack([p["sqrt_norm"] for p in parts])), np.ascontiguousarray(np.stack([p["err"] for p in parts])))

    # ------------------------------------------------------------------ evaluation
    def __call__(self, X1, X2=None, out=None, dtype=np.float64, progress=None) -> KernelResult:
        return self.evaluate(X1, X2, out=out, dtype=dtype, progress=progress)

    def evaluate(self, X1, X2=None, out=None, dtype=np.float64, progress=None) -> KernelResult:
        """NNGP and NTK (N1, N2) of the output; ``out=(nngp, ntk)`` writes into given arrays
        (e.g. ``np.memmap``), ``dtype`` float64 (default) or float32 for the stored result
        (arithmetic is float64 either way).  ``progress``: a bar over the row tiles
        (:func:`ntk_theory.progress.progress_bar`: True, False, or None for a terminal)."""
        from ..progress import progress_bar

        X1, X2v, symmetric, K_out, T_out = evaluation_arrays(X1, X2, out, dtype)
        N1, N2, d = X1.shape[0], X2v.shape[0], X1.shape[1]
        module = self.module
        CW, CB, LB, LW = self._layer_constants(d)
        sq1 = np.einsum("ij,ij->i", X1, X1) / d
        sq2 = sq1 if symmetric else np.einsum("ij,ij->i", X2v, X2v) / d
        ia, ib = np.nonzero(equal_rows(X1, X2v))
        has_diag = ia.size > 0
        equal = set(zip(ia.tolist(), ib.tolist()))
        with np.errstate(all="ignore"):
            D1, k1, t1, tab1 = self._diagonals(sq1, CW, CB, LB, LW, with_ntk=has_diag)
            D2, _, _, tab2 = (D1, k1, t1, tab1) if symmetric else self._diagonals(sq2, CW, CB, LB, LW, with_ntk=False)
        A, dA = self._stack(tab1, 0), self._stack(tab1, 1)
        B, dB = self._stack(tab2, 0), self._stack(tab2, 1)
        rows = max(1, int(self.tile_mb * 2**20 // (16 * max(N2, 1))))
        # float64 in-memory outputs are written in place (tile views); others through tile buffers
        direct = K_out.dtype == np.float64 and T_out.dtype == np.float64 and type(K_out) is np.ndarray and type(T_out) is np.ndarray
        worst = 0.0
        entries = N1 * (N1 + 1) // 2 if symmetric else N1 * N2
        bar = progress_bar(total=entries, desc=f"kernel {N1} x {N2}", unit="entry", unit_scale=True, enabled=progress)
        for r0 in range(0, N1, rows):
            r1 = min(N1, r0 + rows)
            c0 = r0 if symmetric else 0
            if direct:
                Kb, Tb = K_out[r0:r1, c0:], T_out[r0:r1, c0:]
                np.matmul(X1[r0:r1], X2v[c0:].T, out=Kb)
            else:
                Kb = X1[r0:r1] @ X2v[c0:].T
                Tb = np.empty_like(Kb)
            Kb /= d
            err = np.zeros(r1 - r0)
            G = Kb.copy() if any(self._numeric) else None
            module.fused(Kb, Tb, r0, c0, symmetric, D1, D2, CW, CB, LB, LW, self._codes, self._qidx,
                         *A, *dA, *B, *dB, self.tol, err)
            worst = max(worst, float(err.max(initial=0.0)))
            if G is not None:
                rr, cc = np.nonzero(np.isnan(Kb))
                for r, c in zip(rr, cc):
                    i, j = r0 + r, c0 + c
                    if (symmetric and j <= i) or (i, j) in equal:  # overwritten by the exact diagonal
                        continue
                    Kb[r, c], Tb[r, c], e = self._entry(i, j, G[r, c], D1, D2, CW, CB, LB, LW, (A, dA, B, dB))
                    self.fallback_entries += 1
                    worst = max(worst, e)
            if not direct:
                K_out[r0:r1, c0:] = Kb
                T_out[r0:r1, c0:] = Tb
            bar.update((r1 - r0) * (N2 - c0) - ((r1 - r0) * (r1 - r0 - 1) // 2 if symmetric else 0))
        bar.close()
        if symmetric:
            from .runtime import mirror_upper

            for arr in (K_out, T_out):
                mirror_upper(np.asarray(arr))
        if has_diag:
            K_out[ia, ib], T_out[ia, ib] = k1[ia], t1[ia]
        if not (np.isfinite(np.sum(K_out, dtype=np.float64)) and np.isfinite(np.sum(T_out, dtype=np.float64))) and not (
            np.all(np.isfinite(K_out)) and np.all(np.isfinite(T_out))
        ):
            raise FloatingPointError(
                "the kernel recursion overflowed or produced NaN (variances grow without bound at this C_W, C_b "
                "and depth, or an expectation diverges)"
            )
        info = {"quadrature_error": worst, "compile_seconds": self.compile_seconds, "from_cache": self.from_cache,
                "tile_rows": rows, "key": self.key}
        return KernelResult(K_out, T_out, info)

    def _entry(self, i, j, g, D1, D2, CW, CB, LB, LW, tables):
        """One entry's recursion in Python: closed forms in NumPy, numerical layers by their series
        or, where that is too long, by the compiled 2-D quadrature (``gauss_legendre.expect2_direct``)."""
        from ..numerics import gauss_legendre

        (cA, tA, nA, eA), (dcA, dtA, dnA, deA), (cB, tB, nB, eB), (dcB, dtB, dnB, deB) = tables
        module = self.module
        kab, th, worst = CB[0] + CW[0] * g, LB[0] + LW[0] * g, 0.0
        for l, kern in enumerate(self.recursion.kernels):
            k11, k22 = D1[l, i], D2[l, j]
            b = np.sqrt(k11) * np.sqrt(k22)
            k12 = min(max(kab, -b), b)
            if not self._numeric[l]:
                T, Td, _ = kern.offdiagonal(np.array(k11), np.array(k22), np.array(k12))
                T, Td = float(T), float(Td)
            else:
                q, a = int(self._qidx[l]), int(self._codes[l])
                rho = k12 / b if b > 0 else 0.0
                kinks = getattr(module, f"KINKS_{a}")
                vals = []
                lr = np.log(min(abs(rho), 1.0)) if rho != 0 else -np.inf
                for fn, c1, t1, c2, t2 in ((getattr(module, f"s_{a}"), cA, tA, cB, tB), (getattr(module, f"ds_{a}"), dcA, dtA, dcB, dtB)):
                    m = order_from_log_tails(t1[q, i], t2[q, j], lr, np.log(self.tol))
                    if m >= 0:
                        vals.append(series(c1[q, i], c2[q, j], rho, m))
                    else:
                        v, e = gauss_legendre.expect2_direct(fn, fn, k11, k22, k12, kinks, kinks)
                        vals.append(v)
                        worst = max(worst, e)
                T, Td = vals
            kab, th = CB[l + 1] + CW[l + 1] * T, LB[l + 1] + LW[l + 1] * T + CW[l + 1] * Td * th
        return kab, th, worst

    @staticmethod
    def _outputs(out, shape, dtype):
        if out is None:
            return np.empty(shape, dtype=dtype), np.empty(shape, dtype=dtype)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError("out must be a pair of arrays (nngp, ntk)")
        for name, arr in zip(("nngp", "ntk"), out):
            if not isinstance(arr, np.ndarray) or arr.shape != shape:
                raise ValueError(f"out[{name}] must be an array of shape {shape}; got {getattr(arr, 'shape', type(arr))}")
            if arr.dtype not in (np.float64, np.float32):
                raise ValueError(f"out[{name}] must be float64 or float32; got {arr.dtype}")
        return out[0], out[1]


def evaluation_arrays(X1, X2, out, dtype):
    """Checked inputs and output arrays of a compiled kernel's evaluation:
    ``(X1, X2 or X1, symmetric, nngp_out, ntk_out)``; ``out`` a pair of given (N1, N2) arrays or None,
    ``dtype`` float64 or float32 for the stored result."""
    X1 = _checks.inputs(X1, "X1")
    symmetric = X2 is None
    X2v = X1 if symmetric else _checks.inputs(X2, "X2", dim=X1.shape[1])
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32; got {dtype}")
    K_out, T_out = CompiledKernel._outputs(out, (X1.shape[0], X2v.shape[0]), dtype)
    return X1, X2v, symmetric, K_out, T_out


def _compiled_afresh(module) -> int:
    """How many signatures of the module's Numba functions were compiled in this process rather
    than loaded from Numba's disk cache."""
    total = 0
    for obj in vars(module).values():
        stats = getattr(obj, "stats", None)
        if stats is not None and hasattr(stats, "cache_misses"):
            total += sum(stats.cache_misses.values())
    return total


def compiled_kernel(activations, depth: int, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None, **options) -> CompiledKernel:
    """A :class:`CompiledKernel`, shared by identical arguments within a process."""
    key = (repr(activations), depth, repr(C_W), repr(C_b), param, repr(widths), tuple(sorted(options.items())))
    if key not in _KERNELS:
        _KERNELS[key] = CompiledKernel(activations, depth, C_W, C_b, param, widths, **options)
    return _KERNELS[key]


_KERNELS: dict = {}
