r"""Infinite-width NNGP kernel and NTK of an MLP's output, in float64 or at any mpmath precision.

For L hidden layers and a readout (PDLT conventions, :mod:`ntk_theory.conventions`), with
G0_ab = x_a . x_b / n_0::

    K(1)   = C_b(1) + C_W(1) G0,            Theta(1) = lambda_b(1) + lambda_W(1) G0
    K(l+1) = C_b(l+1) + C_W(l+1) T_l(K(l)), Theta(l+1) = lambda_b(l+1) + lambda_W(l+1) T_l(K(l))
                                                          + C_W(l+1) Tdot_l(K(l)) Theta(l)

for l = 1 .. L, where T_l, Tdot_l are the Gaussian expectations of layer l's activation; the output
kernels are K(L+1), Theta(L+1).  ``param="standard"`` has lambda_W(l) = n_(l-1) and needs ``widths``.

Numerics (float64): the diagonal (a = b, and rows of X2 equal to rows of X1) uses the one-variable
forms T(K) = E[s^2], so the NTK diagonal is exact rather than computed through an angle that rounding
makes ~1e-8 instead of 0; off the diagonal K_ab is clipped to |K_ab| <= sqrt(K_aa K_bb) and closed
forms are evaluated in their stable rewriting (:mod:`ntk_theory.gaussian.stable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import mpmath
import numpy as np

from .. import _checks
from ..conventions import PARAMETERIZATIONS, learning_rate_factors
from .layer import LayerMap, activation_kernels


@dataclass
class KernelResult:
    """Output kernels with a note on how they were computed.  Iterating gives the quantities named in
    ``get`` in that order (default ``nngp, ntk``), as neural-tangents' ``kernel_fn(..., get=(...))``."""

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


class KernelRecursion:
    """The infinite-width recursion of an MLP: symbolic layer maps and their evaluation.

    ``activations``: one activation (name, string or SymPy expression) for every hidden layer, or
    a list of ``depth`` of them.  ``C_W``, ``C_b``: scalars or ``depth + 1`` values (readout last).
    """

    def __init__(self, activations, depth: int, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None, input_dim=None):
        self.depth = _checks.positive_int("depth", depth)
        acts = list(activations) if isinstance(activations, (list, tuple)) else [activations] * self.depth
        if len(acts) != self.depth:
            raise ValueError(f"got {len(acts)} activations for depth {self.depth}")
        self.kernels = [activation_kernels(a) for a in acts]
        n = self.depth + 1
        self.C_W = _checks.per_layer("C_W", C_W, n)
        self.C_b = _checks.per_layer("C_b", C_b, n)
        self.param = _checks.choice("param", param, PARAMETERIZATIONS)
        if param == "standard":
            if widths is None:
                raise ValueError("param='standard' has lambda_W = n_(l-1): give the hidden widths (widths=...)")
            self.widths = _checks.per_layer("widths", widths, self.depth, check=_checks.positive_int)
        else:
            self.widths = None

    def _lambdas(self, input_dim: int) -> list:
        fan_in = [input_dim] + (list(self.widths) if self.widths else [1] * self.depth)
        return [learning_rate_factors(self.param, self.C_W[l], self.C_b[l], fan_in[l]) for l in range(self.depth + 1)]

    def layer_maps(self, input_dim: int = 1) -> list[LayerMap]:
        lam = self._lambdas(input_dim)
        return [
            LayerMap(self.kernels[l], self.C_W[l + 1], self.C_b[l + 1], *lam[l + 1]) for l in range(self.depth)
        ]

    # ------------------------------------------------------------------ float64
    def __call__(self, X1, X2=None) -> KernelResult:
        return self.evaluate(X1, X2)

    def evaluate(self, X1, X2=None) -> KernelResult:
        """NNGP and NTK of the output at inputs X1 (N1, d), X2 (N2, d) (default X1), float64."""
        X1 = _checks.inputs(X1, "X1")
        X2v = X1 if X2 is None else _checks.inputs(X2, "X2", dim=X1.shape[1])
        d = X1.shape[1]
        lam = self._lambdas(d)
        G0 = X1 @ X2v.T / d
        g1, g2 = np.einsum("ij,ij->i", X1, X1) / d, np.einsum("ij,ij->i", X2v, X2v) / d
        same = equal_rows(X1, X2v)

        K, Th = self.C_b[0] + self.C_W[0] * G0, lam[0][0] + lam[0][1] * G0
        k1, k2 = self.C_b[0] + self.C_W[0] * g1, self.C_b[0] + self.C_W[0] * g2
        t1 = lam[0][0] + lam[0][1] * g1
        has_diagonal = bool(same.any())
        errors = []
        with np.errstate(all="ignore"):
            K, Th, k1, t1, errors = self._layers(K, Th, k1, k2, t1, lam, same, has_diagonal, X2 is None)
        if has_diagonal:
            ia, ib = np.nonzero(same)
            K[ia, ib], Th[ia, ib] = k1[ia], t1[ia]
        info = {"quadrature_error_per_layer": errors, "quadrature_error": max(errors) if any(errors) else 0.0}
        return KernelResult(K, Th, info)

    def _layers(self, K, Th, k1, k2, t1, lam, same, has_diagonal, symmetric):
        errors = []
        for l, kern in enumerate(self.kernels):
            cw, cb = self.C_W[l + 1], self.C_b[l + 1]
            lb, lw = lam[l + 1]
            kern.check_variances(k1 if symmetric else np.concatenate([k1, k2]), l + 1)
            bound = np.sqrt(k1)[:, None] * np.sqrt(k2)[None, :]
            K = np.clip(K, -bound, bound)
            T, Td, err = kern.offdiagonal(np.broadcast_to(k1[:, None], K.shape), np.broadcast_to(k2[None, :], K.shape), K)
            # the NTK diagonal recursion is needed only where rows of X1 equal rows of X2
            T1, Td1, err1 = kern.diagonal(k1, derivative=has_diagonal)
            T2, Td2, err2 = (T1, Td1, err1) if symmetric else kern.diagonal(k2, derivative=False)
            if has_diagonal:  # rows equal to columns: exact one-variable forms
                ia, ib = np.nonzero(same)
                T[ia, ib], Td[ia, ib] = T1[ia], Td1[ia]
                t1 = lb + lw * T1 + cw * Td1 * t1
            K, Th = cb + cw * T, lb + lw * T + cw * Td * Th
            k1, k2 = cb + cw * T1, cb + cw * T2
            errors.append(max([e for e in (err, err1, err2) if e is not None], default=0.0))
            if not (np.all(np.isfinite(K)) and np.all(np.isfinite(Th)) and np.all(np.isfinite(k1))):
                raise FloatingPointError(
                    f"the kernel recursion overflowed or produced NaN at hidden layer {l + 1} (variances "
                    "grow without bound at this C_W, C_b and depth, or an expectation diverges)"
                )
        return K, Th, k1, t1, errors

    # ------------------------------------------------------------------ mpmath
    def evaluate_mp(self, X1, X2=None, dps: int = 30) -> KernelResult:
        """The same recursion in mpmath at ``dps`` digits; inputs are taken as exact binary floats.
        ``nngp`` and ``ntk`` are (N1, N2) NumPy object arrays of ``mpmath.mpf``
        (``.astype(float)`` rounds them to float64)."""
        X1 = _checks.inputs(X1, "X1")
        X2v = X1 if X2 is None else _checks.inputs(X2, "X2", dim=X1.shape[1])
        d = X1.shape[1]
        lam = self._lambdas(d)
        with mpmath.workdps(dps):
            A = [[mpmath.mpf(float(v)) for v in row] for row in X1]
            B = [[mpmath.mpf(float(v)) for v in row] for row in X2v]
            N1, N2 = len(A), len(B)
            dot = lambda a, b: mpmath.fsum(p * q for p, q in zip(a, b)) / d  # noqa: E731
            G = [[dot(A[i], B[j]) for j in range(N2)] for i in range(N1)]
            g1, g2 = [dot(a, a) for a in A], [dot(b, b) for b in B]
            cw, cb = mpmath.mpf(self.C_W[0]), mpmath.mpf(self.C_b[0])
            lb, lw = map(mpmath.mpf, lam[0])
            K = [[cb + cw * G[i][j] for j in range(N2)] for i in range(N1)]
            Th = [[lb + lw * G[i][j] for j in range(N2)] for i in range(N1)]
            k1, k2 = [cb + cw * g for g in g1], [cb + cw * g for g in g2]
            for l, kern in enumerate(self.kernels):
                cw, cb = mpmath.mpf(self.C_W[l + 1]), mpmath.mpf(self.C_b[l + 1])
                lb, lw = map(mpmath.mpf, lam[l + 1])
                newK = [[None] * N2 for _ in range(N1)]
                newTh = [[None] * N2 for _ in range(N1)]
                for i in range(N1):
                    for j in range(N2):
                        if A[i] == B[j]:
                            T, Td = kern.diagonal_mp(k1[i])
                        else:
                            T, Td = kern.offdiagonal_mp(k1[i], k2[j], K[i][j])
                        newK[i][j] = cb + cw * T
                        newTh[i][j] = lb + lw * T + cw * Td * Th[i][j]
                K, Th = newK, newTh
                k1 = [cb + cw * kern.diagonal_mp(v, derivative=False)[0] for v in k1]
                k2 = [cb + cw * kern.diagonal_mp(v, derivative=False)[0] for v in k2]
            return KernelResult(_object_array(K), _object_array(Th), {"dps": dps})

    # ------------------------------------------------------------------ display
    def latex(self) -> str:
        maps = self.layer_maps()
        body = maps[0].latex() if len({id(m.kernels) for m in maps}) == 1 else r"\\".join(m.latex() for m in maps)
        return (
            rf"\text{{MLP: {self.depth} hidden layers, param={self.param}}}\\ "
            r"K^{(1)} = C_b + C_W G_0,\ \Theta^{(1)} = \lambda_b + \lambda_W G_0 \\ " + body
        )

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"

    def __repr__(self) -> str:
        names = [k.activation.name for k in self.kernels]
        acts = names[0] if len(set(names)) == 1 else "[" + ", ".join(names) + "]"
        return f"KernelRecursion({acts}; depth={self.depth}, C_W={_short(self.C_W)}, C_b={_short(self.C_b)}, param={self.param!r})"


def _object_array(rows) -> np.ndarray:
    out = np.empty((len(rows), len(rows[0])), dtype=object)
    for i, row in enumerate(rows):
        out[i, :] = row
    return out


def _short(v: Sequence):
    return v[0] if len(set(v)) == 1 else list(v)


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


def kernel(X1, X2=None, activation="relu", depth: int = 1, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None) -> KernelResult:
    """Shortcut: ``KernelRecursion(activation, depth, C_W, C_b, param, widths).evaluate(X1, X2)``."""
    return KernelRecursion(activation, depth, C_W, C_b, param, widths).evaluate(X1, X2)
