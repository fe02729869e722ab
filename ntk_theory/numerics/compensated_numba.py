"""The functions of :mod:`.compensated` made callable from ``numba.njit`` code.

``numba.extending.register_jitable`` registers the same Python functions (not copies) as Numba
overloads, compiled into each caller; importing this module performs the registration (a separate
module so that NumPy users of :mod:`.compensated` do not import Numba).
"""

from __future__ import annotations

from numba.extending import register_jitable

from . import compensated

__all__ = ["det2", "residual", "two_product"]

two_product = register_jitable(compensated.two_product)
det2 = register_jitable(compensated.det2)
residual = register_jitable(compensated.residual)
