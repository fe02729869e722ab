"""Run neural-tangents' predict.gradient_descent_mse / _ensemble / max_learning_rate on given kernels
(called by tests/test_dynamics.py in the separate neural-tangents venv; never imported by the package).

usage: python nt_dynamics.py in.npz out.npz
in.npz: ntk, nngp (joint (N+M, N+M) kernels, train first), N, y (N, O), f0 (N+M, O), ts, lr
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import predict  # noqa: E402

d = dict(np.load(sys.argv[1]))
N = int(d["N"])
ntk, nngp, y, f0, ts, lr = (jnp.asarray(d[k]) for k in ("ntk", "nngp", "y", "f0", "ts", "lr"))
# neural-tangents 0.6.5's CPU branch of max_learning_rate calls scipy's eigvalsh(eigvals=...), removed from
# recent scipy; its other branch (jnp.linalg.eigvalsh) is the same formula.
import neural_tangents._src.predict as _nt_predict  # noqa: E402

_nt_predict._is_on_cpu = lambda x: False
fn = predict.gradient_descent_mse(ntk[:N, :N], y, learning_rate=float(lr))
tr, te = fn(ts, f0[:N], f0[N:], ntk[N:, :N])
tr_inf, te_inf = fn(None, f0[:N], f0[N:], ntk[N:, :N])


class _K:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def _asdict(self):
        return dict(self.__dict__)


def kernel_fn(x1, x2, get, **kw):
    i = np.asarray(x1[:, 0], dtype=int)
    j = i if x2 is None else np.asarray(x2[:, 0], dtype=int)
    blocks = {"nngp": nngp[np.ix_(i, j)], "ntk": ntk[np.ix_(i, j)]}
    if isinstance(get, str):
        return blocks[get]
    return _K(**{g: blocks[g] for g in get})


M = ntk.shape[0] - N
xtr = jnp.arange(N, dtype=jnp.float64)[:, None]
xte = jnp.arange(N, N + M, dtype=jnp.float64)[:, None]
ens = predict.gradient_descent_mse_ensemble(kernel_fn, xtr, y, learning_rate=float(lr))
out = {"train": np.asarray(tr), "test": np.asarray(te), "train_inf": np.asarray(tr_inf), "test_inf": np.asarray(te_inf),
       "max_lr": float(predict.max_learning_rate(ntk[:N, :N], y_train_size=y.size))}
for get in ("ntk", "nngp"):
    g = ens(ts, xte, get, compute_cov=True)
    out[f"ens_{get}_mean"], out[f"ens_{get}_cov"] = np.asarray(g.mean), np.asarray(g.covariance)
    g = ens(ts, None, get, compute_cov=True)
    out[f"ens_{get}_train_mean"], out[f"ens_{get}_train_cov"] = np.asarray(g.mean), np.asarray(g.covariance)
np.savez(sys.argv[2], **out)
