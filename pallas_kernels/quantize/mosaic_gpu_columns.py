"""Column-wise (transposed) fused MXFP8 quantization on Hopper: `mxjax.quantize(x.T)` in one pass.

The backward pass of MX training wants the gradient quantized along M (blocks of 32 rows) and
stored as its transpose, (K, M), so the next GEMM reads it K-major. Reading x (M, K) and writing
x.T's codes without a separate transpose: each pipeline step TMA-loads a (32 nb, tile_k) tile of
x; for each 32-row slice, a load through a transposed view of shared memory into Mosaic GPU's
WGMMA_TRANSPOSED register layout, and a cheap relayout (one shuffle and permute per pair of
lanes) to the WGMMA layout, gives x.T's (tile_k, 32) tile: one quantization block a row, the
same shape the row-wise kernel works on. The block math is `schemes.block_state` /
`element_encoder`, shared with every backend; codes leave one byte each (no pairing needed for
8-bit codes) as (K, M), and the E8M0 scales as (M / 32, K), transposed by XLA (1/32 of the data).

MXFP4 packs two codes along M: its kernel views x (free) as (M / 2, 2 K), so the even and the
odd rows of x are two contiguous column ranges, loads them as two tiles (Mosaic GPU has no
strided smem slices), and gets the row-wise kernel's pair split along M: the packed byte is
`even | odd << 4` elementwise; codes leave as (K, M / 2). Uses TMA and register layouts the CPU
interpreter cannot run; the GPU benchmark checks it bit for bit against `mxjax.quantize(x.T)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.schemes import block_amax
from pallas_kernels.quantize.schemes import block_encode
from pallas_kernels.quantize.schemes import block_state
from pallas_kernels.quantize.schemes import div_rn_int
from pallas_kernels.quantize.schemes import element_encoder
from pallas_kernels.quantize.schemes import get_scheme

NUM_SMS_H100 = 132
COLUMN_SCHEMES = ("mxfp8_e4m3", "mxfp4")


def quantize_columns_mosaic_gpu(x: jax.Array, scheme: str = "mxfp8_e4m3", *, tile_k: int = 128,
                                nb: int = 2, steps: int = 2, ctas_per_sm: int = 2,
                                num_sms: int = NUM_SMS_H100) -> Quantized:
  """`mxjax.quantize(x.T, scheme)` of bf16 `x` (M, K) on a Hopper GPU, in one pass.

  Args:
    x: (M, K) bfloat16; blocks of 32 run along M.
    scheme: "mxfp8_e4m3" or "mxfp4".
    tile_k: columns of x (rows of x.T) per pipeline step, a multiple of 64.
    nb: 32-row blocks per pipeline step (the TMA box is (32 nb, tile_k), at most 256 rows).
    steps: TMA pipeline depth per CTA. The defaults (tile_k 128, nb 2, steps 2) were the best of
      the H100 sweep (experiments/results/kernels_quant_columns.json).
    ctas_per_sm: the K range is split so that about this many CTAs run per SM.

  Returns:
    Quantized with codes (K, M) float8_e4m3fn (MXFP8) or (K, M / 2) uint8 (MXFP4, even m in the
    low nibble) and scale (K, M / 32) uint8 E8M0.
  """
  plgpu = _compat.plgpu_module()
  if scheme not in COLUMN_SCHEMES:
    raise NotImplementedError(
        f"mosaic_gpu column-wise quantization takes {COLUMN_SCHEMES}, not {scheme!r} (not "
        "written yet; use implementation='xla' or 'portable')")
  sch = get_scheme(scheme)
  if x.ndim != 2 or x.dtype != jnp.bfloat16:
    raise NotImplementedError(f"mosaic_gpu column-wise quantization takes 2-D bf16, got "
                              f"{x.dtype}{x.shape}")
  m, k = x.shape
  b = sch.block
  tm = b * nb
  if m % tm or k % tile_k or tile_k % 64 or tm > 256:
    raise ValueError(f"x {x.shape}: M must be a multiple of 32 * nb = {tm} (<= 256) and K of "
                     f"tile_k = {tile_k} (a multiple of 64)")
  m_tiles, k_tiles = m // tm, k // tile_k
  split = 1  # K ranges per row of tiles: enough CTAs for ctas_per_sm on every SM
  while k_tiles % (split * 2) == 0 and m_tiles * split < num_sms * ctas_per_sm:
    split *= 2
  per = k_tiles // split
  span = per * tile_k

  paired = sch.bits == 4
  cw = b // 2 if paired else b  # code bytes per block along M

  def load_t(ref):  # x rows -> x.T's (tile_k, rows) tile, f32, WGMMA layout
    xt = plgpu.load(_compat.transpose_ref(ref, (1, 0)), (),
                    layout=plgpu.Layout.WGMMA_TRANSPOSED, optimized=False)
    return plgpu.layout_cast(xt, plgpu.Layout.WGMMA).astype(jnp.float32)

  # MXFP4: x viewed (free) as (M / 2, 2 K), rows 2i and 2i + 1 side by side, so the even and
  # the odd rows of x are two column ranges of one array: two contiguous tiles, no strides.
  nx = 2 if paired else 1
  rows = tm // nx  # rows of each input tile

  def body(_, *refs):
    x_smems, (c_smem, s_smem) = refs[:nx], refs[nx:]
    r = b // nx  # rows of one block in each input tile
    for j in range(nb):
      xs = [load_t(xs_.at[pl.ds(j * r, r), :]) for xs_ in x_smems]  # (tile_k, r) each
      state = block_state(sch, block_amax(xs[0], xs[-1]), div=div_rn_int)
      if paired:
        codes = block_encode(sch, state, *xs)
      else:
        codes = element_encoder(sch, state)(xs[0])
      c_smem.at[:, pl.ds(j * cw, cw)][...] = codes.astype(jnp.uint8)
      s_smem.at[j][...] = state[0].astype(jnp.uint8)

  def kernel(x_gmem, c_gmem, s_gmem):
    mi = lax.axis_index("m")
    ki = lax.axis_index("k")
    m_sl = pl.ds(mi * rows, rows)
    x_in = [x_gmem.at[m_sl, pl.ds(h * k + ki * span, span)] for h in range(nx)]
    plgpu.emit_pipeline(
        body,
        grid=(per,),
        in_specs=[plgpu.BlockSpec((rows, tile_k), lambda i: (0, i))] * nx,
        out_specs=[plgpu.BlockSpec((tile_k, cw * nb), lambda i: (i, 0)),
                   plgpu.BlockSpec((nb, tile_k), lambda i: (0, i))],
        max_concurrent_steps=min(steps, per),
    )(*x_in, c_gmem.at[pl.ds(ki * span, span), pl.ds(mi * cw * nb, cw * nb)],
      s_gmem.at[pl.ds(mi * nb, nb), pl.ds(ki * span, span)])

  f = _compat.mgpu_kernel(
      kernel,
      out_type=(jax.ShapeDtypeStruct((k, m * cw // b), jnp.uint8),
                jax.ShapeDtypeStruct((m // b, k), jnp.uint8)),
      grid=(m_tiles, split),
      grid_names=("m", "k"),
  )
  codes, scale_t = f(x.reshape(m // 2, 2 * k) if paired else x)
  if not paired:
    codes = lax.bitcast_convert_type(codes, jnp.float8_e4m3fn)
  return Quantized(codes, scale_t.T, None)
