"""Record neural-tangents' infinite-width kernels of convolutional networks (run with neural-tangents' own Python).

usage: python record_conv_kernels.py [--out tests/data/neural_tangents] [--which all|vector|spatial]

Everything is float64 (``jax_enable_x64``).  Writes ``conv_kernels.npz``: per network ``<name>`` (its stax
expression in ``config["networks"][name]``, evaluated by neural-tangents' ``stax`` and readable by
``ntk_theory.stax.parse``) the inputs ``<name>/X1`` (N1, *S, C), ``<name>/X2`` and neural-tangents'
``kernel_fn`` outputs ``<name>/nngp12``, ``<name>/ntk12`` (at X1, X2) and ``<name>/nngp11``, ``<name>/ntk11``
(at X1, None).  ``config`` also holds the versions of neural-tangents, jax and numpy that produced it.
The networks cover 1-D and 2-D convolutions with 'VALID', 'SAME' and 'CIRCULAR' padding and strides, AvgPool
(with and without normalize_edges), GlobalAvgPool, Flatten, Dense on images, LayerNorm over channels, FanOut /
FanInSum / FanInConcat over channels, 'standard' parameterization, Erf and Relu (also after pooling of a
Gaussian value and on the pooled vector), a small Myrtle-style network on 8x8 images, and Gelu, Sin, LeakyRelu
and Rbf between convolutions and pooling ('activations').

``conv_spatial_kernels.npz`` (the same keys): networks whose output keeps spatial axes (no Flatten or
GlobalAvgPool), where neural-tangents returns the covariance between every pair of output positions,
(N1, N2, H, H', W, W') or (N1, N2, W, W') for 1-D images, with its spatial dimensions reversed after an odd
number of Conv layers (``Kernel.is_reversed``, also recorded as ``<name>/is_reversed``): 1-D 'SAME' with
strides ending in Conv (Erf), 2-D 'VALID' with strides ending in Relu, 2-D 'CIRCULAR' ending in AvgPool
('SAME', strides), a Dense readout per position, and three branches of different Conv counts joined by
FanInSum (the order of the majority).  For the networks without pooling also ``kernel_fn(...,
diagonal_spatial=True)``, the same positions only (N1, N2, H, W): ``<name>/diagonal/nngp12`` etc.
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

VERSIONS = {"neural_tangents": nt.__version__, "jax": jax.__version__, "numpy": np.__version__}

NETWORKS = {
    "conv1d_valid": ("serial(Conv(16, (3,), W_std=1.5, b_std=0.2), Erf(), Conv(16, (2,), strides=(2,), W_std=1.3, "
                     "b_std=0.1), Relu(), Flatten(), Dense(1, W_std=1.2, b_std=0.3))", (7, 3)),
    "conv1d_same_pool": ("serial(Conv(16, (3,), padding='SAME', b_std=0.1), Relu(), AvgPool((2,), strides=(2,)), "
                         "Conv(16, (3,), padding='CIRCULAR', W_std=1.4), Erf(), GlobalAvgPool(), Dense(1))", (7, 3)),
    "conv1d_circular_stride": ("serial(Conv(16, (4,), strides=(2,), padding='CIRCULAR', b_std=0.3), Relu(), "
                               "AvgPool((3,), padding='SAME', normalize_edges=True), Conv(8, (2,), padding='SAME'), "
                               "Relu(), AvgPool((2,), padding='CIRCULAR'), Flatten(), Dense(1))", (9, 2)),
    "conv2d_flatten": ("serial(Conv(16, (3, 3), padding='SAME', W_std=1.5, b_std=0.1), Relu(), "
                       "Conv(16, (2, 2), strides=(2, 2)), Erf(), Flatten(), Dense(1, b_std=0.2))", (5, 6, 2)),
    "conv2d_pool": ("serial(Conv(16, (3, 2), strides=(1, 2), padding='CIRCULAR', b_std=0.2), Relu(), "
                    "AvgPool((2, 2), padding='SAME'), Conv(16, (2, 2), padding='SAME', W_std=1.3), Relu(), "
                    "AvgPool((2, 3), strides=(1, 2), padding='SAME', normalize_edges=True), GlobalAvgPool(), "
                    "Dense(1))", (5, 6, 2)),
    "myrtle": ("serial(Conv(16, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.0), Relu(), "
               "Conv(16, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.0), Relu(), "
               "AvgPool((2, 2), strides=(2, 2)), "
               "Conv(16, (3, 3), padding='SAME', W_std=1.4142135623730951, b_std=0.0), Relu(), "
               "AvgPool((2, 2), strides=(2, 2)), "
               "AvgPool((2, 2), strides=(2, 2)), Flatten(), Dense(1, W_std=1.0, b_std=0.0))", (8, 8, 3)),
    "standard": ("serial(Conv(16, (3, 3), padding='SAME', W_std=1.3, b_std=0.2, parameterization='standard'), "
                 "Erf(), Dense(16, W_std=1.2, b_std=0.1, parameterization='standard'), Relu(), "
                 "AvgPool((2, 2), padding='SAME', normalize_edges=True), "
                 "Conv(16, (2, 2), strides=(2, 1), W_std=1.1, b_std=0.3, parameterization='standard'), Relu(), "
                 "GlobalAvgPool(), Dense(1, W_std=1.5, b_std=0.1, parameterization='standard'))", (5, 4, 2)),
    "standard_flatten": ("serial(Conv(16, (3,), padding='CIRCULAR', W_std=1.3, b_std=0.2, "
                         "parameterization='standard'), Relu(), Conv(16, (2,), strides=(2,), W_std=1.1, "
                         "parameterization='standard'), Erf(), Flatten(), "
                         "Dense(1, W_std=1.5, b_std=0.1, parameterization='standard'))", (6, 3)),
    "branches": ("serial(Conv(16, (3,), padding='SAME', b_std=0.1), FanOut(2), "
                 "parallel(serial(Relu(), Conv(16, (3,), padding='SAME')), Dense(16, W_std=0.8, b_std=0.1)), "
                 "FanInSum(), Relu(), FanOut(2), parallel(Conv(8, (1,)), serial(Dense(24, b_std=0.2), Erf())), "
                 "FanInConcat(), AvgPool((2,)), Conv(16, (2,), padding='SAME'), LayerNorm(), "
                 "GlobalAvgPool(), Dense(1))", (6, 2)),
    "pool_then_activation": ("serial(Conv(16, (2, 2), padding='SAME', W_std=1.2, b_std=0.3), AvgPool((2, 2)), "
                             "Erf(), Conv(16, (2, 2), padding='CIRCULAR', W_std=1.5), GlobalAvgPool(), Relu(), "
                             "Dense(16, W_std=1.3, b_std=0.2), Relu(), Dense(1))", (4, 5, 2)),
    "activations": ("serial(Conv(16, (3, 3), padding='SAME', W_std=1.3, b_std=0.2), Gelu(), "
                    "Conv(16, (3, 3), padding='CIRCULAR', W_std=1.5, b_std=0.1), Sin(), AvgPool((2, 2), padding='SAME'), "
                    "Conv(16, (2, 2), padding='SAME', W_std=1.2, b_std=0.3), LeakyRelu(0.2), Conv(16, (2, 2), W_std=1.4), "
                    "Rbf(0.7), GlobalAvgPool(), Dense(1, W_std=1.1, b_std=0.1))", (5, 6, 2)),
}

SPATIAL_NETWORKS = {
    "conv1d_same_erf": ("serial(Conv(8, (3,), padding='SAME', W_std=1.5, b_std=0.2), Erf(), "
                        "Conv(1, (3,), strides=(2,), padding='SAME', W_std=1.2, b_std=0.1))", (7, 3)),
    "conv2d_valid_strides_relu": ("serial(Conv(8, (3, 2), strides=(1, 2), W_std=1.4, b_std=0.1), Relu(), "
                                  "Conv(4, (2, 2), padding='SAME', W_std=1.3, b_std=0.2), Relu())", (5, 5, 2)),
    "conv2d_circular_avgpool": ("serial(Conv(8, (3, 2), padding='CIRCULAR', W_std=1.4, b_std=0.2), Relu(), "
                                "AvgPool((2, 2), strides=(1, 2), padding='SAME'))", (4, 5, 2)),
    "conv2d_dense_readout": ("serial(Conv(8, (2, 3), padding='SAME', W_std=1.3, b_std=0.2), Relu(), "
                             "Dense(3, W_std=1.1, b_std=0.1))", (3, 4, 2)),
    "conv2d_branches": ("serial(Conv(8, (3, 3), padding='SAME', b_std=0.1), FanOut(3), "
                        "parallel(serial(Relu(), Conv(8, (3, 3), padding='SAME')), Dense(8, W_std=0.8), "
                        "Dense(8, b_std=0.2)), FanInSum(), Erf(), Conv(2, (2, 2), padding='SAME', W_std=1.2))",
                        (4, 3, 2)),
}


def record(networks, rng, out, names):
    """Inputs and neural-tangents' kernels of ``networks`` into the npz file ``out``."""
    data, config = {}, {"versions": VERSIONS, "networks": {}}
    for name, (text, shape) in networks.items():
        _, _, kernel_fn = eval(text, {"__builtins__": {}}, names)  # noqa: S307 -- fixed strings above
        X1, X2 = rng.normal(size=(3,) + shape), rng.normal(size=(2,) + shape)
        k12 = kernel_fn(X1, X2, ("nngp", "ntk"))
        k11 = kernel_fn(X1, None, ("nngp", "ntk"))
        data.update({f"{name}/X1": X1, f"{name}/X2": X2, f"{name}/nngp12": np.asarray(k12[0]),
                     f"{name}/ntk12": np.asarray(k12[1]), f"{name}/nngp11": np.asarray(k11[0]),
                     f"{name}/ntk11": np.asarray(k11[1])})
        if np.ndim(k12[0]) > 2:  # an output with spatial axes: the order of its spatial dimensions
            data[f"{name}/is_reversed"] = np.array(bool(kernel_fn(X1, X2).is_reversed))
            if "Pool" not in text:  # same positions only (neural-tangents refuses it for pooling)
                for pair, x2 in (("12", X2), ("11", None)):
                    k = kernel_fn(X1, x2, ("nngp", "ntk"), diagonal_spatial=True)
                    data[f"{name}/diagonal/nngp{pair}"], data[f"{name}/diagonal/ntk{pair}"] = map(np.asarray, k)
        assert np.asarray(k12[0]).dtype == np.float64
        config["networks"][name] = text
        print(name, np.asarray(k12[0]).shape, np.asarray(k11[1]).ravel()[0])
    np.savez_compressed(out, config=json.dumps(config), **data)
    print("wrote", out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/data/neural_tangents")
    parser.add_argument("--which", choices=("all", "vector", "spatial"), default="all",
                        help="the networks with vector outputs (conv_kernels.npz), with spatial outputs "
                             "(conv_spatial_kernels.npz), or both")
    args = parser.parse_args()
    names = {n: getattr(stax, n) for n in ("serial", "parallel", "Conv", "AvgPool", "GlobalAvgPool", "Flatten",
                                           "Dense", "Relu", "Erf", "FanOut", "FanInSum", "FanInConcat", "LayerNorm", "Gelu",
                                           "Sin", "LeakyRelu", "Rbf")}
    if args.which in ("all", "vector"):
        record(NETWORKS, np.random.default_rng(20261207), Path(args.out) / "conv_kernels.npz", names)
    if args.which in ("all", "spatial"):
        record(SPATIAL_NETWORKS, np.random.default_rng(20261208), Path(args.out) / "conv_spatial_kernels.npz", names)


if __name__ == "__main__":
    main()
