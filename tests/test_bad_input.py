"""Bad input raises ValueError naming the problem, never a crash deep inside NumPy."""

import numpy as np
import pytest

from ntk_theory import MLP, MLPSpec
from ntk_theory.montecarlo import sample_statistics
from ntk_theory.reference import numpy_activation


@pytest.fixture(scope="module")
def net():
    return MLP.random((3, 5, 5, 1), "tanh", C_W=1.0, C_b=0.1, seed=0)


@pytest.mark.parametrize(
    "X, message",
    [
        (np.ones((4, 2)), "input dimension is 3"),
        (np.ones(4), "input dimension is 3"),  # a 1-D array is one input (of dimension 4 here)
        (np.float64(1.0), "2-D array"),
        (np.ones((2, 3, 1)), "2-D array"),
        (np.ones((0, 3)), "empty"),
        (np.array([[1.0, np.nan, 0.0]]), "non-finite"),
        (np.array([[1.0, 0.0, np.inf]]), "non-finite"),
        ([["a", "b", "c"]], "numeric array"),
        (np.array([[1.0, 0.0, 2.0 + 1e-3j]]), "complex"),
        ([[1.0, 0.0, 1j]], "complex"),
    ],
)
def test_bad_inputs(net, X, message):
    with pytest.raises(ValueError, match=message):
        net(X)
    with pytest.raises(ValueError, match=message):
        net.ntk(np.ones((2, 3)), X) if message.startswith("input") else net.ntk(X)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(widths=(3, 0, 1)), "widths\\[1\\] must be an integer >= 1"),
        (dict(widths=(3, 1)), "at least one hidden layer"),
        (dict(C_W=-1.0), "C_W must be a finite number >= 0"),
        (dict(C_b=float("nan")), "C_b must be a finite number >= 0"),
        (dict(C_W=[1.0, 2.0]), "one entry per layer \\(3 layers\\)"),
        (dict(param="mup"), "unknown param 'mup'"),
        (dict(act="swishy"), "unknown activation 'swishy'"),
        (dict(act=(np.tanh,)), "pair must be \\(value, derivative\\)"),
    ],
)
def test_bad_network_specs(kwargs, message):
    args = dict(widths=(3, 4, 4, 1), act="tanh", C_W=1.0, C_b=0.0, param="ntk")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MLP.random(args["widths"], args["act"], C_W=args["C_W"], C_b=args["C_b"], param=args["param"])


def test_bad_tangents_and_parameters(net):
    X = np.ones((2, 3))
    with pytest.raises(ValueError, match="flat tangent needs"):
        net.jvp(X, np.ones(7))
    bad = [(np.ones((5, 2)), np.ones(5))] + [(np.zeros_like(W), np.zeros_like(b)) for W, b in zip(net.weights[1:], net.biases[1:])]
    with pytest.raises(ValueError, match="tangent of layer 1 must have shapes"):
        net.jvp(X, bad)
    with pytest.raises(ValueError, match="layer 2: W must have shape"):
        MLP(net.spec, "tanh", [net.weights[0], np.ones((2, 2)), net.weights[2]], net.biases)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=0), "depth must be an integer >= 1"),
        (dict(width=0), "width must be an integer >= 1"),
        (dict(width=2.5), "width must be an integer >= 1"),
        (dict(samples=0), "samples must be an integer >= 1"),
        (dict(samples=10, batches=8), "at least twice the number of batches"),
        (dict(activation="nope"), "unknown activation"),
        (dict(sampler="magic"), "unknown sampler"),
        (dict(C_b=-0.5), "C_b must be a finite number >= 0"),
    ],
)
def test_bad_monte_carlo_arguments(kwargs, message):
    args = dict(activation="relu", depth=2, width=8, samples=200, batches=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sample_statistics(np.ones((2, 3)), **args)


def test_activation_names_with_parameters():
    act = numpy_activation("leaky_relu(0.2)")
    assert np.allclose(act.value(np.array([-1.0, 2.0])), [-0.2, 2.0])
    with pytest.raises(ValueError, match="does not take parameters"):
        numpy_activation("tanh(3)")
    with pytest.raises(ValueError, match="cannot parse activation"):
        numpy_activation("relu((")
    # parameters written as the symbolic layer accepts them: fractions too
    elu = numpy_activation("elu(1/2)")
    assert np.allclose(elu.value(np.array([-1.0, 2.0])), [0.5 * (np.exp(-1.0) - 1.0), 2.0])
    with pytest.raises(ValueError, match="cannot parse the parameters"):
        numpy_activation("elu(a)")


def test_spec_build_checks_widths():
    with pytest.raises(ValueError, match="width has 2 entries but depth is 3"):
        MLPSpec.build(2, 3, [4, 4])


def test_one_dimensional_input_is_one_input(net):
    """The rule everywhere: a 1-D array of shape (d,) is one input of dimension d."""
    from ntk_theory import _checks
    from ntk_theory.recursions import KernelRecursion

    x = np.array([0.3, -1.2, 0.8])
    assert _checks.inputs(x).shape == (1, 3)
    assert np.array_equal(net(x), net(x[None, :]))
    assert np.array_equal(net.ntk(x), net.ntk(x[None, :]))
    rec = KernelRecursion("relu", 2, C_W=2.0, C_b=0.1)
    one = rec(x)
    assert one.nngp.shape == (1, 1)
    # ReLU, one input: K(1) = C_b + C_W x.x/d, K(l+1) = C_b + C_W K(l) / 2 (E[relu(u)^2] = K/2)
    K1 = 0.1 + 2.0 * (x @ x) / 3
    K2 = 0.1 + 2.0 * K1 / 2
    assert np.isclose(one.nngp[0, 0], 0.1 + 2.0 * K2 / 2, rtol=1e-14)
    sample = sample_statistics(x, "relu", depth=1, width=4, samples=64, batches=4, seed=0)
    assert sample.X.shape == (1, 3)


@pytest.mark.parametrize("name", ["depth", "width"])
def test_booleans_are_not_integers(name):
    """depth=True used to be accepted as 1."""
    from ntk_theory.recursions import KernelRecursion

    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1; got the boolean True"):
        if name == "depth":
            KernelRecursion("relu", True)
        else:
            MLPSpec.build(3, 2, True)
    with pytest.raises(ValueError, match="C_W must be a finite number >= 0; got the boolean True"):
        KernelRecursion("relu", 2, C_W=True)


def test_complex_inputs_are_refused_not_cast():
    """Complex X was cast to real with only NumPy's ComplexWarning."""
    import warnings

    from ntk_theory.recursions import KernelRecursion

    X = np.array([[1.0 + 0.5j, 0.0], [0.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="X1 is complex"):
            KernelRecursion("relu", 2)(X)
        with pytest.raises(ValueError, match="X is complex"):
            sample_statistics(X, "relu", depth=1, width=4, samples=64, batches=4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(xi="a"), "xi must be a finite scalar"),
    (dict(gamma=[1.0, "b"]), "gamma must be a finite scalar"),
    (dict(memory_mb=float("nan")), "memory_mb"),
    (dict(memory_mb=0), "memory_mb"),
    (dict(memory_mb=-4), "memory_mb"),
])
def test_residual_sampler_arguments_named(kwargs, message):
    """Bad xi, gamma or memory budgets name the argument (they raised NumPy's conversion errors, and a budget
    <= 0 was taken silently as one network per block)."""
    from ntk_theory.montecarlo.residual import sample_residual, sample_residual_ntk_tensors

    with pytest.raises(ValueError, match=message):
        sample_residual("tanh", 1.0, 3, 8, samples=16, batches=4, **kwargs)
    with pytest.raises(ValueError, match=message):
        sample_residual_ntk_tensors("tanh", np.eye(2), 3, 8, samples=16, batches=4, **kwargs)


@pytest.mark.parametrize("args, message", [
    ((5, 5, 0, True), "size must be an integer >= 1"),
    ((-2, -2, 2, True), "n1 must be an integer >= 0"),
    ((5, 5, 2.5, False), "size must be an integer"),
    ((5, 4, 2, True), "symmetric Tiling needs a square"),
])
def test_tiling_refuses_bad_sizes(args, message):
    """Tiling(5, 5, 0, True).grid divided by zero; negative sizes gave an empty grid and no tasks, silently."""
    from ntk_theory.blocks.tiled import Tiling

    with pytest.raises(ValueError, match=message):
        Tiling(*args)


@pytest.mark.parametrize("derivative", ["derivative", 1.5, -1, True])
def test_expectation_derivative_order_is_named(derivative):
    """A derivative order that is not an integer >= 0 is one line naming it (it was a TypeError from range())."""
    from ntk_theory.gaussian import expectation, expectation1

    for fn in (expectation1, expectation):
        with pytest.raises(ValueError, match="derivative must be an integer >= 0"):
            fn("tanh", derivative=derivative)
