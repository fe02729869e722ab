"""Record neural-tangents' outputs for the tests (run with neural-tangents' own Python, a separate venv).

usage: python record_neural_tangents.py [--out tests/data/neural_tangents] [--only kernels,empirical,dynamics,stax,stax_apply]

Everything is float64 (``jax_enable_x64``).  Each ``.npz`` holds the inputs, the parameters (where there
are any), neural-tangents' outputs and ``config``: a JSON string with the configuration and the versions
of neural-tangents, jax and numpy that produced it.  Files written:

``kernels.npz``
    ``kernel_fn(X1, X2)`` and ``kernel_fn(X1, None)`` (nngp and ntk) of stax MLPs
    ``[Dense(n, W_std, b_std, parameterization), act] * depth + [Dense(1, W_std, b_std)]``, one entry per
    configuration in ``config["jobs"]`` (activation, depth, W_std, b_std, hidden width, parameterization).
    The ``X1, None`` diagonal is neural-tangents' (it loses about 8 digits: arccos near angle 0).
``empirical.npz``
    ``empirical_ntk_fn`` (Jacobian contraction; the other two implementations are checked against it here
    and their largest difference stored as ``impl_max_diff``) of MLPs with fixed parameters, full
    (``trace_axes=()``, shape (N1, N2, O, O)) and traced (``trace_axes=(-1,)``), at (X1, X1) and (X1, X2),
    and the outputs ``f`` at X1.  Parameters are stored in ntk-theory's convention: ``<net>/W<l>``
    (n_l, n_(l-1)), ``<net>/b<l>``, with ``z = W a + b``, and the learning-rate factors
    ``<net>/lambda_W<l>``, ``<net>/lambda_b<l>`` (Theta weights the W term lambda_W / n_(l-1)).
    Conversion to stax: 'ntk' omega = sqrt(n_in) / W_std W^T, beta = b / b_std (z = W_std / sqrt(n_in)
    a omega + b_std beta, so lambda_W = W_std^2, lambda_b = b_std^2); 'standard' stax W = W^T, b = b
    (lambda_W = n_in, lambda_b = 1).
``dynamics.npz``
    ``predict.gradient_descent_mse`` (at times ``ts`` and at infinity), ``gradient_descent_mse_ensemble``
    (mean and covariance, test and train, for get = 'ntk' and 'nngp') and ``max_learning_rate`` for an
    erf MLP's kernels on joint train+test inputs (the kernels are stored and are the input of both sides).
``stax_<name>.npz``
    Kernels (nngp, ntk at X, None: 6 inputs of dimension 5) of branching networks, for 'ntk' and
    'standard' parameterization; the network is ``config["network"]``, a stax expression in which
    ``Dense`` carries the parameterization.  Where neural-tangents raises, ``<param>/raised`` is 1 and
    ``config["raised"][param]`` names the exception and its message; ``stax_unsupported.npz`` records
    networks neural-tangents is known to reject.
``stax_apply.npz``
    Parameters drawn by stax ``init_fn`` (keys ``<name>/param/<path>``, the JAX tree path of each leaf),
    ``apply_fn`` at X and the full empirical NTK (``trace_axes=()``, (N, N, O, O)) of the branching networks
    above with hidden widths 16 and 8 in place of 64 and 32 (ntk parameterization; the two rejected by ``kernel_fn`` included, their ``apply_fn`` works), the
    concatenation in 'standard' and a bias-free three-output MLP in both parameterizations.
"""

import argparse
import functools
import json
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import predict, stax  # noqa: E402

# FanIn layers warn that they assume independent branches; every branch recorded here has its own Dense layer
warnings.filterwarnings("ignore", message="`FanIn` layers assume independent inputs")

VERSIONS = {"neural_tangents": nt.__version__, "jax": jax.__version__, "numpy": np.__version__}

# activation name (as ntk-theory spells it) -> stax layer
ACTS = {
    "relu": lambda: stax.Relu(),
    "erf": lambda: stax.Erf(),
    "gelu": lambda: stax.Gelu(approximate=False),
    "sin": lambda: stax.Sin(),
    "cos": lambda: stax.Cos(),
    "abs": lambda: stax.Abs(),
    "sign": lambda: stax.Sign(),
    "leaky_relu(1/10)": lambda: stax.LeakyRelu(0.1),
    "abrelu(1/2,2)": lambda: stax.ABRelu(0.5, 2.0),
    "rbf": lambda: stax.Rbf(1.0),
    "monomial(3)": lambda: stax.Monomial(3),
    "exp": lambda: stax.Exp(),
    "gaussian": lambda: stax.Gaussian(1.0, -0.5),  # a exp(b x^2) = exp(-x^2 / 2)
    # only the function (empirical NTK); neural-tangents has no tanh kernel
    "tanh": lambda: stax.Elementwise(fn=jnp.tanh),
}
# relu_power(2) is left out: RectifiedMonomial(2) returns NaN at every entry in float64 here.
KERNEL_ACTIVATIONS = ["relu", "erf", "gelu", "sin", "cos", "abs", "sign", "leaky_relu(1/10)", "abrelu(1/2,2)",
                      "rbf", "monomial(3)", "exp", "gaussian"]
# more depths, variances and widths for the activations with closed forms used most
EXTRA = [dict(depth=1, W_std=1.0, b_std=0.0, width=64), dict(depth=4, W_std=1.6, b_std=0.5, width=200)]
EXTRA_ACTIVATIONS = ["relu", "erf", "abs", "leaky_relu(1/10)", "gelu"]
PARAMETERIZATIONS = ("ntk", "standard")


def save(out: Path, name: str, arrays: dict, config: dict) -> None:
    config = {**config, "versions": VERSIONS}
    path = out / f"{name}.npz"
    np.savez_compressed(path, config=np.array(json.dumps(config, sort_keys=True)), **arrays)
    print(f"{path}: {path.stat().st_size / 1024:.1f} KiB", flush=True)


def mlp(act, depth, W_std, b_std, width, parameterization, out_dim=1):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W_std, b_std=b_std, parameterization=parameterization), ACTS[act]()]
    layers.append(stax.Dense(out_dim, W_std=W_std, b_std=b_std, parameterization=parameterization))
    return stax.serial(*layers)


# ---------------------------------------------------------------------- infinite-width kernels of MLPs
def record_kernels(out: Path) -> None:
    rng = np.random.default_rng(0)
    X1, X2 = rng.standard_normal((5, 4)) * 0.7, rng.standard_normal((3, 4)) * 0.7
    jobs = []
    for act in KERNEL_ACTIVATIONS:
        for p in PARAMETERIZATIONS:
            jobs.append(dict(act=act, depth=2, W_std=1.3, b_std=0.2, width=512, parameterization=p))
    for act in EXTRA_ACTIVATIONS:
        for extra in EXTRA:
            for p in PARAMETERIZATIONS:
                jobs.append(dict(act=act, **extra, parameterization=p))
    arrays = {"X1": X1, "X2": X2}
    for job in jobs:
        job["name"] = "{act}|L{depth}|W{W_std}|b{b_std}|n{width}|{parameterization}".format(**job)
        kernel_fn = jax.jit(mlp(job["act"], job["depth"], job["W_std"], job["b_std"], job["width"],
                                job["parameterization"])[2], static_argnames="get")
        for tag, x2 in (("cross", X2), ("same", None)):
            k = kernel_fn(X1, x2, get=("nngp", "ntk"))
            arrays[f"{job['name']}/{tag}/nngp"] = np.asarray(k.nngp)
            arrays[f"{job['name']}/{tag}/ntk"] = np.asarray(k.ntk)
    save(out, "kernels", arrays, {
        "what": "stax kernel_fn of [Dense(width, W_std, b_std, parameterization), act] * depth + "
                "[Dense(1, W_std, b_std, parameterization)]; keys '<name>/cross/<nngp|ntk>' = kernel_fn(X1, X2), "
                "'<name>/same/<nngp|ntk>' = kernel_fn(X1, None)",
        "jobs": jobs})


# ---------------------------------------------------------------------- empirical NTK with fixed parameters
EMPIRICAL_NETS = [
    dict(name="relu_ntk", widths=[4, 48, 48, 3], acts=["relu", "relu"], W_std=1.4, b_std=0.1, parameterization="ntk"),
    dict(name="erf_standard", widths=[4, 32, 2], acts=["erf"], W_std=1.2, b_std=0.3, parameterization="standard"),
    dict(name="gelu_tanh_ntk", widths=[4, 40, 24, 2], acts=["gelu", "tanh"], W_std=1.3, b_std=0.2,
         parameterization="ntk"),
    dict(name="leaky_abs_relu_standard", widths=[4, 24, 24, 24, 1], acts=["leaky_relu(1/10)", "abs", "relu"],
         W_std=1.5, b_std=0.05, parameterization="standard"),
]
IMPLEMENTATIONS = {
    "jacobian_contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    "ntk_vector_products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    "structured": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
}


def record_empirical(out: Path) -> None:
    rng = np.random.default_rng(1)
    X1, X2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    arrays = {"X1": X1, "X2": X2}
    nets = []
    for net in EMPIRICAL_NETS:
        name, widths, W_std, b_std, p = net["name"], net["widths"], net["W_std"], net["b_std"], net["parameterization"]
        layers, params = [], []
        for l in range(1, len(widths)):
            n_in, n_out = widths[l - 1], widths[l]
            # ntk-theory's convention: W(l) ~ N(0, W_std^2 / n_in), b(l) ~ N(0, b_std^2), z = W a + b
            W = rng.standard_normal((n_out, n_in)) * W_std / np.sqrt(n_in)
            b = rng.standard_normal(n_out) * b_std
            arrays[f"{name}/W{l}"], arrays[f"{name}/b{l}"] = W, b
            if p == "ntk":
                lam_W, lam_b = W_std ** 2, b_std ** 2
                params.append((jnp.asarray(np.sqrt(n_in) / W_std * W.T), jnp.asarray(b / b_std)))
            else:
                lam_W, lam_b = float(n_in), 1.0
                params.append((jnp.asarray(W.T), jnp.asarray(b)))
            arrays[f"{name}/lambda_W{l}"], arrays[f"{name}/lambda_b{l}"] = lam_W, lam_b
            layers.append(stax.Dense(n_out, W_std=W_std, b_std=b_std, parameterization=p))
            if l < len(widths) - 1:
                layers.append(ACTS[net["acts"][l - 1]]())
                params.append(())
        _, apply_fn, _ = stax.serial(*layers)
        arrays[f"{name}/f"] = np.asarray(apply_fn(params, jnp.asarray(X1)))
        impl_diff = 0.0
        for trace, axes in (("full", ()), ("traced", (-1,))):
            fns = {impl: nt.empirical_ntk_fn(apply_fn, trace_axes=axes, vmap_axes=0, implementation=code)
                   for impl, code in IMPLEMENTATIONS.items()}
            for tag, x2 in (("same", None), ("cross", X2)):
                ks = {impl: np.asarray(fn(jnp.asarray(X1), None if x2 is None else jnp.asarray(x2), params))
                      for impl, fn in fns.items()}
                ref = ks["jacobian_contraction"]
                impl_diff = max(impl_diff, *(float(np.max(np.abs(k - ref))) for k in ks.values()))
                arrays[f"{name}/{tag}/{trace}"] = ref
        nets.append({**net, "impl_max_diff": impl_diff})
        print(f"{name}: implementations agree to {impl_diff:.1e}", flush=True)
    save(out, "empirical", arrays, {
        "what": "nt.empirical_ntk_fn (implementation JACOBIAN_CONTRACTION, vmap_axes=0) of stax MLPs with the "
                "stored parameters; keys '<net>/<same|cross>/<full|traced>': trace_axes=() gives (N1, N2, O, O), "
                "trace_axes=(-1,) gives (N1, N2); 'same' is (X1, None), 'cross' (X1, X2); '<net>/f' = apply_fn at X1; "
                "parameters in ntk-theory's convention (W (n_out, n_in), z = W a + b) with learning-rate factors "
                "lambda_W (weighting the W term lambda_W / n_in) and lambda_b",
        "nets": nets})


# ---------------------------------------------------------------------- gradient-descent dynamics
def record_dynamics(out: Path) -> None:
    # neural-tangents 0.6.5's CPU branch of max_learning_rate calls scipy's eigvalsh(eigvals=...), removed
    # from recent scipy; its other branch (jnp.linalg.eigvalsh) is the same formula.
    import neural_tangents._src.predict as nt_predict

    nt_predict._is_on_cpu = lambda x: False
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 3))
    N, O = 6, 2
    y = rng.standard_normal((N, O))
    f0 = rng.standard_normal((9, O)) * 0.5
    ts, lr = np.array([0.0, 1.0, 10.0, 123.0]), 0.8
    net = dict(act="erf", depth=2, W_std=float(np.sqrt(1.7)), b_std=float(np.sqrt(0.1)), width=512,
               parameterization="ntk")
    kernel_fn = mlp(net["act"], net["depth"], net["W_std"], net["b_std"], net["width"], net["parameterization"])[2]
    k = kernel_fn(jnp.asarray(X), None, ("nngp", "ntk"))
    nngp, ntk = k.nngp, k.ntk

    fn = predict.gradient_descent_mse(ntk[:N, :N], jnp.asarray(y), learning_rate=lr)
    tr, te = fn(ts, jnp.asarray(f0[:N]), jnp.asarray(f0[N:]), ntk[N:, :N])
    tr_inf, te_inf = fn(None, jnp.asarray(f0[:N]), jnp.asarray(f0[N:]), ntk[N:, :N])

    class Kernels:  # what kernel_fn returns, for gradient_descent_mse_ensemble on the stored matrices
        def __init__(self, **kw):
            self.__dict__.update(kw)

        def _asdict(self):
            return dict(self.__dict__)

    def stored_kernel_fn(x1, x2, get, **kw):
        i = np.asarray(x1[:, 0], dtype=int)
        j = i if x2 is None else np.asarray(x2[:, 0], dtype=int)
        blocks = {"nngp": nngp[np.ix_(i, j)], "ntk": ntk[np.ix_(i, j)]}
        return blocks[get] if isinstance(get, str) else Kernels(**{g: blocks[g] for g in get})

    xtr = jnp.arange(N, dtype=jnp.float64)[:, None]  # row indices stand in for inputs
    xte = jnp.arange(N, X.shape[0], dtype=jnp.float64)[:, None]
    ens = predict.gradient_descent_mse_ensemble(stored_kernel_fn, xtr, jnp.asarray(y), learning_rate=lr)
    arrays = {"X": X, "nngp": np.asarray(nngp), "ntk": np.asarray(ntk), "N": N, "y": y, "f0": f0, "ts": ts, "lr": lr,
              "train": np.asarray(tr), "test": np.asarray(te), "train_inf": np.asarray(tr_inf),
              "test_inf": np.asarray(te_inf),
              "max_lr": float(predict.max_learning_rate(ntk[:N, :N], y_train_size=y.size))}
    for get in ("ntk", "nngp"):
        g = ens(ts, xte, get, compute_cov=True)
        arrays[f"ens_{get}_mean"], arrays[f"ens_{get}_cov"] = np.asarray(g.mean), np.asarray(g.covariance)
        g = ens(ts, None, get, compute_cov=True)
        arrays[f"ens_{get}_train_mean"], arrays[f"ens_{get}_train_cov"] = np.asarray(g.mean), np.asarray(g.covariance)
    save(out, "dynamics", arrays, {
        "what": "predict.gradient_descent_mse(ntk[:N, :N], y, learning_rate=lr) at ts and t=None (infinity) "
                "from f0 (train rows first), gradient_descent_mse_ensemble(get='ntk'|'nngp', compute_cov=True) "
                "at ts for the test rows and the train rows (None), max_learning_rate(ntk[:N, :N], y.size); "
                "nngp, ntk: kernel_fn(X, None) of the MLP in 'kernels' (the input of both sides)",
        "kernels": net, "loss": "mean squared error 0.5 / y.size * sum (f - y)^2"})


# ---------------------------------------------------------------------- branching networks (stax)
_C = "W_std=1.4, b_std=0.1"
STAX_NETS = {
    "resblock": f"serial(Dense(64, {_C}), FanOut(2), parallel(serial(Relu(), Dense(64, {_C})), Identity()), "
                f"FanInSum(), Relu(), Dense(1, {_C}))",
    "layernorm": f"serial(Dense(64, {_C}), LayerNorm(axis=-1), Relu(), Dense(64, {_C}), Erf(), Dense(1, {_C}))",
    "concat": f"serial(Dense(64, {_C}), Relu(), FanOut(2), parallel(Dense(64, {_C}), "
              f"serial(Dense(32, W_std=1.2, b_std=0.3), Erf(), Dense(32, W_std=0.9, b_std=0.2))), FanInConcat(), "
              f"Dense(1, {_C}))",
    "fansum": f"serial(Dense(64, {_C}), Relu(), FanOut(2), parallel(Dense(64, {_C}), "
              f"serial(Dense(64, W_std=1.2, b_std=0.3), Erf(), Dense(64, W_std=0.9, b_std=0.2))), FanInSum(), "
              f"Relu(), Dense(1, {_C}))",
}
# known to be rejected by neural-tangents 0.6.5 (recorded as flags, for comparison with what ntk-theory supports)
STAX_UNSUPPORTED = {
    "layernorm_after_relu": f"serial(Dense(64, {_C}), Relu(), LayerNorm(axis=-1), Dense(1, {_C}))",
    "identity_after_relu": f"serial(Dense(64, {_C}), Relu(), FanOut(2), parallel(Dense(64, {_C}), Identity()), "
                           f"FanInSum(), Dense(1, {_C}))",
    "relu_after_concat": f"serial(Dense(64, {_C}), FanOut(2), parallel(Dense(64, {_C}), Dense(32, {_C})), "
                         f"FanInConcat(), Relu(), Dense(1, {_C}))",
}


def stax_network(expression: str, parameterization: str):
    names = {n: getattr(stax, n) for n in ("serial", "parallel", "FanOut", "FanInSum", "FanInConcat", "Identity",
                                           "Relu", "Erf", "LayerNorm")}
    names["Dense"] = functools.partial(stax.Dense, parameterization=parameterization)
    return eval(expression, {"__builtins__": {}}, names)


def stax_kernels(expression: str, X, arrays: dict, raised: dict) -> None:
    for p in PARAMETERIZATIONS:
        try:
            k = stax_network(expression, p)[2](jnp.asarray(X), None, ("nngp", "ntk"))
            arrays[f"{p}/nngp"], arrays[f"{p}/ntk"] = np.asarray(k.nngp), np.asarray(k.ntk)
            arrays[f"{p}/raised"] = 0
        except (NotImplementedError, ValueError) as e:
            arrays[f"{p}/raised"] = 1
            raised[p] = f"{type(e).__name__}: {e}"
            print(f"  {p}: {raised[p]}", flush=True)


def record_stax(out: Path) -> None:
    X = np.random.default_rng(5).standard_normal((6, 5))
    what = ("stax kernel_fn(X, None, ('nngp', 'ntk')) of the network (Dense carries the parameterization); "
            "keys '<param>/nngp', '<param>/ntk', '<param>/raised' (1: neural-tangents raised, see 'raised')")
    for name, expression in STAX_NETS.items():
        arrays, raised = {"X": X}, {}
        print(f"stax_{name}", flush=True)
        stax_kernels(expression, X, arrays, raised)
        save(out, f"stax_{name}", arrays, {"what": what, "network": expression, "parameterizations": PARAMETERIZATIONS,
                                            "raised": raised})
    arrays, entries = {"X": X}, {}
    for name, expression in STAX_UNSUPPORTED.items():
        sub, raised = {}, {}
        stax_kernels(expression, X, sub, raised)
        arrays.update({f"{name}/{k}": v for k, v in sub.items()})
        entries[name] = {"network": expression, "raised": raised}
    save(out, "stax_unsupported", arrays, {"what": what.replace("'<param>", "'<name>/<param>"),
                                           "networks": entries, "parameterizations": PARAMETERIZATIONS})


# ---------------------------------------------------------------------- parameters, apply_fn, empirical NTK (stax)
def _narrow(expression: str) -> str:
    """The same network with hidden widths 64 -> 16 and 32 -> 8 (small recorded parameters)."""
    return expression.replace("Dense(64,", "Dense(16,").replace("Dense(32,", "Dense(8,")


STAX_APPLY_NETS = {
    **{f"{name}/ntk": (_narrow(expr), "ntk") for name, expr in STAX_NETS.items()},
    **{f"{name}/ntk": (_narrow(expr), "ntk") for name, expr in STAX_UNSUPPORTED.items()
       if name != "relu_after_concat"},
    "concat/standard": (_narrow(STAX_NETS["concat"]), "standard"),
    "nobias_three_outputs/standard": ("serial(Dense(32, W_std=1.3), Relu(), Dense(16, W_std=1.1), Erf(), "
                                      "Dense(3, W_std=0.9))", "standard"),
    "nobias_three_outputs/ntk": ("serial(Dense(32, W_std=1.3), Relu(), Dense(16, W_std=1.1), Erf(), "
                                 "Dense(3, W_std=0.9))", "ntk"),
}


def record_stax_apply(out: Path) -> None:
    X = np.random.default_rng(7).standard_normal((5, 4))
    arrays, nets = {"X": X}, {}
    for k, (name, (expression, p)) in enumerate(STAX_APPLY_NETS.items()):
        init_fn, apply_fn, _ = stax_network(expression, p)
        _, params = init_fn(jax.random.PRNGKey(100 + k), X.shape)
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        paths = []
        for keypath, leaf in leaves:
            path = ".".join(str(entry.idx) for entry in keypath)
            arrays[f"{name}/param/{path}"] = np.asarray(leaf)
            paths.append(path)
        arrays[f"{name}/f"] = np.asarray(apply_fn(params, jnp.asarray(X)))
        fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0,
                                 implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)
        arrays[f"{name}/ntk"] = np.asarray(fn(jnp.asarray(X), None, params))
        nets[name] = {"network": expression, "parameterization": p, "paths": paths}
        print(f"{name}: {len(paths)} parameter arrays, output {arrays[f'{name}/f'].shape}", flush=True)
    save(out, "stax_apply", arrays, {
        "what": "stax init_fn(PRNGKey(100 + k), X.shape) parameters '<name>/param/<path>' (path: the JAX tree "
                "path of the leaf, indices joined by '.', None leaves absent), apply_fn(params, X) as '<name>/f' "
                "(N, O), and nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, JACOBIAN_CONTRACTION)"
                "(X, None, params) as '<name>/ntk' (N, N, O, O); Dense carries the parameterization",
        "nets": nets})


RECORDERS = {"kernels": record_kernels, "empirical": record_empirical, "dynamics": record_dynamics, "stax": record_stax,
             "stax_apply": record_stax_apply}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "tests" / "data" / "neural_tangents"
    parser.add_argument("--out", type=Path, default=default, help=f"output folder (default {default})")
    parser.add_argument("--only", default=",".join(RECORDERS), help="comma-separated subset of " + ",".join(RECORDERS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        if name not in RECORDERS:
            sys.exit(f"unknown recording {name!r}; expected one of {', '.join(RECORDERS)}")
        RECORDERS[name](args.out)


if __name__ == "__main__":
    main()
