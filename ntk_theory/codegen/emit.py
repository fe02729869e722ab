r"""Printers of the generated kernels' scalar functions (used by :mod:`ntk_theory.codegen.graph`), and the
fingerprint of the runtime modules generated code imports (part of its cache key).

* closed form: ``pair_a(k11, k22, k12) -> (T, Tdot)``, the stable forms of the activation's closed-form
  expectations T = E[s(u) s(v)], Tdot = E[s'(u) s'(v)] (:mod:`ntk_theory.gaussian.stable`) printed by
  SymPy after common-subexpression elimination; homogeneous activations of degree alpha are evaluated at
  unit scale c = sqrt(k11 k22) (T = c^alpha T(k / c), no underflow of k11 k22);
* no closed form: ``s_a``, ``ds_a`` (the activation and its a.e. derivative, compiled) and ``KINKS_a``,
  from which the driver builds Hermite tables.
"""

from __future__ import annotations

import hashlib
import textwrap

import sympy as sp

from ..activations import x
from ..gaussian import k, k11, k12, k22  # noqa: F401  (k kept for printers of diagonal forms)
from ..gaussian.stable import stable_form
from ..jit import function_source, numba_code
from ..recursions.layer import ActivationKernels


def _pair_source(index: int, kern: ActivationKernels) -> str:
    T, Td = stable_form(kern.T.expr), stable_form(kern.Tdot.expr)
    replacements, (T_r, Td_r) = sp.cse([T, Td], symbols=sp.numbered_symbols("t"), optimizations="basic")
    body = [f"{sym} = {numba_code(val)}" for sym, val in replacements]
    body += [f"T = {numba_code(T_r)}", f"Tdot = {numba_code(Td_r)}"]
    alpha = kern.homogeneity
    if alpha is not None:
        # homogeneous of degree alpha: evaluate at unit scale c = sqrt(k11 k22) (no underflow of
        # k11 k22), T = c^alpha T(k / c), Tdot = c^(alpha - 1) Tdot(k / c)
        body = ["c = math.sqrt(k11) * math.sqrt(k22)", "if c > 0.0:", "    k11 = k11 / c", "    k22 = k22 / c",
                "    k12 = k12 / c", "else:", "    c = 1.0"] + body
        body += [f"T = T * {_power('c', alpha)}", f"Tdot = Tdot * {_power('c', alpha - 1)}"]
    body += ["return T, Tdot"]
    doc = f'"""{kern.activation.name}: T = {sp.sstr(kern.T.expr)[:300]}; Tdot = {sp.sstr(kern.Tdot.expr)[:300]}"""'
    return (
        "@numba.njit(inline='always', cache=True, error_model='numpy')\n"
        f"def pair_{index}(k11, k22, k12):\n" + textwrap.indent("\n".join([doc] + body), "    ")
    )


def _power(name: str, exponent) -> str:
    if exponent == 0:
        return "1.0"
    if exponent == 1:
        return name
    return f"{name} ** {float(exponent)!r}"


def _numeric_source(index: int, kern: ActivationKernels) -> str:
    act = kern.activation
    z = sp.Symbol("z")
    kinks = ", ".join(repr(float(c)) for c in act.kinks)
    return (
        f"# {act.name}: no closed form; Hermite series (Mehler) with direct quadrature fallback\n"
        + function_source(f"s_{index}", (z,), act.expr.subs(x, z)) + "\n"
        + function_source(f"ds_{index}", (z,), act.ae_derivative().subs(x, z)) + "\n"
        + f"KINKS_{index} = np.array([{kinks}], dtype=np.float64)\n"
    )


#: the modules the generated code imports (Numba's cache does not notice when an imported function
#: changes, so their source is part of the cache key)
RUNTIME_MODULES = ("codegen/runtime.py", "numerics/compensated.py", "numerics/compensated_numba.py", "numerics/mehler.py")


def _runtime_fingerprint() -> str:
    """Hash of :data:`RUNTIME_MODULES`."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    return "".join(hashlib.sha256((root / name).read_bytes()).hexdigest() for name in RUNTIME_MODULES)
