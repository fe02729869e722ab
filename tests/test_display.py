"""Objects a researcher looks at in IPython show themselves: LaTeX, readable text and repr."""

import sympy as sp

from ntk_theory.activations import activation
from ntk_theory.gaussian import expectation
from ntk_theory.recursions import KernelRecursion


def test_closed_form_shows_its_derivation():
    e = expectation("relu")
    latex = e._repr_latex_()
    assert latex.startswith("$") and r"\operatorname{asin}" in latex and "price" in latex
    text = e.text()
    assert "derived by rules" in text and "[dirac_delta]" in text and "theta(u)" in text
    assert "ClosedForm(" in repr(e) and "price" in repr(e)
    # the LaTeX is valid enough for SymPy's parser to read the closed form back
    assert sp.latex(e.expr) in latex


def test_numerical_expectation_says_why():
    e = expectation("tanh")
    assert not e.is_closed_form
    assert "numerical quadrature" in e.latex() and "price" in e.text()


def test_activation_and_recursion_display():
    act = activation("gelu")
    assert "erf" in act._repr_latex_() and "gelu" in repr(act)
    rec = KernelRecursion("erf", 3, C_W=1.5, C_b=0.1)
    latex = rec._repr_latex_()
    assert r"\Theta" in latex and r"\lambda_{W}" in latex and "K_{ab}" in latex
    assert "KernelRecursion(erf; depth=3" in repr(rec)
    m = rec.layer_maps()[0]
    assert "Theta'_ab = " in m.text()
