r"""An independent float64 evaluation of the infinite-width NNGP and NTK, for the cross-check of ``check``.

The same layer recursion as :mod:`ntk_theory.recursions` (conventions of :mod:`ntk_theory.conventions`),

    K(1) = C_b + C_W G0,  Theta(1) = lambda_b + lambda_W G0,   G0_ab = x_a . x_b / n_0
    K(l+1) = C_b + C_W E[s(u) s(v)],  Theta(l+1) = lambda_b + lambda_W E[s(u) s(v)] + C_W E[s'(u) s'(v)] Theta(l)

but with every Gaussian expectation computed by plain quadrature of the reference network's hand-written
NumPy activation (:func:`ntk_theory.reference.numpy_activation`): no closed form, no symbolic
derivation, no compiled code is shared with the code under test.

Each expectation over (u, v) ~ N(0, [[k_aa, k_ab], [k_ab, k_bb]]) is a 2-D integral in polar coordinates
of the whitened pair: u = A r cos t, v = B r cos(t - phi) with A = sqrt(k_aa), B = sqrt(k_bb),
cos phi = k_ab / (A B), and density r exp(-r^2/2) / (2 pi).  The lines u = 0 and v = 0, where the
library activations have their kinks, are rays t = +-pi/2 and t = phi +- pi/2, so they are panel edges
in t for every correlation (nearly parallel inputs included); along a ray the integrand is smooth.
Composite Gauss-Legendre: r in [0, 9] (the weight is below 3e-18 beyond) in panels of width
min(1, 2 / max(A, B)), t in panels of width min(1/2, 2 / (9 max(A, B))) between the kink rays, so that the
complex singularities of tanh- or sigmoid-like activations stay at least pi/2 half-widths from each
panel (geometric convergence).

Error model: the whole recursion is run twice on the same panels, with ``order`` and with
``check_order`` nodes per panel; the difference of the two outputs estimates the error of the
lower-order one, so it is an overestimate of the error of the ``order`` result that is returned.  It
is an estimate, not a bound: an activation with kinks away from 0 (a user-supplied pair) converges only
algebraically and shows up as a large estimate.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _checks
from .conventions import PARAMETERIZATIONS, learning_rate_factors
from .progress import progress_bar
from .reference.activations import numpy_activation

#: radial cut-off: exp(-R^2/2) = 2.6e-18
R_MAX = 9.0


@functools.lru_cache(maxsize=8)
def _gauss_legendre(order: int):
    x, w = np.polynomial.legendre.leggauss(order)
    return x, w


def _panels(edges: np.ndarray, order: int):
    """Nodes and weights of composite Gauss-Legendre on consecutive intervals [edges[i], edges[i+1]]."""
    x, w = _gauss_legendre(order)
    a, b = edges[:-1, None], edges[1:, None]
    half = (b - a) / 2
    return ((a + b) / 2 + half * x).ravel(), (half * w).ravel()


def _subdivide(edges, width: float) -> np.ndarray:
    """Each interval of the sorted ``edges`` split into equal pieces no wider than ``width``."""
    out = [edges[0]]
    for a, b in zip(edges[:-1], edges[1:]):
        if b - a <= 0:
            continue
        m = max(1, int(np.ceil((b - a) / width)))
        out.extend(a + (b - a) * np.arange(1, m + 1) / m)
    return np.array(out)


def gaussian_pair_expectations(act, k_aa: float, k_bb: float, k_ab: float, order: int = 16, same: bool = False):
    """(E[s(u) s(v)], E[s'(u) s'(v)]) for (u, v) ~ N(0, [[k_aa, k_ab], [k_ab, k_bb]]) by composite
    Gauss-Legendre in polar coordinates (module docstring); ``act`` a :class:`NumpyActivation`.
    ``same``: u = v exactly (a diagonal entry: the angle phi is 0, not the arccos of a rounded 1)."""
    A, B = np.sqrt(max(k_aa, 0.0)), np.sqrt(max(k_bb, 0.0))
    det = max(k_aa * k_bb - k_ab * k_ab, 0.0)
    phi = 0.0 if same else float(np.arctan2(np.sqrt(det), k_ab))
    scale = max(A, B, 1e-300)
    r_edges = _subdivide(np.array([0.0, R_MAX]), min(1.0, 2.0 / scale))
    kinks = np.mod(np.array([np.pi / 2, 3 * np.pi / 2, phi + np.pi / 2, phi + 3 * np.pi / 2]), 2 * np.pi)
    t_edges = _subdivide(np.unique(np.concatenate([[0.0, 2 * np.pi], kinks])), min(0.5, 2.0 / (R_MAX * scale)))
    r, wr = _panels(r_edges, order)
    t, wt = _panels(t_edges, order)
    radial = wr * r * np.exp(-0.5 * r * r) / (2 * np.pi)  # (nr,)
    u = A * np.outer(r, np.cos(t))
    v = B * np.outer(r, np.cos(t - phi))
    with np.errstate(over="ignore", invalid="ignore"):
        ss = radial @ (act.value(u) * act.value(v)) @ wt
        dd = radial @ (act.derivative(u) * act.derivative(v)) @ wt
    return float(ss), float(dd)


def _recursion(act, G0, same, C_W, C_b, lambdas, order: int, bar):
    N = G0.shape[0]
    lb, lw = lambdas[0]
    K = C_b[0] + C_W[0] * G0
    Th = lb + lw * G0
    pairs = [(a, b) for a in range(N) for b in range(a, N)]
    for layer in range(1, len(C_W)):
        lb, lw = lambdas[layer]
        newK, newTh = np.empty_like(K), np.empty_like(Th)
        for a, b in pairs:
            ss, dd = gaussian_pair_expectations(act, K[a, a], K[b, b], K[a, b], order, bool(same[a, b]))
            newK[a, b] = newK[b, a] = C_b[layer] + C_W[layer] * ss
            newTh[a, b] = newTh[b, a] = lb + lw * ss + C_W[layer] * dd * Th[a, b]
            bar.update(1)
        K, Th = newK, newTh
        if not (np.all(np.isfinite(K)) and np.all(np.isfinite(Th))):
            raise FloatingPointError(f"the quadrature of hidden layer {layer} overflowed or produced NaN")
    return K, Th


def quadrature_kernels(activation, X, depth: int, C_W=2.0, C_b=0.0, param: str = "ntk", widths=None, *,
                       order: int = 16, check_order: int = 10, progress=None) -> dict:
    """NNGP and NTK (N, N) of the output at inputs X, by the quadrature of the module docstring.

    ``activation``: anything :func:`ntk_theory.reference.numpy_activation` accepts; ``C_W``, ``C_b``
    scalars or ``depth + 1`` values; ``widths`` the hidden widths (``param="standard"`` only).
    Returns ``{"nngp", "ntk", "nngp_error", "ntk_error"}`` (the error estimates are absolute, per entry).
    """
    act = numpy_activation(activation)
    X = _checks.inputs(X)
    depth = _checks.positive_int("depth", depth)
    C_W = _checks.per_layer("C_W", C_W, depth + 1)
    C_b = _checks.per_layer("C_b", C_b, depth + 1)
    _checks.choice("param", param, PARAMETERIZATIONS)
    d = X.shape[1]
    if param == "standard":
        if widths is None:
            raise ValueError("param='standard' has lambda_W = n_(l-1): give the hidden widths")
        fan_in = [d, *_checks.per_layer("widths", widths, depth, check=_checks.positive_int)]
    else:
        fan_in = [d] + [1] * depth
    lambdas = [learning_rate_factors(param, C_W[l], C_b[l], fan_in[l]) for l in range(depth + 1)]
    G0 = X @ X.T / d
    same = np.all(X[:, None, :] == X[None, :, :], axis=2)
    N = X.shape[0]
    steps = 2 * depth * N * (N + 1) // 2
    with progress_bar(total=steps, desc="independent quadrature", unit="pair", enabled=progress) as bar:
        K, Th = _recursion(act, G0, same, C_W, C_b, lambdas, order, bar)
        K2, Th2 = _recursion(act, G0, same, C_W, C_b, lambdas, check_order, bar)
    return {"nngp": K, "ntk": Th, "nngp_error": np.abs(K - K2), "ntk_error": np.abs(Th - Th2)}
