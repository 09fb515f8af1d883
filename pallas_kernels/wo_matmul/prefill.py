"""Prefill-shaped weight-only matmul (M large): dequantize W once to bf16, then a bf16 GEMM.

At M >= ~1024 the matmul is compute-bound, so the dequantization's cost is one memory-bound
pass over W (packed bytes in, bf16 out), small next to the GEMM. XLA left to itself fuses the
dequantization into the GEMM's operand load, which runs at 0.44x (M = 1024) to 0.82x (M = 4096) of
its bf16 GEMM on an H100 (experiments/results/kernels_wo.json); an optimization barrier keeps the
two apart so the GEMM is XLA's (cuBLAS) bf16 GEMM at full rate. The fused Hopper GEMM that
dequantizes in registers (`mosaic_gpu_gemm.py`, 1.2-1.5x this path at M = 1024) is the default
for the cases it has been checked on; this path serves the rest (docs/kernels.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.wo_matmul.code_order import storage_order
from pallas_kernels.wo_matmul.layout import dequantize_nk
from pallas_kernels.wo_matmul.packed_weight import PackedWeight


def wo_matmul_dequant_gemm(x: jax.Array, pw: PackedWeight, *, out_dtype=None) -> jax.Array:
  """`x @ dequant(W)` as a bf16 dequantization pass and a separate bf16 GEMM (f32 accumulation).

  Args:
    x: (M, K) activations (cast to bf16).
    pw: PackedWeight of logical shape (K, N).
    out_dtype: result dtype; defaults to x.dtype.

  Returns:
    (M, N) array. The dequantized weight is rounded to bf16 (as XLA's own path does), so results
    differ from the f32 reference by bf16-level relative error (~2e-3).
  """
  if x.ndim != 2 or x.shape[1] != pw.k:
    raise ValueError(f"x must be (M, {pw.k}), got {x.shape}")
  # W^T (N, K): no transpose (the GEMM contracts K of both operands), and E2M1 decoded by a
  # select tree (`decode.e2m1_f32`), not the gather XLA makes of a table lookup on a GPU.
  # A weight stored in register order is dequantized in that order and x permuted to match.
  wt = lax.optimization_barrier(dequantize_nk(pw, stored_order=True).astype(jnp.bfloat16))
  xs = storage_order(x.astype(jnp.bfloat16), pw)
  y = lax.dot_general(xs, wt, (((1,), (1,)), ((), ())),
                      preferred_element_type=jnp.float32)
  return y.astype(out_dtype or x.dtype)
