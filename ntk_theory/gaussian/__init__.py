"""Gaussian expectations E[f(u) g(v)] under (u, v) ~ N(0, [[k11, k12], [k12, k22]]): closed forms by rules, numerical otherwise."""

from .atoms import NoRule
from .expectation import (
    ClosedDiagonal,
    ClosedForm,
    GaussianExpectation,
    NumericalDiagonal,
    NumericalExpectation,
    expectation,
    expectation1,
)
from .symbols import k, k11, k12, k22

__all__ = [
    "expectation", "expectation1", "ClosedForm", "NumericalExpectation", "ClosedDiagonal", "NumericalDiagonal",
    "GaussianExpectation", "NoRule", "k", "k11", "k22", "k12",
]
