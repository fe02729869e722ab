"""SymPy expressions as Numba-compilable Python source (SymPy's ``PythonCodePrinter``, extended).

:func:`numba_code` prints one expression: ``math`` functions fully qualified, floats as their
``repr``, ``Max`` as nested ``max``, ``Heaviside(z)`` as a branch with H(0) = 1/2, and the stable
forms' helper functions ``det2``, ``erfcx``, ``atan2`` (:mod:`ntk_theory.gaussian.stable`) as calls of
the compiled twins that generated kernel modules import (:mod:`ntk_theory.numerics.compensated_numba`,
:mod:`ntk_theory.codegen.runtime`).  Before printing, :func:`ntk_theory.jit.overflow.overflow_safe` rewrites
log(1 + exp(a)) and exp(m a) / (1 + exp(a))^k into ``log1pexp`` and ``logistic``, printed inline in ``math``
so that no intermediate overflows where the value is finite.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .overflow import numba_log1pexp, numba_logistic, overflow_safe


class NumbaPrinter(PythonCodePrinter):
    """SymPy's Python printer with the toolkit's functions and plain names for symbols.

    Parameters
    ----------
    settings : dict or None, default None
        SymPy printer settings (:func:`numba_code` uses ``{"standard": "python3",
        "fully_qualified_modules": True}``).

    Examples
    --------
    >>> import sympy as sp
    >>> from ntk_theory.jit import NumbaPrinter
    >>> z = sp.Symbol("z", real=True)
    >>> NumbaPrinter().doprint(sp.Max(z, 1, -z))
    'max(max(1.0, z), -z)'
    """

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

    def _print_log1pexp(self, e):
        return numba_log1pexp(self._print(e.args[0]))

    def _print_logistic(self, e):
        return numba_logistic(self._print(e.args[0]))

    def _print_Float(self, e):
        return repr(float(e))

    def _print_Heaviside(self, e):
        z = self._print(e.args[0])
        return f"(1.0 if {z} > 0 else (0.0 if {z} < 0 else 0.5))"


def numba_code(expr: sp.Expr) -> str:
    """Python source of ``expr`` that ``numba.njit`` compiles (see the module docstring).

    Parameters
    ----------
    expr : sympy.Expr
        The expression.

    Returns
    -------
    str
        A Python expression over the expression's symbols (by name) and ``math``.

    Examples
    --------
    The printed code, evaluated as Python, equals SymPy's value (Heaviside(0) = 1/2):

    >>> import math
    >>> import sympy as sp
    >>> from ntk_theory.jit import numba_code
    >>> z = sp.Symbol("z", real=True)
    >>> e = sp.tanh(z) * sp.Max(z, 0) + sp.Heaviside(z)
    >>> numba_code(e)
    'math.tanh(z)*max(0.0, z) + (1.0 if z > 0 else (0.0 if z < 0 else 0.5))'
    >>> [eval(numba_code(e), {"math": math, "z": v}) == float(e.subs(z, v)) for v in (0.3, -0.3)]
    [True, True]
    >>> eval(numba_code(sp.Heaviside(z)), {"z": 0.0})
    0.5
    """
    return NumbaPrinter({"standard": "python3", "fully_qualified_modules": True}).doprint(overflow_safe(expr))
