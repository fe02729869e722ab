"""Read a network written in ``stax`` syntax from text, safely: the text is parsed with :mod:`ast` and
only calls of the layer constructors with literal arguments are accepted (never ``eval``).

>>> from ntk_theory import stax
>>> stax.parse("stax.serial(stax.Dense(512, W_std=1.5), stax.Relu(), stax.Dense(1))")
serial(Dense(512, W_std=1.5), Relu(), Dense(1))
"""

from __future__ import annotations

import ast
import operator

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}


class ArchitectureSyntaxError(ValueError):
    """The text is not a network in stax syntax (the message names the offending part).

    A :class:`ValueError`, raised by :func:`ntk_theory.stax.parse` with a one-line message.

    Examples
    --------
    >>> from ntk_theory import stax
    >>> try:
    ...     stax.parse("serial(Dense(1), __import__('os'))")
    ... except stax.ArchitectureSyntaxError as error:
    ...     print(isinstance(error, ValueError), error)
    True unknown layer '__import__' in --arch; known: ...
    """


def parse(text: str, names: dict):
    """The value of ``text``, a call tree of the constructors in ``names`` (``stax.`` prefixes allowed)
    with numbers, strings, booleans, None, lists and tuples as arguments."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ArchitectureSyntaxError(f"--arch is not valid Python syntax: {exc.msg} in {text!r}") from None
    return _value(tree.body, names, text)


def _value(node, names, text):
    if isinstance(node, ast.Call):
        fn = _callee(node.func, names, text)
        args = [_value(a, names, text) for a in node.args]
        if any(k.arg is None for k in node.keywords):
            raise ArchitectureSyntaxError(f"**kwargs are not allowed in --arch ({text!r})")
        kwargs = {k.arg: _value(k.value, names, text) for k in node.keywords}
        try:
            return fn(*args, **kwargs)
        except TypeError as exc:
            raise ArchitectureSyntaxError(f"{ast.unparse(node)}: {exc}") from None
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, names, text)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        a, b = _value(node.left, names, text), _value(node.right, names, text)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            return _BINARY[type(node.op)](a, b)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e, names, text) for e in node.elts]
    raise ArchitectureSyntaxError(f"--arch allows only layer calls and literal numbers; got {ast.unparse(node)!r}")


def _callee(node, names, text):
    name = None
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "stax":
        name = node.attr
    if name not in names:
        shown = ast.unparse(node)
        raise ArchitectureSyntaxError(f"unknown layer {shown!r} in --arch; known: {', '.join(sorted(names))}")
    return names[name]
