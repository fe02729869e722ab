"""Networks whose output keeps spatial axes (a Conv readout, or a Dense layer per position at the end): the
empirical NTK by the three methods, in neural-tangents' layout ((N1, N2, S, S, ..., C, C), or the mean over
channels with ``trace_outputs``).

Judges: J J^T with J by the reference network's forward mode (reference.graph.jvp of every unit parameter
tangent, not the reverse passes the three methods use), arranged into neural-tangents' layout here by einsum
(1e-12); in the slow set, neural-tangents 0.6.5's ``empirical_ntk_fn`` run live in its own environment
(/tmp/ntvenv; skipped without it) on the same parameters."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from jacobians import forward_mode_jacobian as _forward_mode_jacobian
from jacobians import parsed_network

from ntk_theory.empirical import METHODS, empirical_ntk
from ntk_theory.reference import graph

NETWORKS = {
    # 2-D: SAME then VALID convolutions, the readout a Conv with two channels
    "conv2d": ("serial(Conv(3, (2, 2), padding='SAME', b_std=0.2), Erf(), Conv(2, (2, 1), W_std=1.3, b_std=0.1))",
               (3, 4, 3, 2)),
    # 1-D: strided CIRCULAR convolution, AvgPool, a Dense layer per position as the readout
    "conv1d_dense": (("serial(Conv(3, (3,), strides=(2,), padding='CIRCULAR', b_std=0.3), Tanh(), "
                      "AvgPool((2,), strides=(1,), padding='SAME'), Dense(2, b_std=0.1))"), (3, 7, 2)),
}


def _network(name, seed=0):
    return parsed_network(*NETWORKS[name], seed)


def _neural_tangents_layout(J1, J2, trace):
    """J1 J2^T in neural-tangents' layout, by einsum over the parameter axis (1-D or 2-D outputs)."""
    if J1.ndim == 5:  # (N, H, W, C, P)
        if trace:
            return np.einsum("ahwcp,bHWcp->abhHwW", J1, J2) / J1.shape[3]
        return np.einsum("ahwcp,bHWdp->abhHwWcd", J1, J2)
    if trace:  # (N, W, C, P)
        return np.einsum("awcp,bWcp->abwW", J1, J2) / J1.shape[2]
    return np.einsum("awcp,bWdp->abwWcd", J1, J2)


def _rel(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("method", METHODS + ("auto",))
def test_spatial_outputs_match_forward_mode_jacobian(name, method):
    description, params, X = _network(name)
    X2 = np.random.default_rng(9).standard_normal((2,) + X.shape[1:])
    out = graph.apply(description, params, X)
    assert out.ndim == X.ndim  # the output keeps its spatial axes
    J1 = _forward_mode_jacobian(description, params, X)
    J2 = _forward_mode_jacobian(description, params, X2)
    for X2_, Jb in ((None, J1), (X2, J2)):
        for trace in (True, False):
            ref = _neural_tangents_layout(J1, Jb, trace)
            for batch_size in (None, 1):
                theta = empirical_ntk(description, X, X2_, method=method, trace_outputs=trace, params=params,
                                      batch_size=batch_size)
                assert theta.shape == ref.shape
                assert _rel(theta, ref) < 1e-12, (X2_ is None, trace, batch_size, _rel(theta, ref))


NT_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import neural_tangents as nt
from neural_tangents import stax
d = np.load(sys.argv[1], allow_pickle=False)
_, apply_fn, _ = stax.serial(stax.Conv(3, (2, 2), padding='SAME', b_std=0.2), stax.Erf(),
                             stax.Conv(2, (2, 1), W_std=1.3, b_std=0.1))  # NETWORKS["conv2d"]
layout = json.loads(d["layout"].item())
it = iter([d[f"p{i}"] for i in range(sum(layout))])
params = [tuple(next(it) for _ in range(n)) for n in layout]
out = {}
for trace, axes in ((1, (-1,)), (0, ())):
    f = nt.empirical_ntk_fn(apply_fn, trace_axes=axes, vmap_axes=0, implementation=1)
    out[f"t{trace}_11"] = np.asarray(f(d["X"], None, params))
    out[f"t{trace}_12"] = np.asarray(f(d["X"], d["X2"], params))
np.savez(sys.argv[2], **out)
"""


@pytest.mark.slow
def test_spatial_outputs_match_neural_tangents(tmp_path):
    name = "conv2d"
    python = Path("/tmp/ntvenv/bin/python")
    if not python.exists():
        pytest.skip("neural-tangents' environment /tmp/ntvenv is not installed")
    description, params, X = _network(name)
    X2 = np.random.default_rng(9).standard_normal((2,) + X.shape[1:])
    flat = [a for layer in params for a in layer]
    np.savez(tmp_path / "in.npz", X=X, X2=X2, layout=np.array(json.dumps([len(layer) for layer in params])),
             **{f"p{i}": a for i, a in enumerate(flat)})
    script = tmp_path / "record_spatial_ntk.py"  # not nt.py: ntpath imports a module named nt
    script.write_text(NT_SCRIPT)
    subprocess.run([str(python), str(script), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], check=True,
                   capture_output=True, timeout=600, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    ref = np.load(tmp_path / "out.npz")
    for trace in (1, 0):
        for X2_, key in ((None, "11"), (X2, "12")):
            for method in METHODS:
                theta = empirical_ntk(description, X, X2_, method=method, trace_outputs=bool(trace), params=params)
                assert theta.shape == ref[f"t{trace}_{key}"].shape
                assert _rel(theta, ref[f"t{trace}_{key}"]) < 1e-12
