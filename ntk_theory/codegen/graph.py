r"""Compiled (Numba) NNGP and NTK of any architecture description: the rules of
:mod:`ntk_theory.recursions.graph`, generated as one fused straight-line program per kernel entry.

>>> kern = compiled_graph_kernel(stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1)))  # doctest: +SKIP
>>> nngp, ntk = kern.evaluate(X)                                                             # doctest: +SKIP
>>> print(kern.source)                                                   # the generated program

The description is walked once (:func:`ntk_theory.architecture.walk`) with the same rules as the NumPy
interpreter -- Gaussian *sources* (one per Dense layer, and one per sum of Gaussian branches), *terms*
F(c g) of one source each, *moments* of sums of terms -- but every quantity is split by what it depends on:

* per input (O(N), NumPy, at evaluation): the variances and NTK diagonals of every source and term, the
  means E[F(u)] of non-Gaussian terms, LayerNorm scalings c_a = 1 / sqrt(Var h_a + eps), and the
  diagonal-only forms E[F(u)^2], E[F'(u)^2] (the exact values of entries whose two inputs are equal rows);
  for terms without closed form, the Hermite tables of F and F' at each input's variance v_a = c_a^2 K_aa
  (:func:`ntk_theory.numerics.hermite_numba.coefficients`, once per distinct variance), which also give
  those diagonal forms (their norms) and the mean (the coefficient a_0);
* per entry (a, b) (generated Numba code): for each source its covariance k_ab and NTK theta_ab, for
  each non-Gaussian term T = E[F(u) F(v)], Tdot = E[F'(u) F'(v)] at (k_aa, k_bb, k_ab clipped to
  ``|rho| <= 1``) by the activation's closed form in its stable float64 rewriting
  (:mod:`ntk_theory.codegen.emit`, homogeneous activations at unit scale) or, without closed form, by
  Mehler's series sum_n a_n(v_a) b_n(v_b) rho^n of the two inputs' tables
  (:func:`ntk_theory.codegen.runtime.hermite_term`), the cross terms of means
  m_a m_b of FanInSum, LayerNorm's (K_ab - m_a m_b) / (s_a s_b), FanInConcat's channel weights.

The per-entry program is emitted as one function over row tiles (prange over rows; per row, chunks of
columns; inside a chunk, loops over columns with the program's statements, one activation expectation
per loop by default, values crossing loops in one flat per-thread buffer indexed from constants, and
det2 inlined, so that LLVM vectorises every loop): no N x N temporaries, only the two outputs; partial
sums of a residual stream are shared (one addition per block).  Layer constants (C_W, C_b,
lambda_b, lambda_W, concatenation weights) are passed as an array, so the source depends on the
description's structure and activations only, and is cached on disk like the MLP kernels
(:mod:`ntk_theory.jit.modules`).  With X2 = X1 only entries j > i are computed and mirrored; entries whose
rows are equal take the exact diagonal.

Error model: the same formulas as :mod:`ntk_theory.recursions.graph` in the same order of operations;
the only differences are the compiled elementary functions (sqrt, atan2, erf, exp: within ~1 ulp of
NumPy's), so entries agree to ~1e-15 relative, more where a layer loses digits to cancellation
(the same cancellation the NumPy interpreter suffers).  Terms without closed form: each Mehler series is
truncated at the smallest degree whose Parseval tail bound is below ``tol`` sqrt(E F(u)^2 E F(v)^2) (for F
and F'); its error estimate adds the tables' coefficient errors by Cauchy-Schwarz
(err_a sqrt(E F(v)^2) + err_b sqrt(E F(u)^2)); entries where a series would need more than ``max_order``
terms are finished in Python by the same program with every such term by compiled 2-D quadrature
(:func:`ntk_theory.numerics.gauss_legendre.expect2_direct`, with its estimate).  ``info["quadrature_error"]``
is the largest estimate of one term's expectations (per entry, or of the per-input forms), not propagated
through later layers.  A term whose F has no Numba form (a SymPy function the printer does not know) is
refused with :class:`NotCompilable`, naming the layer; :func:`ntk_theory.recursions.graph.kernel` evaluates
it.  Everything the NumPy interpreter refuses is refused here with the same message.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .. import _checks
from ..activations import Activation, x
from ..architecture import (
    Dense,
    Elementwise,
    FanInConcat,
    FanInSum,
    Layer,
    LayerNorm,
    Serial,
    walk,
    where,
)
from ..gaussian.stable import stable_form
from ..jit import modules as cache
from ..jit import numba_code
from ..recursions import KernelResult, activation_kernels, rules
from ..recursions.network import equal_rows
from ..recursions.result import check_get
from . import emit

FORMAT_VERSION = "2"


def evaluation_arrays(X1, X2, out, dtype):
    """Checked inputs and output arrays of a compiled kernel's evaluation:
    ``(X1, X2 or X1, symmetric, nngp_out, ntk_out)``; ``out`` a pair of given (N1, N2) arrays or None,
    ``dtype`` float64 or float32 for the stored result."""
    X1 = _checks.inputs(X1, "X1")
    symmetric = X2 is None
    X2v = X1 if symmetric else _checks.inputs(X2, "X2", dim=X1.shape[1])
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32; got {dtype}")
    shape = (X1.shape[0], X2v.shape[0])
    if out is None:
        return X1, X2v, symmetric, np.empty(shape, dtype=dtype), np.empty(shape, dtype=dtype)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError("out must be a pair of arrays (nngp, ntk)")
    for name, arr in zip(("nngp", "ntk"), out):
        if not isinstance(arr, np.ndarray) or arr.shape != shape:
            raise ValueError(f"out[{name}] must be an array of shape {shape}; got {getattr(arr, 'shape', type(arr))}")
        if arr.dtype not in (np.float64, np.float32):
            raise ValueError(f"out[{name}] must be float64 or float32; got {arr.dtype}")
    return X1, X2v, symmetric, out[0], out[1]


def _compiled_afresh(module) -> int:
    """How many signatures of the module's Numba functions were compiled in this process rather
    than loaded from Numba's disk cache."""
    total = 0
    for obj in vars(module).values():
        stats = getattr(obj, "stats", None)
        if stats is not None and hasattr(stats, "cache_misses"):
            total += sum(stats.cache_misses.values())
    return total


class NotCompilable(NotImplementedError):
    """The description has a kernel (the NumPy interpreter evaluates it) but no compiled program:
    a term without closed-form expectations whose function Numba cannot evaluate."""


# ---------------------------------------------------------------------- symbolic values
@dataclass(eq=False)
class _Source:
    """A Gaussian process: entry variables ``k`` (covariance), ``th`` (NTK); row slots ``var``
    (variance) and ``ntkd`` (NTK at equal inputs)."""

    k: str
    th: str
    var: int
    ntkd: int
    base: frozenset
    label: str


@dataclass(eq=False)
class _Term:
    """``F(c g)``: a source, an expression in x, a row slot of scales c (None: 1) and a key saying which
    scalings are the same (equal keys: equal scales)."""

    source: _Source
    fn: sp.Expr
    scale: int | None
    scale_key: tuple | None
    origin: str

    @property
    def is_gaussian(self) -> bool:
        return self.fn == x

    def with_fn(self, fn: sp.Expr, origin: str) -> _Term:
        """F replaced by ``fn`` (the same source and scales)."""
        return _Term(self.source, fn, self.scale, self.scale_key, origin)

    def same_scale(self, other: _Term) -> bool:
        return self.scale_key == other.scale_key


@dataclass(eq=False)
class _Node:
    terms: tuple
    channels: int
    layout: None = None  # vector inputs only


@dataclass(eq=False)
class _Moments:
    """Entry variables ``nngp``, ``ntk``; row slots ``var``, ``ntkd`` and ``mean`` (None: zero)."""

    nngp: str
    ntk: str
    var: int
    ntkd: int
    mean: int | None
    base: frozenset
    channels: int
    origin: str
    layout = None  # vector inputs only


_TOKEN = re.compile(r"\b([eabpq])_(\d+)\b")


@dataclass
class _Statement:
    lines: list
    defs: tuple
    pairs: int


class _Program:
    """The walk's output: row operations (NumPy, per input), entry statements (emitted), constants."""

    def __init__(self):
        self.row_ops: list = []  # fn(V, side, errors) -> array, one per row slot
        self.row_labels: list = []
        self.statements: list[_Statement] = []
        self.constants: list[float] = []
        self.kernels: dict = {}  # fn -> (index, ActivationKernels): closed forms
        self.functions: dict = {}  # fn -> (f, ActivationKernels, source of s_f, ds_f): numerical F
        self.tables: dict = {}  # (fn, variance slot) -> (q, f, variance slot, ActivationKernels)
        self.table_ops: dict = {}  # q -> fn(V, side, errors) -> (tables of F, tables of F') per input
        self._derived: dict = {}
        self.n_entries = 0
        self.moments_cache: dict = {}
        self.segments: list = []  # _Segment per top-level block (see build)

    # the algebra of :mod:`ntk_theory.recursions.rules` over emitted names and row slots
    node_type = _Node
    moments_type = _Moments

    def gaussian_sum(self, terms, path) -> _Term:
        return _gaussian_sum(terms, path, self)

    def moments(self, state) -> _Moments:
        return _moments(state, self)

    def sum_moments(self, ms, channels, origin, layout) -> _Moments:
        return _sum_moments(ms, channels, origin, self, cross=True)

    def row(self, fn, label: str = "") -> int:
        self.row_ops.append(fn)
        self.row_labels.append(label)
        return len(self.row_ops) - 1

    def const(self, value: float) -> str:
        self.constants.append(float(value))
        return f"p_{len(self.constants) - 1}"

    def entry(self) -> str:
        self.n_entries += 1
        return f"e_{self.n_entries - 1}"

    def mark(self) -> tuple:
        """Counts of (statements, row slots, constants, tables, entry variables) so far."""
        return len(self.statements), len(self.row_ops), len(self.constants), len(self.tables), self.n_entries

    def emit(self, lines, defs, pairs: int = 0) -> None:
        self.statements.append(_Statement(list(lines), tuple(defs), pairs))

    def activation(self, fn: sp.Expr):
        """The two-variable expectations of F = fn (derived once per distinct F)."""
        if fn not in self._derived:
            self._derived[fn] = activation_kernels(Activation(sp.sstr(fn), fn, "stax"))
        return self._derived[fn]

    def pair(self, fn: sp.Expr, origin: str):
        """(index, kernels) of an F whose expectations have closed forms: ``pair_index`` / ``unit_index``."""
        if fn not in self.kernels:
            self.kernels[fn] = (len(self.kernels), self.activation(fn))
        return self.kernels[fn]

    def numerical(self, fn: sp.Expr, var: int, origin: str):
        """(q, f, kernels) of an F without closed forms at the pre-activation variances of row slot ``var``:
        ``s_f``, ``ds_f`` (F and its a.e. derivative, compiled) and ``KINKS_f``; q indexes the Hermite
        tables of F and F' at those variances (one pair of tables per distinct F and variance slot)."""
        if fn not in self.functions:
            kern = self.activation(fn)
            try:
                source = emit._numeric_source(len(self.functions), kern)
            except Exception as exc:  # noqa: BLE001 - SymPy's printers raise several types
                raise NotCompilable(
                    f"{origin}: F = {sp.sstr(fn)} has no closed-form E[F(u) F(v)] and no Numba form "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0]}); ntk_theory.recursions.graph.kernel "
                    "evaluates it") from None
            self.functions[fn] = (len(self.functions), kern, source)
        f, kern, _ = self.functions[fn]
        if (fn, var) not in self.tables:
            self.tables[(fn, var)] = (len(self.tables), f, var, kern)
        return self.tables[(fn, var)][0], f, kern


# ---------------------------------------------------------------------- the walk
def build(description: Layer, input_dim: int, loops: bool = True) -> tuple[_Program, _Moments]:
    """The program of ``description`` for inputs of dimension ``input_dim``: its row operations, entry
    statements and output moments.

    The top-level chain of layers (nested ``serial`` flattened) is walked in *segments*: one layer, or
    the layers up to the next single value (a ``FanOut`` ... ``FanInSum`` block).  Each segment starts
    from a canonical copy of its input (fresh entry variables and row slots for every source, or for
    the moments, that the value carries) and ends with a sum of independent Gaussian terms merged into
    one source (the same additions in the same order as merging them where they are used), so a
    segment's statements read nothing from before it but the copied values.  Runs of repeated blocks
    of segments whose statements agree up to the names of their variables, constants, row slots and
    tables become loops (``prog.runs``, with ``loops``): the emitted module holds one block, its
    repetition count and the offsets of each repetition's constants are run-time arguments."""
    prog = _Program()
    g = prog.entry()
    th0 = prog.entry()
    prog.emit([f"{g} = Krow[c]", f"{th0} = 0.0"], (g, th0))
    var = prog.row(lambda V, side, errors: V["sq"][side], "input variance")
    ntkd = prog.row(lambda V, side, errors: np.zeros_like(V["sq"][side]), "input NTK")
    source = _Source(g, th0, var, ntkd, frozenset({"input"}), "the input")
    state = _Node((_Term(source, x, None, None, "the input"),), input_dim)
    rule = functools.partial(_rule, prog=prog)
    units = list(_units(description, ()))
    k = 0
    while k < len(units):
        start = prog.mark()
        state = _canonical(state, prog)
        shape_in = _shape(state)
        while True:
            path, layer = units[k]
            state = walk(layer, state, rule, path)
            k += 1
            if not isinstance(state, tuple) or k == len(units):
                break
        if not isinstance(state, tuple):
            state = _merge_gaussian(state, path, prog)
        prog.segments.append(_Segment(start, prog.mark(), shape_in, None if isinstance(state, tuple) else _shape(state)))
    if isinstance(state, tuple):
        raise ValueError(f"the network ends with a list of {len(state)} outputs; combine them (FanInSum, FanInConcat)")
    start = prog.mark()
    out = _moments(_canonical(state, prog), prog)
    prog.tail = start
    prog.runs = _find_runs(prog) if loops else []
    return prog, out


def _units(layer: Layer, path: tuple):
    """(path, layer) of the top-level chain: ``Serial`` flattened, every other layer one unit."""
    if isinstance(layer, Serial):
        for i, sub in enumerate(layer.layers):
            yield from _units(sub, path + (i,))
    else:
        yield path, layer


@dataclass(eq=False)
class _Segment:
    start: tuple  # prog.mark() before
    end: tuple  # prog.mark() after
    shape_in: tuple
    shape_out: tuple | None


@dataclass(eq=False)
class _Run:
    """Segments first .. first + period * reps - 1: ``reps`` repetitions of ``period`` segments.
    ``exports``: the entry variables one repetition hands to the next (indices into the repetition's
    entry range), in the order the next repetition reads them."""

    first: int
    period: int
    reps: int
    exports: list


def _copy_row(slot: int):
    return lambda V, side, errors: V[slot]


def _canonical(state, prog: _Program):
    """A copy of ``state`` with fresh entry variables and row slots (the same values)."""
    if isinstance(state, tuple):
        return state
    if isinstance(state, _Moments):
        nngp, ntk = prog.entry(), prog.entry()
        prog.emit([f"{nngp} = {state.nngp}", f"{ntk} = {state.ntk}"], (nngp, ntk))
        mean = None if state.mean is None else prog.row(_copy_row(state.mean), "mean (copy)")
        return _Moments(nngp, ntk, prog.row(_copy_row(state.var), "variance (copy)"),
                        prog.row(_copy_row(state.ntkd), "NTK diagonal (copy)"), mean, state.base, state.channels,
                        state.origin)
    fresh, terms = {}, []
    for t in state.terms:
        s = t.source
        if id(s) not in fresh:
            k, th = prog.entry(), prog.entry()
            prog.emit([f"{k} = {s.k}", f"{th} = {s.th}"], (k, th))
            fresh[id(s)] = _Source(k, th, prog.row(_copy_row(s.var), "variance (copy)"),
                                   prog.row(_copy_row(s.ntkd), "NTK diagonal (copy)"), s.base, s.label)
        scale = None if t.scale is None else prog.row(_copy_row(t.scale), "scale (copy)")
        key = None if t.scale_key is None else ("copy", id(fresh[id(s)]), t.scale_key)
        terms.append(_Term(fresh[id(s)], t.fn, scale, key, t.origin))
    return _Node(tuple(terms), state.channels)


def _merge_gaussian(state, path, prog: _Program):
    """A sum of Gaussian terms (or one scaled Gaussian term) as one Gaussian source."""
    if isinstance(state, _Node) and state.terms and all(t.is_gaussian for t in state.terms) and (
            len(state.terms) > 1 or state.terms[0].scale is not None):
        return _Node((_gaussian_sum(state.terms, path, prog),), state.channels)
    return state


def _shape(state) -> tuple:
    """What the emitted statements of a segment do not show about its input or output value."""
    if isinstance(state, _Moments):
        return ("moments", state.mean is None)
    sources: dict = {}
    return tuple((t.fn, sources.setdefault(id(t.source), len(sources)), t.scale is None) for t in state.terms)


def _signature(prog: _Program, seg: _Segment):
    """The segment's statements with names relative to the segment (None if it reads a row slot,
    constant or table from outside it), its counts and shapes; and its imported entry variables."""
    s0, r0, c0, q0, e0 = seg.start
    s1, r1, c1, q1, e1 = seg.end
    imports: dict = {}
    out = []
    for st in prog.statements[s0:s1]:
        for line in st.lines:
            def rename(m, imports=imports):
                kind, n = m.group(1), int(m.group(2))
                if kind == "e":
                    if e0 <= n < e1:
                        return f"e_{n - e0}"
                    return f"i_{imports.setdefault(f'e_{n}', len(imports))}"
                lo, hi = {"a": (r0, r1), "b": (r0, r1), "p": (c0, c1), "q": (q0, q1)}[kind]
                if not lo <= n < hi:
                    raise LookupError
                return f"{kind}_{n - lo}"

            try:
                out.append(_TOKEN.sub(rename, line))
            except LookupError:
                return None, None
    return (tuple(out), r1 - r0, c1 - c0, q1 - q0, e1 - e0, seg.shape_in, seg.shape_out), list(imports)


def _find_runs(prog: _Program) -> list:
    """Repeated blocks of 1 to 4 segments (at least two repetitions), greedily from the front, longest
    coverage first."""
    segs = prog.segments
    info = [_signature(prog, s) for s in segs]
    sigs = [i[0] for i in info]
    prog.signatures = sigs
    runs, k = [], 0
    while k < len(segs):
        best = None
        for period in range(1, 5):
            block = sigs[k:k + period]
            if len(block) < period or any(b is None for b in block):
                break
            reps = 1
            while sigs[k + reps * period:k + (reps + 1) * period] == block:
                reps += 1
            while reps >= 2:
                exports = _exports(prog, info, k, period, reps)
                if exports is not None:
                    break
                reps -= 1
            if reps >= 2 and (best is None or reps * period > best.reps * best.period):
                best = _Run(k, period, reps, exports)
        if best is None:
            k += 1
        else:
            runs.append(best)
            k += best.reps * best.period
    return runs


def _exports(prog, info, first, period, reps):
    """The entry variables each repetition reads from the one before, as indices into that one's entry
    range (the same for every repetition), or None; the values read after the run must be among them."""
    segs = prog.segments
    exports = None
    for r in range(1, reps + 1):
        k = first + r * period
        if k < len(segs):
            names = _imports(prog, segs[k].start, segs[k].end)
        else:  # the output moments after the last segment read the last state
            names = _imports(prog, prog.tail, prog.mark())
        e0, e1 = segs[first + (r - 1) * period].start[4], segs[first + r * period - 1].end[4]
        local = [int(nm[2:]) - e0 for nm in names]
        if any(not 0 <= n < e1 - e0 for n in local):
            return None
        if r < reps:
            if exports is None:
                exports = local
            elif local != exports:
                return None
        elif not set(local) <= set(exports or ()):
            return None
    if len(_imports(prog, segs[first].start, segs[first].end)) != len(exports):
        return None
    return exports


def _imports(prog, start, end) -> list:
    """Entry variables read by the statements between two marks and defined before them."""
    seen: dict = {}
    for st in prog.statements[start[0]:end[0]]:
        for line in st.lines:
            for kind, n in _TOKEN.findall(line):
                if kind == "e" and int(n) < start[4]:
                    seen.setdefault(f"e_{n}", None)
    return list(seen)


# The structural part of the rules (which terms merge, when a sum becomes one Gaussian, what is refused) is
# :mod:`ntk_theory.recursions.rules`, shared with the NumPy interpreter; here the arithmetic, as emission.
@functools.singledispatch
def _rule(layer: Layer, state, path, prog):
    rules.no_rule(layer, path)


def _finite(fn, what):
    def op(V, side, errors):
        value = fn(V, side, errors)
        if not np.all(np.isfinite(value)):
            raise FloatingPointError(f"the kernel overflowed or produced NaN at {what}: variances grow without bound, "
                                     "or an expectation diverges")
        return value

    return op


@_rule.register
def _(layer: Dense, state, path, prog):
    m = _moments(state, prog)
    lb, lw = layer.learning_rate_factors(state.channels)
    cw, cb, lb_, lw_ = (prog.const(v) for v in (layer.C_W, layer.C_b, lb, lw))
    CW, CB, LB, LW = layer.C_W, layer.C_b, float(lb), float(lw)
    k, th = prog.entry(), prog.entry()
    prog.emit([f"{k} = {cb} + {cw} * {m.nngp}", f"{th} = {lb_} + {lw_} * {m.nngp} + {cw} * {m.ntk}"], (k, th))
    what = f"{layer!r} ({where(path)})"
    mv, mt = m.var, m.ntkd
    var = prog.row(_finite(lambda V, side, errors: CB + CW * V[mv], what), f"variance after {what}")
    ntkd = prog.row(_finite(lambda V, side, errors: LB + LW * V[mv] + CW * V[mt], what), f"NTK diagonal after {what}")
    src = _Source(k, th, var, ntkd, frozenset({path}), f"{layer!r} at {where(path)}")
    return _Node((_Term(src, x, None, None, src.label),), layer.out_dim)


# the shared rules (:mod:`ntk_theory.recursions.rules`), with this interpretation as their algebra
_rule.register(Elementwise, lambda layer, state, path, prog: rules.elementwise(layer, state, path, prog))
_rule.register(FanInSum, lambda layer, states, path, prog: rules.fan_in_sum(layer, states, path, prog))


@_rule.register
def _(layer: FanInConcat, states, path, prog):
    total = sum(s.channels for s in states)
    ms = [_moments(s, prog) for s in states]
    w = [s.channels / total for s in states]
    ws = [prog.const(wi) for wi in w]
    nngp, ntk = prog.entry(), prog.entry()
    prog.emit([f"{nngp} = " + " + ".join(f"{wi} * {m.nngp}" for wi, m in zip(ws, ms)),
               f"{ntk} = " + " + ".join(f"{wi} * {m.ntk}" for wi, m in zip(ws, ms))], (nngp, ntk))

    def mix(name):
        slots = [getattr(m, name) for m in ms]
        return lambda V, side, errors: sum(wi * _value(V, q, side) for wi, q in zip(w, slots))

    any_mean = any(m.mean is not None for m in ms)
    mean = prog.row(mix("mean"), "concatenated mean") if any_mean else None
    return _Moments(nngp, ntk, prog.row(mix("var"), "concatenated variance"), prog.row(mix("ntkd"), "concatenated NTK"),
                    mean, frozenset().union(*(m.base for m in ms)), total, f"{layer!r} at {where(path)}")


@_rule.register
def _(layer: LayerNorm, state, path, prog):
    eps = layer.eps
    t = rules.gaussian_term(state, path, prog)
    if t is not None:
        v, c = t.source.var, t.scale

        def scale(V, side, errors):
            var = V[v] if c is None else V[v] * V[c] ** 2
            s = 1 / np.sqrt(var + eps)
            return s if c is None else V[c] * s

        slot = prog.row(scale, f"LayerNorm scale at {where(path)}")
        key = ("LayerNorm", id(t.source), t.scale_key, eps)
        return _Node((_Term(t.source, x, slot, key, f"{layer!r} at {where(path)}"),), state.channels)
    m = _moments(state, prog)
    mean, var, ntkd = m.mean, m.var, m.ntkd

    def sd(V, side, errors):
        mu = _value(V, mean, side)
        return np.sqrt(np.maximum(V[var] - mu**2, 0) + eps)

    s = prog.row(sd, f"LayerNorm deviation at {where(path)}")
    nngp, ntk = prog.entry(), prog.entry()
    centred = m.nngp if mean is None else f"({m.nngp} - a_{mean} * b_{mean})"
    prog.emit([f"{nngp} = {centred} / (a_{s} * b_{s})", f"{ntk} = {m.ntk} / (a_{s} * b_{s})"], (nngp, ntk))
    return _Moments(nngp, ntk, prog.row(lambda V, side, errors: (V[var] - _value(V, mean, side) ** 2) / V[s] ** 2),
                    prog.row(lambda V, side, errors: V[ntkd] / V[s] ** 2), None, m.base, state.channels,
                    f"{layer!r} at {where(path)} of a non-Gaussian value")


def _value(V, slot, side):
    """A row slot's values, or zeros for a mean known to vanish (slot None)."""
    return np.zeros_like(V["sq"][side]) if slot is None else V[slot]


# ---------------------------------------------------------------------- moments
def _moments(state, prog: _Program) -> _Moments:
    """Second moments, NTK and means of a value: E[h_a h_b] = sum_i E[F_i F_i] + sum_(i != j) m_i,a m_j,b."""
    if isinstance(state, _Moments):
        return state
    key = ("node", id(state))
    if key in prog.moments_cache:
        return prog.moments_cache[key][1]
    parts = [_term_moments(t, prog) for t in state.terms]
    if len(parts) == 1:
        out = parts[0]
    else:
        out = _sum_moments(parts, state.channels, "a sum of terms", prog, cross=True)
    prog.moments_cache[key] = (state, out)
    return out


def _sum_moments(ms, channels, origin, prog, cross: bool) -> _Moments:
    """Sum of values of independent Dense layers: the moments add, plus the products of means
    M_a M_b - sum_i m_i,a m_i,b (terms whose mean vanishes left out: they add exact zeros)."""
    means = [m.mean for m in ms if m.mean is not None]
    nngp, ntk = _fold([m.nngp for m in ms], prog), _fold([m.ntk for m in ms], prog)
    if cross and means:
        M1 = " + ".join(f"a_{q}" for q in means)
        M2 = " + ".join(f"b_{q}" for q in means)
        total = prog.entry()
        prog.emit([f"{total} = {nngp} + ({M1}) * ({M2}) - (" + " + ".join(f"a_{q} * b_{q}" for q in means) + ")"],
                  (total,))
        nngp = total
    var_slots = [m.var for m in ms]
    ntkd_slots = [m.ntkd for m in ms]

    def var(V, side, errors):
        v = sum(V[q] for q in var_slots)
        if means:
            v = v + sum(V[q] for q in means) ** 2 - sum(V[q] ** 2 for q in means)
        return v

    mean = prog.row(lambda V, side, errors: sum(V[q] for q in means), "mean of a sum") if means else None
    return _Moments(nngp, ntk, prog.row(var, f"variance of {origin}"),
                    prog.row(lambda V, side, errors: sum(V[q] for q in ntkd_slots), f"NTK diagonal of {origin}"),
                    mean, frozenset().union(*(m.base for m in ms)), channels, origin)


def _scaled(t: _Term, prog: _Program):
    """Entry variables (covariance, NTK) and row slots (variance, NTK diagonal) of c g."""
    s = t.source
    if t.scale is None:
        return s.k, s.th, s.var, s.ntkd
    key = ("scaled", id(t))
    if key in prog.moments_cache:
        return prog.moments_cache[key][1]
    c, v, n = t.scale, s.var, s.ntkd
    k, th = prog.entry(), prog.entry()
    prog.emit([f"{k} = {s.k} * (a_{c} * b_{c})", f"{th} = {s.th} * (a_{c} * b_{c})"], (k, th))
    var = prog.row(lambda V, side, errors: V[v] * V[c] ** 2, "scaled variance")
    ntkd = prog.row(lambda V, side, errors: V[n] * V[c] ** 2, "scaled NTK diagonal")
    prog.moments_cache[key] = (t, (k, th, var, ntkd))
    return k, th, var, ntkd


def _fold(names, prog) -> str:
    """The entry variable of names[0] + names[1] + ... (added left to right), sharing the partial sums
    with earlier sums that begin with the same terms (a residual stream: one addition per block)."""
    names = tuple(names)
    if len(names) == 1:
        return names[0]
    key = ("sum", names)
    if key not in prog.moments_cache:
        head = _fold(names[:-1], prog)
        out = prog.entry()
        prog.emit([f"{out} = {head} + {names[-1]}"], (out,))
        prog.moments_cache[key] = (None, out)
    return prog.moments_cache[key][1]


def _gaussian_sum(terms, path, prog) -> _Term:
    """Independent Gaussian terms summed into one Gaussian source."""
    parts = [_scaled(t, prog) for t in terms]
    k, th = _fold([p[0] for p in parts], prog), _fold([p[1] for p in parts], prog)
    vs, ns = [p[2] for p in parts], [p[3] for p in parts]
    var = prog.row(lambda V, side, errors: sum(V[q] for q in vs), "variance of a Gaussian sum")
    ntkd = prog.row(lambda V, side, errors: sum(V[q] for q in ns), "NTK diagonal of a Gaussian sum")
    src = _Source(k, th, var, ntkd, frozenset().union(*(t.source.base for t in terms)),
                  f"the sum of {len(terms)} Gaussian branches before {where(path)}")
    return _Term(src, x, None, None, src.label)


def _term_moments(t: _Term, prog: _Program) -> _Moments:
    key = ("term", id(t))
    if key in prog.moments_cache:
        return prog.moments_cache[key][1]
    k, th, var, ntkd = _scaled(t, prog)
    base = t.source.base
    if t.is_gaussian:
        out = _Moments(k, th, var, ntkd, None, base, 0, "a Gaussian term")
    elif prog.activation(t.fn).T.is_closed_form and prog.activation(t.fn).Tdot.is_closed_form:
        out = _closed_term(t, prog, k, th, var, ntkd)
    else:
        out = _numerical_term(t, prog, k, th, var, ntkd)
    prog.moments_cache[key] = (t, out)
    return out


def _closed_term(t: _Term, prog: _Program, k, th, var, ntkd) -> _Moments:
    """Moments of F(c g) with closed-form expectations: ``pair_index`` (or ``unit_index`` at unit scale) per
    entry, the one-variable diagonal forms and the mean per input."""
    index, kern = prog.pair(t.fn, t.origin)
    base = t.source.base
    label = t.source.label
    nngp, ntk = prog.entry(), prog.entry()
    b, k12, T, Td = (prog.entry() for _ in range(4))
    alpha = kern.homogeneity
    if alpha is None:
        prog.emit([f"{b} = math.sqrt(a_{var}) * math.sqrt(b_{var})",
                   f"{k12} = min(max({k}, -{b}), {b})",
                   f"{T}, {Td} = pair_{index}(a_{var}, b_{var}, {k12})",
                   f"{nngp} = {T}", f"{ntk} = {Td} * {th}"], (b, k12, T, Td, nngp, ntk), pairs=1)
    else:
        # homogeneous of degree alpha: T = c^alpha T(k / c), Tdot = c^(alpha - 1) Tdot(k / c) at
        # c = sqrt(k_aa) sqrt(k_bb), with sqrt(k) and 1 / sqrt(k) per input (no division per entry)
        sq = prog.row(lambda V, side, errors: np.sqrt(V[var]), "square root of a variance")
        inv = prog.row(lambda V, side, errors: 1 / np.sqrt(V[var]), "inverse square root of a variance")
        pos, u11, u22, u12, T0, Td0, c = (prog.entry() for _ in range(7))
        prog.emit([f"{b} = a_{sq} * b_{sq}",
                   f"{k12} = min(max({k}, -{b}), {b})",
                   f"{pos} = {b} > 0.0",
                   f"{u11} = a_{sq} * b_{inv} if {pos} else a_{var}",
                   f"{u22} = b_{sq} * a_{inv} if {pos} else b_{var}",
                   f"{u12} = {k12} * (a_{inv} * b_{inv}) if {pos} else {k12}",
                   f"{c} = {b} if {pos} else 1.0",
                   f"{T0}, {Td0} = unit_{index}({u11}, {u22}, {u12})",
                   f"{T} = {T0} * {emit._power(c, alpha)}",
                   f"{Td} = {Td0} * {emit._power(c, alpha - 1)}",
                   f"{nngp} = {T}", f"{ntk} = {Td} * {th}"],
                  (b, k12, pos, u11, u22, u12, c, T0, Td0, T, Td, nngp, ntk), pairs=1)
    cache_key = object()  # the diagonal forms, computed once per side and evaluation

    def diagonal(V, side, errors):
        if cache_key not in V:
            v = V[var]
            kern.check_variances(v, label)
            T1, Td1, err = kern.diagonal(v, derivative=side == 1)
            V[cache_key] = (np.asarray(T1, dtype=float), None if Td1 is None else np.asarray(Td1, dtype=float))
            if err is not None:
                errors.append(err)
        return V[cache_key]

    def second(V, side, errors):
        return diagonal(V, side, errors)[0]

    def ntk_diagonal(V, side, errors):
        Td1 = diagonal(V, side, errors)[1]
        return np.zeros_like(V[var]) if Td1 is None else Td1 * V[ntkd]

    mean_fn = rules.mean_function(t.fn)

    def mean(V, side, errors):
        values, err = mean_fn(V[var])
        if err is not None:
            errors.append(err)
        return values

    return _Moments(nngp, ntk, prog.row(second, f"E[F^2] of {t.origin}"), prog.row(ntk_diagonal, f"NTK of {t.origin}"),
                    prog.row(mean, f"mean of {t.origin}"), base, 0, t.origin)


def _numerical_term(t: _Term, prog: _Program, k, th, var, ntkd) -> _Moments:
    """Moments of F(c g) without closed forms: per input the Hermite tables of F and F' at the variance
    v_a = c_a^2 K_aa (:func:`ntk_theory.numerics.hermite_numba.coefficients`, once per distinct variance),
    whose norms are the diagonal forms E[F(u)^2], E[F'(u)^2] and whose first coefficient is the mean; per entry
    Mehler's series (:func:`ntk_theory.codegen.runtime.hermite_term`: truncation by the Parseval tails at
    ``tol``, NaN where more than ``max_order`` terms are needed, then finished by 2-D quadrature) with its
    error estimate accumulated in ``err_row``."""
    q, f, kern = prog.numerical(t.fn, var, t.origin)
    label = t.source.label
    nngp, ntk, b, k12, T, Td, e = (prog.entry() for _ in range(7))
    prog.emit([f"{b} = math.sqrt(a_{var}) * math.sqrt(b_{var})",
               f"{k12} = min(max({k}, -{b}), {b})",
               f"{T}, {Td}, {e} = hermite_term(q_{q}, i, j0 + c, a_{var}, b_{var}, {k12}, HA, TA, SA, HB, TB, SB, ltol, tol)",
               f"err_row = max(err_row, {e})",
               f"{nngp} = {T}", f"{ntk} = {Td} * {th}"], (b, k12, T, Td, e, nngp, ntk), pairs=1)

    def tables(V, side, errors):
        key = ("tables", q)
        if key not in V:
            v = V[var]
            kern.check_variances(v, label)
            V[key] = V["hermite"](f, v)
            # E[F^2] and a_0 = E[F] from the tables: each off by at most 2 sqrt(E F^2) err (Cauchy-Schwarz)
            errors.extend(float(np.max(2 * tab["sqrt_norm"] * tab["err"], initial=0.0)) for tab in V[key])
        return V[key]

    prog.table_ops[q] = tables
    return _Moments(nngp, ntk,
                    prog.row(lambda V, side, errors: tables(V, side, errors)[0]["norm"], f"E[F^2] of {t.origin}"),
                    prog.row(lambda V, side, errors: tables(V, side, errors)[1]["norm"] * V[ntkd], f"NTK of {t.origin}"),
                    prog.row(lambda V, side, errors: tables(V, side, errors)[0]["coef"][:, 0], f"mean of {t.origin}"),
                    t.source.base, 0, t.origin)


# ---------------------------------------------------------------------- emission
_FUSED = """\
CHUNK = {chunk}


@numba.njit(cache=True, error_model='numpy')
def _row(K, TH, r, row0, col0, symmetric, R1, R2, P, LOOPS, E, HA, TA, SA, HB, TB, SB, tol):
    \"\"\"Row r of the tile: the whole program per entry, in chunks of CHUNK columns.  Returns the largest
    error estimate of the row's series (terms without closed form; 0 without).\"\"\"
    n_cols = K.shape[1]
    i = row0 + r
    ltol = math.log(tol)
    err_row = 0.0
    c_start = 0
    if symmetric:
        c_start = max(i - col0 + 1, 0)
{loads}
    for c0 in range(c_start, n_cols, CHUNK):
        n = min(CHUNK, n_cols - c0)
        j0 = col0 + c0
{loops}
    return err_row


@numba.njit(parallel=True, cache=True, error_model='numpy')
def fused(K, TH, rbeg, rend, row0, col0, symmetric, R1, R2, P, LOOPS, HA, TA, SA, HB, TB, SB, tol, err):
    \"\"\"In place, rows rbeg <= r < rend of K and TH (C-contiguous): K holds G0 = x_a . x_b / d on entry, the
    output NNGP on exit; TH receives the NTK; err[r] the row's largest error estimate.  Row r is input
    row0 + r, column c input col0 + c; with symmetric only entries j > i.  R1, R2: per-input values (rows,
    columns); P: constants; LOOPS[k] = (repetitions, offsets of the first repetition's constants, per-input
    values and tables) of loop k.  HA, TA, SA (rows) and HB, TB, SB (columns): Hermite tables of the terms
    without closed form (:func:`ntk_theory.codegen.runtime.hermite_term`).
    Rows go in pairs (p, n_rows - 1 - p), which carry equal work in the symmetric case, across threads.\"\"\"
    n_rows = rend - rbeg
    for p in numba.prange((n_rows + 1) // 2):
        E = np.empty({size})
        pi = np.int64(p)  # the prange index is unsigned; mixed with signed values it would become float
        for t in range(2):
            q = pi if t == 0 else n_rows - 1 - pi
            if t == 1 and q == pi:
                continue
            err[rbeg + q] = _row(K, TH, rbeg + q, row0, col0, symmetric, R1, R2, P, LOOPS, E, HA, TA, SA, HB, TB, SB,
                                 tol)


def entry(g, i, j, R1, R2, P, LOOPS, HA, TA, SA, HB, TB, SB, tol, hermite_term):
    \"\"\"One entry (G0 = g, row i, column j) of the same program in Python: (NNGP, NTK, error estimate).  The
    driver's route for entries the compiled series leaves NaN, with a ``hermite_term`` that integrates them.\"\"\"
    ltol = math.log(tol)
    err_row = 0.0
    Krow = (g,)
    c = 0
    j0 = j
{entry_body}
    return {entry_out}
"""

_KIND = {"e": "e", "a": "r", "b": "r", "p": "p", "q": "q"}


class _Names:
    """Names of the emitted module, numbered in order of appearance (so the source does not depend on how
    many repetitions a loop runs), and the positions of the outer constants, per-input values and tables
    in P, R1/R2 and the Hermite tables."""

    def __init__(self):
        self.number: dict = {}
        self.count = {"e": 0, "r": 0, "p": 0, "q": 0}
        self.fixed = {"r": {}, "p": {}, "q": {}}  # name number -> global index (outer names)

    def get(self, cls: str, key) -> int:
        if (cls, key) not in self.number:
            self.number[(cls, key)] = self.count[cls]
            self.count[cls] += 1
            if cls != "e" and key[0] == "outer":
                self.fixed[cls][self.count[cls] - 1] = key[1]
        return self.number[(cls, key)]

    def rename(self, line: str, key) -> str:
        """``key(cls, kind, n)`` -> the key of token kind_n."""
        return _TOKEN.sub(lambda m: f"{m.group(1)}_{self.get(_KIND[m.group(1)], key(_KIND[m.group(1)], m.group(1), int(m.group(2))))}", line)


@dataclass
class _Layout:
    """Where the emitted module reads its per-input values (R1/R2 rows: global row slots), constants (P:
    global constant indices) and Hermite tables (global table indices), and ``loops`` (k, 4): repetitions
    and offsets of loop k."""

    rows: list
    constants: list
    tables: list
    loops: np.ndarray


def _tokens(text: str, kind: str) -> list:
    return [f"{k}_{n}" for k, n in _TOKEN.findall(text) if k == kind]


def _region(items, base: int, pairs_per_loop: int, chunk: int, col_row):
    """Column loops of a list of items: ("st", lines, defs, pairs, alone) statements, grouped into loops
    over a chunk's columns with at most ``pairs_per_loop`` activation expectations each, values crossing
    loops kept in the per-thread buffer E from offset ``base`` (columns first, then slots reused after their
    last use), or ("loop", uses, defs, code(nested base, where) -> (lines, size)).  ``col_row(name)``: the R2
    row expression of a column value.  Returns (lines, size of E used from base)."""
    groups, current, count = [], [], 0
    for it in items:
        if it[0] == "loop" or (it[0] == "st" and it[4]):
            if current:
                groups.append(current)
            groups.append(it if it[0] == "loop" else [it])
            current, count = [], 0
            continue
        if current and it[3] and pairs_per_loop and count + it[3] > pairs_per_loop:
            groups.append(current)
            current, count = [], 0
        current.append(it)
        count += it[3]
    if current:
        groups.append(current)
    defined_in, last_use = {}, {}
    for gi, group in enumerate(groups):
        if isinstance(group, tuple):
            for name in group[1]:
                if name in defined_in and defined_in[name] != gi:
                    last_use[name] = max(last_use.get(name, -1), gi)
            for name in group[2]:
                defined_in[name] = gi
            continue
        for st in group:
            for line in st[1]:
                for name in _tokens(line, "e"):
                    if name in defined_in and defined_in[name] != gi:
                        last_use[name] = max(last_use.get(name, -1), gi)
            for name in st[2]:
                defined_in[name] = gi
    columns = sorted({nm for g in groups if isinstance(g, list) for st in g for ln in st[1] for nm in _tokens(ln, "b")},
                     key=_order)
    offset = {nm: base + i * chunk for i, nm in enumerate(columns)}
    release = {}
    for name, last in last_use.items():
        release.setdefault(last, []).append(name)
    # pass 1: slots of the values that cross loops
    slot_of, free, n_slots = {}, [], 0
    for gi, group in enumerate(groups):
        defs = group[2] if isinstance(group, tuple) else [nm for st in group for nm in st[2]]
        for nm in defs:
            if nm in last_use:
                slot_of[nm] = free.pop() if free else n_slots
                n_slots = max(n_slots, slot_of[nm] + 1)
        for nm in release.get(gi, ()):
            free.append(slot_of[nm])
    own = (len(columns) + n_slots) * chunk
    where_ = {nm: base + (len(columns) + s) * chunk for nm, s in slot_of.items()}
    # pass 2: code
    body = []
    for nm in columns:
        body += [f"col = {col_row(nm)}", f"for c in range(n):\n    E[{offset[nm]} + c] = col[c]"]
    nested = 0
    for gi, group in enumerate(groups):
        if isinstance(group, tuple):
            lines, size = group[3](base + own, where_, last_use)
            body.append("\n".join(lines))
            nested = max(nested, size)
            continue
        lines = [ln for st in group for ln in st[1]]
        text = "\n".join(lines)
        loads = sorted({nm for nm in _tokens(text, "e") if nm in last_use and defined_in[nm] != gi}, key=_order)
        cols = sorted(set(_tokens(text, "b")), key=_order)
        stores = [nm for st in group for nm in st[2] if nm in last_use]
        code = ["for c in range(n):"]
        code += [f"    {nm} = E[{offset[nm]} + c]" for nm in cols]
        code += [f"    {nm} = E[{where_[nm]} + c]" for nm in loads]
        code += [f"    {ln}" for ln in lines]
        code += [f"    E[{where_[nm]} + c] = {nm}" for nm in stores]
        body.append("\n".join(code))
    return body, own + nested


def emit_program(prog: _Program, out: _Moments, pairs_per_loop: int = 1, chunk: int = 64):
    """Source of the fused module and its :class:`_Layout`.

    Statements are grouped into loops over a chunk's columns with at most ``pairs_per_loop``
    activation expectations each (0: all in one loop); values live in registers inside a loop and in
    a per-thread buffer between loops (slots reused after their last use).  A run of repeated blocks
    (``prog.runs``) is one loop over its repetitions around the block's column loops, the values one
    repetition hands to the next carried in the buffer, its constants and per-input values read at
    offsets ``LOOPS[k]`` plus the repetition times their count per repetition."""
    names = _Names()
    segs = prog.segments

    def outer(cls, kind, n):
        return ("outer", n)

    # the items in program order: outer statements (global names) and runs
    runs = {segs[r.first].start[0]: r for r in prog.runs}
    items, s = [], 0
    first, *_ = prog.statements
    items.append(("st", [names.rename(ln, outer) for ln in first.lines], tuple(names.rename(d, outer) for d in first.defs),
                  0, True))
    s = 1
    loop_specs = []
    loop_blocks = []  # per loop: (rows, constants, tables) in the order of P / R / tables
    while s < len(prog.statements):
        if s not in runs:
            st = prog.statements[s]
            items.append(("st", [names.rename(ln, outer) for ln in st.lines],
                          tuple(names.rename(d, outer) for d in st.defs), st.pairs, False))
            s += 1
            continue
        run = runs[s]
        k = len(loop_specs)
        reps = [(segs[run.first + r * run.period].start, segs[run.first + (r + 1) * run.period - 1].end)
                for r in range(run.reps)]
        (s0, r0, c0, q0, e0), (s1, _, c1, q1, _) = reps[0]
        imports = _imports(prog, reps[0][0], reps[0][1])
        imp_index = {nm: j for j, nm in enumerate(imports)}

        def local(cls, kind, n, k=k, r0=r0, c0=c0, q0=q0, e0=e0, imp_index=imp_index):
            if kind == "e":
                return ("loop", k, "i", imp_index[f"e_{n}"]) if n < e0 else ("loop", k, "e", n - e0)
            return ("loop", k, cls, n - {"r": r0, "p": c0, "q": q0}[cls])

        outer_imports = [names.rename(nm, outer) for nm in imports]
        body = [("st", [names.rename(ln, local) for ln in st.lines], tuple(names.rename(d, local) for d in st.defs),
                 st.pairs, False) for st in prog.statements[s0:s1]]
        placeholders = [names.rename(nm, local) for nm in imports]
        exports = [names.rename(f"e_{e0 + x}", local) for x in run.exports]
        last_e0 = reps[-1][0][4]
        outer_defs = [names.rename(f"e_{last_e0 + x}", outer) for x in run.exports]
        body_text = "\n".join(ln for it in body for ln in it[1])
        # packed positions of the per-input values the block reads, by local slot
        local_slots = sorted({key[3] for (cls, key) in names.number if cls == "r" and key[:3] == ("loop", k, "r")})
        packed = {ls: i for i, ls in enumerate(local_slots)}
        num_of = {names.number[("r", ("loop", k, "r", ls))]: ls for ls in local_slots}
        RN, PC, QC = len(local_slots), c1 - c0, q1 - q0
        loads = [f"pb = LOOPS[{k}, 1] + rep * {PC}", f"rb = LOOPS[{k}, 2] + rep * {RN}", f"qb = LOOPS[{k}, 3] + rep * {QC}"]
        for (cls, key), num in sorted(names.number.items(), key=lambda kv: kv[1]):
            if key[:3] == ("loop", k, "p"):
                loads.append(f"p_{num} = P[pb + {key[3]}]")
            if key[:3] == ("loop", k, "q"):
                loads.append(f"q_{num} = qb + {key[3]}")
        a_names = sorted(set(_tokens(body_text, "a")), key=_order)
        loads += [f"{nm} = R1[rb + {packed[num_of[_order(nm)]]}, i]" for nm in a_names]
        b_names = sorted(set(_tokens(body_text, "b")), key=_order)
        loop_specs.append({"k": k, "loads": loads, "body": body, "placeholders": placeholders, "exports": exports,
                           "outer_imports": outer_imports, "outer_defs": outer_defs, "b_names": b_names,
                           "b_row": lambda nm, packed=packed, num_of=num_of: f"rb + {packed[num_of[_order(nm)]]}"})
        loop_blocks.append(([r[0][1] + ls for r in reps for ls in local_slots],
                            [r[0][2] + x for r in reps for x in range(PC)],
                            [r[0][3] + x for r in reps for x in range(QC)], run.reps, (RN, PC, QC)))
        items.append(("loop", k))
        s = segs[run.first + run.reps * run.period - 1].end[0]
    final = ("st", [names.rename(f"Krow[c] = {out.nngp}", outer), names.rename(f"THrow[c] = {out.ntk}", outer)], (), 0, True)
    items.append(final)
    out_names = (names.rename(out.nngp, outer), names.rename(out.ntk, outer))
    indent = " " * 4

    def loop_item(spec, chunk=chunk):
        ncarry = len(spec["placeholders"])

        def code(nb, where_, last_use):
            carry = [nb + j * chunk for j in range(ncarry)]
            inner = ([("st", [f"{ph} = E[{carry[j]} + c]" for j, ph in enumerate(spec["placeholders"])],
                       tuple(spec["placeholders"]), 0, False)] + spec["body"]
                     + [("st", [f"E[{carry[j]} + c] = {ex}" for j, ex in enumerate(spec["exports"])], (), 0, False)])
            lines, size = _region(inner, nb + ncarry * chunk, pairs_per_loop, chunk,
                                  lambda nm: f"R2[{spec['b_row'](nm)}, j0:j0 + n]")
            out_lines = ["for c in range(n):"]
            out_lines += [f"    {nm} = E[{where_[nm]} + c]" for nm in dict.fromkeys(spec["outer_imports"])]
            out_lines += [f"    E[{carry[j]} + c] = {nm}" for j, nm in enumerate(spec["outer_imports"])]
            out_lines += [f"for rep in range(LOOPS[{spec['k']}, 0]):"]
            out_lines += [indent + ln for ln in spec["loads"]]
            out_lines += [indent + ln for b in lines for ln in b.split("\n")]
            stored = [(j, nm) for j, nm in enumerate(spec["outer_defs"]) if nm in last_use]
            if stored:
                out_lines += ["for c in range(n):"]
                out_lines += [f"    E[{where_[nm]} + c] = E[{carry[j]} + c]" for j, nm in stored]
            return out_lines, ncarry * chunk + size

        return ("loop", tuple(spec["outer_imports"]), tuple(spec["outer_defs"]), code)

    region_items = [loop_item(loop_specs[it[1]]) if it[0] == "loop" else it for it in items]
    fixed_r = names.fixed["r"]
    r_pos = {num: i for i, num in enumerate(fixed_r)}
    body, size = _region(region_items, 0, pairs_per_loop, chunk, lambda nm: f"R2[{r_pos[_order(nm)]}, j0:j0 + n]")
    body = ["Krow = K[r, c0:c0 + n]", "THrow = TH[r, c0:c0 + n]"] + body
    # outer loads: constants, per-input values of the row, table indices
    outer_text = "\n".join(ln for it in items if it[0] == "st" for ln in it[1])
    outer_text += "\n" + "\n".join(nm for spec in loop_specs for nm in spec["outer_imports"] + spec["outer_defs"])
    p_pos = {num: i for i, num in enumerate(names.fixed["p"])}
    q_pos = {num: i for i, num in enumerate(names.fixed["q"])}
    loads = [f"{nm} = P[{p_pos[_order(nm)]}]" for nm in sorted(set(_tokens(outer_text, "p")), key=_order)]
    loads += [f"{nm} = {q_pos[_order(nm)]}" for nm in sorted(set(_tokens(outer_text, "q")), key=_order)]
    loads += [f"{nm} = R1[{r_pos[_order(nm)]}, i]" for nm in sorted(set(_tokens(outer_text, "a")), key=_order)]
    # the Python twin of one entry
    entry_body = list(loads)
    entry_body += [f"{nm} = R2[{r_pos[_order(nm)]}, j]" for nm in sorted(set(_tokens(outer_text, "b")), key=_order)]
    for it in items[:-1]:
        if it[0] == "st":
            entry_body += it[1]
            continue
        spec = loop_specs[it[1]]
        carry = f"carry_{spec['k']}"
        entry_body.append(f"{carry} = {_tuple(spec['outer_imports'])}")
        entry_body.append(f"for rep in range(LOOPS[{spec['k']}, 0]):")
        inner = spec["loads"] + [f"{nm} = R2[{spec['b_row'](nm)}, j]" for nm in spec["b_names"]]
        inner += [f"{_tuple(spec['placeholders'])} = {carry}"] if spec["placeholders"] else []
        inner += [ln for st in spec["body"] for ln in st[1]]
        inner += [f"{carry} = {_tuple(spec['exports'])}"]
        entry_body += [indent + ln for ln in inner]
        if spec["outer_defs"]:
            entry_body.append(f"{_tuple(spec['outer_defs'])} = {carry}")
    # per-input layout: the outer values first, then each loop's repetitions
    rows = [fixed_r[num] for num in fixed_r]
    constants = [names.fixed["p"][num] for num in names.fixed["p"]]
    tables = [names.fixed["q"][num] for num in names.fixed["q"]]
    loops = np.zeros((max(len(loop_blocks), 1), 4), dtype=np.int64)
    for k, (r_idx, p_idx, q_idx, reps, _) in enumerate(loop_blocks):
        loops[k] = (reps, len(constants), len(rows), len(tables))
        rows += r_idx
        constants += p_idx
        tables += q_idx
    fused = (_FUSED.replace("{chunk}", str(int(chunk))).replace("{size}", str(max(size, chunk)))
             .replace("{loads}", "\n".join(indent + ln for ln in loads) or f"{indent}pass")
             .replace("{loops}", "\n".join(" " * 8 + ln for b in body for ln in b.split("\n")))
             .replace("{entry_body}", "\n".join(indent + ln for ln in entry_body))
             .replace("{entry_out}", f"{out_names[0]}, {out_names[1]}, err_row"))
    functions = [source for _, _, source in sorted(prog.functions.values(), key=lambda v: v[0])]
    pairs = [(_unit_source(index, kern) if kern.homogeneity is not None else emit._pair_source(index, kern))
             for index, kern in sorted(prog.kernels.values(), key=lambda v: v[0])]
    header = [
        "# Generated by ntk-theory (ntk_theory/codegen/graph.py). Do not edit: regenerate instead.",
        "# Activation terms: " + ", ".join(f"{sp.sstr(fn)} -> {'unit' if kern.homogeneity is not None else 'pair'}_{i}"
                                           for fn, (i, kern) in prog.kernels.items()),
        "# Without closed form (Hermite tables): "
        + ", ".join(f"{sp.sstr(fn)} -> s_{f}, ds_{f}" for fn, (f, _, _) in prog.functions.items()),
        f"# Loops over repeated blocks: {len(loop_specs)}",
        "import math", "", "import numba", "import numpy as np", "",
        "from ntk_theory.codegen.runtime import atan2, erfcx, hermite_term",
        "from ntk_theory.numerics import compensated, compensated_numba  # noqa: F401 (registers two_product)",
        "",
        "# det2 inlined into the caller (Numba IR), so that LLVM vectorises the loops that use it",
        "det2 = numba.njit(inline='always', error_model='numpy')(compensated.det2)",
    ]
    source = "\n".join(header) + "\n\n\n" + "".join(p + "\n\n\n" for p in pairs + functions) + fused
    return source, _Layout(rows, constants, tables, loops)


def _tuple(names) -> str:
    return "(" + ", ".join(names) + ",)" if names else "()"


def _unit_source(index: int, kern) -> str:
    """``unit_index(k11, k22, k12) -> (T, Tdot)`` of a homogeneous activation at unit scale
    (k11 k22 = 1): the stable closed forms, printed after common-subexpression elimination."""
    T, Td = stable_form(kern.T.expr), stable_form(kern.Tdot.expr)
    replacements, (T_r, Td_r) = sp.cse([T, Td], symbols=sp.numbered_symbols("t"), optimizations="basic")
    body = [f"{sym} = {numba_code(val)}" for sym, val in replacements]
    body += [f"return {numba_code(T_r)}, {numba_code(Td_r)}"]
    doc = f'"""{kern.activation.name} at unit scale: T = {sp.sstr(kern.T.expr)[:300]}"""'
    return ("@numba.njit(inline='always', cache=True, error_model='numpy')\n"
            f"def unit_{index}(k11, k22, k12):\n" + "\n".join("    " + ln for ln in [doc] + body))


def _order(name: str) -> int:
    return int(name[2:])


# ---------------------------------------------------------------------- the kernel
@dataclass
class _Built:
    program: _Program
    out: _Moments
    source: str
    layout: _Layout
    constants: np.ndarray
    key: str


class CompiledGraphKernel:
    """NNGP and NTK of an architecture description by generated, compiled and cached Numba code.

    ``description``: a layer description (or a ``stax`` network); ``input_dim`` the input dimension
    if known (the program is built per input dimension, which enters the constants of 'standard'
    Dense layers and concatenation weights; the source is the same); ``tile_mb`` the size of the row
    tiles of the output per call of the compiled function; ``pairs_per_loop`` how many activation
    expectations share one vectorised loop over a chunk of ``chunk`` columns (0: all in one loop);
    ``tol`` the truncation tolerance of Mehler series (terms without closed form), ``max_order`` their
    largest degree (the size of the Hermite tables).
    Unsupported layers raise NotImplementedError naming the layer (:class:`NotCompilable` where only
    the NumPy interpreter has the rule) when the program is built: at construction with
    ``input_dim``, else at the first evaluation or when ``source`` is read.
    """

    def __init__(self, description, input_dim: int | None = None, tile_mb: float = 64.0, pairs_per_loop: int = 1,
                 chunk: int = 64, tol: float = 1e-15, max_order: int = 128, loops: bool = True):
        self.loops = bool(loops)
        self.description = getattr(description, "description", description)
        if not isinstance(self.description, Layer):
            raise TypeError(f"expected a layer description or a stax network; got {description!r}")
        self.tile_mb = float(tile_mb)
        self.tol = float(tol)
        if not 0 < self.tol < 1:
            raise ValueError(f"tol must be in (0, 1); got {tol!r}")
        self.max_order = _checks.positive_int("max_order", max_order)
        self.fallback_entries = 0
        if isinstance(pairs_per_loop, bool) or not isinstance(pairs_per_loop, int) or pairs_per_loop < 0:
            raise ValueError(f"pairs_per_loop must be an integer >= 0; got {pairs_per_loop!r}")
        self.pairs_per_loop = pairs_per_loop
        self.chunk = _checks.positive_int("chunk", chunk)
        self.input_dim = None if input_dim is None else _checks.positive_int("input_dim", input_dim)
        self._built: dict = {}
        self._current = None
        self._modules: dict = {}
        self.compile_seconds = None
        self.from_cache = None
        if self.input_dim is not None:
            self._build(self.input_dim)

    def _build(self, d: int) -> _Built:
        if d not in self._built:
            program, out = build(self.description, d, loops=self.loops)
            source, layout = emit_program(program, out, self.pairs_per_loop, self.chunk)
            key = "graph_" + hashlib.sha256((FORMAT_VERSION + emit._runtime_fingerprint() + source).encode()).hexdigest()[:20]
            constants = np.array([program.constants[c] for c in layout.constants] + [0.0], dtype=float)
            self._built[d] = _Built(program, out, source, layout, constants, key)
        self._current = self._built[d]
        return self._current

    @property
    def source(self) -> str:
        """The generated module (for the input dimension of the last evaluation, ``input_dim``, or 1)."""
        return (self._current or self._build(self.input_dim or 1)).source

    @property
    def key(self) -> str:
        return (self._current or self._build(self.input_dim or 1)).key

    def __repr__(self) -> str:
        status = ("not compiled" if self.compile_seconds is None
                  else f"compiled in {self.compile_seconds:.2f} s" + (" (disk cache)" if self.from_cache else ""))
        return f"CompiledGraphKernel({self.description!r}; {status})"

    def module(self, built: _Built | None = None):
        """The compiled module of a built program (default: the current one)."""
        built = built or self._current or self._build(self.input_dim or 1)
        if built.key not in self._modules:
            self._modules[built.key] = self._compile(built)
        return self._modules[built.key]

    def _compile(self, built: _Built):
        """Load (or compile) the generated module and both array layouts of its entry point, so that
        ``compile_seconds`` is the whole start-up cost and ``from_cache`` says whether it came from
        Numba's disk cache."""
        import sys

        t0 = time.perf_counter()
        try:
            module = cache.import_module(built.key, built.source)
            self._warm_up(module, built)
        except Exception:  # noqa: BLE001 - a corrupt Numba cache: clear it and compile afresh
            cache.clear_numba_cache(built.key)
            sys.modules.pop(f"ntk_theory_kernel_{built.key}", None)
            module = cache.import_module(built.key, built.source)
            self._warm_up(module, built)
        self.compile_seconds = time.perf_counter() - t0
        compiled = _compiled_afresh(module)
        if built.program.functions:
            from ..numerics import gauss_legendre, hermite_numba

            compiled += _compiled_afresh(hermite_numba) + _compiled_afresh(gauss_legendre)
        self.from_cache = compiled == 0
        return module

    def _warm_up(self, module, built: _Built) -> None:
        """Compile (or load) the entry point for its one array layout, with no rows to run, and for terms
        without closed form the table routine for their F and F'."""
        R = np.ones((max(len(built.layout.rows), 1), 2))
        H, S = np.zeros((0, 1, 1)), np.zeros((0, 1, 2))
        module.fused(np.ones((1, 1)), np.ones((1, 1)), 0, 0, 0, 0, False, R, R, built.constants, built.layout.loops,
                     H, H, S, H, H, S, self.tol, np.zeros(1))
        if built.program.functions:
            from ..numerics import hermite_numba

            for f, _, _ in built.program.functions.values():
                for fn in (getattr(module, f"s_{f}"), getattr(module, f"ds_{f}")):
                    hermite_numba.coefficients(fn, np.array([1.0]), kinks=tuple(getattr(module, f"KINKS_{f}")),
                                               max_order=4)

    def _hermite(self, module):
        """fn(f, variances) -> (tables of s_f, tables of ds_f) per input: the Hermite coefficients ``coef``,
        half log relative tails ``tail``, E F^2 ``norm``, its square root ``sqrt_norm`` and the coefficients'
        l2 error ``err``, computed once per distinct variance (:func:`ntk_theory.numerics.hermite_numba.coefficients`)."""
        from ..numerics import hermite_numba

        def tables(f, variances):
            unique, inverse = np.unique(variances, return_inverse=True)
            kinks = tuple(getattr(module, f"KINKS_{f}"))
            out = []
            for fn in (getattr(module, f"s_{f}"), getattr(module, f"ds_{f}")):
                tab = hermite_numba.coefficients(fn, unique, kinks=kinks, max_order=self.max_order, tol=self.tol)
                with np.errstate(divide="ignore"):
                    half_log_tail = 0.5 * np.log(tab.tail)
                out.append({"coef": tab.coef[inverse], "tail": half_log_tail[inverse], "norm": tab.norm2[inverse],
                            "sqrt_norm": np.sqrt(tab.norm2)[inverse], "err": tab.error[inverse]})
            return tuple(out)

        return tables

    @staticmethod
    def _stack(program: _Program, order, V, side, errors, n: int):
        """The Hermite tables of every term without closed form for one side, in the compiled program's
        ``order`` (:class:`_Layout`): coefficients H and half log tails T (2 Q, n, order + 1), [sqrt(E F^2),
        error] S (2 Q, n, 2)."""
        if not order:
            return np.zeros((0, 1, 1)), np.zeros((0, 1, 1)), np.zeros((0, 1, 2))
        parts = [tab for q in order for tab in program.table_ops[q](V, side, errors)]
        H = np.ascontiguousarray(np.stack([t["coef"] for t in parts]))
        T = np.ascontiguousarray(np.stack([t["tail"] for t in parts]))
        S = np.ascontiguousarray(np.stack([np.stack([t["sqrt_norm"], t["err"]], axis=-1) for t in parts]))
        return H, T, S

    # ------------------------------------------------------------------ per input
    @staticmethod
    def diagonal(program: _Program, sq1, sq2=None, hermite=None):
        """Row slots of both sides (sq: x . x / d per input; sq2 None: the same inputs) and the quadrature
        error of the diagonal forms and means.  ``hermite``: the table routine of terms without closed
        form (:meth:`_hermite`).  Returns (V1, V2, errors)."""
        sides = {1: sq1} if sq2 is None else {1: sq1, 2: sq2}
        errors: list = []
        out = {}
        for side, sq in sides.items():
            V = {"sq": {side: sq}, "hermite": hermite}
            with np.errstate(all="ignore"):
                for slot, op in enumerate(program.row_ops):
                    V[slot] = np.asarray(op(V, side, errors), dtype=float)
            out[side] = V
        return out[1], out.get(2, out[1]), errors

    # ------------------------------------------------------------------ evaluation
    def __call__(self, X1, X2=None, **kwargs) -> KernelResult:
        return self.evaluate(X1, X2, **kwargs)

    def evaluate(self, X1, X2=None, get=("nngp", "ntk"), out=None, dtype=np.float64, progress=False) -> KernelResult:
        """NNGP and NTK (N1, N2) of the network's output at X1 (N1, d), X2 (N2, d) (default X1).
        ``out=(nngp, ntk)`` writes into given arrays (e.g. ``np.memmap``); ``dtype`` float64 (default)
        or float32 for the stored result (arithmetic is float64 either way); ``progress``: a bar over the
        row tiles (:func:`ntk_theory.progress.progress_bar`: True, False, or None for a terminal)."""
        from ..progress import progress_bar

        names = check_get(get)
        X1, X2v, symmetric, K_out, T_out = evaluation_arrays(X1, X2, out, dtype)
        N1, N2, d = X1.shape[0], X2v.shape[0], X1.shape[1]
        built = self._build(d)
        module = self.module(built)
        sq1 = np.einsum("ij,ij->i", X1, X1) / d
        sq2 = None if symmetric else np.einsum("ij,ij->i", X2v, X2v) / d
        program = built.program
        V1, V2, errors = self.diagonal(program, sq1, sq2, self._hermite(module) if program.functions else None)
        tabA = self._stack(program, built.layout.tables, V1, 1, errors, N1)
        tabB = tabA if symmetric else self._stack(program, built.layout.tables, V2, 2, errors, N2)
        m, slots, LOOPS = built.out, built.layout.rows, built.layout.loops
        R1 = np.ascontiguousarray(np.array([V1[q] for q in slots]).reshape(len(slots), N1))
        R2 = R1 if symmetric else np.ascontiguousarray(np.array([V2[q] for q in slots]).reshape(len(slots), N2))
        if R1.shape[0] == 0:
            R1 = R2 = np.zeros((1, max(N1, N2)))
        same = equal_rows(X1, X2v)
        ia, ib = np.nonzero(same)
        rows = max(1, int(self.tile_mb * 2**20 // (16 * max(N2, 1))))
        direct = all(type(a) is np.ndarray and a.dtype == np.float64 and a.flags.c_contiguous for a in (K_out, T_out))
        worst = 0.0
        err = np.zeros(N1 if direct else min(rows, N1))
        entries = N1 * (N1 + 1) // 2 if symmetric else N1 * N2
        bar = progress_bar(total=entries, desc=f"kernel {N1} x {N2}", unit="entry", unit_scale=True, enabled=progress)
        for r0 in range(0, N1, rows):
            r1 = min(N1, r0 + rows)
            c0 = r0 if symmetric else 0
            if direct:  # the compiled loop runs on the whole (C-contiguous) outputs: one array layout
                Kb = K_out[r0:r1, c0:]
                np.matmul(X1[r0:r1], X2v[c0:].T, out=Kb)
                Kb /= d
                Tb = T_out[r0:r1, c0:]
                module.fused(K_out, T_out, r0, r1, 0, 0, symmetric, R1, R2, built.constants, LOOPS, *tabA, *tabB,
                             self.tol, err)
                worst = max(worst, float(err[r0:r1].max(initial=0.0)))
            else:
                Kb = X1[r0:r1] @ X2v[c0:].T
                Tb = np.empty_like(Kb)
                Kb /= d
                module.fused(Kb, Tb, 0, r1 - r0, r0, c0, symmetric, R1, R2, built.constants, LOOPS, *tabA, *tabB,
                             self.tol, err)
                worst = max(worst, float(err[:r1 - r0].max(initial=0.0)))
            if program.functions:
                worst = max(worst, self._finish(module, built, Kb, Tb, r0, c0, symmetric, same, X1, X2v,
                                                R1, R2, tabA, tabB))
            if not direct:
                K_out[r0:r1, c0:] = Kb
                T_out[r0:r1, c0:] = Tb
            bar.update((r1 - r0) * (N2 - c0) - ((r1 - r0) * (r1 - r0 - 1) // 2 if symmetric else 0))
        bar.close()
        if symmetric:
            from .runtime import mirror_upper

            for arr in (K_out, T_out):
                mirror_upper(np.asarray(arr))
        if ia.size:
            K_out[ia, ib], T_out[ia, ib] = V1[m.var][ia], V1[m.ntkd][ia]
        if not (np.isfinite(np.sum(K_out, dtype=np.float64)) and np.isfinite(np.sum(T_out, dtype=np.float64))):
            raise FloatingPointError("the kernel overflowed or produced NaN (variances grow without bound, or an "
                                     "expectation diverges)")
        info = {"quadrature_error": max(errors + [worst]), "compile_seconds": self.compile_seconds,
                "from_cache": self.from_cache, "tile_rows": rows, "key": built.key}
        return KernelResult(K_out, T_out, info, get=names)


    def _finish(self, module, built, Kb, Tb, r0, c0, symmetric, same, X1, X2, R1, R2, tabA, tabB) -> float:
        """Entries of a tile that the compiled series left NaN (a term would need more than ``max_order``
        terms): the same program in Python (``entry`` of the module), each term without closed form by its
        series where that is short enough, else by the compiled 2-D quadrature
        (:func:`ntk_theory.numerics.gauss_legendre.expect2_direct`), with their error estimates.  Returns the
        largest estimate."""
        from ..numerics import gauss_legendre
        from .runtime import hermite_term

        worst = 0.0
        rr, cc = np.nonzero(np.isnan(Kb) | np.isnan(Tb))
        if rr.size == 0:
            return worst
        f_by_table = {q: f for q, f, _, _ in built.program.tables.values()}
        f_of = [f_by_table[q] for q in built.layout.tables]

        def by_quadrature(q, i, j, k11, k22, k12, *tables):
            T, Td, e = hermite_term(q, i, j, k11, k22, k12, *tables)
            if not (np.isnan(T) or np.isnan(Td)):
                return T, Td, e
            f = f_of[q]
            kinks = getattr(module, f"KINKS_{f}")
            s, ds = getattr(module, f"s_{f}"), getattr(module, f"ds_{f}")
            T, eT = gauss_legendre.expect2_direct(s, s, k11, k22, k12, kinks, kinks)
            Td, eD = gauss_legendre.expect2_direct(ds, ds, k11, k22, k12, kinks, kinks)
            return T, Td, eT + eD

        d = X1.shape[1]
        for r, c in zip(rr.tolist(), cc.tolist()):
            i, j = r0 + r, c0 + c
            if (symmetric and j <= i) or same[i, j]:  # mirrored, or overwritten by the exact diagonal
                continue
            g = float(X1[i] @ X2[j]) / d
            Kb[r, c], Tb[r, c], e = module.entry(g, i, j, R1, R2, built.constants, built.layout.loops, *tabA, *tabB,
                                                 self.tol, by_quadrature)
            self.fallback_entries += 1
            worst = max(worst, e)
        return worst


def compiled_graph_kernel(description, **options) -> CompiledGraphKernel:
    """A :class:`CompiledGraphKernel`, shared by equal descriptions and options within a process."""
    layer = getattr(description, "description", description)
    key = (layer, tuple(sorted(options.items())))
    if key not in _KERNELS:
        _KERNELS[key] = CompiledGraphKernel(layer, **options)
    return _KERNELS[key]


_KERNELS: dict = {}
