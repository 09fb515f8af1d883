"""Why `fp8_x` (pallas_kernels/wo_matmul/fp8_x.py) encodes INT4 as odd values: its error under a
model of Hopper's FP8 MMA accumulator, against bf16 output rounding.

Protocol: a random INT4 g128 weight (codes uniform in -8..7, group scales uniform in [0.005,
0.015]), K = 8192, N = 512; x of 1 row, bf16, drawn three ways (N(0, 1); |N(0, 1)|, one sign;
|N(0, 1)| with 1% of elements x30, outliers). For each, y against the float64 product of x
and the dequantized weight:

  bf16 path: f32 products and sums, y rounded to bf16 (what the bf16 decode kernel returns);
  fp8_x, odd values 2 c + 1 (the kernel's encoding) and offset codes c + 8 (bytes by masking
    alone, owing back 8 sum(x)): x split into E4M3 hi / lo rows as `fp8_x.split_x` does, each
    group's product through `mxjax.ops.dot_general(..., accumulation=...)` with the FP8
    accumulator model of `accumulation_study.py` (13 fraction bits, truncated, every 32
    products: one K = 32 instruction), folded in f32 as the kernel does; f32 and bf16 output.

Errors: max |y - exact| / RMS(exact), over 5 seeds (the worst seed reported). The accumulator is
a model (mxjax.ops.accumulate's warning), so this ranks encodings; the GPU's own rel_err is the
check (experiments/next_gpu_session.sh, part 2).

Run: python experiments/fp8_x_accumulation_model.py   (CPU, under a minute)
Writes experiments/results/fp8_x_accumulation_model.{json,md}.
"""

from __future__ import annotations

import datetime
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import mxjax
from mxjax.ops.accumulate import Accumulation

K, N, G = 8192, 512, 128
SEEDS = 5
FP8_ACC = Accumulation(mantissa_bits=13, every=32, rounding="truncate")


def _split(x: np.ndarray) -> tuple[np.ndarray, float]:
  """x (K,) -> (2, K) float64 hi / lo E4M3 values and s_x, as `fp8_x.split_x` (K order)."""
  amax = np.abs(x).max()
  sx = 2.0**max(np.frexp(amax)[1] - 8, -126)
  xs = x / sx
  hi = xs.astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
  lo = (xs - hi).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
  return np.stack([hi, lo]), sx


def _fp8_path(codes: np.ndarray, s: np.ndarray, x: np.ndarray, encoding: str) -> np.ndarray:
  """y (N,) float32 as the fp8_x kernel computes it, with the modelled accumulator."""
  x8, sx = _split(x)
  a = 2 * codes + 1 if encoding == "odd" else codes + 8  # (K, N), times 2^-9 in the kernel
  a = jnp.asarray(a.T.reshape(N, K // G, G).transpose(1, 0, 2) * 2.0**-9, jnp.float32)
  b = jnp.asarray(x8.reshape(2, K // G, G).transpose(1, 0, 2), jnp.float32)  # (G, 2, 128)
  parts = mxjax.ops.dot_general(a, b, (((2,), (2,)), ((0,), (0,))),
                                accumulation=FP8_ACC)  # (G, N, 2)
  sums = b.sum(-1) * 2.0**-9  # (G, 2): S
  owed = sums if encoding == "odd" else 8 * sums  # what the encoding owes back (x 2^-9)
  fold = ((parts - owed[:, None, :]) * jnp.asarray(s, jnp.float32)[:, :, None]).sum(0)
  out = 2.0**8 if encoding == "odd" else 2.0**9  # odd: sum c x = 2^8 (P - S)
  return np.asarray((fold[:, 0] + fold[:, 1]) * out * sx, np.float64)


def run() -> dict:
  rows = {}
  for dist in ("normal", "one sign", "one sign + outliers"):
    worst = {}
    for seed in range(SEEDS):
      rng = np.random.default_rng(seed)
      codes = rng.integers(-8, 8, size=(K, N))
      s = rng.uniform(0.005, 0.015, size=(K // G, N))
      x = rng.standard_normal(K)
      if dist != "normal":
        x = np.abs(x)
      if dist == "one sign + outliers":
        x = x * np.where(rng.random(K) < 0.01, 30.0, 1.0)
      x = x.astype(ml_dtypes.bfloat16).astype(np.float64)
      exact = x @ (codes * np.repeat(s, G, axis=0))
      rms = np.sqrt((exact**2).mean())
      err = lambda y: float(np.abs(y - exact).max() / rms)
      bf16 = lambda y: np.asarray(y, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
      ys = {"bf16 path": bf16(x.astype(np.float32) @ (codes * np.repeat(s, G, axis=0)).astype(
          np.float32))}
      for enc in ("odd", "offset"):
        y = _fp8_path(codes, s, x, enc)
        ys[f"fp8_x {enc}, f32"] = y
        ys[f"fp8_x {enc}, bf16"] = bf16(y)
      for name, y in ys.items():
        worst[name] = max(worst.get(name, 0.0), err(y))
    rows[dist] = worst
  return dict(date=datetime.date.today().isoformat(), jax=jax.__version__, K=K, N=N, group=G,
              seeds=SEEDS, accumulator=FP8_ACC.describe(), max_err_over_rms=rows)


def write_results(res: dict, stem: str, title: str, caption: str) -> None:
  """experiments/results/<stem>.json and .md: `res["max_err_over_rms"]` (x -> path -> error)
  as a table, under `title` and `caption`."""
  out = os.path.join(os.path.dirname(__file__), "results", stem)
  with open(out + ".json", "w") as f:
    json.dump(res, f, indent=1)
  names = list(next(iter(res["max_err_over_rms"].values())))
  lines = [f"# {title} ({res['date']}, jax {res['jax']})", "", caption, "",
           "| x | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for dist, errs in res["max_err_over_rms"].items():
    lines.append(f"| {dist} | " + " | ".join(f"{errs[n]:.1e}" for n in names) + " |")
  with open(out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


def main() -> None:
  res = run()
  write_results(res, "fp8_x_accumulation_model", "fp8_x under a model of the FP8 MMA accumulator",
                f"K = {K}, N = {N}, INT4 g{G}, M = 1; {res['accumulator']}; max |y - exact| / "
                f"RMS(exact), worst of {SEEDS} seeds (experiments/fp8_x_accumulation_model.py).")


if __name__ == "__main__":
  main()
