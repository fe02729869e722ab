r"""Validation of the finite-width predictions against the reference network's Monte Carlo.

:func:`check_finite_width` computes the predictions of :mod:`ntk_theory.finite_width` (the
recursions) and, independently, the Monte Carlo fits of :mod:`ntk_theory.montecarlo_finite_width`
(variance-reduced estimators on finite networks at several widths, fitted in 1/n with the
infinite-width K and Theta fixed to the recursion), and compares every distinct entry of
K1 (``nngp_correction``), Theta1 (``ntk_correction``) and the readout tensors V, A, B, D, F:
z = (fit - prediction) / SE; the check passes when all |z| < ``sigmas``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from .finite_width import finite_width
from .montecarlo_finite_width import _distinct, _symmetry_of, fit_inverse_width

#: Monte Carlo name -> prediction attribute
COMPARED = {"K1": "nngp_correction", "ntk1": "ntk_correction", "V": "V", "A": "A", "B": "B", "D": "D", "F": "F"}


@dataclass
class FiniteWidthCheck:
    rows: list  # (name, entry, prediction, estimate, stderr, z)
    sigmas: float
    info: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(abs(r[5]) < self.sigmas for r in self.rows)

    @property
    def max_abs_z(self) -> float:
        return max(abs(r[5]) for r in self.rows)

    def table(self) -> str:
        i = self.info
        lines = [f"finite-width check: {i.get('description')}; Monte Carlo {i.get('samples')} networks at each "
                 f"width {i.get('widths')}, 1/n fits ({i.get('seconds', 0):.0f} s)",
                 f"{'quantity':<16}{'entry':>9}{'prediction':>14}{'Monte Carlo fit':>26}{'z':>8}  result"]
        for name, idx, p, v, se, z in self.rows:
            ok = "pass" if abs(z) < self.sigmas else "FAIL"
            lines.append(f"{name:<16}{','.join(map(str, idx)):>9}{p:>14.6g}{v:>16.6g} ± {se:<8.2g}{z:>8.2f}  {ok}")
        lines.append(f"max |z| = {self.max_abs_z:.2f}: " + (f"all within {self.sigmas} standard errors: PASS"
                                                           if self.passed else "some entries FAIL"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def check_finite_width(activation, X, depth: int, C_W=2.0, C_b=0.0, param: str = "ntk",
                       widths=(32, 64, 128, 256), samples: int = 20_000, seed: int = 0, sigmas: float = 4.0,
                       max_rows: int = 6, progress: bool = False) -> FiniteWidthCheck:
    """Predictions vs Monte Carlo 1/n fits for every quantity (see the module docstring)."""
    import time

    t0 = time.perf_counter()
    pred = finite_width(activation, X, depth, C_W, C_b, param)
    fit = fit_inverse_width(activation, X, depth, widths, C_W, C_b, param, samples, seed,
                            infinite=(pred.nngp, pred.ntk))
    rows = []
    for name, attr in COMPARED.items():
        est = fit[name]
        P = getattr(pred, attr)
        keys = _distinct(est.value.shape, _symmetry_of(name))
        if name in ("K1", "ntk1"):
            keys = [k for k in keys if est.stderr[k] > 0]  # exact zeros (no Monte Carlo noise) are skipped
        for idx in keys[:max_rows]:
            se = float(est.stderr[idx])
            v = float(est.value[idx])
            z = (v - float(P[idx])) / se if se > 0 else 0.0
            rows.append((name, idx, float(P[idx]), v, se, z))
    info = dict(description=pred.description, samples=samples, widths=list(widths),
                seconds=time.perf_counter() - t0)
    return FiniteWidthCheck(rows, sigmas, info)
