"""The Examples sections of the numpydoc docstrings of every public name run as doctests.

Each example checks the code against something computed independently in the example itself: a closed
form written out by hand (the ReLU arc-cosine kernel, a linear network's kernel, the 2x2 solutions of
kernel gradient flow and the GP posterior, the ReLU output cumulant 15 L / n, ReLU's fixed points), scipy
quadrature (tanh's critical line and chi_perp), central finite differences
(the reference MLP's jvp, vjp and NTK), or an exact moment within the Monte Carlo standard error.

The names are found, not listed: every function and class in the ``__all__`` of the packages below (the
public API the documentation renders), with the public methods of the classes, and the module docstrings.
The stax constructors are wrappers whose ``__module__`` is the architecture module, so the objects are taken
from the package namespace rather than from ``doctest.testmod`` of their modules.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import sys

import pytest

#: the packages whose ``__all__`` is the public API (docs/api)
PACKAGES = ("activations", "architecture", "codegen", "criticality", "distributed", "dynamics", "empirical",
            "finite_width", "gaussian", "jit", "montecarlo", "quantities", "recursions", "reference", "stax",
            "validation")
#: packages whose examples need optional modules (the distributed extra): skipped without them
REQUIRES = {"distributed": ("dask", "distributed", "zarr")}
#: modules whose own docstring carries examples
MODULES = ("ntk_theory.stax.parse", "ntk_theory.docstrings")

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _globals(package, obj) -> dict:
    """The names an example sees: its package's, then those of the module that defines the object."""
    return {**vars(package), **vars(sys.modules.get(obj.__module__, package))}


def _public_objects():
    """(label, object, globals) of every public function, class and public method with a docstring example."""
    found, seen = [], set()
    for package in PACKAGES:
        if any(importlib.util.find_spec(name) is None for name in REQUIRES.get(package, ())):
            continue  # an optional extra (dask for distributed) is not installed: its package imports lazily
        try:
            module = importlib.import_module(f"ntk_theory.{package}")
        except ImportError:
            continue
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isfunction(getattr(obj, "__wrapped__", None))) \
                    or id(obj) in seen:  # functools.lru_cache wrappers too
                continue
            seen.add(id(obj))
            found.append((f"ntk_theory.{package}.{name}", obj, _globals(module, obj)))
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                    func = func.fget if isinstance(func, property) else func
                    if member.startswith("_") or not callable(func) or id(func) in seen:
                        continue
                    seen.add(id(func))
                    found.append((f"ntk_theory.{package}.{name}.{member}", func, _globals(module, obj)))
    for name in MODULES:
        module = importlib.import_module(name)
        found.append((name, module, dict(vars(module))))
    return [(label, obj, globs) for label, obj, globs in found
            if ">>>" in (getattr(obj, "__doc__", None) or "")]


CASES = _public_objects()


@pytest.mark.parametrize("label, obj, globs", CASES, ids=[c[0] for c in CASES])
def test_docstring_examples(label, obj, globs):
    tests = doctest.DocTestFinder(recurse=False).find(obj, label, module=False, globs=globs)
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0, f"{label} has no docstring examples"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {label} failed (output above)"
