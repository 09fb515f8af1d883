"""Prefill-shaped weight-only matmul (M large): dequantize W once to bf16, then a bf16 GEMM.

At M >= ~1024 the matmul is compute-bound, so the dequantization's cost is one memory-bound
pass over W (packed bytes in, bf16 out), small next to the GEMM. XLA left to itself fuses the
dequantization into the GEMM's operand load, which runs at 0.44x (M = 1024) to 0.82x (M = 4096) of
its bf16 GEMM on an H100 (experiments/results/kernels_wo.json); an optimization barrier keeps the
two apart so the GEMM is XLA's (cuBLAS) bf16 GEMM at full rate. No Pallas kernel: a fused
W-stationary Hopper GEMM with in-register dequantization is the next step (docs/kernels.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.wo_matmul.layout import NF4_TABLE
from pallas_kernels.wo_matmul.layout import PackedWeight
from pallas_kernels.wo_matmul.layout import WeightFormat


def _e2m1_f32(c: jax.Array) -> jax.Array:
  """float32 values of E2M1 codes (uint8 0..15) by arithmetic: no table gather, which XLA's GPU
  backend runs as a slow gather inside the dequantization fusion."""
  c = c.astype(jnp.int32)
  e, m = (c >> 1) & 3, (c & 1).astype(jnp.float32)
  mag = jnp.where(e == 0, 0.5 * m, jnp.ldexp(1.0 + 0.5 * m, e - 1))
  return jnp.where(c >= 8, -mag, mag)


def dequantize_nk_bf16(pw: PackedWeight) -> jax.Array:
  """W^T (N, K) in bf16, from the kernels' layout without a transpose (the GEMM contracts K of
  both operands). Equal to `layout.dequantize(pw).T` rounded to bf16."""
  fmt = pw.fmt
  if fmt in (WeightFormat.MXFP4, WeightFormat.NVFP4, WeightFormat.NF4):
    lo, hi = pw.w & 15, pw.w >> 4
    if fmt is WeightFormat.NF4:
      lo, hi = (jnp.asarray(NF4_TABLE)[v.astype(jnp.int32)] for v in (lo, hi))
    else:
      lo, hi = _e2m1_f32(lo), _e2m1_f32(hi)
    q = jnp.stack([lo, hi], axis=-1).reshape(pw.n, pw.k)
  else:
    q = pw.w.astype(jnp.float32)
  s = pw.scale
  if fmt is WeightFormat.MXFP4:
    b = s.astype(jnp.int32)
    s = jnp.where(b == 255, jnp.float32(jnp.nan), jnp.ldexp(jnp.float32(1.0), b - 127))
  elif fmt is WeightFormat.NVFP4:
    s = pw.tensor_scale * s.astype(jnp.float32)
  w = q * jnp.repeat(s.astype(jnp.float32).T, pw.group, axis=1)
  if fmt is WeightFormat.UINT4:
    w = w - jnp.repeat(pw.offset.T, pw.group, axis=1)
  return w.astype(jnp.bfloat16)


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
  wt = lax.optimization_barrier(dequantize_nk_bf16(pw))
  y = lax.dot_general(x.astype(jnp.bfloat16), wt, (((1,), (1,)), ((), ())),
                      preferred_element_type=jnp.float32)
  return y.astype(out_dtype or x.dtype)
