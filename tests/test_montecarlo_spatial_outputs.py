"""Monte Carlo of networks whose output keeps spatial axes (ntk_theory.montecarlo.graph): NNGP, output second
moment and NTK per pair of output positions, in neural-tangents' layout (N, N, W, W).

Judge: the infinite-width kernels of one hidden convolutional ReLU layer written out here by hand (window means of
the input Gram, the arc-cosine closed forms per position pair, the readout's window means).  With one hidden
layer the pre-activations are exactly Gaussian and the readout's weights independent of them, so E[f f] and
E[Theta] equal the infinite-width values at every channel count: the estimates must agree within 4 standard
errors with no width extrapolation."""

import math

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.montecarlo.graph import sample_kernels

CW, CB = 1.7, 0.2


def _window_mean(K, f, lo):
    """K' (N, N, P', P'') = mean over the filter taps t of K(p + t - lo, q + t - lo), out-of-range taps 0
    (zero padding), for a 1-D filter of size f with lower pad lo and output sizes given by 'SAME'/'VALID'."""
    N1, N2, P, Q = K.shape
    out_p = P if lo is not None else P - f + 1
    lo = 0 if lo is None else lo
    out = np.zeros((N1, N2, out_p, out_p))
    for p in range(out_p):
        for q in range(out_p):
            for t in range(f):
                i, j = p + t - lo, q + t - lo
                if 0 <= i < P and 0 <= j < Q:
                    out[:, :, p, q] += K[:, :, i, j]
    return out / f


def _relu(K):
    """E[relu(u) relu(v)], E[relu'(u) relu'(v)] per position pair (arc-cosine kernels of degree 1 and 0)."""
    d = np.einsum("aapp->ap", K)
    s = np.sqrt(d[:, None, :, None] * d[None, :, None, :])
    cos = np.clip(K / s, -1.0, 1.0)
    th = np.arccos(cos)
    return s * (np.sin(th) + (math.pi - th) * cos) / (2 * math.pi), (math.pi - th) / (2 * math.pi)


def _by_hand(X, readout):
    """NNGP and NTK ('ntk' parameterization, lambda = C) of Conv(n, (2,), 'SAME'), Relu, then the readout
    Conv(2, (2,), 'VALID') or Dense(2) per position."""
    K0 = np.einsum("apc,bqc->abpq", X, X) / X.shape[-1]
    K1 = CB + CW * _window_mean(K0, 2, 0)  # 'SAME' with a filter of 2: no lower pad, one upper pad
    T1 = K1
    K2, D2 = _relu(K1)
    if readout == "conv":
        K3 = CB + CW * _window_mean(K2, 2, None)
        T3 = K3 + CW * _window_mean(D2 * T1, 2, None)
    else:
        K3 = CB + CW * K2
        T3 = K3 + CW * D2 * T1
    return K3, T3


@pytest.mark.parametrize("readout", ["conv", "dense"])
def test_spatial_output_kernels_match_the_hand_derivation(readout):
    hidden = stax.Conv(32, (2,), padding="SAME", W_std=math.sqrt(CW), b_std=math.sqrt(CB))
    last = (stax.Conv(2, (2,), W_std=math.sqrt(CW), b_std=math.sqrt(CB)) if readout == "conv"
            else stax.Dense(2, W_std=math.sqrt(CW), b_std=math.sqrt(CB)))
    net = stax.serial(hidden, stax.Relu(), last)
    X = np.random.default_rng(4).normal(size=(2, 4, 2))
    est = sample_kernels(net, X, samples=768, seed=5, batches=16, progress=False)
    K, T = _by_hand(X, readout)
    P = 3 if readout == "conv" else 4
    for name, exact in (("nngp", K), ("output_second_moment", K), ("ntk", T)):
        e = est.estimates[name]
        assert e.value.shape == (2, 2, P, P)
        z = e.z_score(exact)
        assert np.all(np.abs(z) < 4), (name, np.nanmax(np.abs(z)))
    assert est.info["sampler"] == "dense"
    # the test has power: a 10% error of the NTK's larger entries would be seen
    assert np.max(est.estimates["ntk"].stderr) < 0.025 * np.max(np.abs(T))
