r"""Compiled (Numba) CNN-GP / CNTK of serial convolutional descriptions with pooling, float64.

The same rules as :mod:`ntk_theory.recursions.graph` in the same spatial layout (every pair of positions when
the chain pools, same positions only otherwise; :mod:`ntk_theory.recursions.spatial`), evaluated input pair
by input pair: the output for inputs (a, b) depends only on their cross covariance K_ab[p, p'] (or K_ab[p])
and on the per-position variances of a and of b at each activation, so

1. each input runs the chain once with itself (parallel over inputs), recording its per-position variances
   before every activation and its own output (the kernel's diagonal: one-variable forms at equal
   positions, exact as in the interpreter);
2. each pair runs the chain on its (P x P) cross covariance (parallel over pairs; with X2 = None only the
   pairs a > b, mirrored), with a pair's buffers of 4 P^2 (or 2 P) floats; rows of X1 equal to rows of X2 take
   their own output.

Supported (else :class:`NotCompilableConv`, naming the layer): a serial chain of ``Conv`` (any padding,
strides, 1-D or 2-D, 'ntk' or 'standard'), ``Dense`` (per position), ``Relu()``, ``Erf()``, ``AvgPool``
(any padding, ``normalize_edges``), ``GlobalAvgPool``, ``Flatten`` and, after these, ``Dense`` layers and the
two activations on the pooled vector.  Closed forms: ReLU's arc-cosine kernel
T = sqrt(k11 k22) / (2 pi) (sin t + (pi - t) cos t), Tdot = (pi - t) / (2 pi), t = arccos(rho) (rho clipped
to [-1, 1]); erf's T = 2/pi asin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))), Tdot = 4/pi
((1 + 2 k11)(1 + 2 k22) - 4 k12^2)^(-1/2).  Agreement with the interpreter: ~1e-14 relative (the arccos of
correlations near 1 loses up to ~1e-12 relative in Tdot of distinct positions).
"""

from __future__ import annotations

import math

import numba
import numpy as np

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
from ..recursions.graph import image_inputs
from ..recursions.result import KernelResult, check_get, equal_rows
from ..recursions.spatial import pads

DENSE, CONV, RELU, ERF, POOL, GLOBAL, FLATTEN = range(7)
# integer columns of a step: code, H_in, W_in, H_out, W_out, fh, fw, sh, sw, lo_h, lo_w, wrap, normalize, act
_INTS = 14


class NotCompilableConv(NotImplementedError):
    """The description has a layer or structure the compiled convolutional kernel does not evaluate."""


def _activation_code(layer: Elementwise):
    if layer.name == "Relu" and not layer.args:
        return RELU
    if layer.name == "Erf" and tuple(float(a) for a in layer.args) in ((), (1.0, 1.0, 0.0)):
        return ERF
    return None


def plan(description: Layer, image_shape: tuple, channels: int):
    """(integer steps, float steps, number of activations) of ``description`` on images of spatial shape
    ``image_shape`` (1-D images as (1, W)) with ``channels`` input channels."""
    shape = tuple(image_shape) if len(image_shape) == 2 else (1,) + tuple(image_shape)
    rank = len(image_shape)
    ints, floats, acts = [], [], 0
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
        elif isinstance(layer, Elementwise) and _activation_code(layer) is not None:
            row[0], row[13] = _activation_code(layer), acts
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
                                    "chains of Conv, Dense, Relu, Erf, AvgPool, GlobalAvgPool and Flatten")
        ints.append(row)
        floats.append(f)
    if spatial:
        raise NotCompilableConv("the network's output has spatial axes; end it with Flatten() or GlobalAvgPool()")
    return np.array(ints, dtype=np.int64).reshape(-1, _INTS), np.array(floats, dtype=np.float64).reshape(-1, 4), acts


# ---------------------------------------------------------------------- compiled steps
@numba.njit(cache=True, error_model="numpy")
def _act(code, a, b, c, diagonal):
    """(T, Tdot) of ReLU or erf at variances a, b and covariance c; one-variable forms when ``diagonal``."""
    if code == RELU:
        if diagonal:
            return 0.5 * a, 0.5
        s = math.sqrt(a) * math.sqrt(b)
        if s == 0.0:
            return 0.0, 0.5
        rho = min(max(c / s, -1.0), 1.0)
        t = math.acos(rho)
        return s / (2 * math.pi) * (math.sqrt(1 - rho * rho) + (math.pi - t) * rho), (math.pi - t) / (2 * math.pi)
    if diagonal:
        return 2 / math.pi * math.asin(2 * a / (1 + 2 * a)), 4 / math.pi / math.sqrt(1 + 4 * a)
    d = (1 + 2 * a) * (1 + 2 * b)
    bound = math.sqrt(a) * math.sqrt(b)
    c = min(max(c, -bound), bound)
    return 2 / math.pi * math.asin(2 * c / math.sqrt(d)), 4 / math.pi / math.sqrt(d - 4 * c * c)


@numba.njit(cache=True, error_model="numpy")
def _chain(K, T, K2, T2, S1, S2, ints, floats, d1, d2, same, record, full):
    """Run the steps on the cross covariance K and NTK T (flat, P x P when ``full``, else the P same-position
    entries); returns (nngp, ntk) of the output.  ``record``: the self chain of one input, writing its
    per-position variances into d1 (= d2)."""
    for step in range(ints.shape[0]):
        code, H, W, Ho, Wo = ints[step, 0], ints[step, 1], ints[step, 2], ints[step, 3], ints[step, 4]
        P, Po = H * W, Ho * Wo
        cw, cb, lb, lw = floats[step, 0], floats[step, 1], floats[step, 2], floats[step, 3]
        if not full:
            _diagonal_step(code, H, W, Ho, Wo, ints[step], cw, cb, lb, lw, K, T, K2, T2, d1, d2, same, record)
        elif code == DENSE:
            for o in range(P * P):
                k = K[o]
                K2[o] = cb + cw * k
                T2[o] = lb + lw * k + cw * T[o]
        elif code == RELU or code == ERF:
            a_ = ints[step, 13]
            if record:
                for p in range(P):
                    d1[a_, p] = K[p * P + p]
            for p in range(P):
                for q in range(P):
                    o = p * P + q
                    t, td = _act(code, d1[a_, p], d2[a_, q], K[o], same and p == q)
                    K2[o] = t
                    T2[o] = td * T[o]
        elif code == CONV:
            fh, fw, sh, sw, loh, low, wrap = ints[step, 5], ints[step, 6], ints[step, 7], ints[step, 8], \
                ints[step, 9], ints[step, 10], ints[step, 11]
            inv = 1.0 / (fh * fw)
            for a1 in range(Ho):
                for b1 in range(Wo):
                    for a2 in range(Ho):
                        for b2 in range(Wo):
                            sk = 0.0
                            st = 0.0
                            for qh in range(fh):
                                h1, h2 = sh * a1 + qh - loh, sh * a2 + qh - loh
                                if wrap:
                                    h1, h2 = h1 % H, h2 % H
                                elif h1 < 0 or h1 >= H or h2 < 0 or h2 >= H:
                                    continue
                                for qw in range(fw):
                                    w1, w2 = sw * b1 + qw - low, sw * b2 + qw - low
                                    if wrap:
                                        w1, w2 = w1 % W, w2 % W
                                    elif w1 < 0 or w1 >= W or w2 < 0 or w2 >= W:
                                        continue
                                    i = (h1 * W + w1) * P + h2 * W + w2
                                    sk += K[i]
                                    st += T[i]
                            o = (a1 * Wo + b1) * Po + a2 * Wo + b2
                            mk = sk * inv
                            K2[o] = cb + cw * mk
                            T2[o] = lb + lw * mk + cw * st * inv
        elif code == POOL:
            fh, fw, sh, sw, loh, low, wrap, norm = ints[step, 5], ints[step, 6], ints[step, 7], ints[step, 8], \
                ints[step, 9], ints[step, 10], ints[step, 11], ints[step, 12]
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
                            n = _count(o1 // Wo, o1 % Wo, H, W, fh, fw, sh, sw, loh, low) \
                                * _count(a2, b2, H, W, fh, fw, sh, sw, loh, low)
                        else:
                            n = float(fh * fw) ** 2
                        K2[o1 * Po + o2] = sk / n
                        T2[o1 * Po + o2] = st / n
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
                    sk += K[p * P + p]
                    st += T[p * P + p]
                n = float(P)
            K2[0] = sk / n
            T2[0] = st / n
        K, K2 = K2, K
        T, T2 = T2, T
    return K[0], T[0]


@numba.njit(cache=True, error_model="numpy")
def _diagonal_step(code, H, W, Ho, Wo, row, cw, cb, lb, lw, K, T, K2, T2, d1, d2, same, record):
    """One step on same-position covariances K[p] (no pooling in the chain)."""
    P = H * W
    if code == DENSE:
        for p in range(P):
            k = K[p]
            K2[p] = cb + cw * k
            T2[p] = lb + lw * k + cw * T[p]
    elif code == RELU or code == ERF:
        a_ = row[13]
        if record:
            for p in range(P):
                d1[a_, p] = K[p]
        for p in range(P):
            t, td = _act(code, d1[a_, p], d2[a_, p], K[p], same)
            K2[p] = t
            T2[p] = td * T[p]
    elif code == CONV:
        fh, fw, sh, sw, loh, low, wrap = row[5], row[6], row[7], row[8], row[9], row[10], row[11]
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
    else:  # FLATTEN
        sk = 0.0
        st = 0.0
        for p in range(P):
            sk += K[p]
            st += T[p]
        K2[0] = sk / P
        T2[0] = st / P


@numba.njit(cache=True)
def _count(a, b, H, W, fh, fw, sh, sw, loh, low):
    n = 0
    for qh in range(fh):
        h = sh * a + qh - loh
        if 0 <= h < H:
            for qw in range(fw):
                w = sw * b + qw - low
                if 0 <= w < W:
                    n += 1
    return float(n)


@numba.njit(cache=True)
def _gram(x, y, K, full):
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


@numba.njit(parallel=True, cache=True)
def _selves(X, ints, floats, var, out, full):
    """Each input with itself: its variances before each activation (var[i]) and its output (out[i])."""
    n, P = X.shape[0], X.shape[1]
    m = P * P if full else P
    for i in numba.prange(n):
        K, T = np.empty(m), np.zeros(m)
        K2, T2, S1, S2 = np.empty(m), np.empty(m), np.empty(m if full else 1), np.empty(m if full else 1)
        _gram(X[i], X[i], K, full)
        out[i, 0], out[i, 1] = _chain(K, T, K2, T2, S1, S2, ints, floats, var[i], var[i], True, True, full)


@numba.njit(parallel=True, cache=True)
def _pairs(X1, X2, ints, floats, var1, var2, symmetric, nngp, ntk, full):
    """Every pair (a, b) (a > b only when ``symmetric``) on its cross covariance."""
    n1, n2, P = X1.shape[0], X2.shape[0], X1.shape[1]
    m = P * P if full else P
    total = n1 * (n1 - 1) // 2 if symmetric else n1 * n2
    for k in numba.prange(total):
        if symmetric:
            a = int((1 + math.sqrt(1 + 8 * k)) / 2)
            while a * (a - 1) // 2 > k:
                a -= 1
            while (a + 1) * a // 2 <= k:
                a += 1
            b = k - a * (a - 1) // 2
        else:
            a, b = k // n2, k % n2
        K, T = np.empty(m), np.zeros(m)
        K2, T2, S1, S2 = np.empty(m), np.empty(m), np.empty(m if full else 1), np.empty(m if full else 1)
        _gram(X1[a], X2[b], K, full)
        nngp[a, b], ntk[a, b] = _chain(K, T, K2, T2, S1, S2, ints, floats, var1[a], var2[b], False, False, full)


def kernel(description: Layer, X1, X2=None, get=("nngp", "ntk")) -> KernelResult:
    """NNGP and NTK of a serial convolutional description at images X1 (N1, *S, C), X2 (default X1), compiled
    (module docstring); :class:`NotCompilableConv` for descriptions outside its scope."""
    get = check_get(get)
    description = getattr(description, "description", description)
    X1, spatial = image_inputs(X1, "X1")
    X2v = X1 if X2 is None else image_inputs(X2, "X2", like=X1)[0]
    if not spatial:
        raise ValueError(f"X1 must be images (N, W, C) or (N, H, W, C); got shape {X1.shape}")
    ints, floats, acts = plan(description, spatial, X1.shape[-1])
    full = bool(np.any((ints[:, 0] == POOL) | (ints[:, 0] == GLOBAL)))
    P = math.prod(spatial)
    F1 = np.ascontiguousarray(X1.reshape(len(X1), P, -1))
    F2 = F1 if X2 is None else np.ascontiguousarray(X2v.reshape(len(X2v), P, -1))
    var1, out1 = np.zeros((len(F1), max(acts, 1), P)), np.empty((len(F1), 2))
    _selves(F1, ints, floats, var1, out1, full)
    if X2 is None:
        var2, out2 = var1, out1
    else:
        var2, out2 = np.zeros((len(F2), max(acts, 1), P)), np.empty((len(F2), 2))
        _selves(F2, ints, floats, var2, out2, full)
    nngp, ntk = np.empty((len(F1), len(F2))), np.empty((len(F1), len(F2)))
    _pairs(F1, F2, ints, floats, var1, var2, X2 is None, nngp, ntk, full)
    if X2 is None:
        iu = np.triu_indices(len(F1), 1)
        nngp[iu], ntk[iu] = nngp.T[iu], ntk.T[iu]
    ia, ib = np.nonzero(equal_rows(F1.reshape(len(F1), -1), F2.reshape(len(F2), -1)))
    nngp[ia, ib], ntk[ia, ib] = out1[ia, 0], out1[ia, 1]
    if not (np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))):
        raise FloatingPointError("the kernel overflowed or produced NaN (variances grow without bound)")
    return KernelResult(nngp, ntk, {"quadrature_error": 0.0, "evaluated_by": "ntk_theory.codegen.convolution"},
                        get=get)
