"""The command line: runs on defaults, writes its output, fails cleanly on bad input."""

import json
import sys

import numpy as np
import pytest
from cli_errors import one_error_line as _one_error_line

from ntk_theory.cli import main
from ntk_theory.defaults import default_inputs
from ntk_theory.montecarlo import MonteCarloResult


def test_default_inputs_are_normalised():
    X = default_inputs()
    assert X.shape == (2, 2)
    assert np.allclose((X * X).sum(1) / 2, 1.0)
    assert np.isclose(X[0] @ X[1] / 2, 0.5)  # cos 60 degrees


def test_sample_writes_npz_and_json(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    out = tmp_path / "stats.npz"
    rc = main(["sample", "tanh", "--depth", "2", "--width", "16", "--C-W", "1.5", "--C-b", "0.1",
               "--param", "ntk", "--x", str(x), "--samples", "640", "--seed", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ntk_mean" in printed and "+-" in printed
    res = MonteCarloResult.load(out)
    assert res.info["widths"] == [3, 16, 16, 1] and res.info["activation"] == "tanh"
    out_json = tmp_path / "stats.json"
    rc = main(["sample", "relu", "--depth", "2", "--width", "8,4", "--C-W", "2,2,1", "--samples", "100",
               "--batches", "4", "--out", str(out_json), "--quiet"])
    assert rc == 0
    assert json.loads(out_json.read_text())["info"]["widths"] == [2, 8, 4, 1]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["sample", "notanactivation", "--samples", "100", "--quiet"]) == 2
    assert "unknown activation 'notanactivation'" in capsys.readouterr().err
    assert main(["sample", "--depth", "0", "--quiet"]) == 2
    assert "depth must be an integer >= 1" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[1.0, np.nan]]))
    assert main(["sample", "--x", str(bad), "--quiet"]) == 2
    assert "non-finite" in capsys.readouterr().err
    assert main(["sample", "--x", str(tmp_path / "missing.npy"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_check_derive_and_kernel_commands(tmp_path, capsys):
    """The main job: derive, evaluate, compare with Monte Carlo extrapolated to infinite width."""
    assert main(["check", "erf", "--depth", "2", "--C-W", "1.5", "--C-b", "0.1", "--widths", "32,64,128",
                 "--samples", "4000", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "E[Theta]" in out and "float64 vs independent quadrature" in out
    assert "mpmath" not in out  # 30-digit mpmath only on request (--mp-check)
    assert main(["derive", "relu"]) == 0
    out = capsys.readouterr().out
    assert "derived by rules" in out and "asin" in out and "Theta'_ab" in out
    x1 = tmp_path / "x1.npy"
    np.save(x1, np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]]))
    out_file = tmp_path / "k.npz"
    assert main(["kernel", "x*erf(x)", "--depth", "2", "--C-W", "1.2", "--x1", str(x1), "--out", str(out_file)]) == 0
    with np.load(out_file) as data:
        assert data["nngp"].shape == data["ntk"].shape == (3, 3)
        assert np.allclose(data["ntk"], data["ntk"].T)
    assert main(["kernel", "exp(x**2)", "--depth", "2", "--x1", str(x1), "--out", str(out_file)]) == 2
    assert "diverge" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one-line errors
def _never(*args, **kwargs):
    raise AssertionError("the computation ran before the output was checked")


def test_unwritable_output_is_one_line_before_any_computation(tmp_path, capsys, monkeypatch):
    import ntk_theory.codegen
    import ntk_theory.finite_width
    import ntk_theory.montecarlo
    import ntk_theory.validation

    monkeypatch.setattr(ntk_theory.codegen, "CompiledKernel", _never)
    monkeypatch.setattr(ntk_theory.finite_width, "finite_width", _never)
    monkeypatch.setattr(ntk_theory.montecarlo, "sample_statistics", _never)
    monkeypatch.setattr(ntk_theory.validation, "check", _never)
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 3)))
    missing = "/nonexistent/dir/o.npz"
    for argv in (["kernel", "relu", "--depth", "2", "--x1", str(x), "--out", missing],
                 ["finite-width", "relu", "--depth", "2", "--x", str(x), "--out", missing],
                 ["sample", "--x", str(x), "--out", missing, "--quiet"],
                 ["empirical-ntk", "--x", str(x), "--out", missing],
                 ["check", "--plot", "/nonexistent/dir/p.png", "--quiet"]):
        assert main(argv) == 2
        line = _one_error_line(capsys, argv[0])
        assert "directory /nonexistent/dir does not exist" in line
    assert main(["kernel", "relu", "--depth", "2", "--x1", str(x), "--out", str(tmp_path / "k.csv")]) == 2
    assert "use a file name ending in .npz" in _one_error_line(capsys, "kernel")
    (tmp_path / "d.npz").mkdir()
    assert main(["kernel", "relu", "--depth", "2", "--x1", str(x), "--out", str(tmp_path / "d.npz")]) == 2
    assert "is a directory" in _one_error_line(capsys, "kernel")


def test_missing_matplotlib_is_one_line_before_any_computation(tmp_path, capsys, monkeypatch):
    import ntk_theory.criticality
    import ntk_theory.validation

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setattr(ntk_theory.validation, "check", _never)
    monkeypatch.setattr(ntk_theory.criticality, "criticality", _never)
    for argv in (["check", "--plot", str(tmp_path / "c.png"), "--quiet"],
                 ["check", "--finite-width", "--plot", str(tmp_path / "c.png"), "--quiet"],
                 ["criticality", "relu", "--plot", str(tmp_path / "ph.png")]):
        assert main(argv) == 2
        assert "needs matplotlib: pip install 'ntk-theory[plot]'" in _one_error_line(capsys, argv[0])


def test_errors_from_lower_layers_are_one_line_and_debug_shows_them(capsys, monkeypatch):
    import ntk_theory.cli as cli
    from ntk_theory.activations.parse import DivergentExpectation
    from ntk_theory.gaussian.atoms import NoRule

    for exc in (NoRule("no closed form for E[f g]"), DivergentExpectation("E[s^2] diverges\nat K > 1/4"),
                FloatingPointError("overflow"), OSError("disk full")):
        def fail(args, exc=exc):
            raise exc
        monkeypatch.setattr(cli, "_cmd_derive", fail)
        assert main(["derive", "relu"]) == 2
        line = _one_error_line(capsys, "derive")
        assert str(exc).splitlines()[0] in line
        with pytest.raises(type(exc)):
            main(["derive", "relu", "--debug"])
        with pytest.raises(type(exc)):
            main(["--debug", "derive", "relu"])

    def bug(args):
        raise KeyError("oops")
    monkeypatch.setattr(cli, "_cmd_derive", bug)
    assert main(["derive", "relu"]) == 2
    line = _one_error_line(capsys, "derive")
    assert "internal error (KeyError)" in line and "--debug" in line


def test_argument_errors_are_one_line(capsys):
    for argv, message in ((["sample", "--depth", "x"], "invalid int value"),
                          (["sample", "--C-W", "abc"], "expected a number"),
                          (["check", "--widths", "64,x"], "expected an integer"),
                          (["kernel", "relu"], "required")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "--help" in err[0], err


# ----------------------------------------------------------------------------- outputs
def test_kernel_output_path_metadata_and_values(tmp_path, capsys):
    """--out without a suffix writes NAME.npz and says so; the file carries the network's description; the
    values agree with the independent polar quadrature of the reference activation."""
    from ntk_theory.montecarlo.quadrature import quadrature_kernels

    X = np.array([[1.0, 0.0, 0.5], [0.2, -0.7, 1.0], [0.3, 0.3, -0.9]])
    x = tmp_path / "x.npy"
    np.save(x, X)
    out = tmp_path / "o_noext"
    assert main(["kernel", "tanh", "--depth", "2", "--C-W", "1.5", "--C-b", "0.1", "--param", "unit",
                 "--x1", str(x), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"written to {out}.npz" in printed
    with np.load(f"{out}.npz") as data:
        info = json.loads(str(data["info"]))
        assert info["activation"] == ["tanh", "tanh"] and info["depth"] == 2 and info["param"] == "unit"
        assert info["C_W"] == [1.5, 1.5, 1.5] and info["C_b"] == [0.1, 0.1, 0.1]
        assert np.array_equal(data["X1"], X)
        ref = quadrature_kernels("tanh", X, 2, C_W=1.5, C_b=0.1, param="unit")
        assert np.allclose(data["nngp"], ref["nngp"], rtol=1e-10, atol=0)
        assert np.allclose(data["ntk"], ref["ntk"], rtol=1e-10, atol=0)
    assert main(["empirical-ntk", "--depth", "1", "--width", "8", "--x", str(x), "--out", str(tmp_path / "e"),
                 "--seed", "2"]) == 0
    assert f"written to {tmp_path / 'e'}.npz" in capsys.readouterr().out
    with np.load(tmp_path / "e.npz") as data:
        assert json.loads(str(data["info"]))["widths"] == [3, 8, 1]


def test_input_files_follow_one_rule(tmp_path, capsys):
    """Rows are inputs: a 1-D .npy of shape (3,) is one input of dimension 3, as in the Python API; a text file
    with one number per line holds one input of dimension 1 per line; --help states the rule."""
    from ntk_theory.recursions import KernelRecursion

    v = tmp_path / "v.npy"
    np.save(v, np.array([1.0, 2.0, 3.0]))
    col = tmp_path / "col.txt"
    col.write_text("1\n2\n3\n")
    row = tmp_path / "row.csv"
    row.write_text("1, 2, 3\n")
    shapes = {}
    for name, path in (("npy", v), ("col", col), ("row", row)):
        out = tmp_path / f"{name}.npz"
        assert main(["kernel", "relu", "--depth", "1", "--C-W", "2", "--x1", str(path), "--out", str(out)]) == 0
        with np.load(out) as data:
            shapes[name] = (data["X1"].shape, data["nngp"].shape, float(data["nngp"][0, 0]))
    assert shapes["npy"][:2] == shapes["row"][:2] == ((1, 3), (1, 1))
    assert shapes["col"][:2] == ((3, 1), (3, 3))
    # ReLU, C_W = 2, C_b = 0: K(2) = C_W E[relu(u)^2] = C_W * (C_W x.x/d) / 2 = 2 * 14/3 / ... checked by hand:
    assert np.isclose(shapes["npy"][2], 2 * 0.5 * 2 * (1 + 4 + 9) / 3)
    api = KernelRecursion("relu", 1, C_W=2.0, C_b=0.0)(np.array([1.0, 2.0, 3.0]))
    assert api.nngp.shape == (1, 1) and np.isclose(api.nngp[0, 0], shapes["npy"][2])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "a 1-D array (d,) is one input" in " ".join(capsys.readouterr().out.split())
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n3\n")
    assert main(["kernel", "relu", "--depth", "1", "--x1", str(bad), "--out", str(tmp_path / "b.npz")]) == 2
    assert f"cannot read inputs from {bad}" in _one_error_line(capsys, "kernel")
