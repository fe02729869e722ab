"""Shared by the derivation scripts: print a derived closed form next to a published one and compare."""

from __future__ import annotations

import random

import mpmath
import sympy as sp

from ntk_theory.gaussian import expectation, k11, k12, k22


def compare(label: str, activation, published: sp.Expr, citation: str, derivative: int = 0, digits: int = 40) -> bool:
    """Derive E[s(u) s(v)] (or of s'), print it with its derivation, and check it equals ``published``
    at random admissible (k11, k22, k12), rho = 0 and |rho| -> 1, to ``digits`` - 5 digits."""
    e = expectation(activation, derivative=derivative, deltas=True)
    print(f"== {label}")
    print(f"derived:   {sp.sstr(e.expr)}")
    print(f"           {e.source}")
    print(e.derivation.text(max_depth=3))
    print(f"published: {sp.sstr(published)}    [{citation}]")
    rng = random.Random(1)
    points = [(1.0, 1.0, 0.0), (0.5, 2.0, 0.999999 * 1.0), (1.3, 0.7, -0.95 * (1.3 * 0.7) ** 0.5)]
    points += [(a, b, rng.uniform(-0.99, 0.99) * (a * b) ** 0.5) for a, b in ((rng.uniform(0.1, 3), rng.uniform(0.1, 3)) for _ in range(5))]
    worst = 0.0
    with mpmath.workdps(digits):
        for a, b, c in points:
            subs = {k11: sp.Float(a, digits), k22: sp.Float(b, digits), k12: sp.Float(c, digits)}
            d, p = sp.N(e.expr.subs(subs), digits), sp.N(published.subs(subs), digits)
            worst = max(worst, float(abs(d - p) / max(abs(p), sp.Float(1e-30))))
    ok = worst < 10 ** -(digits - 5)
    print(f"max relative difference at {len(points)} points, {digits} digits: {worst:.1e}  ->  {'agrees' if ok else 'DISAGREES'}\n")
    return ok


def theta() -> sp.Expr:
    """The angle between the two inputs, arccos(k12 / sqrt(k11 k22))."""
    return sp.acos(k12 / sp.sqrt(k11 * k22))
