"""Imports go down the pipeline and never up; no private name crosses a package boundary.

Every module of ``ntk_theory`` is parsed with ``ast`` (module-level and function-local imports, absolute and
relative) and each import of another ``ntk_theory`` package is checked against the layer graph below, the
pipeline of the README's Layout section. A package may import the packages it lists and, transitively, what
those list; anything else (a higher layer, or a sibling pipeline: the reference network and its Monte Carlo
stay independent of the symbolic layers they check) fails, naming the module, line and import.  An imported
name that starts with an underscore, or ``module._name`` of a module imported from another package, fails too.

The modules at the root of ``ntk_theory`` (``conventions``, ``quantities``, ``defaults``, ``progress``,
``diskcache``, ``_checks``, ``docstrings``) form the base layer: every package may import them, and ``_checks`` is
the whole project's shared argument checks, private to ``ntk_theory`` rather than to one package; ``docstrings``
fills shared docstring sections and imports nothing of the project. The ``cli`` module is
the top: it may import everything.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import ntk_theory

ROOT = Path(ntk_theory.__file__).parent

#: the root modules every package may import (the base layer)
BASE = {"__init__", "conventions", "quantities", "defaults", "progress", "diskcache", "_checks", "datasets", "docstrings"}

#: each package and the packages directly below it, which it may import (and, transitively, what they may import)
LAYERS = """
activations:   jit
architecture:  activations
jit:
numerics:
blocks:
gaussian:      activations jit numerics
recursions:    architecture gaussian blocks
codegen:       recursions
finite_width:  recursions
criticality:   recursions
reference:     architecture
montecarlo:    reference
empirical:     reference
dynamics:      empirical finite_width
validation:    montecarlo dynamics
distributed:   codegen finite_width
stax:          codegen reference distributed
cli:           stax validation criticality
"""
BELOW = {name.strip(): set(below.split()) for name, below in
         (line.split(":") for line in LAYERS.strip().splitlines())}

#: (importing module, imported package) pairs that break the layering on purpose, each with its reason
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


@functools.cache
def allowed(package):
    """The packages ``package`` may import: the transitive closure of BELOW."""
    seen, todo = set(), list(BELOW[package])
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(BELOW[p])
    return seen


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(dotted):
    """The layer of a dotted ntk_theory name: its subpackage, ``cli``, or ``None`` for the base modules."""
    parts = dotted.split(".")
    if len(parts) < 2 or parts[1] in BASE:
        return None
    return parts[1]


def root_attribute(name):
    """The module behind ``from ntk_theory import name``: a submodule, or a lazily imported name's module."""
    if (ROOT / name).is_dir() or (ROOT / f"{name}.py").exists():
        return f"ntk_theory.{name}"
    lazy = getattr(ntk_theory, "_LAZY", {})
    return lazy[name][0] if name in lazy else "ntk_theory"


@functools.cache
def parsed(path):
    return ast.parse(path.read_text(), str(path))


def imports(path):
    """Yield (line, dotted module, imported name or None) for every ntk_theory import in the file."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ntk_theory":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ntk_theory":
                continue
            for alias in node.names:
                if target == "ntk_theory":
                    yield node.lineno, root_attribute(alias.name), None
                else:
                    yield node.lineno, target, alias.name


def is_module(dotted):
    """Whether the dotted ntk_theory name is a module or package (a file or folder under ROOT)."""
    where = ROOT.joinpath(*dotted.split(".")[1:])
    return where.is_dir() or where.with_suffix(".py").exists()


def private_attributes(path):
    """Yield (line, module, attribute) for every ``module._name`` where ``module`` was bound by an import of an
    ntk_theory module (``from ..recursions import graph``, ``import ntk_theory.x as y``)."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    tree = parsed(path)
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = module.split(".")
            base = base if is_package else base[:-1]
            target = (".".join(base[:len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            for alias in node.names:
                if target.split(".")[0] == "ntk_theory" and is_module(f"{target}.{alias.name}"):
                    bound[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ntk_theory" and alias.asname:
                    bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield node.lineno, bound[node.value.id], node.attr


def violations(path):
    module = module_name(path)
    own = package_of(module)
    found = []
    for line, target, name in imports(path):
        other = package_of(target)
        if other is None or other == own:
            continue
        where = f"{module}:{line} imports {target}{'.' + name if name else ''}"
        if (module, other) in KNOWN_EXCEPTIONS:
            continue
        if own is None:
            found.append(f"{where}: a base module imports the {other} layer")
        elif other not in allowed(own):
            found.append(f"{where}: {other} is not below {own}")
        private = [p for p in target.split(".")[2:] + ([name] if name else []) if p.startswith("_")
                   and not p.startswith("__")]
        if private:
            found.append(f"{where}: private name {private[0]} of another package")
    for line, target, attribute in private_attributes(path):
        other = package_of(target)
        if other is not None and other != own:
            found.append(f"{module}:{line} uses {target}.{attribute}: private name of another package")
    return found


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_package_is_placed():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} | {"cli"}
    unplaced = packages - {"datasets"} - set(BELOW)
    assert not unplaced, f"place {sorted(unplaced)} in LAYERS"
    for package in BELOW:
        assert package not in allowed(package), f"{package} lies below itself"


def test_imports_go_down_the_layers():
    found = [v for path in MODULES for v in violations(path)]
    assert not found, "\n".join(found)


def test_known_exceptions_are_still_needed():
    for module, other in KNOWN_EXCEPTIONS:
        path = ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        assert any(package_of(t) == other for _, t, _ in imports(path)), (module, other)


def test_the_checker_sees_known_imports_and_flags_a_violation(tmp_path, monkeypatch):
    # independent of the layer graph: imports that are in the source text, found by the parser
    found = {t for _, t, _ in imports(ROOT / "gaussian" / "bivariate.py")}
    assert any(t.startswith("ntk_theory.numerics") for t in found)
    local = {t for _, t, _ in imports(ROOT / "stax" / "network.py")}
    assert any(t.startswith("ntk_theory.codegen") for t in local)  # a function-local import
    # a synthetic module of numerics that imports gaussian (up) and a private name of recursions
    fake_root = tmp_path / "ntk_theory"
    (fake_root / "numerics").mkdir(parents=True)
    bad = fake_root / "numerics" / "bad.py"
    bad.write_text("def f():\n    from ..gaussian import rules\n    from ntk_theory.recursions.graph import _x\n"
                   "    from ..codegen import emit\n    return emit._power\n")
    (fake_root / "codegen").mkdir()
    (fake_root / "codegen" / "emit.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake_root)
    messages = violations(bad)
    assert any("gaussian is not below numerics" in m for m in messages), messages
    assert any("recursions is not below numerics" in m for m in messages), messages
    assert any("private name _x" in m for m in messages), messages
    assert any("ntk_theory.codegen.emit._power: private name" in m for m in messages), messages

