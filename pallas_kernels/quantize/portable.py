"""Portable Pallas twin of the fused block quantization (plain `pl.pallas_call`, interpret on CPU).

Same tiling and numerics as the Mosaic GPU kernel: the input is viewed as rows of one block
each, bf16 pairs as uint32 (a free bitcast), and each grid step quantizes `tile_rows` blocks
with `schemes.block_quantize`, writing the packed code pairs and one scale per row. The division
is `mxjax.formats.exact.div_rn`, because the interpreter runs on XLA's CPU, whose `/` is not
correctly rounded.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mxjax.formats.exact import div_rn
from pallas_kernels import _compat
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.reference import assemble
from pallas_kernels.quantize.reference import check_shape
from pallas_kernels.quantize.reference import tensor_terms
from pallas_kernels.quantize.schemes import NVFP4_TERMS
from pallas_kernels.quantize.schemes import block_quantize
from pallas_kernels.quantize.schemes import get_scheme


def bf16_pairs(x: jax.Array, block: int) -> jax.Array:
  """(M, K) bf16 -> (M * K // B, B // 2) uint32: each word is (even | odd << 16) (free view)."""
  return lax.bitcast_convert_type(x.reshape(-1, block // 2, 2), jnp.uint32)


def unpair_bf16(u: jax.Array) -> tuple[jax.Array, jax.Array]:
  """uint32 pair words -> (even, odd) float32 (bf16 widened exactly by a 16-bit shift)."""
  xe = lax.bitcast_convert_type(u << 16, jnp.float32)
  xo = lax.bitcast_convert_type(u & jnp.uint32(0xFFFF0000), jnp.float32)
  return xe, xo


def quantize_portable(x: jax.Array, scheme: str, *, transpose: bool = False,
                      tile_rows: int = 64, interpret: Any = False,
                      tensor_amax: jax.Array | None = None) -> Quantized:
  """Fused block quantization as a portable Pallas kernel (bf16 or f32 input).

  Args:
    x: (M, K) bf16 / f32. With transpose=True, x.T is quantized (the transpose is an XLA op
      here; the GPU kernel's column-wise path reads x directly).
    scheme: one of `schemes.SCHEMES`.
    tile_rows: blocks per grid step.
    interpret: run in the Pallas interpreter.
    tensor_amax: NVFP4's tensor amax (float32 scalar) instead of a pass over x
      (`reference.tensor_terms`).

  Returns:
    Quantized (mxjax QArray layout).
  """
  sch = get_scheme(scheme)
  if transpose:
    x = x.T
  m, k = check_shape(x, sch)
  rows, half = m * k // sch.block, sch.block // 2
  tile_rows = min(tile_rows, rows)
  if rows % tile_rows:
    raise ValueError(f"{rows} blocks do not tile by {tile_rows}")
  s_t, terms = tensor_terms(sch, x, tensor_amax)
  ts = jnp.zeros((1, NVFP4_TERMS), jnp.float32)
  if terms is not None:
    ts = jnp.stack(terms).reshape(1, NVFP4_TERMS).astype(jnp.float32)
  if x.dtype == jnp.bfloat16:
    ins = [bf16_pairs(x, sch.block)]
  else:
    xb = x.astype(jnp.float32).reshape(rows, half, 2)
    ins = [xb[..., 0], xb[..., 1]]
  out_dtype = jnp.uint16 if sch.bits == 8 else jnp.uint8
  scale_dtype = jnp.float32 if sch.scale_dtype == jnp.float32 else jnp.uint8

  def kernel(*refs):
    ts_ref, *x_refs, p_ref, s_ref = refs
    if len(x_refs) == 1:
      xe, xo = unpair_bf16(x_refs[0][...])
    else:
      xe, xo = x_refs[0][...], x_refs[1][...]
    t = None
    if sch.two_level:
      t = tuple(ts_ref[0, i] for i in range(NVFP4_TERMS))
    packed, scale = block_quantize(sch, xe, xo, t, div=div_rn)
    p_ref[...] = packed.astype(out_dtype)
    s_ref[...] = scale.astype(scale_dtype)

  spec = pl.BlockSpec((tile_rows, half), lambda i: (i, 0))
  packed, scale = _compat.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((rows, half), out_dtype),
                 jax.ShapeDtypeStruct((rows,), scale_dtype)),
      grid=(rows // tile_rows,),
      in_specs=[pl.BlockSpec((1, NVFP4_TERMS), lambda i: (0, 0))] + [spec] * len(ins),
      out_specs=(spec, pl.BlockSpec((tile_rows,), lambda i: (i,))),
      interpret=interpret,
  )(ts, *ins)
  return assemble(sch, packed, scale, m, k, s_t)
