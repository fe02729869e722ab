"""ntk-theory: exact kernels of wide neural networks, and the finite networks that check them.

Pipeline: activations -> gaussian -> recursions -> codegen (symbolic, infinite and finite width);
reference -> montecarlo -> validation (finite networks, the ground truth).

Top-level names are imported on first use (PEP 562), so ``from ntk_theory import stax`` loads neither
Numba nor the compiled kernels: ``stax`` (neural-tangents-compatible layers), ``kernel`` (NNGP and NTK of
any description, :func:`ntk_theory.recursions.graph.kernel`), ``quantities`` (the names of what is
returned and written), ``KernelRecursion``, ``CompiledKernel``, ``check``, ``check_finite_width``,
``sample_statistics``, ``empirical_ntk``, ``as_mlp``, ``mlp_description``, ``activation`` and the
subpackages (``finite_width``, ``criticality``, ``dynamics``, ...).  ``AccuracyWarning`` is the warning of a
result whose estimated error exceeds its requested tolerance (returned with that estimate).
"""

import importlib

from ._checks import AccuracyWarning
from .conventions import PARAMETERIZATIONS, learning_rate_factors

__version__ = "0.1.0"

#: name -> (module, attribute or None for the module itself), imported on first access
_LAZY = {
    "stax": ("ntk_theory.stax", None),
    "MLP": ("ntk_theory.reference", "MLP"),
    "MLPSpec": ("ntk_theory.architecture", "MLPSpec"),
    "quantities": ("ntk_theory.quantities", None),
    "kernel": ("ntk_theory.recursions.graph", "kernel"),
    "KernelRecursion": ("ntk_theory.recursions", "KernelRecursion"),
    "KernelResult": ("ntk_theory.recursions", "KernelResult"),
    "CompiledKernel": ("ntk_theory.codegen", "CompiledKernel"),
    "check": ("ntk_theory.validation", "check"),
    "check_finite_width": ("ntk_theory.validation", "check_finite_width"),
    "sample_statistics": ("ntk_theory.montecarlo", "sample_statistics"),
    "empirical_ntk": ("ntk_theory.empirical", "empirical_ntk"),
    "as_mlp": ("ntk_theory.architecture.mlp", "as_mlp"),
    "mlp_description": ("ntk_theory.architecture.mlp", "mlp_description"),
    "activation": ("ntk_theory.activations", "activation"),
    # subpackages (an attribute of the package once imported, whoever imports it first)
    **{name: (f"ntk_theory.{name}", None) for name in (
        "activations", "architecture", "gaussian", "numerics", "recursions", "codegen", "finite_width",
        "criticality", "dynamics", "empirical", "reference", "montecarlo", "validation")},
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ntk_theory' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AccuracyWarning",
    "MLP",
    "PARAMETERIZATIONS",
    "MLPSpec",
    "__version__",
    "kernel",
    "learning_rate_factors",
    "quantities",
    "stax",
]
