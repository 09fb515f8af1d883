"""Inputs that stress the rounding of fused quantization (shared by tests and GPU benchmarks)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rounding_midpoints(seed: int, rows: int, cols: int) -> jax.Array:
  """bf16 blocks whose elements sit on or beside rounding midpoints of x / s.

  Rows of three kinds: INT4-shaped (amax = 7 j 2^k, so s = amax / 7 = j 2^k) and FP8-shaped
  (amax = 448 j 2^k) rows hold grid midpoints (k + 1/2 for INT4; between E4M3 neighbours,
  normal and subnormal, for FP8) times j 2^k, rounded to bf16, some bf16 neighbours, negatives:
  exact ties of x / s, which x * RN(1 / s) misses when j is not a power of two. Rows with a
  random amax hold exact multiples of it (amax / 2, 3 amax 2^-e, amax 2^-16) whose quotients
  land within an ulp of a midpoint only through the rounding of s = RN(amax / D).
  """
  rng = np.random.default_rng(seed)
  e4m3 = np.asarray(jnp.arange(127, dtype=jnp.uint8).view(jnp.float8_e4m3fn).astype(jnp.float32))
  grids = [(7.0, np.arange(7) + 0.5), (448.0, (e4m3[1:] + e4m3[:-1]) / 2)]
  x = np.zeros((rows, cols), np.float32)
  for i in range(rows):
    if i % 3 == 2:  # near-ties: s = amax / D is inexact, and x / s = m (1 + delta)
      amax = rng.choice([1.125, 1.25, 1.375, 1.5, 1.625, 1.875]) * 2.0 ** rng.integers(-20, 20)
      # INT4 3.5 = 7 (amax / 2) / amax; E4M3 midpoints 21/16 2^e and 7/16 2^-6 (subnormal).
      near = np.concatenate([[amax / 2, amax * 2.0**-16], amax * 3 * 2.0 ** np.arange(-16, -1)])
      row = rng.choice(near, cols) * np.where(rng.random(cols) < 0.5, -1, 1)
      row[::128] = amax
      x[i] = row
      continue
    div, mids = grids[i % 2]
    unit = rng.integers(1, 37) * 2.0 ** rng.integers(-20, 20)
    row = mids[rng.integers(0, mids.size, cols)] * unit
    row = np.asarray(jnp.asarray(row, jnp.bfloat16).astype(jnp.float32))
    step = rng.integers(-1, 2, cols).astype(np.int32) * (rng.random(cols) < 0.2)
    row = (row.view(np.int32) + (step << 16)).view(np.float32)
    row = np.where(rng.random(cols) < 0.5, -row, row)
    row[::128] = div * unit  # one amax per block of 128
    x[i] = row
  return jnp.asarray(x, jnp.bfloat16)


def special_values(seed: int, rows: int, cols: int, *, nonfinite: bool = False) -> jax.Array:
  """bf16 (rows, cols) data with special values in rows 0-9 (rows >= 10, cols >= 256).

  Random values whose scale varies by ~e^3 between rows, then: row 0 all-zero blocks (its first
  256 columns) beside nonzero ones; row 1 bf16 subnormals (a block of only subnormals, and
  subnormals beside normals); row 2 +-max normal (+-3.39e38) with tiny elements in the same
  blocks; row 3 block amaxes 1.9921875 2^e (every mantissa bit set), whose elements overflow the
  element format after the MX `floor` scale and saturate; row 4 zeros of either sign. With
  `nonfinite`, rows 5-9 add a NaN, a -NaN, +Inf, -Inf, and Inf beside NaN in one block (NVFP4's
  tensor amax is then NaN: keep these apart from the finite cases).
  """
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(k1, (rows, cols)) * jnp.exp(3 * jax.random.normal(k2, (rows, 1)))
  big = float(jnp.finfo(jnp.bfloat16).max)
  x = x.at[0, :256].set(0.0)
  x = x.at[1, :128].set(jnp.where(jnp.arange(128) % 2 == 0, 1e-39, -2.5e-40))
  x = x.at[1, 160:170].set(9.2e-41)
  x = x.at[2, ::37].set(big).at[2, 5::37].set(-big).at[2, 1::37].set(1e-30)
  x = x.at[3, ::16].set(1.9921875 * 2.0**7).at[3, 8::16].set(-1.9921875 * 2.0**-9)
  x = x.at[3, 1::16].set(1.984375 * 2.0**7)
  x = x.at[4, :200:3].set(-0.0).at[4, 1:200:3].set(0.0)
  if nonfinite:
    x = x.at[5, 7].set(jnp.nan).at[6, 130].set(-jnp.nan).at[7, 5].set(jnp.inf)
    x = x.at[8, cols - 3].set(-jnp.inf).at[9, 20].set(jnp.inf).at[9, 21].set(jnp.nan)
  return x.astype(jnp.bfloat16)
