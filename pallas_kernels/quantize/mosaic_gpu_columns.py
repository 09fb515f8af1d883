"""Column-wise (transposed) fused quantization on Hopper: `mxjax.quantize(x.T)` in one pass.

The backward pass of low-precision training wants the gradient quantized along M (blocks of B
rows) and stored as its transpose, (K, M), so the next GEMM reads it K-major. Reading x (M, K)
and writing x.T's codes without a separate transpose: each pipeline step TMA-loads a
(B nb, tile_k) tile of x; for each B-row slice, a load through a transposed view of shared
memory into Mosaic GPU's WGMMA_TRANSPOSED register layout, and a cheap relayout (one shuffle and
permute per pair of lanes) to the WGMMA layout, gives x.T's (tile_k, B) tile: one quantization
block a row, the shape the row-wise kernel works on. The block math is `schemes.block_state` /
`element_encoder`, shared with every backend; codes leave one byte each (8-bit) as (K, M), the
scales as (M / B, K), transposed by XLA (1/B of the data).

4-bit schemes (MXFP4, NVFP4, INT4 g128) pack two codes along M: the kernel views x (free) as
(M / 2, 2 K), so the even and the odd rows of x are two contiguous column ranges, loads them as
two tiles (Mosaic GPU has no strided smem slices), and gets the row-wise kernel's pair split
along M: the packed byte is `even | odd << 4` elementwise; codes leave as (K, M / 2). FP8 1x128
takes the same split (`pair_cast`): its codes are cast two at a time, one PTX cvt a pair,
already the little-endian uint16 of two adjacent code bytes. MXFP4 and INT4 g128 can go one
step further (`quad_pack`, INT4's default): x viewed as (M / 4, 4 K), four tiles (rows 4i ..
4i + 3), two packed bytes made into one little-endian uint16 word of four codes. NVFP4's
tensor amax is an XLA reduction first (the same for x and x.T), its terms an input. FP8 1x128
and INT4 g128 work on a block in pieces of `PIECE` elements (amax over the pieces, then each
piece encoded): the integer quotient test this kernel used before the PTX FMAs spilled
registers on a whole (tile_k, 128) block; since the sweeps of sessions 17 and 21 (`piece=`) FP8
1x128 and INT4 g128 take whole blocks 64 columns a step (`PIECE`, `TILE_K`). Uses TMA and
register layouts the CPU interpreter cannot run; `portable_columns.py` is its twin (same pieces)
and the GPU benchmark checks it bit for bit against `mxjax.quantize(x.T)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import _compat
from pallas_kernels import _ptx
from pallas_kernels.gates import require_checked
from pallas_kernels.quantize.mosaic_gpu import PAIR_E2M1_SCHEMES
from pallas_kernels.quantize.mosaic_gpu import block_state_once_scratch
from pallas_kernels.quantize.mosaic_gpu import block_states_once
from pallas_kernels.quantize.mosaic_gpu import cast_nan_option
from pallas_kernels.quantize.mosaic_gpu import pair_amax_option
from pallas_kernels.quantize.mosaic_gpu import satfinite_option
from pallas_kernels.quantize.reference import Quantized
from pallas_kernels.quantize.reference import tensor_terms
from pallas_kernels.quantize.schemes import SCHEMES
from pallas_kernels.quantize.schemes import FusedScheme
from pallas_kernels.quantize.schemes import NVFP4_TERMS
from pallas_kernels.quantize.schemes import amax_merge
from pallas_kernels.quantize.schemes import block_amax
from pallas_kernels.quantize.schemes import block_encode
from pallas_kernels.quantize.schemes import block_state
from pallas_kernels.quantize.schemes import element_encoder
from pallas_kernels.quantize.schemes import get_scheme
from pallas_kernels.quantize.schemes import nvfp4_pair_codes
from pallas_kernels.quantize.schemes import pair_scale_word

NUM_SMS_H100 = 132
COLUMN_SCHEMES = tuple(SCHEMES)
# Elements of a block encoded at once (the whole block where absent): see the module docstring.
# None is split now: FP8 1x128 and INT4 g128 take whole blocks with 64 columns a step (`TILE_K`;
# 128 by default) so the block fits the registers. H200, 8192 x 8192, all bit-exact, pieces of
# 16 / 32 / 64 / whole with tile_k 64: FP8 1x128 151.1 / 140.8 / 136.0 / 124.1 us
# (kernels_quant_s17_columns_piece.json); INT4 g128 (tile_k 128 but the last) 125.1 / 109.8 /
# 101.4 / 85.5 (kernels_quant_s21_columns_int4_piece.json). tile_k 64 slows the others (NVFP4
# 159.7 -> 165.2, MXFP4 90.1 -> 98.4; kernels_quant_s21_columns_tile_k.json).
PIECE: dict[str, int] = {}
TILE_K = {"fp8_e4m3_block128": 64, "int4_g128": 64}
# With `pair_cast` each input tile holds half a block's rows, and FP8 1x128 takes 128 columns a
# step again: H100, 2026-12-06, jax 0.11.2, bit-exact (kernels_quant_s34_h100_fp8_columns_
# launch.json), us at tile_k 64 / 128, 8192 x 8192: 93.0 / 91.0, 4096 x 14336: 82.9 / 81.5;
# three steps (93.8) or three CTAs an SM (93.0) gained nothing. MXFP8's pair_cast was slower at
# each launch tried (82.6 without; 85.1, nb 4 93.2, nb 4 tile_k 64 88.2, steps 3 83.1;
# kernels_quant_s34_h100_mxfp8_pair_cast_launch.json).
TILE_K_PAIR_CAST = {"fp8_e4m3_block128": 128}
# INT4's quotients each tested for NaN (`schemes.element_encoder`'s `int4_nan_test`) by default
# here. Session 26 dropped the test from the shared element path (its rows of a NaN quotient
# are masked anyway; H200 rows 64.4 -> 62.8 us); the H100's INT4 g128 columns at 8192 x 8192,
# the same launch (tile_k 64, one block a step, 2 steps), took 86.8 / 86.5 us with it
# (sessions 22 / 25) and 96.2 without (session 28, kernels_quant_s28_h100_columns.json), while
# the rows ran 66.8 -> 64.2 and every other column scheme the same. The A/B in one run (H100,
# 2026-12-06, jax 0.11.2, kernels_quant_s29_h100_int4_columns_nan_test.json), bit-exact both:
# with the test 86.4 / 77.0 us at 8192 x 8192 / 4096 x 14336, without 96.1 / 85.7.
INT4_NAN_TEST = True
# The block amax from the bf16 tile itself (`pair_amax`, session 32): |x| and its max on bf16,
# two a time (Mosaic's `max.NaN.bf16x2`, which keeps a NaN), before the widening to f32, where
# `schemes.block_amax` takes an AND and an integer max an element on the widened tile.
# `PAIR_AMAX_COLUMNS_VERIFIED` lists the schemes a GPU has matched with it. H100, 2026-12-06,
# jax 0.11.2, bit-exact on every test tensor; Mosaic kernel us without / with at 8192 x 8192
# (two runs) and 4096 x 14336 (kernels_quant_s33_h100_pair_amax_{columns,columns2}.json): FP8
# 1x128 113.5 / 110.8, 113.5 / 110.9, 100.8 / 98.2; MXFP8 82.4 / 84.7, 82.3 / 84.7, 73.9 /
# 76.0; INT4 86.5 / 86.7, 86.7 / 86.8, 76.9 / 77.0; MXFP4 90.5 / 95.4; NVFP4 172.8 / 180.5. On
# for FP8 1x128 alone (`PAIR_AMAX_COLUMNS_DEFAULT`).
PAIR_AMAX_COLUMNS_VERIFIED = frozenset(SCHEMES)
PAIR_AMAX_COLUMNS_DEFAULT = frozenset({"fp8_e4m3_block128"})
# The E4M3 codes two along M a PTX cvt (`pair_cast`, session 33): x viewed as (M / 2, 2 K) as
# for the 4-bit schemes, the even and odd rows' codes cast a pair by `_ptx.e4m3_pair`
# (`cast_nan`'s codes), already the uint16 word of two adjacent code bytes, where one code an
# element goes through Mosaic's cast, its unpacking and a byte store. H100, 2026-12-06, jax
# 0.11.2, bit-exact on every test tensor (kernels_quant_s33_h100_pair_cast_columns.json), Mosaic
# kernel us without / with at 8192 x 8192 and 4096 x 14336 (each without timed twice): FP8
# 1x128 110.8 / 93.2 and 98.3 / 83.2 (2.18 TB/s), MXFP8 82.5 / 83.8 and 73.5 / 73.5 (with
# `pair_amax` too 83.7): on for FP8 1x128 (`PAIR_CAST_COLUMNS_DEFAULT`).
PAIR_CAST_COLUMNS_VERIFIED = frozenset({"mxfp8_e4m3", "fp8_e4m3_block128"})
PAIR_CAST_COLUMNS_DEFAULT = frozenset({"fp8_e4m3_block128"})
# With `pair_cast`, the code pairs' sign bits from x's own (the even and odd rows' float32 bit
# patterns), one byte permute and one AND a pair (`_ptx.f32_pair_signs`), in place of a shift
# and an AND an element on the scaled values: the row kernel's `pair_signs` (session 33,
# bit-exact on the H100 and FP8 1x128's default there) on two arrays.
# `PAIR_SIGNS_COLUMNS_VERIFIED` lists the schemes a GPU has matched with it. H100, 2026-12-06,
# jax 0.11.2, bit-exact on every test tensor and slower (kernels_quant_s34_h100_pair_signs_
# columns.json), Mosaic kernel us with `pair_cast`, without / with it, at 8192 x 8192 and
# 4096 x 14336: FP8 1x128 93.0 / 101.4 and 83.0 / 89.9, MXFP8 84.6 / 86.1 and 74.7 / 75.5: off
# by default.
PAIR_SIGNS_COLUMNS_VERIFIED = frozenset({"mxfp8_e4m3", "fp8_e4m3_block128"})
# 4-bit codes four along M (`quad_pack`, session 34): x viewed as (M / 4, 4 K), each block's
# rows in four tiles of B / 4 (so B >= 32: MXFP4, INT4 g128), the codes of rows 4i, 4i + 1 and
# 4i + 2, 4i + 3 packed as two bytes of one uint16 word, stored a word where `pair` views store
# a byte. `QUAD_PACK_VERIFIED` lists the schemes a GPU has matched with it. H100, 2026-12-06,
# jax 0.11.2, bit-exact on every test tensor (kernels_quant_s34_h100_quad_pack_{mxfp4,int4}
# .json), us without / with at 8192 x 8192 and 4096 x 14336: INT4 g128 86.5 / 84.0 and 76.8 /
# 74.7 (three steps 85.3, tile_k 128 93.8), the default for it (`QUAD_PACK_DEFAULT`); MXFP4
# 90.5 / 96.9 and 80.3 / 85.6, slower at each launch tried (nb 4 111.5, steps 3 100.4, tile_k
# 64 104.9): off.
QUAD_PACK_SCHEMES = ("mxfp4", "int4_g128")
QUAD_PACK_VERIFIED = frozenset(QUAD_PACK_SCHEMES)
QUAD_PACK_DEFAULT = frozenset({"int4_g128"})
# MXFP4's E2M1 codes two elements an operation (`pair_e2m1`, session 34): the even and odd row
# tiles' bf16 values made into pair words by one byte permute (`_ptx.bf16_pair_word`), then the
# row kernel's `_ptx.e2m1_pairs` (bit-exact on the H100 there, 70.4 -> 64.4 us). Written
# without a GPU; NVFP4's the row kernel's `_ptx.e2m1_scaled_pairs` on the even and odd row
# tiles (session 35). `PAIR_E2M1_COLUMNS_VERIFIED` lists the schemes a GPU has matched with it,
# `PAIR_E2M1_COLUMNS_DEFAULT` those it is on for. H100, 2026-12-06, jax 0.11.2, bit-exact on
# every test tensor (kernels_quant_s35_h100_pair_e2m1_{mxfp4,nvfp4}_columns.json), us without /
# with at 8192 x 8192 and 4096 x 14336: MXFP4 90.5 / 78.2 and 80.4 / 69.9 (2.17 TB/s; with the
# bf16 block amax 84.7 / 76.1, tile_k 64 87.7 / 77.8); NVFP4 (a call, its amax pass included)
# 170.5 / 165.3 and 151.2 / 147.0 (with the bf16 amax 171.9 / 152.9): on for both.
PAIR_E2M1_COLUMNS_VERIFIED = frozenset(PAIR_E2M1_SCHEMES)
PAIR_E2M1_COLUMNS_DEFAULT = frozenset(PAIR_E2M1_SCHEMES)
# Each block's state computed once, by one thread, through shared memory (`state_once`: the row
# kernel's helper, `mosaic_gpu.block_states_once`, a step's blocks in one round trip of two
# barriers), not by the four threads of the quad that share a row of x.T's tile. In the column
# kernel a thread holds only 4 elements of an NVFP4 block (two in each of the even and odd row
# tiles), so its state (two FMA-corrected divisions, an E4M3 rounding, a div.rn) is a quarter of its
# work (SASS, session 35: NVFP4 columns 29.6 thread instructions an element against MXFP4's 19.4).
# Session 18's version, one round trip a block, was bit-exact and no faster on the H200 (NVFP4 159.8
# -> 160.5 us, MXFP4 90.1 -> 101.3; removed in session 21,
# kernels_quant_s21_columns_state_once.json); written again in session 35 for today's leaner kernel.
# H100, 2026-12-07 (session 36, kernels_quant_s36_h100_state_once_{nvfp4_,int4_,}columns.json):
# bit-exact for every scheme on the four tensors; us without / with it: NVFP4 165.3 / 158.4 at
# 8192 x 8192 and 146.9 / 141.0 at 4096 x 14336 (its Mosaic kernel 108.9 -> 102.1), MXFP8 82.4 /
# 90.1, FP8 1x128 91.1 / 91.2, MXFP4 78.3 / 86.1, INT4 g128 (at tile_k 128, which it needs)
# 93.1 / 94.7 against 84.3 at its default: on by default for NVFP4 alone.
STATE_ONCE_COLUMNS_VERIFIED = frozenset(SCHEMES)
STATE_ONCE_COLUMNS_DEFAULT = frozenset({"nvfp4"})


def _bf16_block_amax(tiles: list) -> jax.Array:
  """Per-row max |x| (rows,) float32 of bf16 tiles (one, or the even and odd rows' two), NaN
  canonical as `schemes.block_amax` gives it. On Mosaic GPU only: its bf16 max keeps a NaN
  (`max.NaN.bf16x2`); XLA's CPU float max may drop one."""
  m = jnp.max(jnp.abs(tiles[0]), axis=1)
  for t in tiles[1:]:
    m = jnp.maximum(m, jnp.max(jnp.abs(t), axis=1))
  m = m.astype(jnp.float32)
  return jnp.where(m != m, jnp.float32(jnp.nan), m)


def input_views(sch: FusedScheme, pairs: bool = False, quads: bool = False) -> int:
  """Row classes of x the column-wise kernels read as separate tiles (x viewed as (M / n, n K)):
  1; 2 for 4-bit codes or `pairs` (an 8-bit scheme's codes two along M, `pair_cast`); 4 with
  `quads` (4-bit codes four along M, `quad_pack`)."""
  if quads:
    if sch.name not in QUAD_PACK_SCHEMES:
      raise ValueError(f"quad_pack packs 4-bit codes of blocks of 32 or more along M "
                       f"({QUAD_PACK_SCHEMES}); {sch.name} has none: leave it off")
    return 4
  return 2 if sch.bits == 4 or pairs else 1


def tiles_amax(xs: list) -> jax.Array:
  """`schemes.block_amax` over the rows of one, two or four float32 tiles (rows, n)."""
  amax = block_amax(xs[0], xs[1 % len(xs)])
  for i in range(2, len(xs), 2):
    amax = amax_merge(amax, block_amax(xs[i], xs[i + 1]))
  return amax


def column_blocks(scheme: str, nb: int | None, piece: int | None = None,
                  pairs: bool = False, quads: bool = False) -> tuple[FusedScheme, int, int, int]:
  """(scheme, nb, rows of each input tile a block, pieces a block) for the column-wise kernels;
  nb defaults to 64 rows of x a step (one block for B = 128), piece (elements of a block
  encoded at once) to `PIECE`'s, else the whole block. `pairs` / `quads`: as in
  `input_views`."""
  if scheme not in COLUMN_SCHEMES:
    raise NotImplementedError(f"the column-wise kernels take {COLUMN_SCHEMES}, not {scheme!r}")
  sch = get_scheme(scheme)
  nb = max(1, 64 // sch.block) if nb is None else nb
  nx = input_views(sch, pairs, quads)
  r = sch.block // nx
  piece = PIECE.get(scheme, sch.block) if piece is None else piece
  # a piece is rows of x.T's tile: 8-row multiples (the WGMMA layout's columns), each input
  # tile's share (4-bit: half, as two tiles) too
  if sch.block % piece or (piece // nx) % 8:
    raise ValueError(f"{scheme}: piece={piece} must divide B = {sch.block} into parts of "
                     f"{8 * nx} or more elements (multiples of {8 * nx})")
  return sch, nb, r, sch.block // piece


def column_result(sch: FusedScheme, codes: jax.Array, scale_t: jax.Array,
                  s_t: jax.Array | None) -> Quantized:
  """Kernel outputs (codes (K, M) or (K, M / 2) bytes, or an 8-bit scheme's (K, M / 2) uint16
  words of two codes, the even m's low: little-endian bytes; scales (M / B, K)) -> mxjax's
  layout."""
  if codes.dtype == jnp.uint16:
    codes = lax.bitcast_convert_type(codes, jnp.uint8).reshape(codes.shape[0], -1)
  if sch.bits == 8:
    codes = lax.bitcast_convert_type(codes, jnp.float8_e4m3fn)
  scale = scale_t.T
  if sch.scale_dtype == jnp.float8_e4m3fn:  # E4M3 bit patterns
    scale = lax.bitcast_convert_type(scale, jnp.float8_e4m3fn)
  ts = None if s_t is None else s_t.reshape(1, 1).astype(jnp.float32)
  return Quantized(codes, scale, ts)


def quantize_columns_mosaic_gpu(x: jax.Array, scheme: str = "mxfp8_e4m3", *,
                                tile_k: int | None = None,
                                nb: int | None = None, steps: int = 2, ctas_per_sm: int = 2,
                                piece: int | None = None,
                                tensor_amax: jax.Array | None = None,
                                satfinite: bool | None = None, int4_nan_test: bool | None = None,
                                cast_nan: bool | None = None, pair_amax: bool | None = None,
                                pair_cast: bool | None = None, pair_signs: bool = False,
                                quad_pack: bool | None = None, pair_e2m1: bool | None = None,
                                state_once: bool | None = None, allow_unverified: bool = False,
                                num_sms: int = NUM_SMS_H100) -> Quantized:
  """`mxjax.quantize(x.T, scheme)` of bf16 `x` (M, K) on a Hopper GPU, in one pass.

  Args:
    x: (M, K) bfloat16; blocks of B run along M.
    scheme: any of `schemes.SCHEMES`.
    tile_k: columns of x (rows of x.T) per pipeline step, a multiple of 64 (default
      `TILE_K_PAIR_CAST`'s with pair_cast, `TILE_K`'s without, else 128).
    nb: B-row blocks per pipeline step (the TMA box is (B nb, tile_k), at most 256 rows);
      default 64 rows of x (one block for B = 128).
    steps: TMA pipeline depth per CTA. The defaults (tile_k 128, nb 2, steps 2) were the best of
      the H100 sweep for MXFP8 / MXFP4 (experiments/results/kernels_quant_columns.json).
    ctas_per_sm: the K range is split so that about this many CTAs run per SM.
    piece: elements of a block encoded at once, a divisor of B (default `PIECE`'s, else B):
      the amax is merged over the pieces, then each piece is reloaded and encoded.
    tensor_amax: NVFP4's tensor amax (float32 scalar) instead of a pass over x
      (`reference.tensor_terms`).
    satfinite: E4M3 codes by the saturating cast alone (`mosaic_gpu.satfinite_option`; default
      where `SATFINITE_DEFAULT` lists the scheme: MXFP8).
    int4_nan_test: INT4 g128: test each quotient for NaN (default `INT4_NAN_TEST`); the same
      codes either way.
    cast_nan: E4M3 codes by the saturating cast alone, NaN included, no NaN test an element
      (`mosaic_gpu.cast_nan_option`; default where `CAST_NAN_DEFAULT` lists the scheme).
    pair_amax: the block amax on the bf16 tile, two elements a max (`_bf16_block_amax`;
      `mosaic_gpu.pair_amax_option`; default where `PAIR_AMAX_COLUMNS_DEFAULT` lists the scheme).
    pair_cast: E4M3 schemes with `cast_nan`: the codes two along M a PTX cvt, stored as uint16
      words (default where `PAIR_CAST_COLUMNS_DEFAULT` lists the scheme and cast_nan is on;
      `PAIR_CAST_COLUMNS_VERIFIED` lists the schemes checked, others need `allow_unverified`).
    pair_signs: with `pair_cast`, the code pairs' sign bits from x's own by a byte permute
      (`PAIR_SIGNS_COLUMNS_VERIFIED` lists the schemes checked, others need
      `allow_unverified`).
    quad_pack: MXFP4 / INT4 g128: the codes four along M from four input tiles, stored as
      uint16 words (default where `QUAD_PACK_DEFAULT` lists the scheme; `QUAD_PACK_VERIFIED`
      lists the schemes checked, others need `allow_unverified`).
    pair_e2m1: MXFP4 / NVFP4: the E2M1 codes two elements an operation, on bf16 pair words
      (MXFP4, `_ptx.e2m1_pairs`) or the scaled even and odd rows' pairs rounded to odd (NVFP4,
      `_ptx.e2m1_scaled_pairs`; default where `PAIR_E2M1_COLUMNS_DEFAULT` lists the scheme;
      `PAIR_E2M1_COLUMNS_VERIFIED` lists the schemes checked, others need `allow_unverified`).
    state_once: each block's state computed by one thread through shared memory, a step's
      blocks together (`mosaic_gpu.block_states_once`; nb * tile_k a multiple of 128; default
      where `STATE_ONCE_COLUMNS_DEFAULT` lists the scheme, NVFP4: 4% faster on an H100, and
      whose steps always fit, as its code tiles need an even nb; `STATE_ONCE_COLUMNS_VERIFIED`
      lists the schemes checked).

  Returns:
    Quantized with codes (K, M) float8_e4m3fn (8-bit) or (K, M / 2) uint8 (4-bit, even m in the
    low nibble), scale (K, M / B) in the scheme's dtype, and NVFP4's tensor scale.
  """
  plgpu = _compat.plgpu_module()
  cast_nan = cast_nan_option(scheme, cast_nan, satfinite, allow_unverified)
  if pair_cast is None:
    pair_cast = cast_nan and scheme in PAIR_CAST_COLUMNS_DEFAULT
  if quad_pack is None:
    quad_pack = scheme in QUAD_PACK_DEFAULT
  if pair_e2m1 is None:  # quad_pack asked for reads four row tiles: no pairs then
    pair_e2m1 = scheme in PAIR_E2M1_COLUMNS_DEFAULT and not quad_pack
  if pair_e2m1:
    if scheme not in PAIR_E2M1_SCHEMES:
      raise ValueError(f"pair_e2m1 encodes E2M1 codes (MXFP4, NVFP4) two at a time; {scheme} "
                       f"has none: leave it off")
    if quad_pack:
      raise ValueError("pair_e2m1 makes pair words of the even and odd row tiles; quad_pack "
                       "reads four: leave one of them off")
    require_checked(f"{scheme}'s column-wise pair_e2m1", scheme in PAIR_E2M1_COLUMNS_VERIFIED,
                    allow_unverified, reference="mxjax.quantize", instead="leave pair_e2m1 off")
  sch, nb, r, pieces = column_blocks(scheme, nb, piece, pairs=pair_cast, quads=quad_pack)
  if quad_pack:
    require_checked(f"{scheme}'s column-wise quad_pack", scheme in QUAD_PACK_VERIFIED,
                    allow_unverified, reference="mxjax.quantize", instead="leave quad_pack off")
  if pair_cast:
    if not cast_nan:
      raise ValueError(f"pair_cast casts cast_nan's E4M3 codes a pair at a time; {scheme} runs "
                       f"without cast_nan here: leave pair_cast off")
    require_checked(f"{scheme}'s column-wise pair_cast", scheme in PAIR_CAST_COLUMNS_VERIFIED,
                    allow_unverified, reference="mxjax.quantize", instead="leave pair_cast off")
  if pair_signs:
    if not pair_cast:
      raise ValueError("pair_signs ORs x's sign bits into pair_cast's code pairs: it needs "
                       "pair_cast (an E4M3 scheme with cast_nan)")
    require_checked(f"{scheme}'s column-wise pair_signs", scheme in PAIR_SIGNS_COLUMNS_VERIFIED,
                    allow_unverified, reference="mxjax.quantize", instead="leave pair_signs off")
  if state_once is None:
    state_once = scheme in STATE_ONCE_COLUMNS_DEFAULT
  if state_once:
    require_checked(f"{scheme}'s column-wise state_once", scheme in STATE_ONCE_COLUMNS_VERIFIED,
                    allow_unverified, reference="mxjax.quantize", instead="leave state_once off")
  satfinite = satfinite_option(scheme, satfinite, allow_unverified)
  pair_amax = pair_amax_option(scheme, pair_amax, False, default=PAIR_AMAX_COLUMNS_DEFAULT,
                               verified=PAIR_AMAX_COLUMNS_VERIFIED,
                               allow_unverified=allow_unverified, kernel="column-wise ")
  if tile_k is None:
    tile_k = (TILE_K_PAIR_CAST if pair_cast else TILE_K).get(scheme, 128)
  if int4_nan_test is not None and scheme != "int4_g128":
    raise ValueError(f"int4_nan_test is an int4_g128 option; {scheme} has no INT4 quotients: "
                     f"leave it unset")
  int4_nan_test = INT4_NAN_TEST if int4_nan_test is None else int4_nan_test
  if x.ndim != 2 or x.dtype != jnp.bfloat16:
    raise NotImplementedError(f"mosaic_gpu column-wise quantization takes 2-D bf16, got "
                              f"{x.dtype}{x.shape}")
  m, k = x.shape
  b = sch.block
  tm = b * nb
  if m % tm or k % tile_k or tile_k % 64 or tm > 256:
    raise ValueError(f"x {x.shape}: M must be a multiple of B * nb = {tm} (<= 256) and K of "
                     f"tile_k = {tile_k} (a multiple of 64)")
  if state_once and (nb * tile_k) % 128:
    raise ValueError(f"state_once spreads a step's block states over the warpgroup's 128 "
                     f"threads: nb * tile_k must be a multiple of 128, not {nb} * {tile_k}")
  m_tiles, k_tiles = m // tm, k // tile_k
  split = 1  # K ranges per row of tiles: enough CTAs for ctas_per_sm on every SM
  while k_tiles % (split * 2) == 0 and m_tiles * split < num_sms * ctas_per_sm:
    split *= 2
  per = k_tiles // split
  span = per * tile_k

  # x viewed (free) as (M / nx, nx K): rows nx i + h side by side for h < nx, so each row
  # class of x is a column range of one array: nx contiguous tiles
  nx = input_views(sch, pair_cast, quad_pack)
  # per block along M: code bytes (one or two codes), or uint16 words of two (pair_cast) or
  # four (quad_pack) codes
  cw = b // nx
  c_dtype = jnp.uint16 if pair_cast or quad_pack else jnp.uint8
  pr = r // pieces  # rows of each input tile a piece
  scale_dtype = jnp.float32 if sch.scale_dtype == jnp.float32 else jnp.uint8

  def load_t(ref, f32=True):  # x rows -> x.T's (tile_k, rows) tile, WGMMA layout
    xt = plgpu.load(_compat.transpose_ref(ref, (1, 0)), (),
                    layout=plgpu.Layout.WGMMA_TRANSPOSED, optimized=False)
    xt = plgpu.layout_cast(xt, plgpu.Layout.WGMMA)
    return xt.astype(jnp.float32) if f32 else xt

  rows = tm // nx  # rows of each input tile
  # NVFP4's tensor terms, from one XLA reduction (x and x.T share it) or the given amax
  s_t, terms = tensor_terms(sch, x, tensor_amax)
  extra = []
  if terms is not None:
    extra = [jnp.zeros((32,), jnp.float32).at[:NVFP4_TERMS].set(jnp.stack(terms))]

  st_smem = None  # `block_states_once`' scratch, set in `kernel`

  def body(_, *refs):
    x_smems, c_smem, s_smem = refs[:nx], refs[-2], refs[-1]
    t = tuple(refs[nx][i] for i in range(NVFP4_TERMS)) if sch.two_level else None

    def tiles(j, p, f32=True):  # piece p of block j: (tile_k, pr) rows of x.T, per input tile
      return [load_t(xs_.at[pl.ds(j * r + p * pr, pr), :], f32) for xs_ in x_smems]

    def piece_amax(j, p):  # (its amax, its f32 tiles)
      if not pair_amax:
        xs = tiles(j, p)
        return tiles_amax(xs), xs
      ts = tiles(j, p, f32=False)
      return _bf16_block_amax(ts), [v.astype(jnp.float32) for v in ts]

    def block_amax_tiles(j):  # block j's amax, and its first piece's f32 tiles
      amax, xs = piece_amax(j, 0)
      for p in range(1, pieces):
        amax = amax_merge(amax, piece_amax(j, p)[0])
      return amax, xs

    if state_once:  # every block's amax first, their states in one round trip (scales stored)
      firsts = [block_amax_tiles(j) for j in range(nb)]
      states = block_states_once(sch, [a for a, _ in firsts], t, st_smem,
                                 s_smem.reshape(nb * tile_k), scale_dtype)
    for j in range(nb):
      if state_once:
        (_, xs), state = firsts[j], states[j]
      else:
        amax, xs = block_amax_tiles(j)
        state = block_state(sch, amax, t, div=_ptx.div_rn, fma=_ptx.fma_rn)
      for p in range(pieces):
        xs = xs if pieces == 1 else tiles(j, p)  # reloaded: a block's pieces are not kept live
        signs = (_ptx.f32_pair_signs(*(lax.bitcast_convert_type(v, jnp.int32) for v in xs))
                 if pair_signs else None)
        if nx == 1:
          codes = element_encoder(sch, state, fma=_ptx.fma_rn, satfinite=satfinite,
                                  cast_nan=cast_nan)(xs[0])
        elif pair_e2m1 and sch.two_level:
          codes = nvfp4_pair_codes(state, xs[0], xs[1], _ptx.e2m1_scaled_pairs)
        elif pair_e2m1:
          words = _ptx.bf16_pair_word(*(lax.bitcast_convert_type(v, jnp.int32) for v in xs[:2]))
          k1, k2 = (lax.broadcast_in_dim(pair_scale_word(f), words.shape, [0])
                    for f in state[1:])
          codes = _ptx.e2m1_pairs(words, k1, k2)
        else:
          enc = functools.partial(block_encode, sch, state, fma=_ptx.fma_rn,
                                  int4_nan_test=int4_nan_test,
                                  cast_pair=_ptx.e4m3_pair if pair_cast else None, signs=signs)
          codes = enc(*xs[:2]) if nx == 2 else enc(*xs[:2]) | (enc(*xs[2:]) << 8)
        c_smem.at[:, pl.ds(j * cw + p * pr, pr)][...] = codes.astype(c_dtype)
      if not state_once:
        s_smem.at[j][...] = state[0].astype(scale_dtype)

  def kernel(x_gmem, *refs):
    nonlocal st_smem
    if state_once:
      *refs, st_smem = refs
    ts_gmem, (c_gmem, s_gmem) = refs[:-2], refs[-2:]
    mi = lax.axis_index("m")
    ki = lax.axis_index("k")
    m_sl = pl.ds(mi * rows, rows)
    x_in = [x_gmem.at[m_sl, pl.ds(h * k + ki * span, span)] for h in range(nx)]
    plgpu.emit_pipeline(
        body,
        grid=(per,),
        in_specs=[plgpu.BlockSpec((rows, tile_k), lambda i: (0, i))] * nx
        + [plgpu.BlockSpec((32,), lambda i: (0,))] * len(ts_gmem),
        out_specs=[plgpu.BlockSpec((tile_k, cw * nb), lambda i: (i, 0)),
                   plgpu.BlockSpec((nb, tile_k), lambda i: (0, i))],
        max_concurrent_steps=min(steps, per),
    )(*x_in, *ts_gmem, c_gmem.at[pl.ds(ki * span, span), pl.ds(mi * cw * nb, cw * nb)],
      s_gmem.at[pl.ds(mi * nb, nb), pl.ds(ki * span, span)])

  f = _compat.mgpu_kernel(
      kernel,
      out_type=(jax.ShapeDtypeStruct((k, m * cw // b), c_dtype),
                jax.ShapeDtypeStruct((m // b, k), scale_dtype)),
      grid=(m_tiles, split),
      grid_names=("m", "k"),
      scratch_types=[block_state_once_scratch(sch, nb * tile_k)] if state_once else [],
  )
  codes, scale_t = f(x.reshape(m // nx, nx * k), *extra)
  return column_result(sch, codes, scale_t, s_t)
