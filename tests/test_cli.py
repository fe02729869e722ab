"""The command line: runs on defaults, writes its output, fails cleanly on bad input."""

import json

import numpy as np

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
    assert "PASS" in out and "E[Theta]" in out and "float64 vs mpmath" in out
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
