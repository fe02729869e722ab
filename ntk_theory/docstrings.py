"""Docstring sections shared by several functions, written once and filled in (as scipy's ``doccer``).

A docstring line that holds only ``%(name)s`` is replaced by the section ``name``, every line of it indented
as the placeholder line is; the rest of the docstring is left as written.

Examples
--------
>>> from ntk_theory.docstrings import filled
>>> VARIANCE = "kk : array_like\\n    Variances."
>>> @filled(variance=VARIANCE)
... def f(kk):
...     '''Twice kk.
...
...     Parameters
...     ----------
...     %(variance)s
...     '''
>>> print(f.__doc__.splitlines()[4:6])
['    kk : array_like', '        Variances.']
"""

from __future__ import annotations

import re

__all__ = ["FIGURE", "INPUT_PAIR", "RETURNS_TEXT", "fill", "filled", "returns"]

#: the Parameters entries of a kernel's two input sets
INPUT_PAIR = """X1 : array_like
    Inputs (N1, d).
X2 : array_like or None, default None
    Inputs (N2, d); None: ``X1``."""



def returns(kind: str, *description: str) -> str:
    """A Returns section of one value of type ``kind`` (its ``description`` lines indented under it), then
    the Examples header, the frame many short docstrings share.

    Parameters
    ----------
    kind : str
        The returned type.
    *description : str
        Lines describing it.

    Returns
    -------
    str
        The sections, unindented.

    Examples
    --------
    >>> from ntk_theory.docstrings import returns
    >>> print(returns("ndarray", "(P,)."))
    Returns
    -------
    ndarray
        (P,).
    <BLANKLINE>
    Examples
    --------
    """
    return "\n".join(["Returns", "-------", kind, *("    " + line for line in description), "", "Examples", "--------"])


#: the Returns section of the display methods (``latex()``, ``text()``) and the Examples header after it
RETURNS_TEXT = returns("str")

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$")


def fill(doc: str | None, **sections: str) -> str | None:
    """``doc`` with each line that holds only ``%(name)s`` replaced by ``sections[name]``, indented as it
    (KeyError for a placeholder that names no given section).

    Parameters
    ----------
    doc : str or None
        A docstring (None, as under ``python -OO``, is returned as is).
    **sections : str
        The sections by name (unindented text; several lines allowed).

    Returns
    -------
    str or None
        The filled docstring.

    Examples
    --------
    >>> from ntk_theory.docstrings import fill
    >>> fill("Sum.\\n\\n    %(ret)s\\n", ret="Returns\\n-------\\nfloat")
    'Sum.\\n\\n    Returns\\n    -------\\n    float\\n'
    """
    if doc is None:
        return None
    out = []
    for line in doc.split("\n"):
        match = _PLACEHOLDER.match(line)
        if match is None:
            out.append(line)
            continue
        indent, name = match.groups()
        out.extend(indent + part if part else part for part in sections[name].split("\n"))
    return "\n".join(out)


def filled(**sections: str):
    """A decorator filling the decorated function's or class's docstring with :func:`fill`.

    Parameters
    ----------
    **sections : str
        The sections by name.

    Returns
    -------
    callable
        The decorator; it returns the object it decorates, its ``__doc__`` filled.

    Examples
    --------
    >>> from ntk_theory.docstrings import filled
    >>> @filled(note="Doubles its argument.")
    ... def double(v):
    ...     '''%(note)s'''
    ...     return 2 * v
    >>> double.__doc__
    'Doubles its argument.'
    """
    def decorate(obj):
        obj.__doc__ = fill(obj.__doc__, **sections)
        return obj

    return decorate


#: the Returns and Raises sections of the functions that draw with matplotlib (the ``plot`` extra)
FIGURE = """Returns
-------
matplotlib.figure.Figure

Raises
------
ImportError
    Without matplotlib (the ``plot`` extra)."""
