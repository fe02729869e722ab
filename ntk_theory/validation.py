r"""Validation: infinite-width predictions against the reference network's Monte Carlo at several widths.

At width n the Monte Carlo estimates y(n) of E[f_a f_b] and E[Theta_ab] differ from the infinite-width
prediction p by O(1/n).  For every distinct entry the relative deviation r(n) = y(n)/p - 1 is fitted
by weighted least squares to r(n) = r_inf + c/n (weights 1/SE^2); the prediction passes when the
extrapolated r_inf is within ``sigmas`` standard errors of 0.  (For ``param="standard"`` the
prediction is computed at each width, since its NTK grows with n.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .montecarlo import sample_statistics
from .recursions import KernelRecursion


@dataclass
class CheckRow:
    quantity: str
    entry: tuple
    prediction: float
    estimates: list  # (width, value, stderr)
    r_inf: float
    r_inf_se: float
    slope: float

    @property
    def z(self) -> float:
        return self.r_inf / self.r_inf_se if self.r_inf_se > 0 else 0.0


@dataclass
class CheckReport:
    activation: str
    rows: list
    sigmas: float
    info: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(abs(r.z) < self.sigmas for r in self.rows)

    def table(self) -> str:
        widths = [w for w, _, _ in self.rows[0].estimates]
        head = f"{'quantity':<12}{'entry':>6}{'prediction':>14}" + "".join(f"{'n=' + str(w):>20}" for w in widths)
        head += f"{'fit n->inf (rel.)':>22}{'z':>7}  result"
        lines = [self._title(), head]
        for r in self.rows:
            cells = "".join(f"{v:>12.5g}±{se:<7.1g}" for _, v, se in r.estimates)
            fit = f"{r.r_inf:+.2e}±{r.r_inf_se:.1e}"
            ok = "pass" if abs(r.z) < self.sigmas else "FAIL"
            lines.append(f"{r.quantity:<12}{','.join(map(str, r.entry)):>6}{r.prediction:>14.7g}{cells}{fit:>22}{r.z:>7.2f}  {ok}")
        lines.append(f"{'all within ' + str(self.sigmas) + ' standard errors: PASS' if self.passed else 'some entries FAIL'}")
        return "\n".join(lines)

    def _title(self) -> str:
        i = self.info
        return (
            f"check {self.activation}: depth {i.get('depth')}, C_W={i.get('C_W')}, C_b={i.get('C_b')}, "
            f"param={i.get('param')!r}; {i.get('samples')} networks per width; "
            f"kernels {i.get('kernels')}; float64 vs mpmath(30 digits): {i.get('f64_vs_mp', float('nan')):.1e}"
        )

    def __str__(self) -> str:
        return self.table()


def _fit(widths, r, se):
    """Weighted least squares r = a + b/n; returns a, se(a), b."""
    A = np.stack([np.ones_like(widths, dtype=float), 1.0 / np.asarray(widths, dtype=float)], axis=1)
    w = 1.0 / np.asarray(se) ** 2
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    coef = cov @ (A.T @ (w * r))
    return coef[0], np.sqrt(cov[0, 0]), coef[1]


def check(
    activation="relu",
    X=None,
    depth: int = 3,
    C_W=2.0,
    C_b=0.0,
    param: str = "ntk",
    widths=(64, 128, 256, 512),
    samples: int = 20_000,
    seed: int = 0,
    sigmas: float = 4.0,
    progress: bool = False,
) -> CheckReport:
    """Compare the infinite-width NNGP and NTK of the output with Monte Carlo over finite networks."""
    from .defaults import default_inputs

    X = default_inputs() if X is None else np.asarray(X, dtype=float)
    N = X.shape[0]
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2:
        raise ValueError("check needs at least two widths to extrapolate to infinite width")
    preds = []
    for n in widths:
        rec = KernelRecursion(activation, depth, C_W, C_b, param, widths=n if param == "standard" else None)
        preds.append(rec(X))
    runs = [
        sample_statistics(X, activation, depth, n, C_W, C_b, param, samples=samples, seed=seed + i, fourth_order=False, progress=progress)
        for i, n in enumerate(widths)
    ]
    rows = []
    for qty, est_name, attr in (("E[f f]", "output_second_moment", "nngp"), ("E[Theta]", "ntk_mean", "ntk")):
        for a in range(N):
            for b in range(a, N):
                p = np.array([getattr(pr, attr)[a, b] for pr in preds])
                y = np.array([run[est_name].value[a, b] for run in runs])
                se = np.array([run[est_name].stderr[a, b] for run in runs])
                r_inf, r_se, slope = _fit(widths, y / p - 1.0, se / np.abs(p))
                rows.append(CheckRow(qty, (a, b), float(p[-1]), list(zip(widths, y, se)), r_inf, r_se, slope))
    rec = KernelRecursion(activation, depth, C_W, C_b, param, widths=widths[-1] if param == "standard" else None)
    info = {
        "depth": depth, "C_W": C_W, "C_b": C_b, "param": param, "samples": samples, "widths": widths,
        "kernels": "closed form" if all(k.closed_form for k in rec.kernels) else "numerical quadrature",
    }
    try:
        mp = rec.evaluate_mp(X, dps=30)
        f64 = preds[-1]
        diff = max(
            float(np.max(np.abs(np.array(mp.nngp.tolist(), float) - f64.nngp) / np.abs(f64.nngp))),
            float(np.max(np.abs(np.array(mp.ntk.tolist(), float) - f64.ntk) / np.abs(f64.ntk))),
        )
        info["f64_vs_mp"] = diff
    except Exception:  # noqa: BLE001 - the mpmath cross-check is informative only
        info["f64_vs_mp"] = float("nan")
    return CheckReport(str(activation), rows, sigmas, info)
