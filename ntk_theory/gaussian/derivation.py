"""A derivation: the tree of rule applications that produced a closed form, printable as text or LaTeX.

:func:`plain_text` prints any SymPy expression of the toolkit without LaTeX: symbols and placeholder
functions named in LaTeX (``\\Theta``, ``\\langle \\sigma^2 \\rangle``) become ``Theta``, ``<s^2>``, and
derivatives of one-variable placeholders primes, ``<s^2>''(K)`` = d^2<s^2>/dK^2.  :func:`latex_display` wraps LaTeX in display-math
delimiters (``$$ ... $$``, read by LaTeX, MathJax, KaTeX and Jupyter alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.str import StrPrinter

from .display import display_latex, display_text


@dataclass(frozen=True)
class Step:
    """One rule application: ``lhs = result`` by ``rule``, from the sub-results ``children``."""

    rule: str
    lhs: str  # LaTeX of the quantity computed, e.g. r"E[\theta(u)\theta(v)]"
    result: sp.Expr
    note: str = ""  # the rule as applied, in words
    children: tuple = field(default=())
    lhs_text: str = ""  # the same as plain text

    def rules(self) -> set[str]:
        """Names of every rule used anywhere in this derivation."""
        out = {self.rule}
        for c in self.children:
            out |= c.rules()
        return out

    def lines(self, depth: int = 0, max_depth: int = 6) -> list[tuple[int, "Step"]]:
        out = [(depth, self)]
        if depth < max_depth:
            for c in self.children:
                out.extend(c.lines(depth + 1, max_depth))
        return out

    def text(self, max_depth: int = 6) -> str:
        rows = []
        for depth, s in self.lines(max_depth=max_depth):
            lhs = s.lhs_text or _latex_to_text(s.lhs)
            rows.append(f"{'  ' * depth}- [{s.rule}] {lhs} = {display_text(s.result, plain_text)}" + (f"   ({s.note})" if s.note else ""))
        return "\n".join(rows)

    def latex(self, max_depth: int = 6) -> str:
        rows = []
        for depth, s in self.lines(max_depth=max_depth):
            indent = r"\quad " * depth
            note = rf"\quad\text{{({s.note})}}" if s.note else ""
            rows.append(rf"{indent}\text{{[{s.rule}]}}\; {s.lhs} = {display_latex(s.result)}{note}")
        return r"\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}"


#: LaTeX fragments and their plain-text spelling, applied in this order
_TEXT = ((r"\langle ", "<"), (r" \rangle", ">"), (r"\langle", "<"), (r"\rangle", ">"), (r"\sigma", "s"),
         (r"\Theta", "Theta"), (r"\theta", "theta"), (r"\delta", "delta"), (r"\lambda", "lambda"),
         (r"\left", ""), (r"\right", ""), (r"\,", " "), ("\\", ""), ("{", ""), ("}", ""))


def _latex_to_text(s: str) -> str:
    for a, b in _TEXT:
        s = s.replace(a, b)
    return s


class _PlainPrinter(StrPrinter):
    """SymPy's str printer with LaTeX-named symbols and functions spelled in plain text."""

    def _print_Symbol(self, expr):
        return _latex_to_text(expr.name)

    def _print_Function(self, expr):
        if isinstance(expr, AppliedUndef):
            return f"{_latex_to_text(expr.func.__name__)}({self.stringify(expr.args, ', ')})"
        return super()._print_Function(expr)

    def _print_Derivative(self, expr):
        f = expr.expr
        if isinstance(f, AppliedUndef) and len(expr.variable_count) == len(f.args) == 1:
            order = expr.variable_count[0][1]
            return f"{_latex_to_text(f.func.__name__)}{chr(39) * order}({self._print(f.args[0])})"
        return super()._print_Derivative(expr)


def plain_text(expr) -> str:
    """``expr`` as plain text (SymPy's str form, LaTeX-named symbols spelled out; module docstring)."""
    return _PlainPrinter().doprint(expr)


def latex_display(latex: str) -> str:
    """One display-math line: ``$$ latex $$``."""
    return f"$$ {latex} $$"
