r"""Compiled (Numba) CNN-GP / CNTK of serial convolutional descriptions with pooling, float64.

The same rules as :mod:`ntk_theory.recursions.graph` in the same spatial layout (every pair of positions when
the chain pools or its output keeps spatial axes, same positions only otherwise or with ``diagonal_spatial``;
:mod:`ntk_theory.recursions.spatial`), evaluated input pair
by input pair: the output for inputs (a, b) depends only on their cross covariance K_ab[p, p'] (or K_ab[p])
and on the per-position variances of a and of b before each activation, so

1. each input runs the chain once with itself (parallel over inputs), recording its per-position variances
   before every activation and its own output (the kernel's diagonal: one-variable forms at equal
   positions, exact as in the interpreter);
2. each pair runs the chain on its (P x P) cross covariance (parallel over blocks of pairs, one set of
   4 P^2 (or 2 P) float buffers per block; with X2 = None only the pairs a > b, mirrored); rows of X1 equal
   to rows of X2 take their own output.

The steps, on flat row-major P x P arrays (p = (h, w) first position, p' second):

* Conv (C_W, C_b, lambda_b, lambda_W; window F, |F| taps):
  K'(o, o') = C_b + C_W / |F| sum_q K(s o + q - lo, s o' + q - lo) (taps outside the image dropped, or
  wrapped for 'CIRCULAR'), Theta'(o, o') = lambda_b + lambda_W / |F| sum_q K(..) + C_W / |F| sum_q Theta(..);
  accumulated as row slices along the second position's width (unit stride), so the inner loops vectorise;
* Dense per position: K' = C_b + C_W K, Theta' = lambda_b + lambda_W K + C_W Theta;
* an activation: K' = T(K_aa(p), K_bb(p'), K_ab(p, p')), Theta' = Tdot(..) Theta, with T, Tdot the closed
  forms of :func:`ntk_theory.recursions.layer.activation_kernels` in their stable float64 rewriting
  (:func:`ntk_theory.gaussian.stable.stable_form`: asin as atan2, K_aa K_bb - K_ab^2 compensated), homogeneous
  activations at unit scale, K_ab clipped to |K_ab| <= sqrt(K_aa K_bb); the one-variable forms at equal
  positions of one input with itself;
* AvgPool: windowed means over both positions (``normalize_edges``: by the counts of in-image taps);
* GlobalAvgPool: mean over all P^2 entries; Flatten: mean over the P same-position entries.

Activations without closed forms (tanh, softplus, swish, ...) are evaluated as in
:mod:`ntk_theory.codegen.graph`: F and F' are printed as Numba functions; each self chain computes, before such an
activation, the per-position variances of each input, at which the driver computes Hermite tables of F and F'
(:func:`ntk_theory.numerics.hermite_numba.coefficients`, once per distinct variance; rows i P + p for input i,
position p); a pixel pair's T and Tdot are then Mehler's series sum_n a_n b_n rho^n on the tables of its two
positions (:func:`mehler_entry`: truncated where the Parseval tail bound is below ``tol``, with the error
estimate of the MLP kernels), and the same-position entries of one input with itself the tables' norms E[F^2],
E[F'^2].  The variances before a later activation need the expectations of the earlier ones, so the self chains
run once per such activation (each pass up to the next one).  Where a series would need more degrees than the
tables hold (correlations near 1 at large variances) the kernel raises :class:`SeriesTooShort` after trying the
degrees of :data:`MAX_ORDERS`; ``stax`` then evaluates with the NumPy interpreter, whose series fall back to
2-D quadrature (a compiled quadrature of a function passed at run time would make the module uncacheable).

The activations' T and Tdot (or F, F') are printed as Numba source (:func:`ntk_theory.jit.numba_code`) into a
generated module with the chain above (:mod:`ntk_theory.jit.modules`, keyed by the hash of its source, which
depends on the set of activations only; a module whose activations all have closed forms has no Hermite-table
parameters in ``pairs``, ``chain`` and ``activate``, ``TABLES`` false).  :func:`share` registers a set of
activations whose one module serves every chain with activations among them (fewer cold compiles); an
activation with neither closed forms nor a Numba form of F raises :class:`NotCompilableConv` naming the layer (the NumPy interpreter evaluates it).

Supported (else :class:`NotCompilableConv`, naming the layer): a serial chain of ``Conv`` (any padding,
strides, 1-D or 2-D, 'ntk' or 'standard'), ``Dense`` (per position), activations, ``AvgPool``
(any padding, ``normalize_edges``), ``GlobalAvgPool``, ``Flatten`` and, after these, ``Dense`` layers and
activations on the pooled vector.  A chain whose output keeps spatial axes runs in the full layout and each
pair writes its P' x P' output entries; the result is in neural-tangents 0.6.5's layout, as the interpreter's
(:func:`ntk_theory.recursions.spatial.neural_tangents_order`), the pairs (b, a) of a symmetric kernel being
those of (a, b) with the two positions swapped.

Error model: the same closed forms as the interpreter in a different summation order and their stable
float64 forms: ~1e-14 relative to it (the arccos-type terms of correlations near 1 lose up to ~1e-12
relative in Tdot of distinct positions).  Activations without closed form: ``info["quadrature_error"]`` is the
largest estimate of one pixel pair's expectations (truncation bound plus the tables' coefficient errors by
Cauchy-Schwarz) or of the tables' norms, not propagated through later layers.  Outputs may be written into given arrays (``out=``, e.g.
``np.memmap``) by row tiles of ``tile_mb`` megabytes; tiles give the in-memory result bit for bit (each entry
is computed by the same pair function).
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from pathlib import Path

import numba
import numpy as np
import sympy as sp

from ..architecture import (
    AvgPool,
    Conv,
    Dense,
    Elementwise,
    Flatten,
    GlobalAvgPool,
    Identity,
    Layer,
    leaves,
    where,
)
from ..gaussian.stable import stable_form
from ..jit import modules, numba_code
from ..numerics.mehler import mehler_pair
from ..recursions.graph import image_inputs
from ..recursions.layer import activation_kernels
from ..recursions.result import KernelResult, check_get
from ..recursions.spatial import neural_tangents_order, output_spatial, pads
from .emit import _numeric_source, _power
from .runtime import mehler_orders

DENSE, CONV, ACT, POOL, GLOBAL, FLATTEN = range(6)
# integer columns of a step: code, H_in, W_in, H_out, W_out, fh, fw, sh, sw, lo_h, lo_w, wrap, normalize,
# activation layer index (variance records), activation code (in the generated module), table slot of an
# activation without closed form (-1 for closed forms)
_INTS = 16

FORMAT_VERSION = "1"


class NotCompilableConv(NotImplementedError):
    """The description has a layer or structure the compiled convolutional kernel does not evaluate."""


class SeriesTooShort(NotCompilableConv):
    """Mehler's series of an activation without closed form needs more degrees than its Hermite tables hold
    (correlations near 1 at large variances): a larger ``max_order``, or the NumPy interpreter (whose series
    fall back to 2-D quadrature), evaluates it."""


def _activation_key(layer: Elementwise) -> str:
    return sp.srepr(layer.expr)


def _numeric(layer: Elementwise, kern, path) -> bool:
    """Whether the activation ``layer`` is evaluated numerically (no closed-form T, Tdot or diagonal forms);
    :class:`NotCompilableConv` if it has neither closed forms nor a Numba form of F and F'."""
    if kern.closed_form and all(np.isfinite(float(e.expr)) if e.expr.is_number else True
                                for e in (kern.T_diag, kern.Tdot_diag)):
        return False
    try:
        _numeric_source(0, kern)
    except Exception as exc:  # noqa: BLE001 - SymPy's printers raise several types
        raise NotCompilableConv(f"{layer!r} at {where(path)}: its Gaussian expectations have no closed form and F "
                                f"has no Numba form ({type(exc).__name__}); the NumPy interpreter evaluates "
                                "it") from None
    return True


def plan(description: Layer, image_shape: tuple, channels: int):
    """(integer steps, float steps, number of activation layers, {activation key: (code, layer)}, table
    slots) of ``description`` on images of spatial shape ``image_shape`` (1-D images as (1, W)) with
    ``channels`` input channels; activation codes number the distinct activations in sorted key order;
    table slots: per activation layer without closed form, in order, (activation layer index, layer, where)."""
    shape = tuple(image_shape) if len(image_shape) == 2 else (1,) + tuple(image_shape)
    rank = len(image_shape)
    ints, floats, acts, found, slots = [], [], 0, {}, []
    spatial = True
    for path, layer in leaves(description):
        row, f = [0] * _INTS, [0.0] * 4
        row[1:3] = shape
        row[15] = -1
        if isinstance(layer, Identity) or (isinstance(layer, Elementwise) and layer.is_identity):
            continue
        if isinstance(layer, (Conv, AvgPool)):
            if not spatial or layer.rank != rank:
                raise NotCompilableConv(f"{layer!r} at {where(path)} acts on {'a vector' if not spatial else 'images of another rank'}")
            window = tuple(layer.filter_shape if isinstance(layer, Conv) else layer.window_shape)
            steps = tuple(layer.step)
            if rank == 1:
                window, steps = (1,) + window, (1,) + steps
            out = layer.output_size(shape[2 - rank:])
            out = out if rank == 2 else (1,) + tuple(out)
            lo = [pads(n, w, s, layer.padding)[0] for n, w, s in zip(shape, window, steps)]
            row[0] = CONV if isinstance(layer, Conv) else POOL
            row[3:5], row[5:7], row[7:9], row[9:11] = out, window, steps, lo
            row[11] = int(layer.padding == "CIRCULAR")
            if isinstance(layer, AvgPool):
                row[12] = int(layer.normalize_edges and layer.padding == "SAME")
            else:
                lb, lw = layer.learning_rate_factors(layer.fan_in(channels))
                f = [layer.C_W, layer.C_b, lb, lw]
                channels = layer.out_chan
            shape = out
        elif isinstance(layer, Dense):
            lb, lw = layer.learning_rate_factors(channels)
            row[0], f = DENSE, [layer.C_W, layer.C_b, lb, lw]
            row[3:5] = shape
            channels = layer.out_dim
        elif isinstance(layer, Elementwise):
            kern = activation_kernels(layer.activation)
            if _numeric(layer, kern, path):
                row[15] = len(slots)
                slots.append((acts, layer, where(path)))
            found.setdefault(_activation_key(layer), layer)
            row[0], row[13] = ACT, acts
            row[3:5] = shape
            acts += 1
        elif isinstance(layer, (GlobalAvgPool, Flatten)):
            if not spatial:
                if isinstance(layer, Flatten):
                    continue
                raise NotCompilableConv(f"{layer!r} at {where(path)} acts on a vector")
            row[0] = GLOBAL if isinstance(layer, GlobalAvgPool) else FLATTEN
            if isinstance(layer, Flatten):
                channels *= shape[0] * shape[1]
            shape, spatial = (1, 1), False
            row[3:5] = shape
        else:
            raise NotCompilableConv(f"{layer!r} at {where(path)}: the compiled convolutional kernel evaluates serial "
                                    "chains of Conv, Dense, activations, AvgPool, GlobalAvgPool and Flatten")
        ints.append((row, layer))
        floats.append(f)
    codes = {key: (c, found[key]) for c, key in enumerate(sorted(found))}
    rows = []
    for row, layer in ints:
        if row[0] == ACT:
            row[14] = codes[_activation_key(layer)][0]
        rows.append(row)
    return (np.array(rows, dtype=np.int64).reshape(-1, _INTS), np.array(floats, dtype=np.float64).reshape(-1, 4),
            acts, codes, slots)


# ---------------------------------------------------------------------- steps (activation-independent)
@numba.njit(cache=True, error_model="numpy")
def window_sums(K, K2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap):
    """K2(o, o') = sum over the taps q of K(s o + q - lo, s o' + q - lo) (taps outside dropped or wrapped)."""
    P, Po = H * W, Ho * Wo
    for i in range(Po * Po):
        K2[i] = 0.0
    if sh == 1 and sw == 1 and not wrap and Ho == H and Wo == W:
        # same grid: the tap (dh, dw) reads the second position at flat offset dh W + dw, so each output row
        # is fh fw contiguous multiply-adds over all P second positions, with a 0/1 mask dropping the
        # columns that leave the image (x * 0.0 + y = y for finite x: the same sums as the general path)
        mask = np.zeros(fw * P)
        for qw in range(fw):
            for o2 in range(P):
                w2 = o2 % W + qw - low
                if 0 <= w2 < W:
                    mask[qw * P + o2] = 1.0
        for a1 in range(H):
            for b1 in range(W):
                d0 = (a1 * W + b1) * P
                for qh in range(fh):
                    dh = qh - loh
                    h1 = a1 + dh
                    if h1 < 0 or h1 >= H:
                        continue
                    start = max(0, -dh) * W
                    stop = min(H, H - dh) * W
                    for qw in range(fw):
                        dw = qw - low
                        w1 = b1 + dw
                        if w1 < 0 or w1 >= W:
                            continue
                        off = dh * W + dw
                        s0 = (h1 * W + w1) * P + off
                        m0 = qw * P
                        lo_ = max(start, -off)
                        hi_ = min(stop, P - off)
                        if hi_ > lo_:
                            # unsigned indices: no negative-index wraparound test, so the loop vectorises
                            du, su, mu = np.uint64(d0 + lo_), np.uint64(s0 + lo_), np.uint64(m0 + lo_)
                            for i in range(np.uint64(hi_ - lo_)):
                                K2[du + i] += K[su + i] * mask[mu + i]
        return
    # general grid: the window walk written out per position on purpose (hot loop, see conv_same_positions)
    for a1 in range(Ho):
        for b1 in range(Wo):
            ob = (a1 * Wo + b1) * Po
            for qh in range(fh):
                h1 = sh * a1 + qh - loh
                if wrap:
                    h1 = h1 % H
                elif h1 < 0 or h1 >= H:
                    continue
                for qw in range(fw):
                    w1 = sw * b1 + qw - low
                    if wrap:
                        w1 = w1 % W
                    elif w1 < 0 or w1 >= W:
                        continue
                    rb = (h1 * W + w1) * P
                    if sw == 1 and not wrap:
                        lo_ = max(0, low - qw)
                        hi_ = min(Wo, W + low - qw)
                        for a2 in range(Ho):
                            h2 = sh * a2 + qh - loh
                            if h2 < 0 or h2 >= H:
                                continue
                            src = K[rb + h2 * W + qw - low:]
                            dst = K2[ob + a2 * Wo:]
                            for b2 in range(lo_, hi_):
                                dst[b2] += src[b2]
                    else:
                        for a2 in range(Ho):
                            h2 = sh * a2 + qh - loh
                            if wrap:
                                h2 = h2 % H
                            elif h2 < 0 or h2 >= H:
                                continue
                            hb = rb + h2 * W
                            o2 = ob + a2 * Wo
                            for b2 in range(Wo):
                                w2 = sw * b2 + qw - low
                                if wrap:
                                    w2 = w2 % W
                                elif w2 < 0 or w2 >= W:
                                    continue
                                K2[o2 + b2] += K[hb + w2]


@numba.njit(cache=True, error_model="numpy")
def conv_full(K, T, K2, T2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap, cw, cb, lb, lw):
    window_sums(K, K2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap)
    window_sums(T, T2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap)
    inv = 1.0 / (fh * fw)
    for i in range(Ho * Wo * Ho * Wo):
        mk = K2[i] * inv
        K2[i] = cb + cw * mk
        T2[i] = lb + lw * mk + cw * inv * T2[i]


# The window walk (offsets, padding, wrap) is written out in window_sums, conv_same_positions and pool_full on
# purpose: these are the per-entry hot loops, and a shared helper returning index lists would allocate per entry.
@numba.njit(cache=True, error_model="numpy")
def conv_same_positions(K, T, K2, T2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap, cw, cb, lb, lw):
    inv = 1.0 / (fh * fw)
    for a in range(Ho):
        for b in range(Wo):
            sk = 0.0
            st = 0.0
            for qh in range(fh):
                h = sh * a + qh - loh
                if wrap:
                    h = h % H
                elif h < 0 or h >= H:
                    continue
                for qw in range(fw):
                    w = sw * b + qw - low
                    if wrap:
                        w = w % W
                    elif w < 0 or w >= W:
                        continue
                    sk += K[h * W + w]
                    st += T[h * W + w]
            mk = sk * inv
            K2[a * Wo + b] = cb + cw * mk
            T2[a * Wo + b] = lb + lw * mk + cw * st * inv


@numba.njit(cache=True)
def count(a, b, H, W, fh, fw, sh, sw, loh, low):
    n = 0
    for qh in range(fh):
        h = sh * a + qh - loh
        if 0 <= h < H:
            for qw in range(fw):
                w = sw * b + qw - low
                if 0 <= w < W:
                    n += 1
    return float(n)


@numba.njit(cache=True, error_model="numpy")
def pool_full(K, T, K2, T2, S1, S2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap, norm):
    P, Po = H * W, Ho * Wo
    # first position: S[o1, p2] = sum over the window of o1 (window walk written out on purpose: hot loop)
    for a1 in range(Ho):
        for b1 in range(Wo):
            o1 = a1 * Wo + b1
            for p2 in range(P):
                S1[o1 * P + p2] = 0.0
                S2[o1 * P + p2] = 0.0
            for qh in range(fh):
                h = sh * a1 + qh - loh
                if wrap:
                    h = h % H
                elif h < 0 or h >= H:
                    continue
                for qw in range(fw):
                    w = sw * b1 + qw - low
                    if wrap:
                        w = w % W
                    elif w < 0 or w >= W:
                        continue
                    base = (h * W + w) * P
                    for p2 in range(P):
                        S1[o1 * P + p2] += K[base + p2]
                        S2[o1 * P + p2] += T[base + p2]
    # second position, and the normalisation (window walk written out on purpose: hot loop, see conv_same_positions)
    for o1 in range(Po):
        for a2 in range(Ho):
            for b2 in range(Wo):
                sk = 0.0
                st = 0.0
                for qh in range(fh):
                    h = sh * a2 + qh - loh
                    if wrap:
                        h = h % H
                    elif h < 0 or h >= H:
                        continue
                    for qw in range(fw):
                        w = sw * b2 + qw - low
                        if wrap:
                            w = w % W
                        elif w < 0 or w >= W:
                            continue
                        sk += S1[o1 * P + h * W + w]
                        st += S2[o1 * P + h * W + w]
                o2 = a2 * Wo + b2
                if norm:
                    n = count(o1 // Wo, o1 % Wo, H, W, fh, fw, sh, sw, loh, low) \
                        * count(a2, b2, H, W, fh, fw, sh, sw, loh, low)
                else:
                    n = float(fh * fw) ** 2
                K2[o1 * Po + o2] = sk / n
                T2[o1 * Po + o2] = st / n


@numba.njit(cache=True)
def gram(x, y, K, full):
    P, C = x.shape
    if not full:
        for p in range(P):
            s = 0.0
            for c in range(C):
                s += x[p, c] * y[p, c]
            K[p] = s / C
        return
    for p in range(P):
        for q in range(P):
            s = 0.0
            for c in range(C):
                s += x[p, c] * y[q, c]
            K[p * P + q] = s / C


@numba.njit(cache=True)
def equal(x, y):
    """Whether two (P, C) inputs are equal entry by entry."""
    for p in range(x.shape[0]):
        for c in range(x.shape[1]):
            if x[p, c] != y[p, c]:
                return False
    return True


#: largest truncation bound of a Mehler series (relative to sqrt(E F(u)^2 E F(v)^2)) the kernel accepts; entries
#: beyond it raise :class:`SeriesTooShort`
TRUNCATION_LIMIT = 1e-11


@numba.njit(cache=True, error_model="numpy")
def mehler_entry(q, i, j, k11, k22, k12, HA, TA, SA, HB, TB, SB, ltol, tol, acc):
    """(T, Tdot) = (E[F(u) F(v)], E[F'(u) F'(v)]) at (u, v) ~ N(0, [[k11, k12], [k12, k22]]), |k12| <= sqrt(k11 k22),
    by Mehler's series sum_n a_n b_n rho^n on table pair q (coefficients H[2q] of F, H[2q + 1] of F') at row i
    of the A tables and row j of the B tables (half log relative tails T, [sqrt(E F^2), l2 coefficient error] S).

    Degree: the smallest m whose Parseval bound |rho|^(m+1) sqrt(A_m B_m) is below ``tol`` (relative to
    sqrt(E F(u)^2 E F(v)^2)), for F and F' (:func:`ntk_theory.numerics.mehler.order_from_log_tails`); if the
    tables end first, the whole table, with the bound at its last degree added to the estimate, and the entry
    counted in acc[1] if that bound exceeds :data:`TRUNCATION_LIMIT`.  Estimate (the largest goes to acc[0]):
    the truncation bounds times sqrt(E F(u)^2 E F(v)^2), plus err_a sqrt(E F(v)^2) + err_b sqrt(E F(u)^2)
    (Cauchy-Schwarz), for F and F'."""
    rho, lr, m, m2 = mehler_orders(q, i, j, k11, k22, k12, TA, TB, ltol)
    s = 2 * q
    d = 2 * q + 1
    ns = SA[s, i, 0] * SB[s, j, 0]
    nd = SA[d, i, 0] * SB[d, j, 0]
    e = (tol * (ns + nd) + SA[s, i, 1] * SB[s, j, 0] + SB[s, j, 1] * SA[s, i, 0]
         + SA[d, i, 1] * SB[d, j, 0] + SB[d, j, 1] * SA[d, i, 0])
    if m < 0 or m2 < 0:
        M = HA.shape[2] - 1
        bs = math.exp((M + 1) * lr + TA[s, i, M] + TB[s, j, M])
        bd = math.exp((M + 1) * lr + TA[d, i, M] + TB[d, j, M])
        if max(bs, bd) > TRUNCATION_LIMIT:
            acc[1] += 1.0
        e += bs * ns + bd * nd
        m = M
        m2 = M
    T, Td = mehler_pair(HA[s, i], HB[s, j], HA[d, i], HB[d, j], rho, max(m, m2))
    acc[0] = max(acc[0], e)
    return T, Td


# ---------------------------------------------------------------------- generated source
def _cse_body(exprs, names):
    replacements, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("t"), optimizations="basic")
    body = [f"{sym} = {numba_code(val)}" for sym, val in replacements]
    body += [f"{n} = {numba_code(e)}" for n, e in zip(names, reduced)]
    return body


def _activation_source(code: int, layer: Elementwise) -> str:
    """``pair_<code>(k11, k22, k12) -> (T, Tdot)`` and ``diag_<code>(k) -> (T, Tdot)`` of one activation with
    closed forms; without them, ``s_<code>``, ``ds_<code>`` (F and F', compiled) and ``KINKS_<code>``, of
    which the driver computes Hermite tables (the entries are :func:`mehler_entry` on them)."""
    kern = activation_kernels(layer.activation)
    if _numeric(layer, kern, ()):
        return _numeric_source(code, kern)
    body = _cse_body((stable_form(kern.T.expr), stable_form(kern.Tdot.expr)), ("T", "Tdot"))
    alpha = kern.homogeneity
    if alpha is not None:
        # T(c K) = c^alpha T(K), Tdot(c K) = c^(alpha - 1) Tdot(K): evaluate at unit scale c = sqrt(k11 k22)
        body = ["c = math.sqrt(k11) * math.sqrt(k22)", "if c > 0.0:", "    k11 = k11 / c", "    k22 = k22 / c",
                "    k12 = k12 / c", "else:", "    c = 1.0"] + body
        body += [f"T = T * {_power('c', alpha)}", f"Tdot = Tdot * {_power('c', alpha - 1)}"]
    diag = _cse_body((stable_form(sp.sympify(kern.T_diag.expr)), stable_form(sp.sympify(kern.Tdot_diag.expr))),
                     ("T", "Tdot"))
    head = "@numba.njit(inline='always', cache=True, error_model='numpy')\n"
    return (f"# {layer!r}: T = {sp.sstr(kern.T.expr)[:200]}\n"
            + head + "def pair_" + str(code) + "(k11, k22, k12):\n"
            + textwrap.indent("\n".join(body + ["return T, Tdot"]), "    ") + "\n\n\n"
            + head + "def diag_" + str(code) + "(k):\n"
            + textwrap.indent("\n".join(diag + ["return T + 0.0 * k, Tdot + 0.0 * k"]), "    ") + "\n")


_ACT_BRANCH = """\
if code == {c}:
    if not full:
        for p in range(P):
            if same:
                t, td = diag_{c}(da[p])
            else:
                lim = sa[p] * sb[p]
                t, td = pair_{c}(da[p], db[p], min(max(K[p], -lim), lim))
            K[p] = t
            T[p] = td * T[p]
        return
    if same:
        for p in range(P):
            keep[p] = T[p * P + p]
    Pu = np.uint64(P)
    for p in range(Pu):
        a = da[p]
        s = sa[p]
        base = p * Pu
        for q in range(Pu):
            lim = s * sb[q]
            c = min(max(K[base + q], -lim), lim)
            t, td = pair_{c}(a, db[q], c)
            K[base + q] = t
            T[base + q] = td * T[base + q]
    if same:
        for p in range(P):
            t, td = diag_{c}(da[p])
            K[p * P + p] = t
            T[p * P + p] = td * keep[p]
    return
"""

# an activation without closed form: the same-position entries of one input with itself are the norms of its
# tables (E[F(u)^2], E[F'(u)^2]); every other entry is Mehler's series on the tables of its two positions
_NUM_BRANCH = """\
if code == {c}:
    ra = ia * P
    rb = ib * P
    # the diagonal-only pass and the all-pairs pass stay two loops on purpose: hot loop, no index mapping inside
    if not full:
        for p in range(P):
            if same:
                K[p] = NA[2 * tq, ra + p]
                T[p] = NA[2 * tq + 1, ra + p] * T[p]
            else:
                lim = sa[p] * sb[p]
                t, td = mehler_entry(tq, ra + p, rb + p, da[p], db[p], min(max(K[p], -lim), lim),
                                     HA, TA, SA, HB, TB, SB, ltol, tol, acc)
                K[p] = t
                T[p] = td * T[p]
        return
    for p in range(P):
        for q in range(P):
            o = p * P + q
            if same and p == q:
                K[o] = NA[2 * tq, ra + p]
                T[o] = NA[2 * tq + 1, ra + p] * T[o]
                continue
            lim = sa[p] * sb[q]
            t, td = mehler_entry(tq, ra + p, rb + q, da[p], db[q], min(max(K[o], -lim), lim),
                                 HA, TA, SA, HB, TB, SB, ltol, tol, acc)
            K[o] = t
            T[o] = td * T[o]
    return
"""

#: modules the generated code imports (their source is part of the cache key: Numba's cache does not notice
#: changes of imported functions)
_RUNTIME = ("codegen/runtime.py", "codegen/convolution.py", "numerics/compensated.py", "numerics/compensated_numba.py",
            "numerics/mehler.py")


def _runtime_fingerprint() -> str:
    root = Path(__file__).resolve().parent.parent
    return "".join(hashlib.sha256((root / name).read_bytes()).hexdigest() for name in _RUNTIME)


_MODULES: dict = {}
_SHARED: list = []


def share(*activations) -> None:
    """Compile one module for these activations (``Elementwise`` layers, e.g. ``stax.Tanh()``) and use it for
    every chain whose activations are among them (within this process): one cold compile instead of one per
    set of activations.  Several shared sets may be registered; a chain takes the smallest that contains its
    activations, else its own module."""
    found = {}
    for act in activations:
        layer = getattr(act, "description", act)
        if not isinstance(layer, Elementwise):
            raise TypeError(f"share() takes activation layers (Elementwise); got {act!r}")
        found[_activation_key(layer)] = layer
    if found and found not in _SHARED:
        _SHARED.append(found)


def module_for(codes: dict):
    """(module, its codes {key: (code, layer)}) for a chain's activations ``codes`` (as :func:`plan` returns):
    the smallest shared set (:func:`share`) that contains them, else their own."""
    fits = [s for s in _SHARED if set(codes) <= set(s)]
    if fits:
        best = min(fits, key=len)
        codes = {key: (c, best[key]) for c, key in enumerate(sorted(best))}
    return compiled_module(codes), codes


def compiled_module(codes: dict):
    """The generated module for the activations ``codes`` ({key: (code, layer)}, as :func:`plan` returns)."""
    key = tuple(sorted(codes))
    if key in _MODULES:
        return _MODULES[key]
    parts, branches, tables = [], [], False
    for name, (c, layer) in sorted(codes.items(), key=lambda kv: kv[1][0]):
        parts.append(_activation_source(c, layer))
        numeric = _numeric(layer, activation_kernels(layer.activation), ())
        tables = tables or numeric
        branches.append((_NUM_BRANCH if numeric else _ACT_BRANCH).replace("{c}", str(c)))
    dispatch = "\n".join(branches) if branches else "pass\n"
    header = ("# Generated by ntk_theory.codegen.convolution. Do not edit: regenerate instead.\n"
              "import math\n\nimport numba\nimport numpy as np\n\n"
              f"#: whether chain, selves and pairs take the Hermite tables' arguments\nTABLES = {tables}\n\n"
              "from ntk_theory.codegen.runtime import atan2, erfcx\n"
              "from ntk_theory.codegen.convolution import conv_full, conv_same_positions, equal, gram, "
              "mehler_entry, pool_full\n"
              "from ntk_theory.numerics.compensated_numba import det2\n")
    act = ("@numba.njit(cache=True, error_model='numpy')\n"
           "def activate(code, K, T, P, full, da, sa, db, sb, same,\n"
           "             tq, ia, ib, HA, TA, SA, NA, HB, TB, SB, NB, ltol, tol, acc,  # tables\n"
           "             ):\n"
           "    \"\"\"In place: K[p * P + q] (``full``) or K[p] (same positions) and T; ``same``: one input with itself;\n"
           "    activations without closed form: table slot ``tq``, inputs ``ia``, ``ib`` (rows ia P + p of the tables).\"\"\"\n"
           "    keep = np.empty(P if same else 1)\n"
           + textwrap.indent(dispatch, "    "))
    source = _table_lines(header + "\n\n" + "\n\n".join(parts) + "\n\n" + act + "\n\n" + _CHAIN, tables)
    digest = hashlib.sha256((FORMAT_VERSION + _runtime_fingerprint() + source).encode()).hexdigest()[:20]
    module = modules.import_module("conv_" + digest, source)
    _MODULES[key] = module
    return module


def _table_lines(source: str, tables: bool) -> str:
    """``source`` with its lines marked ``# tables`` (the Hermite tables' arguments and their uses) kept when
    ``tables``, else dropped: a module whose activations all have closed forms passes no table arguments
    through ``pairs -> chain -> activate`` (each argument of a non-inlined call costs per pixel pair)."""
    if tables:
        return source
    return "".join(line for line in source.splitlines(keepends=True) if not line.rstrip().endswith("# tables"))


# Lines ending in "# tables" exist only in modules with an activation without closed form (_table_lines).
_CHAIN = r'''
DENSE, CONV, ACT, POOL, GLOBAL, FLATTEN = range(6)


@numba.njit(cache=True, error_model="numpy")
def chain(K, T, K2, T2, S1, S2, ints, floats, d1, s1, d2, s2, same, record, full,
          ia, ib, HA, TA, SA, NA, HB, TB, SB, NB, tol, acc, stop,  # tables
          ok, ot):
    """Run the steps on the cross covariance K and NTK T (flat, P x P when ``full``, else the P same-position
    entries) of inputs ia, ib; writes the output's nngp and ntk into ``ok``, ``ot`` (one entry for a vector
    output, the P' x P' position pairs, flat, for an output with spatial axes).  ``record``: the self chain of
    one input, writing its per-position variances (and their square roots) before each activation into d1, s1
    (= d2, s2); with ``stop`` >= 0 it returns at the activation of table slot ``stop``, after recording its
    variances (``ok``, ``ot`` untouched).  Activations without closed form read the Hermite tables HA.. (rows:
    ia), HB.. (rows: ib)."""
    ltol = math.log(tol)  # tables
    for step in range(ints.shape[0]):
        code, H, W, Ho, Wo = ints[step, 0], ints[step, 1], ints[step, 2], ints[step, 3], ints[step, 4]
        P = H * W
        cw, cb, lb, lw = floats[step, 0], floats[step, 1], floats[step, 2], floats[step, 3]
        fh, fw, sh, sw = ints[step, 5], ints[step, 6], ints[step, 7], ints[step, 8]
        loh, low, wrap, norm = ints[step, 9], ints[step, 10], ints[step, 11] != 0, ints[step, 12] != 0
        if code == ACT:
            a_ = ints[step, 13]
            if record:
                for p in range(P):
                    v = K[p * P + p] if full else K[p]
                    d1[a_, p] = v
                    s1[a_, p] = math.sqrt(v)
                if stop >= 0 and ints[step, 15] == stop:  # tables
                    return  # tables
            activate(ints[step, 14], K, T, P, full, d1[a_], s1[a_], d2[a_], s2[a_], same,
                     ints[step, 15], ia, ib, HA, TA, SA, NA, HB, TB, SB, NB, ltol, tol, acc,  # tables
                     )
            continue
        m = P * P if full else P
        if code == DENSE:
            for o in range(m):
                kk = K[o]
                K[o] = cb + cw * kk
                T[o] = lb + lw * kk + cw * T[o]
            continue
        if code == CONV:
            if full:
                conv_full(K, T, K2, T2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap, cw, cb, lb, lw)
            else:
                conv_same_positions(K, T, K2, T2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap, cw, cb, lb, lw)
        elif code == POOL:
            pool_full(K, T, K2, T2, S1, S2, H, W, Ho, Wo, fh, fw, sh, sw, loh, low, wrap, norm)
        else:  # GLOBAL, FLATTEN
            sk = 0.0
            st = 0.0
            if code == GLOBAL:
                for o in range(P * P):
                    sk += K[o]
                    st += T[o]
                n = float(P * P)
            else:
                for p in range(P):
                    o = p * P + p if full else p
                    sk += K[o]
                    st += T[o]
                n = float(P)
            K2[0] = sk / n
            T2[0] = st / n
        K, K2 = K2, K
        T, T2 = T2, T
    for o in range(ok.shape[0]):
        ok[o] = K[o]
        ot[o] = T[o]


@numba.njit(parallel=True, cache=True)
def selves(X, ints, floats, var, sd, out, full, m,
           HA, TA, SA, NA, tol, acc, stop,  # tables
           ):
    """Each input with itself: its variances before each activation (var[i], sd[i] = sqrt) and its output
    (up to the activation of table slot ``stop`` if ``stop`` >= 0); acc[i]: (largest error estimate, number of
    quadratures) of activations without closed form."""
    n, P = X.shape[0], X.shape[1]
    for i in numba.prange(n):
        K, T = np.empty(m), np.zeros(m)
        K2, T2, S1, S2 = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
        gram(X[i], X[i], K, full)
        chain(K, T, K2, T2, S1, S2, ints, floats, var[i], sd[i], var[i], sd[i], True, True, full,
              i, i, HA, TA, SA, NA, HA, TA, SA, NA, tol, acc[i], stop,  # tables
              out[i, 0], out[i, 1])


@numba.njit(parallel=True, cache=True)
def pairs(X1, X2, row0, row1, ints, floats, var1, sd1, var2, sd2, symmetric, nngp, ntk, full, m, blocks,
          HA, TA, SA, NA, HB, TB, SB, NB, tol, acc,  # tables
          ):
    """Pairs (a, b), a in [row0, row1) (b < a only when ``symmetric``), on their cross covariance, into
    nngp[a - row0, b], ntk[a - row0, b] (the output's entries along the last axis); ``blocks`` blocks of consecutive pairs, one buffer set per block;
    acc[block]: (largest error estimate, number of quadratures) of activations without closed form."""
    n2 = X2.shape[0]
    first = row0 * (row0 - 1) // 2 if symmetric else 0
    total = (row1 * (row1 - 1) // 2 - first) if symmetric else (row1 - row0) * n2
    for blk in numba.prange(blocks):
        lo = blk * total // blocks
        hi = (blk + 1) * total // blocks
        K, T = np.empty(m), np.empty(m)
        K2, T2, S1, S2 = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
        for kk in range(lo, hi):
            if symmetric:
                k = kk + first
                a = int((1 + math.sqrt(1 + 8 * k)) / 2)
                while a * (a - 1) // 2 > k:
                    a -= 1
                while (a + 1) * a // 2 <= k:
                    a += 1
                b = k - a * (a - 1) // 2
            else:
                a, b = row0 + kk // n2, kk % n2
            if equal(X1[a], X2[b]):  # the same input: its own output, written by the driver
                for o in range(nngp.shape[2]):
                    nngp[a - row0, b, o], ntk[a - row0, b, o] = 0.0, 0.0
                continue
            for i in range(m):
                T[i] = 0.0
            gram(X1[a], X2[b], K, full)
            chain(K, T, K2, T2, S1, S2, ints, floats, var1[a], sd1[a], var2[b], sd2[b], False, False, full,
                  a, b, HA, TA, SA, NA, HB, TB, SB, NB, tol, acc[blk], -1,  # tables
                  nngp[a - row0, b], ntk[a - row0, b])
'''


# ---------------------------------------------------------------------- driver
def _equal_row_pairs(F1, F2):
    """Index arrays (a, b) of rows of F1 equal to rows of F2 (bytes-hashed; memory O(N1 + N2))."""
    index = {}
    for b, row in enumerate(F2):
        index.setdefault(row.tobytes(), []).append(b)
    ia, ib = [], []
    for a, row in enumerate(F1):
        for b in index.get(row.tobytes(), ()):
            ia.append(a)
            ib.append(b)
    return np.array(ia, dtype=np.int64), np.array(ib, dtype=np.int64)


def _outputs(out, shape):
    if out is None:
        return np.empty(shape), np.empty(shape)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError("out must be a pair of arrays (nngp, ntk)")
    for o in out:
        if not isinstance(o, np.ndarray) or o.shape != shape or o.dtype not in (np.float64, np.float32):
            raise ValueError(f"out arrays must be float64 or float32 arrays of shape {shape}; got "
                             f"{getattr(o, 'shape', type(o))} {getattr(o, 'dtype', '')}")
    return out


def _hermite_tables(module, code: int, variances, max_order: int, tol: float):
    """Hermite tables of F and F' (activation ``code`` of ``module``) at ``variances``, computed once per distinct
    variance (:func:`ntk_theory.numerics.hermite_numba.coefficients`): per function the coefficients, half log
    relative tails, [sqrt(E F^2), l2 error of the coefficients] and E F^2."""
    from ..numerics import hermite_numba

    unique, inverse = np.unique(variances, return_inverse=True)
    kinks = tuple(getattr(module, f"KINKS_{code}"))
    out = []
    for fn in (getattr(module, f"s_{code}"), getattr(module, f"ds_{code}")):
        tab = hermite_numba.coefficients(fn, unique, kinks=kinks, max_order=max_order, tol=tol)
        with np.errstate(divide="ignore"):
            half_log_tail = 0.5 * np.log(tab.tail)
        out.append((tab.coef[inverse], half_log_tail[inverse], np.sqrt(tab.norm2)[inverse], tab.error[inverse],
                    tab.norm2[inverse]))
    return out


def _short(accs, slots, max_order):
    """:class:`SeriesTooShort` if an entry's series was cut above :data:`TRUNCATION_LIMIT` (counts in acc[:, 1])."""
    short = int(sum(float(np.sum(a[:, 1])) for a in accs))
    if short:
        names = ", ".join(sorted({f"{layer!r} at {place}" for _, layer, place in slots}))
        raise SeriesTooShort(f"{names}: {short} pixel-pair expectations need Mehler series beyond degree "
                             f"{max_order} (truncation bound above {TRUNCATION_LIMIT:g} relative); pass a larger "
                             "max_order, or evaluate with the NumPy interpreter")


def _self_chains(mod, F, ints, floats, acts, codes, slots, full, m, P, mo, tol, max_order, errors):
    """Each input of F with itself: (variances, their square roots, outputs (n, 2, ``mo``), Hermite tables,
    accumulators).

    Without activations of no closed form one compiled pass (with no table arguments if the module has none:
    ``mod.TABLES`` false; the tables returned are then empty).  With them, the Hermite tables of each such
    activation need the variances before it, which need the tables of the earlier ones: the pass runs up to
    the activation of slot t, its tables are computed at the recorded variances (rows i P + p: input i,
    position p), and the next pass runs from the start with slots 0..t filled."""
    n = len(F)
    var, sd = np.zeros((n, max(acts, 1), P)), np.zeros((n, max(acts, 1), P))
    out, acc = np.empty((n, 2, mo)), np.zeros((n, 2))
    L = len(slots)
    width = max_order + 1 if L else 1
    H, Tl = np.zeros((2 * L, n * P if L else 1, width)), np.zeros((2 * L, n * P if L else 1, width))
    S, NN = np.zeros((2 * L, n * P if L else 1, 2)), np.zeros((2 * L, n * P if L else 1))
    tables = (H, Tl, S, NN)
    if not mod.TABLES:
        mod.selves(F, ints, floats, var, sd, out, full, m)
        return var, sd, out, (), acc
    for t, (a_, layer, place) in enumerate(slots):
        mod.selves(F, ints, floats, var, sd, out, full, m, *tables, tol, acc, t)
        step = int(np.nonzero((ints[:, 0] == ACT) & (ints[:, 13] == a_))[0][0])
        v = np.ascontiguousarray(var[:, a_, :ints[step, 3] * ints[step, 4]]).ravel()  # rows i P_t + p
        kern = activation_kernels(layer.activation)
        kern.check_variances(v, place)
        for half, (coef, tail, root, err, norm) in enumerate(
                _hermite_tables(mod, codes[_activation_key(layer)][0], v, max_order, tol)):
            r = len(v)
            H[2 * t + half, :r], Tl[2 * t + half, :r], NN[2 * t + half, :r] = coef, tail, norm
            S[2 * t + half, :r, 0], S[2 * t + half, :r, 1] = root, err
            # E F^2 (and E F'^2) from the tables: off by at most 2 sqrt(E F^2) err (Cauchy-Schwarz)
            errors.append(float(np.max(2 * root * err, initial=0.0)))
    acc[:] = 0.0  # the last pass evaluates every entry once
    mod.selves(F, ints, floats, var, sd, out, full, m, *tables, tol, acc, -1)
    return var, sd, out, tables, acc


#: the tables' largest degrees tried in turn when ``max_order`` is not given
MAX_ORDERS = (256, 1024)


def kernel(description: Layer, X1, X2=None, get=("nngp", "ntk"), out=None, tile_mb: float = 64.0,
           tol: float = 1e-15, max_order: int | None = None, diagonal_spatial: bool = False) -> KernelResult:
    """NNGP and NTK of a serial convolutional description at images X1 (N1, *S, C), X2 (default X1), compiled
    (module docstring); :class:`NotCompilableConv` for descriptions outside its scope.

    The kernels are (N1, N2), or in neural-tangents' layout (N1, N2, H, H', W, W') (its order of the spatial
    dimensions) for an output with spatial axes, as :func:`ntk_theory.recursions.graph.kernel`'s; with
    ``diagonal_spatial=True`` the same positions only, (N1, N2, H, W) (refused for descriptions that pool).
    ``out=(nngp, ntk)``: given arrays of that shape to write into (memory maps too); the pairs are computed in
    row tiles of at most ``tile_mb`` megabytes of float64 buffers, then copied into ``out``, so the temporaries
    beyond the output are bounded by ``tile_mb`` plus 6 P^2 floats per thread (and, for activations without
    closed form, the Hermite tables: 32 (max_order + 1) L (N1 + N2) P bytes for L such activation layers).
    ``tol``: the truncation tolerance of Mehler's series (relative, as in :mod:`ntk_theory.codegen.graph`),
    ``max_order``: the tables' largest degree (:class:`SeriesTooShort` if a series needs more; default: the
    degrees of :data:`MAX_ORDERS` in turn, the next one only if a series needs it).
    ``info["quadrature_error"]``: the largest error estimate of one numerical expectation (0 for closed forms)."""
    get = check_get(get)
    description = getattr(description, "description", description)
    X1, spatial = image_inputs(X1, "X1")
    X2v = X1 if X2 is None else image_inputs(X2, "X2", like=X1)[0]
    if not spatial:
        raise ValueError(f"X1 must be images (N, W, C) or (N, H, W, C); got shape {X1.shape}")
    if not tile_mb > 0:
        raise ValueError(f"tile_mb must be positive; got {tile_mb}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1); got {tol!r}")
    if max_order is not None and (isinstance(max_order, bool) or not isinstance(max_order, (int, np.integer))
                                  or max_order < 1):
        raise ValueError(f"max_order must be an integer >= 1; got {max_order!r}")
    orders = MAX_ORDERS if max_order is None else (int(max_order),)
    for n, order in enumerate(orders):
        try:
            return _kernel(description, X1, X2, X2v, spatial, get, out, tile_mb, tol, order, diagonal_spatial)
        except SeriesTooShort:
            if n == len(orders) - 1:
                raise


def _kernel(description, X1, X2, X2v, spatial, get, out, tile_mb, tol, max_order, diagonal_spatial):
    ints, floats, acts, own, slots = plan(description, spatial, X1.shape[-1])
    mod, codes = module_for(own)
    renumber = {c: codes[key][0] for key, (c, _) in own.items()}
    act_rows = ints[:, 0] == ACT
    ints[act_rows, 14] = [renumber[int(c)] for c in ints[act_rows, 14]]
    out_shape, reversed_ = output_spatial(description, spatial)
    pools = bool(np.any((ints[:, 0] == POOL) | (ints[:, 0] == GLOBAL)))
    if diagonal_spatial not in (True, False):
        raise ValueError(f"diagonal_spatial must be True or False; got {diagonal_spatial!r}")
    if diagonal_spatial and pools:
        raise ValueError("diagonal_spatial=True keeps same positions only, but the description averages over "
                         "positions (AvgPool, GlobalAvgPool), which needs every pair of positions; use "
                         "diagonal_spatial=False")
    full = not diagonal_spatial and (bool(out_shape) or pools)
    P = math.prod(spatial)
    m = P * P if full else P
    Po = math.prod(out_shape)
    mo = Po**2 if full else Po  # the output's entries per pair of inputs (1 for a vector output)
    symmetric = X2 is None
    F1 = np.ascontiguousarray(X1.reshape(len(X1), P, -1))
    F2 = F1 if symmetric else np.ascontiguousarray(X2v.reshape(len(X2v), P, -1))
    N1, N2 = len(F1), len(F2)

    def layout(A):  # (rows, cols, P' P') -> (rows, cols) or neural-tangents' layout (rows, cols, H, H', W, W')
        if not out_shape:
            return A.reshape(A.shape[:2])
        if not full:  # same positions: (rows, cols, H, W)
            return A.reshape(A.shape[:2] + out_shape)
        return neural_tangents_order(A.reshape(A.shape[:2] + out_shape * 2), 2, len(out_shape), reversed_)

    nngp, ntk = _outputs(out, layout(np.empty((N1, N2, mo), dtype=np.uint8)).shape)
    errors: list = []
    var1, sd1, out1, tab1, acc1 = _self_chains(mod, F1, ints, floats, acts, codes, slots, full, m, P, mo, tol,
                                               int(max_order), errors)
    var2, sd2, _, tab2, acc2 = ((var1, sd1, out1, tab1, acc1) if symmetric else
                                 _self_chains(mod, F2, ints, floats, acts, codes, slots, full, m, P, mo, tol,
                                              int(max_order), errors))
    accs = [acc1] if symmetric else [acc1, acc2]
    _short(accs, slots, max_order)
    rows = max(1, min(N1, int(tile_mb * 2**20 // (16 * mo * max(N2, 1)))))
    threads = max(1, numba.get_num_threads())

    def swap(A):  # pairs (a, b) -> (b, a): the transpose over inputs and over the two positions
        if not full:
            return A.transpose(1, 0, 2)
        return A.reshape(A.shape[:2] + (Po, Po)).transpose(1, 0, 3, 2).reshape(A.shape[1], A.shape[0], mo)

    for r0 in range(0, N1, rows):
        r1 = min(N1, r0 + rows)
        cols = r1 if symmetric else N2
        tk, tt = np.zeros((r1 - r0, cols, mo)), np.zeros((r1 - r0, cols, mo))
        npairs = (r1 * (r1 - 1) - r0 * (r0 - 1)) // 2 if symmetric else (r1 - r0) * N2
        blocks = max(1, min(npairs, 16 * threads))
        acc = np.zeros((blocks, 2))
        mod.pairs(F1, F2, r0, r1, ints, floats, var1, sd1, var2, sd2, symmetric, tk, tt, full, m, blocks,
                  *((*tab1, *tab2, tol, acc) if mod.TABLES else ()))
        accs.append(acc)
        if symmetric:
            for dst, src in ((nngp, tk), (ntk, tt)):
                dst[r0:r1, :r0] = layout(src[:, :r0])
                dst[:r0, r0:r1] = layout(swap(src[:, :r0]))
                lower = src[:, r0:r1] * np.tri(r1 - r0, k=-1)[:, :, None]
                dst[r0:r1, r0:r1] = layout(lower + swap(lower))
        else:
            nngp[r0:r1], ntk[r0:r1] = layout(tk), layout(tt)
    ia, ib = _equal_row_pairs(F1.reshape(N1, -1), F2.reshape(N2, -1))
    nngp[ia, ib], ntk[ia, ib] = layout(out1[ia, 0][:, None])[:, 0], layout(out1[ia, 1][:, None])[:, 0]
    if not (np.isfinite(np.sum(nngp, dtype=np.float64)) and np.isfinite(np.sum(ntk, dtype=np.float64))):
        raise FloatingPointError("the kernel overflowed or produced NaN (variances grow without bound)")
    worst = max([float(np.max(a[:, 0], initial=0.0)) for a in accs] + errors)
    _short(accs, slots, max_order)
    return KernelResult(nngp, ntk, {"quadrature_error": worst, "evaluated_by": "ntk_theory.codegen.convolution"},
                        get=get)
