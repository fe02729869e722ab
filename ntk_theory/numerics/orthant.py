r"""Truncated Gaussian moments over orthants, exactly: the four-point moments of ReLU-like activations.

For z ~ N(0, S) (m x m, m <= 4, positive semi-definite) and integer powers k,

    F(k; S) = E[z^k 1{z > 0}] = int_(z > 0) prod_i z_i^(k_i) phi_S(z) dz .

**Recursion** (integration by parts, Tallis 1961; Kan & Robotti 2017, "On moments of folded and
truncated multivariate normal distributions", J. Comput. Graph. Stat. 26, eq. 11 with zero mean and
lower limits 0): with z phi_S = -S grad phi_S, for any i with k_i >= 1 and k' = k - e_i,

    F(k; S) = sum_j S_ij [ k'_j F(k' - e_j; S)  +  [k'_j = 0] phi_1(0; S_jj) F(k'_(-j); S_(-j|j)) ],

where the second term is the boundary z_j = 0 of the orthant (present only when z_j's power is 0),
phi_1(0; v) = (2 pi v)^(-1/2) and S_(-j|j) = S_(-j,-j) - S_(-j,j) S_(j,-j) / S_jj is the covariance of
the other variables given z_j = 0.  Conditioning on several variables in turn gives the Schur
complement given all of them at 0 (order independent; one elimination step per variable), so the values
are memoised by (conditioned set, powers).  For positive-definite S (:class:`_FullRank`) the
recursion ends at orthant probabilities F(0; S) = P(z > 0):

* m = 0: 1; m = 1: 1/2; m = 2: 1/4 + asin(r_12) / (2 pi) (Sheppard 1899);
* m = 3: 1/8 + (asin r_12 + asin r_13 + asin r_23) / (4 pi) (Sheppard);
* m = 4: Plackett's identity (Plackett 1954, Biometrika 41): along R(t) = I + t (R - I),
  dP/d r_ij = phi_2(0, 0; r_ij) P_2(orthant of (k, l) | z_i = z_j = 0), so

      P_4(R) = 1/16 + sum_(i<j) asin(r_ij) / (8 pi)
               + sum_(i<j) int_0^(asin r_ij) asin(r_(kl|ij)(sin(th) / r_ij)) / (4 pi^2) d th ,

  with r_(kl|ij)(t) the correlation of (z_k, z_l) given z_i = z_j = 0 under R(t); the substitution
  t = sin(th) / r_ij removes the 1 / sqrt(1 - t^2 r_ij^2) peak of near-parallel pairs.  The six
  integrals of all the sets are done together (the integrand compiled with Numba when it is
  there; :func:`_adaptive_gk21`: QUADPACK's 21-point
  Gauss-Kronrod rule and error estimate on panels bisected where needed, vectorised over the sets;
  scipy.integrate.quad for the few still refining after 60 bisections), to max(1e-15, 1e-13 |value|)
  each, and the error estimates are propagated.

**Singular sets** (more inputs than dimensions with C_b = 0, repeated or antiparallel inputs) are
reduced first (:func:`_reduce`, extended precision, on the correlation matrix R):

* variables with 1 - r_ij^2 zero within its rounding level are merged, z_j = sgn r_ij (sd_j / sd_i) z_i:
  on an orthant sigma the indicator of z_j is that of z_i (or, antiparallel, empty) and z_j^p is
  (sgn r_ij sd_j / sd_i)^p z_i^p;
* the rank r of the rest by pivoted Cholesky (largest remaining conditional variance first), a
  conditional variance d counting as zero when d <= 64 eps (1 + ||a||_1)^2, a the regression
  coefficients on the pivots: the change that a relative perturbation eps of the float64 entries
  of K causes in d.  The set is then computed for the rank-r matrix L L^T (the dependent rows of L
  normalised), which differs from R by at most that level; a moment whose indicator factors make it
  depend on R like sqrt(d) (e.g. P(z_1 > 0, z_2 > 0) = 1/2 - angle / (2 pi) for nearly parallel
  z_1, z_2) can differ by O(sqrt(64 eps)) ~ 1e-7 relative between R and L L^T: the same as between
  K and any matrix within its own float64 rounding, so no method does better from K alone.
  Sets with lambda_min(R) >= 1e-4 skip this analysis (they cannot meet the zero rule: d >= lambda_min
  and ||a||_1 <= 3 / lambda_min).

The reduced sets are z = L w with w ~ N(0, I_r) and no two variables parallel; the orthant is a
polyhedral cone in w:

* rank 2 (and every pair; :class:`_Planar`): in polar coordinates the cone is an arc, the moment
  E[rho^P] / (2 pi) times a one-dimensional integral of a sign-definite trigonometric polynomial
  over it, by 16-point Gauss-Legendre with a rigorous remainder bound (no cancellation);
* rank 3 of four variables (:class:`_Solid`): P(z > 0) in closed form from the Walsh expansion
  of the sign pattern and the empty pattern sgn(c) of the relation c . z = 0; moments by the
  recursion above in w (Stein's lemma holds for the degenerate Gaussian), whose boundary terms are
  planar cones in the face planes.

Full-rank sets go to :class:`_FullRank` unless lambda_min(R) < ``MIN_EIGENVALUE`` (then to the
caller's numerical integrator).

**Activations.**  For s(z) = b z (z > 0), a z (z < 0) (ReLU: a = 0, b = 1; leaky ReLU; |z|), on the
orthant with signs sigma, s(z_i) = c_i z_i, s'(z_i) = c_i (c_i = b or a), so

    E[prod_i s(z_i)^p_i s'(z_i)^q_i] = sum_sigma prod_i c_i^(p_i + q_i) sigma_i^(p_i) F(p; D S D),

D = diag(sigma) (orthants with a zero coefficient skipped: one orthant for ReLU), and
E|prod| = sum_sigma |prod_i c_i^(p_i + q_i)| F(p; D S D); merged variables contribute their ratio
and their sign to the coefficient.  sigma and -sigma share D S D, and the orthant probabilities of
the other orthants of a full-rank set follow from the all-positive one by inclusion-exclusion
(1{z_i < 0} = 1 - 1{z_i > 0}) with Sheppard's closed forms, so one quadrature serves a set.  Sets
of the same reduced structure (kind, merges) are computed together: every quantity above is an
array over the sets (:func:`set_moments`).

**Accuracy.**  The recursion and the cone formulas are exact (up to a bounded Gauss-Legendre
remainder); the arithmetic is extended precision
(``np.longdouble``, eps_ld = 1.1e-19 on x86-64 Linux) except Plackett's integrand (float64).  The
reported error of a full-rank set is the propagated quadrature estimate of P_4 plus the rounding model

    64 eps |P_4| max(1, lambda_min(R)^(-1/2))        (each Plackett integral, float64 integrand)
    + 64 eps E|prod| + eps_ld (sum of |terms|) max(64, 1 / lambda_min(R))   (the recursion).

Measured against the same recursion in mpmath at 30 digits (tests): on two nearly parallel pairs at
lambda_min(R) = 1.5e-8 the actual error is <= 7e-13 relative (a float64 recursion: 7e-10);
at 1.5e-10 it is 1.2e-10 to 4.3e-10 against a model of 2e-9 to 6e-9 (ratio <= 0.09).  On strongly
anti-correlated sets (C_b = 0, correlations down to -0.96, the terms cancel to a small E|prod|) the
actual error of ssss reaches 5.6e-6 relative against a model of 6e-3.  From 2e-4 down to 8e-8 the
exact route agrees with the numerical integrator (tol 1e-12) to 1e-14 .. 5e-12 relative.  The cone
routes report the Gauss-Legendre remainder bound, 16 eps of each integral and of each closed form,
the directions' error of L (16 eps_ld / sqrt(smallest pivot), grown by |l| / |projection| in the face
planes) times the total variation of each arc integrand, the propagated errors through the
recursion (sum of |coefficient| x error) and eps (sum of |terms|) 64; measured against the same
formulas in mpmath at 35-40 digits the actual error is <= 0.11 x the estimate (planar: thin, wide
and nearly parallel arcs; solid: random and anti-correlated sets).

**Cancellation and mpmath.**  For strongly anti-correlated inputs the terms of the recursion cancel to
a small E|prod| (C_b = 0: relative estimates up to 2e-9 for a solid set in d = 3, 6e-8 for a full-rank
set of three, 3e-6 for full-rank sets of four in d = 4).  With ``tol``, :func:`set_moments`
recomputes every set whose estimate exceeds tol E|prod| with mpmath at ``MP_DIGITS`` = 40 digits
from the float64 entries of K: the same formulas in object arrays (Plackett's integrals by
mpmath.quad with its error estimate), eps = 2^-prec in the rounding models.  Sets still above tol,
nearly singular sets without an exact relation and sets with a zero variance are left to the caller
(:func:`.fourpoint.four_point_moments`), which integrates the full-rank ones numerically.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_EIGENVALUE", "SetMoments", "min_correlation_eigenvalue", "orthant_probability",
           "piecewise_linear_moment", "set_moments"]

_EPS = float(np.finfo(float).eps)
MIN_EIGENVALUE = 1e-8
"""Smallest eigenvalue of a full-rank set's correlation matrix for the exact route (below: numerical)."""
DEPENDENCE_FACTOR = 64.0
"""A variable is exactly dependent on others when its conditional variance (correlation units) is at
most DEPENDENCE_FACTOR eps (1 + ||a||_1)^2, a the regression coefficients on the others."""
_SCREEN_EIGENVALUE = 1e-4  # sets with a larger smallest correlation eigenvalue skip the rank analysis

_LD = np.longdouble
_EPS_LD = float(np.finfo(np.longdouble).eps)  # 1.1e-19 with x87 extended precision (x86-64 Linux)
_PI_LD = np.arccos(_LD(-1))


# ------------------------------------------------------------------------------------------------
# Orthant probabilities of full-rank sets
# ------------------------------------------------------------------------------------------------


def orthant_probability(S: np.ndarray) -> tuple[float, float]:
    """(P(z > 0), estimated absolute error) for z ~ N(0, S), S (m, m) positive definite, m <= 4."""
    S = np.asarray(S, dtype=np.float64)
    m = S.shape[0]
    if m == 0:
        return 1.0, 0.0
    d = np.sqrt(np.diag(S))
    R = S / np.outer(d, d)
    if m == 1:
        return 0.5, 0.0
    if m == 2:
        return 0.25 + math.asin(_clip(R[0, 1])) / (2 * math.pi), 0.0
    if m == 3:
        return 0.125 + (math.asin(_clip(R[0, 1])) + math.asin(_clip(R[0, 2])) + math.asin(_clip(R[1, 2]))) / (4 * math.pi), 0.0
    if m == 4:
        P, e = _orthant4(R[None])
        return float(P[0]), float(e[0])
    raise ValueError(f"orthant probabilities are implemented for m <= 4 variables; got {m}")


def _clip(r: float) -> float:
    return min(1.0, max(-1.0, r))


# Gauss-Kronrod 21-point rule (QUADPACK qk21): Kronrod nodes, 10-point Gauss weights (at the odd
# Kronrod nodes), 21-point Kronrod weights
_XK = np.array([0.995657163025808080735527280689003, 0.973906528517171720077964012084452,
                0.930157491355708226001207180059508, 0.865063366688984510732096688423493,
                0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
                0.562757134668604683339000099272694, 0.433395394129247190799265943165784,
                0.294392862701460198131126603103866, 0.148874338981631210884826001129720, 0.0])
_XK = np.concatenate([_XK, -_XK[-2::-1]])
_WG = np.array([0.066671344308688137593568809893332, 0.149451349150580593145776339657697,
                0.219086362515982043995534934228163, 0.269266719309996355091226921569469,
                0.295524224714752870173892994651338])
_WG = np.concatenate([_WG, _WG[::-1]])
_WK = np.array([0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
                0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
                0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
                0.123491976262065851077958109831074, 0.134709217311473325928054001771707,
                0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
                0.149445554002916905664936468389821])
_WK = np.concatenate([_WK, _WK[-2::-1]])


def _plackett_integrand_numpy(R, i, j, k, l_, th, r):
    """asin of the correlation of (z_k, z_l) given z_i = z_j = 0 under R(t) = I + t (R - I),
    t = sin(th) / r_ij; R (T, 4, 4), th (T, n), r (T,) -> (T, n)."""
    t = np.sin(th) / r[:, None]
    b = t * R[:, i, j, None]
    ski, skj, sli, slj = (t * R[:, p, q, None] for p, q in ((k, i), (k, j), (l_, i), (l_, j)))
    det = 1.0 - b * b
    ckk = 1.0 - (ski * ski - 2 * b * ski * skj + skj * skj) / det
    cll = 1.0 - (sli * sli - 2 * b * sli * slj + slj * slj) / det
    ckl = t * R[:, k, l_, None] - (ski * sli - b * (ski * slj + skj * sli) + skj * slj) / det
    return np.arcsin(np.clip(ckl / np.sqrt(np.maximum(ckk * cll, 1e-300)), -1.0, 1.0))


@functools.cache
def _plackett_compiled():
    """The same integrand as one compiled loop (numba.njit, explicit signature, disk-cached): the
    arithmetic of :func:`_plackett_integrand_numpy` in the same order, without its temporaries;
    None when Numba is unavailable."""
    try:
        import numba
    except ImportError:  # pragma: no cover
        return None

    @numba.njit("float64[:, ::1](float64[:, :, ::1], int64, int64, int64, int64, float64[:, ::1], float64[::1])",
                cache=True, nogil=True, error_model="numpy")
    def integrand(R, i, j, k, l_, th, r):  # pragma: no cover - compiled
        T, n = th.shape
        out = np.empty((T, n))
        for s in range(T):
            Rij, Rki, Rkj, Rli, Rlj, Rkl = R[s, i, j], R[s, k, i], R[s, k, j], R[s, l_, i], R[s, l_, j], R[s, k, l_]
            for q in range(n):
                t = math.sin(th[s, q]) / r[s]
                b = t * Rij
                ski = t * Rki
                skj = t * Rkj
                sli = t * Rli
                slj = t * Rlj
                det = 1.0 - b * b
                ckk = 1.0 - (ski * ski - 2 * b * ski * skj + skj * skj) / det
                cll = 1.0 - (sli * sli - 2 * b * sli * slj + slj * slj) / det
                ckl = t * Rkl - (ski * sli - b * (ski * slj + skj * sli) + skj * slj) / det
                x = ckl / math.sqrt(max(ckk * cll, 1e-300))
                out[s, q] = math.asin(min(max(x, -1.0), 1.0))
        return out

    return integrand


def _plackett_integrand(R, i, j, k, l_, th, r):
    """:func:`_plackett_integrand_numpy`, compiled when Numba is there."""
    f = _plackett_compiled()
    if f is None:
        return _plackett_integrand_numpy(R, i, j, k, l_, th, r)
    return f(np.ascontiguousarray(R, dtype=np.float64), int(i), int(j), int(k), int(l_),
             np.ascontiguousarray(th, dtype=np.float64), np.ascontiguousarray(r, dtype=np.float64))


def _adaptive_gk21(f, lo, hi, epsabs, epsrel, rounds=60, max_panels=256):
    """Integrals of f over [lo_n, hi_n] (arrays of n items) by Gauss-Kronrod 21 panels refined by
    bisection, vectorised over the items: ``f(items, x)`` evaluates the integrands of the given
    items at x (P, 21).  A panel of width w is accepted when its QUADPACK error estimate is at most
    tol_n w / (hi_n - lo_n) (so the accepted estimates sum to at most tol_n = max(epsabs,
    epsrel |value|)), at its rounding floor 64 eps int |f|, or when the item's summed estimate is
    already below tol_n.  Returns (values, summed error estimates, done), done False for items
    still refining after ``rounds`` bisections or with more than ``max_panels`` pending panels."""
    n = lo.shape[0]
    width = hi - lo
    item = np.repeat(np.arange(n), 4)
    a = lo[item] + width[item] * np.tile(np.arange(4), n) / 4
    hl = np.repeat(width / 8, 4)
    val, err = np.zeros(n), np.zeros(n)
    stuck = np.zeros(n, dtype=bool)
    for _ in range(rounds):
        if not item.size:
            break
        v, e, resabs = _gk21(functools.partial(f, item), a, hl)
        tv = val + np.bincount(item, v, n)
        te = err + np.bincount(item, e, n)
        tol = np.maximum(epsabs, epsrel * np.abs(tv))
        ok = (e <= tol[item] * 2 * hl / np.where(width[item] > 0, width[item], 1.0)) | (e <= 64 * _EPS * resabs) \
            | (te[item] <= tol[item])
        val += np.bincount(item[ok], v[ok], n)
        err += np.bincount(item[ok], e[ok], n)
        item, a, hl = item[~ok], a[~ok], hl[~ok]
        crowded = np.bincount(item, minlength=n) > max_panels // 2  # left to the caller
        keep = ~crowded[item]
        stuck[crowded] = True
        item, a, hl = item[keep], a[keep], hl[keep]
        item, a, hl = np.repeat(item, 2), np.stack([a, a + hl], axis=1).ravel(), np.repeat(hl / 2, 2)
    stuck[item] = True
    return val, err, ~stuck


def _gk21(f, lo, hl):
    """QUADPACK's qk21 on panels [lo, lo + 2 hl] (arrays), vectorised: (value, error estimate,
    integral of |f|)."""
    g = f(lo[:, None] + hl[:, None] * (1.0 + _XK[None, :]))
    resk = g @ _WK
    resg = g[:, 1::2] @ _WG
    ah = np.abs(hl)
    resabs = np.abs(g) @ _WK * ah
    resasc = np.abs(g - 0.5 * resk[:, None]) @ _WK * ah
    e = np.abs((resk - resg) * hl)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = resasc * np.minimum(1.0, (200 * e / resasc) ** 1.5)
    e = np.where((resasc != 0) & (e != 0), scaled, e)
    e = np.where(resabs > np.finfo(float).tiny / (50 * _EPS), np.maximum(50 * _EPS * resabs, e), e)
    return resk * hl, e, resabs


def _plackett_scalar(R, i, j, k, l_, r):
    eye = np.eye(4)

    def g(th):
        t = math.sin(th) / r
        Rt = eye + t * (R - eye)
        a, b, c = 1.0, Rt[i, j], 1.0
        det = a * c - b * b
        ski, skj, sli, slj = Rt[k, i], Rt[k, j], Rt[l_, i], Rt[l_, j]
        ckk = 1.0 - (c * ski * ski - 2 * b * ski * skj + a * skj * skj) / det
        cll = 1.0 - (c * sli * sli - 2 * b * sli * slj + a * slj * slj) / det
        ckl = Rt[k, l_] - (c * ski * sli - b * (ski * slj + skj * sli) + a * skj * slj) / det
        return math.asin(_clip(ckl / math.sqrt(max(ckk * cll, 1e-300))))

    return g


def _orthant4(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_4, estimated absolute error) for T correlation matrices R (T, 4, 4) by Plackett's six
    one-dimensional integrals, each to max(1e-15, 1e-13 |value|) by :func:`_adaptive_gk21`
    (vectorised over the sets; QUADPACK's 21-point rule and error estimate on bisected panels),
    and the few integrals still refining after 60 bisections by scipy.integrate.quad."""
    from scipy import integrate

    R = np.asarray(R, dtype=np.float64)
    T = R.shape[0]
    total = np.full(T, 1.0 / 16.0)
    err = np.zeros(T)
    for i, j in itertools.combinations(range(4), 2):
        k, l_ = [v for v in range(4) if v not in (i, j)]
        r = R[:, i, j]
        th1 = np.arcsin(np.clip(r, -1.0, 1.0))
        total += th1 / (8 * math.pi)
        nz = np.nonzero(r != 0.0)[0]
        val, e = np.zeros(T), np.zeros(T)
        Rn, rn = R[nz], r[nz]
        def integrand(items, th, Rn=Rn, rn=rn, i=i, j=j, k=k, l_=l_):
            return _plackett_integrand(Rn[items], i, j, k, l_, th, rn[items])

        v, ee, ok = _adaptive_gk21(integrand, np.zeros(nz.size), th1[nz], 1e-15, 1e-13)
        val[nz], e[nz] = v, ee
        for t in nz[~ok]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", integrate.IntegrationWarning)
                vt, et = integrate.quad(_plackett_scalar(R[t], i, j, k, l_, r[t]), 0.0, th1[t],
                                        epsabs=1e-15, epsrel=1e-13, limit=200)
            if caught:  # roundoff detected: the integrand is resolved to its rounding level, no better
                et = max(et, 1e-13 * abs(th1[t]))
            val[t], e[t] = vt, et
        total += val / (4 * math.pi ** 2)
        err += e / (4 * math.pi ** 2)
    # rounding of the float64 integrand (conditional correlations of nearly parallel inputs):
    # measured 1.9e-10 relative at lambda_min(R) = 1.5e-10 (mpmath reference), 5e-14 at 1.5e-8
    lam = np.maximum(np.linalg.eigvalsh(R)[:, 0], 1e-300)
    return total, err + 64 * _EPS * np.abs(total) * np.maximum(1.0, 1.0 / np.sqrt(lam))


class _Arithmetic:
    """The number type of the recursion and the cones (:class:`_FullRank`, :class:`_Planar`,
    :class:`_Solid`): np.longdouble arrays, or mpmath numbers at ``MP_DIGITS`` digits in object
    arrays (the recomputation of the sets whose extended-precision estimate exceeds tol).  ``eps``:
    its unit roundoff."""

    def __init__(self, name, eps, convert, zero, pi, sqrt, cos, arctan2, arcsin):
        self.name, self.eps, self.convert, self._zero = name, eps, convert, zero
        self.pi, self.sqrt, self.cos, self.arctan2, self.arcsin = pi, sqrt, cos, arctan2, arcsin
        self.gl_x, self.gl_w = self._legendre(_GL_N)
        two = self.convert(np.array([2.0]))[0]
        # E[rho^P] for rho ~ chi with 2 degrees of freedom: 2^(P/2) Gamma(1 + P/2)
        self.rho2 = {P: (two ** (P // 2) * math.factorial(P // 2) if P % 2 == 0 else
                         self.sqrt(two) ** P * math.factorial(P) * self.sqrt(self.pi)
                         / (4 ** (P // 2) * math.factorial(P // 2) * 2)) for P in range(9)}

    def zeros(self, shape) -> np.ndarray:
        return np.full(shape, self._zero, dtype=object) if self.name == "mpmath" else np.zeros(shape, dtype=_LD)

    def _legendre(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Gauss-Legendre nodes and weights on [-1, 1] (Newton steps on P_n from numpy's float64 nodes)."""
        x = self.convert(np.polynomial.legendre.leggauss(n)[0])
        for _ in range(8 if self.name == "mpmath" else 3):
            p0, p1 = x * 0 + 1, x * 1
            for q in range(2, n + 1):
                p0, p1 = p1, ((2 * q - 1) * x * p1 - (q - 1) * p0) / q
            x = x - p1 / (n * (x * p1 - p0) / (x * x - 1))
        p0, p1 = x * 0 + 1, x * 1
        for q in range(2, n + 1):
            p0, p1 = p1, ((2 * q - 1) * x * p1 - (q - 1) * p0) / q
        dp = n * (x * p1 - p0) / (x * x - 1)
        return x, 2 / ((1 - x * x) * dp * dp)


_GL_N = 16
# Gauss-Legendre remainder on an interval of length h: h^(2n+1) (n!)^4 / ((2n+1) ((2n)!)^3) f^(2n)
_GL_C = math.factorial(_GL_N) ** 4 / ((2 * _GL_N + 1) * math.factorial(2 * _GL_N) ** 3)
MP_DIGITS = 40
"""Digits of the mpmath recomputation of cone sets whose extended-precision estimate exceeds tol."""

_LD_ARITHMETIC = _Arithmetic("longdouble", _EPS_LD, lambda x: np.asarray(x, dtype=_LD), _LD(0), _PI_LD,
                             np.sqrt, np.cos, np.arctan2, np.arcsin)


@functools.cache
def _mp_arithmetic() -> _Arithmetic:
    import mpmath

    with mpmath.workdps(MP_DIGITS):
        return _Arithmetic("mpmath", float(mpmath.mpf(2) ** (1 - mpmath.mp.prec)),
                           np.frompyfunc(mpmath.mpf, 1, 1), mpmath.mpf(0), +mpmath.pi,
                           np.frompyfunc(mpmath.sqrt, 1, 1), np.frompyfunc(mpmath.cos, 1, 1),
                           np.frompyfunc(mpmath.atan2, 2, 1), np.frompyfunc(mpmath.asin, 1, 1))


def _sheppard(C: np.ndarray, ar: _Arithmetic = _LD_ARITHMETIC) -> np.ndarray:
    """P(z > 0) for C (T, m, m), m <= 3, in the arithmetic ``ar``; valid for singular C too (the
    orthant probability is continuous while the variances are positive)."""
    m, T = C.shape[-1], C.shape[0]
    pairs = ar.zeros(T)
    if m >= 2:
        d = ar.sqrt(np.diagonal(C, axis1=-2, axis2=-1))
        for a, b in itertools.combinations(range(m), 2):
            pairs = pairs + ar.arcsin(np.minimum(np.maximum(C[:, a, b] / (d[:, a] * d[:, b]), -1), 1))
    return 1.0 / 2 ** m + (pairs / (2 * ar.pi) if m == 2 else pairs / (4 * ar.pi))


# ------------------------------------------------------------------------------------------------
# Truncated orthant moments: full-rank sets (recursion), planar and solid cones (rank 2, 3)
# ------------------------------------------------------------------------------------------------


class _FullRank:
    """F(k; S_(R|J)) for T positive-definite S (T, m, m), m <= 4, memoised by (conditioned set J,
    powers); every value an array over the T sets.

    The conditional covariances and the recursion run in extended precision (np.longdouble): the
    Schur complements of nearly parallel inputs cancel (conditional variances ~ lambda_min S), and
    their rounding, amplified by the recursion's 1 / sqrt(C_jj) factors and by asin near +-1, was
    the error of a float64 version (7e-10 relative at lambda_min = 1.5e-8; P_4 itself stays at
    5e-14 there)."""

    def __init__(self, S: np.ndarray, probability: tuple | None = None, ar: _Arithmetic = _LD_ARITHMETIC):
        self.ar = ar
        self.S = ar.convert(S)
        self.T, self.m = self.S.shape[0], self.S.shape[-1]
        self.memo: dict = {}
        self.cond: dict = {frozenset(): (tuple(range(self.m)), self.S)}
        if probability is not None:  # P(z > 0) of the whole set: (value, error, |value|)
            self.memo[(frozenset(), (0,) * self.m)] = probability

    def conditional(self, J: frozenset) -> tuple[tuple, np.ndarray]:
        """(remaining variables, their covariance given z_J = 0): one elimination step from the
        conditional covariance given J minus its largest member."""
        if J not in self.cond:
            v = max(J)
            rest, C = self.conditional(J - {v})
            p = rest.index(v)
            C = C - C[:, :, p, None] * C[:, None, p, :] / C[:, p, p, None, None]
            keep = [q for q in range(len(rest)) if q != p]
            C = C[:, keep][:, :, keep]
            self.cond[J] = (tuple(rest[q] for q in keep), 0.5 * (C + np.swapaxes(C, 1, 2)))
        return self.cond[J]

    def F(self, k: tuple, J: frozenset = frozenset()) -> tuple:
        """(F, propagated quadrature error, sum of |terms|) for powers k of the variables not in J,
        given z_J = 0 (without the density of z_J)."""
        key = (J, k)
        if key in self.memo:
            return self.memo[key]
        rest, C = self.conditional(J)
        if all(p == 0 for p in k):
            if len(rest) <= 3:
                v = _sheppard(C, self.ar)
                out = (v, np.zeros(self.T), np.abs(v))
            else:
                v, e = _orthant4(np.asarray(C, dtype=np.float64) / np.sqrt(
                    np.einsum("tii,tjj->tij", C, C).astype(np.float64)))
                out = (v.astype(_LD), e, np.abs(v).astype(_LD))
        else:
            i = next(n for n, p in enumerate(k) if p > 0)
            kp = list(k)
            kp[i] -= 1
            val, err, absum = self.ar.zeros(self.T), np.zeros(self.T), self.ar.zeros(self.T)
            for j in range(len(rest)):
                if kp[j] > 0:
                    kk = list(kp)
                    kk[j] -= 1
                    fv, fe, fa = self.F(tuple(kk), J)
                    t = C[:, i, j] * kp[j]
                else:
                    kk = tuple(p for n, p in enumerate(kp) if n != j)
                    fv, fe, fa = self.F(kk, J | {rest[j]})
                    t = C[:, i, j] / self.ar.sqrt(2 * self.ar.pi * C[:, j, j])
                val = val + t * fv
                err = err + np.abs(t).astype(np.float64) * fe
                absum = absum + np.abs(t) * fa
            out = (val, err, absum)
        self.memo[key] = out
        return out


class _Planar:
    r"""F(k) = E[prod_i (v_i . w)^k_i 1{v_i . w > 0 for all i}] for w ~ N(0, I_2) and T sets of n
    vectors v_i in the plane (V (T, n, 2)): a degenerate Gaussian z = V w of rank 2.  In polar
    coordinates w = rho (cos phi, sin phi),

        F(k) = E[rho^P] / (2 pi) int_arc prod_i |v_i|^k_i cos(phi - theta_i)^k_i d phi ,  P = sum k,

    where the arc is the intersection of the half circles |phi - theta_i| < pi / 2 (an interval of
    length h <= pi, possibly empty; measured from v_0's direction with relative angles
    atan2(v_0 x v_i, v_0 . v_i), so it is a continuous function of the vectors, no case decisions).
    The integrand keeps one sign on the arc and is a trigonometric polynomial of degree P <= 4:
    16-point Gauss-Legendre on the arc has the remainder bound

        E <= h^33 (16!)^4 / (33 (32!)^3) P^32 prod |v_i|^k_i   (Bernstein: |f^(m)| <= P^m max |f|)

    (< 2e-19 prod |v_i|^k_i for h <= pi).  Rounding: 16 eps |integral|, and the angle errors
    ``angle_err`` (T,) of the vectors' directions move every factor: delta_phi times the total
    variation of the integrand along the arc (from the nodes and the endpoints) plus its endpoint
    values (the arc's ends move), delta_phi = angle_err + 16 eps.  Measured against mpmath
    quadrature at 35 digits on thin, wide and nearly parallel arcs: actual <= 0.11 x estimate."""

    def __init__(self, V: np.ndarray, angle_err: np.ndarray, ar: _Arithmetic = _LD_ARITHMETIC):
        self.ar = ar
        self.T, self.n = V.shape[0], V.shape[1]
        self.dphi = np.asarray(angle_err, dtype=np.float64) + 16 * ar.eps
        self.norms = ar.sqrt(V[..., 0] ** 2 + V[..., 1] ** 2)
        v0 = V[:, 0, :]
        cross = v0[:, None, 0] * V[:, :, 1] - v0[:, None, 1] * V[:, :, 0]
        dot = v0[:, None, 0] * V[:, :, 0] + v0[:, None, 1] * V[:, :, 1]
        delta = ar.arctan2(cross, dot)
        half = ar.pi / 2
        alpha = np.maximum(-half, np.max(delta - half, axis=1))
        beta = np.minimum(half, np.min(delta + half, axis=1))
        self.h = np.maximum(beta - alpha, 0)
        # the endpoints' angle uncertainty matters where the arc is not empty by a clear margin
        self.near = (beta - alpha).astype(np.float64) > -16 * self.dphi
        phi = alpha[:, None] + 0.5 * self.h[:, None] * (1 + ar.gl_x[None, :])
        self.fac = self.norms[:, :, None] * ar.cos(phi[:, None, :] - delta[:, :, None])
        ends = np.stack([alpha, beta], axis=1)
        self.end = self.norms[:, :, None] * ar.cos(ends[:, None, :] - delta[:, :, None])
        self.memo: dict = {}

    def F(self, k: tuple) -> tuple:
        if k in self.memo:
            return self.memo[k]
        ar = self.ar
        f, fe, bound = 1, 1, 1
        for i, p in enumerate(k):
            if p:
                f = f * self.fac[:, i] ** p
                fe = fe * self.end[:, i] ** p
                bound = bound * self.norms[:, i] ** p
        f = f * np.ones((self.T, _GL_N), dtype=int)
        fe = fe * np.ones((self.T, 2), dtype=int)
        P = sum(k)
        c = ar.rho2[P] / (2 * ar.pi)
        integral = 0.5 * self.h * (f @ ar.gl_w)
        trunc = _GL_C * float(P) ** (2 * _GL_N) * self.h.astype(np.float64) ** (2 * _GL_N + 1) \
            * (bound * np.ones(self.T, dtype=int)).astype(np.float64)
        seq = np.concatenate([fe[:, :1], f, fe[:, 1:]], axis=1)
        tv = (np.sum(np.abs(np.diff(seq, axis=1)), axis=1) + np.abs(fe).sum(axis=1)).astype(np.float64)
        err = float(c) * (trunc + 16 * ar.eps * np.abs(integral).astype(np.float64)
                          + np.where(self.near, self.dphi * tv, 0.0))
        val = c * integral
        out = (val, err, np.abs(val))
        self.memo[k] = out
        return out


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def _det3(M: np.ndarray) -> np.ndarray:
    return np.einsum("ti,ti->t", M[:, 0], _cross(M[:, 1], M[:, 2]))


class _Solid:
    r"""F(k) = E[prod_i z_i^k_i 1{z > 0}] for z = L w, w ~ N(0, I_3), L (T, 4, 3) of rank 3: four
    variables with one exact linear relation c . z = 0, no two of them parallel.

    Orthant probability (k = 0) in closed form, with asin r_ij = pi/2 - atan2(|l_i x l_j|, l_i . l_j):
    P(sigma z > 0) has the Walsh expansion
    (1/16) [1 + (2/pi) sum_(i<j) sigma_i sigma_j asin r_ij + mu sigma_1 sigma_2 sigma_3 sigma_4]
    (odd orders vanish by symmetry, E[sgn z_i sgn z_j] = (2/pi) asin r_ij), and the sign pattern
    s = sgn(c) is empty (c . z = sum |c_i| |z_i| > 0 there), which fixes mu.  Hence

        P(z > 0) = sum_(s_i != s_j) asin r_ij / (4 pi)              (s_1 s_2 s_3 s_4 = +1),
        P(z > 0) = 1/8 + sum_(s_i = s_j) asin r_ij / (4 pi)         (s_1 s_2 s_3 s_4 = -1),

    with c_i = (-1)^i det(L without row i).  ``zero`` (T, 4): coefficients that are exactly 0 (the
    other three variables coplanar, by the rank rule); such a c_i may take either sign (both
    patterns are empty).  When the non-zero c_i share one sign the cone is empty: every moment is 0,
    exactly.  Error: 16 eps (1/8 + sum |asin r_ij| / (4 pi)) + 6 (2 angle_err) / (4 pi).

    Moments (k != 0): the integration-by-parts recursion (Stein's lemma in w, valid for the
    degenerate Gaussian because no two of the planes z_j = 0 coincide),

        F(k) = sum_j S_ij [ k'_j F(k' - e_j) + [k'_j = 0] (2 pi S_jj)^(-1/2) G_j(k'_(-j)) ] ,

    S = L L^T, where the boundary term G_j is the moment of the other variables given z_j = 0, a
    planar cone (:class:`_Planar`) in the plane orthogonal to l_j, whose vectors (the projections
    of the others) have angle errors angle_err max_i |l_i| / |v_i| + 16 eps.  The recursion's sums
    are rounded: the caller adds 64 eps (sum of |terms|)."""

    def __init__(self, L: np.ndarray, zero, angle_err: np.ndarray, ar: _Arithmetic = _LD_ARITHMETIC):
        self.ar = ar
        self.L = L
        self.T, self.m = L.shape[0], L.shape[1]
        self.angle_err = np.asarray(angle_err, dtype=np.float64)
        self.S = np.einsum("tia,tja->tij", L, L)
        self.memo: dict = {}
        self.planes: dict = {}
        c = np.stack([(-1) ** i * _det3(L[:, [v for v in range(4) if v != i]]) for i in range(4)], axis=1)
        self.c = np.where(zero, 0, c)
        # the cone is empty when the relation's non-zero coefficients share one sign
        nonzero = self.c != 0
        self.empty = np.all((self.c > 0) | ~nonzero, axis=1) | np.all((self.c < 0) | ~nonzero, axis=1)

    def plane(self, j: int) -> _Planar:
        if j not in self.planes:
            ar = self.ar
            n = self.L[:, j] / ar.sqrt(self.S[:, j, j])[:, None]
            axis = n * 0
            axis[np.arange(self.T), np.argmin(np.abs(n), axis=1)] = 1
            e1 = _cross(n, axis)
            e1 = e1 / ar.sqrt(np.sum(e1 * e1, axis=1))[:, None]
            e2 = _cross(n, e1)
            others = self.L[:, [v for v in range(self.m) if v != j]]
            V = np.stack([np.einsum("tva,ta->tv", others, e1), np.einsum("tva,ta->tv", others, e2)], axis=-1)
            shrink = np.max((ar.sqrt(np.sum(others * others, axis=2))
                             / ar.sqrt(np.sum(V * V, axis=2))).astype(np.float64), axis=1)
            self.planes[j] = _Planar(V, self.angle_err * shrink + 16 * ar.eps, ar)
        return self.planes[j]

    def probability(self) -> tuple:
        ar, L = self.ar, self.L
        s = np.where(self.c >= 0, 1, -1)
        differ, same, absum = ar.zeros(self.T), ar.zeros(self.T), ar.zeros(self.T)
        for i, j in itertools.combinations(range(4), 2):
            cr = _cross(L[:, i], L[:, j])
            a = ar.pi / 2 - ar.arctan2(ar.sqrt(np.sum(cr * cr, axis=1)), np.sum(L[:, i] * L[:, j], axis=1))
            eq = s[:, i] == s[:, j]
            same = same + np.where(eq, a, 0)
            differ = differ + np.where(eq, 0, a)
            absum = absum + np.abs(a)
        even = np.prod(s, axis=1) > 0
        val = np.where(even, differ / (4 * ar.pi), 0.125 + same / (4 * ar.pi))
        err = 16 * ar.eps * (0.125 + absum.astype(np.float64) / (4 * math.pi)) + 6 * 2 * self.angle_err / (4 * math.pi)
        return np.where(self.empty, 0, val), np.where(self.empty, 0.0, err), np.where(self.empty, 0, np.abs(val))

    def F(self, k: tuple) -> tuple:
        if k in self.memo:
            return self.memo[k]
        ar = self.ar
        if not any(k):
            out = self.probability()
        else:
            i = next(n for n, p in enumerate(k) if p > 0)
            kp = list(k)
            kp[i] -= 1
            val, err, absum = ar.zeros(self.T), np.zeros(self.T), ar.zeros(self.T)
            for j in range(self.m):
                if kp[j] > 0:
                    kk = list(kp)
                    kk[j] -= 1
                    fv, fe, fa = self.F(tuple(kk))
                    t = self.S[:, i, j] * kp[j]
                else:
                    fv, fe, fa = self.plane(j).F(tuple(p for n, p in enumerate(kp) if n != j))
                    t = self.S[:, i, j] / ar.sqrt(2 * ar.pi * self.S[:, j, j])
                val = val + t * fv
                err = err + np.abs(t).astype(np.float64) * fe
                absum = absum + np.abs(t) * fa
            out = (np.where(self.empty, 0, val), np.where(self.empty, 0.0, err), np.where(self.empty, 0, absum))
        self.memo[k] = out
        return out


# ------------------------------------------------------------------------------------------------
# Rank analysis of a set: exactly parallel variables merged, exact linear relations found
# ------------------------------------------------------------------------------------------------


def _dependent(d, a_l1) -> bool:
    """Whether a conditional variance d (correlation units) is zero within its rounding level
    eps (1 + ||a||_1)^2 (the change a relative perturbation eps of the entries of K causes)."""
    return d <= DEPENDENCE_FACTOR * _EPS * (1.0 + a_l1) ** 2


def _rank_factor(R: np.ndarray, ar: _Arithmetic = _LD_ARITHMETIC, rank: int | None = None) -> tuple:
    """Pivoted Cholesky of a correlation matrix R (m, m), largest remaining conditional variance
    first, stopped when every remaining one is zero within its rounding level (:func:`_dependent`),
    or after ``rank`` pivots.  Returns L (m, r) with R ~ L L^T (the rows of the dependent variables
    normalised: unit variance), r, and the smallest pivot (conditional variance) taken."""
    m = R.shape[0]
    L = ar.zeros((m, m))
    d = np.array([R[q, q] for q in range(m)], dtype=object if ar.name == "mpmath" else _LD)
    rest = list(range(m))
    piv: list = []
    dmin = 1.0
    while rest and (rank is None or len(piv) < rank):
        r = len(piv)
        cand = []
        for q in rest:
            a = [0.0] * r  # regression coefficients on the pivots: L_P^T a = L_q
            for c in range(r - 1, -1, -1):
                a[c] = float((L[q, c] - sum(L[piv[e], c] * a[e] for e in range(c + 1, r))) / L[piv[c], c])
            if rank is not None or not _dependent(float(d[q]), sum(abs(v) for v in a)):
                cand.append(q)
        if not cand:
            break
        i = max(cand, key=lambda q: d[q])
        dmin = min(dmin, float(d[i]))
        rest.remove(i)
        piv.append(i)
        L[i, r] = ar.sqrt(d[i])
        for q in rest:
            L[q, r] = (R[q, i] - L[q, :r] @ L[i, :r]) / L[i, r]
            d[q] = d[q] - L[q, r] ** 2
    r = len(piv)
    for q in rest:
        L[q, :r] = L[q, :r] / ar.sqrt(L[q, :r] @ L[q, :r])
    return L[:, :r], r, dmin


@dataclass
class _Reduction:
    """One set after merging exactly (anti)parallel variables (z_i = sgn_i ratio_i z_rep(i)) and the
    rank analysis of the remaining ones: kind 'full' (positive definite, recursion), 'planar'
    (rank 2, or a pair), 'solid' (rank 3 of 4), or None (nearly singular without an exact relation,
    or a zero variance: numerical).  ``angle_err``: the directions' error of the factor L (radians),
    16 eps_ld / sqrt(smallest pivot)."""

    kind: str | None
    rep: tuple
    sgn: tuple
    ratio: np.ndarray
    S: np.ndarray
    L: np.ndarray | None
    lam: float
    zero: np.ndarray | None = None
    angle_err: float = 0.0


def _correlation(S: np.ndarray, ar: _Arithmetic) -> np.ndarray:
    sd = ar.sqrt(ar.convert(np.diag(S)))
    return ar.convert(S) / np.outer(sd, sd), sd


def _reduce(S: np.ndarray) -> _Reduction:
    m = S.shape[0]
    if np.any(np.diag(S) <= 0):
        return _Reduction(None, tuple(range(m)), (1,) * m, np.ones(m), S, None, 0.0)
    R, sd = _correlation(S, _LD_ARITHMETIC)
    rep, sgn = list(range(m)), [1] * m
    for j in range(1, m):
        for i in range(j):
            if rep[i] == i and _dependent(1 - R[i, j] ** 2, float(abs(R[i, j]))):
                rep[j], sgn[j] = i, (1 if R[i, j] > 0 else -1)
                break
    reps = [i for i in range(m) if rep[i] == i]
    ratio = np.array([float(sd[i] / sd[rep[i]]) for i in range(m)])
    Rr = R[np.ix_(reps, reps)]
    L, r, dmin = _rank_factor(Rr)
    Sr = S[np.ix_(reps, reps)]
    lam = float(np.min(np.linalg.eigvalsh(Rr.astype(np.float64)))) if r == len(reps) else 0.0
    kind = {(1, 1): "full", (2, 2): "planar", (3, 2): "planar", (4, 2): "planar", (4, 3): "solid"}.get(
        (len(reps), r), "full" if lam >= MIN_EIGENVALUE else None)
    zero = None
    if kind == "solid":  # coplanar triples: the relation's coefficient of the fourth variable is 0
        zero = np.array([_rank_factor(Rr[np.ix_(q, q)])[1] < 3
                         for q in ([v for v in range(4) if v != i] for i in range(4))])
    return _Reduction(kind, tuple(rep), tuple(sgn), ratio, Sr, sd[reps][:, None] * L if kind in _CONES else None,
                      lam, zero, 16 * _EPS_LD / math.sqrt(max(dmin, 1e-300)))


# ------------------------------------------------------------------------------------------------
# Moments of piecewise-linear activations, batched over sets
# ------------------------------------------------------------------------------------------------


@dataclass
class SetMoments:
    """Moments of T sets of m variables: ``values``, ``errors``, ``scales`` (T, number of products:
    the value, its estimated absolute error and E|prod|); ``done`` (T,) False for the sets left to
    the numerical integrator (nearly singular without an exact linear relation, or a zero
    variance); ``kinds`` (T,) 'full', 'planar', 'solid' (with ' (mpmath)' when recomputed at
    ``MP_DIGITS`` digits) or None."""

    values: np.ndarray
    errors: np.ndarray
    scales: np.ndarray
    done: np.ndarray
    kinds: list


@functools.cache
def _orthants(m: int, a_zero: bool) -> tuple:
    return tuple(itertools.product((1, -1), repeat=m)) if not a_zero else ((1,) * m,)


def _signed_probability(S: np.ndarray, P4: tuple, sig: tuple, ar: _Arithmetic) -> tuple:
    """P(sigma z > 0) for T full-rank sets of four variables by inclusion-exclusion over the negative
    signs, 1{z_i < 0} = 1 - 1{z_i > 0}: sum over subsets A of the negative set of
    (-1)^|A| P(z_(pos + A) > 0), so that only the all-positive orthant needs the four-variable
    quadrature (``P4`` = (value, error)); the smaller orthants are Sheppard's closed forms.
    Returns (value, error, |value|), the error with 64 eps of the terms (eps of float64 for the
    extended-precision route, whose P4 is float64)."""
    full, ferr = P4
    pos = [i for i in range(4) if sig[i] > 0]
    neg = [i for i in range(4) if sig[i] < 0]
    val, absum = ar.zeros(S.shape[0]), ar.zeros(S.shape[0])
    for n in range(len(neg) + 1):
        for A in itertools.combinations(neg, n):
            B = sorted(pos + list(A))
            p = ar.convert(full) if len(B) == 4 else _sheppard(ar.convert(S[:, B][:, :, B]), ar)
            val = val + (-1) ** n * p
            absum = absum + p
    eps = _EPS if ar is _LD_ARITHMETIC else ar.eps
    return val, ferr + 64 * eps * absum.astype(np.float64), np.abs(val)


def _orthant4_mp(S: np.ndarray) -> tuple:
    """(P_4, error estimate) for T covariances S (T, 4, 4) in mpmath at the current precision:
    Plackett's six integrals (see :func:`_orthant4`) by mpmath.quad (tanh-sinh), each with its error
    estimate, the correlations from the float64 entries of S."""
    import mpmath

    vals, errs = [], []
    for St in S:
        Sm = mpmath.matrix(St.tolist())
        R = mpmath.matrix(4, 4)
        for i in range(4):
            for j in range(4):
                R[i, j] = Sm[i, j] / mpmath.sqrt(Sm[i, i] * Sm[j, j])
        total, err = mpmath.mpf(1) / 16, 0.0
        for i, j in itertools.combinations(range(4), 2):
            k, l_ = [v for v in range(4) if v not in (i, j)]
            r = R[i, j]
            th1 = mpmath.asin(r)
            total += th1 / (8 * mpmath.pi)
            if r == 0:
                continue

            def g(th, i=i, j=j, k=k, l_=l_, r=r, R=R):
                t = mpmath.sin(th) / r
                b = t * R[i, j]
                ski, skj, sli, slj = t * R[k, i], t * R[k, j], t * R[l_, i], t * R[l_, j]
                det = 1 - b * b
                ckk = 1 - (ski * ski - 2 * b * ski * skj + skj * skj) / det
                cll = 1 - (sli * sli - 2 * b * sli * slj + slj * slj) / det
                ckl = t * R[k, l_] - (ski * sli - b * (ski * slj + skj * sli) + skj * slj) / det
                return mpmath.asin(max(-1, min(1, ckl / mpmath.sqrt(ckk * cll))))

            v, e = mpmath.quad(g, [0, th1], error=True)
            total += v / (4 * mpmath.pi ** 2)
            err += float(e) / (4 * math.pi ** 2)
        vals.append(total)
        errs.append(err)
    return np.array(vals, dtype=object), np.array(errs)


def _full_provider(S, D, group, ar):
    SD = S * np.outer(D, D)
    if S.shape[-1] < 4:
        return _FullRank(SD, None, ar)
    if "P4" not in group:
        if ar is _LD_ARITHMETIC:
            d = np.sqrt(np.einsum("tii->ti", S))
            group["P4"] = _orthant4(S / (d[:, :, None] * d[:, None, :]))
        else:
            group["P4"] = _orthant4_mp(S)
    return _FullRank(SD, _signed_probability(S, group["P4"], tuple(int(v) for v in D), ar), ar)


def _signed_rows(L, D):
    return L * D[None, :, None]


_PROVIDERS = {
    "full": lambda red, D, group, ar: _full_provider(red["S"], D, group, ar),
    "planar": lambda red, D, group, ar: _Planar(_signed_rows(red["L"], D), red["angle_err"], ar),
    "solid": lambda red, D, group, ar: _Solid(_signed_rows(red["L"], D), red["zero"], red["angle_err"], ar),
}
"""How the orthant moments F(P; D S D) of a group of reduced sets are computed, by kind."""
_CONES = ("planar", "solid")


def _group_moments(kind, red, rep, sgn, ratio, lam, prods, a, b, ar=_LD_ARITHMETIC):
    """Values, errors, scales (T, products) of T sets of the same reduced structure."""
    m = len(rep)
    reps = sorted(set(rep))
    gi = [reps.index(rep[i]) for i in range(m)]
    mr = len(reps)
    T = ratio.shape[0]
    C = len(prods)
    val = np.zeros((T, C))
    err = np.zeros((T, C))
    scale = np.zeros((T, C))
    absum = np.zeros((T, C))
    providers: dict = {}
    group: dict = {}
    for c, p in enumerate(prods):
        P = [0] * mr
        for i, (pp, _) in enumerate(p):
            P[gi[i]] += pp
        rfac = np.prod(ratio ** np.array([pp for pp, _ in p], dtype=float)[None, :], axis=1)
        for sig in _orthants(mr, a == 0.0):
            coef = 1.0
            for i, (pp, qq) in enumerate(p):
                s_i = sig[gi[i]] * sgn[i]
                coef *= (b if s_i > 0 else a) ** (pp + qq) * sgn[i] ** pp
            for g in range(mr):
                if sig[g] < 0 and P[g] % 2:
                    coef = -coef
            if coef == 0.0:
                continue
            key = sig if sig[0] > 0 else tuple(-v for v in sig)  # D S D = (-D) S (-D)
            if key not in providers:
                providers[key] = _PROVIDERS[kind](red, np.array(key, dtype=np.float64), group, ar)
            f, fe, fa = providers[key].F(tuple(P))
            w = coef * rfac
            f = np.asarray(f).astype(np.float64)
            val[:, c] += w * f
            scale[:, c] += np.abs(w) * f
            err[:, c] += np.abs(w) * fe
            absum[:, c] += np.abs(w) * np.asarray(fa).astype(np.float64)
    if kind == "full":
        err += absum * ar.eps * np.reshape(np.maximum(64.0, 1.0 / np.maximum(lam, _EPS)), (-1, 1))
    else:
        err += absum * ar.eps * 64
    return val, err + 64 * _EPS * scale, scale


def _mp_recompute(red: _Reduction, prods, a, b) -> tuple:
    """One set at ``MP_DIGITS`` digits from the float64 entries of its (reduced) covariance: full-rank
    sets by the recursion (Plackett's integrals by mpmath.quad), cones with the factor L from the
    same pivoted Cholesky at the extended-precision route's rank."""
    import mpmath

    with mpmath.workdps(MP_DIGITS):
        ar = _mp_arithmetic()
        data = {"S": red.S[None], "L": None, "zero": None if red.zero is None else red.zero[None],
                "angle_err": np.zeros(1)}
        if red.kind in _CONES:
            R, sd = _correlation(red.S, ar)
            L, _, dmin = _rank_factor(R, ar, {"planar": 2, "solid": 3}[red.kind])
            data.update(L=(sd[:, None] * L)[None], angle_err=np.array([16 * ar.eps / math.sqrt(max(dmin, 1e-300))]))
        return _group_moments(red.kind, data, red.rep, red.sgn, red.ratio[None], np.array([red.lam]), prods, a, b, ar)


def set_moments(S: np.ndarray, prods: tuple, a: float, b: float, tol: float | None = None) -> SetMoments:
    """E[prod_i s(z_i)^p_i s'(z_i)^q_i] for z ~ N(0, S_t), S (T, m, m) positive semi-definite, m <= 4,
    for every product ((p_0, q_0), ..., (p_(m-1), q_(m-1))) of ``prods``, with s(x) = b x (x > 0),
    a x (x < 0); on each side the product is c^(p + q) z^p (c = b or a), so q may be negative when
    p + q >= 0 (a monomial z^e times s^p s'^q is the product (p + e, q - e)).  Sets of a (nearly)
    singular S are analysed one by one (exactly parallel variables merged, exact linear relations found:
    :func:`_reduce`); sets of the same reduced structure are computed together, as arrays.  With
    ``tol``: sets whose estimate exceeds tol E|prod| are recomputed with mpmath at ``MP_DIGITS``
    digits (the recursion's cancellation of strongly anti-correlated inputs; the rounding of nearly
    parallel ones)."""
    S = np.asarray(S, dtype=np.float64)
    T, m = S.shape[0], S.shape[-1]
    C = len(prods)
    values, errors, scales = np.zeros((T, C)), np.zeros((T, C)), np.full((T, C), np.nan)
    done = np.zeros(T, dtype=bool)
    kinds: list = [None] * T
    var = np.einsum("tii->ti", S)
    positive = np.all(var > 0, axis=1)
    lam = np.zeros(T)
    if np.any(positive):
        d = np.sqrt(np.where(var > 0, var, 1.0))
        lam[positive] = np.linalg.eigvalsh(S[positive] / (d[positive, :, None] * d[positive, None, :]))[:, 0]
    groups: dict = {}
    reductions: dict = {}
    for t in range(T):
        if positive[t] and lam[t] >= _SCREEN_EIGENVALUE and m != 2:
            red = _Reduction("full", tuple(range(m)), (1,) * m, np.ones(m), S[t], None, lam[t])
        else:
            red = _reduce(S[t])
            if red.kind is None:
                continue
        reductions[t] = red
        groups.setdefault((red.kind, red.rep, red.sgn), []).append(t)
    for (kind, rep, sgn), ts in groups.items():
        reds = [reductions[t] for t in ts]
        data = {name: None if getattr(reds[0], name) is None else np.stack([getattr(r, name) for r in reds])
                for name in ("S", "L", "zero", "angle_err")}
        v, e, s = _group_moments(kind, data, rep, sgn, np.stack([r.ratio for r in reds]),
                                 np.array([r.lam for r in reds]), prods, a, b)
        values[ts], errors[ts], scales[ts] = v, e, s
        done[ts] = True
        for t in ts:
            kinds[t] = kind
    if tol is not None:
        for t, red in reductions.items():
            if np.any(errors[t] > tol * scales[t]):
                values[t], errors[t], scales[t] = (x[0] for x in _mp_recompute(red, prods, a, b))
                kinds[t] = red.kind + " (mpmath)"
    return SetMoments(values, errors, scales, done, kinds)


def min_correlation_eigenvalue(S: np.ndarray) -> float:
    d = np.sqrt(np.diag(S))
    if np.any(d <= 0):
        return 0.0
    return float(np.min(np.linalg.eigvalsh(S / np.outer(d, d))))


def piecewise_linear_moment(S: np.ndarray, powers: tuple, a: float, b: float, cache: dict | None = None
                            ) -> tuple[float, float, float]:
    """(E[prod_i s(z_i)^p_i s'(z_i)^q_i], estimated absolute error, E|prod|) for z ~ N(0, S) of one
    set and one product ``powers`` = ((p_0, q_0), ...) (see :func:`set_moments`).  ``cache`` is
    accepted for compatibility and unused.  Raises ValueError for a set left to the numerical
    integrator (nearly singular without an exact linear relation, or a zero variance)."""
    S = np.asarray(S, dtype=np.float64)
    out = set_moments(S[None], (tuple(tuple(p) for p in powers),), a, b)
    if not out.done[0]:
        raise ValueError("the covariance is nearly singular without an exact linear relation (smallest correlation "
                         f"eigenvalue {min_correlation_eigenvalue(S):.2g} < {MIN_EIGENVALUE:g}) or has a zero variance: "
                         "use the numerical integrator")
    return float(out.values[0, 0]), float(out.errors[0, 0]), float(out.scales[0, 0])
