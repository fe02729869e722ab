"""Run by neural-tangents' own Python (separate venv): time nt.empirical_ntk_fn on the benchmark's cases.

usage: python nt_empirical.py IN.npz OUT.npz
IN.npz holds X (N_max, d), a JSON list ``cases`` of {name, net, N, trace, impl, repeats} and, for each
network ``net``, either a residual MLP (``net/kind`` = "residual": ``net/width``, ``net/blocks``, ``net/outputs``,
``net/W_std``, ``net/b_std`` and its parameters already in stax's layout, leaves ``net/leaf0``, ``net/leaf1``, ...
in JAX tree order), a network in stax syntax (``net/kind`` = "stax": ``net/stax`` the text, read with
neural-tangents' stax names, ``net/X`` its own inputs (e.g. images (N, H, W, C)), ``net/f4`` ntk-theory's outputs on
its first 4 inputs, leaves as for the residual MLP), or an MLP with its parameters in ntk-theory's convention (``net/W1``, ``net/b1``, ...: W(l) of shape
(n_l, n_(l-1)), z = W a + b) with ``net/W_std``, ``net/b_std``.  They are converted to stax's 'ntk'
parameterization (z = W_std / sqrt(n_in) a @ omega + b_std beta): omega = sqrt(n_in) / W_std W^T,
beta = b / b_std, so both libraries differentiate the same function with the same factors.
Per case: the seconds of one call after a warm-up (compile and one run), best of ``repeats`` (of one
when the warm-up run took longer than 2 s), and the kernel's leading 8 x 8 block for the accuracy
comparison.
"""
import json
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

IMPLEMENTATIONS = {
    1: nt.NtkImplementation.JACOBIAN_CONTRACTION,
    2: nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    3: nt.NtkImplementation.STRUCTURED_DERIVATIVES,
}

data = np.load(sys.argv[1])
cases = json.loads(str(data["cases"]))
X_all = data["X"]
networks = {}


def residual(width, blocks, outputs, W_std, b_std):
    """Dense(width), then ``blocks`` x [FanOut(2), parallel(serial(Relu, Dense(width)), Identity), FanInSum],
    Relu, Dense(outputs): the benchmark's residual MLP ('ntk' parameterization)."""
    dense = lambda n: stax.Dense(n, W_std=W_std, b_std=b_std, parameterization="ntk")
    block = [stax.FanOut(2), stax.parallel(stax.serial(stax.Relu(), dense(width)), stax.Identity()), stax.FanInSum()]
    return stax.serial(dense(width), *(block * blocks), stax.Relu(), dense(outputs))


def network(name):
    if name in networks:
        return networks[name]
    kind = str(data[f"{name}/kind"]) if f"{name}/kind" in data else "mlp"
    if kind in ("residual", "stax"):
        if kind == "residual":
            init_fn, apply_fn, _ = residual(int(data[f"{name}/width"]), int(data[f"{name}/blocks"]),
                                            int(data[f"{name}/outputs"]), float(data[f"{name}/W_std"]),
                                            float(data[f"{name}/b_std"]))
        else:  # stax syntax with neural-tangents' layer names, e.g. "serial(Conv(64, (3, 3), padding='SAME'), Relu(), ...)"
            init_fn, apply_fn, _ = eval(str(data[f"{name}/stax"]), {"__builtins__": {}}, vars(stax))
        X_like = data[f"{name}/X"] if f"{name}/X" in data else X_all
        _, like = init_fn(jax.random.PRNGKey(0), X_like.shape)
        leaves, treedef = jax.tree_util.tree_flatten(like)
        ours = [jnp.asarray(data[f"{name}/leaf{i}"]) for i in range(len(leaves))]
        assert all(a.shape == b.shape for a, b in zip(leaves, ours)) and f"{name}/leaf{len(leaves)}" not in data
        params = jax.tree_util.tree_unflatten(treedef, ours)
        diff = float(np.max(np.abs(np.asarray(apply_fn(params, jnp.asarray(X_like[:4]))) - data[f"{name}/f4"])))
        print(f"{name}: stax outputs vs ntk-theory's network: max difference {diff:.1e}", flush=True)
        networks[name] = (apply_fn, params)
        return networks[name]
    return mlp_network(name)


def mlp_network(name):
    """stax MLP with the given parameters (Dense, Relu, ..., Dense) and a check of its outputs."""
    if name in networks:
        return networks[name]
    W_std, b_std = float(data[f"{name}/W_std"]), float(data[f"{name}/b_std"])
    Ws, bs = [], []
    while f"{name}/W{len(Ws) + 1}" in data:
        Ws.append(data[f"{name}/W{len(Ws) + 1}"])
        bs.append(data[f"{name}/b{len(bs) + 1}"])
    layers, params = [], []
    for l, (W, b) in enumerate(zip(Ws, bs)):
        layers.append(stax.Dense(W.shape[0], W_std=W_std, b_std=b_std, parameterization="ntk"))
        params.append((jnp.asarray(np.sqrt(W.shape[1]) / W_std * W.T), jnp.asarray(b / b_std)))
        if l < len(Ws) - 1:
            layers.append(stax.Relu())
            params.append(())
    _, apply_fn, _ = stax.serial(*layers)
    ours = X_all[:4]
    for W, b, in zip(Ws[:-1], bs[:-1]):
        ours = np.maximum(ours @ W.T + b, 0)
    ours = ours @ Ws[-1].T + bs[-1]
    diff = float(np.max(np.abs(np.asarray(apply_fn(params, jnp.asarray(X_all[:4]))) - ours)))
    print(f"{name}: stax outputs vs ntk-theory's network: max difference {diff:.1e}", flush=True)
    networks[name] = (apply_fn, params)
    return networks[name]


out = {}
for case in cases:
    apply_fn, params = network(case["net"])
    X = jnp.asarray((data[f"{case['net']}/X"] if f"{case['net']}/X" in data else X_all)[: case["N"]])
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,) if case["trace"] else (), vmap_axes=0,
                             implementation=IMPLEMENTATIONS[case["impl"]])
    compiled = jax.jit(lambda x, p: fn(x, None, p)).lower(X, params).compile()
    t0 = time.perf_counter()
    k = compiled(X, params)
    k.block_until_ready()  # warm-up run
    repeats = 1 if time.perf_counter() - t0 > 2.0 else case.get("repeats", 1)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        k = compiled(X, params)
        k.block_until_ready()
        best = min(best, time.perf_counter() - t0)
    out[case["name"] + "/seconds"] = best
    out[case["name"] + "/block"] = np.asarray(k)[:8, :8]
    print(case["name"], f"{best:.4f} s", flush=True)
np.savez(sys.argv[2], **out)
