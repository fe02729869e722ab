"""SymPy expressions as Numba-compilable Python source (SymPy's ``PythonCodePrinter``, extended).

:func:`numba_code` prints one expression: ``math`` functions fully qualified, floats as their
``repr``, ``Max`` as nested ``max``, ``Heaviside(z)`` as a branch with H(0) = 1/2, and the stable
forms' helper functions ``det2``, ``erfcx``, ``atan2`` (:mod:`ntk_theory.gaussian.stable`) as calls of
the compiled twins that generated kernel modules import (:mod:`ntk_theory.numerics.compensated_numba`,
:mod:`ntk_theory.codegen.runtime`).
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter


class NumbaPrinter(PythonCodePrinter):
    """SymPy's Python printer with the toolkit's functions and plain names for symbols."""

    def _print_det2(self, e):
        return "det2(" + ", ".join(self._print(a) for a in e.args) + ")"

    def _print_erfcx(self, e):
        return f"erfcx({self._print(e.args[0])})"

    def _nested(self, name, e):
        """name(name(a, b), c) ...: Python's max/min of two floats (integers printed as floats)."""
        args = [self._print(sp.Float(a) if a.is_Integer else a) for a in e.args]
        out = args[0]
        for a in args[1:]:
            out = f"{name}({out}, {a})"
        return out

    def _print_Max(self, e):
        return self._nested("max", e)

    def _print_Min(self, e):
        return self._nested("min", e)

    def _print_atan2(self, e):
        return "atan2(" + ", ".join(self._print(a) for a in e.args) + ")"

    def _print_Float(self, e):
        return repr(float(e))

    def _print_Heaviside(self, e):
        z = self._print(e.args[0])
        return f"(1.0 if {z} > 0 else (0.0 if {z} < 0 else 0.5))"


def numba_code(expr: sp.Expr) -> str:
    """Python source of ``expr`` that ``numba.njit`` compiles (see the module docstring)."""
    return NumbaPrinter({"standard": "python3", "fully_qualified_modules": True}).doprint(expr)
