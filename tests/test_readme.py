"""The README's quick start is exactly two commands, and CI runs its test command; its Python examples compile,
and the stax examples of the reference network and the finite-width corrections run as written."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_command():
    commands = quick_start_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.startswith("pip install") and "ntk-theory" in main_job
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def python_examples():
    """The README's ```python blocks as code (IPython prompts ``In [n]:`` / ``...:`` stripped, ``Out`` lines dropped)."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if re.search(r"^In \[\d+\]:", block, re.M):
            lines = []
            for line in block.splitlines():
                if m := re.match(r"In \[\d+\]: ?(.*)", line):
                    lines.append(m.group(1))
                elif m := re.match(r"\s+\.\.\.: ?(.*)", line):
                    lines.append(m.group(1))
            block = "\n".join(lines)
        blocks.append(block)
    return blocks


def test_python_examples_compile():
    blocks = python_examples()
    assert len(blocks) >= 8
    for block in blocks:
        compile(block, "README.md", "exec")


def _example(marker: str) -> str:
    found = [b for b in python_examples() if marker in b]
    assert len(found) == 1, marker
    return found[0]


def test_stax_reference_network_example_runs():
    """The reference-network / Monte Carlo block as written, with fewer networks."""
    code = _example("sample_kernels(with_width").replace("samples=4000", "samples=256")
    env = {}
    exec(compile(code, "README.md", "exec"), env)
    assert env["mc"]["nngp"].value.shape == (4, 4)


@pytest.mark.slow
def test_finite_width_example_runs():
    """The finite-width block at two inputs: the stax network and the MLP shorthand written beside it give the
    same predictions to rounding (W_std = 1.2 squares to 1.4399999999999999, the shorthand's C_W is 1.44)."""
    X = np.array([[1.0, 0.0, 0.5], [0.2, -0.7, 1.0]])
    env = {"X": X}
    exec(compile(_example("finite_width(net, X)"), "README.md", "exec"), env)
    shorthand = env["finite_width"]("tanh", X, depth=3, C_W=1.44, C_b=0.09)
    for name, value in shorthand.arrays().items():
        ours = np.asarray(env["p"].arrays()[name])
        if np.issubdtype(np.asarray(value).dtype, np.number):
            np.testing.assert_allclose(ours, value, rtol=1e-12, atol=1e-14 * np.max(np.abs(value)), err_msg=name)
        else:
            assert np.array_equal(ours, value), name
    assert type(env["recursion_for"](env["res"])).__name__ == "ResidualRecursion"
