r"""Per-mode factors of the training schedule: how much of a mode's residual is left, and how much it has
moved the outputs elsewhere.

For a mode of the training kernel with eigenvalue lambda and the function-space rate c (:mod:`.loss`):

    gradient flow, time t:       decay = exp(-c lambda t)      gain = (1 - exp(-c lambda t)) / lambda
    gradient descent, k steps:   decay = (1 - c lambda)^k      gain = (1 - (1 - c lambda)^k) / lambda
    t = inf:                     decay = 0                     gain = 1 / lambda

``decay`` multiplies the residual f - y along the mode; ``gain`` is c times the time integral (sum) of
the decay, the factor a test output receives through Theta_test,train.  For null modes (lambda = 0)
decay = 1 and gain = c t (c k), except at t = inf where gain = 0 (the pseudo-inverse: a PSD joint kernel
has Theta_test,train v = 0 along them).  Evaluated with expm1/log1p so that c lambda t ~ 1e-16 keeps
its digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _times(t, name):
    try:
        t = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers; got {t!r}") from None
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError(f"{name} must be >= 0 (and not NaN); got {t}")
    return t


@dataclass(frozen=True)
class Schedule:
    """Gradient flow at times ``t`` (continuous; ``inf`` allowed) or gradient descent after ``steps``.

    Parameters
    ----------
    times : ndarray
        Flow times or step counts (build with :meth:`of`, which checks them).
    discrete : bool
        True for gradient descent.

    Examples
    --------
    Per mode with rate x = c lambda, the decay is exp(-x t) (flow) or (1 - x)^k (descent) and the gain
    (1 - decay) / lambda:

    >>> import numpy as np
    >>> lam, null = np.array([1.0, 4.0]), np.array([False, False])
    >>> decay, gain = Schedule.of(t=2.0).factors(lam, null, 0.25)
    >>> bool(np.allclose(decay, np.exp(-0.25 * lam * 2.0))), bool(np.allclose(gain, (1 - decay) / lam))
    (True, True)
    >>> decay, _ = Schedule.of(steps=[1, 3]).factors(lam, null, 0.25)
    >>> bool(np.allclose(decay, (1 - 0.25 * lam) ** np.array([[1], [3]])))
    True
    """

    times: np.ndarray
    discrete: bool

    @classmethod
    def of(cls, t=None, steps=None) -> "Schedule":
        """The schedule of exactly one of ``t`` (flow times, >= 0, ``inf`` allowed) or ``steps`` (integers >= 0).

        Parameters
        ----------
        t : float or array_like, optional
        steps : int or array_like, optional

        Returns
        -------
        Schedule

        Raises
        ------
        ValueError
            If both or neither are given, or a time or step count is negative, NaN or (steps) not an integer.

        Examples
        --------
        >>> import numpy as np
        >>> Schedule.of(t=[1.0, np.inf]).discrete, Schedule.of(steps=3).discrete, Schedule.of(steps=[1, 2]).shape
        (False, True, (2,))
        """
        if (t is None) == (steps is None):
            raise ValueError("give exactly one of t (gradient flow time, in steps; inf for the limit) "
                             "or steps (number of gradient-descent steps)")
        if t is not None:
            return cls(_times(t, "t"), False)
        k = _times(steps, "steps")
        if np.any(~np.isfinite(k)) or np.any(k != np.round(k)):
            raise ValueError(f"steps must be finite non-negative integers; got {steps}")
        return cls(k, True)

    @property
    def shape(self) -> tuple:
        """The shape of the times."""
        return self.times.shape

    def factors(self, lam: np.ndarray, null: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
        """(decay, gain), each of shape (*times.shape, N).

        Parameters
        ----------
        lam : ndarray
            (N,) eigenvalues.
        null : ndarray
            (N,) bool, the modes treated as zero (no decay; gain c t, or c k).
        c : float
            The function-space rate (:func:`~ntk_theory.dynamics.loss.rate`).

        Returns
        -------
        decay, gain : ndarray

        Examples
        --------
        See :class:`Schedule`.
        """
        T = self.times[..., None]
        x = c * lam  # per-step rate of each mode
        safe = np.where(null, 1.0, lam)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.discrete:
                small = x < 1.0
                log_base = np.log1p(-np.where(small, x, 0.0))
                powered_small = np.expm1(T * log_base)  # (1 - x)^k - 1, accurate for small x
                powered_big = (1.0 - x) ** T - 1.0
                pm1 = np.where(small, powered_small, powered_big)
                decay = 1.0 + pm1
                gain = np.where(null, c * T, -pm1 / safe)
            else:
                finite = np.isfinite(T)
                xt = np.where(finite, x * np.where(finite, T, 0.0), np.inf)
                xt = np.where(null & ~finite, 0.0, xt)
                em1 = np.expm1(-xt)
                decay = np.where(null, 1.0, 1.0 + em1)
                gain = np.where(null, np.where(finite, c * np.where(finite, T, 0.0), 0.0), -em1 / safe)
        return decay, gain

    def __repr__(self) -> str:
        kind = "gradient descent, steps" if self.discrete else "gradient flow, t"
        return f"Schedule({kind} = {self.times})"
