r"""Full-batch gradient descent of the reference network on the squared loss, by a hand-written backward
pass (no autodiff library): :meth:`~ntk_theory.reference.MLP.vjp`, the reverse pass of the description
interpreter's tape (:mod:`ntk_theory.reference.graph`).

Backward pass (PDLT notation, :mod:`ntk_theory.conventions`), for inputs X (N, n_0), outputs f (N, O)
and g = dL/df = s (f - y) with s = 1/(N O) (loss="mean") or 1 (loss="sum"):

    delta(L+1) = g,    delta(l) = (delta(l+1) W(l+1)) * s'(z(l))           (N, n_l)
    dL/dW(l)   = delta(l)^T a(l-1),    dL/db(l) = sum_a delta(l)_a

and the update in the trainable coordinates (W = sqrt(lambda_W / n) omega, b = sqrt(lambda_b) beta for
param="ntk") is, in PDLT coordinates,

    W(l) <- W(l) - eta lambda_W(l) / n_(l-1) dL/dW(l),      b(l) <- b(l) - eta lambda_b(l) dL/db(l)

so that to first order f moves by -eta J Lambda J^T g = -c Theta (f - y) (:mod:`.loss`): the linearised
dynamics of :class:`~ntk_theory.dynamics.MSEDynamics` with the network's own NTK.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import _checks
from ..reference import MLP
from .loss import LOSSES, loss_gradient_scale, loss_value


def gradient(net: MLP, X, y, loss: str = "mean"):
    """(f(X), [(dL/dW(l), dL/db(l)) for l = 1 .. L+1]) by the backward pass.

    Parameters
    ----------
    net : MLP
        The reference network.
    X : array_like
        Inputs (N, n_0).
    y : array_like
        Targets (N, O).
    loss : {'mean', 'sum'}, default 'mean'

    Returns
    -------
    f : ndarray
        (N, O) outputs.
    grads : list of tuple
        Per layer (dL/dW(l), dL/db(l)), the shapes of the network's weights and biases.

    Examples
    --------
    Against a central finite difference of the loss in one weight:

    >>> import numpy as np
    >>> from ntk_theory.reference import MLP
    >>> net = MLP.random((2, 4, 1), "tanh", C_W=1.0, C_b=0.5, seed=0)
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); y = np.array([[1.0], [-1.0], [0.5]])
    >>> f, grads = gradient(net, X, y)
    >>> def loss_at(w):
    ...     W = net.weights[0].copy(); W[0, 1] = w
    ...     return loss_value(MLP(net.spec, net.activation, [W, net.weights[1]], net.biases)(X), y)
    >>> w, h = net.weights[0][0, 1], 1e-6
    >>> bool(np.isclose(grads[0][0][0, 1], (loss_at(w + h) - loss_at(w - h)) / (2 * h), rtol=1e-7))
    True
    """
    tr = net.forward(X)
    f = tr.output
    y = _checks.targets(y, f.shape)
    g = loss_gradient_scale(f.shape[0], f.shape[1], loss) * (f - y)
    return f, net.vjp(tr, g)


@dataclass
class TrainingRun:
    """A gradient-descent run: outputs at the recorded steps and the trained network.

    ``steps`` (R,), ``train_outputs`` (R, N, O), ``test_outputs`` (R, M, O) or None, ``loss`` (R,),
    ``network`` the trained MLP (the input network is not modified), ``initial`` a copy of it.

    Parameters
    ----------
    steps : ndarray
    train_outputs : ndarray
    test_outputs : ndarray or None
    loss : ndarray
    network, initial : MLP
    info : dict
        The learning rate and loss.

    Examples
    --------
    See :func:`train`.
    """

    steps: np.ndarray
    train_outputs: np.ndarray
    test_outputs: np.ndarray | None
    loss: np.ndarray
    network: MLP
    initial: MLP
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"TrainingRun({self.network!r}: {int(self.steps[-1])} steps, loss {self.loss[0]:.4g} -> "
                f"{self.loss[-1]:.4g}, {len(self.steps)} records)")


def _copy(net: MLP) -> MLP:
    return MLP(net.spec, net.activation, [W.copy() for W in net.weights], [b.copy() for b in net.biases])


def train(net: MLP, X, y, learning_rate: float, steps: int, loss: str = "mean", X_test=None,
          record=None) -> TrainingRun:
    """Run ``steps`` full-batch GD steps from ``net`` (copied) on (X, y).

    ``record``: the step numbers at which outputs are stored (default: 0 and ``steps``); outputs at
    ``X_test`` are stored too if given.  Raises FloatingPointError if the outputs stop being finite
    (a learning rate above the stable one).

    Parameters
    ----------
    net : MLP
        The initial network (not modified).
    X : array_like
        Training inputs (N, n_0).
    y : array_like
        Targets (N, O).
    learning_rate : float
        eta > 0; parameter theta moves by -eta lambda_theta dL/dtheta (lambda_W / n_(l-1) for W, lambda_b for b).
    steps : int
        Number of steps, >= 0.
    loss : {'mean', 'sum'}, default 'mean'
    X_test : array_like, optional
        Inputs whose outputs are recorded too.
    record : sequence of int, optional
        Steps to record, within [0, steps].

    Returns
    -------
    TrainingRun

    Raises
    ------
    FloatingPointError
        If the outputs become non-finite.
    ValueError
        If an argument is invalid.

    Examples
    --------
    For a small learning rate one step moves the outputs by -eta c Theta (f0 - y) (c = 1/N, "mean"), with
    Theta the network's NTK, up to O(eta^2):

    >>> import numpy as np
    >>> from ntk_theory.reference import MLP
    >>> net = MLP.random((2, 4, 1), "tanh", C_W=1.0, C_b=0.5, seed=0)
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); y = np.array([[1.0], [-1.0], [0.5]])
    >>> run = train(net, X, y, 1e-4, 1)
    >>> f0, f1 = run.train_outputs
    >>> bool(np.allclose(f1 - f0, -1e-4 / 3 * net.ntk(X) @ (f0 - y), rtol=1e-3, atol=1e-10))
    True
    >>> run.steps, bool(run.loss[1] < run.loss[0])
    (array([0, 1]), True)
    """
    _checks.choice("loss", loss, LOSSES)
    lr = _checks.positive("learning_rate", learning_rate)
    steps = _checks.nonnegative_int("steps", steps)
    X = _checks.inputs(X, "X", dim=net.spec.input_dim)
    Xt = None if X_test is None else _checks.inputs(X_test, "X_test", dim=net.spec.input_dim)
    record = np.unique(np.asarray([0, steps] if record is None else record, dtype=int))
    if record.size and (record[0] < 0 or record[-1] > steps):
        raise ValueError(f"record must lie in [0, {steps}]; got {record.min()} .. {record.max()}")
    initial, work = _copy(net), _copy(net)
    lams = net.spec.learning_rate_factors()
    scale_W = [lr * lam_W / W.shape[1] for (lam_b, lam_W), W in zip(lams, work.weights)]
    scale_b = [lr * lam_b for lam_b, _ in lams]
    y = None if X is None else y
    rec_train, rec_test, rec_loss = [], [], []
    k = 0
    todo = set(record.tolist())
    while True:
        tr = work.forward(X)
        f = tr.output
        if k == 0:
            y = _checks.targets(y, f.shape)
        if not np.all(np.isfinite(f)):
            raise FloatingPointError(f"outputs became non-finite at step {k}: learning rate {lr:g} is too large")
        if k in todo:
            rec_train.append(f.copy())
            rec_loss.append(loss_value(f, y, loss))
            if Xt is not None:
                rec_test.append(work(Xt))
        if k == steps:
            break
        g = loss_gradient_scale(f.shape[0], f.shape[1], loss) * (f - y)
        for l, (dW, db) in enumerate(work.vjp(tr, g)):
            work.weights[l] -= scale_W[l] * dW
            work.biases[l] -= scale_b[l] * db
        k += 1
    return TrainingRun(record, np.array(rec_train), np.array(rec_test) if Xt is not None else None,
                       np.array(rec_loss), work, initial, {"learning_rate": lr, "loss": loss})
