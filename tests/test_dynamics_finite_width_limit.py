"""FiniteWidthDynamics.motion / motion_covariance by gradient descent, run in the eigenbasis of Theta(X, X), with
steps = inf in closed form, judged by

* the descent recursion written out in the original coordinates (the sources (1)-(4) of docs/finite_width.md,
  "part (b)", as plain einsums over the full propagators A_s = (1 - c Theta)^s, B_s = sum_(r<s) A_r), a few steps;
* the limit: the recursion iterated until (1 - c lambda_min)^s < 1e-17 against the closed form, and the train
  rows exactly 0 at steps = inf.

Random tensors (P = 5 inputs, N = 3 train), so nothing here depends on the recursions' tensors.  And
readout_dntk given finite_width's layer states (instead of running the tensor recursion again) against its own
recursion.
"""
import numpy as np
import pytest

from ntk_theory.dynamics.finite_width import FiniteWidthDynamics

N, P = 3, 5


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((P, P + 2))
    Th = G @ G.T / P + 0.3 * np.eye(P)
    H = rng.standard_normal((P, P + 1))
    K = H @ H.T / P
    Z2, Z4 = np.zeros((P, P)), np.zeros((P,) * 4)
    tensors = {"K": K, "Theta": Th, "K1": Z2, "Theta1": Z2, "A": Z4, "B": Z4, "D": Z4, "F": Z4}
    dntk = {k: rng.standard_normal((P,) * 4) for k in "PQRSTU"}
    y = rng.standard_normal(N)
    return FiniteWidthDynamics(tensors, y, dntk=dntk, learning_rate=2.0), tensors, dntk, y


def _direct_motion(dyn, tensors, d, y, steps):
    """phi_s by the docs' recursion in the original coordinates (full matrices A_s, B_s, no rotation)."""
    c, Th, K = dyn.c, tensors["Theta"], tensors["K"][:N, :N]
    tr = slice(0, N)
    Pc = d["P"] + d["Q"] + d["Q"].transpose(0, 2, 1, 3)
    R = d["R"]
    ddI = R + R.transpose(0, 2, 3, 1) + R.transpose(0, 3, 1, 2)
    ddII = d["S"] + d["T"] + d["U"]
    ddAll = ddI + ddII + ddII.transpose(0, 2, 1, 3)
    P1 = Pc[:, tr, tr, tr]
    P1s = P1 + Pc[tr, :, tr, tr].transpose(1, 0, 2, 3)
    A1s = ddAll[:, tr, tr, tr] + ddAll[tr, :, tr, tr].transpose(1, 0, 2, 3)
    H2 = ddI[:, tr, tr, tr] + ddI[tr, :, tr, tr].transpose(1, 0, 2, 3) + 2 * ddII[:, tr, tr, tr]
    A1, I1 = ddAll[:, tr, tr, tr], ddI[:, tr, tr, tr]
    M3 = -(np.einsum("i,jk->ijk", y, K) + np.einsum("j,ik->ijk", y, K) + np.einsum("k,ij->ijk", y, K)
           + np.einsum("i,j,k->ijk", y, y, y))
    step = np.eye(N) - c * Th[tr, tr]
    A, B = np.eye(N), np.zeros((N, N))
    Y, Z = np.zeros((N,) * 3), np.zeros((N,) * 3)
    phi, out = np.zeros(P), {}
    for s in range(1, max(steps) + 1):
        Ay, By = A @ y, B @ y
        src = -c**2 * (np.einsum("xbde,d,be->x", P1s, By, A) + np.einsum("xbde,b,de->x", P1s, Ay, B))
        src -= c**2 * np.einsum("xbde,de,b->x", P1, A, Ay)
        src -= c**3 * np.einsum("xbde,bk,dek->x", A1s, A, Y)
        src -= 0.5 * c**3 * np.einsum("xbde,bk,dek->x", H2, A, Z)
        src -= 0.5 * c**3 * np.einsum("xbde,bi,dj,ek,ijk->x", A1, A, A, B, M3)
        src -= c**3 / 6.0 * np.einsum("xbde,bi,dj,ek,ijk->x", I1, A, A, A, M3)
        phi = phi - c * Th[:, tr] @ phi[tr] + src
        Y += np.einsum("di,ej,ijk->dek", A, B, M3)
        Z += np.einsum("di,ej,ijk->dek", A, A, M3)
        B, A = B + A, A @ step
        out[s] = phi.copy()
    return np.stack([out[s] for s in steps])


def test_descent_motion_matches_the_recursion_in_original_coordinates():
    dyn, tensors, d, y = _setup()
    steps = [1, 2, 7]
    got = dyn.motion(steps=steps).correction
    want = _direct_motion(dyn, tensors, d, y, steps)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.max(np.abs(want)))


@pytest.mark.parametrize("method", ["motion", "motion_covariance"])
def test_steps_inf_closed_form_is_the_iterated_limit(method):
    dyn, *_ = _setup(1)
    r = np.max(np.abs(1.0 - dyn.c * dyn.basis.eigenvalues))
    S = int(np.ceil(np.log(1e-17) / np.log(r)))
    e = getattr(dyn, method)(steps=[S, np.inf]).correction
    scale = np.max(np.abs(e[0]))
    assert scale > 0
    np.testing.assert_allclose(e[1], e[0], rtol=0, atol=1e-12 * scale)
    if method == "motion":
        assert np.all(e[1][:N] == 0.0)  # phi's train rows vanish exactly
    else:  # C l0^T + l0 C^T: C's train rows are 0 exactly, l0's train rows to rounding
        np.testing.assert_allclose(e[1][:N], 0.0, atol=1e-13 * scale)
        np.testing.assert_allclose(e[1][:, :N], 0.0, atol=1e-13 * scale)


def test_readout_dntk_with_the_tensors_states_equals_its_own_recursion():
    """readout_dntk given finite_width's layer states (rows unsorted, one repeated) gives the P..U of running the
    tensor recursion itself; states of the wrong size are refused."""
    from ntk_theory.dynamics.finite_width import readout_dntk
    from ntk_theory.finite_width import FiniteWidthRecursion, finite_width
    from ntk_theory.finite_width.dntk import keep_recursion_states

    X = np.array([[0.9, 0.1], [-0.3, 0.8], [0.9, 0.1], [0.2, -0.7]])
    kw = {"C_W": 2.0, "C_b": 0.1, "kink_terms": False}
    layers = finite_width("relu", X, 2, C_W=2.0, C_b=0.1).layers
    shared = readout_dntk("relu", X, 2, states=layers, **kw)
    own = readout_dntk("relu", X, 2, **kw)
    for k in "PQRSTU":
        np.testing.assert_allclose(shared[k], own[k], rtol=1e-14, atol=1e-14 * np.max(np.abs(own[k])))
    with pytest.raises(ValueError, match="layer states"):
        keep_recursion_states(FiniteWidthRecursion("relu", 2, C_W=2.0), X[:3], layers, 1e-10)
