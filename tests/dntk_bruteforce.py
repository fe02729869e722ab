r"""A brute-force Monte Carlo of the dNTK's P and Q for tests: exact second directional derivatives of many
random MLPs at once, written out by hand (independent of ntk_theory.finite_width).

For each network (batched over networks with NumPy), with directions d = (j, b) (output neuron j, input b),
reverse mode gives delta_d(l) = dz_(j;b)(L+1) / dz(l)_b, and v_d = Lambda grad z_(j;b) has, in layer l, the
rank-one weight part (lambda_W / n_(l-1)) delta_d(l) s_b(l-1)^T and bias part lambda_b delta_d(l).  Forward
mode pushes the tangents t_d(l)_a = Dz(l)_a . v_d and the second tangents T_(d1 d2)(l)_a = D^2 z(l)_a[v_d1, v_d2]:

    t(l+1)_a  = c delta_d(l+1) (s_b . s_a) + lambda_b delta_d(l+1) + W (s'_a t_d(l)_a)
    T(l+1)_a  = c delta_d1(l+1) (s_b1 . (s'_a t_d2,a)) + c delta_d2(l+1) (s_b2 . (s'_a t_d1,a))
                + W (s''_a t_d1,a t_d2,a + s'_a T(l)_a)                          (c = lambda_W / n_l)

with s'' the pointwise second derivative (0 almost everywhere for piecewise-linear s).  Then
dH_(i0 i1 i2; a0 a1 a2) = T_((i1,a1),(i2,a2))(L+1)_(a0, i0), and over ordered pairs i != j of output neurons
P_abcd = n E[dH_(ijj;abc) z_(i;d)], Q_abcd = n E[dH_(iij;abc) z_(j;d)], n the last hidden width.
"""

from __future__ import annotations

import numpy as np

ACTS = {
    "tanh": (np.tanh, lambda z: 1 / np.cosh(z) ** 2, lambda z: -2 * np.tanh(z) / np.cosh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float), lambda z: np.zeros_like(z)),
    "erf": None,
    "linear": (lambda z: z, np.ones_like, np.zeros_like),
}


def _erf():
    from scipy.special import erf

    c = 2 / np.sqrt(np.pi)
    return erf, lambda z: c * np.exp(-z**2), lambda z: -2 * c * z * np.exp(-z**2)


def activation(name):
    return _erf() if name == "erf" else ACTS[name]


def sample_params(rng, widths, C_W, C_b, B):
    L1 = len(widths) - 1
    C_W = np.broadcast_to(np.asarray(C_W, float), (L1,))
    C_b = np.broadcast_to(np.asarray(C_b, float), (L1,))
    Ws = [rng.standard_normal((B, widths[l + 1], widths[l])) * np.sqrt(C_W[l] / widths[l]) for l in range(L1)]
    bs = [rng.standard_normal((B, widths[l + 1])) * np.sqrt(C_b[l]) for l in range(L1)]
    return Ws, bs


def _layers(s, X, Ws, bs):
    """The forward pass of every network: hs = [X, s(z(1)), ...] and zs = [z(1), ..., z(L+1)], each (B, N, n)."""
    hs, zs = [np.broadcast_to(X, (Ws[0].shape[0],) + X.shape)], []
    for W, b in zip(Ws, bs):
        z = np.einsum("bij,bnj->bni", W, hs[-1]) + b[:, None, :]
        zs.append(z)
        hs.append(s(z))
    return hs, zs


def second_tangents(act, X, Ws, bs, lams):
    """z (B, N, O) of the readout, t (B, D, N, O) and T (B, D, D, N, O) with D = O N directions (j, b)
    ordered j-major; ``lams`` = [(lambda_b, lambda_W)] per layer."""
    s, ds, d2s = act
    B = Ws[0].shape[0]
    N = X.shape[0]
    L1 = len(Ws)
    # forward
    hs, zs = _layers(s, X, Ws, bs)
    O = zs[-1].shape[-1]
    D = O * N
    jj, bb = np.repeat(np.arange(O), N), np.tile(np.arange(N), O)
    # reverse: delta_d(l) (B, D, n_l) at input b of d
    deltas = [None] * L1
    delta = np.zeros((B, D, O))
    delta[:, np.arange(D), jj] = 1.0
    deltas[-1] = delta
    for l in range(L1 - 1, 0, -1):
        back = np.einsum("bdi,bij->bdj", deltas[l], Ws[l])
        deltas[l - 1] = back * ds(zs[l - 1][:, bb, :])
    # forward tangents
    t = T = None
    for l in range(L1):
        lam_b, lam_W = lams[l]
        c = lam_W / hs[l].shape[-1]
        g = np.einsum("bdk,bak->bda", hs[l][:, bb, :], hs[l])           # s_b . s_a  (B, D, N)
        t_new = (c * g[..., None] + lam_b) * deltas[l][:, :, None, :]    # (B, D, N, n)
        if l == 0:
            T_new = np.zeros((B, D, D, N, Ws[0].shape[1]))
        else:
            dsa = ds(zs[l - 1])                                          # (B, N, n_(l))
            st = dsa[:, None] * t                                        # s'_a t_d,a  (B, D, N, n)
            proj = np.einsum("bek,bdak->beda", hs[l][:, bb, :], st)      # [b, e, d, a] = s_b(e) . (s'_a t_d,a)
            T_new = c * (deltas[l][:, :, None, None, :] * proj[..., None]
                         + deltas[l][:, None, :, None, :] * proj.transpose(0, 2, 1, 3)[..., None])
            inner = d2s(zs[l - 1])[:, None, None] * t[:, :, None] * t[:, None, :] + dsa[:, None, None] * T
            T_new = T_new + np.einsum("bij,bdeaj->bdeai", Ws[l], inner)
            t_new = t_new + np.einsum("bij,bdaj->bdai", Ws[l], st)
        t, T = t_new, T_new
    return zs[-1], t, T


def estimate_PQ(act_name, X, widths, *, C_W, C_b, lams, samples, seed, chunk=500):
    """(P, Q, SE(P), SE(Q)) at the readout, n = widths[-2]; per network the average over ordered output
    pairs i != j, standard errors over networks."""
    act = activation(act_name)
    rng = np.random.default_rng(seed)
    N = X.shape[0]
    O = widths[-1]
    n = widths[-2]
    Ps, Qs = [], []
    done = 0
    while done < samples:
        B = min(chunk, samples - done)
        Ws, bs = sample_params(rng, widths, C_W, C_b, B)
        z, _, T = second_tangents(act, X, Ws, bs, lams)
        T6 = T.reshape(B, O, N, O, N, N, O)              # [b, j1, a1, j2, a2, a0, i0]
        Pb = np.zeros((B,) + (N,) * 4)
        Qb = np.zeros((B,) + (N,) * 4)
        for i in range(O):
            for j in range(O):
                if i == j:
                    continue
                dP = T6[:, j, :, j, :, :, i].transpose(0, 3, 1, 2)      # [b, a0, a1, a2]
                Pb += dP[..., None] * z[:, None, None, None, :, i]
                dQ = T6[:, i, :, j, :, :, i].transpose(0, 3, 1, 2)
                Qb += dQ[..., None] * z[:, None, None, None, :, j]
        npairs = O * (O - 1)
        Ps.append(n * Pb / npairs)
        Qs.append(n * Qb / npairs)
        done += B
    Ps, Qs = np.concatenate(Ps), np.concatenate(Qs)
    se = lambda a: a.std(axis=0, ddof=1) / np.sqrt(a.shape[0])
    return Ps.mean(0), Qs.mean(0), se(Ps), se(Qs)


def _forward(s, X, Ws, bs):
    h = np.broadcast_to(X, (Ws[0].shape[0],) + X.shape)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = np.einsum("bij,bnj->bni", W, h) + b[:, None, :]
        h = s(z)
    return z


def directions(act, X, Ws, bs, lams):
    """v_d = Lambda grad z_(j;b) per layer as (dW (B, D, n_out, n_in), db (B, D, n_out)), d = (j, b) j-major."""
    s, ds, _ = act
    B, N, L1 = Ws[0].shape[0], X.shape[0], len(Ws)
    hs, zs = _layers(s, X, Ws, bs)
    O = zs[-1].shape[-1]
    D = O * N
    jj, bb = np.repeat(np.arange(O), N), np.tile(np.arange(N), O)
    delta = np.zeros((B, D, O))
    delta[:, np.arange(D), jj] = 1.0
    out = [None] * L1
    for l in range(L1 - 1, -1, -1):
        lam_b, lam_W = lams[l]
        out[l] = (lam_W / hs[l].shape[-1] * delta[..., None] * hs[l][:, bb, None, :], lam_b * delta)
        if l:
            delta = np.einsum("bdi,bij->bdj", delta, Ws[l]) * ds(zs[l - 1][:, bb, :])
    return out


def estimate_PQ_differences(act_name, X, widths, *, C_W, C_b, lams, samples, seed, h, chunk=2000):
    """P, Q and their SE as :func:`estimate_PQ`, but D^2 z[v1, v2] by central second differences of the forward
    pass along the fixed directions v1 +- v2 (polarisation), step h: for kinked s the ensemble average then
    includes the neurons that cross a kink within the step (the derivative of the ensemble average; bias O(h^2))."""
    act = activation(act_name)
    s = act[0]
    rng = np.random.default_rng(seed)
    N, O, n = X.shape[0], widths[-1], widths[-2]
    D = O * N
    Ps, Qs = [], []
    done = 0
    while done < samples:
        B = min(chunk, samples - done)
        Ws, bs = sample_params(rng, widths, C_W, C_b, B)
        z0 = _forward(s, X, Ws, bs)
        dirs = directions(act, X, Ws, bs, lams)

        def second(c1, d1, c2, d2, Ws=Ws, bs=bs, dirs=dirs, z0=z0):  # (z(th + h u) - 2 z + z(th - h u)) / h^2
            zs = []
            for sg in (1, -1):
                W2 = [W + sg * h * (c1 * dW[:, d1] + c2 * dW[:, d2]) for W, (dW, _) in zip(Ws, dirs)]
                b2 = [b + sg * h * (c1 * db[:, d1] + c2 * db[:, d2]) for b, (_, db) in zip(bs, dirs)]
                zs.append(_forward(s, X, W2, b2))
            return (zs[0] - 2 * z0 + zs[1]) / h**2

        T = np.zeros((B, D, D, N, O))
        for d1 in range(D):
            for d2 in range(d1, D):
                T[:, d1, d2] = T[:, d2, d1] = (second(1, d1, 1, d2) - second(1, d1, -1, d2)) / 4
        T6 = T.reshape(B, O, N, O, N, N, O)
        Pb = np.zeros((B,) + (N,) * 4)
        Qb = np.zeros((B,) + (N,) * 4)
        for i in range(O):
            for j in range(O):
                if i != j:
                    Pb += T6[:, j, :, j, :, :, i].transpose(0, 3, 1, 2)[..., None] * z0[:, None, None, None, :, i]
                    Qb += T6[:, i, :, j, :, :, i].transpose(0, 3, 1, 2)[..., None] * z0[:, None, None, None, :, j]
        Ps.append(n * Pb / (O * (O - 1)))
        Qs.append(n * Qb / (O * (O - 1)))
        done += B
    Ps, Qs = np.concatenate(Ps), np.concatenate(Qs)
    se = lambda a: a.std(axis=0, ddof=1) / np.sqrt(a.shape[0])
    return Ps.mean(0), Qs.mean(0), se(Ps), se(Qs)
