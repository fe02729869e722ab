r"""The toolkit's vocabulary: every quantity it returns or writes to a file, with its symbol, meaning and
order in 1/n (n the hidden width).

Conventions (PDLT, :mod:`ntk_theory.conventions`): f is the network's output, Theta its NTK, z(l) the
preactivations of layer l, a, b, c, d input indices, i != j two neurons of one layer.  ``order`` is the
power of 1/n of the quantity's leading term: ``"1"`` for infinite-width values, ``"1/n"`` for the
corrections.  Predictions of a ``"1/n"`` quantity (``finite-width``) are stored as its *coefficient*,
the quantity times n; Monte Carlo estimates (``sample``) are the quantity itself at the sampled width,
with a ``NAME_stderr`` array beside it.  Arrays over pairs of inputs are (N1, N2), over four inputs
(N, N, N, N).

>>> QUANTITIES["ntk_correction"].symbol
'Theta1'
>>> check_names(["nngp", "ntk", "info"], "kernel")
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """One name of the vocabulary: ``symbol`` (plain text), ``meaning`` (a formula), ``order`` ('1', '1/n'
    or '' for metadata) and ``shape``.

    Parameters
    ----------
    name : str
        The key under which the quantity is returned or stored.
    symbol : str
        Its symbol, plain text.
    meaning : str
        Its definition, a formula in the module's conventions.
    order : {'1', '1/n', ''}
        The power of 1/n of its leading term ('' for metadata).
    shape : str
        The shape of its array, e.g. ``'(N1, N2)'``.

    Examples
    --------
    >>> from ntk_theory.quantities import QUANTITIES, Quantity
    >>> q = QUANTITIES["ntk_correction"]
    >>> isinstance(q, Quantity), q.symbol, q.order, q.shape
    (True, 'Theta1', '1/n', '(N, N)')
    """

    name: str
    symbol: str
    meaning: str
    order: str
    shape: str

    def line(self) -> str:
        """``name (symbol, order 1/n)`` (for help texts).

        Returns
        -------
        str

        Examples
        --------
        >>> from ntk_theory.quantities import quantity
        >>> quantity("nngp").line(), quantity("ntk_correction").line()
        ('nngp (K)', 'ntk_correction (Theta1, order 1/n)')
        """
        inner = ", ".join(p for p in (self.symbol, "order 1/n" if self.order == "1/n" else "") if p)
        return f"{self.name} ({inner})" if inner else self.name


_TABLE = (
    # infinite-width kernels
    Quantity("nngp", "K", "E[f_a f_b] at infinite width (NNGP kernel of the output)", "1", "(N1, N2)"),
    Quantity("ntk", "Theta", "E[Theta_ab] at infinite width (NTK of the output); empirical-ntk: the NTK "
             "J Lambda J^T of one random network", "1", "(N1, N2) or (N1, N2, O, O)"),
    # finite-width predictions (coefficients of 1/n)
    Quantity("nngp_correction", "K1", "E[f_a f_b] = K_ab + K1_ab / n + O(1/n^2)", "1/n", "(N, N)"),
    Quantity("ntk_correction", "Theta1", "E[Theta_ab] = Theta_ab + Theta1_ab / n + O(1/n^2)", "1/n", "(N, N)"),
    Quantity("ntk_covariance", "A + B + B", "Cov(Theta_ab, Theta_cd) = (A_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc)) / n",
             "1/n", "(N, N, N, N)"),
    Quantity("output_cumulant", "V + V + V", "E[f_a f_b f_c f_d] - (3 pairings of E[f f]) = (V_(ab)(cd) + "
             "V_(ac)(bd) + V_(ad)(bc)) / n", "1/n", "(N, N, N, N)"),
    Quantity("ntk_output_covariance", "D + F + F", "Cov(Theta_ab, f_c f_d) = (D_abcd + F_(ac)(bd) + F_(ad)(bc)) / n",
             "1/n", "(N, N, N, N)"),
    Quantity("V", "V", "V_(ab)(cd) = n (E[z_i;a z_i;b z_j;c z_j;d] - E[z_i;a z_i;b] E[z_j;c z_j;d])", "1/n",
             "(N, N, N, N)"),
    Quantity("A", "A", "A_(ab)(cd) = n Cov(Theta_ii;ab, Theta_jj;cd)", "1/n", "(N, N, N, N)"),
    Quantity("B", "B", "B_(pq)(rs) = n E[Theta_ij;pr Theta_ij;qs]", "1/n", "(N, N, N, N)"),
    Quantity("D", "D", "D_abcd = n Cov(Theta_ii;ab, z_j;c z_j;d)", "1/n", "(N, N, N, N)"),
    Quantity("F", "F", "F_(pq)(rs) = n E[Theta_ij;pr z_i;q z_j;s]", "1/n", "(N, N, N, N)"),
    # the dNTK and ddNTK tensors (a data table: entries alike in shape, as in the trained network's below)
    Quantity("P", "P", "dNTK: P_abcd = n E[dH_(i j j; a b c) z_(i;d)] (i != j), dH_(i0 i1 i2) = D^2 z_i0[v_i1, v_i2], "
             "v_i = Lambda grad z_i; n = the width feeding the layer", "1/n", "(N, N, N, N)"),
    Quantity("Q", "Q", "dNTK: Q_abcd = n E[dH_(i i j; a b c) z_(j;d)] (i != j); E[dH_(i0 i1 i2) z_i3] = (d_i0i3 d_i1i2 "
             "P_abcd + d_i0i1 d_i2i3 Q_abcd + d_i0i2 d_i1i3 Q_acbd) / n", "1/n", "(N, N, N, N)"),
    Quantity("R", "R", "ddNTK: R_abcd = n E[ddIH_(i i j j; a b c d)] (i != j), ddIH_(i0..i3) = D^3 z_i0[v_i1, v_i2, "
             "v_i3]", "1/n", "(N, N, N, N)"),
    Quantity("S", "S", "ddNTK: S_abcd = n E[ddIIH_(i i j j; a b c d)] (i != j), ddIIH_(i1..i4) = sum Lambda^3 "
             "d2z_i1 d2z_i2 dz_i3 dz_i4 (docs/finite_width.md)", "1/n", "(N, N, N, N)"),
    Quantity("T", "T", "ddNTK: T_abcd = n E[ddIIH_(i j i j; a b c d)] (i != j)", "1/n", "(N, N, N, N)"),
    Quantity("U", "U", "ddNTK: U_abcd = n E[ddIIH_(i j j i; a b c d)] (i != j)", "1/n", "(N, N, N, N)"),
    Quantity("K1", "K1", "per layer: E[z_i;a z_i;b] = K_ab + K1_ab / n (the readout's is nngp_correction)", "1/n",
             "(N, N)"),
    Quantity("Th1", "Theta1", "per layer: E[Theta_ii;ab] = Theta_ab + Theta1_ab / n (the readout's is "
             "ntk_correction)", "1/n", "(N, N)"),
    Quantity("K", "K", "per layer: E[z_i;a z_i;a] at infinite width, one input (residual networks; the readout's "
             "is nngp)", "1", "(N, L+1)"),
    Quantity("Th", "Theta", "per layer: E[Theta_ii;aa] at infinite width, one input (residual networks; the "
             "readout's is ntk)", "1", "(N, L+1)"),
    Quantity("M3", "M3", "per layer: M3 = n E[z_i;a^2 z_j;a] (i != j), one input (residual networks; n E[z^3] = "
             "3 M3)",
             "1/n", "(N, L+1)"),
    # Monte Carlo estimates (values at the sampled width)
    Quantity("output_second_moment", "E[f f]", "E[f_a f_b] at the sampled width", "1", "(N, N)"),
    Quantity("ntk_mean", "E[Theta]", "E[Theta_ab] at the sampled width", "1", "(N, N)"),
    Quantity("kernel_mean", "E[Khat]", "E[Khat_ab], Khat_ab = (1/n_L) sum_i z(L)_i;a z(L)_i;b (last hidden layer)",
             "1", "(N, N)"),
    Quantity("kernel_covariance", "Cov[Khat, Khat]", "Cov[Khat_ab, Khat_cd] (last hidden layer) = V_(ab)(cd) / n",
             "1/n", "(N, N, N, N)"),
    # (a data table: entries alike in shape, as the dNTK's and ddNTK's above)
    # the trained network (dynamics --finite-width; T steps, P = N train + M test inputs, train first)
    Quantity("trained_mean", "E[f_t]", "mean output after t steps of gradient descent at infinite width (the "
             "kernel prediction)", "1", "(T, P[, O])"),
    Quantity("trained_mean_correction", "E[f_lin,t]_1", "E[f_lin,t] = trained_mean + trained_mean_correction / n: "
             "the linearised model with the network's own NTK and initial outputs", "1/n", "(T, P[, O])"),
    Quantity("trained_motion_correction", "E[f_t - f_lin,t]_1", "E[f_t - f_lin,t] = trained_motion_correction / n: "
             "the NTK's motion (dNTK, ddNTKs)", "1/n", "(T, P[, O])"),
    Quantity("trained_mean_at_width", "E[f_t]", "trained_mean + (trained_mean_correction + "
             "trained_motion_correction) / n at the width n asked for", "1", "(T, P[, O])"),
    Quantity("trained_covariance", "Cov[f_t]", "covariance over networks of the outputs after t steps of gradient "
             "descent at infinite width", "1", "(T, P, P) or (T, P, O, P, O)"),
    Quantity("trained_covariance_correction", "Cov[f_lin,t]_1", "Cov[f_lin,t] = trained_covariance + "
             "trained_covariance_correction / n: the linearised model's", "1/n", "(T, P, P) or (T, P, O, P, O)"),
    Quantity("trained_motion_covariance_correction", "Cov[f_t]_1 - Cov[f_lin,t]_1", "the NTK's motion's part of "
             "the covariance's 1/n coefficient (n Cov(f_t - f_lin,t, f_lin,t) and its transpose)", "1/n",
             "(T, P, P) or (T, P, O, P, O)"),
    Quantity("trained_covariance_at_width", "Cov[f_t]", "trained_covariance + (trained_covariance_correction + "
             "trained_motion_covariance_correction) / n at the width n asked for", "1", "(T, P, P) or (T, P, O, P, O)"),
    Quantity("steps", "t", "the gradient-descent step counts (inf: converged)", "", "(T,)"),
    Quantity("y", "y", "the training targets (one column per output)", "", "(N[, O])"),
    Quantity("X_test", "X'", "the test inputs, one per row", "", "(M, d)"),
    # inputs and metadata
    Quantity("X", "X", "the inputs, one per row", "", "(N, d)"),
    Quantity("X1", "X1", "the first inputs, one per row (kernel files)", "", "(N1, d)"),
    Quantity("X2", "X2", "the second inputs, one per row (kernel files; absent when X2 = X1)", "", "(N2, d)"),
    Quantity("info", "", "JSON text: the network and how the file was computed", "", "()"),
    Quantity("description", "", "text: the network the predictions are for", "", "()"),
    Quantity("quadrature_error", "", "estimated absolute error of the numerical Gaussian averages", "", "()"),
)

#: name -> :class:`Quantity`
QUANTITIES: dict[str, Quantity] = {q.name: q for q in _TABLE}

#: the suffix of a Monte Carlo estimate's standard error: ``NAME_stderr``
STDERR_SUFFIX = "_stderr"


class UnknownQuantity(ValueError):
    """A name outside the vocabulary (the message names it and where it was used).

    A :class:`ValueError`, raised by :func:`quantity` and :func:`check_names`.

    Examples
    --------
    >>> from ntk_theory.quantities import UnknownQuantity, quantity
    >>> try:
    ...     quantity("ntk_varaince")
    ... except UnknownQuantity as error:
    ...     print(isinstance(error, ValueError), error)
    True 'ntk_varaince' is not a quantity of ntk_theory.quantities
    """


def quantity(name: str) -> Quantity:
    """The :class:`Quantity` of ``name`` (``NAME_stderr``: the standard error of NAME's estimate).

    Parameters
    ----------
    name : str
        A name of :data:`QUANTITIES`, optionally with the suffix ``_stderr``.

    Returns
    -------
    Quantity
        The entry; for ``NAME_stderr`` one derived from NAME's (symbol ``stderr(...)``, same order and shape).

    Raises
    ------
    UnknownQuantity
        If the name (without the suffix) is not in the vocabulary.

    Examples
    --------
    >>> from ntk_theory.quantities import quantity
    >>> quantity("nngp").symbol
    'K'
    >>> q = quantity("ntk_correction_stderr")
    >>> q.symbol, q.meaning, q.order
    ('stderr(Theta1)', 'standard error of the estimate of ntk_correction', '1/n')
    """
    base = name.removesuffix(STDERR_SUFFIX)
    try:
        q = QUANTITIES[base]
    except KeyError:
        raise UnknownQuantity(f"{name!r} is not a quantity of ntk_theory.quantities") from None
    if base is name:
        return q
    return Quantity(name, f"stderr({q.symbol})", f"standard error of the estimate of {base}", q.order, q.shape)


def check_names(names, where: str) -> None:
    """None if every name is in the vocabulary, else an :class:`UnknownQuantity` naming the others.

    Parameters
    ----------
    names : iterable of str
        The names used (``_stderr`` suffixes allowed).
    where : str
        What uses them, for the message.

    Raises
    ------
    UnknownQuantity
        Naming every name outside the vocabulary.

    Examples
    --------
    >>> from ntk_theory.quantities import check_names
    >>> check_names(["nngp", "ntk", "ntk_correction_stderr"], "my table")      # fine: None
    >>> check_names(["nngp", "kernel", "Theta"], "my table")
    Traceback (most recent call last):
    ...
    ntk_theory.quantities.UnknownQuantity: my table uses names outside ntk_theory.quantities: kernel, Theta
    """
    bad = []
    for n in names:
        try:
            quantity(n)
        except UnknownQuantity:
            bad.append(n)
    if bad:
        raise UnknownQuantity(f"{where} uses names outside ntk_theory.quantities: {', '.join(bad)}")


def describe(names, sep: str = ", ") -> str:
    """The help-text form of several names: ``nngp (K), ntk (Theta), ...``.

    Parameters
    ----------
    names : iterable of str
        Names of the vocabulary.
    sep : str, default ', '
        The separator.

    Returns
    -------
    str

    Raises
    ------
    UnknownQuantity
        If a name is not in the vocabulary.

    Examples
    --------
    >>> from ntk_theory.quantities import describe
    >>> describe(["nngp", "ntk", "nngp_correction"])
    'nngp (K), ntk (Theta), nngp_correction (K1, order 1/n)'
    """
    return sep.join(quantity(n).line() for n in names)


def table() -> str:
    """The vocabulary as a plain-text table.

    Returns
    -------
    str
        A header line, then one line per quantity: name, symbol, order, shape, meaning.

    Examples
    --------
    >>> from ntk_theory.quantities import QUANTITIES, table
    >>> lines = table().splitlines()
    >>> lines[0].split()[:4], len(lines) == 1 + len(QUANTITIES)
    (['name', 'symbol', 'order', 'shape'], True)
    """
    rows = [f"{'name':22s} {'symbol':16s} {'order':5s} {'shape':28s} meaning"]
    rows += [f"{q.name:22s} {q.symbol:16s} {q.order:5s} {q.shape:28s} {q.meaning}" for q in _TABLE]
    return "\n".join(rows)


__all__ = [
    "QUANTITIES",
    "STDERR_SUFFIX",
    "Quantity",
    "UnknownQuantity",
    "check_names",
    "describe",
    "quantity",
    "table",
]
