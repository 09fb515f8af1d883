"""Emulation of reduced-precision matmul accumulators (for accumulation studies).

A tensor core does not accumulate an FP8 GEMM in IEEE fp32: DeepSeek-V3 (2024, section 3.3.2)
measured that H800 FP8 GEMMs keep "around 14 bits" of the running sum, and promote partial sums
to fp32 CUDA-core registers every N_c = 128 elements of K to recover accuracy. This module
emulates both, in float32 arithmetic:

  acc_lim = 0;  acc_32 = 0
  for each chunk c of `every` products along K:
    acc_lim = round_m(acc_lim + sum(products in c))      # the limited accumulator
    if promote_every and (end of a group of promote_every products):
      acc_32 = acc_32 + acc_lim;  acc_lim = 0            # promotion to fp32
  out = acc_32 + acc_lim

`round_m` keeps `mantissa_bits` fraction bits of a float32 (23 is fp32 itself), rounding to
nearest-even or truncating toward zero. The sum inside a chunk is an fp32 sum.

.. warning:: This is a model of the hardware, not its specification: the real accumulator's
   alignment and rounding of products are not documented. "14 bits" is modelled as 13 fraction
   bits (14 significant bits) in the accumulation study.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp
from jax import lax

from mxjax.ops.dims import Dims


class AccumRounding(enum.Enum):
  NEAREST = "nearest"  # ties to even
  TRUNCATE = "truncate"  # toward zero (drop the low bits)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accumulation:
  """A reduced-precision accumulator for `dot_general(..., accumulation=...)`.

  Attributes:
    mantissa_bits: fraction bits the running sum keeps (1..23; 23 = fp32).
    every: products summed (in fp32) between roundings of the running sum (k).
    promote_every: DeepSeek's N_c: every this many products along K the limited accumulator is
      added into an fp32 accumulator and reset (None: never). A multiple of `every`.
    rounding: AccumRounding.NEAREST or TRUNCATE.
  """

  mantissa_bits: int = 23
  every: int = 1
  promote_every: int | None = None
  rounding: AccumRounding = AccumRounding.NEAREST

  def __post_init__(self):
    if not isinstance(self.rounding, AccumRounding):
      object.__setattr__(self, "rounding", AccumRounding(self.rounding))
    if not 1 <= self.mantissa_bits <= 23:
      raise ValueError(f"mantissa_bits must be in [1, 23], got {self.mantissa_bits}")
    if self.every < 1:
      raise ValueError(f"every must be >= 1, got {self.every}")
    if self.promote_every is not None and (
        self.promote_every < 1 or self.promote_every % self.every
    ):
      raise ValueError(
          f"promote_every ({self.promote_every}) must be a positive multiple of every"
          f" ({self.every})"
      )

  def describe(self) -> str:
    s = f"{self.mantissa_bits + 1}-bit accumulator ({self.rounding.value}) every {self.every}"
    return s + (f", fp32 promotion every {self.promote_every}" if self.promote_every else "")


def round_mantissa(x: jax.Array, bits: int, rounding: AccumRounding) -> jax.Array:
  """float32 x with only `bits` fraction bits (nearest-even or truncated); exact integer ops."""
  if bits >= 23:
    return x
  shift = 23 - bits
  u = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  if rounding is AccumRounding.NEAREST:
    lsb = (u >> shift) & 1
    u = u + jnp.uint32((1 << (shift - 1)) - 1) + lsb  # a carry into the exponent is right
  u = u & jnp.uint32(~((1 << shift) - 1) & 0xFFFFFFFF)
  return lax.bitcast_convert_type(u, jnp.float32)


def emulated_dot_general(
    a: jax.Array, b: jax.Array, dims: Dims, acc: Accumulation
) -> jax.Array:
  """dot_general of float32 `a` and `b` with the accumulator `acc` emulated along K.

  Args:
    a, b: float32 operands (already dequantized).
    dims: normalised dimension numbers.
    acc: the accumulator model.

  Returns:
    float32 array in `lax.dot_general`'s output layout.
  """
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  batch_shape = tuple(a.shape[d] for d in dims.lb)
  lf_shape = tuple(a.shape[d] for d in dims.lhs_free)
  rf_shape = tuple(b.shape[d] for d in dims.rhs_free)
  a3 = jnp.transpose(a, dims.lb + dims.lhs_free + dims.lc)
  b3 = jnp.transpose(b, dims.rb + dims.rhs_free + dims.rc)
  nb = _prod(batch_shape)
  a3 = a3.reshape(nb, _prod(lf_shape), -1)
  b3 = b3.reshape(nb, _prod(rf_shape), -1)
  k = a3.shape[-1]
  group = acc.promote_every or acc.every
  kp = -(-k // group) * group
  if kp != k:  # zero products leave the sums and their roundings unchanged
    a3 = jnp.pad(a3, ((0, 0), (0, 0), (0, kp - k)))
    b3 = jnp.pad(b3, ((0, 0), (0, 0), (0, kp - k)))
  n_chunks = kp // acc.every
  # (chunks, B, F, every): scan over chunks along K.
  ac = jnp.moveaxis(a3.reshape(nb, a3.shape[1], n_chunks, acc.every), 2, 0)
  bc = jnp.moveaxis(b3.reshape(nb, b3.shape[1], n_chunks, acc.every), 2, 0)

  def chunk_sum(x, y):
    return jnp.einsum("bmk,bnk->bmn", x, y, precision=lax.Precision.HIGHEST)

  def limited(acc_lim, xy):
    return round_mantissa(acc_lim + chunk_sum(*xy), acc.mantissa_bits, acc.rounding), None

  zero = jnp.zeros((nb, a3.shape[1], b3.shape[1]), jnp.float32)
  if acc.promote_every is None:
    out, _ = lax.scan(limited, zero, (ac, bc))
  else:
    per = acc.promote_every // acc.every
    ag = ac.reshape((n_chunks // per, per) + ac.shape[1:])
    bg = bc.reshape((n_chunks // per, per) + bc.shape[1:])

    def promote(acc32, xy):
      part, _ = lax.scan(limited, zero, xy)
      return acc32 + part, None

    out, _ = lax.scan(promote, zero, (ag, bg))
  return out.reshape(batch_shape + lf_shape + rf_shape)


def _prod(shape) -> int:
  n = 1
  for s in shape:
    n *= int(s)
  return n
