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
