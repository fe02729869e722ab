r"""An activation function: a SymPy expression in ``x`` with its derivatives and numerical callables."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..docstrings import RETURNS_TEXT, filled
from ..jit.overflow import NUMPY_FUNCTIONS, overflow_safe

#: The activation's variable.  Every expression is a function of this real symbol.
x = sp.Symbol("x", real=True)
_x_pos = sp.Symbol("x", positive=True)
_x_neg = sp.Symbol("x", negative=True)

KINK_ATOMS = (sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign, sp.Piecewise)


# the order argument and Returns type of Activation.derivative and ae_derivative, written once
_ORDER = """Parameters
----------
order : int, default 1
    The order of the derivative.

Returns
-------
sympy.Expr"""


@dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise nonlinearity ``s(x)`` given as a SymPy expression.

    ``expr`` is a SymPy expression in :data:`x`; ``name`` its display name; ``source`` says where
    it came from (library name with parameters, or "user expression").  Derivatives are SymPy's
    (distributional at kinks: the derivative of a jump is a Dirac delta).

    Parameters
    ----------
    name : str
        The display name.
    expr : sympy.Expr
        s(x), an expression in :data:`x`.
    source : str, default 'user expression'
        Where it came from.
    params : tuple, default ()
        A library activation's exact parameters.

    Notes
    -----
    Two activations are equal when their expressions are (names and sources aside).  Construct through
    :func:`activation` to have the expression validated (:func:`checked`).

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from ntk_theory.activations import Activation, x
    >>> act = Activation("softsign", x / (1 + sp.Abs(x)))
    >>> act
    Activation('softsign': s(x) = x/(Abs(x) + 1))
    >>> z = np.array([-2.0, 0.5])
    >>> bool(np.allclose(act.numpy(z), z / (1 + np.abs(z)), rtol=1e-15)), act.kinks, act.is_smooth
    (True, (0.0,), False)
    """

    name: str
    expr: sp.Expr
    source: str = "user expression"
    params: tuple = field(default=())

    # ------------------------------------------------------------------ calculus
    @filled(order=_ORDER)
    def derivative(self, order: int = 1) -> sp.Expr:
        """d^order s / dx^order as a SymPy expression (delta terms where s jumps).

        %(order)s
            The distributional derivative (Dirac deltas at jumps); :meth:`ae_derivative` drops them.

        Examples
        --------
        >>> import sympy as sp
        >>> from ntk_theory.activations import activation, x
        >>> activation("tanh").derivative() - (1 - sp.tanh(x)**2)
        0
        >>> activation("step").derivative()
        DiracDelta(x)
        """
        return _derivative(self.expr, order)

    @functools.cached_property
    def pieces(self) -> tuple[sp.Expr, sp.Expr]:
        """``(s_plus, s_minus)``: analytic expressions equal to s on x > 0 and on x < 0."""
        return half_line_pieces(self.expr)

    @functools.cached_property
    def kinks(self) -> tuple[float, ...]:
        """Real points where s (or a derivative) is not smooth, sorted."""
        return kinks_of(self.expr)

    @property
    def is_smooth(self) -> bool:
        """Whether s has no kinks (no point where a piece switches).

        Examples
        --------
        >>> from ntk_theory.activations import activation
        >>> activation("tanh").is_smooth, activation("relu").is_smooth
        (True, False)
        """
        return not self.kinks

    # ------------------------------------------------------------------ numerics
    @functools.cached_property
    def numpy(self):
        """s as a vectorised NumPy function."""
        return lambdify_numpy(self.expr)

    @filled(order=_ORDER)
    def ae_derivative(self, order: int = 1) -> sp.Expr:
        """d^order s / dx^order almost everywhere (Dirac deltas dropped), as backpropagation computes it.

        %(order)s
            The derivative with every Dirac delta replaced by 0.

        Examples
        --------
        >>> from ntk_theory.activations import activation, x
        >>> act = activation("step")
        >>> act.derivative(), act.ae_derivative()
        (DiracDelta(x), 0)
        """
        return drop_deltas(self.derivative(order))

    @functools.cached_property
    def numpy_derivative(self):
        """s' as a vectorised NumPy function (delta terms dropped: they act only in expectations)."""
        return lambdify_numpy(drop_deltas(self.derivative()))

    @functools.cached_property
    def mpmath(self):
        """s as an mpmath function (arbitrary precision)."""
        return sp.lambdify(x, self.expr, modules="mpmath")

    @functools.cached_property
    def mpmath_derivative(self):
        return sp.lambdify(x, drop_deltas(self.derivative()), modules="mpmath")

    # (latex/_repr_latex_/__repr__ alike in shape to gaussian.expectation's: each class displays itself)
    # ------------------------------------------------------------------ display
    @filled(returns_text=RETURNS_TEXT)
    def latex(self) -> str:
        """s(x) in LaTeX, ``sigma(x) = ...`` with a backslash (Jupyter shows it).

        %(returns_text)s
        >>> from ntk_theory.activations import activation
        >>> text = activation("tanh").latex()
        >>> text.split("=")[0].strip()[1:], "tanh" in text
        ('sigma(x)', True)
        """
        return rf"\sigma(x) = {sp.latex(self.expr)}"

    def _repr_latex_(self) -> str:
        return f"${self.latex()}$"

    def __repr__(self) -> str:
        return f"Activation({self.name!r}: s(x) = {sp.sstr(self.expr)})"

    def __hash__(self) -> int:
        return hash(self.expr)

    def __eq__(self, other) -> bool:
        return isinstance(other, Activation) and self.expr == other.expr


@functools.lru_cache(maxsize=None)
def _derivative(expr: sp.Expr, order: int) -> sp.Expr:
    return sp.diff(expr, x, order)


def half_line_pieces(expr: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(analytic expression equal to ``expr`` on x > 0, the same on x < 0)."""
    plus = sp.piecewise_fold(expr.subs(x, _x_pos)).subs(_x_pos, x)
    minus = sp.piecewise_fold(expr.subs(x, _x_neg)).subs(_x_neg, x)
    return plus, minus


def drop_deltas(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every Dirac delta replaced by 0: the almost-everywhere value (what backpropagation
    through a finite network computes for the derivative of a jump).

    Parameters
    ----------
    expr : sympy.Expr
        An expression in :data:`x`.

    Returns
    -------
    sympy.Expr

    Examples
    --------
    >>> import sympy as sp
    >>> from ntk_theory.activations import drop_deltas, x
    >>> drop_deltas(sp.Heaviside(x) + x * sp.DiracDelta(x))
    Heaviside(x)
    """
    return expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)


def _critical_points(atom) -> list:
    if isinstance(atom, (sp.Max, sp.Min)):
        args = atom.args
        eqs = [a - b for i, a in enumerate(args) for b in args[i + 1 :]]
    elif isinstance(atom, sp.Piecewise):
        eqs = []
        for _, cond in atom.args:
            for rel in cond.atoms(sp.core.relational.Relational):
                eqs.append(rel.lhs - rel.rhs)
    else:
        eqs = [atom.args[0]]
    points = []
    for eq in eqs:
        if not eq.has(x):
            continue
        try:
            sol = sp.solveset(eq, x, domain=sp.S.Reals)
        except (NotImplementedError, ValueError):
            continue
        if isinstance(sol, sp.FiniteSet):
            points.extend(float(s) for s in sol if s.is_real)
    return points


@functools.lru_cache(maxsize=None)
def kinks_of(expr: sp.Expr) -> tuple[float, ...]:
    """Points where a piecewise-defined expression switches branch (candidates for kinks)."""
    pts = set()
    for atom in expr.atoms(*KINK_ATOMS):
        pts.update(_critical_points(atom))
    return tuple(sorted(pts))


_NUMPY_MODULES = [{"Heaviside": lambda z, h0=0.5: np.heaviside(z, h0), **NUMPY_FUNCTIONS}, "scipy", "numpy"]


def lambdify_numpy(expr: sp.Expr):
    """A vectorised NumPy function of an expression in x (float64 in and out, broadcast to the input's shape).

    The expression is first put in overflow-safe form (:func:`ntk_theory.jit.overflow_safe`: log(1 + exp(a))
    and exp(m a) / (1 + exp(a))^k evaluated without overflow), so that softplus(64 x) / 64 and its derivatives
    are finite wherever their values are.

    Parameters
    ----------
    expr : sympy.Expr
        An expression in :data:`x` (Heaviside(0) = 1/2, SciPy's special functions).

    Returns
    -------
    callable
        ``f(z)`` for array_like z, a float64 array of z's shape (constants broadcast).

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from scipy import special
    >>> from ntk_theory.activations import lambdify_numpy, x
    >>> z = np.linspace(-2, 2, 5)
    >>> bool(np.allclose(lambdify_numpy(x * sp.erf(x))(z), z * special.erf(z), rtol=1e-15))
    True
    >>> lambdify_numpy(sp.Integer(3))(z)
    array([3., 3., 3., 3., 3.])
    >>> s = sp.log(1 + sp.exp(64 * x)) / 64
    >>> lambdify_numpy(s)(np.array([20.0, -20.0])), lambdify_numpy(sp.diff(s, x, 2))(np.array([20.0]))
    (array([20.,  0.]), array([0.]))
    """
    f = sp.lambdify(x, overflow_safe(expr), modules=_NUMPY_MODULES)

    def vectorised(z):
        z = np.asarray(z, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # np.select evaluates every Piecewise branch
            out = f(z)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), z.shape).copy() if np.ndim(out) < z.ndim else out

    vectorised.__name__ = f"s_{abs(hash(expr)) % 10**8}"
    vectorised.__doc__ = f"NumPy evaluation of {expr}"
    return vectorised
