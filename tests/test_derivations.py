"""Each derivation script runs, and its derived closed forms agree with the published ones it cites."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted(p for p in (Path(__file__).parent.parent / "derivations").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_derivation_script_agrees_with_publication(script):
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=script.parent)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "agrees" in run.stdout and "DISAGREES" not in run.stdout
