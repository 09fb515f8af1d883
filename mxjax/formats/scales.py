"""Scale formats: float32, bfloat16, E8M0 (four rounding rules) and E4M3 (NVFP4 block scales).

E8M0 scales are computed with integer operations on the float32 bits of the block amax, never
with `log2` (whose float32 result can round onto an integer and flip a ceiling) and never with
`astype(float8_e8m0fnu)` (whose rounding follows none of the rules below). They are stored as
uint8 biased exponents: value 2^(b - 127), b = 0xFF is NaN.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp

from mxjax.formats.element import ElementFormat
from mxjax.formats.rounding import encode, exp2i

E8M0_NAN = 0xFF
E8M0_MAX = 0xFE


class ScaleFormat(enum.Enum):
  """The number format a block scale is stored in."""

  FP32 = "fp32"
  BF16 = "bf16"
  E8M0 = "e8m0"  # power of two, uint8 biased exponent (OCP MX)
  E4M3 = "e4m3"  # float8_e4m3fn, used with an fp32 tensor scale (NVFP4)


class ScaleRule(enum.Enum):
  """How the E8M0 exponent is chosen from the block amax.

  FLOOR: OCP MX v1.0: floor(log2(amax)) - emax_elem. Elements above max after scaling are
    clamped (at most about 2x above max in the top binade).
  RCEIL: Transformer Engine / cuBLAS: the exact round-up of log2(amax * (1 / max_elem)), so no
    element is clamped.
  CEIL: ceil(log2(amax)) - emax_elem (torchao ScaleCalculationMode.CEIL).
  EVEN: amax rounded to the element's mantissa width (nearest, ties away: the MX paper's
    "round the amax"), then FLOOR (torchao ScaleCalculationMode.EVEN).
  """

  FLOOR = "floor"
  RCEIL = "rceil"
  CEIL = "ceil"
  EVEN = "even"


def _bits(a):
  return jax.lax.bitcast_convert_type(a.astype(jnp.float32), jnp.int32)


def e8m0_from_amax(amax: jax.Array, fmt: ElementFormat, rule: ScaleRule | str) -> jax.Array:
  """Biased E8M0 exponent (uint8) of the block scale for block maxima `amax`.

  Args:
    amax: float32 array of block maxima (|x| max, >= 0, may be NaN or Inf).
    fmt: the element format the block is quantized to (gives emax_elem and max).
    rule: a ScaleRule.

  Returns:
    uint8 array of amax's shape: b with scale 2^(b - 127); 0xFF where amax is NaN; 0 (2^-127)
    for an all-zero block.
  """
  rule = ScaleRule(rule)
  amax = amax.astype(jnp.float32)
  bits = _bits(amax)
  if rule is ScaleRule.RCEIL:
    q = _bits(amax * jnp.float32(1.0 / fmt.max))
    exp = ((q >> 23) & 0xFF) - 127 + ((q & 0x7FFFFF) != 0).astype(jnp.int32)
    # A subnormal quotient rounds up to 2^-126 above 2^-127 and to 2^-127 (b = 0) otherwise.
    sub = ((q >> 23) & 0xFF) == 0
    unbiased = jnp.where(sub, jnp.where((q & 0x7FFFFF) > 0x400000, -126, -127), exp)
  else:
    if rule is ScaleRule.CEIL:
      bits = (bits + 0x7FFFFF) & 0x7F800000  # round amax up to a power of two
    elif rule is ScaleRule.EVEN:
      bits = (bits + (1 << (22 - fmt.mbits))) & 0x7F800000
    unbiased = ((bits >> 23) & 0xFF) - 127 - fmt.emax
  b = jnp.clip(unbiased, -127, 127) + 127
  return jnp.where(jnp.isnan(amax), E8M0_NAN, b).astype(jnp.uint8)


def e8m0_split(b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """2^(b - 127) as two normal float32 factors whose product is exact.

  The scale 2^-127 (b = 0) is an f32 subnormal, which XLA flushes to zero when used as an
  operand; multiplying by two normal halves keeps every normal product exact.
  """
  e = b.astype(jnp.int32) - 127
  e1 = e // 2
  return exp2i(e1), exp2i(e - e1)


def e8m0_to_float32(b: jax.Array) -> jax.Array:
  """Value of E8M0 biased exponents as float32 (2^-127 is an f32 subnormal; 0xFF is NaN)."""
  b = b.astype(jnp.uint32)
  bits = jnp.where(b == 0, jnp.uint32(0x00400000), b << 23)
  v = jax.lax.bitcast_convert_type(bits, jnp.float32)
  return jnp.where(b == E8M0_NAN, jnp.nan, v)


def to_e4m3(x: jax.Array, *, min_value: float = 0.0) -> jax.Array:
  """Rounds float32 `x` (>= 0) to float8_e4m3fn, nearest-even, saturating at 448.

  `min_value` floors the result before rounding (torchao floors NVFP4 block scales at 2^-6,
  the smallest E4M3 normal). NaN stays NaN. The rounding is mxjax's own (`encode`), not an XLA
  cast: on the GPU (jax 0.11.2, H100) `astype(float8_e4m3fn)` gave different NVFP4 block scales
  inside and outside a fusion.
  """
  x = jnp.clip(x.astype(jnp.float32), min_value, 448.0)  # NaN passes through clip
  return jax.lax.bitcast_convert_type(encode(x, "e4m3"), jnp.float8_e4m3fn)
