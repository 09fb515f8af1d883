"""How 4-bit codes become values: the NF4 and E2M1 tables, the select trees the portable and TPU
kernels (and `layout.dequantize`) decode with, and the 32-bit word algorithms the GPU kernels run
on their registers (`nf4_prmt_words`, `e2m1_pair_bits`), written once over `WordOps` so that the
CPU tests run them with a model of PTX `prmt` (`prmt_reference`) and the kernels as MLIR ops.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# NF4 (QLoRA / bitsandbytes) table, fp32.
NF4_TABLE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)

# E2M1 values of the 16 OCP bit patterns s|e e|m.
E2M1_TABLE = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def _hi_lo_bits(table: np.ndarray) -> np.ndarray:
  """uint32 `bf16(t) << 16 | bf16(t - bf16(t))` for each f32 entry t: a two-term bf16 split."""
  t = table.astype(np.float32)
  hi = (t.view(np.uint32) + 0x7FFF + ((t.view(np.uint32) >> 16) & 1)) & 0xFFFF0000  # RN
  lo_f = (t - hi.view(np.float32)).astype(np.float32)
  lo = (lo_f.view(np.uint32) + 0x7FFF + ((lo_f.view(np.uint32) >> 16) & 1)) >> 16
  return (hi | lo).astype(np.uint32)


NF4_HI_LO = _hi_lo_bits(NF4_TABLE)


def _select_tree(codes: jax.Array, table: np.ndarray) -> jax.Array:
  """`table[codes]` for a 16-entry uint32 table and unsigned codes 0..15, as a 4-level select
  tree over the code bits (15 selects, no gather: kernel dialects have none)."""
  vals = [jnp.uint32(v) for v in table]
  for b in range(4):
    bit = (codes & (1 << b)) != 0
    vals = [jnp.where(bit, vals[2 * i + 1], vals[2 * i]) for i in range(len(vals) // 2)]
  return vals[0]


def nf4_f32(codes: jax.Array) -> jax.Array:
  """NF4 codes (unsigned ints 0..15) -> the table's float32 values, bit for bit."""
  return jax.lax.bitcast_convert_type(_select_tree(codes, NF4_TABLE.view(np.uint32)),
                                      jnp.float32)


def e2m1_f32(codes: jax.Array) -> jax.Array:
  """E2M1 bit patterns (unsigned ints 0..15) -> their float32 values, bit for bit (-0 kept).
  The portable and TPU kernels' decode (a select tree; no subnormals on the way, which a TPU
  would flush)."""
  return jax.lax.bitcast_convert_type(_select_tree(codes, E2M1_TABLE.view(np.uint32)),
                                      jnp.float32)


def nf4_hi_lo(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
  """NF4 codes (unsigned ints 0..15) -> (hi, lo) bf16 with `hi + lo` = the table's f32 value to
  within 2^-17 relative (hi = RN_bf16(t), lo = RN_bf16(t - hi)); one select tree on uint32
  constants holding both terms' bits side by side."""
  v = _select_tree(codes, NF4_HI_LO)
  hi = jax.lax.bitcast_convert_type(v & jnp.uint32(0xFFFF0000), jnp.float32)
  lo = jax.lax.bitcast_convert_type(v << 16, jnp.float32)
  return hi.astype(jnp.bfloat16), lo.astype(jnp.bfloat16)


def _lut_words(table_bytes: np.ndarray) -> tuple[int, int, int, int]:
  """16 bytes -> the four little-endian uint32 words `prmt` reads them from (entries 0-3, 4-7,
  8-11, 12-15)."""
  return tuple(int(v) for v in table_bytes.astype(np.uint8).view("<u4"))


# The f32 bit patterns of the NF4 table as four byte planes (plane p holds byte p of each entry),
# each as `_lut_words`: what `nf4_prmt_words` looks codes up in.
NF4_PLANES = tuple(_lut_words((NF4_TABLE.view(np.uint32) >> (8 * p)) & 0xFF) for p in range(4))


class WordOps(NamedTuple):
  """The 32-bit integer operations `nf4_prmt_words` and `e2m1_pair_bits` are written in, so the
  same algorithm runs as jnp on uint32 arrays (`JNP_WORD_OPS`, the CPU tests) and as MLIR ops
  in the GPU kernel."""

  const: Callable[[int], Any]
  and_: Callable[[Any, Any], Any]
  or_: Callable[[Any, Any], Any]
  shr: Callable[[Any, Any], Any]  # logical
  prmt: Callable[[Any, Any, Any], Any]  # PTX prmt.b32 d, a, b, sel (default mode)
  mul: Callable[[Any, Any], Any]  # the low 32 bits of the product


def prmt_reference(a, b, sel):
  """PTX `prmt.b32 d, a, b, sel` (default mode) on uint32 arrays: byte k of d is byte
  `(sel >> 4k) & 7` of the 8 bytes b:a (a's bytes 0-3, b's 4-7). Selectors here never set the
  sign-replicate bit (8). The CPU model of the instruction."""
  pool = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
  out = 0
  for k in range(4):
    idx = (sel >> (4 * k)) & 7
    byte = pool[7]
    for i in range(6, -1, -1):
      byte = jnp.where(idx == i, pool[i], byte)
    out = out | (byte << (8 * k))
  return out


JNP_WORD_OPS = WordOps(const=jnp.uint32, and_=jnp.bitwise_and, or_=jnp.bitwise_or,
                       shr=jnp.right_shift, prmt=prmt_reference, mul=jnp.multiply)


def _prmt_lookup_planes(w, planes, ops: WordOps) -> list:
  """Byte-plane table lookups of the four 4-bit codes in the low 16 bits of `w` (nibble k =
  code k): for each plane (`_lut_words` of a 16-entry byte table), the word whose byte k is
  the plane's entry for code k. Two `prmt`s look the code's low 3 bits up among entries 0-7 and
  8-15; a third picks between them by the code's bit 3 (moved to bit 2 of each selector nibble,
  which adds 4: the second word's bytes)."""
  c = ops.const
  idx = ops.and_(w, c(0x7777))
  pick = ops.or_(ops.shr(ops.and_(w, c(0x8888)), c(1)), c(0x3210))
  return [ops.prmt(ops.prmt(c(p[0]), c(p[1]), idx), ops.prmt(c(p[2]), c(p[3]), idx), pick)
          for p in planes]


def nf4_prmt_words(w, ops: WordOps) -> tuple:
  """NF4 table lookups by byte permutes: the low 16 bits of the 32-bit `w` hold four NF4 codes
  (nibble k = code k); returns the f32 bit patterns of their table values, (word0..word3).

  The four byte planes of the f32 table (`NF4_PLANES`) looked up (`_prmt_lookup_planes`, 3
  `prmt`s a plane), then eight `prmt`s transpose the 4 x 4 bytes into words. 22 integer ops for
  four lookups, against 4 x 15 selects for the select tree (`nf4_f32`).
  """
  c = ops.const
  planes = _prmt_lookup_planes(w, NF4_PLANES, ops)
  p01_lo = ops.prmt(planes[0], planes[1], c(0x5140))  # bytes: p0.0 p1.0 p0.1 p1.1
  p01_hi = ops.prmt(planes[0], planes[1], c(0x7362))  # p0.2 p1.2 p0.3 p1.3
  p23_lo = ops.prmt(planes[2], planes[3], c(0x5140))
  p23_hi = ops.prmt(planes[2], planes[3], c(0x7362))
  return (ops.prmt(p01_lo, p23_lo, c(0x5410)), ops.prmt(p01_lo, p23_lo, c(0x7632)),
          ops.prmt(p01_hi, p23_hi, c(0x5410)), ops.prmt(p01_hi, p23_hi, c(0x7632)))


# bf16 bits of 2^126: E2M1 bits placed as a bf16 (`e2m1_pair_bits`) are the value / 2^126.
BF16_2_POW_126 = 0x7E80


def e2m1_pair_bits(w, part: int, ops: WordOps):
  """Two E2M1 codes as a bf16x2 word, each half the code's value / 2^126, bit for bit.

  `w` (32 bits) holds eight OCP E2M1 codes s|e e|m, code i in nibble i; `part` (0..3) picks
  codes 2 part (low half) and 2 part + 1 (high half), which is how Mosaic's int4 registers
  slice a 32-bit word. A `prmt` of w and w >> 4 brings them to the bottom of the two halves
  (u = c0 | c1 << 16 after a mask); `u * 0x1040` = `u << 6 | u << 12` (the copies do not
  overlap) puts each code's magnitude e e m at bits 6-8 and its sign at bit 15, and a mask keeps
  those: a bf16 with exponent field e and mantissa m 0 0 0 0 0 0, whose value is the E2M1 value
  times 2^-126 (code 1, 0.5, lands on the subnormal 2^-127). Times 2^126 (`BF16_2_POW_126`,
  exact: the kernels use PTX `mul.rn.bf16x2`, which keeps subnormals) gives the value; -0 stays
  -0. Four integer ops a pair, the shift shared by a word's four pairs.
  """
  c = ops.const
  u = ops.and_(ops.prmt(w, ops.shr(w, c(4)), c(((part + 4) << 8) | part)), c(0x000F000F))
  return ops.and_(ops.mul(u, c(0x1040)), c(0x81C081C0))
