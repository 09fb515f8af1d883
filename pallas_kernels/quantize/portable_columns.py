"""Portable twin of the column-wise kernel (`mosaic_gpu_columns.py`), for CI in interpret mode.

The same decomposition in a plain `pl.pallas_call`: a grid over (M tiles, K tiles); each step
reads a (B nb, tile_k) tile of x (4-bit schemes: the even and the odd rows as two column ranges
of the free (M / 2, 2 K) view; four row classes with `quad_pack`), transposes each B-row block,
and runs the shared block math (`block_state`, `element_encoder` / `block_encode`) on rows of
x.T, in the GPU kernel's pieces (`PIECE`: the amax merged over pieces, then each piece encoded);
codes leave as (K, M) or (K, M / 2) bytes and scales as (M / B, K), transposed by XLA.
"""

from __future__ import annotations

from typing import Any
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mxjax.formats.exact import div_rn
from pallas_kernels import _compat
from pallas_kernels.quantize.mosaic_gpu_columns import column_blocks
from pallas_kernels.quantize.mosaic_gpu_columns import column_result
from pallas_kernels.quantize.mosaic_gpu_columns import input_views
from pallas_kernels.quantize.mosaic_gpu_columns import tiles_amax
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.reference import tensor_terms
from pallas_kernels.quantize.schemes import NVFP4_TERMS
from pallas_kernels.quantize.schemes import amax_merge
from pallas_kernels.quantize.schemes import block_encode
from pallas_kernels.quantize.schemes import block_state
from pallas_kernels.quantize.schemes import element_encoder
from pallas_kernels.quantize.schemes import nvfp4_pair_codes
from pallas_kernels.quantize.schemes import pair_scale_word


def quantize_columns_portable(x: jax.Array, scheme: str = "mxfp8_e4m3", *, tile_k: int = 128,
                              nb: int | None = None, piece: int | None = None,
                              interpret: Any = False,
                              tensor_amax: jax.Array | None = None,
                              cast_pair: Callable | None = None,
                              fma: Callable | None = None,
                              quad_pack: bool = False,
                              e2m1_pair: Callable | None = None) -> Quantized:
  """`mxjax.quantize(x.T, scheme)` of `x` (M, K) by the column-wise kernel's decomposition.

  Args:
    x: (M, K) bf16 or f32; blocks of B run along M.
    scheme: any of `schemes.SCHEMES`.
    tile_k, nb, piece: as in `quantize_columns_mosaic_gpu`.
    interpret: run in the Pallas interpreter.
    tensor_amax: NVFP4's tensor amax (float32 scalar) instead of a pass over x
      (`reference.tensor_terms`).
    cast_pair, fma: E4M3 schemes, the GPU kernel's `pair_cast` decomposition: the codes two
      along M by cast_pair(lo, hi) -> int32 code(lo) | code(hi) << 8 (on the GPU
      `_ptx.e4m3_pair`; here a model of it), left as uint16 words; `fma` a fused multiply-add
      for FP8 1x128's quotient (`schemes.block_encode`).
    quad_pack: MXFP4 / INT4 g128, the GPU kernel's `quad_pack`: four row classes of x as four
      tiles, the codes of rows 4i .. 4i + 3 one uint16 word.
    e2m1_pair: MXFP4 / NVFP4, the GPU kernel's `pair_e2m1`: MXFP4's even and odd row tiles
      made into bf16 pair words, their code bytes by e2m1_pair(words, k1, k2) (on the GPU
      `_ptx.e2m1_pairs`; here a model of it), k1 / k2 the block factors as
      `schemes.pair_scale_word`s; NVFP4's by e2m1_pair(even, odd, r) (`_ptx.e2m1_scaled_pairs`,
      `schemes.nvfp4_pair_codes`), r the blocks' factors.

  Returns:
    Quantized in mxjax's layout for x.T (`mosaic_gpu_columns.column_result`).
  """
  pairs = cast_pair is not None
  if e2m1_pair is not None and (quad_pack or scheme not in ("mxfp4", "nvfp4")):
    raise ValueError("e2m1_pair encodes the even and odd row tiles' E2M1 codes a pair at a "
                     "time: MXFP4 or NVFP4 without quad_pack only")
  sch, nb, r, pieces = column_blocks(scheme, nb, piece, pairs=pairs, quads=quad_pack)
  m, k = x.shape
  b = sch.block
  tm = b * nb
  tile_k = min(tile_k, k)
  if m % tm or k % tile_k:
    raise ValueError(f"x {x.shape}: M must be a multiple of B * nb = {tm} and K of {tile_k}")
  nx = input_views(sch, pairs, quad_pack)
  c_dtype = jnp.uint16 if pairs or quad_pack else jnp.uint8
  cw = b // nx  # code bytes (or uint16 words of two or four codes) per block along M
  rows, pr = tm // nx, r // pieces
  scale_dtype = jnp.float32 if sch.scale_dtype == jnp.float32 else jnp.uint8
  xin = x.astype(jnp.float32)
  xin = xin.reshape(m // nx, nx * k)
  kt = k // tile_k
  s_t, terms = tensor_terms(sch, x, tensor_amax)
  ts = jnp.zeros((1, NVFP4_TERMS), jnp.float32)
  if terms is not None:
    ts = jnp.stack(terms).reshape(1, NVFP4_TERMS).astype(jnp.float32)

  def kernel(ts_ref, *refs):
    x_refs, (c_ref, s_ref) = refs[:nx], refs[nx:]
    t = tuple(ts_ref[0, i] for i in range(NVFP4_TERMS)) if sch.two_level else None
    for j in range(nb):
      def tiles(p, j=j):  # piece p of block j: (tile_k, pr) rows of x.T, per input tile
        return [xr[pl.ds(j * r + p * pr, pr), :].T for xr in x_refs]

      amax = None
      for p in range(pieces):
        xs = tiles(p)
        a = tiles_amax(xs)
        amax = a if amax is None else amax_merge(amax, a)
      state = block_state(sch, amax, t, div=div_rn)
      for p in range(pieces):
        xs = tiles(p)
        if nx == 1:
          codes = element_encoder(sch, state)(xs[0])
        elif e2m1_pair is not None and sch.two_level:
          codes = nvfp4_pair_codes(state, xs[0], xs[1], e2m1_pair)
        elif e2m1_pair is not None:
          lo, hi = (lax.bitcast_convert_type(v, jnp.uint32) for v in xs[:2])
          words = (lo >> 16) | (hi & jnp.uint32(0xFFFF0000))
          k1, k2 = (jnp.broadcast_to(pair_scale_word(f)[:, None], words.shape)
                    for f in state[1:])
          codes = e2m1_pair(words, k1, k2)
        else:
          enc = lambda xe, xo: block_encode(sch, state, xe, xo, fma=fma, cast_pair=cast_pair)
          codes = enc(*xs[:2]) if nx == 2 else enc(*xs[:2]) | (enc(*xs[2:]) << 8)
        c_ref[:, pl.ds(j * cw + p * pr, pr)] = codes.astype(c_dtype)
      s_ref[pl.ds(j, 1), :] = state[0].astype(scale_dtype).reshape(1, tile_k)

  in_specs = [pl.BlockSpec((1, NVFP4_TERMS), lambda i, kk: (0, 0))]
  in_specs += [pl.BlockSpec((rows, tile_k), lambda i, kk, h=h: (i, h * kt + kk))
               for h in range(nx)]
  codes, scale_t = _compat.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((k, m * cw // b), c_dtype),
                 jax.ShapeDtypeStruct((m // b, k), scale_dtype)),
      grid=(m // tm, kt),
      in_specs=in_specs,
      out_specs=(pl.BlockSpec((tile_k, cw * nb), lambda i, kk: (kk, i)),
                 pl.BlockSpec((nb, tile_k), lambda i, kk: (i, kk))),
      interpret=interpret,
  )(ts, *[xin] * nx)
  return column_result(sch, codes, scale_t, s_t)
