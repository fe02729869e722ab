"""examples/digits.py: on 100 training and 100 test images its kernels equal neural-tangents 0.6.5's (recorded by
benchmarks/anchors/nt_digits.py, float64) and its kernel-regression accuracies equal neural-tangents' predictions."""

import json
from pathlib import Path

import numpy as np
import pytest
from scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
RECORDED = json.loads((ROOT / "tests" / "data" / "neural_tangents" / "digits_small.json").read_text())


@pytest.fixture(scope="module")
def example():
    return load_script("examples/digits.py", "digits_example")


def _check(example, names):
    result = example.run(100, 100, names)
    data = example.digits(100, 100)
    nets = example.architectures()
    for name in names:
        k = nets[name].kernel_fn(data.x_test[:8], data.x_train[:8], ("nngp", "ntk"))
        np.testing.assert_allclose(k.nngp, RECORDED[name]["test_train_nngp"], rtol=1e-10)
        np.testing.assert_allclose(k.ntk, RECORDED[name]["test_train_ntk"], rtol=1e-10)
        assert result["rows"][name]["nngp"] == RECORDED[name]["nngp"]
        assert result["rows"][name]["ntk"] == RECORDED[name]["ntk"]


def test_dense_and_flattened_cnn_match_neural_tangents(example):
    _check(example, ["MLP (2 hidden)", "CNN, Flatten"])


def test_pooled_cnns_match_neural_tangents(example):
    _check(example, ["CNN, GlobalAvgPool", "Myrtle-style"])


def test_script_writes_its_table(example, tmp_path):
    example.main(["--quick", "--only", "MLP (2 hidden)", "--out-dir", str(tmp_path), "--no-figure"])
    text = (tmp_path / "digits.md").read_text()
    assert "| MLP (2 hidden) |" in text and json.loads((tmp_path / "digits.json").read_text())["n_test"] == 100
