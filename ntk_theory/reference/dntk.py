r"""The exact dNTK and ddNTK of a finite MLP's readout layer, by hand-written higher-order forward mode.

Definitions (PDLT notation; theta_mu the parameters in PDLT coordinates, lambda_mu the NTK's diagonal
learning-rate factors of ``param``, as in :meth:`MLP.ntk`: lambda_b(l) for b(l), lambda_W(l)/n_(l-1) for W(l);
z_p = z_{i;a} the readout preactivation of neuron i at input a, p = (i, a))::

    dH_{p0 p1 p2}       = sum lambda_mu lambda_nu d2z_p0/dth_mu dth_nu dz_p1/dth_mu dz_p2/dth_nu
                        = D^2 z_p0 [v_p1, v_p2],                    v_p = Lambda grad z_p
    ddIH_{p0 p1 p2 p3}  = D^3 z_p0 [v_p1, v_p2, v_p3]
    ddIIH_{p1 p2 p3 p4} = sum lambda_mu (Hess z_p1 v_p3)_mu (Hess z_p2 v_p4)_mu

(the directions v held fixed: they are not differentiated).  Arrays are indexed neurons first, inputs after:
``dH[i0, i1, i2, a0, a1, a2]``, ``ddI[i0, i1, i2, i3, a0, a1, a2, a3]``, ``ddII[i1, i2, i3, i4, a1, .., a4]``.

How.  The directions are rank one per layer: ``v_p`` has ``dW(l) = lambda_W(l)/n_(l-1) g_p(l) h_p(l-1)^T``,
``db(l) = lambda_b(l) g_p(l)`` with ``g_p(l) = dz_{i;a}/dz(l)_a`` (the reverse pass, :meth:`MLP.output_sensitivities`)
and ``h_p(l-1) = a(l-1)_a`` (the activation at input a; a(0) = x).  So ``dW(l)[p] y = c_l g_p (h_p . y)``
(c_l = lambda_W(l)/n_(l-1)) and no parameter-sized array is ever formed.  Forward mode, Taylor coefficients
along the directions, at every input b (z(l+1) = W(l+1) a(l) + b(l+1), a = s(z); parameters enter linearly)::

    dz(l+1)[p]    = c g_p (h_p . a(l)) + lambda_b g_p + W da(l)[p],            da[p] = s' dz[p]
    d2z(l+1)[pq]  = c [g_p (h_p . da[q]) + g_q (h_q . da[p])] + W d2a[pq],
                    d2a[pq] = s'' dz[p] dz[q] + s' d2z[pq]
    d3z(l+1)[pqr] = c [g_p (h_p . d2a[qr]) + g_q (h_q . d2a[pr]) + g_r (h_r . d2a[pq])] + W d3a[pqr],
                    d3a = s''' dz_p dz_q dz_r + s'' (dz_p d2z_qr + dz_q d2z_pr + dz_r d2z_pq) + s' d3z_pqr

with dz(1) = c g_p (h_p . x) + lambda_b g_p and d2z(1) = d3z(1) = 0 (z(1) is linear in the parameters); only
the symmetric pairs p <= q and triples p <= q <= r are propagated.  Then dH_{p0 p1 p2} = d2z[p1 p2]_{i0;a0},
ddI_{p0 p1 p2 p3} = d3z[p1 p2 p3]_{i0;a0}.

ddII by forward-over-reverse: the gradient of F_pr = D z_p [v_r] (the first-order tangent of z_p, v_r fixed)
lives at the input a_p only; with adjoints gbar_pr(l) of z(l) and g_p(l) of dz(l)[r]::

    gbar_pr(L+1) = 0,
    gbar_pr(l)   = s'(z(l)) o [W(l+1)^T gbar_pr(l+1) + c_(l+1) h_r(l) (g_r(l+1) . g_p(l+1))]
                   + s''(z(l)) o dz(l)[r] o W(l+1)^T g_p(l+1)                  (all at input a_p)
    grad_W(l) F_pr = gbar_pr(l) h_p(l-1)^T + g_p(l) da(l-1)[r]^T,   grad_b(l) F_pr = gbar_pr(l)
    ddII_{p q r s} = sum_l c_l <grad_W(l) F_pr, grad_W(l) F_qs>_F + lambda_b(l) gbar_pr(l) . gbar_qs(l)

(the Frobenius products of the rank-two gradients as products of dot products).

Cost per network with K = n_out N directions and hidden width n: dNTK O(K^2 N L n^2), ddI O(K^3 N L n^2)/6,
ddII O(K^2 L n^2 + K^4 L n).  Exact up to float64 rounding (the readout's dH and ddNTK are polynomials in the
parameters and s', s'', s''' values); relu-like activations use the almost-everywhere s'' = s''' = 0, as
backpropagation computes.  Everything is vectorised over a leading axis of S networks
(:func:`readout_derivatives`, used by the Monte Carlo :func:`ntk_theory.montecarlo.sample_dntk`).
"""

from __future__ import annotations

import itertools

import numpy as np

from .activations import NumpyActivation, numpy_activation
from .network import MLP

Array = np.ndarray

__all__ = ["ddntk", "dntk", "readout_derivatives"]


def _pair_index(K: int):
    qi, ri = np.triu_indices(K)
    index = np.empty((K, K), dtype=np.intp)
    index[qi, ri] = np.arange(len(qi))
    index[ri, qi] = np.arange(len(qi))
    return qi, ri, index


def _triple_index(K: int):
    triples = np.array(list(itertools.combinations_with_replacement(range(K), 3)), dtype=np.intp).reshape(-1, 3)
    index = np.empty((K, K, K), dtype=np.intp)
    for m, t in enumerate(triples):
        for perm in set(itertools.permutations(t)):
            index[perm] = m
    return triples, index


def _matT(x: Array, W: Array) -> Array:
    """``x W^T`` over the last axis of x (S, ..., n_in) with W (S, n_out, n_in)."""
    S = W.shape[0]
    flat = np.ascontiguousarray(x).reshape(S, -1, x.shape[-1])
    WT = np.ascontiguousarray(np.swapaxes(W, -1, -2))  # a strided operand makes batched matmul skip BLAS
    return np.matmul(flat, WT).reshape(*x.shape[:-1], W.shape[1])


def _mat(x: Array, W: Array) -> Array:
    """``x W`` over the last axis of x (S, ..., n_out) with W (S, n_out, n_in): the transpose action."""
    S = W.shape[0]
    flat = np.ascontiguousarray(x).reshape(S, -1, x.shape[-1])
    return np.matmul(flat, W).reshape(*x.shape[:-1], W.shape[2])


def _forward(X: Array, weights: list, biases: list, act: NumpyActivation):
    """z(l) (S, N, n_l) for l = 1..L+1 and a(l) for l = 0..L (a(0) = X broadcast)."""
    S = weights[0].shape[0]
    a = [np.broadcast_to(X, (S, *X.shape))]
    z = [None]
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        zl = _matT(a[-1], W) + b[:, None, :]
        z.append(zl)
        if l < len(weights):
            a.append(act(zl))
    return z, a


def readout_derivatives(X, weights, biases, factors, activation, *, orders=("dntk", "ddI", "ddII"),
                        forward=None, sensitivities=None) -> dict:
    r"""The readout's dNTK and ddNTKs of S networks at once (module docstring), as a dict of arrays.

    ``X`` (N, n_0); ``weights[l-1]`` (S, n_l, n_(l-1)) and ``biases[l-1]`` (S, n_l) for l = 1 .. L+1 (one
    layer: z = W x + b, linear in the parameters, gives zeros); ``factors[l-1] = (lambda_b(l), lambda_W(l))``
    (:meth:`MLPSpec.learning_rate_factors`); ``activation`` as :func:`numpy_activation` accepts (s'' needed,
    s''' for ddI).  ``orders``: any of "dntk", "ddI", "ddII".  ``forward``: optionally (z, a) with
    z[l] (S, N, n_l) for l = 1..L+1 (z[0] unused) and a[l] for l = 0..L; ``sensitivities``: optionally
    T[l] (S, N, n_out, n_l) = df_o(x_a)/dz(l)_a for l = 1..L+1 (T[0] unused).  Returns ``{"z": (S, n_out, N),
    "ntk": (S, O, O, N, N)`` (the first-order tangents: Theta_{i j; a b}) and the requested tensors, indexed
    as :func:`dntk` and :func:`ddntk` (with the leading S).
    """
    act = numpy_activation(activation)
    orders = set(orders)
    unknown = orders - {"dntk", "ddI", "ddII"}
    if unknown:
        raise ValueError(f"unknown orders {sorted(unknown)}; expected 'dntk', 'ddI', 'ddII'")
    X = np.asarray(X, dtype=np.float64)
    weights = [np.asarray(W, dtype=np.float64) for W in weights]
    biases = [np.asarray(b, dtype=np.float64) for b in biases]
    S, N = weights[0].shape[0], X.shape[0]
    L1 = len(weights)  # L + 1 layers
    O = weights[-1].shape[1]
    K = O * N
    i_idx, a_idx = np.repeat(np.arange(O), N), np.tile(np.arange(N), O)  # direction p = (i, a), p = i N + a
    cW = [None] + [lam_W / W.shape[2] for (_, lam_W), W in zip(factors, weights)]
    lb = [None] + [float(lam_b) for lam_b, _ in factors]
    W = [None] + weights

    z, a = forward if forward is not None else _forward(X, weights, biases, act)
    need2 = bool(orders)
    d1 = [None] + [act.derivative(z[l]) for l in range(1, L1)]
    d2 = [None] + [act.higher(2)(z[l]) for l in range(1, L1)] if need2 else None
    d3 = [None] + [act.higher(3)(z[l]) for l in range(1, L1)] if "ddI" in orders else None

    # the directions: g_p(l) (S, K, n_l), h_p(l-1) = a(l-1) at input a_p
    G = [None] * (L1 + 1)
    if sensitivities is not None:
        for l in range(1, L1 + 1):
            G[l] = sensitivities[l][:, a_idx, i_idx, :]
    else:
        G[L1] = np.broadcast_to(np.eye(O)[i_idx], (S, K, O))
        for l in range(L1 - 1, 0, -1):
            G[l] = d1[l][:, a_idx, :] * _mat(G[l + 1], W[l + 1])
    Hh = [a[l][:, a_idx, :] for l in range(L1)]  # Hh[l-1] = h_p(l-1)

    # first order: dz[l] (S, K, N, n_l), da[l] = s' dz
    dz, da = [None] * (L1 + 1), [None] * L1
    for l in range(1, L1 + 1):
        coef = cW[l] * np.einsum("skn,sbn->skb", Hh[l - 1], a[l - 1]) + lb[l]
        dz[l] = G[l][:, :, None, :] * coef[..., None]
        if l > 1:
            dz[l] = dz[l] + _matT(da[l - 1], W[l])
        if l < L1:
            da[l] = d1[l][:, None] * dz[l]
    out = {"z": np.ascontiguousarray(np.swapaxes(z[L1], 1, 2))}
    # Theta_{i j; a b} = dz[(j, b)]_{i; a}: dz[L1] (S, K=(j,b), N=a, O=i)
    out["ntk"] = np.ascontiguousarray(dz[L1].reshape(S, O, N, N, O).transpose(0, 4, 1, 3, 2))

    if "dntk" in orders or "ddI" in orders:
        qi, ri, pidx = _pair_index(K)
        d2z, d2a = [None] * (L1 + 1), [None] * L1
        for l in range(1, L1 + 1):
            if l == 1:
                d2z[l] = np.zeros((S, len(qi), N, W[l].shape[1]))
            else:
                h_q = np.einsum("smn,smbn->smb", Hh[l - 1][:, qi], da[l - 1][:, ri])
                h_r = np.einsum("smn,smbn->smb", Hh[l - 1][:, ri], da[l - 1][:, qi])
                d2z[l] = cW[l] * (G[l][:, qi, None, :] * h_q[..., None] + G[l][:, ri, None, :] * h_r[..., None])
                d2z[l] = d2z[l] + _matT(d2a[l - 1], W[l])
            if l < L1:
                d2a[l] = d2[l][:, None] * dz[l][:, qi] * dz[l][:, ri] + d1[l][:, None] * d2z[l]
        if "dntk" in orders:
            top = d2z[L1][:, pidx]  # (S, K1, K2, N=a0, O=i0)
            top = top.reshape(S, O, N, O, N, N, O)  # (i1, a1, i2, a2, a0, i0)
            out["dntk"] = np.ascontiguousarray(top.transpose(0, 6, 1, 3, 5, 2, 4))
        if "ddI" in orders:
            tri, tidx = _triple_index(K)
            t0, t1, t2 = tri[:, 0], tri[:, 1], tri[:, 2]
            d3z = None
            for l in range(1, L1 + 1):
                if l == 1:
                    d3z = np.zeros((S, len(tri), N, W[l].shape[1]))
                else:
                    m = l - 1
                    dzp, dzq, dzr = dz[m][:, t0], dz[m][:, t1], dz[m][:, t2]
                    d3a = (d3[m][:, None] * dzp * dzq * dzr
                           + d2[m][:, None] * (dzp * d2z[m][:, pidx[t1, t2]] + dzq * d2z[m][:, pidx[t0, t2]]
                                               + dzr * d2z[m][:, pidx[t0, t1]])
                           + d1[m][:, None] * d3z)
                    new = _matT(d3a, W[l])
                    for x, (y1, y2) in ((t0, (t1, t2)), (t1, (t0, t2)), (t2, (t0, t1))):
                        dot = np.einsum("smn,smbn->smb", Hh[m][:, x], d2a[m][:, pidx[y1, y2]])
                        new = new + cW[l] * G[l][:, x, None, :] * dot[..., None]
                    d3z = new
            top = d3z[:, tidx]  # (S, K1, K2, K3, N=a0, O=i0)
            top = top.reshape(S, O, N, O, N, O, N, N, O)  # (i1, a1, i2, a2, i3, a3, a0, i0)
            out["ddI"] = np.ascontiguousarray(top.transpose(0, 8, 1, 3, 5, 7, 2, 4, 6))

    if "ddII" in orders:
        total = np.zeros((S, K, K, K, K))
        gbar = np.zeros((S, K, K, O))  # gbar_pr(L+1) = 0
        for l in range(L1, 0, -1):
            if l < L1:
                WtG = _mat(G[l + 1], W[l + 1])  # (S, K_p, n_l)
                gg = np.einsum("spm,srm->spr", G[l + 1], G[l + 1])
                abar = _mat(gbar, W[l + 1]) + cW[l + 1] * gg[..., None] * Hh[l][:, None, :, :]
                dz_at = np.swapaxes(dz[l][:, :, a_idx, :], 1, 2)  # (S, K_p, K_r, n_l): dz(l)[r] at a_p
                gbar = (d1[l][:, a_idx][:, :, None, :] * abar
                        + d2[l][:, a_idx][:, :, None, :] * dz_at * WtG[:, :, None, :])
            g, h = G[l], Hh[l - 1]
            GbGb = np.einsum("sprn,sqtn->sprqt", gbar, gbar)
            hh = np.einsum("spn,sqn->spq", h, h)
            part = GbGb * hh[:, :, None, :, None]
            if l > 1:
                D = np.swapaxes(da[l - 1][:, :, a_idx, :], 1, 2)  # (S, K_p, K_r, n): da(l-1)[r] at a_p
                GbG = np.einsum("sprn,sqn->sprq", gbar, g)
                hD = np.einsum("spn,sqtn->spqt", h, D)
                gg_l = np.einsum("spn,sqn->spq", g, g)
                DD = np.einsum("sprn,sqtn->sprqt", D, D)
                # (gbar_pr . g_q)(h_p . D_qt) + (g_p . gbar_qt)(D_pr . h_q)
                part = part + GbG[:, :, :, :, None] * hD[:, :, None, :, :]
                part = part + np.einsum("sqtp,sqpr->sprqt", GbG, hD)
                part = part + gg_l[:, :, None, :, None] * DD
            total = total + cW[l] * part + lb[l] * GbGb
        # total[s, p, r, q, t] -> ddII[p1=p, p2=q, p3=r, p4=t]
        dd = total.transpose(0, 1, 3, 2, 4).reshape(S, O, N, O, N, O, N, O, N)
        out["ddII"] = np.ascontiguousarray(dd.transpose(0, 1, 3, 5, 7, 2, 4, 6, 8))
    return out


def _net_arrays(net: MLP, X):
    """A reference network's forward pass and reverse-pass sensitivities as the batched arrays of S = 1."""
    if not isinstance(net, MLP):
        raise TypeError(f"dntk needs a reference MLP (ntk_theory.reference.MLP); got {type(net).__name__}")
    tr = net.forward(X)
    X = tr.a[0]
    z = [None] + [zl[None] for zl in tr.z]
    a = [al[None] for al in tr.a]
    T = [None] + [t[None] for t in net.output_sensitivities(trace=tr)]
    weights = [W[None] for W in net.weights]
    biases = [b[None] for b in net.biases]
    return X, weights, biases, (z, a), T


def dntk(net: MLP, X) -> Array:
    r"""The exact dNTK of the readout layer of ``net`` at inputs X (N, n_0):
    ``dH[i0, i1, i2, a0, a1, a2] = D^2 z_{i0;a0}[v_{i1;a1}, v_{i2;a2}]`` with ``v = Lambda grad z`` (module
    docstring; the learning-rate factors of ``net``'s ``param``), shape (O, O, O, N, N, N).  Exact to float64
    rounding; relu-like activations with s'' = 0 almost everywhere."""
    X, weights, biases, fwd, T = _net_arrays(net, X)
    res = readout_derivatives(X, weights, biases, net.spec.learning_rate_factors(), net.activation,
                              orders=("dntk",), forward=fwd, sensitivities=T)
    return res["dntk"][0]


def ddntk(net: MLP, X) -> tuple[Array, Array]:
    r"""The exact ddNTKs of the readout layer of ``net`` at inputs X (N, n_0): ``(ddI, ddII)``, each
    (O,)*4 + (N,)*4, ``ddI[i0, i1, i2, i3, a0..a3] = D^3 z_{i0;a0}[v_{i1;a1}, v_{i2;a2}, v_{i3;a3}]`` and
    ``ddII[i1, i2, i3, i4, a1..a4] = sum_mu lambda_mu (Hess z_{i1;a1} v_{i3;a3})_mu (Hess z_{i2;a2} v_{i4;a4})_mu``
    (module docstring)."""
    X, weights, biases, fwd, T = _net_arrays(net, X)
    res = readout_derivatives(X, weights, biases, net.spec.learning_rate_factors(), net.activation,
                              orders=("ddI", "ddII"), forward=fwd, sensitivities=T)
    return res["ddI"][0], res["ddII"][0]
