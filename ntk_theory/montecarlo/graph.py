r"""Monte Carlo of any architecture description: the NNGP and NTK of independently initialised finite networks.

:func:`sample_kernels` draws S networks of a description (:mod:`ntk_theory.architecture.layers`) in
vectorised blocks and runs each with the reference network's own rules (:func:`ntk_theory.reference.graph.trace`,
one forward pass and one reverse pass per output), estimating at inputs X (N, d)

==========================  =================================================================  ========
``nngp``                    E[f_a f_b] (mean over the O outputs); Rao-Blackwellised when the     (N, N)
                            network ends in a Dense layer: E[f_a f_b | x] = C_b + C_W x_a.x_b / n_in
                            with x the readout's input (the readout's weights are independent
                            of x), whose variance is O(1/n) instead of O(1)
``output_second_moment``    E[f_a f_b] from the outputs themselves (mean over outputs)            (N, N)
``ntk``                     E[Theta_ab], Theta the empirical NTK with respect to neural-tangents'  (N, N)
                            parameters (unit learning rate; mean over outputs), by
                            :func:`ntk_theory.reference.graph.structured_ntk`
==========================  =================================================================  ========

A network whose output keeps spatial axes (N, *S, C) (a Conv readout, a Dense layer per position) gets each
estimate per pair of output positions, the mean over channels, in neural-tangents' layout (N, N, S_1, S_1, ...):
the NTK entry of positions (p, q) pairs the reverse pass of output (p, c) at one input with that of (q, c) at
the other, so such networks are drawn with dense weights (the projected sampler draws afresh per pass); the
readout is Rao-Blackwellised when it is a Dense layer per position.

Weights are drawn in distribution exactly as :func:`ntk_theory.reference.graph.init` draws them
(sqrt(C_W / n_in) times N(0, 1) in every parameterization, biases sqrt(C_b) N(0, 1)); the NTK weights each
Dense layer by its learning-rate factors (:meth:`ntk_theory.architecture.Dense.learning_rate_factors`).  With
``sampler="projected"`` (default) a Dense layer's weight matrix is sampled only along the directions the
forward and reverse passes use (:class:`ntk_theory.reference.ensemble.ProjectedWeights`; exact in
distribution because every Dense layer is applied once, so the cotangent of its output depends on its
weights only through that output); ``"dense"`` draws full matrices.  With O > 1 outputs each output's
reverse pass is one draw of the projected part (the mean over outputs keeps its expectation).

Convolutions (and Dense layers on spatial inputs) run as the reference network runs them: a Dense layer of
fan-in ``C_in prod(filter_shape)`` on the rows of their patches (:func:`ntk_theory.reference.graph.linear_layer`),
one weight matrix per network shared by every position; their NTK is the sum over position pairs
(:func:`ntk_theory.reference.graph.structured_ntk`).  The projected sampler stays exact: such a layer is
applied once, to all rows together.

Standard errors: delete-one-batch jackknife over B batches (:mod:`ntk_theory.montecarlo.estimate`); runs are
reproducible whatever the thread count.  :func:`with_width` sets every hidden Dense width and Conv channel
count to n, for
extrapolations in 1/n (:func:`ntk_theory.validation.fits.weighted_fit`).

Nothing here imports the symbolic layer (``gaussian``, ``recursions``): the Monte Carlo judges it.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from .. import _checks
from ..architecture import Conv, Dense, Layer, leaves, map_leaves
from ..docstrings import filled
from ..reference import graph as reference_graph
from ..reference.ensemble import DenseWeights, ProjectedWeights
from .estimate import DOC_SECTIONS, Estimate, NetworkEstimates, jackknife, run_blocks, run_settings

Array = np.ndarray

__all__ = ["ESTIMATES", "GraphMonteCarlo", "SampledDense", "sample_kernels", "with_width"]

#: name -> description
ESTIMATES = {
    "nngp": "E[f_a f_b] (Rao-Blackwellised over the readout when it is a Dense layer)",
    "output_second_moment": "E[f_a f_b] from the outputs",
    "ntk": "E[Theta_ab] (empirical NTK, neural-tangents' parameters, mean over outputs)",
}


#: the width field of each layer type with weights
_WIDTH = {Dense: "out_dim", Conv: "out_chan"}


def with_width(description: Layer, n: int) -> Layer:
    """The description with every Dense ``out_dim`` and Conv ``out_chan`` set to ``n`` except the last such
    layer's (the readout).

    Parameters
    ----------
    description : Layer
    n : int
        The hidden width, >= 1.

    Returns
    -------
    Layer

    Examples
    --------
    >>> from ntk_theory import stax
    >>> net = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(8), stax.Relu(), stax.Dense(3))
    >>> with_width(net.description, 64)
    serial(Dense(64), Relu(), Dense(64), Relu(), Dense(3))
    """
    n = _checks.positive_int("width n", n)
    weighted = [path for path, layer in leaves(description) if type(layer) in _WIDTH]
    last = weighted[-1] if weighted else None

    def widen(path, layer):
        field_name = _WIDTH.get(type(layer))
        return dataclasses.replace(layer, **{field_name: n}) if field_name and path != last else layer

    return map_leaves(description, widen)


class SampledDense:
    """A block of S Dense layers with weights and biases drawn at random (the action
    :func:`ntk_theory.reference.graph.trace` calls): ``forward(x)`` (S, N, out), ``backward(g)`` (S, N, n_in)."""

    def __init__(self, layer: Dense, n_in: int, rng: np.random.Generator, S: int, N: int, sampler: str):
        sigma = np.sqrt(layer.C_W / n_in)
        out = layer.out_dim
        if sampler == "projected" and (out + n_in) * N < out * n_in:
            self.weights = ProjectedWeights(rng, S, out, n_in, sigma)
        else:
            self.weights = DenseWeights.sample(rng, S, out, n_in, sigma)
        self.bias = None if layer.b_std is None else rng.standard_normal((S, 1, out)) * np.sqrt(layer.C_b)

    def forward(self, x: Array) -> Array:
        z = self.weights.forward(x)
        return z if self.bias is None else z + self.bias

    def backward(self, g: Array) -> Array:
        return self.weights.backward(g)


class GraphMonteCarlo(NetworkEstimates):
    """Estimates from S networks of one description (module docstring), with the set-up in ``info``.

    Parameters
    ----------
    estimates : dict
        {name: :class:`~ntk_theory.montecarlo.Estimate`}: ``nngp``, ``output_second_moment``, ``ntk``.
    X : ndarray
        The inputs.
    info : dict
        The run's set-up.

    Examples
    --------
    See :func:`sample_kernels`.
    """

    @filled(**DOC_SECTIONS)
    def symmetry(self, name: str) -> str:
        """``"pair"``: every estimate is a symmetric kernel.

        %(symmetry)s
        See :func:`sample_kernels`.
        """
        return "pair"

    def heading(self) -> list:
        """The set-up line above :meth:`~ntk_theory.montecarlo.estimate.NetworkEstimates.table`'s estimates.

        Returns
        -------
        list of str
        """
        i = self.info
        return [f"Monte Carlo over {i.get('samples')} networks of {i.get('network')} (sampler={i.get('sampler')!r}, "
                f"{i.get('batches')} batches, seed={i.get('seed')}, {i.get('seconds', 0):.2f} s)"]

    def __repr__(self) -> str:
        return f"<GraphMonteCarlo: {self.info.get('samples')} networks, N={self.X.shape[0]}; {', '.join(self.estimates)}>"


def _block_features(description: Layer, X: Array, rng, S: int, sampler: str) -> dict:
    N = X.shape[0]

    def action(layer, path, n_in):
        return SampledDense(layer, n_in, rng, S, N, sampler)

    tape = reference_graph.trace(description, X, action)
    if tape.output.rank:
        return _spatial_features(tape, S, N)
    f = np.broadcast_to(tape.f, (S, *tape.f.shape[-2:]))
    O = f.shape[-1]
    ff = np.matmul(f, np.swapaxes(f, -1, -2)) / O
    last = tape.steps[-1] if tape.steps else None
    if last is not None and last.output is tape.output and isinstance(last.layer, Dense):
        x = last.inputs[0].array
        n_in = x.shape[-1]
        cond = last.layer.C_b + last.layer.C_W / n_in * np.matmul(x, np.swapaxes(x, -1, -2))
        cond = np.broadcast_to(cond, (S, N, N))
    else:
        cond = ff
    theta = np.zeros((S, N, N))
    for o in range(O):
        cot = np.zeros((S, N, O))
        cot[..., o] = 1.0
        theta = theta + reference_graph.structured_ntk(tape.backward(cot))
    theta /= O
    return {"k": cond.reshape(S, N * N), "ff": ff.reshape(S, N * N), "th": theta.reshape(S, N * N)}


def _spatial_features(tape, S: int, N: int) -> dict:
    """Spatial outputs f (S, N, *P, C): per pair of inputs and of positions (p, q) the means over channels c of
    f_(a,p,c) f_(b,q,c), of its expectation given the readout's input when the readout is a Dense layer per
    position (C_b + C_W / n_in x_(a,p) . x_(b,q)), and of the empirical NTK entry Theta_((a,p,c),(b,q,c)): one
    reverse pass per output (position, channel), the pairs of passes of equal channel contracted by
    :func:`ntk_theory.reference.graph.structured_ntk`.  Rows (S, N N P P)."""
    f = np.broadcast_to(tape.f, (S,) + tape.f.shape[-tape.output.rank - 2:])
    C = f.shape[-1]
    fp = f.reshape(S, N, -1, C)
    P = fp.shape[2]
    ff = np.einsum("sapc,sbqc->sabpq", fp, fp) / C
    last = tape.steps[-1] if tape.steps else None
    if last is not None and last.output is tape.output and isinstance(last.layer, Dense):
        x = np.broadcast_to(last.inputs[0].array, (S, N) + tape.f.shape[-tape.output.rank - 1:-1]
                            + (last.inputs[0].array.shape[-1],))
        xp = x.reshape(S, N, P, -1)
        cond = last.layer.C_b + last.layer.C_W / xp.shape[-1] * np.einsum("sapk,sbqk->sabpq", xp, xp)
    else:
        cond = ff
    theta = np.zeros((S, N, N, P, P))
    for c in range(C):
        passes = []
        for p in range(P):
            cot = np.zeros((S, N, P, C))
            cot[:, :, p, c] = 1.0
            passes.append(tape.backward(cot.reshape(f.shape)))
        for p in range(P):
            for q in range(P):
                theta[:, :, :, p, q] += np.broadcast_to(reference_graph.structured_ntk(passes[p], passes[q]),
                                                        (S, N, N))
    theta /= C
    return {"k": cond.reshape(S, -1), "ff": ff.reshape(S, -1), "th": theta.reshape(S, -1)}


def _output_spatial(description: Layer, X: Array) -> tuple:
    """The spatial sizes of the description's output at inputs like X (() for outputs (N, O)), from one
    network at one input."""
    rng = np.random.default_rng(0)
    tape = reference_graph.trace(description, X[:1], lambda layer, path, n_in: SampledDense(
        layer, n_in, rng, 1, 1, "dense"))
    return tuple(tape.f.shape[-tape.output.rank - 1:-1]) if tape.output.rank else ()


def _layout(values: Array, N: int, spatial: tuple) -> Array:
    """(N, N) for outputs (N, O); spatial outputs (N, N, P, P) in neural-tangents' layout (N, N, S_1, S_1, ...)."""
    if not spatial:
        return values.reshape(N, N)
    r = len(spatial)
    t = values.reshape((N, N) + tuple(spatial) + tuple(spatial))
    return np.ascontiguousarray(t.transpose([0, 1] + [ax for i in range(r) for ax in (2 + i, 2 + r + i)]))


def _per_network_bytes(description: Layer, X: Array) -> int:
    """A bound on the bytes one network keeps: per input, the widest value times (8 layers + 8); with spatial
    inputs, per layer its values at every input position (a Conv's patches: times its filter size) four
    times over (output, cache, cotangent, temporaries), and the NTK's Grams over (input, position) pairs."""
    widths = [X.shape[-1]] + [getattr(layer, "out_dim", getattr(layer, "out_chan", 0)) for _, layer in leaves(description)]
    n_layers = sum(1 for _ in leaves(description))
    positions = int(np.prod(X.shape[1:-1]))
    if positions == 1 and not any(isinstance(layer, Conv) for _, layer in leaves(description)):
        return 8 * X.shape[0] * max(widths) * (8 * n_layers + 8)
    per_input = sum(4 * positions * max(widths) * (layer.filter_size if isinstance(layer, Conv) else 1)
                    for _, layer in leaves(description))
    return 8 * (X.shape[0] * per_input + 3 * (X.shape[0] * positions) ** 2)


def sample_kernels(description: Layer, X, samples: int = 4000, seed=0, *, batches: int = 32,
                   sampler: str = "projected", workers: int | None = None, memory_mb: float = 64.0,
                   progress: bool | None = None) -> GraphMonteCarlo:
    """Estimate the NNGP and NTK of ``description`` at inputs X (N, d), or (N, W, C) / (N, H, W, C) for
    convolutional descriptions, from ``samples`` independent networks (module docstring); ``description`` a
    layer description or anything with a ``.description`` (a stax Network).  Outputs with spatial axes
    ``(N, *S, C)`` give estimates per pair of positions in neural-tangents' layout, ``(N, N, S_1, S_1, ...)``, means
    over channels (with the dense sampler).

    Parameters
    ----------
    description : Layer or Network
    X : array_like
        Inputs.
    samples : int, default 4000
    seed : int, default 0
    batches : int, default 32
    sampler : {'projected', 'dense'}, default 'projected'
    workers : int or None, default None
    memory_mb : float, default 64.0
    progress : bool or None, default None

    Returns
    -------
    GraphMonteCarlo
        ``nngp`` (Rao-Blackwellised E[f_a f_b]), ``output_second_moment`` (plain), ``ntk`` (E[Theta_ab]).

    Raises
    ------
    ValueError
        If ``description`` is not a description or an argument is invalid.

    Examples
    --------
    One ReLU layer, W_std^2 = 2, unit inputs pi/3 apart: E[f_a f_b] is the arc-cosine kernel
    (1/pi)(sin t + (pi - t) cos t) at every width:

    >>> import numpy as np
    >>> from ntk_theory import stax
    >>> net = stax.serial(stax.Dense(8, W_std=2 ** 0.5), stax.Relu(), stax.Dense(1, W_std=2 ** 0.5))
    >>> X = np.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]])
    >>> mc = sample_kernels(net, X, 2000, progress=False)
    >>> t = np.pi / 3; k = (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi
    >>> bool(abs(mc["nngp"].value[0, 1] - k) < 4 * mc["nngp"].stderr[0, 1])
    True
    """
    description = getattr(description, "description", description)
    if not isinstance(description, Layer):
        raise ValueError(f"expected an architecture description (stax.serial(...)); got {description!r}")
    X = reference_graph.inputs(X)
    N = X.shape[0]
    samples, batches = run_settings(samples, batches, sampler)
    spatial = _output_spatial(description, X)
    if spatial:
        # the projected sampler draws a layer's unused directions afresh in every reverse pass, which keeps each
        # pass exact but not the products of two passes that the NTK of distinct output positions needs
        sampler = "dense"
    workers = workers or min(os.cpu_count() or 1, 8)
    block = int(np.clip(memory_mb * 2**20 // _per_network_bytes(description, X), 1, 4096))

    def sample_block(rng, S: int) -> dict:
        return _block_features(description, X, rng, S, sampler)

    t0 = time.perf_counter()
    sums = run_blocks(sample_block, samples, batches, block, seed, workers=workers, progress=progress,
                      desc=f"{samples} networks")
    seconds = time.perf_counter() - t0

    def estimator(means, count):
        return {"nngp": _layout(means["k"], N, spatial), "output_second_moment": _layout(means["ff"], N, spatial),
                "ntk": _layout(means["th"], N, spatial)}

    values, errors = jackknife(sums, estimator)
    estimates = {name: Estimate(name, values[name], errors[name], ESTIMATES[name]) for name in ESTIMATES}
    info = {"network": repr(description), "samples": samples, "batches": batches, "sampler": sampler,
            "seed": seed if isinstance(seed, (int, type(None))) else str(seed), "block": block, "workers": workers,
            "seconds": seconds}
    return GraphMonteCarlo(estimates, X, info)
