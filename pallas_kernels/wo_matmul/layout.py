"""Weight layouts for the weight-only matmul kernels, and the one-time repacking into them.

mxjax stores a quantized weight W of logical shape (K, N) (used as `x @ W`) with its blocks along
K (axis 0): 4-bit codes packed two a byte along K, even k in the low nibble, so `codes` is
(K // 2, N) uint8 (or (K, N) int8 / float8 for 8-bit formats), and `scale` is (K // g, N).

The kernels want each output column's weights contiguous along K, because they compute
`y^T = W^T x^T` with W^T as the (register-resident) left operand of the tensor-core MMA:

  PackedWeight.w      (N, K)   int4 (XLA's packed int4: two a byte along K, even k low)  for
                                INT4 / UINT4 (stored as q - 8) and for FP4 E2M1 (the OCP
                                bit pattern s|e e|m, read as int4 bits);
                                int8 / float8_e4m3fn for the per-channel 8-bit formats;
                                uint8 nibble codes (N, K // 2) for NF4, even k low; or,
                                re-stored by `nf4_slots`, int4 NF4 slot codes (N, K).
  PackedWeight.scale  (G, N)   float32 per group (G = K // group; 1 for per-channel), uint8 E8M0
                                for MXFP4, float8_e4m3fn for NVFP4 block scales; bf16
                                multipliers after `fp4_scales_bf16` / `nf4_slots`.
  PackedWeight.offset (G, N)   float32, UINT4 only: s * (zp - 8), so that
                                dequant = (q - zp) * s = (q - 8) * s - offset; after
                                `uint4_zero_points` the uint8 zero points zp themselves.
  PackedWeight.tensor_scale ()  float32, NVFP4 only.

Optional re-storings, each a one-time repacking: `tile_weight` (block-contiguous tiles),
`order_for_wgmma` (int4 codes in the GPU kernels' register order within each 32 of K),
`thread_major` (64 x 128 blocks, int4 codes in that order, each block's words in the order a
warpgroup's plain 16-byte loads hand them to its registers: the GPU decode reads such a weight
without TMA),
`fp4_scales_bf16` (FP4 block scales as the bf16 multipliers the GPU decode kernel applies, so
it decodes no scale bytes) and `uint4_zero_points` (UINT4's zero points as bytes, 1 a group in
place of a 4-byte offset, the offset computed where it is used), which every other reader
undoes; and `nf4_slots`, which stores NF4 as int4 slot codes (`decode.nf4_slot_word_bits`:
byte permutes give their bf16 table values) with bf16 absmax: the numerics of bitsandbytes'
GEMV kernel (table and absmax in bf16), which every reader then takes (no inverse: the absmax
was rounded). `repack` stores int4-stored
weights in that register order when it runs on a GPU (the decode kernel then skips a shuffle,
6-16% faster on an H200), in K order elsewhere; `wgmma_order=` overrides.

The repacking runs once per weight (a transpose and, for UINT4, a re-centring). E2M1 keeps its
OCP bits because they are already almost a bf16: the GPU kernels move the sign to bit 15 and
the magnitude to bits 6-8 of a 16-bit half and multiply by 2^126 (`decode.e2m1_pair_bits`), four
integer ops and one bf16 multiply for two codes; a multiplier that carries the 2^126 (NVFP4's
always, MXFP4's with `fp4_scales_bf16(mx_fold=True)`) makes that multiply the scaling too.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from mxjax.formats.exact import div_rn
from pallas_kernels.quantize.schemes import div_fma
from pallas_kernels.wo_matmul.decode import NF4_SLOT_OF_CODE
from pallas_kernels.wo_matmul.decode import NF4_TABLE
from pallas_kernels.wo_matmul.decode import e2m1_f32
from pallas_kernels.wo_matmul.decode import nf4_slot_f32


class WeightFormat(enum.Enum):
  INT4 = "int4"  # symmetric, per-group float32 scale
  UINT4 = "uint4"  # asymmetric, per-group float32 scale and uint8 zero point
  MXFP4 = "mxfp4"  # E2M1 elements, E8M0 scale per 32
  NVFP4 = "nvfp4"  # E2M1 elements, E4M3 scale per 16, float32 tensor scale
  NF4 = "nf4"  # NF4 index, float32 absmax per group
  INT8 = "int8"  # per output channel float32 scale
  FP8 = "fp8_e4m3"  # per output channel float32 scale


FOUR_BIT = (WeightFormat.INT4, WeightFormat.UINT4, WeightFormat.MXFP4, WeightFormat.NVFP4,
            WeightFormat.NF4)
FP4 = (WeightFormat.MXFP4, WeightFormat.NVFP4)  # E2M1 bits, stored as int4 nibbles

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedWeight:
  """A quantized (K, N) weight in the kernels' layout (see the module docstring)."""

  w: jax.Array
  scale: jax.Array
  offset: jax.Array | None
  tensor_scale: jax.Array | None
  fmt: WeightFormat = dataclasses.field(metadata=dict(static=True))
  group: int = dataclasses.field(metadata=dict(static=True))  # K for per-channel
  k: int = dataclasses.field(metadata=dict(static=True))
  n: int = dataclasses.field(metadata=dict(static=True))
  # (tile_n, tile_k) if `w` is stored block-contiguous (`tile_weight`), else None.
  w_tile: tuple[int, int] | None = dataclasses.field(default=None, metadata=dict(static=True))
  # True if each aligned 32 of K of an int4-stored `w` is in `WGMMA_ORDER` (`order_for_wgmma`).
  wgmma_order: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 / NVFP4 in register order: True if each 32-bit word holds register j's two codes in
  # nibbles j and 4 + j, one in each 16-bit half (`HALVES_ORDER`, `order_for_wgmma(halves=True)`).
  halves_order: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # True if `w` is stored in `THREAD_BLOCK` blocks in `THREAD_WORDS` order (`thread_major`):
  # the GPU decode kernel then reads its codes by plain loads, no TMA.
  w_threads: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 / NVFP4 / NF4: True if `scale` holds bf16 multipliers (`fp4_scales_bf16`), not the
  # stored E8M0 / E4M3 scales; for NF4 (`nf4_slots`) the absmax in bf16, `w` int4 slot codes.
  scale_bf16: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 with bf16 multipliers: True if they carry the E2M1 bit decode's 2^126 (2^(e - 1) for
  # E8M0 code e, every e <= `MX_FOLD_MAX_CODE`: `fp4_scales_bf16`), so that one multiply a pair
  # decodes and scales, as NVFP4's multipliers always do.
  mx_fold: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # MXFP4 / NVFP4 with stored scale bytes: True if each byte's bf16 multiplier (MXFP4's folded,
  # 2^(e - 1); NVFP4's s_b 2^118) is one integer multiply-add of it (`BYTE_MULTIPLIERS`,
  # `fp4_byte_multipliers`), so that the GPU decode reads a byte a group and no scale decode.
  byte_multipliers: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # UINT4: True if `offset` holds the uint8 zero points (`uint4_zero_points`), not the float32
  # offsets s (zp - 8).
  zero_points: bool = dataclasses.field(default=False, metadata=dict(static=True))
  # INT4: True if `scale` holds each group's amax a in bf16 (`int4_amax_scales`), the scale
  # being RN_f32(a / 7), which the readers compute (`int4_scales_f32`, `amax_scale_f32`).
  amax_scales: bool = dataclasses.field(default=False, metadata=dict(static=True))

  @property
  def nbytes(self) -> int:
    """Bytes a kernel must read for the weight: codes, scales and offsets."""
    total = self.w.size * self.w.dtype.itemsize if self.w.dtype != jnp.int4 else self.w.size // 2
    for a in (self.scale, self.offset):
      if a is not None:
        total += a.size * a.dtype.itemsize
    return int(total)


def unpack_k(packed: jax.Array) -> jax.Array:
  """(K // 2, N) uint8, even k low nibble -> (K, N) uint8 nibbles."""
  lo, hi = packed & 15, packed >> 4
  k2, n = packed.shape
  return jnp.stack([lo, hi], axis=1).reshape(2 * k2, n)


def repack(codes: jax.Array, scale: jax.Array, *, fmt: WeightFormat | str, group: int,
           zero_point: jax.Array | None = None,
           tensor_scale: jax.Array | None = None,
           wgmma_order: bool | None = None,
           scale_bf16: bool | None = None,
           byte_multipliers: bool | None = None) -> PackedWeight:
  """Repacks mxjax's (K, N)-logical quantized weight into the kernels' layout.

  Args:
    codes: (K // 2, N) uint8 (4-bit formats, packed along K, even k low nibble), or (K, N)
      int8 / float8_e4m3fn (8-bit formats).
    scale: (K // group, N): float32 (INT4, UINT4, NF4, per-channel: (1, N)), uint8 E8M0 (MXFP4),
      float8_e4m3fn (NVFP4).
    fmt: the WeightFormat.
    group: block size along K (K for per-channel).
    zero_point: (K // group, N) uint8, UINT4 only.
    tensor_scale: float32 scalar, NVFP4 only.
    wgmma_order: store the codes in the GPU kernels' register order (`order_for_wgmma`; MXFP4
      in its halves order, `HALVES_BY_DEFAULT`); None: on a GPU backend for the int4-stored
      formats with 32 | K (`default_wgmma_order`).
    scale_bf16: MXFP4 / NVFP4: store the block scales as the GPU decode's bf16 multipliers
      (`fp4_scales_bf16`, same values; MXFP4's folded where its scales allow and are concrete,
      `MX_FOLD_BY_DEFAULT`); NF4: int4 slot codes and bf16 absmax (`nf4_slots`,
      bitsandbytes' GEMV numerics); None: on a GPU backend (`default_scale_bf16`) unless the
      scale bytes are stored as byte multipliers.
    byte_multipliers: MXFP4 / NVFP4: keep the scale bytes, marked as each its GPU multiplier by
      one integer multiply-add (`fp4_byte_multipliers`; raises for scales outside its range or
      with scale_bf16=True); None: where `default_byte_multipliers` holds and scale_bf16 is
      None.

  Returns:
    PackedWeight.
  """
  fmt = WeightFormat(fmt)
  if fmt in FOUR_BIT:
    k, n = codes.shape[0] * 2, codes.shape[1]
  else:
    k, n = codes.shape
  if k % group or scale.shape != (k // group, n):
    raise ValueError(f"scale shape {scale.shape} does not match K={k}, N={n}, group={group}")
  if (zero_point is not None) != (fmt is WeightFormat.UINT4):
    raise ValueError(f"zero_point is required for UINT4 and only for it (fmt={fmt})")
  if (tensor_scale is not None) != (fmt is WeightFormat.NVFP4):
    raise ValueError(f"tensor_scale is required for NVFP4 and only for it (fmt={fmt})")
  offset = None
  if fmt in (WeightFormat.INT4, WeightFormat.MXFP4, WeightFormat.NVFP4):  # the nibbles' bits
    q = unpack_k(codes).astype(jnp.int8)
    w = jnp.where(q >= 8, q - 16, q).astype(jnp.int4).T
  elif fmt is WeightFormat.UINT4:
    q = unpack_k(codes).astype(jnp.int8)
    w = (q - 8).astype(jnp.int4).T
    offset = scale.astype(jnp.float32) * (zero_point.astype(jnp.float32) - 8.0)
  elif fmt is WeightFormat.NF4:  # nibble codes, kept packed two a byte, now along K of (N, K)
    q = unpack_k(codes).T
    w = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(jnp.uint8)
  else:
    w = codes.T
  ts = None if tensor_scale is None else jnp.asarray(tensor_scale, jnp.float32)
  pw = PackedWeight(w=w, scale=scale, offset=offset, tensor_scale=ts, fmt=fmt, group=group,
                    k=k, n=n)
  if byte_multipliers and scale_bf16:
    raise ValueError("byte_multipliers keeps the scale bytes; scale_bf16=True stores bf16 "
                     "multipliers: pass one of them")
  if byte_multipliers is None and scale_bf16 is None and default_byte_multipliers(pw):
    pw = _marked_byte_multipliers(pw)  # (their fit checked once, by the default)
  elif byte_multipliers:
    pw = fp4_byte_multipliers(pw)
  elif scale_bf16 or scale_bf16 is None and default_scale_bf16(fmt):
    pw = scales_bf16(pw)
  if wgmma_order is None:
    wgmma_order = default_wgmma_order(pw)
  return order_for_wgmma(pw, halves=default_halves(fmt)) if wgmma_order else pw


def default_wgmma_order(pw: PackedWeight) -> bool:
  """Whether `repack` stores a weight in `WGMMA_ORDER` by default: on a GPU backend (whose
  kernels read it without a shuffle), for int4-stored codes (`int4_stored`: NF4 once
  `nf4_slots` made it so), when 32 divides K. The portable and TPU kernels read K order (a
  register-order weight costs them a permutation)."""
  return jax.default_backend() in ("gpu", "cuda") and int4_stored(pw) and pw.k % 32 == 0


def scales_bf16(pw: PackedWeight) -> PackedWeight:
  """The block scales as the GPU decode's bf16 multipliers: `fp4_scales_bf16` (MXFP4 / NVFP4)
  or `nf4_slots` (NF4, with its codes)."""
  return nf4_slots(pw) if pw.fmt is WeightFormat.NF4 else fp4_scales_bf16(pw)


def default_scale_bf16(fmt: WeightFormat) -> bool:
  """Whether `repack` stores block scales as bf16 multipliers by default: for MXFP4 / NVFP4
  (`fp4_scales_bf16`) and NF4 (`nf4_slots`) on a GPU backend, whose decode kernel then reads
  them with no scale decode (H200, 8192 x 28672: MXFP4 17-22% faster at M = 1..64, NVFP4 7-10%
  at M = 1..32 and 2% slower at M = 64; the prefill GEMM converts FP4's back per call, +1% /
  +3%) and decodes NF4 by byte permutes. Elsewhere the stored bytes are smaller and as fast."""
  return jax.default_backend() in ("gpu", "cuda") and fmt in (
      WeightFormat.MXFP4, WeightFormat.NVFP4, WeightFormat.NF4)


def default_byte_multipliers(pw: PackedWeight) -> bool:
  """Whether `repack` stores FP4 block scales as byte multipliers (`fp4_byte_multipliers`) by
  default: for MXFP4 / NVFP4 on a GPU backend whose decode runs on bf16 tensor cores
  (`e2m1_decode_on_bf16`), where every scale fits (`byte_multipliers_fit`: concrete scales
  only, so under jit the bf16 multipliers stay). H100, session 40, 8192 x 28672, against the
  defaults before (MXFP4's folded multipliers in the halves order, NVFP4's bf16 multipliers in
  the byte-pair order): MXFP4 M = 1 54.8 -> 54.1 us, M = 16 57.7 -> 56.6; NVFP4 61.4 -> 56.6,
  59.2 -> 53.8; 2-6% at M = 64 .. 256 and 2-3% in the prefill GEMM (`verified.py`); the weight
  5% / 10% smaller."""
  return (jax.default_backend() in ("gpu", "cuda") and pw.fmt in FP4
          and e2m1_decode_on_bf16() and byte_multipliers_fit(pw) is None)


def default_halves(fmt: WeightFormat) -> bool:
  """Whether `repack` stores a weight it puts in register order in `HALVES_ORDER`: the
  `HALVES_BY_DEFAULT` formats where `e2m1_decode_on_bf16()`."""
  return fmt in HALVES_BY_DEFAULT and e2m1_decode_on_bf16()


def scale_values(s: jax.Array, fmt: WeightFormat, tensor_scale=None) -> jax.Array:
  """Stored scales -> float32: E8M0 decoded (2^-127 exact, 0xFF NaN); NVFP4's `s_t * s_b` in the
  reference's order when `tensor_scale` (s_t) is given, `s_b` alone otherwise. Plain jnp: the
  kernels decode their scale blocks with it too."""
  if fmt is WeightFormat.MXFP4:
    b = s.astype(jnp.uint32)
    bits = jnp.where(b == 0, jnp.uint32(0x00400000), b << 23)
    return jnp.where(b == 255, jnp.nan, jax.lax.bitcast_convert_type(bits, jnp.float32))
  s = s.astype(jnp.float32)
  if fmt is WeightFormat.NVFP4 and tensor_scale is not None:
    s = tensor_scale * s
  return s


def scale_bytes_f32(b: jax.Array, fmt: WeightFormat) -> jax.Array:
  """FP4 block scales from their stored bytes (uint8: E8M0 for MXFP4, the E4M3 bit pattern for
  NVFP4) -> float32, exactly (`scale_values` of the stored array; NVFP4 without s_t). Written
  with a bitcast and 32-bit integer ops only, so the GPU kernel decodes TMA'd bytes with it."""
  if fmt is WeightFormat.NVFP4:
    b = jax.lax.bitcast_convert_type(b, jnp.float8_e4m3fn)
  elif fmt is not WeightFormat.MXFP4:
    raise ValueError(f"scale bytes are MXFP4's or NVFP4's, not {fmt.value}'s")
  return scale_values(b, fmt)


def group_scales(pw: PackedWeight, *, tensor_scale: bool = True) -> jax.Array:
  """The per-group scales (G, N) as float32 (`scale_values`; NVFP4 without s_t if not
  `tensor_scale`)."""
  pw = int4_scales_f32(fp4_scales_stored(pw))
  return scale_values(pw.scale, pw.fmt, pw.tensor_scale if tensor_scale else None)


# NVFP4's prescaled GPU decode multiplies the E2M1 bits (value / 2^126) by s_b * 2^118 (a bf16
# for every E4M3 s_b: 2^109 .. 448 * 2^118): one multiply gives value * s_b / 2^8, exact in
# bf16 (2^-18 .. 10.5), and the output is multiplied back by 2^8 with s_t.
NVFP4_PRESCALE_LOG2 = 118


# MXFP4's folded multipliers (`fp4_scales_bf16(mx_fold=True)`): the block scale 2^(e - 127)
# times the E2M1 bit decode's 2^126 is 2^(e - 1), a bf16 (2^-1 .. 2^127) for E8M0 codes
# e <= 128, i.e. scales up to 2: every block amax below 16 under OCP's scale rule.
MX_FOLD_MAX_CODE = 128
# Whether `fp4_scales_bf16` folds MXFP4's multipliers by default where they fit: since the folded
# decode matched the reference on an H100 and was faster there (session 37, `verified.py`'s
# (MXFP4, 32, "mx_fold"): 1-2% alone, 3-7% with `HALVES_BY_DEFAULT`).
MX_FOLD_BY_DEFAULT = True


def e2m1_decode_on_bf16() -> bool:
  """Whether the device the kernels trace for decodes MXFP4 at small M on bf16 tensor cores, so
  that `repack`'s MXFP4 defaults take the folded multipliers and the halves order: not on the
  devices of `configs.FP8_X_DEVICES` (the H200), whose default there (`fp8_x`) rebuilds E4M3
  bytes from the byte-pair order and scales the f32 sums, and so refuses both."""
  from pallas_kernels.wo_matmul import configs  # pylint: disable=g-import-not-at-top
  return not configs.device_kind().startswith(configs.FP8_X_DEVICES)


def fp4_scales_bf16(pw: PackedWeight, mx_fold: bool | None = None) -> PackedWeight:
  """Stores MXFP4 / NVFP4 block scales as the bf16 numbers the GPU decode kernel multiplies the
  decoded E2M1 bits (value / 2^126) by: 2^(e - 127) (MXFP4; 2^-127 a bf16 subnormal, 0xFF NaN)
  and s_b 2^118 (NVFP4), each exact, 2 bytes a group in place of 1 (+6% / +11% of the weight's
  bytes). The kernel then decodes no scale bytes; `fp4_scales_stored` undoes it.

  mx_fold: MXFP4: store 2^(e - 1) instead, the scale times the bit decode's 2^126, so that the
    kernels decode and scale a pair of codes in one bf16 multiply, exactly (every E2M1 value
    times 2^(e - 127) is a bf16), as NVFP4's s_b 2^118 lets them. Only for codes
    e <= `MX_FOLD_MAX_CODE` (2^(e - 1) overflows bf16 past it; 255, NaN, among them), which
    needs the scales' values: True raises for other scales or traced ones; None folds
    concrete scales that fit when `MX_FOLD_BY_DEFAULT` and `e2m1_decode_on_bf16()`, else not.
  """
  if pw.fmt not in FP4:
    raise ValueError(f"bf16 scale multipliers are for MXFP4 / NVFP4, not {pw.fmt.value}")
  if mx_fold and pw.fmt is not WeightFormat.MXFP4:
    raise ValueError(f"mx_fold folds MXFP4's E8M0 scales; {pw.fmt.value}'s multipliers always "
                     "carry the decode's 2^126")
  if pw.scale_bf16 and (mx_fold is None or mx_fold == pw.mx_fold):
    return pw
  pw = fp4_scales_stored(pw)
  if pw.fmt is WeightFormat.NVFP4:
    s = (scale_values(pw.scale, pw.fmt) * 2.0**NVFP4_PRESCALE_LOG2).astype(jnp.bfloat16)
    return dataclasses.replace(pw, scale=s, scale_bf16=True, byte_multipliers=False)
  e = pw.scale.astype(jnp.uint16)
  concrete = not isinstance(e, jax.core.Tracer)
  fits = concrete and bool(jnp.all(e <= MX_FOLD_MAX_CODE))
  if mx_fold and not fits:
    why = (f"the largest is {int(jnp.max(e))}" if concrete else
           "these are traced: fold outside jit, or pass mx_fold=False")
    raise ValueError(f"mx_fold needs the values of the E8M0 scale codes, every one <= "
                     f"{MX_FOLD_MAX_CODE} (scales up to 2): {why}")
  if mx_fold is None:
    mx_fold = MX_FOLD_BY_DEFAULT and fits and e2m1_decode_on_bf16()
  if mx_fold:  # 2^(e - 1): biased exponent e + 126, every one normal
    bits = (e + 126) << 7
  else:  # built from the bits, so no backend flushes the subnormal 2^-127
    bits = jnp.where(e == 0, jnp.uint16(0x0040), jnp.where(e == 255, jnp.uint16(0x7FC0), e << 7))
  s = jax.lax.bitcast_convert_type(bits.astype(jnp.uint16), jnp.bfloat16)
  return dataclasses.replace(pw, scale=s, scale_bf16=True, mx_fold=bool(mx_fold),
                             byte_multipliers=False)


def fp4_scales_stored(pw: PackedWeight) -> PackedWeight:
  """The inverse of `fp4_scales_bf16` (a no-op for stored scales, `fp4_byte_multipliers`'
  included, and for NF4 slot codes, whose bf16 absmax has no stored form to go back to): E8M0
  bytes / E4M3 again."""
  if not pw.scale_bf16 or pw.fmt is WeightFormat.NF4:
    return pw
  if pw.fmt is WeightFormat.NVFP4:
    s = pw.scale.astype(jnp.float32) * 2.0**-NVFP4_PRESCALE_LOG2
    scale = s.astype(jnp.float8_e4m3fn)
  else:  # the biased exponent field: 0 for the subnormal 2^-127, 255 for NaN; folded, e + 126
    bits = jax.lax.bitcast_convert_type(pw.scale, jnp.uint16)
    scale = ((bits >> 7) & 0xFF) - (126 if pw.mx_fold else 0)
    scale = scale.astype(jnp.uint8)
  return dataclasses.replace(pw, scale=scale, scale_bf16=False, mx_fold=False)


# The bf16 multiplier of a stored scale byte b as one integer multiply-add, b * mul + add (its
# bit pattern; `fp4_byte_multipliers`): MXFP4's folded 2^(e - 1) is the biased exponent e + 126
# (every code e <= `MX_FOLD_MAX_CODE`); NVFP4's s_b 2^118 is the E4M3 byte's exponent and
# mantissa moved to bf16's (b << 4) with 238 added to the exponent (every normal E4M3 code,
# 0x08 .. 0x7E: a subnormal's leading bit is implicit in neither). For a register's pair of one
# group, b * (mul * 0x10001) + add * 0x10001: one IMAD a scale, as many instructions as the
# bf16 multiplier's own duplication into a pair.
BYTE_MULTIPLIERS = {WeightFormat.MXFP4: (128, 126 << 7), WeightFormat.NVFP4: (16, 238 << 7)}


def byte_multiplier_bits(b: jax.Array, fmt: WeightFormat) -> jax.Array:
  """Stored scale bytes (uint8) -> the bf16 multipliers' bits (uint16) by `BYTE_MULTIPLIERS`'
  multiply-add: `fp4_scales_bf16`'s (MXFP4's folded) wherever `byte_multipliers_fit` holds."""
  mul, add = BYTE_MULTIPLIERS[fmt]
  return (b.astype(jnp.uint32) * mul + add).astype(jnp.uint16)


def byte_multipliers_fit(pw: PackedWeight) -> str | None:
  """Why `pw`'s stored FP4 scale bytes are not each their multiplier by `BYTE_MULTIPLIERS`'
  multiply-add, or None if they are: MXFP4 codes above `MX_FOLD_MAX_CODE` (NaN's 255 among
  them), NVFP4 codes that are not normal E4M3 (subnormal, NaN or negative) except zero scales of
  blocks whose codes are all +-0 (their multiplier, 2^111, then multiplies zeros). Needs the
  values: traced scales do not fit."""
  pw = fp4_scales_stored(pw)
  if pw.fmt not in FP4:
    return f"scale bytes are MXFP4's or NVFP4's, not {pw.fmt.value}'s"
  b = pw.scale
  if isinstance(b, jax.core.Tracer) or isinstance(pw.w, jax.core.Tracer):
    return "the scales are traced: store them outside jit"
  b = np.asarray(jax.lax.bitcast_convert_type(b, jnp.uint8))
  if pw.fmt is WeightFormat.MXFP4:
    big = int(b.max(initial=0))
    return (None if big <= MX_FOLD_MAX_CODE else
            f"an E8M0 code above {MX_FOLD_MAX_CODE} (the largest is {big}): 2^(e - 1) is no bf16")
  bad = ~(((b >= 0x08) & (b <= 0x7E)) | (b == 0))
  if bad.any():
    return (f"{int(bad.sum())} E4M3 scale codes are subnormal, NaN or negative (the first "
            f"0x{int(b[bad][0]):02x})")
  zero = b == 0
  if zero.any():
    w = np.asarray(logical_order(untile_weight(pw)).w.astype(jnp.int8))  # (N, K), K order
    live = (w & 7).reshape(pw.n, -1, pw.group).any(axis=-1).T  # (G, N): a nonzero code
    if (zero & live).any():
      return f"{int((zero & live).sum())} zero scales have nonzero codes in their blocks"
  return None


def fp4_byte_multipliers(pw: PackedWeight) -> PackedWeight:
  """Stores MXFP4 / NVFP4 scales as their bytes, marked as each its bf16 multiplier by one
  integer multiply-add (`BYTE_MULTIPLIERS`): the GPU decode then reads 1 byte a group where
  `fp4_scales_bf16` reads 2 (-5% / -10% of an MXFP4 / NVFP4 weight's bytes) and makes the
  multiplier pair with the one IMAD the bf16 multiplier's duplication takes. Every other reader
  takes the bytes as stored. Raises where `byte_multipliers_fit` gives a reason (scales outside
  its range, or traced)."""
  why = byte_multipliers_fit(pw)
  if why is not None:
    raise ValueError(f"byte multipliers need every scale byte in range: {why}; keep "
                     f"fp4_scales_bf16's multipliers")
  return _marked_byte_multipliers(pw)


def _marked_byte_multipliers(pw: PackedWeight) -> PackedWeight:
  """`fp4_byte_multipliers` of a weight whose `byte_multipliers_fit` is known to hold."""
  return dataclasses.replace(fp4_scales_stored(pw), byte_multipliers=True)


def nvfp4_multiplier_f32(m: jax.Array) -> jax.Array:
  """NVFP4 block scales s_b from their bf16 multipliers s_b 2^118 (`fp4_scales_bf16`) ->
  float32, exactly: `scale_bytes_f32` of the stored E4M3 bytes, with no pass back to them. Every
  multiplier is zero, NaN or a normal bf16 (s_b >= 2^-9), and the power of two comes off
  exactly. (MXFP4's multipliers are its scales: the GEMM multiplies by them in bf16.)"""
  return m.astype(jnp.float32) * 2.0**-NVFP4_PRESCALE_LOG2


def nf4_slots(pw: PackedWeight) -> PackedWeight:
  """Stores an NF4 weight as int4 slot codes (N, K) (`decode.NF4_SLOT_OF_CODE`, in K order)
  with its absmax rounded to bf16: the GPU decode kernel turns a pair of slot codes into their
  bf16 table values by byte permutes and multiplies by the absmax with one `mul.rn.bf16x2`.

  The weight becomes RN_bf16(bf16(table) * bf16(absmax)) in a kernel: bitsandbytes' GEMV
  kernel's numerics (`kgemm_4bit_inference_naive` keeps both in bf16), not its dequantization's
  (f32 product). `dequantize` gives bf16(table) * bf16(absmax) in f32. One-way: the absmax
  was rounded. 2 bytes of scale a group in place of 4."""
  if pw.fmt is not WeightFormat.NF4:
    raise ValueError(f"slot codes are for NF4, not {pw.fmt.value}")
  if pw.scale_bf16:
    return pw
  pw = untile_weight(pw)
  slots = jnp.asarray(NF4_SLOT_OF_CODE)[unpack_k(pw.w.T).T.astype(jnp.int32)]
  w = jnp.where(slots >= 8, slots.astype(jnp.int8) - 16, slots.astype(jnp.int8))
  return dataclasses.replace(pw, w=w.astype(jnp.int4), scale=pw.scale.astype(jnp.bfloat16),
                             scale_bf16=True)


def uint4_zero_points(pw: PackedWeight) -> PackedWeight:
  """Stores UINT4's zero points zp (uint8, (G, N)) in `offset` in place of the float32 offsets
  s (zp - 8): a quarter of the bytes (UINT4 g128 / g64 / g32 at 8192 x 28672: 132 / 147 / 176
  MB -> 127 / 136 / 154 MB). A reader computes the offset as `uint4_offsets` does,
  f32(s) * (f32(zp) - 8), the product `repack` rounded, so every value is unchanged.

  zp is found as the one of 0..15 whose offset has the stored bits (so signed zeros, and the
  NaN of an infinite scale times zp = 8, come back too).

  Raises:
    ValueError: (when not traced) an offset that is no f32(s) * (zp - 8), i.e. that `repack`
      did not make; under `jit` such an offset would take the nearest zp.
  """
  if pw.fmt is not WeightFormat.UINT4:
    raise ValueError(f"zero points are UINT4's, not {pw.fmt.value}'s")
  if pw.zero_points:
    return pw
  s, off = pw.scale.astype(jnp.float32), pw.offset
  bits = lambda v: jax.lax.bitcast_convert_type(v, jnp.uint32)
  nearest = jnp.clip(jnp.rint(jnp.where(jnp.isnan(off / s), 0.0, off / s)), -8.0, 7.0) + 8.0
  zp, found = nearest, jnp.zeros(off.shape, bool)
  for z in range(15, -1, -1):  # the lowest match wins
    o = s * jnp.float32(z - 8)
    hit = (bits(o) == bits(off)) | (jnp.isnan(o) & jnp.isnan(off))
    zp, found = jnp.where(hit, jnp.float32(z), zp), found | hit
  if not isinstance(found, jax.core.Tracer) and not bool(jnp.all(found)):
    raise ValueError(f"{int(jnp.sum(~found))} UINT4 offsets are not f32(s) * (zp - 8) for any "
                     "zp in 0..15 (not made by `repack`): they cannot be stored as zero points")
  return dataclasses.replace(pw, offset=zp.astype(jnp.uint8), zero_points=True)


def uint4_offsets(pw: PackedWeight) -> PackedWeight:
  """The inverse of `uint4_zero_points` (a no-op for stored offsets and for other formats):
  offsets f32(s) * (f32(zp) - 8), as `repack` computes them."""
  if not pw.zero_points:
    return pw
  off = pw.scale.astype(jnp.float32) * (pw.offset.astype(jnp.float32) - 8.0)
  return dataclasses.replace(pw, offset=off, zero_points=False)


# INT4's scale is RN_f32(amax / 7) (`mxjax.quantize`, with the schemes' amax floor of 0), and a
# bf16 weight's group amax is a bf16: 2 bytes a group determine the 4-byte scale
# (`int4_amax_scales`; 8192 x 28672 g32: 146.8 -> 132.1 MB, 98% -> 88% of the time 3.2x allows
# at copy bandwidth, `kernels_standing.md`). The GPU decode rebuilds each scale with
# `schemes.div_fma` by the constant RN(1 / 7): a multiply and two FMAs, RN(a / 7) exactly for
# every bf16 a with |a| >= `AMAX_MIN` and for 0 (tests run all of them): wherever the scale is a
# normal float32; below, the quotient is subnormal and may be off by an ulp (refused).
INT4_MAX = 7.0
INV_INT4_MAX = np.float32(1.0 / np.float64(INT4_MAX))  # RN_f32(1 / 7): float64 rounds it once
AMAX_MIN = 7 * 2.0**-126


def amax_scale_f32(a: jax.Array, fma) -> jax.Array:
  """INT4 scales RN_f32(a / 7) (float32, a's shape) from bf16 group amaxes a, by `div_fma` with
  `fma` (float32 p * q + r rounded once; `_ptx.fma_rn` on Mosaic GPU): exact for finite a with
  |a| >= `AMAX_MIN` or a = 0, and NaN for NaN (`amax_scales_fit` keeps to those)."""
  return div_fma(a.astype(jnp.float32), jnp.float32(INT4_MAX), INV_INT4_MAX, fma)


def _bf16_amaxes(pw: PackedWeight) -> tuple[np.ndarray | None, str | None]:
  """(a, None): the bf16 amaxes (numpy) whose RN_f32(a / 7) are `pw`'s float32 INT4 scales,
  within `amax_scale_f32`'s range; or (None, why not)."""
  if pw.fmt is not WeightFormat.INT4:
    return None, f"amax scales are INT4's (RN(amax / 7)), not {pw.fmt.value}'s"
  if pw.scale.dtype != jnp.float32:
    return None, f"the scales are {pw.scale.dtype}, not the float32 RN(amax / 7) of a bf16 amax"
  if isinstance(pw.scale, jax.core.Tracer):
    return None, "the scales are traced: store them outside jit"
  s = np.asarray(pw.scale)
  # the one candidate a scale can come from: the bf16 nearest 7 s (7 s exact in float64), since
  # distinct bf16 a give distinct quotients (a / 7 moves by ulp_bf16(a) / 7 >> ulp_f32)
  a = (s.astype(np.float64) * INT4_MAX).astype(ml_dtypes.bfloat16)
  mag = np.abs(a.astype(np.float32))
  if np.isinf(mag).any():
    return None, "an infinite scale (a block holding an Inf)"
  tiny = (mag < AMAX_MIN) & (mag > 0)
  if tiny.any():
    return None, (f"{int(tiny.sum())} subnormal scales (amax below 7 * 2^-126, the smallest "
                  f"{float(mag[tiny].min())!r}), which the decode's FMA division does not "
                  "round exactly")
  back = np.asarray(div_rn(jnp.asarray(a, jnp.float32), INT4_MAX))
  same = (back.view(np.uint32) == s.view(np.uint32)) | (np.isnan(back) & np.isnan(s))
  if not same.all():
    return None, (f"{int((~same).sum())} scales are no RN(a / 7) of a bf16 amax a (the first "
                  f"{float(s[~same][0])!r}): quantized from float32, or with an amax floor")
  return a, None


def amax_scales_fit(pw: PackedWeight) -> str | None:
  """Why `pw`'s INT4 float32 scales are not each RN_f32(a / 7) of a bf16 a within
  `amax_scale_f32`'s range, or None if they are (NaN scales, of NaN blocks, included). Weights
  mxjax quantized from bf16 fit, a being the group's amax (or 0 where the quotient was
  flushed); from float32, or with an amax floor that is no bf16 / 7, or with an infinite scale
  (a block holding an Inf) or a subnormal one (`AMAX_MIN`), they do not. Needs the values:
  traced scales do not fit."""
  return None if pw.amax_scales else _bf16_amaxes(pw)[1]


def int4_amax_scales(pw: PackedWeight) -> PackedWeight:
  """Stores INT4's float32 group scales as the bf16 group amaxes a they were computed from
  (scale = RN_f32(a / 7)): 2 bytes a group in place of 4 (-10% of a g32 weight's bytes, -6% at
  g64, -3% at g128), every value unchanged. The GPU decode computes each scale from its amax
  (`amax_scale_f32`); every other reader takes the float32 scales (`int4_scales_f32`). Raises
  where `amax_scales_fit` gives a reason."""
  if pw.amax_scales:
    return pw
  a, why = _bf16_amaxes(pw)
  if why is not None:
    raise ValueError(f"amax scales need every INT4 scale to be RN(a / 7) of a bf16 amax a: "
                     f"{why}; keep the float32 scales")
  return dataclasses.replace(pw, scale=jnp.asarray(a), amax_scales=True)


def int4_scales_f32(pw: PackedWeight) -> PackedWeight:
  """The inverse of `int4_amax_scales` (a no-op for other weights): float32 scales
  RN(a / 7), as `mxjax.quantize` computed them."""
  if not pw.amax_scales:
    return pw
  return dataclasses.replace(pw, scale=div_rn(pw.scale.astype(jnp.float32), INT4_MAX),
                             amax_scales=False)


def int4_stored(pw: PackedWeight) -> bool:
  """Whether `pw.w` holds int4 codes (N, K): INT4_STORED formats and NF4 slot codes."""
  return pw.fmt in INT4_STORED or (pw.fmt is WeightFormat.NF4 and pw.scale_bf16)


# Storage position -> K offset within each aligned 32 of K, for int4-stored weights in the GPU
# kernels' register order: K offset 8 j + 2 q + e (j, q in 0..3, e in 0..1) is stored at
# 8 q + 2 j + e, which swaps j and q (so the table is its own inverse). A thread of Mosaic's
# WGMMA_UPCAST_4X layout loads storage positions 8 q .. 8 q + 7 of each 32 (one 32-bit word:
# lane q of its row quad), and the WGMMA layout wants that thread to hold K offsets 8 j + 2 q,
# 8 j + 2 q + 1 for j = 0..3 in its registers j: in this order the loaded word already is those
# four registers, byte j each (`registers.wgmma_from_upcast_4x`), and no shuffles are needed.
WGMMA_ORDER = np.array([8 * ((m % 8) // 2) + 2 * (m // 8) + m % 2 for m in range(32)])
INT4_STORED = (WeightFormat.INT4, WeightFormat.UINT4, WeightFormat.MXFP4, WeightFormat.NVFP4)


# `WGMMA_ORDER` with each 32-bit word's nibbles reordered for E2M1 codes: register j's two codes
# (WGMMA_ORDER's nibbles 2 j, 2 j + 1: byte j) in nibbles j and 4 + j, one in each 16-bit half,
# where the decode isolates both with one AND and places them with one IMAD
# (`decode.e2m1_halves_words`; the byte-pair order takes a `prmt` a pair more).
HALVES_ORDER = np.array([WGMMA_ORDER[8 * (m // 8) + 2 * (m % 4) + (m % 8) // 4]
                         for m in range(32)])
# Formats `repack` stores in the halves order when it stores register order (`default_halves`):
# MXFP4, whose decode it made 2-4% faster on an H100 with folded multipliers (session 37: M = 1
# 59.5 -> 57.5 us, M = 16 61.8 -> 59.1), and NVFP4 (session 40, H100, bf16 multipliers: 8192 x
# 28672 M = 1 61.2 -> 60.2, M = 16 60.5 -> 59.0; 4096 x 14336 M = 1 17.4 -> 16.1, M = 16 17.6 ->
# 16.4; `verified.py`).
HALVES_BY_DEFAULT = (WeightFormat.MXFP4, WeightFormat.NVFP4)


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


def dequantize_nk(pw: PackedWeight, *, stored_order: bool = False) -> jax.Array:
  """W^T, the (N, K) float32 weight a PackedWeight stands for, in the storage orientation.

  With `stored_order`, K stays in the order the codes are stored in (`WGMMA_ORDER` within each
  32 for a weight in register order; pair it with `storage_order(x, pw)`): reading such a
  weight back in K order (int4 codes widened, permuted and narrowed again) made XLA's
  dequantize-then-GEMM prefill 5.5x slower on an H200 (725 against 131 us, M = 1024, N = 4096),
  where permuting x costs ~11 us.
  """
  pw = untile_weight(pw)
  if not stored_order:
    pw = logical_order(pw)
  fmt = pw.fmt
  if fmt is WeightFormat.NF4 and pw.scale_bf16:
    q = nf4_slot_f32(pw.w.astype(jnp.int32) & 15)
  elif fmt is WeightFormat.NF4:
    lo, hi = (jnp.asarray(NF4_TABLE)[v.astype(jnp.int32)] for v in (pw.w & 15, pw.w >> 4))
    q = jnp.stack([lo, hi], axis=-1).reshape(pw.n, pw.k)
  elif fmt in FP4:
    q = e2m1_f32(pw.w.astype(jnp.int32) & 15)  # selects, not a gather (prefill.py)
  else:
    q = pw.w.astype(jnp.float32)
  w = q * _per_element(group_scales(pw), pw)
  if fmt is WeightFormat.UINT4:
    w = w - _per_element(uint4_offsets(pw).offset, pw)
  return w


def _per_element(v: jax.Array, pw: PackedWeight) -> jax.Array:
  """Per-group values (G, N) -> (N, K), each element's group's, in `pw`'s storage order."""
  order = k32_order(pw)
  if order is None or pw.group % 32 == 0:  # groups of whole 32s: the order stays inside
    return jnp.repeat(v.T, pw.group, axis=1)
  k = 32 * (np.arange(pw.k) // 32) + order[np.arange(pw.k) % 32]
  return v.T[:, k // pw.group]


def storage_order(x: jax.Array, pw: PackedWeight) -> jax.Array:
  """x (..., K) with its last axis in the order `pw` stores K (see `dequantize_nk`)."""
  order = k32_order(pw)
  return x if order is None else _reorder_k32(x, order)


def dequantize(pw: PackedWeight) -> jax.Array:
  """The (K, N) float32 weight a PackedWeight stands for (pure jnp; the kernels' oracle)."""
  return dequantize_nk(pw).T


def repack_qarray(q, *, wgmma_order: bool | None = None, scale_bf16: bool | None = None,
                  byte_multipliers: bool | None = None) -> PackedWeight:
  """Repacks an `mxjax.QArray` weight (logical (K, N), quantized along K = axis 0); `wgmma_order`,
  `scale_bf16` and `byte_multipliers` as in `repack`.

  Read through its fields only (this package imports nothing of mxjax beyond its formats).

  Raises:
    NotImplementedError: a scheme with no kernel layout (NF4 double quantization, 2-D blocks,
      FP6, ...), or a weight not quantized along axis 0.
  """
  sch = q.scheme
  if len(q.shape) != 2 or q.axis % 2 != 0:
    raise NotImplementedError(
        f"weight-only matmul wants a (K, N) weight quantized along K (axis 0); got shape "
        f"{q.shape}, axis {q.axis}")
  if getattr(sch, "double_quant", False) or getattr(sch, "block_size_2d", None):
    raise NotImplementedError(f"no kernel layout for {sch.describe()}")
  k, _ = q.shape
  element = sch.element
  gran = getattr(sch.granularity, "value", sch.granularity)
  group = sch.block_size if gran == "block" else k
  scale_fmt = getattr(sch.scale, "value", sch.scale)
  if element == "int4":
    fmt = WeightFormat.INT4
  elif element == "uint4":
    fmt = WeightFormat.UINT4
  elif element == "e2m1" and scale_fmt == "e8m0":
    fmt = WeightFormat.MXFP4
  elif element == "e2m1" and sch.tensor_scale:
    fmt = WeightFormat.NVFP4
  elif element == "nf4":
    fmt = WeightFormat.NF4
  elif element == "int8" and gran == "axis":
    fmt = WeightFormat.INT8
  elif element == "e4m3" and gran == "axis":
    fmt = WeightFormat.FP8
  else:
    raise NotImplementedError(f"no weight-only kernel layout for {sch.describe()}")
  ts = None if q.tensor_scale is None else q.tensor_scale.reshape(())
  return repack(q.codes, q.scale, fmt=fmt, group=group, zero_point=q.zero_point,
                tensor_scale=ts, wgmma_order=wgmma_order, scale_bf16=scale_bf16,
                byte_multipliers=byte_multipliers)
