"""Fused block quantization (one pass over HBM): reference, portable Pallas, Mosaic GPU, TPU."""

from pallas_kernels.quantize import api
from pallas_kernels.quantize.api import IMPLEMENTATIONS
from pallas_kernels.quantize.api import quantize
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.reference import quantize_reference
from pallas_kernels.quantize.schemes import SCHEMES

__all__ = [
    "IMPLEMENTATIONS",
    "Quantized",
    "SCHEMES",
    "api",
    "quantize",
    "quantize_reference",
]
