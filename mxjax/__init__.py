"""mxjax: low-precision numerics for JAX (FP8, FP6, FP4, MX, NVFP4, INT8/INT4, NF4)."""

from mxjax import analysis
from mxjax import eval  # pylint: disable=redefined-builtin
from mxjax import formats
from mxjax import nn
from mxjax import schemes
from mxjax.ops import dot_general
from mxjax.ops import einsum
from mxjax.qarray import QArray
from mxjax.qarray import dequantize
from mxjax.quantize import fake_quant
from mxjax.quantize import quantize
from mxjax.schemes import Identity
from mxjax.schemes import Scheme
from mxjax.tree import dequantize_tree
from mxjax.tree import plan_tree
from mxjax.tree import quantize_tree

__version__ = "0.1.0"

__all__ = [
    "Identity",
    "QArray",
    "Scheme",
    "analysis",
    "eval",
    "dequantize",
    "dequantize_tree",
    "dot_general",
    "einsum",
    "fake_quant",
    "formats",
    "nn",
    "plan_tree",
    "quantize",
    "quantize_tree",
    "schemes",
]
