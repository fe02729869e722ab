r"""The squared loss and its normalisation: what "learning rate" and "time" mean in the dynamics.

For training outputs f (N, O) and targets y (N, O) the loss is

    loss="mean":  L = 1/(2 N O) sum_(a,i) (f_ai - y_ai)^2      (neural-tangents' convention)
    loss="sum":   L = 1/2       sum_(a,i) (f_ai - y_ai)^2      (Jacot et al. 2018, PDLT ch. 10)

Gradient descent in the trainable parameters with learning rate eta moves the PDLT parameters by
dtheta = -eta Lambda dL/dtheta (Lambda: the learning-rate factors, :mod:`ntk_theory.conventions`), so
in function space, with the NTK Theta = J Lambda J^T (traced over outputs: Theta (x) I_O),

    gradient flow:     df/dt = -c Theta (f - y)            t = number of steps (continuous)
    gradient descent:  f_(k+1) = f_k - c Theta (f_k - y)   (linearised network)
    c = eta / (N O) for loss="mean",   c = eta for loss="sum".

Map to neural-tangents: ``nt.predict.gradient_descent_mse(k_train_train, y_train, learning_rate=eta)``
returns ``predict_fn(t, fx_train_0, fx_test_0, k_test_train)`` whose flow is exactly the one above with
loss="mean" (its eigenvalue factor is ``expm1(-eta * t * lambda / y_train.size)``, y_train.size = N O, and
its time is ``absolute_time = learning_rate * t``); ``predict.max_learning_rate(ntk, y_train_size=N*O)``
is :meth:`MSEDynamics.max_learning_rate` with loss="mean" (neural-tangents adds eps=1e-12 to lambda_max).
"""

from __future__ import annotations

from ..docstrings import filled

LOSSES = ("mean", "sum")

# the loss argument and the Returns section rate and loss_value share
_LOSS = """loss : {'mean', 'sum'}, default 'mean'
    The loss's normalisation: 1/(2 N O) ||f - y||^2 ("mean") or 1/2 ||f - y||^2 ("sum").

Returns
-------
float

Examples
--------"""


@filled(loss=_LOSS)
def rate(learning_rate: float, n_train: int, n_outputs: int, loss: str = "mean") -> float:
    """The function-space rate c in df/dt = -c Theta (f - y): eta / (N O) for "mean", eta for "sum".

    Parameters
    ----------
    learning_rate : float
        eta.
    n_train, n_outputs : int
        N and O.
    %(loss)s
    >>> rate(2.0, 4, 1, "mean"), rate(2.0, 4, 1, "sum")
    (0.5, 2.0)
    """
    if loss == "mean":
        return float(learning_rate) / (n_train * n_outputs)
    if loss == "sum":
        return float(learning_rate)
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(map(repr, LOSSES))}")


@filled(loss=_LOSS)
def loss_value(f, y, loss: str = "mean") -> float:
    """L(f) = 1/(2 N O) ||f - y||^2 ("mean") or 1/2 ||f - y||^2 ("sum").

    Parameters
    ----------
    f, y : array_like
        Outputs and targets of the same shape, (N,) or (N, O).
    %(loss)s
    >>> loss_value([[1.0], [3.0]], [[0.0], [1.0]]), loss_value([[1.0], [3.0]], [[0.0], [1.0]], "sum")   # 5/4, 5/2
    (1.25, 2.5)
    """
    import numpy as np

    f, y = np.asarray(f, dtype=float), np.asarray(y, dtype=float)
    if f.shape != y.shape:  # (N,) - (N, 1) would broadcast to (N, N): a wrong number, not an error
        raise ValueError(f"outputs f {f.shape} and targets y {y.shape} must have the same shape")
    r = f - y
    total = 0.5 * float(np.sum(r * r))
    return total * rate(1.0, 1, max(r.size, 1), loss)  # 1 / (N O) for "mean"; an unknown loss raises


def loss_gradient_scale(n_train: int, n_outputs: int, loss: str = "mean") -> float:
    """dL/df = scale * (f - y): 1/(N O) for "mean", 1 for "sum"."""
    return rate(1.0, n_train, n_outputs, loss)
