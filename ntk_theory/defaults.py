"""Built-in defaults for the command line: the inputs used when none are given."""

from __future__ import annotations

import numpy as np

DEFAULT_INPUTS_DESCRIPTION = "two inputs in d=2 at 60 degrees with x.x/d = 1"


def default_inputs() -> np.ndarray:
    """Two inputs in d = 2, normalised to ``x . x / d = 1`` and at an angle of 60 degrees."""
    angles = np.array([0.0, np.pi / 3])
    return np.sqrt(2.0) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
