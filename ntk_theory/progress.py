"""Progress bars for long computations: one policy for the whole toolkit.

:func:`progress_bar` wraps an iterable (or counts ``update`` calls) in a tqdm bar on standard error.
``enabled``: True (always), False (never) or None (default: only when standard error is a terminal,
so output redirected to a file or a pipe carries no partial bars).  A bar appears only after
``delay`` seconds (default 2), so short computations print nothing.

Functions that take a ``progress`` argument pass it here unchanged; the command line passes
``False`` for ``--quiet`` and None otherwise.
"""

from __future__ import annotations

import sys

#: seconds before a bar is first drawn: computations shorter than this show none
DELAY = 2.0


def enabled_for(progress) -> bool:
    """Whether a bar would be drawn for ``progress`` (True, False or None: standard error is a terminal)."""
    if progress is None:
        stream = sys.stderr
        return bool(stream is not None and getattr(stream, "isatty", lambda: False)())
    return bool(progress)


def progress_bar(iterable=None, *, total=None, desc: str = "", unit: str = "it", enabled=None,
                 delay: float | None = None, leave: bool = False, **options):
    """A tqdm bar over ``iterable`` (or a manual one with ``total`` and ``.update()``), drawn on
    standard error when :func:`enabled_for` ``(enabled)`` holds; otherwise a disabled bar that
    passes the iterable through and ignores updates.  ``delay``: seconds before the bar is drawn
    (default :data:`DELAY`); ``options`` go to tqdm (e.g. ``unit_scale``)."""
    from tqdm.auto import tqdm

    delay = DELAY if delay is None else delay
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled_for(enabled), delay=delay,
                leave=leave, file=sys.stderr, dynamic_ncols=True, **options)
