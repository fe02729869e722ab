"""Sphinx configuration of the ntk-theory documentation.

Build (from the repository root, with ``pip install ".[docs]"``)::

    sphinx-build -W -n -b html docs docs/_build/html

``-W`` turns warnings into errors and ``-n`` checks every cross-reference (nitpicky).  The tutorials in
``docs/tutorials/`` are MyST notebooks executed at build time (cached with jupyter-cache in
``docs/_build/.jupyter_cache``, or ``$NTK_THEORY_DOCS_CACHE``); ``NTK_THEORY_DOCS_EXECUTE=off`` skips their execution.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.util import logging

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the package as checked out, also without an editable install

import ntk_theory  # noqa: E402

project = "ntk-theory"
author = "ntk-theory developers"
copyright = "the ntk-theory developers"  # noqa: A001
release = version = ntk_theory.__version__

extensions = [
    "myst_nb",                        # Markdown (MyST) pages and notebooks written as Markdown
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",                       # numpydoc-style sections of the docstrings
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",                  # the ntk-theory command, from ntk_theory.cli.build_parser
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "finite_width.md",                # included into conventions.md, not a page of its own
]
templates_path = ["api/_templates"]

# --- HTML ---------------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "ntk-theory"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
html_show_sourcelink = False

# --- MyST and notebooks ---------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off" if os.environ.get("NTK_THEORY_DOCS_EXECUTE") == "off" else "cache"
nb_execution_cache_path = os.environ.get("NTK_THEORY_DOCS_CACHE", str(HERE / "_build" / ".jupyter_cache"))
nb_execution_timeout = 180            # per cell; the tutorials run on small inputs (seconds each)
nb_execution_raise_on_error = True    # a failing tutorial fails the build
nb_execution_show_tb = True
nb_merge_streams = True

# --- API reference ------------------------------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False   # a module's members are its __all__
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "none"              # types are stated in the numpydoc sections
autodoc_member_order = "bysource"
numpydoc_show_class_members = False     # members are listed by the autosummary templates
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

# --- cross-references (-n) --------------------------------------------------------------------------------------
# The docs are built offline (no intersphinx inventories), so references to other projects' objects
# cannot resolve; they are named here rather than silenced wholesale.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|scipy|sympy|sp|mpmath|numba|matplotlib|argparse|pathlib|collections|typing"
               r"|dataclasses|enum|abc|concurrent|multiprocessing|os|io)(\..*)?"),
    (r"py:class", r"(int|float|complex|str|bytes|bool|dict|list|tuple|set|frozenset|object|type|callable"
                  r"|Callable|Sequence|Mapping|Iterable|Iterator|ndarray|array|array_like|optional|None)"),
    (r"py:exc", r"(ValueError|TypeError|KeyError|RuntimeError|FloatingPointError|ArithmeticError"
                r"|NotImplementedError|UserWarning|Warning|OSError|AttributeError|IndexError)"),
]
nitpick_ignore: list[tuple[str, str]] = []
suppress_warnings: list[str] = []


# --- API pages of the packages, generated from their __all__ --------------------------------------------------
#: the packages whose every name in ``__all__`` is documented (one page each, in docs/api/generated/)
API_PACKAGES = (
    "stax", "recursions", "codegen", "gaussian", "activations", "architecture", "finite_width", "empirical",
    "dynamics", "criticality", "reference", "montecarlo", "validation", "quantities",
)
API_GENERATED = HERE / "api" / "generated"


def _kind(obj) -> str | None:
    import inspect

    if inspect.ismodule(obj):
        return None                        # a subpackage listed in __all__ has its own page or none
    if inspect.isclass(obj):
        return "Exceptions and warnings" if issubclass(obj, BaseException) else "Classes"
    if callable(obj):
        return "Functions"
    return "Constants"


def write_package_pages() -> None:
    """``api/generated/ntk_theory.PKG.rst``: the package docstring and an autosummary table (with a page per
    name) of every name in its ``__all__``, grouped by kind.  Written before autosummary reads the sources,
    so the reference follows ``__all__`` without being copied into the docs."""
    import importlib

    API_GENERATED.mkdir(parents=True, exist_ok=True)
    for pkg in API_PACKAGES:
        name = f"ntk_theory.{pkg}"
        module = importlib.import_module(name)
        groups: dict[str, list[str]] = {}
        for member in module.__all__:
            kind = _kind(getattr(module, member))
            if kind is not None:
                groups.setdefault(kind, []).append(member)
        title = f"``{name}``"
        lines = [title, "=" * len(title), "", f".. automodule:: {name}", "   :no-members:", "",
                 f".. currentmodule:: {name}", ""]
        for kind in ("Functions", "Classes", "Exceptions and warnings", "Constants"):
            if kind not in groups:
                continue
            lines += [kind, "-" * len(kind), "", ".. autosummary::", "   :toctree: .", "   :nosignatures:"]
            if kind == "Classes":
                lines += ["   :template: class.rst"]
            lines += [""] + [f"   {m}" for m in groups[kind]] + [""]
        text = "\n".join(lines)
        path = API_GENERATED / f"{name}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


write_package_pages()



# --- references to real objects that have no page of their own -----------------------------------------------
#: pages written by hand (api/graph.rst, api/datasets.rst, api/conventions.rst) besides the generated ones
API_EXTRA = {
    "ntk_theory.recursions.graph": ("kernel",),
    "ntk_theory.codegen.graph": ("CompiledGraphKernel", "compiled_graph_kernel", "NotCompilable"),
    "ntk_theory.datasets": ("digits", "load_digits", "Split", "N_DIGITS"),
    "ntk_theory.conventions": ("learning_rate_factors", "PARAMETERIZATIONS"),
}
_MISSING = object()


def _lookup(name: str):
    """The object a dotted name denotes (importing ``ntk_theory`` modules as needed), else ``_MISSING``."""
    import importlib

    parts = name.split(".")
    for j in range(len(parts), 0, -1):
        modname = ".".join(parts[:j])
        if modname != "ntk_theory" and not modname.startswith("ntk_theory."):
            continue
        try:
            obj = importlib.import_module(modname)
        except ImportError:
            continue
        try:
            for attr in parts[j:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return _MISSING
        return obj
    return _MISSING


def _documented() -> dict[int, str]:
    """id of each documented module, class, function (and class member) -> the name of its page."""
    import importlib
    import inspect

    names = {f"ntk_theory.{pkg}": importlib.import_module(f"ntk_theory.{pkg}").__all__ for pkg in API_PACKAGES}
    names.update(API_EXTRA)
    index: dict[int, str] = {}
    for modname, members in names.items():
        module = importlib.import_module(modname)
        index.setdefault(id(module), modname)
        for member in members:
            obj = getattr(module, member)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue
            index.setdefault(id(obj), f"{modname}.{member}")
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if not attr.startswith("_"):
                        index.setdefault(id(value), f"{modname}.{member}.{attr}")
    return index


def resolve_undocumented(app, env, node, contnode):
    """A Python reference that Sphinx cannot resolve: if it names a real object of the package (looked up
    from the reference's module and class, then among the loaded ``ntk_theory`` modules), link it to the
    page where that object is documented under its public name, or, when it has none (a private helper
    module, a method without a docstring), show it as code without a link.  A name that denotes no object
    still fails the build (``-n -W``)."""
    import sys

    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    modname, clsname = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if modname:
        if clsname:
            candidates.append(f"{modname}.{clsname}.{target}")
        candidates.append(f"{modname}.{target}")
    source = str(node.source or "")             # "path:docstring of ntk_theory.module.object"
    if "docstring of " in source:
        owner = source.rpartition("docstring of ")[2].split(":")[0].split(".")
        candidates += [".".join(owner[:j] + [target]) for j in range(len(owner), 1, -1)]
    candidates.append(f"ntk_theory.{target}")
    obj = _MISSING
    for name in candidates:
        obj = _lookup(name)
        if obj is not _MISSING:
            break
    else:                                        # a name imported into the module that wrote the docstring
        head, _, rest = target.partition(".")
        if node.get("reftype") == "mod":         # a submodule named relative to its package
            import importlib.util

            packages = [k for k, m in list(sys.modules.items()) if k.startswith("ntk_theory") and hasattr(m, "__path__")]
            found_modules = [f"{k}.{target}" for k in packages if importlib.util.find_spec(f"{k}.{target}")]
            return contnode if len(found_modules) == 1 else None
        found = {id(o): o for o in (getattr(m, head, _MISSING) for k, m in list(sys.modules.items())
                                    if k.startswith("ntk_theory") and m is not None) if o is not _MISSING}
        if len(found) != 1:
            return None
        obj = next(iter(found.values()))
        for attr in filter(None, rest.split(".")):
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return None
    if not hasattr(app, "_ntk_documented"):
        app._ntk_documented = _documented()
    page = app._ntk_documented.get(id(obj))
    if page is not None:
        ref = env.domains["py"].resolve_any_xref(env, node["refdoc"], app.builder, page, node, contnode)
        if ref:
            return ref[0][1]
    return contnode


# --- docstring syntax in modules that other work is editing now ------------------------------------------------
#: object -> [(text, replacement)] applied to its docstring before it is parsed (autodoc-process-docstring):
#: reStructuredText syntax errors (``|x|`` read as a substitution) and ambiguous or unqualified references.
#: Each entry is to be fixed in the source and removed here (the build log says when its text no longer occurs).
DOCSTRING_PATCHES: dict[str, list[tuple[str, str]]] = {
}


def patch_docstring(app, what, name, obj, options, lines):
    module = getattr(obj, "__module__", None) if what != "module" else name
    qualname = getattr(obj, "__qualname__", None)
    real = f"{module}.{qualname}" if module and qualname and what != "module" else name
    for key in {name, real}:
        for old, new in DOCSTRING_PATCHES.get(key, ()):
            text = "\n".join(lines)
            if old not in text:
                logger.info(f"docs/conf.py DOCSTRING_PATCHES: {old!r} is no longer in the docstring of {key} "
                            "(fixed in the source?): remove the entry")
                continue
            lines[:] = text.replace(old, new).split("\n")


# --- the guides: every other Markdown page at the top of docs/ -------------------------------------------------
#: top-level pages that are not guides (finite_width.md is included into conventions.md)
NOT_GUIDES = {"index", "conventions", "finite_width"}


def list_guides(app, docname, source):
    """The Guides toctree of the index lists every top-level Markdown page of docs/ that is not in
    ``NOT_GUIDES`` (notes that other work adds there are picked up without editing the index)."""
    if docname != "index":
        return
    guides = sorted(p.stem for p in HERE.glob("*.md") if p.stem not in NOT_GUIDES)
    source[0] = source[0].replace("GUIDES\n", "".join(f"{g}\n" for g in guides))


# --- gallery: one page per script of papers/ and derivations/ ---------------------------------------------------
class GalleryScript(Directive):
    """``.. gallery-script:: papers/pdlt/relu_vertex.py`` (a path from the repository root): the script's
    docstring (what it computes, the published claim), how to run it, its committed figures (``:figures:``,
    names in the script's folder; default: the PNG files named like the script) and its source.  Nothing is
    run: the figures are the ones committed beside the script."""

    required_arguments = 1
    option_spec = {"figures": lambda text: text.split()}

    def run(self):
        import ast

        script = ROOT / self.arguments[0]
        text = script.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        figures = self.options.get("figures")
        if figures is None:
            figures = [p.name for p in sorted(script.parent.glob(script.stem + "*.png"))]
        run = nodes.paragraph()
        run += nodes.Text("Run: ")
        run += nodes.literal(text=f"python {self.arguments[0]}")
        result = [run, nodes.literal_block(doc, doc)]
        for fig in figures:                       # srcdir-absolute URI of the committed figure
            uri = "/../" + str((script.parent / fig).relative_to(ROOT))
            result.append(nodes.image(uri=uri, alt=fig, width="100%"))
        result.append(nodes.rubric(text="Source"))
        code = nodes.literal_block(text, text, language="python")
        code.source = str(script)
        result.append(code)
        return result


# --- the vocabulary table of ntk_theory.quantities, made at build time -------------------------------------------
class QuantitiesTable(Directive):
    """``.. quantities-table::`` -- every name of :mod:`ntk_theory.quantities` with its symbol, order in
    1/n, shape and meaning, read from the module when the docs are built."""

    has_content = False

    def run(self):
        from ntk_theory.quantities import QUANTITIES

        def cell(text):
            return f"``{text}``" if text else ""

        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 14 12 6 16 52", "",
                 "   * - name", "     - symbol", "     - order", "     - shape", "     - meaning"]
        for q in QUANTITIES.values():
            lines += [f"   * - {cell(q.name)}", f"     - {cell(q.symbol)}", f"     - {q.order or '--'}",
                      f"     - {cell(q.shape)}", f"     - {cell(q.meaning)}"]
        node = nodes.container()
        self.state.nested_parse(StringList(lines, source="ntk_theory.quantities"), self.content_offset, node)
        return node.children


def setup(app):
    app.add_directive("quantities-table", QuantitiesTable)
    app.add_directive("gallery-script", GalleryScript)
    app.connect("missing-reference", resolve_undocumented)
    app.connect("autodoc-process-docstring", patch_docstring)
    app.connect("source-read", list_guides)
    return {"parallel_read_safe": True}
