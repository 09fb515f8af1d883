"""How 4-bit codes become values: the NF4 and E2M1 tables, the select trees the portable and TPU
kernels (and `layout.dequantize`) decode with, and the 32-bit word algorithms the GPU kernels run
on their registers (`nf4_prmt_words`, `e2m1_pair_bits`, `int4_odd_e4m3_words`,
`e2m1_e4m3_words`), written once over `WordOps` so that the
CPU tests run them with a model of PTX `prmt` (`prmt_reference`) and the kernels as MLIR ops;
UINT4's zero points back from the stored offsets (`uint4_zero_bf16`).
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
  xor: Callable[[Any, Any], Any]
  shr: Callable[[Any, Any], Any]  # logical
  prmt: Callable[[Any, Any, Any], Any]  # PTX prmt.b32 d, a, b, sel (default mode)
  mul: Callable[[Any, Any], Any]  # the low 32 bits of the product


def prmt_reference(a, b, sel):
  """PTX `prmt.b32 d, a, b, sel` (default mode) on uint32 arrays: byte k of d is byte
  `(sel >> 4k) & 7` of the 8 bytes b:a (a's bytes 0-3, b's 4-7), or, when bit 3 of that
  selector nibble is set, the byte's sign bit replicated over all 8 bits (0x00 or 0xFF). The
  high 16 bits of `sel` are ignored. The CPU model of the instruction."""
  pool = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
  out = 0
  for k in range(4):
    nib = (sel >> (4 * k)) & 15
    idx = nib & 7
    byte = pool[7]
    for i in range(6, -1, -1):
      byte = jnp.where(idx == i, pool[i], byte)
    byte = jnp.where(nib >= 8, jnp.where(byte >= 0x80, 0xFF, 0), byte)
    out = out | (byte << (8 * k))
  return out


JNP_WORD_OPS = WordOps(const=jnp.uint32, and_=jnp.bitwise_and, or_=jnp.bitwise_or,
                       xor=jnp.bitwise_xor, shr=jnp.right_shift, prmt=prmt_reference,
                       mul=jnp.multiply)


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


def e2m1_halves_words(w, ops: WordOps) -> list:
  """The four pairs of a 32-bit word of E2M1 codes in `code_order.HALVES_ORDER` (pair j in nibbles
  j and 4 + j: one code in each 16-bit half) as bf16x2 words, each half the code's value /
  2^126, bit for bit as `e2m1_pair_bits` gives them from the byte-pair order.

  An AND isolates pair j (0, 1) in place, at bits 4 j .. 4 j + 3 of each half, and an IMAD by
  2^(6 - 4 j) + 2^(12 - 4 j) copies the code to bits 6-9 and 12-15 (the copies do not
  overlap, so no carry crosses them); the mask keeps the magnitude at 6-8 and the sign at 15.
  Pairs 2 and 3 do the same from the word shifted down a byte. Nine logic ops (ANDs and one
  shift) and four IMADs a word, against `e2m1_pair_bits`' thirteen and four: the `prmt` that
  gathers a pair from one byte goes."""
  c = ops.const
  words = []
  for src in (w, ops.shr(w, c(8))):
    for j in range(2):
      u = ops.and_(src, c(0x000F000F << (4 * j)))
      words.append(ops.and_(ops.mul(u, c((1 << (6 - 4 * j)) + (1 << (12 - 4 * j)))),
                            c(0x81C081C0)))
  return words


# NF4 in "slot codes", the codes the GPU kernels decode to bf16 with byte permutes alone
# (`nf4_slot_word_bits`). Slot s = 8 b + j stands for one NF4 code; the two codes of a j
# (b = 0, 1) are chosen so that their bf16 table values agree in the top bit of each byte: the
# sign, and the exponent's lowest bit. A `prmt` of an 8-byte table by the full 4-bit slot then
# gives the entry for b = 0 and a sign fill (0x00 / 0xFF) for b = 1, a second one with b
# flipped the reverse, and their XOR the entry itself, once the tables hold
# A[j] = t[j] ^ fill(t[j + 8]), B[j] = t[j + 8] (the fill of A[j] is then 0x00). Every NF4
# value is its bf16 rounding (bitsandbytes' GEMV kernel keeps the table in bf16 too); the zero,
# whose slot partner is negative, is -0.


def _nf4_slots() -> tuple[np.ndarray, np.ndarray]:
  """(slot of each NF4 code, bf16 bits of each slot's value): codes grouped by (sign, exponent
  lsb) of their bf16 values in table order, each group's codes paired into slots."""
  bits = NF4_TABLE.astype(jnp.bfloat16).view(np.uint16).copy()
  bits[NF4_TABLE == 0] = 0x8000  # zero joins the negatives: its partner's sign is 1
  groups: dict[tuple[int, int], list[int]] = {}
  for c in range(16):
    groups.setdefault((int(bits[c]) >> 15, (int(bits[c]) >> 7) & 1), []).append(c)
  slot_of = np.zeros(16, np.uint8)
  j = 0
  for _, codes in sorted(groups.items()):
    if len(codes) % 2:
      raise AssertionError(f"NF4 codes {codes} do not pair into slots")
    for lo, hi in zip(codes[0::2], codes[1::2]):
      slot_of[lo], slot_of[hi] = j, j + 8
      j += 1
  slot_bits = np.zeros(16, np.uint16)
  slot_bits[slot_of] = bits
  return slot_of, slot_bits


NF4_SLOT_OF_CODE, NF4_SLOT_BF16_BITS = _nf4_slots()


def _xor_tables(t: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
  """16 bytes t (by slot) -> the (A, B) tables, two `_lut_words` each, whose `prmt`s by the slot
  and by the slot with bit 3 flipped XOR to t[slot] (see above)."""
  t = t.astype(np.uint8)
  fill = np.where(t[8:] >= 0x80, 0xFF, 0).astype(np.uint8)
  a, b = t[:8] ^ fill, t[8:]
  if np.any((a >= 0x80) | ((t[:8] >= 0x80) != (t[8:] >= 0x80))):
    raise AssertionError("slot partners must agree in each byte's top bit")
  return _lut_words(np.concatenate([a, b]))[:2], _lut_words(np.concatenate([a, b]))[2:]


# (lo byte, hi byte) planes of the slots' bf16 values, as `_xor_tables`.
NF4_SLOT_PLANES = tuple(_xor_tables((NF4_SLOT_BF16_BITS >> (8 * p)) & 0xFF) for p in range(2))


def nf4_slot_f32(slots: jax.Array) -> jax.Array:
  """NF4 slot codes (unsigned ints 0..15) -> float32 values of the bf16-rounded table (zero as
  -0), bit for bit: what the GPU decode produces (`nf4_slot_word_bits`), as a select tree for
  the other kernels."""
  table = NF4_SLOT_BF16_BITS.astype(np.uint32) << 16
  return jax.lax.bitcast_convert_type(_select_tree(slots, table), jnp.float32)


def nf4_slot_word_bits(w, ops: WordOps) -> tuple:
  """Eight NF4 slot codes -> four bf16x2 words, bit for bit `nf4_slot_f32`'s values.

  `w` (32 bits) holds code i in nibble i; output word p holds codes 2 p (low half) and
  2 p + 1 (high half), the pairs Mosaic's int4 registers slice a word into (as
  `e2m1_pair_bits`). Per half-word of four codes (`prmt` reads its selector's low 16 bits: a
  shift brings the high half down), each byte plane is two `prmt`s and an XOR
  (`NF4_SLOT_PLANES`), and two more `prmt`s interleave the lo and hi bytes into the two pairs:
  19 integer ops for eight codes.
  """
  c = ops.const
  flipped = ops.xor(w, c(0x88888888))
  out = []
  for sel, sel_flipped in ((w, flipped), (ops.shr(w, c(16)), ops.shr(flipped, c(16)))):
    lo, hi = (ops.xor(ops.prmt(c(a[0]), c(a[1]), sel), ops.prmt(c(b[0]), c(b[1]), sel_flipped))
              for a, b in NF4_SLOT_PLANES)
    out += [ops.prmt(lo, hi, c(0x5140)), ops.prmt(lo, hi, c(0x7362))]
  return tuple(out)


# INT4 as FP8 E4M3 operands (`fp8_x.py`): code c stands for the odd value 2 c + 1 (-15..15),
# times 2^-9. E4M3's first two binades are evenly spaced (bits 0x01..0x0F are 1..15 x 2^-9,
# subnormals then the first normals), so sign | (2 m + 1) with m = |2 c + 1| // 2 is the exact
# E4M3 byte: no table. The odd values are centred on 0, so the -sum(x) / 2 they owe back
# (c = ((2 c + 1) - 1) / 2) costs no precision where x is biased (`fp8_x.py` says why).
# Logical column L of an 8-bit wgmma A tile, within each aligned 32 of K, holds the code stored
# at position FP8_A_ORDER[L]: a register of the WGMMA_8BIT layout holds four consecutive
# columns, 4 q .. 4 q + 3 of each 16, and lane q loads storage positions 8 q .. 8 q + 7 as one
# word (WGMMA_UPCAST_4X), whose even codes become the first 16's register, its odd ones the
# second's.
FP8_A_ORDER = np.array([8 * ((l % 16) // 4) + 2 * (l % 4) + l // 16 for l in range(32)])


def int4_odd_e4m3_words(w, ops: WordOps) -> tuple:
  """Eight INT4 codes (two's complement, code i in nibble i of the 32-bit `w`) -> (E, O): byte i
  of E is the E4M3 encoding of (2 c + 1) 2^-9 for code 2 i, byte i of O for code 2 i + 1.

  The sign bit stays (bit 3 of each nibble); the low three bits become m = |2 c + 1| // 2 by an
  XOR with 7 where the sign is set (c >= 0: m = c; c < 0: m = -c - 1 = ~c); then each byte is
  sign << 7 | m << 1 | 1. Multiplies by powers of two stand for left shifts (`WordOps` has
  none). 15 integer ops for eight codes, before the compiler fuses the mask-and-or pairs.
  """
  c = ops.const
  sign = ops.and_(w, c(0x88888888))
  t = ops.xor(w, ops.mul(ops.shr(sign, c(3)), c(7)))  # nibble: sign << 3 | m
  one = c(0x01010101)
  even = ops.or_(ops.or_(ops.and_(ops.mul(t, c(16)), c(0x80808080)),
                         ops.and_(ops.mul(t, c(2)), c(0x0E0E0E0E))), one)
  odd = ops.or_(ops.or_(ops.and_(t, c(0x80808080)),
                        ops.and_(ops.shr(t, c(3)), c(0x0E0E0E0E))), one)
  return even, odd


def e2m1_e4m3_words(w, ops: WordOps) -> tuple:
  """Eight E2M1 codes (OCP bits s e e m, code i in nibble i of the 32-bit `w`) -> (E, O) as
  `int4_odd_e4m3_words`: byte i of E (O) is the E4M3 encoding of code 2 i's (2 i + 1's) value
  times 2^-6, bit for bit.

  No table: E4M3 bits s 0 0 e e m 0 0 are the E2M1 value times 2^-6 exactly, subnormals
  included (E2M1 0.5 = 0.1 x 2^0 lands on E4M3's subnormal 4 x 2^-9 = 2^-7: both formats'
  subnormal steps sit one exponent below their first normal). 6 integer ops for eight codes.
  """
  c = ops.const
  even = ops.or_(ops.and_(ops.mul(w, c(16)), c(0x80808080)),
                 ops.and_(ops.mul(w, c(4)), c(0x1C1C1C1C)))
  odd = ops.or_(ops.and_(w, c(0x80808080)), ops.and_(ops.shr(w, c(2)), c(0x1C1C1C1C)))
  return even, odd


def uint4_zero_bf16(offset: jax.Array, scale: jax.Array) -> jax.Array:
  """UINT4's zero points, zp - 8, as bf16, from `PackedWeight`'s offset = RN_f32(s * (zp - 8))
  and scale s (float32, any equal shapes; the GPU decode kernel runs it on its register rows).

  Exact: offset / s is zp - 8 to within a few f32 ulps (one rounding in the product, one in the
  quotient, or ~2 ulps for an approximate GPU division), and an integer of magnitude <= 8 is
  the nearest bf16 to anything that close. A zero scale (a constant block, whose offset is 0)
  gives 0 rather than 0 / 0. Then (q - 8) - (zp - 8) = q - zp is exact in bf16 too.
  """
  return jnp.where(scale == 0.0, 0.0, offset / scale).astype(jnp.bfloat16)
