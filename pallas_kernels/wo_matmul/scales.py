"""How a `PackedWeight`'s scales are stored, and the one-time re-storings between the forms.

FP4 block scales as stored bytes (E8M0, E4M3), as the GPU decode's bf16 multipliers
(`fp4_scales_bf16`, MXFP4's folded with the E2M1 decode's 2^126) or as bytes marked as each its
multiplier by one integer multiply-add (`fp4_byte_multipliers`); NF4 as slot codes with bf16
absmax (`nf4_slots`, one-way); UINT4's zero points in place of offsets (`uint4_zero_points`);
INT4's scales as the bf16 amaxes they came from (`int4_amax_scales`). Every reader other than
the GPU decode takes the values through the inverses (`fp4_scales_stored`, `uint4_offsets`,
`int4_scales_f32`), as `group_scales` does.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from mxjax.formats.exact import div_rn
from pallas_kernels.quantize.schemes import div_fma
from pallas_kernels.wo_matmul.code_order import logical_order
from pallas_kernels.wo_matmul.code_order import untile_weight
from pallas_kernels.wo_matmul.decode import NF4_SLOT_OF_CODE
from pallas_kernels.wo_matmul.packed_weight import FP4
from pallas_kernels.wo_matmul.packed_weight import PackedWeight
from pallas_kernels.wo_matmul.packed_weight import unpack_k
from pallas_kernels.wo_matmul.packed_weight import WeightFormat


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
  return mark_byte_multipliers(pw)


def mark_byte_multipliers(pw: PackedWeight) -> PackedWeight:
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

