r"""Emit the Python/Numba source of a fused kernel from the activations' Gaussian expectations.

The generated module has, for each distinct activation a,

* closed form: ``pair_a(k11, k22, k12) -> (T, Tdot)``, the stable forms of the closed forms
  (:mod:`ntk_theory.gaussian.stable`) printed by SymPy after common-subexpression elimination;
* no closed form: ``s_a``, ``ds_a`` (the activation and its a.e. derivative) and ``KINKS_a``; the
  fused kernel evaluates T and Tdot from per-row/per-column Hermite tables
  (:mod:`ntk_theory.numerics.hermite_numba`, Mehler's formula summed by :mod:`ntk_theory.numerics.mehler`); where the series would need more than
  ``max_order`` terms it leaves NaN, and the driver finishes those entries with the compiled 2-D
  quadrature (kept out of the fused kernel so that it stays cacheable on disk),

and one ``fused`` kernel.  On entry its output buffer holds G0 = x_a . x_b / n_0; for every entry
it runs all layers with scalar temporaries (no N x N temporaries per layer)::

    K = C_b[0] + C_W[0] G0,   Theta = lambda_b[0] + lambda_W[0] G0
    for l = 1 .. L:  T, Tdot = pair(K_aa(l), K_bb(l), K_ab)           (K_ab clipped to |rho| <= 1)
                     K, Theta = C_b[l] + C_W[l] T,  lambda_b[l] + lambda_W[l] T + C_W[l] Tdot Theta

parallel over rows (``prange``), with K_aa(l), K_bb(l) precomputed per row and column.  The
source depends only on the activations, not on depth, widths or the constants (passed as arrays),
so one compiled kernel serves every C_W, C_b, depth and input set.
"""

from __future__ import annotations

import hashlib
import textwrap

import sympy as sp

from ..activations import x
from ..gaussian import k, k11, k12, k22  # noqa: F401  (k kept for printers of diagonal forms)
from ..gaussian.stable import stable_form
from ..jit import function_source, numba_code
from ..recursions.layer import ActivationKernels

FORMAT_VERSION = "7"


def _pair_source(index: int, kern: ActivationKernels) -> str:
    T, Td = stable_form(kern.T.expr), stable_form(kern.Tdot.expr)
    replacements, (T_r, Td_r) = sp.cse([T, Td], symbols=sp.numbered_symbols("t"), optimizations="basic")
    body = [f"{sym} = {numba_code(val)}" for sym, val in replacements]
    body += [f"T = {numba_code(T_r)}", f"Tdot = {numba_code(Td_r)}"]
    alpha = kern.homogeneity
    if alpha is not None:
        # homogeneous of degree alpha: evaluate at unit scale c = sqrt(k11 k22) (no underflow of
        # k11 k22), T = c^alpha T(k / c), Tdot = c^(alpha - 1) Tdot(k / c)
        body = ["c = math.sqrt(k11) * math.sqrt(k22)", "if c > 0.0:", "    k11 = k11 / c", "    k22 = k22 / c",
                "    k12 = k12 / c", "else:", "    c = 1.0"] + body
        body += [f"T = T * {_power('c', alpha)}", f"Tdot = Tdot * {_power('c', alpha - 1)}"]
    body += ["return T, Tdot"]
    doc = f'"""{kern.activation.name}: T = {sp.sstr(kern.T.expr)[:300]}; Tdot = {sp.sstr(kern.Tdot.expr)[:300]}"""'
    return (
        "@numba.njit(inline='always', cache=True, error_model='numpy')\n"
        f"def pair_{index}(k11, k22, k12):\n" + textwrap.indent("\n".join([doc] + body), "    ")
    )


def _power(name: str, exponent) -> str:
    if exponent == 0:
        return "1.0"
    if exponent == 1:
        return name
    return f"{name} ** {float(exponent)!r}"


def _numeric_source(index: int, kern: ActivationKernels) -> str:
    act = kern.activation
    z = sp.Symbol("z")
    kinks = ", ".join(repr(float(c)) for c in act.kinks)
    return (
        f"# {act.name}: no closed form; Hermite series (Mehler) with direct quadrature fallback\n"
        + function_source(f"s_{index}", (z,), act.expr.subs(x, z)) + "\n"
        + function_source(f"ds_{index}", (z,), act.ae_derivative().subs(x, z)) + "\n"
        + f"KINKS_{index} = np.array([{kinks}], dtype=np.float64)\n"
    )


# A numerical activation, entry by entry: Mehler's series for T and Tdot from the row and column
# Hermite tables (degree from the Parseval tail bound), or NaN where the series would need more than
# max_order terms (the driver finishes those entries by quadrature).
_NUMERIC_BODY = """\
q = qidx[l]
rho = k12 / b if b > 0.0 else 0.0
lr = math.log(min(abs(rho), 1.0))
m = order_from_log_tails(tailA[q, i], tailB[q, j], lr, ltol)
m2 = order_from_log_tails(dtailA[q, i], dtailB[q, j], lr, ltol)
if m < 0 or m2 < 0:
    T = math.nan
    Tdot = math.nan
else:
    T, Tdot = mehler_pair(coefA[q, i], coefB[q, j], dcoefA[q, i], dcoefB[q, j], rho, max(m, m2))
    # normA... hold sqrt(E s^2), sqrt(E s'^2) per row / column
    e = (tol * normA[q, i] * normB[q, j] + errA[q, i] * normB[q, j] + errB[q, j] * normA[q, i]
         + tol * dnormA[q, i] * dnormB[q, j] + derrA[q, i] * dnormB[q, j] + derrB[q, j] * dnormA[q, i])
    if e > e_row:
        e_row = e
"""

_FUSED = """\
CHUNK = 64


@numba.njit(cache=True, error_model='numpy')
def _row(K, TH, r, row0, col0, symmetric, D1, D2, CW, CB, LB, LW, codes, qidx,
         coefA, tailA, normA, errA, dcoefA, dtailA, dnormA, derrA,
         coefB, tailB, normB, errB, dcoefB, dtailB, dnormB, derrB, tol, ltol, kab, th):
    \"\"\"Row r of the tile: all layers per entry, in chunks of CHUNK columns with the layers
    outermost (one activation per inner loop: vectorisable for closed forms).  Returns the row's
    largest error estimate.\"\"\"
    n_cols = K.shape[1]
    L = codes.size
    i = row0 + r
    e_row = 0.0
    c_start = 0
    if symmetric:
        c_start = max(i - col0 + 1, 0)
    for c0 in range(c_start, n_cols, CHUNK):
        n = min(CHUNK, n_cols - c0)
        for c in range(n):
            g = K[r, c0 + c]
            kab[c] = CB[0] + CW[0] * g
            th[c] = LB[0] + LW[0] * g
        for l in range(L):
            k11 = D1[l, i]
            cw = CW[l + 1]
            cb = CB[l + 1]
            lb = LB[l + 1]
            lw = LW[l + 1]
            code = codes[l]
{dispatch}
        for c in range(n):
            K[r, c0 + c] = kab[c]
            TH[r, c0 + c] = th[c]
    return e_row


@numba.njit(parallel=True, cache=True, error_model='numpy')
def fused(K, TH, row0, col0, symmetric, D1, D2, CW, CB, LB, LW, codes, qidx,
          coefA, tailA, normA, errA, dcoefA, dtailA, dnormA, derrA,
          coefB, tailB, normB, errB, dcoefB, dtailB, dnormB, derrB, tol, err):
    \"\"\"In place: K holds G0 on entry, the output NNGP on exit; TH receives the NTK.
    Rows are global indices row0 + r, columns col0 + c; with symmetric, only entries j > i (the
    driver writes the diagonal from the exact one-variable recursion).  Rows go in pairs
    (p, n_rows - 1 - p), which carry equal work in the symmetric case, across threads.\"\"\"
    n_rows = K.shape[0]
    ltol = math.log(tol)
    for p in numba.prange((n_rows + 1) // 2):
        kab = np.empty(CHUNK)
        th = np.empty(CHUNK)
        pi = np.int64(p)  # the prange index is unsigned; mixed with signed values it would become float
        for t in range(2):
            r = pi if t == 0 else n_rows - 1 - pi
            if t == 1 and r == pi:
                continue
            err[r] = _row(K, TH, r, row0, col0, symmetric, D1, D2, CW, CB, LB, LW, codes, qidx,
                          coefA, tailA, normA, errA, dcoefA, dtailA, dnormA, derrA,
                          coefB, tailB, normB, errB, dcoefB, dtailB, dnormB, derrB, tol, ltol, kab, th)
"""

_ENTRY = """\
for c in range(n):
    j = col0 + c0 + c
    k22 = D2[l, j]
    b = math.sqrt(k11) * math.sqrt(k22)
    k12 = min(max(kab[c], -b), b)
{body}
    kab[c] = cb + cw * T
    th[c] = lb + lw * T + cw * Tdot * th[c]
"""


def emit(kernels: list[ActivationKernels]) -> tuple[str, dict]:
    """Source of the module for these (distinct) activations; returns (source, {activation name: code})."""
    parts, branches, codes, numeric = [], [], {}, False
    for a, kern in enumerate(kernels):
        codes[kern.activation.name] = a
        closed = kern.T.is_closed_form and kern.Tdot.is_closed_form
        keyword = "if" if a == 0 else "elif"
        if closed:
            parts.append(_pair_source(a, kern))
            body = f"T, Tdot = pair_{a}(k11, k22, k12)"
            loop = _ENTRY.replace("{body}", textwrap.indent(body, "    "))
        else:
            numeric = True
            parts.append(_numeric_source(a, kern))
            loop = _ENTRY.replace("{body}", textwrap.indent(_NUMERIC_BODY, "    "))
        branches.append(f"{keyword} code == {a}:\n" + textwrap.indent(loop, "    "))
    branches.append("else:\n    for c in range(n):\n        kab[c] = math.nan\n        th[c] = math.nan")
    dispatch = textwrap.indent("\n".join(branches), " " * 12)
    header = [
        "# Generated by ntk-theory (ntk_theory/codegen/emit.py). Do not edit: regenerate instead.",
        "# Activations: " + ", ".join(f"{n} -> code {c}" for n, c in codes.items()),
        "import math",
        "",
        "import numba",
        "import numpy as np",
        "",
        "from ntk_theory.codegen.runtime import atan2, erfcx",
        "from ntk_theory.numerics.compensated_numba import det2",
    ]
    if numeric:
        header += ["from ntk_theory.numerics.mehler import mehler_pair, order_from_log_tails"]
    fused = _FUSED.replace("{dispatch}", dispatch)
    source = "\n".join(header) + "\n\n\n" + "\n\n\n".join(parts) + "\n\n\n" + fused
    return source, codes


#: the modules the generated code imports (Numba's cache does not notice when an imported function
#: changes, so their source is part of the cache key)
RUNTIME_MODULES = ("codegen/runtime.py", "numerics/compensated.py", "numerics/compensated_numba.py", "numerics/mehler.py")


def _runtime_fingerprint() -> str:
    """Hash of :data:`RUNTIME_MODULES`."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    return "".join(hashlib.sha256((root / name).read_bytes()).hexdigest() for name in RUNTIME_MODULES)


def source_hash(source: str) -> str:
    """Cache key: the generated source, the emitter's format and the runtime modules' source."""
    return hashlib.sha256((FORMAT_VERSION + _runtime_fingerprint() + source).encode()).hexdigest()[:20]
