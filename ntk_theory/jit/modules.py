"""On-disk cache of generated modules (kernels, compiled activations), safe for concurrent processes
and corrupt files.

A generated module is written to ``<cache dir>/kernel_<hash>.py`` (hash of its source) and
imported from there, so Numba's ``cache=True`` stores the machine code beside it
(``__pycache__/*.nbi, *.nbc``).  The first line of the file is the checksum of the rest: a file
that does not match (a partial or corrupted write) is rewritten.  Files are written to a
temporary name and renamed atomically, so two processes compiling the same kernel never see a
half-written module.  If loading Numba's cache fails, its files for that module are removed and
the kernel is compiled again.

The directory is :func:`ntk_theory.diskcache.cache_dir` (``$NTK_THEORY_CACHE`` or ``~/.cache/ntk-theory/kernels``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from .. import diskcache


def cache_dir() -> Path:
    return diskcache.cache_dir()


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def module_path(key: str) -> Path:
    return cache_dir() / f"kernel_{key}.py"


def write_module(key: str, source: str) -> Path:
    """Write the module for ``key`` unless an intact copy exists; returns its path."""
    path = module_path(key)
    header = f"# sha256: {_checksum(source)}\n"
    if path.exists():
        try:
            text = path.read_text()
            if text.startswith(header) and text[len(header):] == source:
                return path
        except (OSError, UnicodeDecodeError):
            pass
    diskcache.atomic_write(path, (header + source).encode())
    return path


def clear_numba_cache(key: str) -> int:
    """Remove Numba's cache files of one generated module; returns how many were removed."""
    removed = 0
    pycache = cache_dir() / "__pycache__"
    if pycache.exists():
        for f in pycache.glob(f"kernel_{key}.*"):
            try:
                f.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def import_module(key: str, source: str):
    """Write (if needed) and import the generated module for ``key``."""
    path = write_module(key, source)
    name = f"ntk_theory_kernel_{key}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module
