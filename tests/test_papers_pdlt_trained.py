"""papers/pdlt/trained_width.py: the trained network's mean prediction vs width, recursion against ensembles.

Fast: the script's problem as its docstring states it (training NTK eigenvalues, convergence by step 30), its
infinite-width reference against gradient descent iterated by hand with the NTK and against kernel regression at
convergence, and small trained ensembles: the readout-odd control has mean 0 within 4 SE (an exact symmetry) and
converged train rows do not move.  Slow: the recursion's O(1/n) mean (linearised part + NTK motion) against the
1/n fit of trained ensembles at widths 32 and 64, within 4 SE.
"""

from pathlib import Path

import numpy as np
import pytest

from ntk_theory.recursions import KernelRecursion
from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _load():
    return load_script("papers/pdlt/trained_width.py", "trained_width")


tw = _load()


def test_problem_infinite_width_reference_and_small_ensembles():
    """Hand-iterated kernel gradient descent f_(s+1) = f_s - c Theta(., X) (f_s(X) - y), f_0 = 0 (the ensemble mean
    at infinite width, c = eta / N), against the script's reference f_inf at steps 2 and 30; at step 30 also the
    kernel-regression limit Theta(X', X) Theta(X, X)^-1 y.  Ensembles at widths 16 and 32 (256 networks each)."""
    Xall = np.concatenate([tw.X_TRAIN, tw.X_TEST])
    _, T = KernelRecursion(tw.ACTIVATION, tw.DEPTH, C_W=tw.C_W, C_b=tw.C_b)(Xall)
    N = len(tw.Y)
    c = tw.ETA / N
    lam = np.linalg.eigvalsh(T[:N, :N])
    assert 0.46 < lam[0] and lam[-1] < 0.73                       # docstring: 0.47 .. 0.72
    assert (1 - c * lam[0]) ** tw.CONVERGED < 1.2e-5                # converged by step 30
    f, hand = np.zeros(len(Xall)), {}
    for s in range(1, tw.CONVERGED + 1):
        f = f - c * T[:, :N] @ (f[:N] - tw.Y)
        hand[s] = f.copy()
    meas = tw.measure((16, 32), (256, 256), (2, tw.CONVERGED), 3)
    np.testing.assert_allclose(meas["infinite"][0], hand[2], atol=1e-10)
    np.testing.assert_allclose(meas["infinite"][1], hand[tw.CONVERGED], atol=1e-10)
    regression = T[N:, :N] @ np.linalg.solve(T[:N, :N], tw.Y)
    np.testing.assert_allclose(meas["infinite"][1][N:], regression, atol=1e-4)
    assert meas["odd_max_abs_z"] < 4
    for n, d in meas["per_width"].items():
        v, s = d["motion"]
        assert np.max(np.abs(v[1, :N])) < 1e-3 * n                 # converged train rows: f = f_lin = y
        assert np.all(s[0] > 0)
    a, se = meas["fit"]["motion"][:2]
    assert a.shape == (2, len(Xall)) and np.all(np.isfinite(se))


@pytest.mark.slow
def test_recursion_against_trained_ensembles():
    """n (E_n[f(t)] - f_inf(t)) fitted as a + b/n over widths 32 and 64 (4,096 and 2,048 trained networks): the
    intercept of the mean, its linearised part and the motion within 4 SE of the recursion's m_1 + phi_1, m_1,
    phi_1 at steps 2, 8 and 30 (converged train rows, exactly fitted, left out)."""
    res = tw.run(widths=(32, 64), samples=(4096, 2048), steps=(2, 8, tw.CONVERGED), seed=11)
    for name, z in res["max_abs_z"].items():
        assert z < 4, (name, res["z"][name])
    assert res["odd_max_abs_z"] < 4
