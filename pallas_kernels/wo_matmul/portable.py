"""Portable Pallas twin of the weight-only matmul: plain `pl.pallas_call`, grid and BlockSpecs.

Same tiling and numerics as the Mosaic GPU kernel (`mosaic_gpu.py`): the output is computed
transposed-free here as (M, N) tiles, one grid step per (N tile, K step); inside a step each
quantization group g contributes `(x_g @ q_g^T) * s_g` (codes exact in the MMA operand dtype, the
scale applied to the float32 partial product), minus `rowsum(x_g) * offset_g` for UINT4. It runs
with `interpret=True` on the CPU (CI) and is the oracle-checked stand-in for the GPU kernel,
whose Mosaic GPU primitives the CPU interpreter cannot run. With `weights_bf16=True` it is the
twin of the prefill GEMM (`mosaic_gpu_gemm.py`) instead: weights dequantized in f32, rounded to
bf16, one dot a step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels.wo_matmul.code_order import logical_order
from pallas_kernels.wo_matmul.code_order import untile_weight
from pallas_kernels.wo_matmul.decode import e2m1_f32
from pallas_kernels.wo_matmul.decode import nf4_f32
from pallas_kernels.wo_matmul.decode import nf4_slot_f32
from pallas_kernels.wo_matmul.packed_weight import FP4
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat
from pallas_kernels.wo_matmul.scales import fp4_scales_stored
from pallas_kernels.wo_matmul.scales import int4_scales_f32
from pallas_kernels.wo_matmul.scales import scale_values
from pallas_kernels.wo_matmul.scales import uint4_offsets


def _decode_block(w: jax.Array, fmt: WeightFormat, nf4_slots: bool) -> jax.Array:
  """Kernel-layout weight block (tn, tk) [(tn, tk // 2) for NF4 bytes] -> f32 element values."""
  if nf4_slots:  # int4 slot codes -> the bf16 table's values (`scales.nf4_slots`)
    return nf4_slot_f32(w.astype(jnp.int32) & 15)
  if fmt is WeightFormat.NF4:
    lo, hi = w & 15, w >> 4
    return nf4_f32(jnp.stack([lo, hi], axis=-1).reshape(w.shape[0], 2 * w.shape[1]))
  if fmt in FP4:  # int4 bits -> the codes 0..15
    return e2m1_f32(w.astype(jnp.int32) & 15)
  return w.astype(jnp.float32)


def wo_matmul_portable(x: jax.Array, pw: PackedWeight, *, tile_n: int = 128, tile_k: int = 256,
                       tile_m: int | None = None, out_dtype=None, interpret: Any = False,
                       weights_bf16: bool = False, compiler_params: Any = None) -> jax.Array:
  """Weight-only matmul as a portable Pallas kernel.

  Args:
    x: (M, K) bf16/f32 activations.
    pw: PackedWeight, logical (K, N).
    tile_n, tile_k: the block of W^T one grid step reads; tile_k must be a multiple of the group
      (or, per-channel, divide K).
    tile_m: the rows of x (and of y) a grid step takes, dividing M; None: all of them (the
      decode kernels' tiling). Bounds the x and output blocks at prefill M.
    interpret: run in the Pallas interpreter (CPU).
    weights_bf16: False: the decode kernel's numerics (codes exact in the dot, the scale on the
      f32 partial product); True: the prefill GEMM's (`mosaic_gpu_gemm.py`): each weight
      dequantized in f32 as `dequantize_nk` does and rounded to bf16, then the dot.

  Returns:
    (M, N) of out_dtype (default x.dtype).
  """
  # This kernel reads W^T row-major, in K order, with the stored scales (INT4's float32 ones)
  # and UINT4's offsets.
  pw = int4_scales_f32(uint4_offsets(fp4_scales_stored(logical_order(untile_weight(pw)))))
  m, k = x.shape
  n, g, fmt = pw.n, pw.group, pw.fmt
  per_channel = g == k
  tile_n, tile_k, tile_m = min(tile_n, n), min(tile_k, k), min(tile_m or m, m)
  if n % tile_n or k % tile_k or (not per_channel and tile_k % g):
    raise ValueError(f"portable kernel: N={n}, K={k} must tile by ({tile_n}, {tile_k}) and "
                     f"tile_k must be a multiple of the group {g}")
  if m % tile_m:
    raise ValueError(f"portable kernel: M={m} must be a multiple of tile_m={tile_m} (pad x's "
                     "rows, or pass tile_m=None for one block of all M)")
  slots = fmt is WeightFormat.NF4 and pw.scale_bf16  # int4 slot codes, bf16 absmax
  wk = tile_k // 2 if fmt is WeightFormat.NF4 and not slots else tile_k  # NF4 bytes: pairs
  gps = 1 if per_channel else tile_k // g  # groups per step
  ts = jnp.zeros((1, 1), jnp.float32) if pw.tensor_scale is None else pw.tensor_scale.reshape(1, 1)
  has_off = pw.offset is not None
  ksteps = k // tile_k
  # The dot's operands: bf16 where every value is exact in it (bf16 x with INT4 / INT8 / E2M1 /
  # FP8 codes, or bf16-rounded weights), the MXU's native rate on a TPU; float32 otherwise (NF4's
  # table, f32 x). Products are exact either way and accumulate in f32, as on the GPU.
  exact_bf16 = x.dtype == jnp.bfloat16 and (weights_bf16 or slots or fmt is not WeightFormat.NF4)
  mm_dtype = jnp.bfloat16 if exact_bf16 else jnp.float32

  def kernel(x_ref, w_ref, s_ref, ts_ref, *rest):
    if has_off:
      off_ref, o_ref = rest
    else:
      (o_ref,) = rest
    kk = pl.program_id(2)

    @pl.when(kk == 0)
    def _():
      o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)

    q = _decode_block(w_ref[...], fmt, slots)  # (tn, tk) f32
    xv = x_ref[...].astype(mm_dtype)  # (tile_m, tk)
    rows = pl.ds(0 if per_channel else kk * gps, gps)  # this step's groups
    s = scale_values(s_ref[rows, :], fmt, ts_ref[0, 0])  # (gps, tn)
    off = off_ref[rows, :] if has_off else None
    acc = o_ref[...]
    if weights_bf16:  # (tn, tk) weights as dequantize_nk computes them, rounded to bf16
      w = q * jnp.repeat(s, tile_k // gps, axis=0).T
      if has_off:
        w = w - jnp.repeat(off, tile_k // gps, axis=0).T
      w = w.astype(jnp.bfloat16).astype(mm_dtype)
      o_ref[...] = acc + jax.lax.dot_general(xv, w, (((1,), (1,)), ((), ())),
                                             preferred_element_type=jnp.float32,
                                             precision=jax.lax.Precision.HIGHEST)
      return
    for j in range(gps):
      lo = j * (tile_k // gps)
      xs = xv[:, lo:lo + tile_k // gps]
      part = jax.lax.dot_general(xs, q[:, lo:lo + tile_k // gps].astype(mm_dtype),
                                 (((1,), (1,)), ((), ())),
                                 preferred_element_type=jnp.float32,
                                 precision=jax.lax.Precision.HIGHEST)
      if per_channel:
        acc = acc + part
      else:
        acc = acc + part * s[j][None, :]
        if has_off:
          acc = acc - jnp.sum(xs.astype(jnp.float32), axis=1, keepdims=True) * off[j][None, :]
    if per_channel:
      acc = jnp.where(kk == ksteps - 1, acc * s[0][None, :], acc)
    o_ref[...] = acc

  # An N tile's scales (and offsets) are one block of all G rows, read a step's rows at a time:
  # Mosaic TPU takes blocks of a multiple of 8 rows or the whole dimension, and G / K-step is
  # 1 or 2 at group 128.
  g_rows = pw.scale.shape[0]
  # Grid (M tiles, N tiles, K steps): K last, accumulated in the resident output block.
  in_specs = [
      pl.BlockSpec((tile_m, tile_k), lambda r, i, kk: (r, kk)),
      pl.BlockSpec((tile_n, wk), lambda r, i, kk: (i, kk)),
      pl.BlockSpec((g_rows, tile_n), lambda r, i, kk: (0, i)),
      pl.BlockSpec((1, 1), lambda r, i, kk: (0, 0)),
  ]
  args = [x, pw.w, pw.scale, ts]
  if has_off:
    in_specs.append(pl.BlockSpec((g_rows, tile_n), lambda r, i, kk: (0, i)))
    args.append(pw.offset)
  y = _compat.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((m, n), jnp.float32),
      grid=(m // tile_m, n // tile_n, ksteps),
      in_specs=in_specs,
      out_specs=pl.BlockSpec((tile_m, tile_n), lambda r, i, kk: (r, i)),
      interpret=interpret,
      compiler_params=compiler_params,
  )(*args)
  return y.astype(out_dtype or x.dtype)
