"""Accumulator emulation: mantissa rounding, equivalence at fp32, and the ordering of errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import mxjax
from mxjax.ops import Accumulation, round_mantissa
from mxjax.ops.accumulate import AccumRounding, emulated_dot_general
from mxjax.ops.dims import normalize


def _f32_bits(x):
  return np.asarray(x, np.float32).view(np.uint32)


@pytest.mark.parametrize("bits", [3, 10, 13])
def test_round_mantissa(bits):
  rng = np.random.default_rng(bits)
  x = (rng.standard_normal(4096) * 10.0 ** rng.integers(-5, 6, 4096)).astype(np.float32)
  mask = np.uint32((1 << (23 - bits)) - 1)
  t = np.asarray(round_mantissa(jnp.asarray(x), bits, AccumRounding.TRUNCATE))
  assert not (_f32_bits(t) & mask).any()
  np.testing.assert_array_equal(_f32_bits(t), _f32_bits(x) & ~mask)
  n = np.asarray(round_mantissa(jnp.asarray(x), bits, AccumRounding.NEAREST))
  assert not (_f32_bits(n) & mask).any()
  # Nearest: within half a unit of the kept last place, in float64.
  ulp = 2.0 ** (np.floor(np.log2(np.abs(x.astype(np.float64)))) - bits)
  assert (np.abs(n.astype(np.float64) - x) <= ulp / 2).all()
  # Ties go to the even neighbour: 1 + 2^-(bits+1) -> 1; 1 + 3 * 2^-(bits+1) -> 1 + 2^-(bits-1).
  ties = jnp.asarray([1 + 2.0 ** -(bits + 1), 1 + 3 * 2.0 ** -(bits + 1)], jnp.float32)
  np.testing.assert_array_equal(round_mantissa(ties, bits, AccumRounding.NEAREST),
                                [1.0, 1 + 2.0 ** -(bits - 1)])  # fmt: skip


def test_fp32_accumulator_is_the_f32_dot():
  a = jax.random.normal(jax.random.key(0), (2, 5, 96))
  b = jax.random.normal(jax.random.key(1), (2, 96, 7))
  d = normalize((((2,), (1,)), ((0,), (0,))), 3, 3)
  want = lax.dot_general(a, b, d.nums, precision=lax.Precision.HIGHEST)
  for acc in (Accumulation(every=96), Accumulation(every=8, promote_every=32)):
    got = emulated_dot_general(a, b, d, acc)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_dot_general_accumulation_argument():
  a, b = jax.random.normal(jax.random.key(2), (4, 200)), jax.random.normal(jax.random.key(3), (200, 3))
  acc = Accumulation(mantissa_bits=8, every=4, promote_every=64, rounding="truncate")
  got = mxjax.einsum("mk,kn->mn", a, b, schemes=("fp8_e4m3", "fp8_e4m3"), accumulation=acc)
  da = mxjax.dequantize(mxjax.quantize(a, "fp8_e4m3", axis=1))
  db = mxjax.dequantize(mxjax.quantize(b, "fp8_e4m3", axis=0))
  want = emulated_dot_general(da, db, normalize((((1,), (0,)), ((), ())), 2, 2), acc)
  np.testing.assert_array_equal(got, want)


def test_error_ordering_limited_promoted_fp32():
  # Positive inputs make the running sum grow with K: a short accumulator loses low bits of
  # every product; promotion every 128 bounds the sum it must hold.
  k = 4096
  a = jnp.abs(jax.random.normal(jax.random.key(4), (8, k)))
  b = jnp.abs(jax.random.normal(jax.random.key(5), (k, 8)))
  exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
  d = normalize((((1,), (0,)), ((), ())), 2, 2)

  def err(acc):
    out = np.asarray(emulated_dot_general(a, b, d, acc), np.float64)
    return np.linalg.norm(out - exact) / np.linalg.norm(exact)

  lim = err(Accumulation(mantissa_bits=10, rounding="truncate"))
  pro = err(Accumulation(mantissa_bits=10, promote_every=128, rounding="truncate"))
  f32 = err(Accumulation(every=k))
  assert lim > 5 * pro > 5 * f32, (lim, pro, f32)


def test_accumulation_validation():
  with pytest.raises(ValueError):
    Accumulation(mantissa_bits=0)
  with pytest.raises(ValueError):
    Accumulation(every=0)
  with pytest.raises(ValueError):
    Accumulation(every=3, promote_every=128)
  with pytest.raises(ValueError):
    Accumulation(rounding="stochastic")
