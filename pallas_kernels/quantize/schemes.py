"""The five fused-quantization schemes and their block math, written once for every backend.

Each scheme works on one tile of blocks held as two float32 arrays `xe`, `xo` of shape
(rows, B // 2): the even- and odd-index elements of each block of B along the quantized axis
(each row is one block). Working on the pair split lets a kernel pack two 4-bit codes a byte
(even index in the low nibble) or two 8-bit codes a uint16 (even index in the low byte) with
elementwise ops alone, which every Pallas backend lowers (Mosaic GPU has no general reshape of
register arrays). For bf16 input the split is free: a bf16 pair is one uint32.

The functions use only elementwise jnp ops, `max(axis=1)` and `broadcast_in_dim` along the row,
so the same code runs in jnp (the reference), in the portable Pallas twin, in the Mosaic GPU
kernel (on WGMMA register layouts) and in the TPU kernel. The TPU kernel (`tpu.py`) lays blocks
out differently: one (nb, 128) array per element position of the block, one block per array
element, so its amax is an elementwise max (`magnitude_bits`, `amax_from_bits`) and its block
state has the elements' shape, which the encoders take as is. Numerics follow mxjax's contract
(DESIGN.md) exactly; `tests/kernels` checks bit-identity with `mxjax.quantize`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax.numpy as jnp
from jax import lax

E4M3_MAX = 448.0
E2M1_MAX = 6.0
NVFP4_TENSOR_DIV = 448.0 * 6.0


@dataclasses.dataclass(frozen=True)
class FusedScheme:
  """A fused-quantization scheme (named like the mxjax preset it reproduces)."""

  name: str
  block: int  # B, along the quantized axis
  bits: int  # element bits (8 or 4)
  scale_dtype: Any  # stored scale dtype
  two_level: bool = False  # NVFP4: needs the tensor amax first


SCHEMES = {
    "mxfp8_e4m3": FusedScheme("mxfp8_e4m3", 32, 8, jnp.uint8),
    "fp8_e4m3_block128": FusedScheme("fp8_e4m3_block128", 128, 8, jnp.float32),
    "mxfp4": FusedScheme("mxfp4", 32, 4, jnp.uint8),
    "nvfp4": FusedScheme("nvfp4", 16, 4, jnp.float8_e4m3fn, two_level=True),
    "int4_g128": FusedScheme("int4_g128", 128, 4, jnp.float32),
}


def get_scheme(name: str) -> FusedScheme:
  try:
    return SCHEMES[name]
  except KeyError:
    raise ValueError(f"fused quantization supports {sorted(SCHEMES)}, not {name!r}") from None


# ----------------------------------------------------------------------------- helpers

def _bits(a):
  return lax.bitcast_convert_type(a, jnp.int32)


def _f32(i):
  return lax.bitcast_convert_type(i, jnp.float32)


def _exp2i(e):
  """2^e for int32 e in [-126, 127], from bits."""
  return _f32((e + 127) << 23)


def pair_scale_word(f):
  """int32 (rows,) words holding float32 (rows,) powers of two (`block_state`'s MX factors,
  2^-64 .. 2^64: exact in bf16) as bf16 in both halves: the scale operand of the E2M1 pair
  encoder (`_ptx.e2m1_pairs`)."""
  h = _bits(f) >> 16
  return h | (h << 16)


def _isnan(a):
  return a != a


def _row(v, like):
  """Broadcasts a per-row (rows,) vector against a (rows, cols) tile.

  A state already shaped like the tile (one value per element, as the TPU kernel holds it:
  `tpu.py`) is used as is.
  """
  if v.ndim == like.ndim:
    return v
  return lax.broadcast_in_dim(v, like.shape, [0])


def _signbit(a):
  return lax.shift_right_logical(_bits(a), 31)  # int32 0 / 1


def _copysign(v, x):
  """v with x's sign bit, on the bits (so a NaN's sign is set too, on any backend)."""
  return _f32((_bits(v) & 0x7FFFFFFF) | (_bits(x) & jnp.int32(-(2**31))))


def _e2m1_code(y):
  """E2M1 code (int32, 0..15) of float32 y: RNE, saturating at 6, NaN -> +-0 (mxjax encode).

  The grid's spacing is 1/2 on [0, 2), 1 on [2, 4) and 2 on [4, 6], so on the binade e = 0, 1,
  2 of a = min(|y|, 6) the code is RNE(a * 2^(1 - e)) + 2e. e = clip(exponent(a), 0, 2) comes
  from the exponent field, and k = 2^(1 - e) and the magic number 1.5 * 2^23 + 2e follow from it
  by integer arithmetic: one multiply-add rounds a * k (exact) into the magic number's last
  bits (`_rne_bits`), RNE(a * k) + 2e. 2e is even, so ties to even integers stay ties to even
  codes (an even code has mantissa 0). Picking the piece from the field instead of by range
  compares was 5-9% faster in the GPU quantize kernels (MXFP4 / NVFP4, rows and columns; H200,
  session 15), with the same code for every float32 (tests/kernels/test_quantize.py).
  """
  a = jnp.minimum(jnp.abs(y), jnp.float32(E2M1_MAX))  # NaN stays NaN: masked below
  t = jnp.maximum(_bits(a) >> 23, 127)  # 127 + e, e = 0, 1, 2 (a <= 6)
  k = _f32((255 - t) << 23)  # 2^(128 - t)
  magic = _f32(_bits(jnp.float32(1.5 * 2.0**23)) - 254 + 2 * t)  # 1.5 * 2^23 + 2e, exact
  code = jnp.where(_isnan(y), jnp.int32(0), _bits(a * k + magic) & 7)
  return code | (_signbit(y) << 3)


def _rne_bits(v):
  """int32 whose low bits hold round-half-even(v) in two's complement, for float32 |v| < 2^21.

  v + 1.5 * 2^23 lies in [2^23, 2^24), where the float32 ulp is 1, so the sum is RN(v) +
  1.5 * 2^23 and its significand is 2^22 + RN(v): mask the bits wanted (RN(v) mod 2^bits).
  The sum is bitcast, never subtracted back, so no simplifier can fold the trick away; where a
  backend contracts `a * k + c` into one FMA the rounding is the same when a * k is exact.
  """
  return _bits(v + jnp.float32(1.5 * 2.0**23))


def _e4m3_code(y, satfinite: bool = False):
  """E4M3 code (int32, 0..255) of float32 y: RNE, saturating at 448, NaN -> 0x7F | sign.

  `satfinite`: the cast saturates by itself (finite overflow and infinities to +-448, keeping
  the sign), as Mosaic GPU's f32 -> E4M3 cast, PTX's `cvt.rn.satfinite.e4m3x2.f32`, does: no
  clip (two float min / max an element). XLA's cast on the CPU does not saturate (overflow
  gives NaN): there the clip stays."""
  yc = y if satfinite else jnp.clip(y, -E4M3_MAX, E4M3_MAX)
  c = lax.bitcast_convert_type(yc.astype(jnp.float8_e4m3fn), jnp.uint8).astype(jnp.int32)
  nan_code = jnp.int32(0x7F) | (_signbit(y) << 7)
  return jnp.where(_isnan(y), nan_code, c)


def _e4m3_cast(v):
  """E4M3 code (int32, 0..255) of float32 v by the cast alone: no clip, no NaN test. On Mosaic
  GPU the cast is `cvt.rn.satfinite.e4m3x2.f32`; XLA's on the CPU gives NaN above 464 (use only
  in range there)."""
  return lax.bitcast_convert_type(v.astype(jnp.float8_e4m3fn), jnp.uint8).astype(jnp.int32)


def _sign_at(s, bit: int):
  """s's sign bit (float32 s) moved to bit `bit` of an int32 (0 elsewhere)."""
  return (_bits(s) >> (31 - bit)) & (1 << bit)


def _int4_code(y, finite: bool = False):
  """INT4 two's-complement nibble (int32) of float32 y: clip to [-8, 7], RNE, NaN -> 0.
  `finite`: the caller keeps no code of a NaN y (`element_encoder`'s masked rows): no test."""
  if not finite:
    y = jnp.where(_isnan(y), jnp.float32(0.0), y)
  return _rne_bits(jnp.clip(y, -8.0, 7.0)) & 15


def _e8m0(amax, emax):
  """OCP `floor` E8M0 biased exponent (int32) of the block amax; 0xFF for NaN."""
  unb = ((_bits(amax) >> 23) & 0xFF) - 127 - emax
  b = jnp.clip(unb, -127, 127) + 127
  return jnp.where(_isnan(amax), jnp.int32(0xFF), b)


# ----------------------------------------------------------------------------- per scheme

# ULPs of float32 between the approximate quotient and a rounding midpoint within which the
# exact test runs: x * RN(1/s) is within 2 ulps of x / s (two roundings, ulps can halve across a
# binade), so 4 leaves a margin.
_NEAR_ULPS = 4


def _mant_exp(v):
  """(integer significand, exponent) of float32 v >= 0 with v == sig * 2^exp exactly."""
  b = _bits(v)
  e = (b >> 23) & 0xFF
  sig = jnp.where(e == 0, b & 0x7FFFFF, (b & 0x7FFFFF) | 0x800000)
  return sig, jnp.maximum(e, 1) - 150


def quotient_code(x, s, r, *, fp8: bool):
  """E4M3 (fp8) or INT4 code of RN_f32(x / s), without a per-element division.

  Args:
    x: float32 (rows, n) values.
    s: float32 (rows,) block scales, > 0 (+Inf: r = 0, every y = x * 0 with x's sign).
    r: float32 (rows,) correctly rounded 1 / s (one exact division per block).
    fp8: E4M3 (saturating at 448) if True, else INT4 (clip to [-8, 7]).

  Returns:
    int32 (rows, n): the code the element encoder gives for the correctly rounded quotient,
    i.e. exactly what `code(div_rn(x, s))` gives for normal operands.

  `y = x * r` is within 2 ulps of x / s, so it already has the right code unless it lies within
  a few ulps of a rounding midpoint m of the element grid (E4M3 or integers), where the
  correctly rounded quotient decides between the two neighbours (or lands on m itself: then the
  element rounding ties to even). bf16 data hit these cases often (e.g. x = amax / 2 gives
  x / s = 3.5 for INT4 up to the rounding of s). For those elements the side of m is found in
  integers: m has at most 5 significant bits, so s * m = S * M * 2^k is exact in int32 (S < 2^24,
  M < 2^5), and RN_f32(x / s) == m exactly when |x - s m| <= s * ulp(m) / 2.
  """
  y = _copysign(x * _row(r, x), x)  # the NaN of Inf * 0 (an infinite scale) gets x's sign
  approx = _e4m3_code(y) if fp8 else _int4_code(y)
  a = jnp.abs(y)
  one = jnp.int32(1)
  if fp8:
    # E4M3 normals (a >= 2^-6): midpoints sit at the 4th fraction bit of a's binade.
    ab = _bits(a)
    lo_norm = (((ab >> 23) - 120) << 3) | ((ab >> 20) & 7)
    mid_norm = (ab & ~0xFFFFF) | 0x80000
    # Subnormals: a multiple of 2^-9 below 2^-6, midpoints at (j + 1/2) 2^-9.
    t = a * jnp.float32(2.0**9)
    lo_sub = jnp.minimum(t, jnp.float32(7.0)).astype(jnp.int32)
    mid_sub = _bits((lo_sub.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-9))
    normal = a >= jnp.float32(2.0**-6)
    c_lo = jnp.where(normal, lo_norm, lo_sub)
    mid = jnp.where(normal, mid_norm, mid_sub)
    c_top = jnp.int32(126)  # 448; above it everything saturates
  else:
    c_lo = jnp.minimum(a, jnp.float32(8.0)).astype(jnp.int32)
    mid = _bits(c_lo.astype(jnp.float32) + 0.5)
    c_top = jnp.where(_signbit(x) == 1, jnp.int32(8), jnp.int32(7))
  near = (jnp.abs(_bits(a) - mid) <= _NEAR_ULPS) & (c_lo < c_top) & (a == a)
  # Exact side of the midpoint: compare |x| = A 2^ea with s * m = (S * M) 2^(es + em).
  big_a, ea = _mant_exp(jnp.abs(x))
  big_s, es = _mant_exp(s)
  big_m = ((mid & 0x7FFFFF) | 0x800000) >> 19  # the midpoint's 5 significant bits
  em = ((mid >> 23) & 0xFF) - 131
  d = ea - _row(es, x) - em
  dc = jnp.clip(d, 0, 30)
  shifted = big_a << dc
  exact_ok = near & (d >= 0) & (d <= 30) & ((shifted >> dc) == big_a)
  diff = shifted - _row(big_s, x) * big_m
  # |x / s - m| <= ulp(m) / 2, i.e. |diff| * 2^20 <= S; below a power-of-two m the ulp halves.
  shift = jnp.where((big_m == 16) & (diff < 0), jnp.int32(21), jnp.int32(20))
  mag = jnp.abs(diff)
  on_mid = (mag < 16) & ((mag << shift) <= _row(big_s, x))
  c_hi = c_lo + one
  even = jnp.where((c_lo & 1) == 0, c_lo, c_hi)
  c = jnp.where(on_mid, even, jnp.where(diff > 0, c_hi, c_lo))
  neg = _signbit(x) == 1
  if fp8:
    fixed = c | jnp.where(neg, jnp.int32(0x80), jnp.int32(0))
  else:
    fixed = jnp.where(neg, -c, c) & 15
  return jnp.where(exact_ok, fixed, approx)


def div_fma(a, b, rb, fma: Callable):
  """RN_f32(a / b) from rb = RN(1 / b) and two fused multiply-adds (Markstein's correction).

  y = RN(a rb) is within an ulp of a / b, so the remainder e = a - y b is a float32 the FMA
  computes exactly, and RN(y + e rb) == RN(a / b) (P. Markstein, "Computation of elementary
  functions on the IBM RISC System/6000 processor", IBM J. R&D 34(1), 1990; J.-M. Muller et
  al., Handbook of Floating-Point Arithmetic, 2nd ed., Thm. 4.10). Its condition, no underflow
  in e, holds unless |a| < ~2^-100. b = +Inf (with rb = 0) is taken as 0, so the result is
  a * 0 as a / inf is, and no 0 * inf appears. Zeros and NaN may lose their sign.

  Args:
    a: float32 array; b, rb: float32 arrays broadcastable to a (or scalars), b > 0.
    fma: float32 p * q + r rounded once (on Mosaic GPU, PTX `fma.rn.f32`: `_ptx.fma_rn`).
  """
  y = a * rb
  return fma(fma(-y, jnp.where(b < jnp.inf, b, jnp.float32(0.0)), a), rb, y)


def quotient_fma(x, s, r, fma: Callable, *, fp8: bool, satfinite: bool = False,
                 finite: bool = False):
  """E4M3 (fp8) or INT4 code of RN_f32(x / s), by `div_fma`: what `quotient_code` computes,
  for a backend with a true FMA.

  Args:
    x: float32 (rows, n) values.
    s: float32 (rows,) block scales, > 0 (+Inf allowed: see `div_fma`).
    r: float32 (rows,) correctly rounded 1 / s.
    fma: float32 a * b + c rounded once.
    fp8: E4M3 (saturating at 448) if True, else INT4 (clip to [-8, 7]).
    satfinite: E4M3 by a saturating cast (`_e4m3_code`).
    finite: INT4: s is finite wherever the caller keeps the code, so every kept quotient is (x
      finite below a finite amax): no NaN test (`_int4_code`).

  Tests check it against `div_rn` with an exact FMA on bf16 blocks, midpoint ties and random
  float32. Every quotient takes x's sign (s > 0), zeros and the NaN of +-Inf / Inf included, as
  `mxjax.quantize` gives it.
  """
  q = div_fma(x, _row(s, x), _row(r, x), fma)
  if not fp8:  # INT4 has one zero and maps NaN to 0: no sign to keep
    return _int4_code(q, finite)
  return _e4m3_code(_copysign(q, x), satfinite)


def magnitude_bits(v):
  """int32 bit pattern of |v| (float32 v): integer order is the order of |v|, every NaN above
  +Inf. A max of these, in any order or grouping, is `amax_from_bits`' input."""
  return _bits(v) & 0x7FFFFFFF


def amax_from_bits(m):
  """float32 amax from a max of `magnitude_bits`; any NaN becomes the one canonical NaN."""
  amax = _f32(m)
  return jnp.where(_isnan(amax), jnp.float32(jnp.nan), amax)


def block_amax(xe, xo):
  """Per-row max |x| (rows,) of a pair-split tile; NaN if the row holds a NaN.

  Taken on the bit patterns: with the sign bit cleared, float32 order is integer order and every
  NaN lies above +Inf, so an integer max keeps a NaN on any backend (a float max may drop it:
  XLA's CPU reduction does in larger arrays) at two ops an element, and NaN rows are then given
  the one canonical NaN.
  """
  return amax_from_bits(jnp.maximum(jnp.max(magnitude_bits(xe), axis=1),
                                    jnp.max(magnitude_bits(xo), axis=1)))


def amax_merge(a, b):
  """max of two partial block amaxes (rows,) of the same blocks; NaN if either is NaN."""
  return jnp.where(_isnan(a) | _isnan(b), jnp.float32(jnp.nan), jnp.maximum(a, b))


def block_state(scheme: FusedScheme, amax, ts: tuple | None = None, *, div: Callable,
                fma: Callable | None = None) -> tuple:
  """Everything a block's encoding needs, per row, from its amax (rows,).

  Args:
    scheme: the FusedScheme.
    amax: float32 (rows,), `block_amax`.
    ts: NVFP4 only: (safe_t, inv_t, ok_t) float32 scalars (`tensor_scale_terms` without its
      first element).
    div: a correctly rounded float32 division, used once per block. Neither XLA's CPU `/` (off
      by an ulp for about half of inputs) nor Mosaic GPU's (29% of random quotients on an H100,
      jax 0.11.2) is, so the CPU paths pass `mxjax.formats.exact.div_rn` (integer long
      division) and the GPU kernels `_ptx.div_rn` (PTX div.rn). The per-element `x / s` of FP8
      1x128 and INT4 never divides: see `element_encoder`.
    fma: NVFP4: with a true fused multiply-add, its two block divisions (by 6 and by s_t) are
      `div_fma`s (cheaper than `div` on the GPU; exact unless the tensor's amax is below
      ~2^-100).

  Returns:
    A tuple of (rows,) arrays whose first is the stored scale (int32 E8M0 byte, float32, or
    int32 E4M3 bit pattern of the NVFP4 block scale); `block_encode` takes the tuple.
  """
  name = scheme.name
  if name in ("mxfp8_e4m3", "mxfp4"):
    b = _e8m0(amax, 8 if name == "mxfp8_e4m3" else 2)
    e = 127 - b
    e1 = e >> 1  # floor(e / 2), as mxjax's e // 2
    return b, _exp2i(e1), _exp2i(e - e1)
  if name in ("fp8_e4m3_block128", "int4_g128"):
    if name == "fp8_e4m3_block128":
      s = div(jnp.maximum(amax, jnp.float32(1e-4)), jnp.float32(E4M3_MAX))
    else:
      s = div(amax, jnp.float32(7.0))
    # NaN blocks: the canonical NaN (`block_amax`'s), as mxjax stores it; max() may drop a NaN
    # and a GPU division returns 0x7FFFFFFF.
    s = jnp.where(_isnan(amax), amax, s)
    # A zero or NaN scale gives codes 0 (mxjax's answer); an infinite one x * 0, as x / inf:
    # for INT4 every such code is 0 too (x / inf = +-0, and Inf / inf a NaN, both code 0), so
    # INT4 masks those rows as well and its encoder never sees a NaN quotient it keeps.
    ok = (s > 0) & (s < jnp.inf) if name == "int4_g128" else s > 0
    sd = jnp.where(ok, s, jnp.float32(1.0))
    # `div_fma` needs |x| above ~2^-100 near a rounding midpoint, and 1 / s overflows for a
    # subnormal s (an INT4 block of amax below ~2^-123, on a GPU, which keeps subnormals). Tiny
    # blocks are lifted by 2^64, x and s alike: exact, so x / s and its rounding are unchanged.
    lift = jnp.where(sd < jnp.float32(2.0**-60), jnp.float32(2.0**64), jnp.float32(1.0))
    sd = sd * lift
    return s, sd, div(jnp.float32(1.0), sd), ok, lift
  if name == "nvfp4":
    return _nvfp4_state(amax, *ts, div=div, fma=fma)
  raise ValueError(name)


def _e4m3_scaled(scheme: FusedScheme, state: tuple, fma: Callable | None):
  """For `cast_nan`: (f, keep), f(x) = (v, s) with v the float32 an E4M3 scheme's element x is
  cast from and s the float32 whose sign bit its code takes; keep (rows,) the rows whose codes
  stand (None: every row; elsewhere the code is 0)."""
  if scheme.name == "mxfp8_e4m3":
    _, f1, f2 = state

    def scaled(x):
      v = (x * _row(f1, x)) * _row(f2, x)
      return v, v
    return scaled, None
  if fma is None:
    raise ValueError("cast_nan divides by the FMA-corrected quotient: pass fma")
  _, sd, r, ok, lift = state

  def scaled(x):
    # div_fma's quotient of -0 is +0 and of Inf * 0 a NaN of any sign: the code's sign is x's
    # (`quotient_fma` copies it over), here OR'd into the code
    x = x * _row(lift, x)
    return div_fma(x, _row(sd, x), _row(r, x), fma), x
  return scaled, ok


def element_encoder(scheme: FusedScheme, state: tuple, *, fma: Callable | None = None,
                    satfinite: bool = False, int4_nan_test: bool = False,
                    cast_nan: bool = False) -> Callable:
  """The per-element encoder of rows with the given `block_state`: float32 (rows, n) -> int32
  codes (rows, n) (E4M3 byte, E2M1 or INT4 nibble).

  FP8 1x128 / INT4 divide each element by the block scale: with `fma` (a true fused
  multiply-add) by `quotient_fma`, else by `quotient_code`'s integer midpoint test; the codes
  are the same. MXFP4 / NVFP4 round to E2M1 by `_e2m1_code`. `satfinite`: E4M3 codes (MXFP8,
  FP8 1x128 with `fma`) by a cast that saturates by itself (`_e4m3_code`); others ignore it.
  `int4_nan_test`: INT4 with `fma` tests each quotient for NaN, although the rows that could
  give one are masked (`block_state`): the same codes, one select an element more, which a
  kernel may still compile to faster code (the column-wise GPU kernel: `INT4_NAN_TEST`).
  `cast_nan`: E4M3 codes (MXFP8, FP8 1x128 with `fma`) by the cast alone, NaN included: no NaN
  test; the sign bit OR'd in from the value (`_e4m3_scaled`). The same codes where the cast
  saturates (`satfinite`) and turns a NaN into 0x7F or 0x7F with its sign: a GPU checks that
  (`quantize.mosaic_gpu.CAST_NAN_VERIFIED`).
  """
  name = scheme.name
  if cast_nan:
    if name not in ("mxfp8_e4m3", "fp8_e4m3_block128"):
      raise ValueError(f"cast_nan is for E4M3 codes; {name} has none")
    scaled, keep = _e4m3_scaled(scheme, state, fma)

    def enc(x):
      v, sgn = scaled(x)
      c = _e4m3_cast(v) | _sign_at(sgn, 7)
      return c if keep is None else jnp.where(_row(keep, x), c, jnp.int32(0))
    return enc
  if name in ("mxfp8_e4m3", "mxfp4"):
    code = (functools.partial(_e4m3_code, satfinite=satfinite) if name == "mxfp8_e4m3"
            else _e2m1_code)
    _, f1, f2 = state

    def enc(x):
      return code((x * _row(f1, x)) * _row(f2, x))
  elif name in ("fp8_e4m3_block128", "int4_g128"):
    _, sd, r, ok, lift = state
    fp8 = name == "fp8_e4m3_block128"

    def enc(x):
      x = x * _row(lift, x)
      if fma is not None:  # INT4: `ok` rows have finite scales (`block_state`)
        c = quotient_fma(x, sd, r, fma, fp8=fp8, satfinite=satfinite,
                         finite=not (fp8 or int4_nan_test))
      else:
        c = quotient_code(x, sd, r, fp8=fp8)
      return jnp.where(_row(ok, x), c, jnp.int32(0))
  else:
    _, r, good = state

    def enc(x):
      # mxjax substitutes a positive NaN where the scale is unusable, 0 elsewhere in the block:
      # both encode to +0, so the block's codes are 0: one integer select, not a NaN test and
      # two float selects an element (session 33; H100 Mosaic kernels, rows 141.9 -> 135.9 us
      # at 8192 x 8192, columns 172.8 -> 170.3: kernels_quant_s33_h100_nvfp4_select_*.json)
      return jnp.where(_row(good, x), _e2m1_code(x * _row(r, x)), jnp.int32(0))
  return enc


def block_encode(scheme: FusedScheme, state: tuple, xe, xo, *, fma: Callable | None = None,
                 satfinite: bool = False, int4_nan_test: bool = False,
                 cast_pair: Callable | None = None, signs=None):
  """Packed code pairs, int32 (rows, n): (even | odd << bits), of a tile or a column slice of it
  (xe, xo float32 (rows, n)), from the rows' `block_state` (see `element_encoder`).

  `cast_pair`: E4M3 schemes, `cast_nan`'s codes a pair at a time: cast_pair(lo, hi) gives
  int32 code(lo) | code(hi) << 8 (on Mosaic GPU `_ptx.e4m3_pair`, one PTX cvt a pair), so the
  codes are never unpacked to one an int32 and packed again. `signs`: with `cast_pair`, int32
  (rows, n) holding each pair's sign bits at bits 7 and 15 (the elements' own: mxjax's E4M3
  code takes x's sign whatever the scale; on Mosaic GPU `_ptx.bf16_pair_signs` of x's bf16
  pair words), OR'd in where by default the scaled values' are."""
  if cast_pair is not None:
    if scheme.bits != 8:
      raise ValueError(f"cast_pair is for E4M3 codes; {scheme.name} has none")
    scaled, keep = _e4m3_scaled(scheme, state, fma)
    (ve, se), (vo, so) = scaled(xe), scaled(xo)
    if signs is None:
      pair = cast_pair(ve, vo) | _sign_at(se, 7) | _sign_at(so, 15)
    else:
      pair = cast_pair(ve, vo) | signs
    return pair if keep is None else jnp.where(_row(keep, xe), pair, jnp.int32(0))
  enc = element_encoder(scheme, state, fma=fma, satfinite=satfinite,
                        int4_nan_test=int4_nan_test)
  return enc(xe) | (enc(xo) << scheme.bits)


def nvfp4_pair_codes(state: tuple, xe, xo, scaled_pairs: Callable):
  """NVFP4's packed code bytes, int32 (rows, n): code(xe) | code(xo) << 4, two elements an
  operation: scaled_pairs(xe, xo, r) gives the E2M1 code byte of RN_f32(xe r), RN_f32(xo r)
  (on Mosaic GPU `_ptx.e2m1_scaled_pairs`), r the block's inv_t / s_b from `block_state`; the
  codes of blocks without a usable scale 0, as `element_encoder`'s.

  Args:
    state: NVFP4's `block_state` (rows,) arrays.
    xe, xo: float32 (rows, n) even / odd elements of each row's block (x.T's rows: the column
      kernel's even and odd row tiles).
    scaled_pairs: (xe, xo, r broadcast to (rows, n)) -> int32 packed code bytes.
  """
  _, r, good = state
  return jnp.where(_row(good, xe), scaled_pairs(xe, xo, _row(r, xe)), jnp.int32(0))


def block_quantize(scheme: FusedScheme, xe, xo, ts: tuple | None = None, *, div: Callable):
  """Quantizes a tile of blocks: `block_encode(block_state(block_amax))`.

  Args:
    scheme: the FusedScheme.
    xe, xo: float32 (rows, B // 2), even / odd elements of each row's block.
    ts, div: as in `block_state`.

  Returns:
    (packed, scale): packed int32 (rows, B // 2); scale (rows,) in the stored encoding.
  """
  state = block_state(scheme, block_amax(xe, xo), ts, div=div)
  return block_encode(scheme, state, xe, xo), state[0]


def _nvfp4_state(amax, safe_t, inv_t, ok_t, *, div: Callable, fma: Callable | None = None):
  """NVFP4 block state (NVIDIA order): (E4M3 bit pattern of s_b, inv_t / s_b, usable).

  s_b = e4m3(clip((amax_b / 6) / safe_t, 0, 448)) where s_t > 0 (0 otherwise);
  q = e2m1(x * (inv_t / s_b)) where s_t > 0 and s_b > 0, else NaN -> NaN (encodes as +-0), 0.

  `inv_t / s_b` must be correctly rounded: bf16 data puts many scaled values exactly on E2M1
  rounding ties, so an ulp off flips ~10% of codes.
  """
  if fma is None:
    block = div(div(amax, jnp.float32(E2M1_MAX)), safe_t)
  else:
    block = div_fma(div_fma(amax, E2M1_MAX, jnp.float32(1 / E2M1_MAX), fma), safe_t, inv_t, fma)
  block = jnp.where(ok_t > 0, block, jnp.float32(0.0))
  bc = jnp.clip(block, 0.0, E4M3_MAX)
  bc = jnp.where(_isnan(block), block, bc)
  sb8 = bc.astype(jnp.float8_e4m3fn)
  sb_code = lax.bitcast_convert_type(sb8, jnp.uint8).astype(jnp.int32)
  sbf = sb8.astype(jnp.float32)
  good = (ok_t > 0) & (sbf > 0)
  r = div(inv_t, jnp.where(sbf > 0, sbf, jnp.float32(1.0)))
  # The block scale leaves as its E4M3 bit pattern (int32 0..255): one byte a block stored.
  return sb_code, r, good


# How many of `tensor_scale_terms` (after s_t) the kernels pass to `block_state` as `ts`.
NVFP4_TERMS = 3


def tensor_scale_terms(amax_t, div: Callable):
  """NVFP4 tensor terms, float32 scalars in mxjax's order.

  Returns:
    (s_t, safe_t, inv_t, ok_t): s_t = amax_t / 2688, safe_t = s_t or 1 where s_t is 0,
    inv_t = 1 / safe_t, ok_t = 1.0 where s_t > 0 else 0.0.
  """
  s_t = div(amax_t, jnp.float32(NVFP4_TENSOR_DIV))
  ok = s_t > 0
  safe = jnp.where(ok, s_t, jnp.float32(1.0))
  inv = div(jnp.float32(1.0), safe)
  return (s_t, safe, inv, ok.astype(jnp.float32))
