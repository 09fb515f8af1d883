"""Correctly rounded float32 division.

XLA's float32 division on the CPU is not correctly rounded: measured on jax 0.10.2, `a / b`
differs from IEEE round-to-nearest-even in the last bit for about half of random inputs, with
or without constant folding. The references mxjax matches (DeepSeek's `amax / 448`, NVFP4's
`amax_b / 6 / s_t`, bitsandbytes' `1 / absmax`) divide with IEEE semantics, so mxjax divides
with `div_rn`: a long division of the 24-bit significands in int32 arithmetic, rounded to
nearest even. Multiplication and addition in XLA are IEEE-exact and need no such help.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_TINY = 2.0**-126


def _parts(x):
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  exp = (bits >> 23) & 0xFF
  mant = (bits & 0x7FFFFF) | 0x800000
  return exp, mant


def div_rn(a: jax.Array, b: jax.Array) -> jax.Array:
  """a / b in float32, rounded to nearest even (IEEE 754), for normal operands and results.

  Zeros, Inf, NaN, and results outside the normal range (which XLA flushes or saturates
  anyway) are taken from XLA's own division, whose special-value handling is IEEE.

  Args:
    a, b: float32 arrays (broadcastable).

  Returns:
    float32 array of the broadcast shape.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  a, b = jnp.broadcast_arrays(a, b)
  fallback = a / b
  ea, ma = _parts(jnp.abs(a))
  eb, mb = _parts(jnp.abs(b))
  # Normalize so the significand quotient lies in [1, 2).
  shift = (ma < mb).astype(jnp.int32)
  r = ma << shift
  e = ea - eb - shift + 127
  # 24 quotient bits plus a guard bit, one bit a step; r stays below 2 * mb < 2^25.
  q = jnp.zeros_like(r)
  for _ in range(25):
    ge = r >= mb
    q = (q << 1) | ge.astype(jnp.int32)
    r = jnp.where(ge, r - mb, r) << 1
  guard = q & 1
  q = q >> 1
  sticky = r != 0
  round_up = (guard == 1) & (sticky | ((q & 1) == 1))
  q = q + round_up.astype(jnp.int32)
  carry = q >> 24
  q = jnp.where(carry == 1, q >> 1, q)
  e = e + carry
  sign = (jax.lax.bitcast_convert_type(a, jnp.int32) ^ jax.lax.bitcast_convert_type(b, jnp.int32))
  bits = (sign & jnp.int32(-(2**31))) | (e << 23) | (q & 0x7FFFFF)
  exact = jax.lax.bitcast_convert_type(bits, jnp.float32)
  ok = (
      jnp.isfinite(a) & jnp.isfinite(b)
      & (jnp.abs(a) >= _TINY) & (jnp.abs(b) >= _TINY)
      & (e >= 1) & (e <= 254)
  )  # fmt: skip
  return jnp.where(ok, exact, fallback)
