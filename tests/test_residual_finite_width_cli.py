r"""``ntk-theory derive|check --finite-width --arch`` for residual MLPs (ntk_theory.cli,
ntk_theory.validation.residual).

Judge: the deep linear residual network, exactly (derivation in tests/test_finite_width_residual.py's module
docstring).  s(z) = z, C_b = 0, z(1) = W(1) x, z(l+1) = (xi I + W) z(l) with W ~ N(0, C / n) (the branch
scale folded into the Dense: C = gamma^2 C_W), readout f = W(L+1) z(L), W(L+1) ~ N(0, C_out / n).  With
G0 = x.x / n0: K(1) = C_1 G0, K(l+1) = (xi^2 + C) K(l), readout K = C_out K(L); Theta(1) = K(1) in 'ntk'
(lambda = C), Theta(l+1) = (xi^2 + C) Theta(l) + C K(l) (the linear map's lambda_W E[z^2] term), readout
C_out (K(L) + Theta(L)); n E[G(L)^2] / E[G(L)]^2 -> 1 + a/n with a = 2 + (L - 1) 2 C (2 xi^2 + C) / (xi^2 + C)^2,
so the readout's V = n Cov(f_i^2, f_j^2) = C_out^2 K(L)^2 a; K1 = 0 exactly (E[G] = K at every width).
"""

import importlib.util
import math

import numpy as np
import pytest

from cli_errors import one_error_line
from ntk_theory.cli import main

XI, C, C1, COUT, L = 0.8, 0.36, 1.0, 1.44, 3


def _linear_residual(width=16):
    block = (f"serial(FanOut(2), parallel(Activation('{XI}*x'), serial(Activation('x'), "
             f"Dense({width}, W_std={math.sqrt(C)}))), FanInSum())")
    return (f"serial(Dense({width}, W_std={math.sqrt(C1)}), " + ", ".join([block] * (L - 1))
            + f", Activation('x'), Dense(1, W_std={math.sqrt(COUT)}))")


def _exact(G0=1.0):
    K, Th = [C1 * G0], [C1 * G0]
    for _ in range(L - 1):
        K.append((XI**2 + C) * K[-1])
        Th.append((XI**2 + C) * Th[-1] + C * K[-2])
    a = 2 + (L - 1) * 2 * C * (2 * XI**2 + C) / (XI**2 + C) ** 2
    return {"K": COUT * K[-1], "Th": COUT * (K[-1] + Th[-1]), "V": COUT**2 * K[-1] ** 2 * a, "K1": 0.0}


def _printed(out: str, label: str) -> dict:
    (line,) = [ln for ln in out.splitlines() if ln.strip().startswith(label + ":")]
    return {k.strip(): float(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split(","))}


def test_derive_finite_width_arch_residual(capsys):
    """The readout's K, Theta, V, K1 printed for G0 = 1 equal the deep linear network's exact values."""
    assert main(["derive", "--finite-width", "--arch", _linear_residual()]) == 0
    out = capsys.readouterr().out
    assert "read as a residual MLP" in out and f"xi = {XI:g}" in out
    values = _printed(out, f"layer {L + 1}")
    for name, exact in _exact().items():
        assert values[name] == pytest.approx(exact, rel=1e-9, abs=1e-12), name
    assert values["Th1"] == pytest.approx(0.0, abs=1e-12)


def test_check_finite_width_arch_residual(capsys, tmp_path):
    """check --finite-width --arch of a residual MLP: the seven readout quantities at each input and K1, Theta1,
    A, B, D, F, V across the inputs, Monte Carlo within 4 standard errors; the printed predictions are the deep
    linear network's exact values."""
    x = tmp_path / "x.txt"
    x.write_text("1.0 0.0\n0.9 1.2\n")
    plot = importlib.util.find_spec("matplotlib") is not None    # the plot extra is optional (CI has none)
    code = main(["check", "--finite-width", "--arch", _linear_residual(), "--x", str(x), "--widths", "8,16,32",
                 "--samples", "800", "--quiet"] + (["--plot", str(tmp_path / "p.png")] if plot else []))
    out = capsys.readouterr().out
    assert code == 0, out
    assert not plot or (tmp_path / "p.png").stat().st_size > 0
    assert "K1 3, ntk1 3, A 6, B 7, D 9, F 10, V 6" in out and "PASS" in out
    for name in ("K1", "ntk1"):  # both inputs: a linear network has no 1/n correction of E[K], E[Theta]
        (row,) = [ln for ln in out.splitlines() if ln.startswith(name + " ") and " 0,1 " in ln]
        assert abs(float(row.split()[2])) < 1e-10, row
    for a, G0 in ((0, 0.5), (1, 1.125)):
        exact = _exact(G0)
        (row,) = [ln for ln in out.splitlines() if ln.startswith("V ") and f" {a},{a},{a},{a} " in ln]
        assert float(row.split()[2]) == pytest.approx(exact["V"], rel=1e-5)
        (row,) = [ln for ln in out.splitlines() if ln.startswith("K1 ") and f" {a},{a} " in ln]
        assert abs(float(row.split()[2])) < 1e-10


@pytest.mark.parametrize("command", ["derive", "check"])
def test_descriptions_without_derived_rules_one_line(capsys, command):
    """A description without derived 1/n rules: one error line naming the layer, exit code 2."""
    arch = "serial(Dense(8), Relu(), LayerNorm(), Dense(1))"
    assert main([command, "--finite-width", "--arch", arch, "--samples", "10"] if command == "check"
                else [command, "--finite-width", "--arch", arch]) == 2
    line = one_error_line(capsys, command)
    assert "not yet supported for this architecture" in line and "LayerNorm()" in line


def test_check_residual_function_refuses_plain_mlps():
    from ntk_theory import stax
    from ntk_theory.finite_width.residual import NotDerived
    from ntk_theory.validation.residual import check_residual_finite_width

    net = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    with pytest.raises(NotDerived, match="plain MLP"):
        check_residual_finite_width(net, np.ones((1, 2)))
    with pytest.raises(ValueError, match="at least 3 distinct widths"):
        check_residual_finite_width(stax.parse(_linear_residual()), np.ones((1, 2)), widths=(8, 16))



def test_residual_check_defaults_are_the_api_defaults(monkeypatch, capsys):
    """check --finite-width --arch passes --samples and --seed with the API's defaults, and leaves widths to it."""
    import inspect

    import ntk_theory.validation.residual as vr

    api = {k: p.default for k, p in inspect.signature(vr.check_residual_finite_width).parameters.items()}
    seen = {}

    def fake(network, X, **kwargs):
        seen.update(kwargs)
        return vr.ResidualFiniteWidthCheck([("V", (0, 0, 0, 0), 1.0, 1.0, 0.1, 0.0)], 4.0, {}, None, [])

    monkeypatch.setattr(vr, "check_residual_finite_width", fake)
    assert main(["check", "--finite-width", "--arch", _linear_residual(), "--quiet"]) == 0
    capsys.readouterr()
    assert "widths" not in seen and seen["samples"] == api["samples"] and seen["seed"] == api["seed"]


def test_check_finite_width_arch_residual_relu_compares_theta1_at_pairs(capsys, tmp_path):
    """A residual ReLU MLP: check --finite-width --arch compares the readout's Theta1_ab at the pair of inputs too
    (ntk1 0,1; its Dirac terms are derived: tests/test_residual_relu_theta1.py), against the 1/n fit of the
    Monte Carlo of real residual ReLU networks (a small run: the verdict within 4 standard errors)."""
    x = tmp_path / "x.txt"
    x.write_text("1.0 0.0\n0.9 1.2\n")
    arch = ("serial(Dense(8, W_std=1.2, b_std=0.3), serial(FanOut(2), parallel(Activation('0.8*x'), serial(Relu(), "
            "Dense(8, W_std=0.6, b_std=0.2))), FanInSum()), Relu(), Dense(1))")
    code = main(["check", "--finite-width", "--arch", arch, "--x", str(x), "--widths", "8,16,32", "--samples", "400",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Theta1_ab at pairs of inputs" in out and "ntk1 3," in out
    (row,) = [ln for ln in out.splitlines() if ln.startswith("ntk1 ") and " 0,1 " in ln]
    assert row.split()[-1] == "pass"
