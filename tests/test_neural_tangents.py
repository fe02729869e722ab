"""Side by side with neural-tangents' closed forms (runs only where its separate venv exists).

neural-tangents is never a dependency: ``../shared/anchors/setup_anchor.sh /tmp/ntvenv`` builds its
own environment, and this test calls that Python in a subprocess (override with NTK_THEORY_NT_PYTHON).
Off-diagonal entries must agree to 1e-12; neural-tangents' diagonal is known to lose ~8 digits
(arccos near angle 0), so diagonals are compared against the exact scalar recursion instead.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ntk_theory.recursions import KernelRecursion

NT_PYTHON = Path(os.environ.get("NTK_THEORY_NT_PYTHON", "/tmp/ntvenv/bin/python"))
SCRIPT = Path(__file__).parent / "anchors" / "nt_kernels.py"
ACTIVATIONS = ["relu", "erf", "gelu", "sin", "cos", "abs", "sign", "leaky_relu(1/10)", "abrelu(1/2,2)",
               "rbf", "monomial(3)", "exp", "gaussian"]
# relu_power(2): neural-tangents 0.6.5 RectifiedMonomial(2) returns NaN at every entry in float64 here.

pytestmark = pytest.mark.skipif(not NT_PYTHON.exists(), reason="neural-tangents venv not found (shared/anchors/setup_anchor.sh)")


@pytest.fixture(scope="module")
def nt_results(tmp_path_factory):
    rng = np.random.default_rng(0)
    X1, X2 = rng.standard_normal((5, 4)) * 0.7, rng.standard_normal((3, 4)) * 0.7
    jobs = []
    for act in ACTIVATIONS:
        for param in ("ntk", "standard"):
            jobs.append(dict(name=f"{act}|{param}", act=act, depth=2, W_std=1.3, b_std=0.2, parameterization=param))
    tmp = tmp_path_factory.mktemp("nt")
    np.savez(tmp / "in.npz", X1=X1, X2=X2, jobs=json.dumps(jobs))
    subprocess.run([str(NT_PYTHON), str(SCRIPT), str(tmp / "in.npz"), str(tmp / "out.npz")], check=True, timeout=900)
    return X1, X2, dict(np.load(tmp / "out.npz"))


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_agrees_with_neural_tangents(nt_results, act, param):
    X1, X2, nt = nt_results
    rec = KernelRecursion(act, 2, C_W=1.3**2, C_b=0.2**2, param=param, widths=512 if param == "standard" else None)
    ours = rec(X1, X2)
    for q in ("nngp", "ntk"):
        theirs = nt[f"{act}|{param}/{q}"]
        got = getattr(ours, q)
        assert np.all(np.isfinite(got))
        scale = np.abs(theirs).max()
        assert np.allclose(got, theirs, rtol=1e-12, atol=1e-12 * scale), (q, np.abs(got - theirs).max())
