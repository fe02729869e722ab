"""Record neural-tangents' ``apply_fn`` and empirical NTK of convolutional networks for the tests (run with
neural-tangents' own Python, a separate venv; not a dependency of ntk-theory).

usage: /tmp/ntvenv/bin/python benchmarks/anchors/record_conv_apply.py [--out tests/data/neural_tangents]

Everything is float64 (``jax_enable_x64``).  Writes ``conv_apply.npz``: per network ``<name>``, the
inputs ``<name>/X`` (N, ..., C), the parameters drawn by stax ``init_fn`` as JAX tree leaves in order
(``<name>/leaf<i>``; ``None`` biases are no leaves), ``apply_fn`` at X (``<name>/f``) and the full
empirical NTK (``<name>/ntk``, ``trace_axes=()``, (N, N, O, O)); ``config`` (JSON) holds each network's
stax expression (the same text ``ntk_theory.stax.parse`` reads) and the versions that produced it.
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

# a data table alike in shape to test_empirical_conv.NETWORKS, on purpose: other networks (standalone script)
NETWORKS = {
    # 1-D: SAME and strided VALID convolutions, a bias, Flatten
    "conv1d": ("serial(Conv(4, (3,), padding='SAME', b_std=0.3), Relu(), Conv(3, (2,), strides=(2,), W_std=1.5), "
               "Erf(), Flatten(), Dense(2, b_std=0.1))", (3, 7, 2)),
    # 2-D: CIRCULAR, AvgPool SAME with normalize_edges, strided SAME 'standard' conv, LayerNorm, Dense per
    # position, GlobalAvgPool
    "conv2d": ("serial(Conv(5, (3, 3), padding='CIRCULAR', b_std=0.2), Relu(), AvgPool((2, 2), strides=(2, 2), "
               "padding='SAME', normalize_edges=True), Conv(4, (2, 3), strides=(1, 2), padding='SAME', W_std=1.3, "
               "b_std=0.5, parameterization='standard'), LayerNorm(), Dense(3, b_std=0.1), Gelu(), GlobalAvgPool(), "
               "Dense(2, W_std=0.9))", (3, 6, 5, 2)),
    # residual block, VALID AvgPool, FanInConcat of a 1x1 Conv and a per-position Dense
    "resblock": ("serial(Conv(4, (3, 3), padding='SAME'), FanOut(2), parallel(serial(Relu(), Conv(4, (3, 3), "
                 "padding='CIRCULAR', b_std=0.1)), Identity()), FanInSum(), AvgPool((2, 2)), FanOut(2), "
                 "parallel(Conv(3, (1, 1), b_std=0.2), Dense(2)), FanInConcat(), Erf(), Flatten(), Dense(1))",
                 (4, 5, 4, 3)),
    # pooling variants: AvgPool SAME without normalize_edges, CIRCULAR pool with strides, strided VALID 2-D conv
    "pools": ("serial(AvgPool((3, 2), padding='SAME'), Conv(3, (2, 2), strides=(2, 1), b_std=0.4), Relu(), "
              "AvgPool((2, 3), strides=(1, 2), padding='CIRCULAR'), Flatten(), Dense(2))", (3, 7, 6, 2)),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "tests/data/neural_tangents"))
    args = parser.parse_args()
    namespace = {name: getattr(stax, name) for name in dir(stax) if not name.startswith("_")}
    rng = np.random.default_rng(20261207)
    arrays, config = {}, {"networks": {}, "versions": {"neural_tangents": nt.__version__, "jax": jax.__version__,
                                                       "numpy": np.__version__}}
    for k, (name, (text, shape)) in enumerate(NETWORKS.items()):
        init_fn, apply_fn, _ = eval(text, {"__builtins__": {}}, namespace)
        X = rng.standard_normal(shape)
        _, params = init_fn(jax.random.PRNGKey(k), X.shape)
        leaves = jax.tree_util.tree_leaves(params)
        f = np.asarray(apply_fn(params, X))
        ntk = np.asarray(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)(X, None, params))
        arrays[f"{name}/X"] = X
        for i, leaf in enumerate(leaves):
            arrays[f"{name}/leaf{i}"] = np.asarray(leaf, dtype=np.float64)
        arrays[f"{name}/f"] = f
        arrays[f"{name}/ntk"] = ntk
        config["networks"][name] = {"network": text, "input_shape": list(shape), "leaves": len(leaves)}
        print(f"{name}: f {f.shape}, ntk {ntk.shape}, {len(leaves)} parameter arrays")
    out = Path(args.out) / "conv_apply.npz"
    np.savez(out, config=np.array(json.dumps(config)), **arrays)
    print(f"written {out}")


if __name__ == "__main__":
    main()
