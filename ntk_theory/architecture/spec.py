"""The shape of an MLP: widths, per-layer variances C_W, C_b and the NTK parameterization."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Sequence

from .. import _checks
from ..conventions import PARAMETERIZATIONS, learning_rate_factors


@dataclass(frozen=True)
class MLPSpec:
    """An MLP ``z(1) = W(1) x + b(1)``, ``z(l+1) = W(l+1) s(z(l)) + b(l+1)`` in PDLT conventions.

    ``widths = (n_0, n_1, ..., n_L, n_out)``: input dimension, the ``L`` hidden widths and the
    output dimension.  Layer ``l`` (1-based, ``l = 1 .. L+1``) has ``W(l)`` of shape
    ``(n_l, n_(l-1))`` with entries ``N(0, C_W[l-1] / n_(l-1))`` and bias ``N(0, C_b[l-1])``.
    ``param`` fixes the NTK's learning-rate factors (see :mod:`ntk_theory.conventions`).

    Parameters
    ----------
    widths : tuple of int
        ``(n_0, n_1, ..., n_L, n_out)``, positive, at least one hidden width.
    C_W, C_b : float or sequence of float
        Weight and bias variances (keyword-only): one value for every layer, or L + 1 values (readout last).
    param : {'ntk', 'standard', 'unit'}, default 'ntk'
        The NTK parameterization.

    Raises
    ------
    ValueError
        If a width is not a positive integer, there is no hidden layer, a variance list has the wrong length
        or a negative entry, or ``param`` is unknown.

    Examples
    --------
    >>> from ntk_theory.architecture import MLPSpec
    >>> spec = MLPSpec((3, 16, 16, 1), C_W=2.0, C_b=0.1)
    >>> spec
    MLPSpec(widths=(3, 16, 16, 1), C_W=2.0, C_b=0.1, param='ntk')
    >>> spec.depth, spec.n_layers, spec.input_dim, spec.hidden_widths, spec.output_dim
    (2, 3, 3, (16, 16), 1)
    """

    widths: tuple[int, ...]
    _: KW_ONLY
    C_W: tuple[float, ...]
    C_b: tuple[float, ...]
    param: str = "ntk"

    def __post_init__(self):
        widths = tuple(_checks.positive_int(f"widths[{i}]", w) for i, w in enumerate(self.widths))
        if len(widths) < 3:
            raise ValueError(
                "widths must be (input_dim, hidden widths..., output_dim) with at least one hidden "
                f"layer (depth >= 1); got {tuple(self.widths)}"
            )
        n_layers = len(widths) - 1
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "C_W", _checks.per_layer("C_W", self.C_W, n_layers))
        object.__setattr__(self, "C_b", _checks.per_layer("C_b", self.C_b, n_layers))
        _checks.choice("param", self.param, PARAMETERIZATIONS)

    @classmethod
    def build(
        cls,
        input_dim: int,
        depth: int,
        width: int | Sequence[int],
        output_dim: int = 1,
        *,
        C_W=1.0,
        C_b=0.0,
        param: str = "ntk",
    ) -> "MLPSpec":
        """``depth`` hidden layers of ``width`` (an int, or one width per hidden layer).

        Parameters
        ----------
        input_dim : int
            n_0.
        depth : int
            The number of hidden layers L (positive).
        width : int or sequence of int
            One width for every hidden layer, or L of them.
        output_dim : int, default 1
            n_out.
        C_W, C_b : float or sequence of float, default 1.0, 0.0
            As for the constructor (keyword-only).
        param : {'ntk', 'standard', 'unit'}, default 'ntk'
            The NTK parameterization.

        Returns
        -------
        MLPSpec
            The spec with ``widths = (input_dim, *hidden, output_dim)``.

        Raises
        ------
        ValueError
            As the constructor, or if ``width`` has other than ``depth`` entries.

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> MLPSpec.build(3, 2, 16, C_W=2.0) == MLPSpec((3, 16, 16, 1), C_W=2.0, C_b=0.0)
        True
        >>> MLPSpec.build(3, 2, [8, 4]).widths
        (3, 8, 4, 1)
        """
        depth = _checks.positive_int("depth", depth)
        if isinstance(width, Sequence) and not isinstance(width, str):
            hidden = tuple(width)
            if len(hidden) != depth:
                raise ValueError(f"width has {len(hidden)} entries but depth is {depth}")
        else:
            hidden = (_checks.positive_int("width", width),) * depth
        return cls((input_dim, *hidden, output_dim), C_W=C_W, C_b=C_b, param=param)

    @property
    def depth(self) -> int:
        """Number of hidden layers L.

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> spec = MLPSpec((3, 16, 8, 1), C_W=2.0, C_b=0.0)
        >>> spec.depth
        2
        """
        return len(self.widths) - 2

    @property
    def n_layers(self) -> int:
        """Number of weight layers, L + 1.

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> spec = MLPSpec((3, 16, 8, 1), C_W=2.0, C_b=0.0)
        >>> spec.n_layers
        3
        """
        return len(self.widths) - 1

    @property
    def input_dim(self) -> int:
        """n_0, the input dimension.

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> spec = MLPSpec((3, 16, 8, 1), C_W=2.0, C_b=0.0)
        >>> spec.input_dim
        3
        """
        return self.widths[0]

    @property
    def output_dim(self) -> int:
        """n_out, the output dimension.

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> spec = MLPSpec((3, 16, 8, 1), C_W=2.0, C_b=0.0)
        >>> spec.output_dim
        1
        """
        return self.widths[-1]

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """(n_1, ..., n_L).

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> spec = MLPSpec((3, 16, 8, 1), C_W=2.0, C_b=0.0)
        >>> spec.hidden_widths
        (16, 8)
        """
        return self.widths[1:-1]

    def learning_rate_factors(self) -> list[tuple[float, float]]:
        """``[(lambda_b(l), lambda_W(l)) for l = 1 .. L+1]``.

        Returns
        -------
        list of tuple of float
            One pair per weight layer: ``(C_b, C_W)`` in 'ntk', ``(1, n_(l-1))`` in 'standard', ``(1, 1)``
            in 'unit' (:func:`ntk_theory.conventions.learning_rate_factors`).

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> MLPSpec((3, 16, 1), C_W=2.0, C_b=0.1).learning_rate_factors()
        [(0.1, 2.0), (0.1, 2.0)]
        >>> MLPSpec((3, 16, 1), C_W=2.0, C_b=0.1, param="standard").learning_rate_factors()
        [(1.0, 3.0), (1.0, 16.0)]
        """
        return [
            learning_rate_factors(self.param, C_W=self.C_W[l], C_b=self.C_b[l], fan_in=self.widths[l])
            for l in range(self.n_layers)
        ]

    def n_params(self) -> int:
        """The number of weights and biases, sum over layers of n_l (n_(l-1) + 1).

        Returns
        -------
        int

        Examples
        --------
        >>> from ntk_theory.architecture import MLPSpec
        >>> MLPSpec((3, 16, 1), C_W=1.0, C_b=0.0).n_params() == 16 * (3 + 1) + 1 * (16 + 1)
        True
        """
        return sum(n_out * (n_in + 1) for n_in, n_out in zip(self.widths[:-1], self.widths[1:]))

    def __repr__(self) -> str:
        def short(v):
            return v[0] if len(set(v)) == 1 else list(v)

        return (
            f"MLPSpec(widths={self.widths}, C_W={short(self.C_W)}, C_b={short(self.C_b)}, "
            f"param={self.param!r})"
        )
