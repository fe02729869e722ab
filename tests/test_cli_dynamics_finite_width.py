"""`ntk-theory dynamics --finite-width`: the trained network's mean at infinite width and its 1/n coefficients.

Judges: the infinite-width mean against a hand computation in this file (ReLU's arc-cosine NNGP/NTK of one hidden
layer and the gradient-descent iteration of the kernel model, independent of the toolkit); the 1/n coefficients
against exact facts (nothing moves at step 0; on the train rows at convergence every network interpolates, so both
coefficients vanish; the motion is linear in P..U, so --dntk with zeros gives 0 and with twice the tensors twice
the motion).  One-line errors for bad input."""

import numpy as np
import pytest
from cli_errors import one_error_line

from ntk_theory.cli import main

X = np.array([[1.0, 0.3], [-0.4, 1.2]])
Y = np.array([0.5, -0.3])
XT = np.array([[0.2, 1.0]])
ETA, STEPS = 0.5, "0,1,10,inf"


def relu_kernels(A, C_W=2.0):
    """NNGP and NTK of a one-hidden-layer ReLU network, 'ntk' parameterisation, C_b = 0 (arc-cosine forms)."""
    G0 = A @ A.T / A.shape[1]
    K1 = C_W * G0
    d = np.sqrt(np.diag(K1))
    cos = np.clip(K1 / np.outer(d, d), -1.0, 1.0)
    th = np.arccos(cos)
    ss = np.outer(d, d) * (np.sin(th) + (np.pi - th) * cos) / (2 * np.pi)
    dd = (np.pi - th) / (2 * np.pi)
    return C_W * ss, C_W * ss + C_W * dd * K1  # K, Theta (Theta(1) = lambda_W G0 = K1)


def hand_mean(steps, eta=ETA, y=Y):
    """E[f_t] at infinite width: f_0 = 0 in the mean, f_(s+1) = f_s - (eta/N) Theta(., X) (f_s(X) - y)."""
    _, Th = relu_kernels(np.concatenate([X, XT]))
    Y, N = y, len(y)
    out = []
    for t in steps:
        if np.isinf(t):
            out.append(Th[:, :N] @ np.linalg.solve(Th[:N, :N], Y))
            continue
        f = np.zeros(len(Th))
        for _ in range(int(t)):
            f = f - eta / N * Th[:, :N] @ (f[:N] - Y)
        out.append(f)
    return np.array(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fwdyn")
    for name, a in (("X", X), ("Y", Y), ("XT", XT)):
        np.save(d / f"{name}.npy", a)
    return d


def run(files, *extra, out="o.npz"):
    argv = ["dynamics", "relu", "--depth", "1", "--C-W", "2", "--C-b", "0", "--finite-width", "--x",
            str(files / "X.npy"), "--y", str(files / "Y.npy"), "--x-test", str(files / "XT.npy"), "--steps", STEPS,
            "--learning-rate", str(ETA), "--out", str(files / out), *extra]
    assert main(argv) == 0
    with np.load(files / out) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def result(files):
    return run(files, "--width", "64")


def test_infinite_width_mean_is_the_hand_computed_kernel_model(result):
    steps = np.array([0, 1, 10, np.inf])
    np.testing.assert_array_equal(result["steps"], steps)
    # measured 5.7e-10 off: the toolkit's NTK diagonal at X[1] is 7.6e-9 above the arc-cosine value (its <relu'^2>)
    np.testing.assert_allclose(result["trained_mean"], hand_mean(steps), rtol=0, atol=5e-9)


def test_exact_limits_of_the_corrections(result):
    lin, mot = result["trained_mean_correction"], result["trained_motion_correction"]
    assert lin.shape == mot.shape == (4, 3)
    assert np.all(lin[0] == 0) and np.all(mot[0] == 0)  # step 0: the initial network, mean 0 at every width
    np.testing.assert_allclose(lin[-1, :2], 0, atol=1e-12)  # converged train rows interpolate y at every width
    np.testing.assert_allclose(mot[-1, :2], 0, atol=1e-10)
    assert np.max(np.abs(mot[1:3])) > 1e-3 and np.max(np.abs(lin[2])) > 1e-3  # and they are not zero elsewhere
    np.testing.assert_allclose(result["trained_mean_at_width"],
                               result["trained_mean"] + (lin + mot) / 64, rtol=0, atol=1e-15)


def test_dntk_file_linearity(files, result):
    base = {k: result[k] for k in "PQRSTU"}
    np.savez(files / "zero.npz", **{k: np.zeros_like(v) for k, v in base.items()})
    np.savez(files / "twice.npz", **{k: 2 * v for k, v in base.items()})
    zero = run(files, "--dntk", str(files / "zero.npz"), out="z.npz")
    twice = run(files, "--dntk", str(files / "twice.npz"), out="t.npz")
    assert np.all(zero["trained_motion_correction"] == 0)
    np.testing.assert_allclose(twice["trained_motion_correction"], 2 * result["trained_motion_correction"],
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(twice["trained_mean_correction"], result["trained_mean_correction"])


def test_table_is_printed(files, capsys):
    run(files, out="p.npz")
    out = capsys.readouterr().out
    assert "trained_mean" in out and "motion 1/n" in out
    assert sum(1 for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["10"], ["inf"])) == 12


@pytest.mark.parametrize("extra, message", [
    ([], "needs --x"),
    (["--x", "X.npy", "--y", "Ybad.npy", "--steps", "1"], "expected 2 targets"),
    (["--x", "X.npy", "--y", "Y.npy", "--x-test", "XT3.npy", "--steps", "1"], "dimension 3"),
    (["--x", "X.npy", "--y", "Y.npy", "--steps", "1", "--dntk", "bad.npz"], "missing array(s) R, S, T, U"),
    (["--x", "X.npy", "--y", "Y.npy", "--steps", "1", "--dntk", "none.npz"], "no such file"),
    (["--x", "X.npy", "--y", "Y.npy", "--steps", "1", "--param", "standard"], "not standard"),
    (["--x", "X.npy", "--y", "Y.npy", "--steps", "1", "--learning-rate", "-1"], "learning_rate"),
])
def test_bad_input_is_one_line(files, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(files)
    np.save(files / "Ybad.npy", np.zeros(3))
    np.save(files / "XT3.npy", np.zeros((1, 3)))
    np.savez(files / "bad.npz", P=np.zeros((2,) * 4), Q=np.zeros((2,) * 4))
    assert main(["dynamics", "relu", "--depth", "1", "--finite-width", *extra]) == 2
    assert message in one_error_line(capsys, "dynamics")


def test_finite_width_options_need_the_flag(files, capsys):
    assert main(["dynamics", "relu", "--y", str(files / "Y.npy")]) == 2
    assert "--y belong to --finite-width" in one_error_line(capsys, "dynamics")


def test_bad_steps_is_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["dynamics", "relu", "--finite-width", "--steps", "1,2.5"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "integers >= 0 or inf" in err[-1]


def test_inf_row_is_the_gradient_descent_limit(files, result):
    """The printed inf row is descent's limit (steps = inf), not gradient flow's: it equals the motion after many
    steps (the iteration, judged by its own convergence in the step count), on the test rows where the two
    limits differ."""
    np.savez(files / "pqrstu.npz", **{k: result[k] for k in "PQRSTU"})
    r = run(files, "--steps", "3000,inf", "--dntk", str(files / "pqrstu.npz"), out="inf.npz")
    mot = r["trained_motion_correction"]
    np.testing.assert_allclose(mot[1], mot[0], rtol=1e-8, atol=1e-10 * np.max(np.abs(mot[1])))
    assert np.max(np.abs(mot[1][len(Y):])) > 0


def test_several_outputs(files, result, capsys):
    """--y with O = 2 columns: each output's infinite-width mean is the hand-computed kernel model of its own
    targets at the rate eta / (N O) (the loss ||f - y||^2 / (2 N O)); the 1/n coefficients keep their exact limits
    (0 at step 0, 0 on the converged train rows) and are not zero elsewhere; a (N, 1) column is the one-output
    run."""
    Y2 = np.c_[Y, [0.2, 0.9]]
    np.save(files / "Y2.npy", Y2)
    np.save(files / "Y1.npy", Y[:, None])
    argv = ["dynamics", "relu", "--depth", "1", "--C-W", "2", "--C-b", "0", "--finite-width", "--x",
            str(files / "X.npy"), "--x-test", str(files / "XT.npy"), "--steps", STEPS, "--learning-rate", str(2 * ETA)]
    assert main([*argv, "--y", str(files / "Y2.npy"), "--out", str(files / "two.npz")]) == 0
    printed = capsys.readouterr().out
    assert "2 outputs" in printed and "output" in printed.splitlines()[1]
    with np.load(files / "two.npz") as f:
        two = {k: f[k] for k in f.files}
    steps = np.array([0, 1, 10, np.inf])
    assert two["trained_mean"].shape == two["trained_motion_correction"].shape == (4, 3, 2)
    for o in range(2):  # eta / (N O) = ETA / N
        np.testing.assert_allclose(two["trained_mean"][..., o], hand_mean(steps, y=Y2[:, o]), rtol=0, atol=5e-9)
    lin, mot = two["trained_mean_correction"], two["trained_motion_correction"]
    assert np.all(lin[0] == 0) and np.all(mot[0] == 0)
    np.testing.assert_allclose(lin[-1, :2], 0, atol=1e-12)
    np.testing.assert_allclose(mot[-1, :2], 0, atol=1e-10)
    assert np.max(np.abs(mot[1:3])) > 1e-3 and np.max(np.abs(lin[2])) > 1e-3
    one = run(files, out="one.npz")
    col = main(["dynamics", "relu", "--depth", "1", "--C-W", "2", "--C-b", "0", "--finite-width", "--x",
                str(files / "X.npy"), "--y", str(files / "Y1.npy"), "--x-test", str(files / "XT.npy"), "--steps",
                STEPS, "--learning-rate", str(ETA), "--out", str(files / "col.npz")])
    assert col == 0
    with np.load(files / "col.npz") as f:
        for k in ("trained_mean", "trained_mean_correction", "trained_motion_correction"):
            np.testing.assert_array_equal(f[k], one[k])


def hand_covariance(steps, eta=ETA):
    """Cov[f_t] at infinite width: f_t = L_t f0 + (terms in y), f0 ~ N(0, K), L_0 = I,
    L_(s+1) = L_s - (eta/N) Theta(., X) L_s(X); converged: L = I - Theta(., X) Theta(X, X)^-1 on the train columns."""
    K, Th = relu_kernels(np.concatenate([X, XT]))
    N, P = len(Y), len(K)
    out = []
    for t in steps:
        L = np.eye(P)
        if np.isinf(t):
            L[:, :N] -= Th[:, :N] @ np.linalg.inv(Th[:N, :N])
        else:
            for _ in range(int(t)):
                L = L - eta / N * Th[:, :N] @ L[:N]
        out.append(L @ K @ L.T)
    return np.array(out)


def test_written_covariance(result):
    """--out holds the covariance: its infinite-width value is the hand-computed kernel model's L K L^T; at step 0
    the network is its initialisation (no motion); at convergence the train rows interpolate y in every network
    (value and both 1/n coefficients vanish on their rows and columns); the width's total adds the two
    coefficients / n."""
    steps = np.array([0, 1, 10, np.inf])
    cov, lin, mot = (result[k] for k in ("trained_covariance", "trained_covariance_correction",
                                         "trained_motion_covariance_correction"))
    assert cov.shape == lin.shape == mot.shape == (4, 3, 3)
    np.testing.assert_allclose(cov, hand_covariance(steps), rtol=0, atol=5e-9)
    assert np.all(mot[0] == 0)
    for a in (cov, lin, mot):
        np.testing.assert_allclose(a[-1, :2], 0, atol=1e-10)
        np.testing.assert_allclose(a[-1, :, :2], 0, atol=1e-10)
    assert np.max(np.abs(mot[1:3])) > 1e-4 and np.max(np.abs(lin[1:3])) > 1e-4
    np.testing.assert_allclose(result["trained_covariance_at_width"], cov + (lin + mot) / 64, rtol=0, atol=1e-15)
