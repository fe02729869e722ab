"""Shared definitions of the compiled four-point integrator (see :mod:`._fourpoint_core`): Numba
types and signatures, the ``_njit`` decorator, quadrature constants and the factor helper ``_pw``.

The activation enters as four function slots f_0 = s, f_1 = s', f_2 = s'', f_3 = s''' (first-class
functions of one float64); a factor of one variable is f_0^p f_1^q f_2^r f_3^t, its powers a row
(p, q, r, t) of ``facpow[v, f]`` (``fpow[f]`` in the table), and a slot whose power is zero in every
factor of a variable is not called for it (so unused slots may hold any function)."""

from __future__ import annotations

import warnings

import numba
import numpy as np
from numba import types
from numba.core.errors import NumbaExperimentalFeatureWarning

_F64 = types.float64
_I64 = types.int64
FN = types.FunctionType(_F64(_F64))

_B = types.boolean
_V = _F64[::1]
_IV = _I64[::1]
_M = _F64[:, ::1]
_IM = _I64[:, ::1]
_SIG_LEVEL_NODES = _I64(_M, _I64, _I64, _IV, _I64, _M, _F64, _F64, _B, _V, _V, _M, _M, _V, _V, _V, _V, _V, _V)
_I3 = _I64[:, :, ::1]
_SIG_PW = _F64(_F64, _F64, _F64, _F64, _I64, _I64, _I64, _I64)
_SIG_GVALUES = types.void(FN, FN, FN, FN, _V, _F64, _F64, _F64, _IM, _I64, _B, _V, _V, _V, _V)
_SIG_BUILD = _I64(FN, FN, FN, FN, _V, _F64, _F64, _F64, _IM, _I64, _F64, _V, _F64[:, :, ::1], _M)
_SIG_INTEGRATE = types.void(FN, FN, FN, FN, _M, _I64, _I64, _IV, _I3, _IV, _I3, _IV, _IV, _IM, _IM,
                            _F64, _B, _F64, _V, _V, _I64, _I64, _IV, _V, _F64[:, :, ::1], _M, _I64, _I64,
                            _V, _V, _V, _V, _M)

def _njit(sig, **options):
    """numba.njit with an explicit signature (compiled now, cached on disk), the experimental
    first-class function warning silenced."""
    def deco(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaExperimentalFeatureWarning)
            return numba.njit(sig, cache=True, error_model='numpy', nogil=True, **options)(fn)
    return deco


_GLX_F, _GLW_F = (np.ascontiguousarray(a) for a in np.polynomial.legendre.leggauss(12))
_GLX_C, _GLW_C = (np.ascontiguousarray(a) for a in np.polynomial.legendre.leggauss(8))
_GQX, _GQW = (np.ascontiguousarray(a) for a in np.polynomial.legendre.leggauss(16))
_INV_SQRT_2PI = 0.3989422804014327
_MAXN = 4096
_NCH = 17  # Chebyshev points per table panel (degree 16)
_CHX = np.ascontiguousarray(np.cos(np.pi * (np.arange(_NCH) + 0.5) / _NCH))
_CHM = np.ascontiguousarray(
    np.array([[(2.0 / _NCH) * np.cos(np.pi * j * (k + 0.5) / _NCH) * (0.5 if j == 0 else 1.0)
               for k in range(_NCH)] for j in range(_NCH)]))
_MAXPAN = 1024


@_njit(_SIG_PW, inline='always')
def _pw(s, d, d2, d3, p, q, r, t):
    val = 1.0
    for _ in range(p):
        val *= s
    for _ in range(q):
        val *= d
    for _ in range(r):
        val *= d2
    for _ in range(t):
        val *= d3
    return val


