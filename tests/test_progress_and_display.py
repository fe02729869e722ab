"""Progress bars only on a terminal; derive's plain text and LaTeX; criticality without spurious warnings;
the README's derivation example as printed."""

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import ntk_theory.progress as progress
from ntk_theory.cli import main

ROOT = Path(__file__).resolve().parent.parent


class _Terminal(io.StringIO):
    def isatty(self):
        return True


# ----------------------------------------------------------------------------- progress
def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    for stream, expected in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        assert progress.enabled_for(None) is expected
        assert list(progress.progress_bar(range(3), desc="work", enabled=None)) == [0, 1, 2]
        assert ("work" in stream.getvalue()) is expected
    stream = _Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    list(progress.progress_bar(range(3), desc="work", enabled=False))
    assert stream.getvalue() == ""


def test_cli_bars_follow_the_terminal_and_quiet(monkeypatch, tmp_path):
    """`ntk-theory sample > log 2>&1` must not fill the log with bars; on a terminal they appear."""
    monkeypatch.setattr(progress, "DELAY", 0.0)
    argv = ["sample", "relu", "--depth", "1", "--width", "8", "--samples", "4096", "--batches", "4"]
    for stream, extra, expected in ((io.StringIO(), [], False), (_Terminal(), [], True), (_Terminal(), ["--quiet"], False)):
        monkeypatch.setattr("sys.stderr", stream)
        assert main(argv + extra) == 0
        assert ("networks" in stream.getvalue()) is expected, stream.getvalue()


def test_four_point_progress_hook_leaves_values_unchanged(monkeypatch):
    from ntk_theory.gaussian.fourpoint import four_point_moments

    monkeypatch.setattr(progress, "DELAY", 0.0)
    K = np.array([[1.0, 0.3, -0.2], [0.3, 1.4, 0.5], [-0.2, 0.5, 0.8]])
    stream = _Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    bars = []
    make = progress.progress_bar
    monkeypatch.setattr(progress, "progress_bar", lambda *a, **k: bars.append(make(*a, **k)) or bars[-1])
    with_bar = four_point_moments("relu", K, progress=True)
    assert "four-point moments, 3 inputs" in stream.getvalue()
    assert bars[0].n == bars[0].total == 7  # 3 + 3 + 1 input sets, each ticked once
    without = four_point_moments("relu", K, progress=False)
    for name in ("ssss", "ddss", "dddd"):
        assert np.array_equal(getattr(with_bar, name), getattr(without, name))


# ----------------------------------------------------------------------------- derive
def _derive(capsys, *args):
    assert main(["derive", *args]) == 0
    return capsys.readouterr().out


def test_plain_text_has_no_latex(capsys):
    for args in (("tanh", "--finite-width", "--depth", "2"), ("relu", "--finite-width"), ("erf",), ("relu",)):
        out = _derive(capsys, *args)
        assert "\\" not in out, [line for line in out.splitlines() if "\\" in line]
    out = _derive(capsys, "tanh", "--finite-width")
    assert "K1' = K_1*<s^2>'(K) + V*<s^2>''(K)/2" in out


def test_latex_lines_are_delimited(capsys):
    for args in (("relu", "--latex"), ("erf", "--latex", "--depth", "2"), ("relu", "--finite-width", "--latex")):
        lines = [line for line in _derive(capsys, *args).splitlines() if line.strip()]
        assert lines and all(line.startswith("% ") or (line.startswith("$$ ") and line.endswith(" $$"))
                             for line in lines), lines


def test_depth_prints_the_iterates(capsys):
    """ReLU with C_W = 2, C_b = 0, param ntk (lambda_b = 0, lambda_W = 2), one input: E[relu(u)^2] = K/2 and
    E[step(u)^2] = 1/2 give K(l) = 2 G0 and Theta(l) = 2 G0 + Theta(l-1) = 2 l G0."""
    one, three = _derive(capsys, "relu", "--depth", "1"), _derive(capsys, "relu", "--depth", "3")
    assert one != three
    out = _derive(capsys, "relu", "--depth", "3", "--C-W", "2", "--C-b", "0")
    G0 = sp.Symbol("G_0", positive=True)
    found = {}
    for m in re.finditer(r"layer (\d): K = (.+), Theta = (.+)", out):
        found[int(m.group(1))] = (sp.sympify(m.group(2), locals={"G_0": G0}), sp.sympify(m.group(3), locals={"G_0": G0}))
    assert sorted(found) == [1, 2, 3, 4]
    for l, (K, Th) in found.items():
        assert sp.simplify(K - 2 * G0) == 0 and sp.simplify(Th - 2 * l * G0) == 0


def test_readme_derivation_example_matches_what_is_printed():
    from ntk_theory.gaussian import expectation

    text = (ROOT / "README.md").read_text()
    block = re.search(r"print\(e\.derivation\.text\(max_depth=(\d)\)\).*\n((?:- .*\n|  +- .*\n)+)", text)
    assert block, "README example not found"
    shown = [line.split(" = ")[0] for line in block.group(2).splitlines()]
    printed = [line.split(" = ")[0] for line in expectation("relu").derivation.text(max_depth=int(block.group(1))).splitlines()]
    assert shown == printed


# ----------------------------------------------------------------------------- criticality
def test_criticality_tanh_without_spurious_integration_warning(capsys):
    """scipy flagged a tail panel (integrand ~1e-15) of <s'^2> at K = 158 although the total was accurate."""
    from scipy.integrate import IntegrationWarning

    from ntk_theory.criticality import criticality
    from ntk_theory.criticality.moments import Moments

    with warnings.catch_warnings():
        warnings.simplefilter("error", IntegrationWarning)
        res = criticality("tanh")
        assert main(["criticality", "tanh"]) == 0
    assert float(res.points[0].C_W) == 1.0
    assert capsys.readouterr().err == ""
    # numerics: the float64 moments there against the same quadrature at 30 digits (Moments.mp); the
    # moments themselves against mpmath.quad: test_criticality.py, test_one_input_moments.py
    m = Moments("tanh")
    K = 158.48931924611142
    for a, b in zip(m.f64(K), m.mp(K, 30)):
        assert a == pytest.approx(float(b), rel=1e-11)
