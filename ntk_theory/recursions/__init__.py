"""Infinite-width NNGP/NTK recursions: symbolic layer maps, evaluated in float64 or with mpmath."""

from .layer import ActivationKernels, LayerMap, activation_kernels
from .network import KernelRecursion, KernelResult, kernel

__all__ = ["ActivationKernels", "LayerMap", "activation_kernels", "KernelRecursion", "KernelResult", "kernel"]
