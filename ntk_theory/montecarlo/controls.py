r"""Zero-mean control variates of the finite-width Monte Carlo, with means from an independent quadrature.

Given the layers below it, each neuron of hidden layer l is an independent Gaussian, z(l)_k ~ N(0, Khat(l))
with Khat(l) = C_b + C_W Ghat(l-1) (Ghat(0) = G0 = X X^T / n_0, Ghat(l) = (1/n_l) s(z(l)) s(z(l))^T).  So these
per-network quantities have mean exactly zero (upper-triangular entries a <= b):

* every hidden layer l: (1/n_l) z(l) z(l)^T - Khat(l);
* every hidden layer l: Ghat(l) - T(Khat(l)) and (1/n_l) s'(z(l)) s'(z(l))^T - Tdot(Khat(l)), where
  T(K)_ab = E[s(u) s(v)] and Tdot(K)_ab = E[s'(u) s'(v)] for (u, v) ~ N(0, K_{ab block}).  At layer 1,
  Khat(1) = K(1) is deterministic and T, Tdot are computed once; at deeper layers they are computed per
  network at its own Khat(l);
* the readout: mean_i z_i z_i^T - Khat(L+1), and mean_i |W_i|^2 / C_W - 1 when the readout weights are dense.

T and Tdot come from :mod:`ntk_theory.montecarlo.quadrature` (the reference activation integrated
numerically), never from the symbolic layer the Monte Carlo judges.  A control whose mean is wrong by
delta biases the estimate by -beta delta (beta its regression coefficient), so the quadrature must be
accurate: the one-time layer-1 means use the fine rule, whose error estimate (two orders) must be below
``tol`` x scale, and the per-network means use the smallest Gauss rule (:func:`~.quadrature.gauss_rule`,
:func:`~.quadrature.single_expectations`) that agrees with the fine rule to ``tol`` x scale at test
covariances around the network's expected kernel K(l) (diagonals x e^{+-1}, angle +-0.5; of more than six
input pairs, those with the smallest and largest angles and scales), scale being
sqrt(E[s(u)^2] E[s(v)^2]) (resp. for s'), the Cauchy-Schwarz bound of the expectation.  K(l) is the
infinite-width kernel by the same fine quadrature.  When no rule reaches the tolerance (an activation with
a kink away from 0, a user pair), those T controls are not used, and ``status`` says so and why; the
chosen rules and the largest difference from the fine rule are in ``status`` as well
(:func:`ntk_theory.montecarlo.layer_statistics` reports it in ``info["control_variates"]``).

Error model: b_i = tol x scale_i (:attr:`ControlVariates.bounds`) is taken as the bound on the error of the
mean of T control i.  The regression weights are a ridge that gives no weight to a combination of controls
whose spread is below its means' error, and |beta| . b is added to the standard errors of K and Theta
(:mod:`ntk_theory.montecarlo.finite_width`).  It is an estimate, not a bound: a network whose kernel lies
far outside the test covariances (very narrow layers) may see a larger quadrature error.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from ..architecture import MLPSpec
from ..reference import ensemble
from ..reference.activations import NumpyActivation
from .quadrature import (
    equal_rows,
    fine_line_rule,
    fine_rule,
    gauss_line_rule,
    gauss_rule,
    gaussian_pair_expectations,
    layer_expectations,
    pair_expectations,
    single_expectations,
)

Array = np.ndarray

__all__ = ["PAIR_RULES", "SINGLE_RULES", "TOLERANCE", "ControlVariates"]

#: accuracy asked of every control mean, relative to the Cauchy-Schwarz scale (module docstring)
TOLERANCE = 1e-10
#: per-network Gauss rules tried in order: (radial nodes, nodes per arc)
PAIR_RULES = ((8, 8), (12, 10), (16, 12), (20, 16), (24, 20), (32, 24))
#: per-network one-variable rules tried in order: nodes per half line
SINGLE_RULES = (8, 12, 16, 24, 32, 48)
#: at most this many input pairs per layer are tested: the smallest and largest angles, the largest and
#: smallest scales
_TEST_PAIRS = 6
#: test covariances around K(l): (log-factor of k_aa, of k_bb, change of the angle)
_OFFSETS = [(0.0, 0.0, 0.0)] + list(itertools.product((-1.0, 1.0), (-1.0, 1.0), (-0.5, 0.5)))


def _choose(candidates, error) -> tuple:
    """The first candidate whose ``error(candidate)`` is within 1 (errors are in units of the tolerance);
    (None, smallest error) when none is."""
    best = np.inf
    for c in candidates:
        e = error(c)
        if e <= 1.0:
            return c, e
        best = min(best, e)
    return None, best


def _relative(diff: Array, scale: Array) -> float:
    """max |diff| / scale (elementwise, scale floored at 1e-300)."""
    return float(np.max(np.abs(diff) / np.maximum(scale, 1e-300)))


def _select(act: NumpyActivation, K: Array, same: Array, tol: float):
    """The smallest per-network rules (pair, line) that agree with the fine rules to ``tol`` x scale at the
    test covariances around the kernel K (module docstring); (None, error) when none does.  Errors in
    units of ``tol``."""
    diag = np.diagonal(K)
    k1 = np.concatenate([diag * f for f in (np.exp(-1.0), 1.0, np.exp(1.0))])
    s_ref, d_ref = single_expectations(act, k1, fine_line_rule(np.sqrt(k1.max())))

    def line_error(m):
        s2, d2 = single_expectations(act, k1, gauss_line_rule(m))
        return max(_relative(s2 - s_ref, np.abs(s_ref)), _relative(d2 - d_ref, np.abs(d_ref))) / tol

    m, e1 = _choose(SINGLE_RULES, line_error)
    if m is None:
        return None, e1
    ia, ib = np.triu_indices(K.shape[0], 1)
    ia, ib = ia[~same[ia, ib]], ib[~same[ia, ib]]
    if len(ia) == 0:
        return (gauss_rule(*PAIR_RULES[0]), gauss_line_rule(m)), e1
    A, B = np.sqrt(diag[ia]), np.sqrt(diag[ib])
    phi = np.arctan2(np.sqrt(np.maximum(A * A * B * B - K[ia, ib] ** 2, 0.0)), K[ia, ib])
    if len(phi) > _TEST_PAIRS:  # the extremes of angle and scale stand for the rest
        order = np.argsort(phi)
        pick = np.unique([*order[:2], *order[-2:], np.argmax(np.maximum(A, B)), np.argmin(np.minimum(A, B))])
        A, B, phi = A[pick], B[pick], phi[pick]
    pts = [(A * np.exp(fa / 2), B * np.exp(fb / 2), np.clip(phi + dp, 0.0, np.pi)) for fa, fb, dp in _OFFSETS]
    A2, B2, ph = (np.concatenate(x) for x in zip(*pts))
    k11, k22, k12 = A2 * A2, B2 * B2, A2 * B2 * np.cos(ph)
    scale = max(A2.max(), B2.max())
    ss_ref, dd_ref = pair_expectations(act, k11, k22, k12, fine_rule(scale))
    (s11, s22), (d11, d22) = single_expectations(act, np.stack([k11, k22]), fine_line_rule(scale))
    ss_scale, dd_scale = np.sqrt(np.abs(s11 * s22)), np.sqrt(np.abs(d11 * d22))

    def pair_error(mq):
        ss, dd = pair_expectations(act, k11, k22, k12, gauss_rule(*mq))
        return max(_relative(ss - ss_ref, ss_scale), _relative(dd - dd_ref, dd_scale)) / tol

    mq, e2 = _choose(PAIR_RULES, pair_error)
    if mq is None:
        return None, e2
    return (gauss_rule(*mq), gauss_line_rule(m)), max(e1, e2)


@functools.lru_cache(maxsize=16)
def _plan(act: NumpyActivation, C_W: tuple, C_b: tuple, X_bytes: bytes, shape: tuple, tol: float):
    """Layer-1 means (T1, Tdot1 at the upper-triangular entries, or None), per-network rules {hidden layer
    (0-based): (PolarRule, LineRule)} and the status (class docstring); cached, as it depends on the network
    only through the activation, C_W, C_b and the inputs, not on the widths."""
    X = np.frombuffer(X_bytes).reshape(shape)
    same = equal_rows(X)
    G0 = X @ X.T / X.shape[1]
    layers = layer_expectations(act, G0, same, C_W=C_W, C_b=C_b, order=16)
    K1, ss1, dd1 = layers[0]
    iu = np.triu_indices(X.shape[0])
    rough = np.array([gaussian_pair_expectations(act, K1[a, a], K1[b, b], K1[a, b], 10, bool(same[a, b]))
                      for a, b in zip(*iu)])
    d_ss, d_dd = np.sqrt(np.abs(np.diagonal(ss1))), np.sqrt(np.abs(np.diagonal(dd1)))
    err = max(_relative(rough[:, 0] - ss1[iu], np.outer(d_ss, d_ss)[iu]),
              _relative(rough[:, 1] - dd1[iu], np.outer(d_dd, d_dd)[iu]))
    status = {"tolerance": tol, "layer1_error": err}
    T1 = None
    scales = [(np.outer(np.sqrt(np.abs(np.diagonal(ss))), np.sqrt(np.abs(np.diagonal(ss))))[iu],
               np.outer(np.sqrt(np.abs(np.diagonal(dd))), np.sqrt(np.abs(np.diagonal(dd))))[iu]) for _, ss, dd in layers]
    if err <= tol:
        T1 = (ss1[iu], dd1[iu])
    else:
        status["layer1_off"] = (f"the fine quadrature's error estimate at K(1) is {err:.1e} of the scale "
                                f"(tolerance {tol:g}): a kink away from 0?")
    rules, worst = {}, 0.0
    for l in range(1, len(layers)):
        rule, e = _select(act, layers[l][0], same, tol)
        if rule is None:
            status["per_network_off"] = (f"no Gauss rule reaches {tol:g} of the scale at the kernel of hidden "
                                         f"layer {l + 1} (best {e * tol:.1e}): a kink away from 0, or steep?")
            rules = {}
            break
        rules[l] = rule
        worst = max(worst, e * tol)
    if rules:
        status["per_network_rules"] = {f"layer {l + 1}": f"{p.name}, {m.name}" for l, (p, m) in rules.items()}
        status["per_network_error"] = worst
    used = ([0] if T1 is not None else []) + sorted(rules)
    bounds = tol * np.concatenate([np.concatenate(scales[l]) for l in used]) if used else np.zeros(0)
    return T1, rules, status, bounds


class ControlVariates:
    """The control variates of a block of networks (module docstring).

    ``act``: the reference activation; ``spec``: the network (hidden layers 1..L and the readout); ``X``:
    inputs (N, n_0); ``enabled``: False for none.  Calling it on a block's
    :class:`~ntk_theory.reference.ensemble.ReadoutOutputs` and readout kernels Khat (S, N, N) returns the
    (S, k) controls.  ``bounds``: for the T controls (the first columns), the bound tol x scale on the error of
    their means (the other controls' means are exactly 0).  ``status``: which controls are used, the rules
    and their accuracy (``tolerance``,
    ``layer1_error``: the fine rule's error estimate at K(1), ``per_network_rules``, ``per_network_error``:
    the largest difference from the fine rules at the test covariances, all relative to the scale; or
    ``layer1_off``, ``per_network_off`` with the reason)."""

    def __init__(self, act: NumpyActivation, spec: MLPSpec, X: Array, enabled: bool = True, tol: float = TOLERANCE):
        self.act, self.spec, self.enabled = act, spec, enabled
        self.iu = np.triu_indices(X.shape[0])
        self.same = equal_rows(X)
        self.K1 = spec.C_b[0] + spec.C_W[0] * (X @ X.T / X.shape[1])
        self.T1, self.rules, self.status = None, {}, {"enabled": bool(enabled)}
        self.bounds = np.zeros(0)
        if enabled:
            X = np.ascontiguousarray(X, dtype=float)
            self.T1, self.rules, status, self.bounds = _plan(act, tuple(spec.C_W), tuple(spec.C_b), X.tobytes(),
                                                             X.shape, float(tol))
            self.status.update(status)

    @property
    def per_network_T(self) -> bool:
        return bool(self.rules)

    def _T(self, K: Array, layer: int) -> tuple[Array, Array]:
        """T, Tdot at the upper-triangular entries (S, M) of a block's kernels K (S, N, N) of hidden layer
        ``layer`` (0-based), by that layer's per-network rules."""
        pair, single = self.rules[layer]
        ia, ib = self.iu
        d = np.diagonal(K, axis1=-2, axis2=-1)
        s2, d2 = single_expectations(self.act, d, single)
        T, Td = s2[:, ia], d2[:, ia]  # entries with equal inputs (a = b, or equal rows): one variable
        off = ~self.same[ia, ib]
        if off.any():
            T, Td = T.copy(), Td.copy()
            T[:, off], Td[:, off] = pair_expectations(self.act, d[:, ia[off]], d[:, ib[off]], K[:, ia[off], ib[off]],
                                                      pair)
        return T, Td

    def __call__(self, out: ensemble.ReadoutOutputs, Khat: Array) -> Array | None:
        """The (S, k) controls: the T controls first (in the order of :attr:`bounds`), then the exact ones."""
        if not self.enabled:
            return None
        spec, (ia, ib) = self.spec, self.iu
        S = Khat.shape[0]
        t_cols, cols = [], []
        prev_kernel = np.broadcast_to(self.K1, (S, *self.K1.shape))
        for l in range(spec.depth):
            cols.append((out.pre_grams[l] - prev_kernel)[:, ia, ib])
            if l == 0 and self.T1 is not None:
                t_cols += [out.act_grams[0][:, ia, ib] - self.T1[0][None], out.der_grams[0][:, ia, ib] - self.T1[1][None]]
            elif l > 0 and l in self.rules:
                T, Td = self._T(prev_kernel, l)
                t_cols += [out.act_grams[l][:, ia, ib] - T, out.der_grams[l][:, ia, ib] - Td]
            prev_kernel = spec.C_b[l + 1] + spec.C_W[l + 1] * out.act_grams[l]
        zz = np.einsum("sia,sib->sab", out.f, out.f) / out.f.shape[1]
        cols.append((zz - Khat)[:, ia, ib])
        if out.readout_sq is not None:
            cols.append(out.readout_sq.mean(axis=1, keepdims=True) / spec.C_W[-1] - 1.0)
        c = np.concatenate(t_cols + cols, axis=1)
        if not np.all(np.isfinite(c)):
            raise FloatingPointError(f"{self.act.name}: a control variate is not finite (the network's "
                                     f"activations overflowed at width {spec.widths[spec.depth]})")
        return c
