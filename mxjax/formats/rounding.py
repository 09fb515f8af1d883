"""Encode float32 values to element codes (nearest-even or stochastic) and decode them back.

Codes are uint8 bit patterns in the low `fmt.bits` bits. Encoding never relies on an XLA cast:
casts to float8_e4m3fn turn overflow into NaN and casts to float4/6 turn NaN into 0 (DESIGN.md,
"Facts"), so the rounding is done here with exact float32 arithmetic on powers of two and the
code is assembled from the rounded value's bits.

Flush-to-zero: XLA on CPU and GPU flushes float32 subnormals (|x| < 2^-126) to zero in
arithmetic. mxjax inherits this: an f32-subnormal input encodes as (signed) zero.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
import numpy as np

from mxjax.formats.element import ElementFormat, Kind, get_format


class Rounding(enum.Enum):
  """How a value between two representable neighbours is rounded."""

  NEAREST = "nearest"  # round to nearest, ties to even (IEEE 754 roundTiesToEven)
  STOCHASTIC = "stochastic"  # up with probability (x - lo) / (hi - lo); unbiased


def exp2i(e: jax.Array) -> jax.Array:
  """2.0**e as float32 for integer e in [-126, 127], built from bits (exact, no exp2 call)."""
  e = jnp.asarray(e, jnp.int32)
  return jax.lax.bitcast_convert_type(((e + 127) << 23).astype(jnp.uint32), jnp.float32)


def _f32_exponent(a: jax.Array) -> jax.Array:
  """Unbiased exponent field of float32 `a` (int32); -127 for zero and subnormals."""
  bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
  return ((bits >> 23) & 0xFF).astype(jnp.int32) - 127


def round_integer(m: jax.Array, rounding: Rounding, key: jax.Array | None) -> jax.Array:
  """Rounds float32 `m` to an integer-valued float32 (nearest-even, or stochastic with `key`)."""
  if rounding is Rounding.NEAREST:
    return jnp.round(m)  # jnp.round is half-to-even
  if key is None:
    raise ValueError("stochastic rounding needs a PRNG key: pass key=jax.random.key(seed)")
  lo = jnp.floor(m)
  u = jax.random.uniform(key, m.shape, jnp.float32)
  return lo + (u < (m - lo)).astype(jnp.float32)


def _encode_float(x, fmt: ElementFormat, rounding, key, saturate):
  sign = jnp.signbit(x)
  a = jnp.abs(x)
  nan = jnp.isnan(a)
  overflow = a > fmt.max  # includes +Inf; NaN compares False
  a = jnp.where(nan, 0.0, jnp.minimum(a, fmt.max))
  # Quantum of the binade a falls in (the subnormal quantum below min_normal); a / quantum is
  # exact because the quantum is a power of two and the result stays far from f32 limits.
  e = jnp.maximum(_f32_exponent(a), fmt.emin)
  quantum_exp = e - fmt.mbits
  v = round_integer(a * exp2i(-quantum_exp), rounding, key) * exp2i(quantum_exp)
  # Assemble the code from the rounded value (rounding may have carried into the next binade).
  vbits = jax.lax.bitcast_convert_type(v, jnp.uint32)
  ve = ((vbits >> 23) & 0xFF).astype(jnp.int32) - 127
  normal = v >= fmt.min_normal
  exp_field = jnp.where(normal, ve + fmt.bias, 0)
  mant_normal = (vbits >> (23 - fmt.mbits)) & (2**fmt.mbits - 1)
  mant_sub = jnp.round(v * exp2i(-(fmt.emin - fmt.mbits))).astype(jnp.uint32)
  mant = jnp.where(normal, mant_normal, mant_sub)
  code = (exp_field.astype(jnp.uint32) << fmt.mbits) | mant
  if not saturate:
    if fmt.has_inf:
      code = jnp.where(overflow, fmt.inf_code, code)
    elif fmt.has_nan:
      code = jnp.where(overflow, fmt.nan_code, code)
  if fmt.has_nan:
    code = jnp.where(nan, fmt.nan_code, code)
  else:
    code = jnp.where(nan, 0, code)
  code = code | (sign.astype(jnp.uint32) << (fmt.bits - 1))
  return code.astype(jnp.uint8)


def _encode_int(x, fmt: ElementFormat, rounding, key, saturate):
  del saturate  # integers have no Inf: out-of-range values always saturate.
  lo = -(2 ** (fmt.bits - 1)) if fmt.signed else 0
  hi = 2 ** (fmt.bits - 1) - 1 if fmt.signed else 2**fmt.bits - 1
  if fmt.name == "mxint8":
    lo = -hi  # OCP MX INT8 is symmetric: -127/64 .. 127/64
  nan = jnp.isnan(x)
  y = jnp.clip(jnp.where(nan, 0.0, x) * 2.0**fmt.frac_bits, lo, hi)
  mag = round_integer(jnp.abs(y), rounding, key)
  q = jnp.where(y < 0, -mag, mag).astype(jnp.int32)
  return (q & (2**fmt.bits - 1)).astype(jnp.uint8)


def _encode_lookup(x, fmt: ElementFormat, rounding, key, saturate):
  del saturate
  table = jnp.asarray(np.asarray(fmt.table, np.float32))
  x = jnp.where(jnp.isnan(x), 0.0, x)
  if rounding is Rounding.NEAREST:
    # bitsandbytes' rule: the code is the number of float32 midpoints strictly below x, so a
    # value on a midpoint takes the lower code.
    t = np.asarray(fmt.table, np.float32)
    bounds = jnp.asarray((t[:-1] + t[1:]) / np.float32(2))
    method = "compare_all" if len(fmt.table) <= 16 else "scan"
    return jnp.searchsorted(bounds, x, side="left", method=method).astype(jnp.uint8)
  x = jnp.clip(x, fmt.table[0], fmt.table[-1])
  hi_idx = jnp.clip(jnp.searchsorted(table, x, side="right"), 1, len(fmt.table) - 1)
  lo_v, hi_v = table[hi_idx - 1], table[hi_idx]
  if key is None:
    raise ValueError("stochastic rounding needs a PRNG key: pass key=jax.random.key(seed)")
  u = jax.random.uniform(key, x.shape, jnp.float32)
  up = u * (hi_v - lo_v) < (x - lo_v)
  return jnp.where(up, hi_idx, hi_idx - 1).astype(jnp.uint8)


_ENCODERS = {Kind.FLOAT: _encode_float, Kind.INT: _encode_int, Kind.LOOKUP: _encode_lookup}


def encode(
    x: jax.Array,
    fmt: str | ElementFormat,
    *,
    rounding: Rounding | str = Rounding.NEAREST,
    key: jax.Array | None = None,
    saturate: bool = True,
) -> jax.Array:
  """Encodes values (already divided by their scale) to element codes.

  Args:
    x: float array of any shape; computed in float32 (bf16/f16 inputs widen exactly).
    fmt: element format or its name.
    rounding: NEAREST (ties to even) or STOCHASTIC (needs `key`).
    key: PRNG key for stochastic rounding.
    saturate: clamp |x| > max to +-max (default). When False, overflow becomes Inf in formats
      that have it (E5M2), NaN in formats that have only NaN (E4M3), and saturates otherwise.

  Returns:
    uint8 array of x's shape holding codes in the low `fmt.bits` bits. NaN encodes to the NaN
    code where the format has one and to +0 where it has none (FP6, FP4, INT, NF4): block-scaled
    schemes carry NaN in the scale instead.
  """
  fmt = get_format(fmt)
  rounding = Rounding(rounding)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"encode takes a floating array, got {x.dtype}; cast it to float32 first")
  return _ENCODERS[fmt.kind](x.astype(jnp.float32), fmt, rounding, key, saturate)


def decode(codes: jax.Array, fmt: str | ElementFormat) -> jax.Array:
  """Decodes uint8 codes (low `fmt.bits` bits) to float32 values by exact table lookup."""
  fmt = get_format(fmt)
  table = jnp.asarray(fmt.values.astype(np.float32))
  return table[jnp.asarray(codes).astype(jnp.int32) & (2**fmt.bits - 1)]


def round_to_format(
    x: jax.Array,
    fmt: str | ElementFormat,
    *,
    rounding: Rounding | str = Rounding.NEAREST,
    key: jax.Array | None = None,
    saturate: bool = True,
) -> jax.Array:
  """decode(encode(x)): x rounded onto the format's grid, as float32."""
  return decode(encode(x, fmt, rounding=rounding, key=key, saturate=saturate), fmt)
