"""The on-disk cache of ntk-theory: its folder and atomic writes.

The folder is ``$NTK_THEORY_CACHE`` or ``~/.cache/ntk-theory/kernels``; generated kernel modules
live in it (:mod:`ntk_theory.codegen.cache`), derivations in its ``derivations/`` subfolder
(:func:`memo`).  Files are written to a temporary name and renamed, so concurrent processes never
read a half-written file; a file that cannot be read back is treated as missing and rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from pathlib import Path


def cache_dir(sub: str | None = None) -> Path:
    """The cache folder (created if missing), or its subfolder ``sub``."""
    root = os.environ.get("NTK_THEORY_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "ntk-theory" / "kernels"
    if sub:
        path = path / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def source_fingerprint(*paths: Path) -> str:
    """sha256 of the given files' bytes (and of every .py file in the given folders): a cache key
    part that changes whenever the code that produced a cached value changes."""
    h = hashlib.sha256()
    for p in paths:
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """:func:`source_fingerprint` of the whole ntk_theory package and SymPy's version: the key part
    of every cached derivation (any change of the code that derives invalidates them all)."""
    import sympy

    return source_fingerprint(Path(__file__).parent) + "|sympy " + sympy.__version__


def memo(kind: str, key: str, compute):
    """``compute()``, pickled under ``derivations/<kind>_<sha256(key)>.pkl`` and read back by later
    calls with the same key (in any process).  The key must name everything the value depends on,
    code included (:func:`source_fingerprint`).  Unreadable or unwritable cache files are ignored:
    the value is computed as if there were no cache."""
    key = code_fingerprint() + "|" + key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    try:
        path = cache_dir("derivations") / f"{kind}_{digest}.pkl"
    except OSError:
        return compute()
    try:
        with open(path, "rb") as fh:
            stored_key, value = pickle.load(fh)
        if stored_key == key:
            return value
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError, TypeError):
        pass
    value = compute()
    try:
        atomic_write(path, pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL))
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass
    return value
