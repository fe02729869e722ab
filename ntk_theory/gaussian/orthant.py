r"""Truncated Gaussian moments over orthants, exactly: the four-point moments of ReLU-like activations.

For z ~ N(0, S) (m x m, m <= 4, positive definite) and integer powers k,

    F(k; S) = E[z^k 1{z > 0}] = int_(z > 0) prod_i z_i^(k_i) phi_S(z) dz .

**Recursion** (integration by parts, Tallis 1961; Kan & Robotti 2017, "On moments of folded and
truncated multivariate normal distributions", J. Comput. Graph. Stat. 26, eq. 11 with zero mean and
lower limits 0): with z phi_S = -S grad phi_S, for any i with k_i >= 1 and k' = k - e_i,

    F(k; S) = sum_j S_ij [ k'_j F(k' - e_j; S)  +  [k'_j = 0] phi_1(0; S_jj) F(k'_(-j); S_(-j|j)) ],

where the second term is the boundary z_j = 0 of the orthant (present only when z_j's power is 0),
phi_1(0; v) = (2 pi v)^(-1/2) and S_(-j|j) = S_(-j,-j) - S_(-j,j) S_(j,-j) / S_jj is the covariance of
the other variables given z_j = 0.  Conditioning on several variables in turn gives the Schur
complement given all of them at 0 (order independent; one elimination step per variable), so the values
are memoised by (conditioned set, powers).  The recursion ends at orthant probabilities
F(0; S) = P(z > 0):

* m = 0: 1; m = 1: 1/2; m = 2: 1/4 + asin(r_12) / (2 pi) (Sheppard 1899);
* m = 3: 1/8 + (asin r_12 + asin r_13 + asin r_23) / (4 pi) (Sheppard);
* m = 4: Plackett's identity (Plackett 1954, Biometrika 41): along R(t) = I + t (R - I),
  dP/d r_ij = phi_2(0, 0; r_ij) P_2(orthant of (k, l) | z_i = z_j = 0), so

      P_4(R) = 1/16 + sum_(i<j) asin(r_ij) / (8 pi)
               + sum_(i<j) int_0^(asin r_ij) asin(r_(kl|ij)(sin(th) / r_ij)) / (4 pi^2) d th ,

  with r_(kl|ij)(t) the correlation of (z_k, z_l) given z_i = z_j = 0 under R(t); the substitution
  t = sin(th) / r_ij removes the 1 / sqrt(1 - t^2 r_ij^2) peak of near-parallel pairs.  Each
  one-dimensional integral by adaptive Gauss-Kronrod (scipy.integrate.quad), whose error estimate
  is propagated.

**Activations.**  For s(z) = b z (z > 0), a z (z < 0) (ReLU: a = 0, b = 1; leaky ReLU; |z|), on the
orthant with signs sigma, s(z_i) = c_i z_i, s'(z_i) = c_i (c_i = b or a), so

    E[prod_i s(z_i)^p_i s'(z_i)^q_i] = sum_sigma prod_i c_i^(p_i + q_i) sigma_i^(p_i) F(p; D S D),

D = diag(sigma) (orthants with a zero coefficient skipped: one orthant for ReLU), and
E|prod| = sum_sigma |prod_i c_i^(p_i + q_i)| F(p; D S D).  sigma and -sigma share D S D, and the
orthant probabilities of the other orthants follow from the all-positive one by inclusion-exclusion
(1{z_i < 0} = 1 - 1{z_i > 0}) with Sheppard's closed forms, so one quadrature serves a set.

**Accuracy.**  The recursion is exact.  It runs in extended precision (``np.longdouble``, eps_ld =
1.1e-19 on x86-64 Linux): the conditional covariances by one elimination step per conditioned
variable, Sheppard's formulas (m <= 3) and the sums of terms; only Plackett's P_4 is float64 (scipy
quad).  The reported error is the propagated quadrature estimate of P_4 plus the rounding model

    64 eps |P_4| max(1, lambda_min(R)^(-1/2))        (each Plackett integral, float64 integrand)
    + 64 eps E|prod| + eps_ld (sum of |terms|) max(64, 1 / lambda_min(R))   (the recursion).

Measured against the same recursion in mpmath at 30 digits (tests): on two nearly parallel pairs at
lambda_min(R) = 1.5e-8 the actual error is <= 7e-13 relative (the float64 recursion's was 7e-10);
at 1.5e-10 it is 1.2e-10 to 4.3e-10 against a model of 2e-9 to 6e-9 (ratio <= 0.09).  On strongly
anti-correlated sets (C_b = 0, correlations down to -0.96, the terms cancel to a small E|prod|) the
actual error of ssss reaches 5.6e-6 relative against a model of 6e-3, so at the default tolerance
such sets go to the numerical integrator.  From 2e-4 down to 8e-8 the exact route agrees with the
numerical integrator (tol 1e-12) to 1e-14 .. 5e-12 relative.  Sets whose reported error exceeds the
tolerance (or with lambda_min(R) < ``MIN_EIGENVALUE``) are not done here: the caller
(:func:`~ntk_theory.gaussian.fourpoint.four_point_moments`) integrates those numerically.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np

_EPS = float(np.finfo(float).eps)
MIN_EIGENVALUE = 1e-8
"""Smallest eigenvalue of a set's correlation matrix for the exact route (below: numerical)."""


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
        return _orthant4(R)
    raise ValueError(f"orthant probabilities are implemented for m <= 4 variables; got {m}")


def _clip(r: float) -> float:
    return min(1.0, max(-1.0, r))


def _orthant4(R: np.ndarray) -> tuple[float, float]:
    from scipy import integrate

    total = 1.0 / 16.0
    err = 0.0
    eye = np.eye(4)
    for i, j in itertools.combinations(range(4), 2):
        r = R[i, j]
        th1 = math.asin(_clip(r))
        total += th1 / (8 * math.pi)
        if r == 0.0:
            continue
        k, l_ = [v for v in range(4) if v not in (i, j)]

        def g(th, i=i, j=j, k=k, l_=l_, r=r):
            t = math.sin(th) / r
            Rt = eye + t * (R - eye)
            # conditional covariance of (k, l) given (i, j) = 0 under R(t)
            a, b, c = 1.0, Rt[i, j], 1.0
            det = a * c - b * b
            ski, skj, sli, slj = Rt[k, i], Rt[k, j], Rt[l_, i], Rt[l_, j]
            ckk = 1.0 - (c * ski * ski - 2 * b * ski * skj + a * skj * skj) / det
            cll = 1.0 - (c * sli * sli - 2 * b * sli * slj + a * slj * slj) / det
            ckl = Rt[k, l_] - (c * ski * sli - b * (ski * slj + skj * sli) + a * skj * slj) / det
            return math.asin(_clip(ckl / math.sqrt(max(ckk * cll, 1e-300))))

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", integrate.IntegrationWarning)
            val, e = integrate.quad(g, 0.0, th1, epsabs=1e-15, epsrel=1e-13, limit=200)
        if caught:  # roundoff detected: the integrand is resolved to its rounding level, no better
            e = max(e, 1e-13 * abs(th1))
        total += val / (4 * math.pi ** 2)
        err += e / (4 * math.pi ** 2)
    # rounding of the float64 integrand (conditional correlations of nearly parallel inputs):
    # measured 1.9e-10 relative at lambda_min(R) = 1.5e-10 (mpmath reference), 5e-14 at 1.5e-8
    lam = max(float(np.min(np.linalg.eigvalsh(R))), 1e-300)
    return total, err + 64 * _EPS * abs(total) * max(1.0, 1.0 / math.sqrt(lam))


_LD = np.longdouble
_EPS_LD = float(np.finfo(np.longdouble).eps)  # 1.1e-19 with x87 extended precision (x86-64 Linux)
_PI_LD = np.arccos(_LD(-1))


def _sheppard(C: np.ndarray):
    """P(z > 0) for m <= 3 in the precision of C (extended in the recursion)."""
    m = C.shape[0]
    if m == 0:
        return _LD(1)
    d = np.sqrt(np.diag(C))
    R = C / np.outer(d, d)
    pairs = sum((np.arcsin(np.clip(R[a, b], -1, 1)) for a, b in itertools.combinations(range(m), 2)), _LD(0))
    return _LD(1) / 2 ** m + (pairs / (2 * _PI_LD) if m == 2 else pairs / (4 * _PI_LD))


class _Orthant:
    """F(k; S_(R|J)) for one positive-definite S (m <= 4), memoised by (conditioned set J, powers).

    The conditional covariances and the recursion run in extended precision (np.longdouble): the
    Schur complements of nearly parallel inputs cancel (conditional variances ~ lambda_min S), and
    their rounding, amplified by the recursion's 1 / sqrt(C_jj) factors and by asin near +-1, was
    the error of the float64 version (7e-10 relative at lambda_min = 1.5e-8; P_4 itself stays at
    5e-14 there)."""

    def __init__(self, S: np.ndarray, probability: tuple | None = None):
        self.S = np.asarray(S, dtype=_LD)
        self.m = S.shape[0]
        self.memo: dict = {}
        self.cond: dict = {frozenset(): (tuple(range(self.m)), self.S)}
        if probability is not None:  # P(z > 0) of the whole set, given (value, error, |terms|)
            v, e, a = probability
            self.memo[(frozenset(), (0,) * self.m)] = (_LD(v), e + 64 * _EPS * a, _LD(abs(v)))

    def conditional(self, J: frozenset) -> tuple[tuple, np.ndarray]:
        """(remaining variables, their covariance given z_J = 0): one elimination step from the
        conditional covariance given J minus its largest member."""
        if J not in self.cond:
            v = max(J)
            rest, C = self.conditional(J - {v})
            p = rest.index(v)
            C = C - np.outer(C[:, p], C[p, :]) / C[p, p]
            keep = [q for q in range(len(rest)) if q != p]
            C = C[np.ix_(keep, keep)]
            self.cond[J] = (tuple(rest[q] for q in keep), 0.5 * (C + C.T))
        return self.cond[J]

    def F(self, J: frozenset, k: tuple) -> tuple:
        """(F, propagated quadrature error, sum of |terms|) for powers k of the variables not in J,
        given z_J = 0 (without the density of z_J)."""
        key = (J, k)
        if key in self.memo:
            return self.memo[key]
        rest, C = self.conditional(J)
        if all(p == 0 for p in k):
            if len(rest) <= 3:
                v = _sheppard(C)
                out = (v, 0.0, abs(v))
            else:
                v, e = orthant_probability(np.asarray(C, dtype=np.float64))
                out = (_LD(v), e, _LD(abs(v)))
        else:
            i = next(n for n, p in enumerate(k) if p > 0)
            kp = list(k)
            kp[i] -= 1
            val, err, absum = _LD(0), 0.0, _LD(0)
            for j in range(len(rest)):
                cij = C[i, j]
                if cij == 0.0:
                    continue
                if kp[j] > 0:
                    kk = list(kp)
                    kk[j] -= 1
                    fv, fe, fa = self.F(J, tuple(kk))
                    t = cij * kp[j]
                else:
                    J2 = J | {rest[j]}
                    kk = tuple(p for n, p in enumerate(kp) if n != j)
                    fv, fe, fa = self.F(J2, kk)
                    t = cij / np.sqrt(2 * _PI_LD * C[j, j])
                val += t * fv
                err += abs(float(t)) * fe
                absum += abs(t) * fa
            out = (val, err, absum)
        self.memo[key] = out
        return out


def _signed_probability(S: np.ndarray, sig: tuple, cache: dict) -> tuple[float, float, float] | None:
    """P(sigma z > 0) by inclusion-exclusion over the negative signs, 1{z_i < 0} = 1 - 1{z_i > 0}:
    sum over subsets A of the negative set of (-1)^|A| P(z_(pos + A) > 0), so that only the
    all-positive orthant of the whole set needs the four-variable quadrature (done once per set,
    ``cache["P"]``); the smaller orthants are Sheppard's closed forms.  None for m < 4 (closed
    forms anyway)."""
    m = S.shape[0]
    if m < 4:
        return None
    if "P" not in cache:
        cache["P"] = orthant_probability(S)
    full, ferr = cache["P"]
    pos = [i for i in range(m) if sig[i] > 0]
    neg = [i for i in range(m) if sig[i] < 0]
    val = absum = 0.0
    for r in range(len(neg) + 1):
        for A in itertools.combinations(neg, r):
            B = sorted(pos + list(A))
            p = full if len(B) == m else orthant_probability(S[np.ix_(B, B)])[0]
            val += (-1) ** r * p
            absum += p
    return val, ferr, absum


def min_correlation_eigenvalue(S: np.ndarray) -> float:
    d = np.sqrt(np.diag(S))
    if np.any(d <= 0):
        return 0.0
    return float(np.min(np.linalg.eigvalsh(S / np.outer(d, d))))


@functools.lru_cache(maxsize=None)
def _orthants(m: int, a_zero: bool) -> tuple:
    return tuple(itertools.product((1, -1), repeat=m)) if not a_zero else ((1,) * m,)


def piecewise_linear_moment(S: np.ndarray, powers: tuple, a: float, b: float, cache: dict | None = None
                            ) -> tuple[float, float, float]:
    """(E[prod_i s(z_i)^p_i s'(z_i)^q_i], estimated absolute error, E|prod|) for z ~ N(0, S) and
    s(z) = b z (z > 0), a z (z < 0); ``powers`` = ((p_0, q_0), ...).  S must be positive definite
    (see :func:`min_correlation_eigenvalue`).  ``cache``: a dict shared between calls on the same S
    (keyed by the orthant)."""
    m = S.shape[0]
    lam = max(min_correlation_eigenvalue(S), _EPS)
    cache = {} if cache is None else cache
    val = err = scale = absum = 0.0
    for sig in _orthants(m, a == 0.0):
        coef = 1.0
        sign = 1.0
        for v, (p, q) in enumerate(powers):
            c = b if sig[v] > 0 else a
            coef *= c ** (p + q)
            if sig[v] < 0 and p % 2:
                sign = -sign
        if coef == 0.0:
            continue
        key = sig if sig[0] > 0 else tuple(-v for v in sig)  # D S D = (-D) S (-D)
        if key not in cache:
            D = np.array(key, dtype=np.float64)
            cache[key] = _Orthant(S * np.outer(D, D), _signed_probability(S, key, cache))
        orth = cache[key]
        f, fe, fa = orth.F(frozenset(), tuple(p for p, _ in powers))
        f, fa = float(f), float(fa)
        val += sign * coef * f
        scale += abs(coef) * f
        err += abs(coef) * fe
        absum += abs(coef) * fa
    return val, err + 64 * _EPS * scale + absum * _EPS_LD * max(64.0, 1.0 / lam), scale
