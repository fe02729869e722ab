r"""Cost model of the three empirical-NTK methods: FLOPs, elementwise traffic and memory as formulas.

The formulas count what :mod:`ntk_theory.empirical.ntk` does, term by term, following the analysis
of Novak, Sohl-Dickstein, Schoenholz 2022 ("Fast Finite Width Neural Tangent Kernel", section 3) for
dense networks.  Two kinds of work are counted separately, because they run at very different rates:
**FLOPs** of dense matrix products (2 per multiply-add, BLAS) and **elements** written by elementwise
array passes (broadcast products, scalings, additions), which are memory-bound.  The predicted time
is ``FLOPs / FLOP_RATE + elements / ELEMENT_RATE``; ``auto`` picks the smallest.  It is the steady
state: the first time a process touches memory it never used before, writes are 10-20x slower on the
development VM (pages faulted in from the hypervisor), a one-time cost the model leaves out.

Notation (PDLT): widths ``n_0 .. n_L`` (input and L hidden layers), ``n_(L+1) = O`` outputs, layer
``l = 1 .. L+1`` holds ``W(l)`` (n_l x n_(l-1)) and ``b(l)``::

    P = sum_l n_l (n_(l-1) + 1)        parameters;  p_l = n_l (n_(l-1) + 1)
    F = sum_l n_l n_(l-1)              multiply-adds of a forward pass per input ([FP] = 2F FLOPs)
    S = sum_(l<=L+1) n_l,  H = sum_(l<=L) n_l      (all and hidden widths)
    N_f = N (X2 = None) or N1 + N2     inputs whose per-input quantities are computed
    pairs = N (N + 1) / 2 (X2 = None: blocks j >= i, symmetric products in diagonal blocks) or N1 N2
    O_c = O with the trace over outputs, O^2 for the full (N1, N2, O, O) kernel
    B = inputs per block (memory-bounded batching);  n_max = max_l n_l
    R(x) = O n_L + sum_(l<L) O n_l [FLOPs 2 O n_(l+1) n_l]   reverse pass of the O output cotangents

Per method (``FLOPs | elements``)::

    every method   forward pass            2 F N_f                         | N_f (3 H + O)

    jacobian_contraction (forward-mode Jacobians as MLP.jacobian, blocks J(l) = delta(l) (x) a(l-1),
                   then J1 Lambda J2^T)
      push unit tangents of z(l)   N_f sum_l sum_(m>=l+2) 2 n_m n_(m-1) n_l
                                   | N_f sum_l [n_(l+1) n_l + sum_(m>=l+2) n_(m-1) n_l + O n_l]
                                   (the first step W(l+1) [s' * e_j] = s'_j W(l+1)[:, j] is elementwise;
                                   ~ (L-1)(L-2) n^3 FLOPs per input at width n)
      form J blocks                | O F (N_f + X2 blocks formed again for later X1 blocks)
      contract                     2 pairs O_c P                    | 4 (L+1) pairs O_c + 2 N1 N2 O_c
      memory (floats)  N_f (2 H + n_0 + O n_max) + 2 B_p n_max^2 + j B O max_l p_l + B^2 O_c
                       (B_p = inputs per push, n_max^2 B_p floats within WORKING_SET; j = 1 or 2 reused
                       J block buffers: X1's, and X2's unless X2 = X1 fits one block)

    ntk_vector_products (Theta e_(b,q) = J1 Lambda J2^T e_(b,q): a hand-written VJP, then a JVP, for
                   each of the N2 O output cotangents; J never formed, a parameter tangent per cotangent)
      VJP (reverse pass)           N2 R(x)
      tangents Lambda J2^T e       | N2 O P
      JVP over X1                  pairs_B O (4 F - 2 n_1 n_0)      | pairs_B O 3 S
                                   (pairs_B = N1 N2, or ~ N (N + B) / 2 for X2 = X1: rows up to the end
                                   of each block of B cotangent inputs)
      assemble                     | pairs_B O_c + 2 N1 N2 O_c
      memory (floats)  2 N1 S + B O (P + S) + 3 B_1 B O n_max
                       (B also capped: B O P within TANGENT_SET; rows per JVP B_1: 3 B_1 B O n_max
                       within WORKING_SET)

    structured (per dense layer Theta_l = (delta1 . delta2) * (lambda_b + lambda_W / n_(l-1) a1 . a2))
      reverse pass delta(l)        N_f R(x)
      delta grams                  2 pairs O_c H
      activation grams             2 pairs (n_0 + H)
      combine                      | pairs [2 (L+1) + 2 L O_c + 2 O_c] + 2 N1 N2 O_c
      memory (floats)  N_f (2 H + n_0 + O H) + B^2 (2 O_c + 2)

Leading orders for L hidden layers of width n: Jacobian contraction ``N L^2 n^3 + N^2 O_c L n^2``,
NTK-vector products ``N^2 O L n^2``, structured ``N O L n^2 + N^2 O_c L n``; the paper's table has the
same structure, with reverse-mode Jacobians ``N O [FP]`` in place of the forward-mode push.  The
output ``N1 N2 O_c`` is held in every method and is not counted against the memory budget; memory
figures are in bytes of the working dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import _checks

METHODS = ("jacobian_contraction", "ntk_vector_products", "structured")
DEFAULT_MEMORY = 2 * 2**30  # bytes of intermediates the batching aims to stay under
WORKING_SET = 32 * 2**20  # bytes of per-step temporaries beyond which larger blocks gain nothing (measured)
TANGENT_SET = 256 * 2**20  # bytes of NTK-vector-product tangents per block (beyond: memory, no speed)
# Rates measured on the development machine (2-core AMD EPYC VM, OpenBLAS, float64): dense products run
# at 50-100 GFLOP/s; elementwise passes write 0.7-3 G elements/s (the lower end for arrays beyond the
# cache).  Only their ratio matters for ``auto`` and for the predicted scaling exponents.
FLOP_RATE = 60e9
ELEMENT_RATE = 1e9


@dataclass(frozen=True)
class Problem:
    """The sizes that determine the cost: widths (n_0, ..., n_L, O), N1, N2, symmetry, trace, dtype."""

    widths: tuple
    n1: int
    n2: int
    symmetric: bool
    trace: bool
    itemsize: int = 8

    @classmethod
    def of(cls, net_or_widths, n1: int, n2: int | None = None, trace_outputs: bool = True, dtype=np.float64):
        """From an MLPSpec, an object with ``.spec`` or ``.widths``, or a widths tuple; ``n2=None``: X2 = X1."""
        widths = net_or_widths
        for attr in ("spec", "widths"):
            if hasattr(widths, attr):
                widths = getattr(widths, attr)
        widths = tuple(_checks.positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))
        if len(widths) < 3:
            raise ValueError(f"widths must be (input_dim, hidden widths..., output_dim); got {widths}")
        n1 = _checks.positive_int("N1", n1)
        symmetric = n2 is None
        n2 = n1 if symmetric else _checks.positive_int("N2", n2)
        return cls(widths, n1, n2, symmetric, bool(trace_outputs), np.dtype(dtype).itemsize)

    # ---------------------------------------------------------------- derived sizes
    @property
    def L(self) -> int:
        return len(self.widths) - 2

    @property
    def O(self) -> int:
        return self.widths[-1]

    @property
    def layer_params(self) -> list:
        return [n * (m + 1) for m, n in zip(self.widths[:-1], self.widths[1:])]

    @property
    def P(self) -> int:
        return sum(self.layer_params)

    @property
    def F(self) -> int:
        return sum(m * n for m, n in zip(self.widths[:-1], self.widths[1:]))

    @property
    def S(self) -> int:
        return sum(self.widths[1:])

    @property
    def H(self) -> int:
        return sum(self.widths[1:-1])

    @property
    def n_feat(self) -> int:
        return self.n1 if self.symmetric else self.n1 + self.n2

    @property
    def pairs(self) -> float:
        return self.n1 * (self.n1 + 1) / 2 if self.symmetric else float(self.n1 * self.n2)

    @property
    def Oc(self) -> int:
        return self.O if self.trace else self.O**2

    @property
    def n_max(self) -> int:
        return max(self.widths[1:])

    @property
    def out_elements(self) -> float:
        return float(self.n1) * self.n2 * self.Oc

    def forward_pass(self, n: float) -> tuple:
        return 2.0 * self.F * n, n * (3.0 * self.H + self.O)

    def reverse_pass(self, n: float) -> tuple:
        """delta(l) = (delta(l+1) W(l+1)) * s'(z(l)) for the O output cotangents of n inputs."""
        w, L, O = self.widths, self.L, self.O
        return (n * sum(2.0 * O * w[l + 1] * w[l] for l in range(1, L)),
                n * (O * w[L] + sum(O * w[l] for l in range(1, L))))


def _blocks(n: int, B: int) -> list:
    return [min(B, n - s) for s in range(0, n, B)]


@dataclass(frozen=True)
class JacobianContraction:
    """Forward-mode Jacobians (pushing unit tangents of every z(l) to the output), contracted."""

    name: ClassVar[str] = "jacobian_contraction"
    leading: ClassVar[str] = "N L^2 n^3 + N^2 O_c L n^2"

    def terms(self, p: Problem, B: int) -> dict:
        w, L, O = p.widths, p.L, p.O
        push_flops = sum(2.0 * w[m] * w[m - 1] * w[l] for l in range(1, L + 1) for m in range(l + 2, L + 2))
        push_elems = sum(w[l + 1] * w[l] + O * w[l] + sum(w[m - 1] * w[l] for m in range(l + 2, L + 2))
                         for l in range(1, L + 1))
        if p.symmetric:
            sizes = _blocks(p.n1, B)
            formed = p.n1 + sum(sizes[j] * j for j in range(len(sizes)))  # block j formed again for i < j
        else:
            formed = p.n1 + len(_blocks(p.n1, B)) * p.n2
        return {
            "forward pass": p.forward_pass(p.n_feat),
            "push tangents df/dz": (push_flops * p.n_feat, float(push_elems) * p.n_feat),
            "form J blocks": (0.0, float(O) * p.F * formed),
            "contract J Lambda J^T": (2.0 * p.pairs * p.Oc * p.P, 4.0 * (L + 1) * p.pairs * p.Oc + 2 * p.out_elements),
        }

    def push_block(self, p: Problem) -> int:
        """Inputs per forward-mode push: the pushed tangents (n_max, B_p, n_l) stay within WORKING_SET."""
        return max(1, WORKING_SET // (p.n_max**2 * p.itemsize))

    def memory(self, p: Problem, B: int) -> float:
        stored = p.n_feat * (2 * p.H + p.widths[0] + p.O * p.n_max)
        push = 2.0 * min(B, self.push_block(p)) * p.n_max**2
        blocks = 1 if p.symmetric and B >= p.n1 else 2  # J block buffers: X1's, and X2's unless X2 = X1 in one block
        return stored + push + blocks * B * p.O * max(p.layer_params) + float(B) ** 2 * p.Oc

    def efficient_block(self, p: Problem) -> int | None:
        return None


@dataclass(frozen=True)
class NTKVectorProducts:
    """Theta e_(b,q) = J1 Lambda J2^T e_(b,q): a VJP then a JVP per output cotangent, J never formed."""

    name: ClassVar[str] = "ntk_vector_products"
    leading: ClassVar[str] = "N^2 O L n^2"

    @staticmethod
    def pairs(p: Problem, B: int) -> float:
        """(input, cotangent-input) pairs pushed: X2 = X1 takes the rows up to the end of each block."""
        if not p.symmetric:
            return float(p.n1) * p.n2
        return float(sum(min(s + B, p.n1) * min(B, p.n1 - s) for s in range(0, p.n1, B)))

    def terms(self, p: Problem, B: int) -> dict:
        w, O = p.widths, p.O
        pairs = self.pairs(p, B)
        return {
            "forward pass": p.forward_pass(p.n_feat),
            "VJP (reverse pass)": p.reverse_pass(p.n2),
            "tangents Lambda J^T e": (0.0, float(p.n2) * O * p.P),
            "JVP": (pairs * O * (4.0 * p.F - 2.0 * w[1] * w[0]), pairs * O * 3.0 * p.S),
            "assemble": (0.0, pairs * p.Oc + 2 * p.out_elements),
        }

    def jvp_rows(self, p: Problem, B: int) -> int:
        """Rows of X1 per JVP: its (B1, B O, n) temporaries within WORKING_SET."""
        return max(1, int(WORKING_SET // (3 * B * p.O * p.n_max * p.itemsize)))

    def memory(self, p: Problem, B: int) -> float:
        B1 = min(self.jvp_rows(p, B), p.n1)
        return 2.0 * p.n1 * p.S + B * p.O * (p.P + p.S) + 3.0 * B1 * B * p.O * p.n_max

    def efficient_block(self, p: Problem) -> int | None:
        """The tangents of a block, B O P floats, within TANGENT_SET: larger blocks only cost memory."""
        return max(1, int(TANGENT_SET // (p.O * (p.P + p.S) * p.itemsize)))


@dataclass(frozen=True)
class Structured:
    """Per layer (delta1 delta2^T) * (lambda_b + lambda_W / n_(l-1) a1 a2^T), no per-parameter Jacobian."""

    name: ClassVar[str] = "structured"
    leading: ClassVar[str] = "N O L n^2 + N^2 O_c L n"

    def terms(self, p: Problem, B: int) -> dict:
        L = p.L
        return {
            "forward pass": p.forward_pass(p.n_feat),
            "reverse pass delta": p.reverse_pass(p.n_feat),
            "delta grams": (2.0 * p.pairs * p.Oc * p.H, 0.0),
            "activation grams": (2.0 * p.pairs * (p.widths[0] + p.H), 0.0),
            "combine": (0.0, p.pairs * (2.0 * (L + 1) + 2.0 * L * p.Oc + 2.0 * p.Oc) + 2 * p.out_elements),
        }

    def memory(self, p: Problem, B: int) -> float:
        stored = p.n_feat * (2 * p.H + p.widths[0] + p.O * p.H)
        return stored + float(B) ** 2 * (2 * p.Oc + 2)

    def efficient_block(self, p: Problem) -> int | None:
        return None


COSTS = {c.name: c for c in (JacobianContraction(), NTKVectorProducts(), Structured())}


@dataclass(frozen=True)
class Estimate:
    """The model's prediction for one method at block size ``block``: FLOPs and elements (by term),
    predicted seconds, bytes of intermediates (batched and unbatched) and of the output."""

    method: str
    flops: float
    elements: float
    seconds: float
    terms: dict
    memory: float
    memory_unbatched: float
    output_bytes: float
    block: int


def block_size(method: str, p: Problem, max_memory: float = DEFAULT_MEMORY) -> int:
    """The largest number of inputs per block whose intermediates fit in ``max_memory`` bytes (at least 1),
    no larger than the method's cache-friendly block if it has one, then evened out over the blocks."""
    cost = _cost(method)
    n_all = max(p.n1, p.n2)
    cap = cost.efficient_block(p)
    lo, hi = 1, n_all if cap is None else min(n_all, cap)
    while lo < hi:  # memory is increasing in B: bisect for the largest B that fits
        mid = (lo + hi + 1) // 2
        if cost.memory(p, mid) * p.itemsize <= max_memory:
            lo = mid
        else:
            hi = mid - 1
    return math.ceil(n_all / math.ceil(n_all / lo))  # equal blocks: 256 in blocks of 128, not 254 + 2


def estimate(method: str, p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> Estimate:
    """Evaluate one method's formulas; ``block=None`` uses :func:`block_size` under ``max_memory``."""
    cost = _cost(method)
    n_all = max(p.n1, p.n2)
    B = block_size(method, p, max_memory) if block is None else min(_checks.positive_int("batch_size", block), n_all)
    terms = cost.terms(p, B)
    flops = float(sum(f for f, _ in terms.values()))
    elements = float(sum(e for _, e in terms.values()))
    memory, output = cost.memory(p, B) * p.itemsize, p.out_elements * p.itemsize
    return Estimate(
        method=method,
        flops=flops,
        elements=elements,
        seconds=flops / FLOP_RATE + elements / ELEMENT_RATE,
        terms=terms,
        memory=memory,
        memory_unbatched=cost.memory(p, n_all) * p.itemsize,
        output_bytes=output,
        block=B,
    )


def estimates(p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> list:
    """:func:`estimate` for every method, in :data:`METHODS` order."""
    return [estimate(m, p, block, max_memory) for m in METHODS]


def choose_method(p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> str:
    """What ``method="auto"`` runs: the smallest predicted time (every method is batched to fit memory)."""
    return min(estimates(p, block, max_memory), key=lambda e: e.seconds).method


def _cost(method: str):
    try:
        return COSTS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(map(repr, METHODS))}") from None


def _si(x: float) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}"
    return f"{x:.3g}"


def _bytes(x: float) -> str:
    for factor, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if x >= factor:
            return f"{x / factor:.3g} {unit}"
    return f"{x:.0f} B"


def _seconds(t: float) -> str:
    return f"{t:.3g} s" if t >= 1 else f"{t * 1e3:.3g} ms"


def cost_table(p: Problem, block: int | None = None, max_memory: float = DEFAULT_MEMORY) -> str:
    """A printable table: per method FLOPs, elements, predicted time, memory batched and unbatched."""
    rows = estimates(p, block, max_memory)
    chosen = min(rows, key=lambda e: e.seconds).method
    kind = f"trace over {p.O} outputs" if p.trace else f"full ({p.n1}, {p.n2}, {p.O}, {p.O}) kernel"
    x2 = "X2 = X1" if p.symmetric else f"N2 = {p.n2}"
    lines = [
        f"empirical NTK cost model: widths {p.widths} (L = {p.L} hidden layers, P = {p.P:,} parameters), "
        f"N1 = {p.n1}, {x2}, {kind}, {p.itemsize * 8}-bit",
        f"memory budget for intermediates {_bytes(max_memory)}; the output itself is {_bytes(p.out_elements * p.itemsize)}; "
        f"time = FLOPs / {FLOP_RATE / 1e9:.0f} GFLOP/s + elements / {ELEMENT_RATE / 1e9:.0f} G/s",
        "",
        f"{'method':<22} {'FLOPs':>9} {'elements':>9} {'time':>9} {'memory':>10} {'block':>6} {'unbatched':>10}"
        "   leading order",
    ]
    for e in rows:
        mark = "  <- auto" if e.method == chosen else ""
        lines.append(
            f"{e.method:<22} {_si(e.flops):>9} {_si(e.elements):>9} {_seconds(e.seconds):>9} {_bytes(e.memory):>10} "
            f"{e.block:>6} {_bytes(e.memory_unbatched):>10}   {COSTS[e.method].leading}{mark}"
        )
    lines.append("")
    lines.append("terms (FLOPs | elements):")
    for e in rows:
        lines.append(f"  {e.method}: " + "; ".join(f"{k} {_si(f)} | {_si(el)}" for k, (f, el) in e.terms.items()))
    lines.append(f"auto chooses: {chosen}")
    return "\n".join(lines)
