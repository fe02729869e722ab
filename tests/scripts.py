"""Load a standalone script of the repository (papers/, examples/) as a module, by its path, for the tests that
check it (the scripts are not a package: each runs alone by its path)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str):
    """The module of ``ROOT / relative_path``, executed under the module name ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
