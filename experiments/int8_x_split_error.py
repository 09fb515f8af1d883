"""What `fp8_x` for INT8 weights (s8 tensor cores; pallas_kernels/wo_matmul/fp8_x.py) costs in
accuracy: x in int8 hi / lo rows with one power of two a chunk of 128 (`fp8_x.int8_split`),
against the bf16 path's own output rounding, for activations with and without outliers.

The s8 wgmma's int32 sums are exact, so the split is the path's only error before the float32
fold: at most half of 2^(e - 8) an element, 2^-15 of its chunk's amax or less. An outlier
raises its chunk's step (not the others'), which is where LLM activations (a few channels
tens to hundreds of times the rest) could hurt.

Protocol: a random INT8 per-channel weight (codes uniform in -127..127, channel scales uniform
in [0.005, 0.015]), K = 8192, N = 512; x of 1 row, bf16, drawn four ways (N(0, 1); |N(0, 1)|;
N(0, 1) with 1% of elements x30; N(0, 1) with 8 fixed channels x300, "massive activations").
For each, y against the float64 product of x and the dequantized weight:

  bf16 path: f32 products and sums, y rounded to bf16 (what the bf16 decode kernel returns);
  int8_x: `fp8_x.wo_matmul_fp8_x_twin` (the split, exact chunk products, the fold P t s as the
    kernel does), f32 and rounded to bf16.

Errors: max |y - exact| / RMS(exact), worst of 5 seeds.

Run: python experiments/int8_x_split_error.py   (CPU, about a minute)
Writes experiments/results/int8_x_split_error.{json,md}.
"""

from __future__ import annotations

import datetime
import os
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fp8_x_accumulation_model import write_results  # noqa: E402
from pallas_kernels.wo_matmul import fp8_x as F8  # noqa: E402
from pallas_kernels.wo_matmul import layout as L  # noqa: E402

K, N = 8192, 512
SEEDS = 5
DISTS = ("normal", "one sign", "1% x30", "8 channels x300")


def activations(dist: str, rng: np.random.Generator) -> np.ndarray:
  """One row of x (K,), float64 values of bf16s, drawn as `dist` names."""
  x = rng.standard_normal(K)
  if dist == "one sign":
    x = np.abs(x)
  elif dist == "1% x30":
    x = x * np.where(rng.random(K) < 0.01, 30.0, 1.0)
  elif dist == "8 channels x300":
    x[np.arange(8) * (K // 8) + 17] *= 300.0  # fixed channels, each in its own chunk
  return x.astype(ml_dtypes.bfloat16).astype(np.float64)


def run() -> dict:
  rows = {}
  for dist in DISTS:
    worst = {}
    for seed in range(SEEDS):
      rng = np.random.default_rng(seed)
      codes = rng.integers(-127, 128, size=(K, N))
      s = rng.uniform(0.005, 0.015, size=(N,))
      pw = L.repack(jnp.asarray(codes, jnp.int8), jnp.asarray(s[None, :], jnp.float32),
                    fmt="int8", group=K)
      x = activations(dist, rng)
      w = codes * s[None, :].astype(np.float32).astype(np.float64)
      exact = x @ w
      rms = np.sqrt((exact**2).mean())
      err = lambda y: float(np.abs(y - exact).max() / rms)
      bf16 = lambda y: np.asarray(y, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
      y8 = np.asarray(F8.wo_matmul_fp8_x_twin(jnp.asarray(x[None, :], jnp.bfloat16), pw),
                      np.float64)[0]
      ys = {"bf16 path": bf16(x.astype(np.float32) @ w.astype(np.float32)),
            "int8_x, f32": y8, "int8_x, bf16": bf16(y8)}
      for name, y in ys.items():
        worst[name] = max(worst.get(name, 0.0), err(y))
    rows[dist] = worst
  return dict(date=datetime.date.today().isoformat(), jax=jax.__version__, K=K, N=N,
              seeds=SEEDS, max_err_over_rms=rows)


def main() -> None:
  res = run()
  write_results(res, "int8_x_split_error",
                "fp8_x for INT8: the int8 split of x against bf16 output rounding",
                f"K = {K}, N = {N}, INT8 per channel, M = 1; max |y - exact| / RMS(exact), "
                f"worst of {SEEDS} seeds (experiments/int8_x_split_error.py).")


if __name__ == "__main__":
  main()
