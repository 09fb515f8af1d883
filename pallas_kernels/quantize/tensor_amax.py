"""NVFP4's tensor amax pass, max |x| over all of x, as a Pallas kernel.

NVFP4 (two-level scales) needs the tensor's amax before its first block is encoded, so x is read
twice: this pass, then the block pass (`mosaic_gpu.py`). By default the pass is XLA's integer
max-reduction (`reference.tensor_amax_reference`, ~50 us of NVFP4's 136 at 8192 x 8192 on an
H100, 2.7 TB/s). Here it is a Mosaic GPU kernel that sweeps x in bands from its start to its end
(`tile_order.py`), so that a block pass sweeping from the end (`tile_order="bands_reversed"`)
finds the last bands read still in the L2.

Each CTA reduces its tiles of bf16 pair words (`_ptx.bf16_pairs_amax_bits`: one AND and one
`max.u16x2` a word) into a vector of row maxima carried through its pipeline, stores it, and XLA
takes the max of the CTAs' vectors (ctas x 128 int32). The result is the same float32 as the
reference's, NaN anywhere giving NaN (every NaN's bits lie above +Inf's); the caller
canonicalizes NaN (`reference.nvfp4_tensor_terms`).

Implementations: "xla" (the reference), "mosaic_gpu" (H100 / H200; gated until checked on a GPU:
`mosaic_gpu.AMAX_PASS_VERIFIED`), "portable" (the Mosaic kernel's twin: the same view, tiles and
order in a plain Pallas kernel, for the CPU interpreter).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels import _ptx
from pallas_kernels.quantize.portable import bf16_pairs
from pallas_kernels.quantize.reference import tensor_amax_reference
from pallas_kernels.quantize.tile_order import check_order
from pallas_kernels.quantize.tile_order import split_tiles
from pallas_kernels.quantize.tile_order import tile_index

WORDS = 64  # uint32 pair words a row of the pass's view of x: 128 bf16, a 256-byte TMA row
IMPLEMENTATIONS = ("xla", "mosaic_gpu", "portable")


def _view(x: jax.Array, tile_rows: int) -> jax.Array:
  """bf16 x (any shape) as (rows, WORDS) uint32 pair words, rows a multiple of tile_rows."""
  if x.dtype != jnp.bfloat16:
    raise NotImplementedError(f"the tensor amax kernel reads bf16 pair words, got {x.dtype}: "
                              "use implementation='xla'")
  if x.size % (2 * WORDS * tile_rows):
    raise ValueError(f"the tensor amax kernel reads x in tiles of {tile_rows} x {2 * WORDS} "
                     f"elements: x.size = {x.size} is not a multiple of {2 * WORDS * tile_rows} "
                     "(use implementation='xla', or another tile_rows)")
  return bf16_pairs(x.reshape(-1, 2 * WORDS), 2 * WORDS)


def _amax_from_row_bits(bits: jax.Array) -> jax.Array:
  """The float32 amax from row maxima of magnitude bits (int32, float32 bit patterns)."""
  return lax.bitcast_convert_type(jnp.max(bits), jnp.float32)


def tensor_amax_mosaic_gpu(x: jax.Array, *, tile_rows: int = 128, steps: int = 3,
                           ctas_per_sm: int = 2, tile_order: str = "bands",
                           num_sms: int = 132) -> jax.Array:
  """max |x| (float32 scalar) of bf16 `x` (any shape, x.size a multiple of 128 * tile_rows).

  Args:
    tile_rows: rows of 128 elements a pipeline step (a multiple of 64: the WGMMA layout).
    steps: TMA pipeline depth a CTA (steps x tile_rows x 256 bytes of shared memory).
    ctas_per_sm: CTAs launched an SM (`num_sms` of them on the device; two of 96 KiB by
      default, within the H100's 227 KiB an SM).
    tile_order: `tile_order.TILE_ORDERS`; "bands" sweeps x from its start, the order that
      leaves its end in the L2 for a block pass in "bands_reversed".
  """
  plgpu = _compat.plgpu_module()
  check_order(tile_order)
  if tile_rows % 64:
    raise ValueError(f"tile_rows={tile_rows} must be a multiple of 64 (the WGMMA layout)")
  words = _view(x, tile_rows)
  per, ctas = split_tiles(words.shape[0] // tile_rows, num_sms * ctas_per_sm)
  row = plgpu.Layout.WGMMA.reduce(1)

  def kernel(w_gmem, o_gmem, acc_smem):
    c = lax.axis_index("c")

    def body(_, w_smem, carry):
      w = plgpu.load(w_smem, (), layout=plgpu.Layout.WGMMA, optimized=False)
      return jnp.maximum(carry, _ptx.bf16_pairs_amax_bits(w))

    acc = plgpu.emit_pipeline(
        body,
        grid=(per,),
        in_specs=[plgpu.BlockSpec(
            (tile_rows, WORDS), lambda i: (tile_index(tile_order, i, c, per, ctas), 0))],
        max_concurrent_steps=min(steps, per),
        # zero is below every magnitude's bits
        init_carry=plgpu.layout_cast(jnp.zeros((tile_rows,), jnp.int32), row),
    )(w_gmem)
    acc_smem[...] = acc
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(acc_smem, o_gmem.at[pl.ds(c * tile_rows, tile_rows)])
    plgpu.wait_smem_to_gmem(0)

  bits = _compat.mgpu_kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((ctas * tile_rows,), jnp.int32),
      grid=(ctas,),
      grid_names=("c",),
      scratch_types=[plgpu.SMEM((tile_rows,), jnp.int32)],
  )(words)
  return _amax_from_row_bits(bits)


def tensor_amax_portable(x: jax.Array, *, tile_rows: int = 128, ctas: int = 4,
                         tile_order: str = "bands", interpret=False) -> jax.Array:
  """`tensor_amax_mosaic_gpu`'s twin: the same view of x, tiles and order (each of `ctas`
  programs accumulating its tiles into its row of the output), plain Pallas."""
  check_order(tile_order)
  words = _view(x, tile_rows)
  ntiles = words.shape[0] // tile_rows
  if ntiles % ctas:
    raise ValueError(f"{ntiles} tiles of {tile_rows} rows do not split over {ctas} programs")
  per = ntiles // ctas

  def kernel(w_ref, o_ref):
    @pl.when(pl.program_id(1) == 0)
    def _():
      o_ref[...] = jnp.zeros_like(o_ref)
    m = w_ref[...] & jnp.uint32(0x7FFF7FFF)
    halves = jnp.maximum(m & jnp.uint32(0xFFFF), m >> 16)
    bits = (jnp.max(halves, axis=1) << 16).astype(jnp.int32)
    o_ref[...] = jnp.maximum(o_ref[...], bits[None, :])

  bits = _compat.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((ctas, tile_rows), jnp.int32),
      grid=(ctas, per),
      in_specs=[pl.BlockSpec(
          (tile_rows, WORDS), lambda c, i: (tile_index(tile_order, i, c, per, ctas), 0))],
      out_specs=pl.BlockSpec((1, tile_rows), lambda c, i: (c, 0)),
      interpret=interpret,
  )(words)
  return _amax_from_row_bits(bits)


def tensor_amax(x: jax.Array, *, implementation: str = "xla", interpret=False,
                **tuning) -> jax.Array:
  """max |x| (float32 scalar; NaN if x holds one) by `implementation` (`IMPLEMENTATIONS`)."""
  if implementation == "xla":
    return tensor_amax_reference(x)
  if implementation == "mosaic_gpu":
    if interpret:
      raise NotImplementedError("mosaic_gpu cannot run in the CPU interpreter: test its twin, "
                                "implementation='portable'")
    return tensor_amax_mosaic_gpu(x, **tuning)
  if implementation == "portable":
    return tensor_amax_portable(x, interpret=interpret, **tuning)
  raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
