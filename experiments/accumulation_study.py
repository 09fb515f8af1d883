"""Accumulation study: relative error of an FP8 GEMM against K with a limited (14-bit)
accumulator, with DeepSeek's promotion to fp32 every N_c = 128, and in fp32.

The operands are quantized to FP8 E4M3 (per-tensor scales) once; the error measured is that of
accumulating their exact products, against a float64 product of the same FP8 values (so the
quantization error, identical for every accumulator, is left out). The accumulator model is
`mxjax.ops.Accumulation`: the running sum keeps 13 fraction bits (14 significant bits, DeepSeek-V3
section 3.3.2: "limited to retaining around 14 bits") after every product, rounded to nearest-even
or truncated; with promotion, every 128 products the limited sum is added into an fp32 register.

Two input distributions: N(0, 1) (sums grow like sqrt(K)) and |N(0, 1)| (sums grow like K, the
hard case for a short accumulator).

Run: python experiments/accumulation_study.py [--quick]   (CPU, about a minute)
Writes experiments/results/accum_fp8_gemm.{csv,json,png}.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import mxjax
from mxjax.ops import Accumulation
from mxjax.ops.accumulate import emulated_dot_general
from mxjax.ops.dims import normalize

KS = (256, 512, 1024, 2048, 4096, 8192, 16384)
M = N = 64
CONFIGS = {
    "fp32": Accumulation(mantissa_bits=23),
    "14-bit (nearest)": Accumulation(mantissa_bits=13, rounding="nearest"),
    "14-bit (truncate)": Accumulation(mantissa_bits=13, rounding="truncate"),
    "14-bit + fp32 promotion every 128 (nearest)": Accumulation(
        mantissa_bits=13, promote_every=128, rounding="nearest"
    ),
    "14-bit + fp32 promotion every 128 (truncate)": Accumulation(
        mantissa_bits=13, promote_every=128, rounding="truncate"
    ),
}
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def operands(k: int, dist: str, seed: int = 0):
  ka, kb = jax.random.split(jax.random.key(seed))
  a = jax.random.normal(ka, (M, k))
  b = jax.random.normal(kb, (k, N))
  if dist == "abs_normal":
    a, b = jnp.abs(a), jnp.abs(b)
  da = mxjax.dequantize(mxjax.quantize(a, "fp8_e4m3", axis=1))
  db = mxjax.dequantize(mxjax.quantize(b, "fp8_e4m3", axis=0))
  return da, db


def rel_err(out, exact) -> float:
  out = np.asarray(out, np.float64)
  return float(np.linalg.norm(out - exact) / np.linalg.norm(exact))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true", help="K up to 2048 only")
  args = ap.parse_args()
  ks = KS[:4] if args.quick else KS
  d = normalize((((1,), (0,)), ((), ())), 2, 2)
  rows = []
  t0 = time.time()
  for dist in ("normal", "abs_normal"):
    for k in ks:
      da, db = operands(k, dist)
      exact = np.asarray(da, np.float64) @ np.asarray(db, np.float64)
      for name, acc in CONFIGS.items():
        out = jax.jit(lambda a, b, acc=acc: emulated_dot_general(a, b, d, acc))(da, db)
        rows.append(dict(dist=dist, K=k, accumulator=name, rel_err=rel_err(out, exact)))
        print(f"{dist:10s} K={k:6d} {name:46s} {rows[-1]['rel_err']:.3e}", flush=True)
  meta = dict(
      study="FP8 E4M3 GEMM accumulation error vs K",
      M=M, N=N, ks=list(ks), quantization="fp8_e4m3 per-tensor, both operands",
      reference="float64 product of the same FP8 values",
      accumulators={n: a.describe() for n, a in CONFIGS.items()},
      device=f"cpu ({platform.processor() or platform.machine()})",
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      jax_version=jax.__version__, seconds=round(time.time() - t0, 1),
  )  # fmt: skip
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, "accum_fp8_gemm.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["dist", "K", "accumulator", "rel_err"])
    w.writeheader()
    w.writerows(rows)
  with open(os.path.join(RESULTS, "accum_fp8_gemm.json"), "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
  plot(rows, ks, meta)


def plot(rows, ks, meta):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  styles = {"fp32": ("k", "-"), "14-bit": ("tab:red", None), "14-bit + fp32": ("tab:blue", None)}
  for ax, dist in zip(axes, ("normal", "abs_normal")):
    for name in CONFIGS:
      ys = [r["rel_err"] for r in rows if r["dist"] == dist and r["accumulator"] == name]
      color = styles["fp32"][0] if name == "fp32" else (
          "tab:blue" if "promotion" in name else "tab:red")  # fmt: skip
      ls = "--" if "nearest" in name else "-"
      ax.loglog(ks[: len(ys)], ys, color=color, ls=ls, marker="o", ms=3, label=name)
    ax.set_title(f"inputs {'N(0,1)' if dist == 'normal' else '|N(0,1)|'}, FP8 E4M3 operands")
    ax.set_xlabel("K")
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].set_ylabel("relative error ||C - C_exact||_F / ||C_exact||_F")
  axes[1].legend(fontsize=7)
  fig.suptitle(f"FP8 GEMM accumulation error ({M}x K x {N}); {meta['date'][:10]}, "
               f"jax {meta['jax_version']}, emulated on {meta['device']}", fontsize=9)  # fmt: skip
  fig.tight_layout()
  fig.savefig(os.path.join(RESULTS, "accum_fp8_gemm.png"), dpi=120)


if __name__ == "__main__":
  main()
