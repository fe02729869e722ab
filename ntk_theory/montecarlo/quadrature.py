r"""Gaussian expectations of the reference network's activations by plain quadrature, independent of the
symbolic layer.

Every expectation here is a quadrature of the reference network's NumPy activation
(:func:`ntk_theory.reference.numpy_activation`): no closed form, no symbolic derivation and no compiled
code is shared with the code the Monte Carlo judges.  Uses: the means of the control variates of
:mod:`ntk_theory.montecarlo.controls` (per network, at the network's own kernel), and the independent
float64 cross-check of ``ntk-theory check`` (:func:`quadrature_kernels`), the layer recursion of
:mod:`ntk_theory.recursions` (conventions of :mod:`ntk_theory.conventions`),

    K(1) = C_b + C_W G0,  Theta(1) = lambda_b + lambda_W G0,   G0_ab = x_a . x_b / n_0
    K(l+1) = C_b + C_W E[s(u) s(v)],  Theta(l+1) = lambda_b + lambda_W E[s(u) s(v)] + C_W E[s'(u) s'(v)] Theta(l).

Two variables.  E[f(u) g(v)] over (u, v) ~ N(0, [[k_aa, k_ab], [k_ab, k_bb]]) is a 2-D integral in polar
coordinates of the whitened pair: u = A r cos t, v = B r cos(t - phi) with A = sqrt(k_aa), B = sqrt(k_bb),
cos phi = k_ab / (A B), and density r exp(-r^2/2) / (2 pi).  The lines u = 0 and v = 0, where the library
activations have their kinks, are the rays t = pi/2, 3 pi/2, phi + pi/2, phi + 3 pi/2: they cut the circle into
four arcs, and within an arc the integrand is smooth along t and along r (nearly parallel inputs included:
phi is the angle itself, never the arccos of a rounded cosine; ``same`` marks u = v exactly).  A
:class:`PolarRule` is a radial rule times Gauss-Legendre panels on each arc:

* :func:`fine_rule` (the cross-check, one covariance at a time): composite Gauss-Legendre of ``order`` nodes,
  r in [0, 9] (the weight is below 3e-18 beyond) in panels of width min(1, 2 / max(A, B)), each arc in panels
  of width <= min(1/2, 2 / (9 max(A, B))), so that the complex singularities of tanh- or sigmoid-like
  activations stay at least pi/2 half-widths from each panel (geometric convergence);
* :func:`gauss_rule` (per network, vectorised over many covariances): the m-point Gauss rule of the weight
  r exp(-r^2/2) on [0, inf) (exact for r^k, k < 2m: ReLU-like products are polynomials in r on every ray)
  and one q-point Gauss-Legendre panel per arc.

One variable.  E[f(u)] for u ~ N(0, k) is split at the kink u = 0: a :class:`LineRule` on [0, inf) summed at
u = +-sqrt(k) x_i (:func:`single_expectations`), the composite Gauss-Legendre of the fine rule's radius
(:func:`fine_line_rule`) or the m-point Gauss rule of exp(-x^2/2) (:func:`gauss_line_rule`).

Error model: the cross-check runs the whole recursion twice, with ``order`` and ``check_order`` nodes per
panel; the difference estimates the error of the lower-order result, so it overestimates that of the
result returned.  The control variates choose the smallest Gauss rule that agrees with the fine rule to a
tolerance at test covariances around the network's kernels (:mod:`ntk_theory.montecarlo.controls`).
These are estimates, not bounds: an activation with a kink away from 0 (a user pair, ``"relu(x - 1)"``)
converges only algebraically and shows up as a large estimate.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from .. import _checks
from ..conventions import PARAMETERIZATIONS, learning_rate_factors
from ..progress import progress_bar
from ..reference.activations import NumpyActivation, numpy_activation

Array = np.ndarray

__all__ = [
    "R_MAX",
    "LineRule",
    "PolarRule",
    "equal_rows",
    "fine_line_rule",
    "fine_rule",
    "gauss_line_rule",
    "gauss_rule",
    "gaussian_pair_expectations",
    "half_range_gauss",
    "layer_expectations",
    "pair_expectations",
    "quadrature_kernels",
    "single_expectations",
]

#: radial cut-off of the fine rule: exp(-R^2/2) = 2.6e-18
R_MAX = 9.0

#: nodes per chunk of the vectorised evaluation (entries x nodes), bounding its temporaries (~8 MB each)
_CHUNK_NODES = 2**20


@functools.lru_cache(maxsize=16)
def _gauss_legendre(order: int):
    return np.polynomial.legendre.leggauss(order)


@functools.lru_cache(maxsize=32)
def half_range_gauss(m: int, power: int) -> tuple[Array, Array]:
    """Nodes and weights of the m-point Gauss rule for the weight x^power exp(-x^2/2) on [0, inf).

    Computed by the Stieltjes procedure on a discretisation of the weight (composite 40-point Gauss-Legendre,
    64 panels on [0, 16]: the moments are exact to rounding) and the eigenvalues of the Jacobi matrix
    (Golub-Welsch).  Exact for polynomials of degree < 2m to ~1e-15 relative (tested against the moments
    2^((k+p-1)/2) Gamma((k+p+1)/2))."""
    if m < 1:
        raise ValueError(f"a Gauss rule needs m >= 1 nodes; got {m}")
    x, w = _panels(np.linspace(0.0, 16.0, 65), 40)
    w = w * x**power * np.exp(-0.5 * x * x)
    total = w.sum()
    a, b = np.zeros(m), np.zeros(m)
    p_prev, p = np.zeros_like(x), np.full_like(x, 1.0 / np.sqrt(total))
    for k in range(m):
        a[k] = np.sum(w * x * p * p)
        q = (x - a[k]) * p - (b[k - 1] * p_prev if k else 0.0)
        b[k] = np.sqrt(np.sum(w * q * q))
        p_prev, p = p, q / b[k]
    nodes, vectors = np.linalg.eigh(np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1))
    return nodes, total * vectors[0] ** 2


def _panels(edges: Array, order: int) -> tuple[Array, Array]:
    """Composite Gauss-Legendre on consecutive intervals [edges[..., i], edges[..., i+1]]: nodes and weights
    flattened over the intervals (leading dimensions of ``edges`` kept)."""
    x, w = _gauss_legendre(order)
    a, b = edges[..., :-1, None], edges[..., 1:, None]
    half = (b - a) / 2
    lead = edges.shape[:-1]
    return ((a + b) / 2 + half * x).reshape(*lead, -1), (half * w).reshape(*lead, -1)


def _subdivide(edges, width: float) -> Array:
    """Each interval of the sorted ``edges`` split into equal pieces no wider than ``width``."""
    out = [edges[0]]
    for a, b in itertools.pairwise(edges):
        if b - a <= 0:
            continue
        m = max(1, int(np.ceil((b - a) / width)))
        out.extend(a + (b - a) * np.arange(1, m + 1) / m)
    return np.array(out)


@dataclass(frozen=True)
class PolarRule:
    """A product rule in polar coordinates (module docstring): radial nodes ``r`` with weights ``wr`` that
    include the density r exp(-r^2/2) / (2 pi), and ``arc_panels`` Gauss-Legendre panels of ``arc_order``
    nodes on each of the four arcs between the kink rays."""

    r: Array
    wr: Array
    arc_panels: int
    arc_order: int
    name: str = ""

    @property
    def nodes(self) -> int:
        return len(self.r) * 4 * self.arc_panels * self.arc_order


def fine_rule(scale: float, order: int = 16) -> PolarRule:
    """The cross-check's composite Gauss-Legendre rule for covariances whose largest standard deviation is
    ``scale`` (module docstring)."""
    scale = max(float(scale), 1e-300)
    r, wr = _panels(_subdivide(np.array([0.0, R_MAX]), min(1.0, 2.0 / scale)), order)
    arc_panels = int(np.ceil(np.pi / min(0.5, 2.0 / (R_MAX * scale))))
    return PolarRule(r, wr * r * np.exp(-0.5 * r * r) / (2 * np.pi), arc_panels, order, f"fine({order})")


def gauss_rule(m: int, q: int) -> PolarRule:
    """The m-point radial Gauss rule of r exp(-r^2/2) times one q-point Gauss-Legendre panel per arc."""
    r, w = half_range_gauss(m, 1)
    return PolarRule(r, w / (2 * np.pi), 1, q, f"gauss({m}x{q})")


def pair_expectations(act: NumpyActivation, k11, k22, k12, rule: PolarRule, same=None) -> tuple[Array, Array]:
    """(E[s(u) s(v)], E[s'(u) s'(v)]) for (u, v) ~ N(0, [[k11, k12], [k12, k22]]), elementwise over the
    broadcast arrays ``k11``, ``k22``, ``k12``, by the polar ``rule`` (module docstring).  ``same`` (bool
    array or None): entries where u = v exactly (a diagonal entry: the angle is 0, not the arccos of a
    rounded 1).  A covariance with |k12| slightly above sqrt(k11 k22) by rounding is taken as parallel."""
    k11, k22, k12 = np.broadcast_arrays(*(np.asarray(k, dtype=float) for k in (k11, k22, k12)))
    shape = k11.shape
    k11, k22, k12 = k11.ravel(), k22.ravel(), k12.ravel()
    A, B = np.sqrt(np.maximum(k11, 0.0)), np.sqrt(np.maximum(k22, 0.0))
    phi = np.arctan2(np.sqrt(np.maximum(k11 * k22 - k12 * k12, 0.0)), k12)
    if same is not None:
        phi = np.where(np.broadcast_to(same, shape).ravel(), 0.0, phi)
    ss, dd = np.empty(len(phi)), np.empty(len(phi))
    step = max(1, _CHUNK_NODES // max(rule.nodes, 1))
    for i in range(0, len(phi), step):
        sl = slice(i, i + step)
        ss[sl], dd[sl] = _polar(act, A[sl], B[sl], phi[sl], rule)
    return ss.reshape(shape), dd.reshape(shape)


def _polar(act: NumpyActivation, A: Array, B: Array, phi: Array, rule: PolarRule):
    """The polar rule at E covariances (A, B, phi): arcs [pi/2, phi + pi/2, 3 pi/2, phi + 3 pi/2, 5 pi/2]."""
    h = np.pi / 2
    arcs = np.stack([np.full_like(phi, h), phi + h, np.full_like(phi, 3 * h), phi + 3 * h, np.full_like(phi, 5 * h)],
                    axis=-1)
    n = rule.arc_panels
    frac = np.arange(n + 1) / n
    edges = np.concatenate([arcs[:, i:i + 1] + (arcs[:, i + 1:i + 2] - arcs[:, i:i + 1]) * frac[:-1]
                            for i in range(4)] + [arcs[:, 4:]], axis=1)
    t, wt = _panels(edges, rule.arc_order)  # (E, 4 n q)
    u = (A[:, None] * np.cos(t))[:, None, :] * rule.r[None, :, None]
    v = (B[:, None] * np.cos(t - phi[:, None]))[:, None, :] * rule.r[None, :, None]
    with np.errstate(over="ignore", invalid="ignore"):
        ss = np.einsum("r,ert,et->e", rule.wr, act.value(u) * act.value(v), wt)
        dd = np.einsum("r,ert,et->e", rule.wr, act.derivative(u) * act.derivative(v), wt)
    return ss, dd


@dataclass(frozen=True)
class LineRule:
    """A rule on the half line [0, inf) for E[f(u)], u ~ N(0, k): nodes ``x`` and weights ``w`` that include
    the density exp(-x^2/2) / sqrt(2 pi); f is summed at u = +-sqrt(k) x."""

    x: Array
    w: Array
    name: str = ""


def fine_line_rule(scale: float, order: int = 16) -> LineRule:
    """Composite Gauss-Legendre on [0, 9] in panels of width min(1, 2 / ``scale``) (as :func:`fine_rule`'s radius)."""
    x, w = _panels(_subdivide(np.array([0.0, R_MAX]), min(1.0, 2.0 / max(float(scale), 1e-300))), order)
    return LineRule(x, w * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi), f"fine({order})")


def gauss_line_rule(m: int) -> LineRule:
    """The m-point Gauss rule of exp(-x^2/2) on [0, inf)."""
    x, w = half_range_gauss(m, 0)
    return LineRule(x, w / np.sqrt(2 * np.pi), f"gauss({m})")


def single_expectations(act: NumpyActivation, k, rule: LineRule) -> tuple[Array, Array]:
    """(E[s(u)^2], E[s'(u)^2]) for u ~ N(0, k), elementwise over the array ``k``, by the half-line ``rule`` at
    u = +-sqrt(k) x (split at the kink u = 0; module docstring)."""
    k = np.asarray(k, dtype=float)
    u = np.sqrt(np.maximum(k, 0.0))[..., None] * rule.x
    with np.errstate(over="ignore", invalid="ignore"):
        s2 = (act.value(u) ** 2 + act.value(-u) ** 2) @ rule.w
        d2 = (act.derivative(u) ** 2 + act.derivative(-u) ** 2) @ rule.w
    return s2, d2


def gaussian_pair_expectations(act, k_aa: float, k_bb: float, k_ab: float, order: int = 16, same: bool = False):
    """(E[s(u) s(v)], E[s'(u) s'(v)]) for (u, v) ~ N(0, [[k_aa, k_ab], [k_ab, k_bb]]) by the fine rule
    (module docstring); ``act`` a :class:`NumpyActivation`; ``same``: u = v exactly."""
    rule = fine_rule(np.sqrt(max(k_aa, k_bb, 0.0)), order)
    ss, dd = pair_expectations(act, k_aa, k_bb, k_ab, rule, same=same)
    return float(ss), float(dd)


def layer_expectations(act: NumpyActivation, G0: Array, same: Array, *, C_W, C_b, order: int = 16, bar=None) -> list:
    """The recursion's Gaussian expectations at every hidden layer: a list over l = 1..L of
    ``(K(l), E[s s](l), E[s' s'](l))`` (N, N) arrays, E at (u, v) ~ N(0, K(l)), by the fine rule of ``order``;
    ``C_W``, ``C_b`` per layer (L + 1 values, readout last), ``same`` marks equal inputs."""
    N = G0.shape[0]
    pairs = [(a, b) for a in range(N) for b in range(a, N)]
    K = C_b[0] + C_W[0] * G0
    out = []
    for layer in range(1, len(C_W)):
        ss, dd = np.empty_like(K), np.empty_like(K)
        for a, b in pairs:
            ss[a, b], dd[a, b] = gaussian_pair_expectations(act, K[a, a], K[b, b], K[a, b], order, bool(same[a, b]))
            ss[b, a], dd[b, a] = ss[a, b], dd[a, b]
            if bar is not None:
                bar.update(1)
        if not (np.all(np.isfinite(ss)) and np.all(np.isfinite(dd))):
            raise FloatingPointError(f"the quadrature of hidden layer {layer} overflowed or produced NaN")
        out.append((K, ss, dd))
        K = C_b[layer] + C_W[layer] * ss
    return out


def _recursion(act, G0, same, C_W, C_b, lambdas, order: int, bar):
    """Output NNGP and NTK from :func:`layer_expectations` and the NTK recursion."""
    lb, lw = lambdas[0]
    Th = lb + lw * G0
    layers = layer_expectations(act, G0, same, C_W=C_W, C_b=C_b, order=order, bar=bar)
    for layer, (_, ss, dd) in enumerate(layers, start=1):
        lb, lw = lambdas[layer]
        Th = lb + lw * ss + C_W[layer] * dd * Th
    K = C_b[-1] + C_W[-1] * layers[-1][1]
    if not np.all(np.isfinite(Th)):
        raise FloatingPointError("the quadrature's NTK overflowed or produced NaN")
    return K, Th


def quadrature_kernels(activation, X, depth: int, *, C_W=2.0, C_b=0.0, param: str = "ntk", widths=None,
                       order: int = 16, check_order: int = 10, progress=None) -> dict:
    """NNGP and NTK (N, N) of the output at inputs X, by the fine rule (module docstring).

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
    lambdas = [learning_rate_factors(param, C_W=C_W[l], C_b=C_b[l], fan_in=fan_in[l]) for l in range(depth + 1)]
    G0 = X @ X.T / d
    same = equal_rows(X)
    N = X.shape[0]
    steps = 2 * depth * N * (N + 1) // 2
    with progress_bar(total=steps, desc="independent quadrature", unit="pair", enabled=progress) as bar:
        K, Th = _recursion(act, G0, same, C_W, C_b, lambdas, order, bar)
        K2, Th2 = _recursion(act, G0, same, C_W, C_b, lambdas, check_order, bar)
    return {"nngp": K, "ntk": Th, "nngp_error": np.abs(K - K2), "ntk_error": np.abs(Th - Th2)}


def equal_rows(X: Array) -> Array:
    """(N, N) bool: inputs a and b are the same row (their pair is a diagonal entry, u = v exactly)."""
    return np.all(X[:, None, :] == X[None, :, :], axis=2)
