"""Shared helpers for benchmarks: machine description and writing one section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def best_of(fn, repeats: int = 3, warm_up: bool = False, slow: float = float("inf")):
    """``(best wall time of repeats calls, the last result)``.  ``warm_up``: one untimed call first (it also
    pays the process's first use of its memory); if that call took longer than ``slow`` seconds, one timed
    call follows instead of ``repeats``."""
    result = None
    if warm_up:
        t0 = time.perf_counter()
        result = fn()
        if time.perf_counter() - t0 > slow:
            repeats = 1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def machine() -> str:
    """One line: CPU model, cores, Python and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        cpu = m.group(1).strip() if m else cpu
    except (OSError, subprocess.CalledProcessError):
        pass
    import numpy
    import scipy

    versions = [f"Python {platform.python_version()}", f"NumPy {numpy.__version__}", f"SciPy {scipy.__version__}"]
    try:
        import numba

        versions.append(f"Numba {numba.__version__}")
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; " + ", ".join(versions)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name -->`` markers in BENCHMARKS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    command = "python " + " ".join([Path(sys.argv[0]).as_posix().split("/work/main/")[-1], *sys.argv[1:]])
    block = f"{start}\n{body.rstrip()}\n\nMachine: {machine()}.  \nCommand: `{command}` ({date.today().isoformat()}).\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n\nEach section is written by the script named in it.\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
    print(f"wrote section {name!r} of {BENCHMARKS_MD}")
