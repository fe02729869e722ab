"""A derivation: the tree of rule applications that produced a closed form, printable as text or LaTeX."""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

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
            rows.append(f"{'  ' * depth}- [{s.rule}] {lhs} = {display_text(s.result)}" + (f"   ({s.note})" if s.note else ""))
        return "\n".join(rows)

    def latex(self, max_depth: int = 6) -> str:
        rows = []
        for depth, s in self.lines(max_depth=max_depth):
            indent = r"\quad " * depth
            note = rf"\quad\text{{({s.note})}}" if s.note else ""
            rows.append(rf"{indent}\text{{[{s.rule}]}}\; {s.lhs} = {display_latex(s.result)}{note}")
        return r"\begin{array}{l}" + r" \\ ".join(rows) + r"\end{array}"


def _latex_to_text(s: str) -> str:
    for a, b in ((r"\theta", "theta"), (r"\delta", "delta"), (r"\left", ""), (r"\right", ""), (r"\,", " "), ("\\", "")):
        s = s.replace(a, b)
    return s
