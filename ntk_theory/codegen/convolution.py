r"""Compiled (Numba) CNN-GP / CNTK of serial convolutional descriptions with pooling, float64.

The same rules as :mod:`ntk_theory.recursions.graph` in the same spatial layout (every pair of positions when
the chain pools, same positions only otherwise; :mod:`ntk_theory.recursions.spatial`), evaluated input pair
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

The activations' T and Tdot are printed as Numba source (:func:`ntk_theory.jit.numba_code`) into a generated
module with the chain above (:mod:`ntk_theory.jit.modules`, keyed by the hash of its source, which depends on
the set of activations only), so every activation with closed-form T, Tdot and diagonal forms compiles; others
(tanh) raise :class:`NotCompilableConv` naming the layer (the NumPy interpreter evaluates them).

Supported (else :class:`NotCompilableConv`, naming the layer): a serial chain of ``Conv`` (any padding,
strides, 1-D or 2-D, 'ntk' or 'standard'), ``Dense`` (per position), closed-form activations, ``AvgPool``
(any padding, ``normalize_edges``), ``GlobalAvgPool``, ``Flatten`` and, after these, ``Dense`` layers and
activations on the pooled vector.

Error model: the same closed forms as the interpreter in a different summation order and their stable
float64 forms: ~1e-14 relative to it (the arccos-type terms of correlations near 1 lose up to ~1e-12
relative in Tdot of distinct positions).  Outputs may be written into given arrays (``out=``, e.g.
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
from .emit import _power
from ..recursions.graph import image_inputs
from ..recursions.layer import activation_kernels
from ..recursions.result import KernelResult, check_get
from ..recursions.spatial import pads

DENSE, CONV, ACT, POOL, GLOBAL, FLATTEN = range(6)
# integer columns of a step: code, H_in, W_in, H_out, W_out, fh, fw, sh, sw, lo_h, lo_w, wrap, normalize,
# activation layer index (variance records), activation code (in the generated module)
_INTS = 15

FORMAT_VERSION = "1"


class NotCompilableConv(NotImplementedError):
    """The description has a layer or structure the compiled convolutional kernel does not evaluate."""


def _activation_key(layer: Elementwise) -> str:
    return sp.srepr(layer.expr)


def plan(description: Layer, image_shape: tuple, channels: int):
    """(integer steps, float steps, number of activation layers, {activation key: (code, layer)}) of
    ``description`` on images of spatial shape ``image_shape`` (1-D images as (1, W)) with ``channels``
    input channels; activation codes number the distinct activations in sorted key order."""
    shape = tuple(image_shape) if len(image_shape) == 2 else (1,) + tuple(image_shape)
    rank = len(image_shape)
    ints, floats, acts, found = [], [], 0, {}
    spatial = True
    for path, layer in leaves(description):
        row, f = [0] * _INTS, [0.0] * 4
        row[1:3] = shape
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
            if not kern.closed_form or not all(np.isfinite(float(e.expr)) if e.expr.is_number else True
                                               for e in (kern.T_diag, kern.Tdot_diag)):
                raise NotCompilableConv(f"{layer!r} at {where(path)}: its Gaussian expectations have no closed "
                                        "form; the compiled convolutional kernel needs closed forms (the NumPy "
                                        "interpreter evaluates it)")
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
    if spatial:
        raise NotCompilableConv("the network's output has spatial axes; end it with Flatten() or GlobalAvgPool()")
    codes = {key: (c, found[key]) for c, key in enumerate(sorted(found))}
    rows = []
    for row, layer in ints:
        if row[0] == ACT:
            row[14] = codes[_activation_key(layer)][0]
        rows.append(row)
    return (np.array(rows, dtype=np.int64).reshape(-1, _INTS), np.array(floats, dtype=np.float64).reshape(-1, 4),
            acts, codes)


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


# The window walk (offsets, padding, wrap) is written out in conv_same_positions and pool_full on purpose: these
# are the per-entry hot loops, and a shared helper returning index lists would allocate per entry.
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
    # first position: S[o1, p2] = sum over the window of o1
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
    # second position, and the normalisation
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


# ---------------------------------------------------------------------- generated source
def _cse_body(exprs, names):
    replacements, reduced = sp.cse(list(exprs), symbols=sp.numbered_symbols("t"), optimizations="basic")
    body = [f"{sym} = {numba_code(val)}" for sym, val in replacements]
    body += [f"{n} = {numba_code(e)}" for n, e in zip(names, reduced)]
    return body


def _activation_source(code: int, layer: Elementwise) -> str:
    """``pair_<code>(k11, k22, k12) -> (T, Tdot)`` and ``diag_<code>(k) -> (T, Tdot)`` of one activation."""
    kern = activation_kernels(layer.activation)
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

#: modules the generated code imports (their source is part of the cache key: Numba's cache does not notice
#: changes of imported functions)
_RUNTIME = ("codegen/runtime.py", "codegen/convolution.py", "numerics/compensated.py", "numerics/compensated_numba.py")


def _runtime_fingerprint() -> str:
    root = Path(__file__).resolve().parent.parent
    return "".join(hashlib.sha256((root / name).read_bytes()).hexdigest() for name in _RUNTIME)


_MODULES: dict = {}


def compiled_module(codes: dict):
    """The generated module for the activations ``codes`` ({key: (code, layer)}, as :func:`plan` returns)."""
    key = tuple(sorted(codes))
    if key in _MODULES:
        return _MODULES[key]
    parts, branches = [], []
    for name, (c, layer) in sorted(codes.items(), key=lambda kv: kv[1][0]):
        parts.append(_activation_source(c, layer))
        branches.append(_ACT_BRANCH.replace("{c}", str(c)))
    dispatch = "\n".join(branches) if branches else "pass\n"
    header = ("# Generated by ntk_theory.codegen.convolution. Do not edit: regenerate instead.\n"
              "import math\n\nimport numba\nimport numpy as np\n\n"
              "from ntk_theory.codegen.runtime import atan2, erfcx\n"
              "from ntk_theory.codegen.convolution import conv_full, conv_same_positions, gram, pool_full\n"
              "from ntk_theory.numerics.compensated_numba import det2\n")
    act = ("@numba.njit(cache=True, error_model='numpy')\n"
           "def activate(code, K, T, P, full, da, sa, db, sb, same):\n"
           "    \"\"\"In place: K[p * P + q] (``full``) or K[p] (same positions) and T; ``same``: one input with itself.\"\"\"\n"
           "    keep = np.empty(P if same else 1)\n"
           + textwrap.indent(dispatch, "    "))
    source = header + "\n\n" + "\n\n".join(parts) + "\n\n" + act + "\n\n" + _CHAIN
    digest = hashlib.sha256((FORMAT_VERSION + _runtime_fingerprint() + source).encode()).hexdigest()[:20]
    module = modules.import_module("conv_" + digest, source)
    _MODULES[key] = module
    return module


_CHAIN = r'''
DENSE, CONV, ACT, POOL, GLOBAL, FLATTEN = range(6)


@numba.njit(cache=True, error_model="numpy")
def chain(K, T, K2, T2, S1, S2, ints, floats, d1, s1, d2, s2, same, record, full):
    """Run the steps on the cross covariance K and NTK T (flat, P x P when ``full``, else the P same-position
    entries); returns (nngp, ntk) of the output.  ``record``: the self chain of one input, writing its
    per-position variances (and their square roots) before each activation into d1, s1 (= d2, s2)."""
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
            activate(ints[step, 14], K, T, P, full, d1[a_], s1[a_], d2[a_], s2[a_], same)
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
    return K[0], T[0]


@numba.njit(parallel=True, cache=True)
def selves(X, ints, floats, var, sd, out, full, m):
    """Each input with itself: its variances before each activation (var[i], sd[i] = sqrt) and its output."""
    n, P = X.shape[0], X.shape[1]
    for i in numba.prange(n):
        K, T = np.empty(m), np.zeros(m)
        K2, T2, S1, S2 = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
        gram(X[i], X[i], K, full)
        out[i, 0], out[i, 1] = chain(K, T, K2, T2, S1, S2, ints, floats, var[i], sd[i], var[i], sd[i], True, True,
                                     full)


@numba.njit(parallel=True, cache=True)
def pairs(X1, X2, row0, row1, ints, floats, var1, sd1, var2, sd2, symmetric, nngp, ntk, full, m, blocks):
    """Pairs (a, b), a in [row0, row1) (b < a only when ``symmetric``), on their cross covariance, into
    nngp[a - row0, b], ntk[a - row0, b]; ``blocks`` blocks of consecutive pairs, one buffer set per block."""
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
            for i in range(m):
                T[i] = 0.0
            gram(X1[a], X2[b], K, full)
            nngp[a - row0, b], ntk[a - row0, b] = chain(K, T, K2, T2, S1, S2, ints, floats, var1[a], sd1[a],
                                                        var2[b], sd2[b], False, False, full)
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


def kernel(description: Layer, X1, X2=None, get=("nngp", "ntk"), out=None, tile_mb: float = 64.0) -> KernelResult:
    """NNGP and NTK of a serial convolutional description at images X1 (N1, *S, C), X2 (default X1), compiled
    (module docstring); :class:`NotCompilableConv` for descriptions outside its scope.

    ``out=(nngp, ntk)``: given (N1, N2) arrays to write into (memory maps too); the pairs are computed in row
    tiles of at most ``tile_mb`` megabytes of float64 buffers, then copied into ``out``, so the temporaries
    beyond the output are bounded by ``tile_mb`` plus 6 P^2 floats per thread."""
    get = check_get(get)
    description = getattr(description, "description", description)
    X1, spatial = image_inputs(X1, "X1")
    X2v = X1 if X2 is None else image_inputs(X2, "X2", like=X1)[0]
    if not spatial:
        raise ValueError(f"X1 must be images (N, W, C) or (N, H, W, C); got shape {X1.shape}")
    if not tile_mb > 0:
        raise ValueError(f"tile_mb must be positive; got {tile_mb}")
    ints, floats, acts, codes = plan(description, spatial, X1.shape[-1])
    mod = compiled_module(codes)
    full = bool(np.any((ints[:, 0] == POOL) | (ints[:, 0] == GLOBAL)))
    P = math.prod(spatial)
    m = P * P if full else P
    symmetric = X2 is None
    F1 = np.ascontiguousarray(X1.reshape(len(X1), P, -1))
    F2 = F1 if symmetric else np.ascontiguousarray(X2v.reshape(len(X2v), P, -1))
    N1, N2 = len(F1), len(F2)
    nngp, ntk = _outputs(out, (N1, N2))

    def self_chain(F):
        var, sd, o = np.zeros((len(F), max(acts, 1), P)), np.zeros((len(F), max(acts, 1), P)), np.empty((len(F), 2))
        mod.selves(F, ints, floats, var, sd, o, full, m)
        return var, sd, o

    var1, sd1, out1 = self_chain(F1)
    var2, sd2, out2 = (var1, sd1, out1) if symmetric else self_chain(F2)
    rows = max(1, min(N1, int(tile_mb * 2**20 // (16 * max(N2, 1)))))
    threads = max(1, __import__("numba").get_num_threads())
    for r0 in range(0, N1, rows):
        r1 = min(N1, r0 + rows)
        cols = r1 if symmetric else N2
        tk, tt = np.zeros((r1 - r0, cols)), np.zeros((r1 - r0, cols))
        npairs = (r1 * (r1 - 1) - r0 * (r0 - 1)) // 2 if symmetric else (r1 - r0) * N2
        blocks = max(1, min(npairs, 16 * threads))
        mod.pairs(F1, F2, r0, r1, ints, floats, var1, sd1, var2, sd2, symmetric, tk, tt, full, m, blocks)
        if symmetric:
            for dst, src in ((nngp, tk), (ntk, tt)):
                dst[r0:r1, :r0] = src[:, :r0]
                dst[:r0, r0:r1] = src[:, :r0].T
                block = np.tril(src[:, r0:r1], -1)
                dst[r0:r1, r0:r1] = block + block.T
        else:
            nngp[r0:r1], ntk[r0:r1] = tk, tt
    ia, ib = _equal_row_pairs(F1.reshape(N1, -1), F2.reshape(N2, -1))
    nngp[ia, ib], ntk[ia, ib] = out1[ia, 0], out1[ia, 1]
    if not (np.isfinite(np.sum(nngp, dtype=np.float64)) and np.isfinite(np.sum(ntk, dtype=np.float64))):
        raise FloatingPointError("the kernel overflowed or produced NaN (variances grow without bound)")
    return KernelResult(nngp, ntk, {"quadrature_error": 0.0, "evaluated_by": "ntk_theory.codegen.convolution"},
                        get=get)
