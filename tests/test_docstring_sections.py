"""Every public function and class (the ``__all__`` of the packages below) has numpydoc sections.

- ``Examples`` always (they run as doctests in ``test_docstring_examples.py``);
- ``Parameters`` when it takes arguments (a class: its constructor's);
- ``Returns`` (or ``Yields``) for a function that returns something.

Whether a function takes arguments or returns something is read from the code (its signature; its return
annotation, else whether its source has a ``return <value>`` or ``yield``), not from the docstring, so the
check is independent of the text it checks.  ``EXCEPTIONS`` lists the names still lacking a section.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap

import pytest

#: the packages whose public names are checked (another package: append it here)
PACKAGES = ("stax", "architecture", "activations", "gaussian", "recursions", "codegen", "jit", "quantities",
            "criticality", "finite_width", "distributed", "dynamics", "empirical", "montecarlo", "reference",
            "validation")

#: ``ntk_theory.<package>.<name>`` -> the sections it may lack (names not yet documented)
EXCEPTIONS: dict[str, set[str]] = {}


def _section(doc: str, title: str) -> bool:
    return re.search(rf"^\s*{title}\n\s*-{{3,}}\s*$", doc, re.MULTILINE) is not None


def _takes_arguments(obj) -> bool:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    params = list(signature.parameters.values())
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        # an exception's inherited constructor, (*args, **kwargs): its message
        params = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return bool(params)


def _returns_something(func) -> bool:
    if hasattr(func, "__wrapped__"):          # a wrapper around a constructor: returns what it builds
        return True
    annotation = inspect.signature(func).return_annotation
    if annotation is not inspect.Signature.empty:
        return annotation not in (None, "None")
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    body = tree.body[0]

    def own_nodes(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            yield child
            yield from own_nodes(child)

    return any(isinstance(n, (ast.Yield, ast.YieldFrom)) or isinstance(n, ast.Return) and n.value is not None
               for n in own_nodes(body))


def _public():
    found, seen = [], set()
    for package in PACKAGES:
        module = importlib.import_module(f"ntk_theory.{package}")
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            found.append((f"ntk_theory.{package}.{name}", obj))
    return found


CASES = _public()


def _missing(obj) -> set[str]:
    doc = inspect.getdoc(obj) or ""
    missing = set()
    if not _section(doc, "Examples"):
        missing.add("Examples")
    if _takes_arguments(obj) and not _section(doc, "Parameters"):
        missing.add("Parameters")
    if inspect.isfunction(obj) and _returns_something(obj) and not (_section(doc, "Returns") or _section(doc, "Yields")):
        missing.add("Returns")
    return missing


@pytest.mark.parametrize("label, obj", CASES, ids=[c[0] for c in CASES])
def test_numpydoc_sections(label, obj):
    missing = _missing(obj) - EXCEPTIONS.get(label, set())
    assert not missing, f"{label}'s docstring lacks the numpydoc section(s) {sorted(missing)}"


def test_exceptions_are_current():
    """An exception that no longer applies (the section was written) is removed from the list."""
    labels = dict(CASES)
    stale = {label: sorted(sections - _missing(labels[label]) if label in labels else sections)
             for label, sections in EXCEPTIONS.items()
             if label not in labels or sections - _missing(labels[label])}
    assert not stale, f"remove these from EXCEPTIONS, they are documented now: {stale}"
