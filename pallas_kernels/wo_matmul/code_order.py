"""The orders and tiles a `PackedWeight`'s codes are stored in, each a one-time re-storing with
its inverse: register order (`order_for_wgmma`: `WGMMA_ORDER`, or for E2M1 `HALVES_ORDER`,
within each aligned 32 of K; undone by `logical_order`), block-contiguous tiles (`tile_weight`)
and the plain loads' thread-major blocks (`thread_major`), both undone by `untile_weight`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.wo_matmul.packed_weight import FP4
from pallas_kernels.wo_matmul.packed_weight import int4_stored
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import WeightFormat


# Storage position -> K offset within each aligned 32 of K, for int4-stored weights in the GPU
# kernels' register order: K offset 8 j + 2 q + e (j, q in 0..3, e in 0..1) is stored at
# 8 q + 2 j + e, which swaps j and q (so the table is its own inverse). A thread of Mosaic's
# WGMMA_UPCAST_4X layout loads storage positions 8 q .. 8 q + 7 of each 32 (one 32-bit word:
# lane q of its row quad), and the WGMMA layout wants that thread to hold K offsets 8 j + 2 q,
# 8 j + 2 q + 1 for j = 0..3 in its registers j: in this order the loaded word already is those
# four registers, byte j each (`registers.wgmma_from_upcast_4x`), and no shuffles are needed.
WGMMA_ORDER = np.array([8 * ((m % 8) // 2) + 2 * (m // 8) + m % 2 for m in range(32)])


# `WGMMA_ORDER` with each 32-bit word's nibbles reordered for E2M1 codes: register j's two codes
# (WGMMA_ORDER's nibbles 2 j, 2 j + 1: byte j) in nibbles j and 4 + j, one in each 16-bit half,
# where the decode isolates both with one AND and places them with one IMAD
# (`decode.e2m1_halves_words`; the byte-pair order takes a `prmt` a pair more).
HALVES_ORDER = np.array([WGMMA_ORDER[8 * (m // 8) + 2 * (m % 4) + (m % 8) // 4]
                         for m in range(32)])


def k32_order(pw: PackedWeight) -> np.ndarray | None:
  """Storage position -> K offset within each aligned 32 of K for `pw`'s codes (`WGMMA_ORDER`,
  `HALVES_ORDER`), or None for a weight stored in K order."""
  if not pw.wgmma_order:
    return None
  return HALVES_ORDER if pw.halves_order else WGMMA_ORDER


def _reorder_k32(a: jax.Array, order: np.ndarray) -> jax.Array:
  """a (..., K) -> a[..., 32 b + order[m]] at 32 b + m: K order to the storage `order` describes
  (pass `np.argsort(order)` for the way back). An index with the constant table, not the
  equivalent transpose of a (4, 4, 2) view: on an H200 XLA ran the gather at copy speed (11 us
  for 16 MB of bf16) and the transpose at 0.2 TB/s (159 us)."""
  return a.reshape(*a.shape[:-1], -1, 32)[..., order].reshape(a.shape)


def _k32_restored(pw: PackedWeight, wgmma_order: bool, halves: bool) -> PackedWeight:
  """`pw`'s codes with each aligned 32 of K in the order the flags name (`k32_order`)."""
  tiles = pw.w_tile
  pw = untile_weight(pw)
  w = pw.w.astype(jnp.int8)
  if pw.wgmma_order:  # back to K order first
    w = _reorder_k32(w, np.argsort(k32_order(pw)))
  pw = dataclasses.replace(pw, wgmma_order=wgmma_order, halves_order=halves)
  if wgmma_order:
    w = _reorder_k32(w, k32_order(pw))
  pw = dataclasses.replace(pw, w=w.astype(jnp.int4))
  return pw if tiles is None else tile_weight(pw, *tiles)


def order_for_wgmma(pw: PackedWeight, halves: bool | None = None) -> PackedWeight:
  """Stores an int4-stored weight (INT4, UINT4, MXFP4, NVFP4, NF4 slot codes) with each aligned
  32 of K in `WGMMA_ORDER`, so that the GPU kernels load it straight into their register layout
  (a one-time repacking, like `tile_weight`). Every other path reads it through
  `logical_order`.

  halves: MXFP4 / NVFP4: in `HALVES_ORDER` (each register's code pair split over the word's
  16-bit halves), which the GPU kernels' E2M1 decode takes in fewer integer ops; None keeps a
  weight already in register order as it is, else False."""
  if not int4_stored(pw):
    raise ValueError(f"WGMMA order is for int4-stored formats (NF4 as slot codes: `nf4_slots`),"
                     f" not {pw.fmt.value}")
  if pw.k % 32:
    raise ValueError(f"WGMMA order permutes aligned 32s of K: K={pw.k}")
  if halves and pw.fmt not in FP4:
    raise ValueError(f"the halves order is for E2M1 codes (MXFP4 / NVFP4), not {pw.fmt.value}")
  if pw.wgmma_order and halves in (None, pw.halves_order):
    return pw
  return _k32_restored(pw, True, bool(halves))


def logical_order(pw: PackedWeight) -> PackedWeight:
  """The inverse of `order_for_wgmma` (a no-op for a weight in K order)."""
  return _k32_restored(pw, False, False) if pw.wgmma_order else pw


# (rows, K) of a weight block whose codes a Mosaic GPU warpgroup reads by plain loads
# (`thread_major`): 64 rows x 128 codes, 16 (4-bit) or 32 (8-bit) 32-bit words a row, eight or
# sixteen for each of its 128 threads.
THREAD_BLOCK = (64, 128)


def block_words(bits: int) -> int:
  """32-bit words in a `THREAD_BLOCK` block of `bits`-bit codes (1024 or 2048)."""
  return THREAD_BLOCK[0] * THREAD_BLOCK[1] * bits // 32


def _thread_words(row_words: int, lane_word) -> np.ndarray:
  """Storage position -> the block's word, row-major (row r, word c: row_words r + c), for a
  block of `row_words` words a row in `thread_major` order. A WG_STRIDED load of the block
  with vectors of 4 words hands thread t positions 512 i + 4 t + l (l = 0..3), and the register
  layout that the decode loads its codes in (WGMMA_UPCAST_4X for 4-bit, UPCAST_2X for 8-bit: a
  32-bit word a register) gives thread t = 32 w + 4 a + q (warp w, row a of its quad group,
  lane q of the quad) in register (c, h) (column tile c of four words, row half h) the word of
  row 16 w + 8 h + a, word 4 c + lane_word(q); storing that word at i = (2 c + h) // 4,
  l = (2 c + h) % 4 makes each loaded vector lane a register as it is
  (`registers.registers_from_words`)."""
  f = np.arange(THREAD_BLOCK[0] * row_words)
  i, t, l = f // 512, (f // 4) % 128, f % 4
  reg = 4 * i + l
  c, h = reg // 2, reg % 2
  w, a, q = t // 32, (t % 32) // 4, t % 4
  return row_words * (16 * w + 8 * h + a) + 4 * c + lane_word(q)


# `_thread_words` for 4-bit codes (WGMMA_UPCAST_4X: lane q holds word q of each four) and
# 8-bit ones (WGMMA_UPCAST_2X: lanes 1 and 2 swapped, word 2 (q % 2) + q // 2)
THREAD_WORDS = {4: _thread_words(block_words(4) // 64, lambda q: q),
                8: _thread_words(block_words(8) // 64, lambda q: 2 * (q % 2) + q // 2)}


def code_bits(pw: PackedWeight) -> int:
  """Bits a stored code of `pw.w` takes: 4 for int4-stored weights, 8 for INT8 / FP8."""
  if int4_stored(pw):
    return 4
  if pw.fmt in (WeightFormat.INT8, WeightFormat.FP8):
    return 8
  raise ValueError(f"{pw.fmt.value} stores its codes as bytes of two (NF4 nibbles); "
                   "store NF4 as slot codes (`nf4_slots`) for a 4-bit layout")


def thread_major(pw: PackedWeight) -> PackedWeight:
  """Stores a weight for the GPU decode's plain loads (int4-stored formats, INT8, FP8): in
  register order (int4-stored: `order_for_wgmma`), block-contiguous in `THREAD_BLOCK` blocks
  (`tile_weight`), each block's 32-bit words in `THREAD_WORDS` order, so that every thread of a
  warpgroup loads its codes of the block as aligned 16-byte vectors that need no shuffle (a
  one-time repacking; every other reader undoes it through `untile_weight`)."""
  if pw.w_threads:
    return pw
  bits = code_bits(pw)
  pw = tile_weight(order_for_wgmma(pw) if bits == 4 else pw, *THREAD_BLOCK)
  return dataclasses.replace(pw, w=_block_words(pw.w, THREAD_WORDS[bits], bits), w_threads=True)


def _block_words(w: jax.Array, order: np.ndarray, bits: int) -> jax.Array:
  """Each `THREAD_BLOCK` block of a block-contiguous `w` (codes of `bits` each) with its 32-bit
  words taken in `order`."""
  per = 32 // bits
  return w.reshape(-1, order.size, per)[:, order].reshape(w.shape)


def tile_weight(pw: PackedWeight, tile_n: int, tile_k: int) -> PackedWeight:
  """Stores W^T block-contiguous: each (tile_n rows, tile_k of K) block one run of memory,
  blocks in (N tile, K block) order, as `(N / tile_n * K / tile_k * tile_n, tile_k)` (bytes
  columns for NF4: tile_k / 2). The GPU decode kernel then reads every pipeline step's weight
  tile as one contiguous copy instead of `tile_n` short row pieces `K` apart. Scales unchanged."""
  if pw.w_tile is not None:
    pw = untile_weight(pw)
  cols = pw.w.shape[1]
  tk = tile_k * cols // pw.k  # storage columns per tile (K / 2 bytes for NF4)
  if pw.n % tile_n or pw.k % tile_k:
    raise ValueError(f"(N, K) = ({pw.n}, {pw.k}) does not tile by ({tile_n}, {tile_k})")
  w = pw.w.reshape(pw.n // tile_n, tile_n, cols // tk, tk).transpose(0, 2, 1, 3)
  return dataclasses.replace(pw, w=w.reshape(-1, tk), w_tile=(tile_n, tile_k))


def untile_weight(pw: PackedWeight) -> PackedWeight:
  """The inverse of `tile_weight` and `thread_major` (a no-op for a row-major PackedWeight)."""
  if pw.w_tile is None:
    return pw
  if pw.w_threads:
    bits = code_bits(pw)
    pw = dataclasses.replace(pw, w=_block_words(pw.w, np.argsort(THREAD_WORDS[bits]), bits),
                             w_threads=False)
  tile_n, tile_k = pw.w_tile
  tk = pw.w.shape[1]
  cols = tk * pw.k // tile_k
  w = pw.w.reshape(pw.n // tile_n, cols // tk, tile_n, tk).transpose(0, 2, 1, 3)
  return dataclasses.replace(pw, w=w.reshape(pw.n, cols), w_tile=None)



def storage_order(x: jax.Array, pw: PackedWeight) -> jax.Array:
  """x (..., K) with its last axis in the order `pw` stores K (see `dequantize_nk`)."""
  order = k32_order(pw)
  return x if order is None else _reorder_k32(x, order)
