"""Weight-only matmul `y = x @ dequant(W)`: reference, portable Pallas, Mosaic GPU, TPU."""

from pallas_kernels.wo_matmul import api
from pallas_kernels.wo_matmul.api import IMPLEMENTATIONS
from pallas_kernels.wo_matmul.api import wo_matmul
from pallas_kernels.wo_matmul.layout import dequantize
from pallas_kernels.wo_matmul.layout import repack
from pallas_kernels.wo_matmul.layout import repack_qarray
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat
from pallas_kernels.wo_matmul.reference import wo_matmul_reference
from pallas_kernels.wo_matmul.reference import xla_dequant_then_dot

__all__ = [
    "IMPLEMENTATIONS",
    "PackedWeight",
    "WeightFormat",
    "api",
    "dequantize",
    "repack",
    "repack_qarray",
    "wo_matmul",
    "wo_matmul_reference",
    "xla_dequant_then_dot",
]
