"""The Examples sections of the numpydoc docstrings run as doctests.

Each example checks the code against something computed independently in the example itself: a closed
form written out by hand (the ReLU arc-cosine kernel, a linear network's kernel, the 2x2 solutions of
kernel gradient flow and the GP posterior, the ReLU output cumulant 15 L / n, ReLU's fixed points), scipy
quadrature (tanh's critical line and chi_perp), central finite differences
(the reference MLP's jvp, vjp and NTK), or an exact moment within the Monte Carlo standard error.

The objects are listed explicitly: the stax constructors are wrappers whose ``__module__`` is the
architecture module, so a module-wide ``doctest.testmod`` would not find them.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

#: module -> the names (dotted for members) whose docstring examples run
DOCUMENTED = {
    "ntk_theory.stax": ("serial", "parallel", "parse", "Dense", "Conv", "LayerNorm",
                        "Network.kernel_fn", "Network.init_fn", "Network.apply_fn"),
    "ntk_theory.stax.parse": ("",),  # the module docstring
    "ntk_theory.recursions.network": ("KernelRecursion", "kernel"),
    "ntk_theory.finite_width.predictions": ("finite_width",),
    "ntk_theory.dynamics.predict": ("MSEDynamics",),
    "ntk_theory.dynamics.ensemble": ("ensemble",),
    "ntk_theory.reference.network": ("MLP", "MLP.random", "MLP.jvp", "MLP.vjp", "MLP.ntk"),
    "ntk_theory.montecarlo.statistics": ("sample_statistics",),
    "ntk_theory.criticality": ("critical_line", "criticality", "fixed_points", "at", "iterate", "universality"),
}

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _object(module, name: str):
    obj = module
    for part in filter(None, name.split(".")):
        obj = getattr(obj, part)
    return obj


CASES = [(mod, name) for mod, names in DOCUMENTED.items() for name in names]


@pytest.mark.parametrize("module_name, name", CASES, ids=[f"{m}:{n}" if n else m for m, n in CASES])
def test_docstring_examples(module_name, name):
    module = importlib.import_module(module_name)
    obj = _object(module, name)
    label = f"{module_name}.{name}" if name else module_name
    tests = doctest.DocTestFinder(recurse=False).find(obj, label, module=False, globs=dict(vars(module)))
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0, f"{label} has no docstring examples"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {label} failed (output above)"
