"""The README's quick start is exactly two commands, and CI runs its test command; its Python examples compile,
the stax examples of the reference network and the finite-width corrections run as written, and its IPython
sessions (``In [n]:`` / ``Out[n]:``) run as doctests: every cell runs, and its ``Out`` and printed lines are
compared with what the code shows (whitespace normalised, ``...`` elides)."""

import doctest
import importlib.util
import io
import re
from contextlib import redirect_stdout
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


# --------------------------------------------------------------------------- the IPython sessions as doctests
#: cells that derive or compile cold for many seconds (x*erf(x), the GELU network): the slow set runs them
SLOW_CELLS = ('expectation("x*erf(x)")', "stax.Gelu()")


def sessions() -> list:
    """The README's IPython blocks, each a list of cells ``(source, expected output)``: ``In [n]:`` starts a
    cell, ``...:`` continues its source, ``Out[n]:`` and any other line are what it shows."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if not re.search(r"^In \[\d+\]:", block, re.M):
            continue
        cells = []
        for line in block.splitlines():
            if m := re.match(r"In \[\d+\]: ?(.*)", line):
                cells.append(([m.group(1)], []))
            elif m := re.match(r"\s+\.\.\.: ?(.*)", line):
                cells[-1][0].append(m.group(1))
            else:
                cells[-1][1].append(re.sub(r"^Out\[\d+\]: ?", "", line))
        found.append([("\n".join(src), "\n".join(out)) for src, out in cells])
    return found


def run_cell(source: str, env: dict) -> str:
    """Run a cell as IPython does: an expression shows its repr (None shows nothing; its value is kept in
    ``env["Out"][source]``), printed text is shown."""
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        try:
            code = compile(source, "README.md", "eval")
        except SyntaxError:
            exec(compile(source, "README.md", "exec"), env)
            shown = None
        else:
            shown = eval(code, env)
            env.setdefault("Out", {})[source] = shown
    return buffer.getvalue() + ("" if shown is None else repr(shown) + "\n")


def run_sessions(skip=(), edit=lambda source: source) -> dict:
    """Run the three sessions in one namespace (with small inputs X, X1, X2), cell by cell, comparing each cell's
    expected output; a cell containing a ``skip`` marker ends its session (later cells build on it)."""
    rng = np.random.default_rng(0)
    env = {"X1": rng.standard_normal((3, 10)), "X2": rng.standard_normal((2, 10)),
           "X": np.array([[1.0, 0.0, 0.5], [0.2, -0.7, 1.0]])}
    checker = doctest.OutputChecker()
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    blocks = sessions()
    assert len(blocks) == 3
    for cells in blocks:
        for source, want in cells:
            if any(marker in source for marker in skip):
                break  # the rest of the session builds on this cell
            got = run_cell(edit(source), env)
            if want.strip():
                assert checker.check_output(want.strip() + "\n", got, flags), (
                    f"README cell {source!r}:\n" + checker.output_difference(doctest.Example(source, want + "\n"), got, flags))
    return env


def test_readme_sessions_run_as_doctests(tmp_path):
    """Every cell up to the slow ones (the check with 2000 networks per width instead of 20 000; its plot only with
    matplotlib, into a temporary file)."""
    plot = importlib.util.find_spec("matplotlib") is not None

    def edit(source):
        source = source.replace("samples=20_000", "samples=2000")
        return source.replace('report.plot("check.png")', f"report.plot({str(tmp_path / 'check.png')!r})" if plot else "None")

    env = run_sessions(skip=SLOW_CELLS, edit=edit)
    assert env["report"].passed
    assert env["f"].shape == (3, 1) and env["nngp"].shape == env["ntk"].shape == (3, 2)


@pytest.mark.slow
def test_readme_sessions_run_in_full(tmp_path, monkeypatch):
    """Every cell (the check with 6000 networks per width, its plot into a temporary directory), and the session's
    claims: the 50-digit mpmath kernel and the MLP shorthand give the float64 kernel of the stax network."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    env = run_sessions(edit=lambda source: source.replace("samples=20_000", "samples=6000"))
    mp = np.asarray(next(v for s, v in env["Out"].items() if "dps=50" in s), dtype=float)
    np.testing.assert_allclose(env["K"], mp, rtol=1e-12)
    short = env["KernelRecursion"]("gelu", depth=3, C_W=1.69, C_b=0.04)(env["X"])
    np.testing.assert_allclose(short.nngp, env["K"], rtol=1e-12)
    np.testing.assert_allclose(short.ntk, env["Theta"], rtol=1e-12)
