"""The documentation builds with warnings as errors and every cross-reference checked (``-W -n``), the
tutorials executed (skipped without the docs extra: ``pip install ".[docs]"``)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    # a fresh output and execution cache: every tutorial runs (about 1-2 minutes on 2 cores)
    cmd = [sys.executable, "-m", "sphinx", "-E", "-W", "-n", "-b", "html", str(ROOT / "docs"), str(tmp_path / "html")]
    env = {**__import__("os").environ, "NTK_THEORY_DOCS_CACHE": str(tmp_path / "jupyter_cache")}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    html = tmp_path / "html"
    # the generated parts are there: a name from each package's __all__, the CLI, the quantities table
    assert (html / "api" / "generated" / "ntk_theory.stax.Dense.html").exists()
    assert "finite-width" in (html / "api" / "cli.html").read_text()
    assert "ntk_correction" in (html / "conventions.html").read_text()
    assert (html / "_images" / "relu_vertex.png").exists()
