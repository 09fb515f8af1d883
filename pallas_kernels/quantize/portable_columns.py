"""Portable twin of the column-wise kernel (`mosaic_gpu_columns.py`), for CI in interpret mode.

The same decomposition in a plain `pl.pallas_call`: a grid over (M tiles, K tiles); each step
reads a (32 nb, tile_k) tile of x (for MXFP4: the even and the odd rows as two column ranges of
the free (M / 2, 2 K) view), transposes each 32-row block in registers, and runs the shared
block math (`block_state`, `element_encoder` / `block_encode`) on rows of x.T; codes leave as
(K, M) or (K, M / 2) bytes and scales as (M / 32, K), transposed by XLA.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mxjax.formats.exact import div_rn
from pallas_kernels import _compat
from pallas_kernels.quantize.mosaic_gpu_columns import COLUMN_SCHEMES
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.schemes import block_amax
from pallas_kernels.quantize.schemes import block_encode
from pallas_kernels.quantize.schemes import block_state
from pallas_kernels.quantize.schemes import element_encoder
from pallas_kernels.quantize.schemes import get_scheme


def quantize_columns_portable(x: jax.Array, scheme: str = "mxfp8_e4m3", *, tile_k: int = 128,
                              nb: int = 2, interpret: Any = False) -> Quantized:
  """`mxjax.quantize(x.T, scheme)` of `x` (M, K) by the column-wise kernel's decomposition.

  Args:
    x: (M, K) bf16 or f32; blocks of 32 run along M.
    scheme: "mxfp8_e4m3" or "mxfp4".
    tile_k, nb: as in `quantize_columns_mosaic_gpu`.
    interpret: run in the Pallas interpreter.

  Returns:
    Quantized with codes (K, M) float8_e4m3fn or (K, M / 2) uint8, scale (K, M / 32) uint8.
  """
  if scheme not in COLUMN_SCHEMES:
    raise NotImplementedError(f"the column-wise kernel takes {COLUMN_SCHEMES}, not {scheme!r}")
  sch = get_scheme(scheme)
  m, k = x.shape
  b = sch.block
  tm = b * nb
  tile_k = min(tile_k, k)
  if m % tm or k % tile_k:
    raise ValueError(f"x {x.shape}: M must be a multiple of 32 * nb = {tm} and K of {tile_k}")
  paired = sch.bits == 4
  nx = 2 if paired else 1
  cw = b // nx  # code bytes per block along M
  rows, r = tm // nx, b // nx
  xin = x.astype(jnp.float32)
  xin = xin.reshape(m // 2, 2 * k) if paired else xin
  kt = k // tile_k

  def kernel(*refs):
    x_refs, (c_ref, s_ref) = refs[:nx], refs[nx:]
    for j in range(nb):
      xs = [xr[pl.ds(j * r, r), :].T for xr in x_refs]  # (tile_k, r): rows of x.T
      state = block_state(sch, block_amax(xs[0], xs[-1]), div=div_rn)
      codes = block_encode(sch, state, *xs) if paired else element_encoder(sch, state)(xs[0])
      c_ref[:, pl.ds(j * cw, cw)] = codes.astype(jnp.uint8)
      s_ref[pl.ds(j, 1), :] = state[0].astype(jnp.uint8).reshape(1, tile_k)

  in_specs = [pl.BlockSpec((rows, tile_k), lambda i, kk, h=h: (i, h * kt + kk))
              for h in range(nx)]
  codes, scale_t = _compat.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((k, m * cw // b), jnp.uint8),
                 jax.ShapeDtypeStruct((m // b, k), jnp.uint8)),
      grid=(m // tm, kt),
      in_specs=in_specs,
      out_specs=(pl.BlockSpec((tile_k, cw * nb), lambda i, kk: (kk, i)),
                 pl.BlockSpec((nb, tile_k), lambda i, kk: (i, kk))),
      interpret=interpret,
  )(*[xin] * nx)
  if not paired:
    codes = lax.bitcast_convert_type(codes, jnp.float8_e4m3fn)
  return Quantized(codes, scale_t.T, None)
