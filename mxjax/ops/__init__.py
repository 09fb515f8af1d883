"""Quantized `dot_general` / `einsum` with explicit backends, quantized gradients and
accumulator emulation.

Public API:

  dot_general(lhs, rhs, dimension_numbers, *, lhs_scheme=None, rhs_scheme=None, schemes=None,
              backend="auto", preferred_element_type=None, accumulation=None, key=None)
  einsum(spec, lhs, rhs, *, schemes=None | DotSchemes | (lhs_scheme, rhs_scheme), backend=...,
         preferred_element_type=None, accumulation=None, key=None)
  explain(...) / explain_einsum(...) -> Explanation (backend that would run, why not the others)
  DotSchemes(lhs, rhs, grad, grad_lhs="forward", grad_rhs="forward", mode=GradMode.QUANTIZED)
  Accumulation(mantissa_bits, every, promote_every, rounding)

Each operand is a float array (quantized on the fly by its scheme along its contraction axis),
a QArray, or a float array left in high precision (scheme None / "bf16" / "fp32").

Backends: "reference" (dequantize, float32 dot: the definition of correct), "xla" (native FP8 /
INT8 dots with the scales applied to the float32 output, block scales per K-block), "pallas"
(kernels of pallas_kernels/ where wired), "auto" (by device and case). A named backend that
cannot run raises with the reason; `explain` lists the reasons.

Gradients (`jax.custom_vjp`): forward by `DotSchemes.lhs/rhs`; the dgrad matmul quantizes d_out
by `grad` and rhs by `grad_rhs`, the wgrad matmul lhs by `grad_lhs` and d_out by `grad`, each
along its own contraction axis, on the same backend (GradMode.QUANTIZED); or the
straight-through estimator of fake-quant training (GradMode.STE). QArray operands get no
gradient. See docs/ops.md.
"""

from mxjax.ops.accumulate import Accumulation
from mxjax.ops.accumulate import AccumRounding
from mxjax.ops.accumulate import round_mantissa
from mxjax.ops.backends import Backend
from mxjax.ops.config import DotSchemes
from mxjax.ops.config import GradMode
from mxjax.ops.dot import Explanation
from mxjax.ops.dot import dot_general
from mxjax.ops.dot import explain
from mxjax.ops.einsum import einsum
from mxjax.ops.einsum import explain_einsum

__all__ = [
    "AccumRounding",
    "Accumulation",
    "Backend",
    "DotSchemes",
    "Explanation",
    "GradMode",
    "dot_general",
    "einsum",
    "explain",
    "explain_einsum",
    "round_mantissa",
]
