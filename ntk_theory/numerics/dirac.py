r"""Gaussian averages of derivatives of piecewise-linear activations, Dirac terms included, exactly.

For s(x) = b x (x > 0), a x (x < 0) (relu, leaky_relu, abs) and z ~ N(0, S) (m <= 4 variables), the averages

    E[prod_i f_i^(k_i)(z_i)],        f_i = s^(p_i) s'^(q_i)   (one function of z_i per variable)

where f^(k) is the k-th derivative *of the product* f_i in the sense of distributions: s'' = (b - a) delta,
(s'^2)' = (b^2 - a^2) delta, (s'^2)'' = (b^2 - a^2) delta', ...  This is the limit of smooth activations
s_beta -> s (e.g. softplus(beta x) / beta for relu): f_beta = s_beta^p s_beta'^q -> f and its derivatives
converge as distributions, so their Gaussian averages converge.  It is also what Price's theorem gives for a
network's pointwise functions: d E[f(z)] / dS_ii = (1/2) E[f''(z)] holds for the distributional f''.
Splitting f^(k) by Leibniz' rule into products of s'' and s''' at one point (s''' s' + s''^2, delta' H +
delta^2 for relu) is what must *not* be done: those products have no meaning on their own (for a smooth
family each diverges like beta, their sum converges); so coincident factors on one variable are always
taken as one function f_i, and only f_i is differentiated.

**Method: Gaussian integration by parts onto the density.**  With D = {i : k_i > 0} and R the other
variables (which f_D does not depend on), u = z_D - B z_R the residual of z_D given z_R
(B = S_DR S_RR^+), C = Cov(u) = S_DD - B S_RD, Pr = C^-1 and y = Pr u:

    E[prod_(i in D) f_i^(k_i)(z_i) h(z_R)] = E[prod_(i in D) f_i(z_i) h(z_R) W_k(y)],
    W_0 = 1,   W_(k + e_v)(y) = y_v W_k(y) - sum_w Pr_vw dW_k/dy_w

(W_k = (-1)^|k| d^k p / p for the conditional density p of z_D given z_R: the multivariate Hermite
polynomial; W_(e_v) = y_v, W_(e_v + e_w) = y_v y_w - Pr_vw).  The boundary terms vanish (f_i is continuous
or has a jump, times a Gaussian tail).  W_k expanded in the monomials of z leaves, on each orthant,
prod_i c_i^(p_i + q_i) z_i^(p_i + e_i): the exact truncated orthant moments of :mod:`.orthant`
(:func:`.orthant.set_moments` with the product (p_i + e_i, q_i - e_i)).  No delta is integrated.

**Error model.**  The orthant moments' propagated estimates (``sum_e |w_e| err_e``, w_e the monomial weights)
plus the rounding of the weighted sum, 64 eps sum_e |w_e| E|prod_e|.  The weights grow like C^(-|k|/2): when a
differentiated variable is (nearly) a linear function of the others (smallest eigenvalue of C's correlation
below ``MIN_CONDITIONAL`` times its unconditional variance) the average is a product of Dirac terms at one
point and is refused (ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import orthant

__all__ = ["MIN_CONDITIONAL", "DiracMoments", "derivative_product_moments"]

_EPS = float(np.finfo(float).eps)
MIN_CONDITIONAL = 1e-10
"""Smallest conditional variance (relative to the variance) of a differentiated variable given the others."""


@dataclass
class DiracMoments:
    """``values``, ``errors`` (T,): the averages of T sets and their estimated absolute errors."""

    values: np.ndarray
    errors: np.ndarray


def _add(poly: dict, e: tuple, pm: tuple, c: int) -> None:
    slot = poly.setdefault(e, {})
    slot[pm] = slot.get(pm, 0) + c
    if slot[pm] == 0:
        del slot[pm]


def _hermite(k: tuple) -> dict:
    """W_k of the module docstring with symbolic Pr entries: {y exponent tuple: {Pr monomial (tuple of (v, w)
    index pairs): integer coefficient}}."""
    d = len(k)
    poly = {(0,) * d: {(): 1}}
    for v, kv in enumerate(k):
        for _ in range(kv):
            new: dict = {}
            for e, coefs in poly.items():
                up = list(e)
                up[v] += 1
                for pm, c in coefs.items():
                    _add(new, tuple(up), pm, c)
                    for w in range(d):
                        if e[w]:
                            down = list(e)
                            down[w] -= 1
                            _add(new, tuple(down), tuple(sorted(pm + (tuple(sorted((v, w))),))), -c * e[w])
            poly = {e: c for e, c in new.items() if c}
    return poly


def _linear_power(Lrow: np.ndarray, power: int, m: int) -> dict:
    """(Lrow . z)^power as {z exponent tuple: (T,) coefficients} (Lrow (T, m))."""
    out = {(0,) * m: np.ones(Lrow.shape[0])}
    for _ in range(power):
        new: dict = {}
        for e, c in out.items():
            for j in range(m):
                f = list(e)
                f[j] += 1
                f = tuple(f)
                new[f] = new.get(f, 0.0) + c * Lrow[:, j]
        out = new
    return out


def _multiply(p: dict, q: dict) -> dict:
    out: dict = {}
    for e, c in p.items():
        for f, g in q.items():
            h = tuple(x + y for x, y in zip(e, f))
            out[h] = out.get(h, 0.0) + c * g
    return out


def _weights(S: np.ndarray, k: tuple) -> dict:
    """W_k (module docstring) as a polynomial in z: {z exponent tuple: (T,) coefficients} for T sets S."""
    T, m = S.shape[0], S.shape[-1]
    D = [i for i in range(m) if k[i] > 0]
    R = [i for i in range(m) if k[i] == 0]
    if not D:
        return {(0,) * m: np.ones(T)}
    SDD, SDR, SRR = S[:, D][:, :, D], S[:, D][:, :, R], S[:, R][:, :, R]
    B = SDR @ np.linalg.pinv(SRR, hermitian=True) if R else np.zeros((T, len(D), 0))
    C = SDD - B @ np.swapaxes(SDR, 1, 2)
    sd = np.sqrt(np.einsum("tii->ti", SDD))
    lam = np.linalg.eigvalsh(C / (sd[:, :, None] * sd[:, None, :]))[:, 0]
    if np.any(lam < MIN_CONDITIONAL):
        raise ValueError("a Dirac term's variable is (nearly) a linear function of the other variables (relative "
                         f"conditional variance {lam.min():.2g} < {MIN_CONDITIONAL:g}): the average is a product of "
                         "Dirac terms at one point; use linearly independent inputs")
    Pr = np.linalg.inv(C)
    U = np.zeros((T, len(D), m))
    U[:, np.arange(len(D)), D] = 1.0
    if R:
        U[:, :, R] = -B
    L = Pr @ U  # y = L z
    out: dict = {}
    for e, coefs in _hermite(tuple(k[i] for i in D)).items():
        scalar = np.zeros(T)
        for pm, c in coefs.items():
            term = np.full(T, float(c))
            for v, w in pm:
                term = term * Pr[:, v, w]
            scalar = scalar + term
        mono = {(0,) * m: scalar}
        for v, ev in enumerate(e):
            if ev:
                mono = _multiply(mono, _linear_power(L[:, v], ev, m))
        for f, c in mono.items():
            out[f] = out.get(f, 0.0) + c
    return out


def derivative_product_moments(S, factors, a: float, b: float, tol: float | None = None) -> DiracMoments:
    r"""E[prod_i f_i^(k_i)(z_i)] for z ~ N(0, S_t), S (T, m, m), m <= 4, one value per set.

    ``factors`` ((p_i, q_i, k_i), ...) (m entries, the same for every set): f_i = s^(p_i) s'^(q_i) with
    p_i + q_i >= 1 and s(x) = b x (x > 0), a x (x < 0); f_i^(k_i) its k_i-th derivative as a distribution
    (Dirac terms at 0 included; module docstring).  ``tol`` is passed to :func:`.orthant.set_moments` (sets
    whose estimate exceeds tol E|prod| are recomputed in mpmath).  Raises ValueError for a set left to the
    numerical integrator (nearly singular without an exact relation, or a zero variance) and for a
    differentiated variable that is (nearly) a linear function of the others."""
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 3 or S.shape[1] != S.shape[2] or S.shape[1] != len(factors) or not 1 <= S.shape[1] <= 4:
        raise ValueError(f"S must be (T, m, m) with m = len(factors) in 1..4; got shape {S.shape} and "
                         f"{len(factors)} factors")
    for p, q, k in factors:
        if min(p, q, k) < 0 or p + q < 1:
            raise ValueError(f"each factor (p, q, k) needs p, q, k >= 0 and p + q >= 1; got {(p, q, k)}")
    k = tuple(int(f[2]) for f in factors)
    W = _weights(S, k)
    exps = sorted(W)
    prods = tuple(tuple((p + e, q - e) for (p, q, _), e in zip(factors, ex)) for ex in exps)
    res = orthant.set_moments(S, prods, float(a), float(b), tol=tol)
    if not np.all(res.done):
        raise ValueError("a covariance is nearly singular without an exact linear relation, or has a zero "
                         f"variance (smallest correlation eigenvalue "
                         f"{min(orthant.min_correlation_eigenvalue(s) for s in S[~res.done]):.2g})")
    w = np.stack([W[e] for e in exps], axis=1)  # (T, products)
    values = np.sum(w * res.values, axis=1)
    errors = np.sum(np.abs(w) * (res.errors + 64 * _EPS * res.scales), axis=1)
    return DiracMoments(values, errors)
