r"""Finite-width predictions for a network's output at N inputs: the public API.

For L hidden layers of width n and a scalar readout (the network of ``ntk-theory kernel``)::

    E[f_a f_b]                = nngp_ab + nngp_correction_ab / n + O(1/n^2)
    E[Theta_ab]               = ntk_ab  + ntk_correction_ab / n  + O(1/n^2)
    Cov(Theta_ab, Theta_cd)   = ntk_covariance_abcd / n           + O(1/n^2)
    E[f_a f_b f_c f_d] - (3 pairings of E[f f]) = output_cumulant_abcd / n + O(1/n^2)
    Cov(Theta_ab, f_c f_d)    = ntk_output_covariance_abcd / n    + O(1/n^2)

with ntk_covariance = A_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc), output_cumulant = V_(ab)(cd) +
V_(ac)(bd) + V_(ad)(bc), ntk_output_covariance = D_abcd + F_(ac)(bd) + F_(ad)(bc), and the
readout layer's tensors V, A, B, D, F (index conventions in :mod:`.tensors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .network import FiniteWidthRecursion

ARRAYS = ("nngp", "ntk", "nngp_correction", "ntk_correction", "ntk_covariance", "output_cumulant",
          "ntk_output_covariance", "V", "A", "B", "D", "F")


@dataclass
class FiniteWidthPredictions:
    """The infinite-width kernels and the 1/n coefficients at N inputs (see the module docstring)."""

    nngp: np.ndarray
    ntk: np.ndarray
    nngp_correction: np.ndarray
    ntk_correction: np.ndarray
    ntk_covariance: np.ndarray
    output_cumulant: np.ndarray
    ntk_output_covariance: np.ndarray
    V: np.ndarray
    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    F: np.ndarray
    layers: list = field(repr=False, default_factory=list)
    quadrature_error: float = 0.0
    description: str = ""

    def at_width(self, width: int) -> dict:
        """The leading-order values at hidden width n: E[f f], E[Theta], Cov(Theta, Theta), the
        output cumulant and Cov(Theta, f f)."""
        n = float(width)
        if not n >= 1:
            raise ValueError(f"width must be >= 1; got {width!r}")
        return {
            "output_second_moment": self.nngp + self.nngp_correction / n,
            "ntk_mean": self.ntk + self.ntk_correction / n,
            "ntk_covariance": self.ntk_covariance / n,
            "output_cumulant": self.output_cumulant / n,
            "ntk_output_covariance": self.ntk_output_covariance / n,
        }

    def arrays(self) -> dict:
        return {name: getattr(self, name) for name in ARRAYS}

    def save(self, path) -> None:
        np.savez(path, **self.arrays(), quadrature_error=self.quadrature_error,
                 description=np.array(self.description))

    def __repr__(self) -> str:
        N = self.nngp.shape[0]
        lines = [f"FiniteWidthPredictions({self.description}; N = {N} inputs, quadrature error "
                 f"<= {self.quadrature_error:.1e})"]
        with np.printoptions(precision=5, suppress=False, linewidth=100):
            for name in ("nngp", "ntk", "nngp_correction", "ntk_correction"):
                lines.append(f"  {name:16s} {np.array2string(getattr(self, name), prefix=' ' * 19)}")
            idx = (0,) * 4
            for name in ("ntk_covariance", "output_cumulant", "ntk_output_covariance"):
                lines.append(f"  {name:22s} (N,N,N,N); [0,0,0,0] = {getattr(self, name)[idx]:.6g}")
        return "\n".join(lines)


def finite_width(activation, X, depth: int, C_W=1.0, C_b=0.0, param: str = "ntk", widths=None,
                 tol: float = 1e-10, progress=None) -> FiniteWidthPredictions:
    """The finite-width predictions of the network (``depth`` hidden layers, scalar readout) at X (N, d).

    ``activation``: library name, expression or activation object; ``C_W``, ``C_b``: scalars or
    depth + 1 values; ``param`` 'ntk' or 'unit'; ``widths``: the hidden widths if unequal
    (corrections per 1/n_L).  Four-point Gaussian averages to ``tol`` (relative).  ``progress``: a bar
    over the layers (True, False, or None: when standard error is a terminal and the run takes seconds)."""
    rec = FiniteWidthRecursion(activation, depth, C_W, C_b, param, widths)
    layers = rec.tensors(X, tol=tol, progress=progress)
    top = layers[-1]
    F = top.F
    return FiniteWidthPredictions(
        nngp=top.K, ntk=top.Th, nngp_correction=top.K1, ntk_correction=top.Th1,
        ntk_covariance=top.ntk_covariance, output_cumulant=top.output_cumulant,
        ntk_output_covariance=top.D + F.transpose(0, 2, 1, 3) + F.transpose(0, 2, 3, 1),
        V=top.V, A=top.A, B=top.B, D=top.D, F=top.F, layers=layers,
        quadrature_error=max(s.error for s in layers),
        description=f"{rec.activation.name}, depth {depth}, C_W {rec.C_W[-1]:g}, C_b {rec.C_b[-1]:g}, param {param}",
    )
