r"""Finite-width recursions for N inputs: tensors over sample indices (docs/finite_width.md, PDLT ch. 4, 8).

Index conventions (n = hidden width, i != j two neurons of one layer):

    V[a, b, c, d] = V_(ab)(cd) = n (E[z_i;a z_i;b z_j;c z_j;d] - E[z_i;a z_i;b] E[z_j;c z_j;d])
    A[a, b, c, d] = A_(ab)(cd) = n Cov(Theta_ii;ab, Theta_jj;cd)
    B[p, q, r, s] = B_(pq)(rs) = n E[Theta_ij;pr Theta_ij;qs]
    D[a, b, c, d] = D_abcd     = n Cov(Theta_ii;ab, z_j;c z_j;d)
    F[p, q, r, s] = F_(pq)(rs) = n E[Theta_ij;pr z_i;q z_j;s]
    K1, Th1 (N, N):  E[z_i;a z_i;b] = K_ab + K1_ab / n,  E[Theta_ii;ab] = Theta_ab + Th1_ab / n

With <.> the Gaussian average over z ~ N(0, K) of the current layer, ss = <s_a s_b>,
dd = <s'_a s'_b>, ssss = <s_a s_b s_c s_d>, ddss[a,b,c,d] = <s'_a s'_b s_c s_d>,
dddd = <s'_a s'_b s'_c s'_d>; R[a,b,e,f] = d<s_a s_b>/dK_ef and Rd likewise for dd (ordered
pairs, :mod:`.twopoint`); Qs(V), Qd(V) the Taylor terms (1/2) sum d2<.>/dK dK V; G[p,q,e] =
<d_e (s'_p s_q)>; Y_ab = lambda_W s_a s_b + C_W Theta_ab s'_a s'_b, RY = lambda_W R + C_W Theta Rd;
r = n_l / n_(l-1)::

    K'   = C_b + C_W ss                         Th' = lambda_b + lambda_W ss + C_W dd Th
    V'   = C_W^2 (ssss - ss ss) + r C_W^2 R V R
    K1'  = r C_W (R K1 + Qs(V))
    A'   = Cov(Y, Y) + r [RY V RY + (RY C_W dd D  + its (ab)<->(cd) transpose) + C_W^2 dd dd A]
    B'   = C_W^2 dddd_pqrs Th_pr Th_qs + r C_W^2 dd_pq dd_rs B_pqrs
    D'   = C_W [lambda_W (ssss - ss ss) + C_W Th_ab (ddss_abcd - dd_ab ss_cd)]
           + r [C_W RY V R + C_W^2 dd_ab (D R)_abcd]
    F'   = C_W^2 ddss_prqs Th_pr + r C_W^2 sum_ef G_pqe G_rsf F_perf
    Th1' = r { lambda_W (R K1 + Qs(V)) + C_W [Th (Rd K1 + Qd(V)) + dd Th1
                                              + sum_ef (D_abef + F_aebf + F_afbe) Rd_abef] }

(products of the form X V Y mean sum_(ef, gh) X_ab,ef V_efgh Y_cd,gh).  For N = 1 these reduce
to :mod:`.single` (a test checks it).  The readout (layer L+1) gives the network's predictions:
Cov(Theta_ab, Theta_cd) = (A_abcd + B_acbd + B_adbc)/n and the output cumulant
(V_abcd + V_acbd + V_adbc)/n.

Storage: the tensors are dense (N, N, N, N) float64 arrays (the contractions are einsums of at
most N^6 operations); the four-point Gaussian averages, the expensive part, are computed once per
distinct index multiset (:mod:`ntk_theory.numerics.fourpoint`).  Duplicate inputs are computed
once and their indices expanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .twopoint import TwoPoint, derivative_tensors, stein_factors

TENSORS = ("K", "Th", "V", "K1", "A", "B", "D", "F", "Th1")


@dataclass
class TensorState:
    K: np.ndarray
    Th: np.ndarray
    V: np.ndarray
    K1: np.ndarray
    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    F: np.ndarray
    Th1: np.ndarray
    error: float = field(default=0.0, compare=False)

    @classmethod
    def first_layer(cls, K, Th) -> "TensorState":
        N = K.shape[0]
        z2, z4 = np.zeros((N, N)), np.zeros((N,) * 4)
        return cls(K, Th, z4, z2, z4.copy(), z4.copy(), z4.copy(), z4.copy(), z2.copy())

    def expand(self, inv) -> "TensorState":
        """Index expansion from distinct inputs to the original (duplicates) order."""
        out = {}
        for name in TENSORS:
            t = getattr(self, name)
            out[name] = t[np.ix_(*([inv] * t.ndim))]
        return TensorState(**out, error=self.error)

    @property
    def ntk_covariance(self) -> np.ndarray:
        """C_abcd = A_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc): Cov(Theta_ab, Theta_cd) = C_abcd / n."""
        return self.A + self.B.transpose(0, 2, 1, 3) + self.B.transpose(0, 2, 3, 1)

    @property
    def output_cumulant(self) -> np.ndarray:
        """V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc): n times the connected four-point function."""
        return self.V + self.V.transpose(0, 2, 1, 3) + self.V.transpose(0, 2, 3, 1)


def four_point_by_expectn(act, K, tol=1e-10):
    """ssss, ddss, dddd and the largest error by :func:`ntk_theory.numerics.quadrature.expectn`
    (NumPy nested quadrature, one call per index multiset: slow, for small N and for checks)."""
    import itertools

    from ..numerics.quadrature import expectn

    N = K.shape[0]
    s, ds = act.numpy, act.numpy_derivative
    kinks = tuple(act.kinks) or (0.0,)
    out = {name: np.zeros((N,) * 4) for name in ("ssss", "ddss", "dddd")}
    err = 0.0
    cache = {}

    def E(fs, idx):
        nonlocal err
        key = tuple(sorted(zip(idx, [id(f) for f in fs])))
        if key not in cache:
            r = expectn(fs, K[np.ix_(idx, idx)], kinks=[kinks] * 4, tol=tol)
            err = max(err, r.error)
            cache[key] = r.value
        return cache[key]

    for idx in itertools.product(range(N), repeat=4):
        idx = list(idx)
        out["ssss"][tuple(idx)] = E([s, s, s, s], idx)
        out["ddss"][tuple(idx)] = E([ds, ds, s, s], idx)
        out["dddd"][tuple(idx)] = E([ds, ds, ds, ds], idx)
    return out["ssss"], out["ddss"], out["dddd"], err


def _four_point(act, K, tol, progress=None, map=None):
    try:
        from ..gaussian.fourpoint import four_point_moments
    except ImportError:  # pragma: no cover - until the compiled module exists
        return four_point_by_expectn(act, K, tol)

    m = four_point_moments(act, K, tol=tol, progress=progress, map=map)
    err = max(float(np.max(getattr(m, name))) for name in ("error_ssss", "error_ddss", "error_dddd"))
    return m.ssss, m.ddss, m.dddd, err


def step(st: TensorState, act, tp_ss: TwoPoint, tp_dd: TwoPoint, C_W, C_b, lam_b, lam_W, r=1.0,
         tol=1e-10, progress=None, map=None) -> TensorState:
    """One layer of the N-input recursion (see the module docstring); ``progress`` for the four-point
    moments' bar (:func:`ntk_theory.progress.progress_bar`); ``map`` where their numerically integrated
    input sets run (:func:`ntk_theory.gaussian.fourpoint.four_point_moments`; None: this process)."""
    K, Th = st.K, st.Th
    S = derivative_tensors(tp_ss, K)
    Dd = derivative_tensors(tp_dd, K)
    ss, dd, R, Rd = S.value, Dd.value, S.R, Dd.R
    ssss, ddss, dddd, err4 = _four_point(act, K, tol, progress, map)
    ein = np.einsum
    outer = np.multiply.outer
    cov_ss = ssss - outer(ss, ss)
    RY = lam_W * R + C_W * Th[:, :, None, None] * Rd
    cov_Y = (lam_W**2 * cov_ss
             + lam_W * C_W * Th[None, None] * (ddss.transpose(2, 3, 0, 1) - outer(ss, dd))
             + lam_W * C_W * Th[:, :, None, None] * (ddss - outer(dd, ss))
             + C_W**2 * outer(Th, Th) * (dddd - outer(dd, dd)))

    def sandwich(X, T, Y):  # sum_(ef, gh) X_ab,ef T_efgh Y_cd,gh
        return ein("abef,efcd->abcd", ein("abef,efgh->abgh", X, T, optimize=True), Y.transpose(2, 3, 0, 1),
                   optimize=True)

    X = ein("abef,cdef->abcd", RY, C_W * dd[:, :, None, None] * st.D, optimize=True)
    DR = ein("abef,cdef->abcd", st.D, R, optimize=True)
    G = stein_factors(S)
    Fsum = st.D + ein("aebf->abef", st.F) + ein("afbe->abef", st.F)
    new = TensorState(
        K=C_b + C_W * ss,
        Th=lam_b + lam_W * ss + C_W * dd * Th,
        V=C_W**2 * cov_ss + r * C_W**2 * sandwich(R, st.V, R),
        K1=r * C_W * (ein("abef,ef->ab", R, st.K1) + S.taylor(st.V)),
        A=cov_Y + r * (sandwich(RY, st.V, RY) + X + X.transpose(2, 3, 0, 1)
                       + C_W**2 * outer(dd, dd) * st.A),
        B=C_W**2 * dddd * ein("pr,qs->pqrs", Th, Th) + r * C_W**2 * outer(dd, dd) * st.B,
        D=C_W * (lam_W * cov_ss + C_W * Th[:, :, None, None] * (ddss - outer(dd, ss)))
        + r * (C_W * sandwich(RY, st.V, R) + C_W**2 * dd[:, :, None, None] * DR),
        F=C_W**2 * ein("prqs,pr->pqrs", ddss, Th)
        + r * C_W**2 * ein("pqe,rsf,perf->pqrs", G, G, st.F, optimize=True),
        Th1=r * (lam_W * (ein("abef,ef->ab", R, st.K1) + S.taylor(st.V))
                 + C_W * (Th * (ein("abef,ef->ab", Rd, st.K1) + Dd.taylor(st.V)) + dd * st.Th1
                          + ein("abef,abef->ab", Fsum, Rd))),
        error=max(S.error, Dd.error, err4),
    )
    return new
