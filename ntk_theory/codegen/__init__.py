"""Numba code generation for the kernel recursions: emitted source, disk cache, fused evaluation."""

from .kernel import CompiledKernel, compiled_kernel

__all__ = ["CompiledKernel", "compiled_kernel"]
