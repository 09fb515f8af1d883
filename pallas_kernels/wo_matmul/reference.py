"""Pure-jnp reference of the weight-only matmul: `y = x @ dequant(W)` in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.wo_matmul.layout import dequantize
from pallas_kernels.wo_matmul.packed_weight import PackedWeight


def wo_matmul_reference(x: jax.Array, pw: PackedWeight, *, out_dtype=None) -> jax.Array:
  """`x @ dequant(W)` with float32 dequantization and a float32 (HIGHEST precision) dot.

  Args:
    x: (M, K) activations, bf16 or f32.
    pw: PackedWeight of logical shape (K, N).
    out_dtype: result dtype; defaults to x.dtype.

  Returns:
    (M, N) array of out_dtype.
  """
  if x.ndim != 2 or x.shape[1] != pw.k:
    raise ValueError(f"x must be (M, {pw.k}), got {x.shape}")
  w = dequantize(pw)
  y = jnp.dot(x.astype(jnp.float32), w, precision=jax.lax.Precision.HIGHEST,
              preferred_element_type=jnp.float32)
  return y.astype(out_dtype or x.dtype)


def xla_dequant_then_dot(x: jax.Array, pw: PackedWeight, *, out_dtype=None) -> jax.Array:
  """What XLA does with a weight-only matmul left to itself: dequantize to bf16, then a bf16 dot.

  This is the baseline the kernels are measured against (XLA fuses the dequant into the dot's
  operand where it can).
  """
  w = dequantize(pw).astype(jnp.bfloat16)
  return jnp.dot(x.astype(jnp.bfloat16), w,
                 preferred_element_type=jnp.float32).astype(out_dtype or x.dtype)
