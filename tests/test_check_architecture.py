"""check_architecture and `ntk-theory check|sample --arch` for descriptions that are not plain MLPs.

The judge is the Monte Carlo of finite reference networks (ntk_theory.montecarlo.graph, independent of the symbolic
layer) with its jackknife standard errors; the deep linear network is judged against its kernel computed by hand
(no finite-width correction: every weight matrix enters E[f f] and E[Theta] once)."""

import json

import numpy as np
import pytest

from ntk_theory import stax
from ntk_theory.cli import main
from ntk_theory.recursions.graph import kernel
from ntk_theory.validation import ArchitectureCheck, check_architecture, passes

C = {"W_std": 1.4, "b_std": 0.1}
RESNET = stax.serial(stax.Dense(64, **C), stax.FanOut(2),
                     stax.parallel(stax.serial(stax.Relu(), stax.Dense(64, **C)), stax.Identity()),
                     stax.FanInSum(), stax.Relu(), stax.Dense(1, **C))
RESNET_TEXT = ("serial(Dense(64, W_std=1.4, b_std=0.1), FanOut(2), parallel(serial(Relu(), Dense(64, W_std=1.4, "
               "b_std=0.1)), Identity()), FanInSum(), Relu(), Dense(1, W_std=1.4, b_std=0.1))")
X = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.4], [-0.7, 0.5, 0.9]])


def scaled(factor):
    """The graph kernel times ``factor``: an intentionally wrong prediction."""
    def predict(description, X):
        exact = kernel(description, X)
        return type("Scaled", (), {"nngp": factor * exact.nngp, "ntk": factor * exact.ntk})()

    return predict


def _error_line(capsys, command) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ntk-theory {command}: error: "), err
    return err[0]


def test_residual_network_passes_and_a_two_percent_error_fails():
    assert repr(RESNET) == RESNET_TEXT
    kw = {"widths": (64, 128, 256), "samples": 6000, "seed": 0, "workers": 2, "progress": False}
    good = check_architecture(RESNET, X, **kw)
    assert isinstance(good, ArchitectureCheck) and good.passed, good.table()
    assert len(good.rows) == 2 * 6 and {r.quantity for r in good.rows} == {"E[f f]", "E[Theta]"}
    # SE(c0) of the relative deviation: 0.1-0.5% of the kernel's scale at these sample sizes
    assert max(r.r_inf_se for r in good.rows) < 0.005
    wrong = check_architecture(RESNET, X, predict=scaled(1.02), **kw)  # the same networks, the kernel 2% too large
    assert not wrong.passed
    for quantity in ("E[f f]", "E[Theta]"):
        assert not all(passes(r.z, 4.0) for r in wrong.rows if r.quantity == quantity), wrong.table()
    assert wrong.table().splitlines()[-1].endswith(": FAIL") and "kernel by predict" in wrong.table().splitlines()[0]


def test_rounding_level_entries_fail_with_their_reason(tmp_path):
    # one Dense layer: its NTK C_b + C_W x.x'/d is the same for every network (nothing sampled: it must not pass);
    # its Rao-Blackwellised E[f f] is deterministic too, so E[f f] is judged by the plain mean of f f
    report = check_architecture(stax.serial(stax.Dense(1, **C)), X, widths=(8, 16), samples=2000, workers=2,
                                progress=False)
    assert not report.passed
    theta = [r for r in report.rows if r.quantity == "E[Theta]"]
    assert theta and all(r.outcome(4.0).startswith("FAIL (standard error at the rounding level") for r in theta)
    assert {r.quantity for r in report.rows} - {"E[Theta]"} == {"E[f f] plain"}
    assert all(passes(r.z, 4.0) for r in report.rows if r.quantity == "E[f f] plain")


def test_cli_check_arch_passes_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")  # the plot extra; CI installs only the test extra
    np.save(tmp_path / "x.npy", X)
    png = tmp_path / "check.png"
    code = main(["check", "--arch", RESNET_TEXT, "--x", str(tmp_path / "x.npy"),
                 "--widths", "32,64,128", "--samples", "4000", "--quiet", "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-2].endswith("PASS") and png.stat().st_size > 10_000
    assert sum(line.rstrip().endswith("pass") for line in out.splitlines()) == 12


def test_cli_sample_arch_deep_linear_network_against_the_hand_kernel(tmp_path, capsys):
    # f = W3 (W2 (W1 x + b1) + b2) + b3 in 'ntk': K_l = C_b,l + C_W,l K_(l-1), Theta_l = C_b,l + C_W,l (K_(l-1) +
    # Theta_(l-1)), K_0 = x.x'/d, Theta_0 = 0 (each weight matrix enters once: exact at width 16)
    layers = ((1.3, 0.2), (0.9, 0.1), (1.1, 0.3))
    arch = "serial(" + ", ".join(f"Dense({16 if i < 2 else 1}, W_std={w}, b_std={b})" for i, (w, b) in enumerate(layers)) + ")"
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "s.npz"
    assert main(["sample", "--arch", arch, "--x", str(tmp_path / "x.npy"), "--samples", "4000", "--seed", "3",
                 "--workers", "2", "--quiet", "--out", str(out)]) == 0
    assert "Monte Carlo over 4000 networks" in capsys.readouterr().out
    K, T = X @ X.T / X.shape[1], np.zeros((3, 3))
    for w, b in layers:
        K, T = b**2 + w**2 * K, b**2 + w**2 * K + w**2 * T
    with np.load(out) as d:
        assert set(d.files) == {"X", "info", "output_second_moment", "output_second_moment_stderr", "ntk_mean",
                                "ntk_mean_stderr"}
        for name, ref in (("output_second_moment", K), ("ntk_mean", T)):
            z = (d[name] - ref) / d[name + "_stderr"]
            assert np.all(np.abs(z) < 4), (name, z)
        assert "Dense(16" in json.loads(str(d["info"]))["network"]


def test_cli_one_line_errors(tmp_path, capsys):
    # a nonlinearity after LayerNorm of a non-Gaussian value: refused by the kernel, named, before any sampling
    refused = "serial(Dense(8), Relu(), LayerNorm(), Relu(), Dense(1))"
    assert main(["check", "--arch", refused, "--quiet"]) == 2
    line = _error_line(capsys, "check")
    assert "not supported for this architecture" in line and "Relu()" in line
    with pytest.raises(NotImplementedError, match="Relu"):
        check_architecture(stax.parse(refused), widths=(8, 16), samples=100)
    resnet = ["--arch", RESNET_TEXT, "--quiet"]
    assert main(["check", "--arch", "serial(Dense(8), LayerNorm(), Relu(), Dense(1))", "--finite-width", "--quiet"]) == 2
    assert "not yet supported for this architecture: LayerNorm()" in _error_line(capsys, "check")
    assert main(["check", *resnet, "--widths", "64"]) == 2
    assert "two distinct widths" in _error_line(capsys, "check")
    assert main(["check", *resnet, "--depth", "2"]) == 2
    assert "drop --depth" in _error_line(capsys, "check")
    assert main(["sample", *resnet, "--width", "8"]) == 2
    assert "drop --width" in _error_line(capsys, "sample")
    assert main(["sample", *resnet, "--samples", "100", "--batches", "1"]) == 2
    assert "batches" in _error_line(capsys, "sample")
    assert main(["check", "--arch", "serial(Dense(8), Conv(3))", "--quiet"]) == 2
    _error_line(capsys, "check")
