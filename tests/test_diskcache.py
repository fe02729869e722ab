"""The on-disk cache of derivations: written once, read back by later processes, robust to corrupt files."""

import os
import subprocess
import sys

import sympy as sp

from ntk_theory import diskcache

_DERIVE = ("from ntk_theory.gaussian import expectation; "
           "print(expectation('leaky_relu(1/3)').expr)")


def _run(env):
    return subprocess.run([sys.executable, "-c", _DERIVE], env=env, capture_output=True, text=True, check=True).stdout


def test_derivation_written_then_read_back(tmp_path):
    env = dict(os.environ, NTK_THEORY_CACHE=str(tmp_path))
    first = _run(env)
    files = sorted((tmp_path / "derivations").glob("pair_*.pkl"))
    assert files, "no derivation was written"
    stamp = [f.stat().st_mtime_ns for f in files]
    second = _run(env)
    assert sp.simplify(sp.sympify(first) - sp.sympify(second)) == 0
    assert [f.stat().st_mtime_ns for f in files] == stamp  # read, not rewritten
    for f in files:  # a corrupt file is recomputed and rewritten
        f.write_bytes(b"not a pickle")
    third = _run(env)
    assert sp.simplify(sp.sympify(first) - sp.sympify(third)) == 0
    assert all(f.read_bytes() != b"not a pickle" for f in files)


def test_memo_keys_and_unwritable_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NTK_THEORY_CACHE", str(tmp_path))
    calls = []
    assert diskcache.memo("t", "a", lambda: calls.append(1) or 1) == 1
    assert diskcache.memo("t", "a", lambda: calls.append(1) or 2) == 1
    assert diskcache.memo("t", "b", lambda: calls.append(1) or 3) == 3
    assert len(calls) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NTK_THEORY_CACHE", str(blocker))  # not a folder: the cache is skipped
    assert diskcache.memo("t", "a", lambda: 4) == 4
