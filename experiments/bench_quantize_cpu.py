"""CPU micro-benchmark: jitted quantize + dequantize of 16M float32 values, per preset.

Protocol: a (4096, 4096) float32 Gaussian array; each preset's quantize->dequantize is jitted,
run twice to warm up (compile + first run), then timed `--repeats` times with
`block_until_ready`; the median is reported with the min and max. Throughput counts the input
values per second. Writes experiments/results/quantize_cpu.json and .md.

    python experiments/bench_quantize_cpu.py [--repeats 5] [--presets mxfp4,nvfp4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import mxjax

RESULTS = pathlib.Path(__file__).parent / "results"


def bench(preset: str, x: jax.Array, repeats: int) -> dict:
  fn = jax.jit(lambda x: mxjax.dequantize(mxjax.quantize(x, preset)))
  t0 = time.perf_counter()
  fn(x).block_until_ready()
  compile_s = time.perf_counter() - t0
  fn(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn(x).block_until_ready()
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  return {
      "preset": preset,
      "median_ms": med * 1e3,
      "min_ms": min(times) * 1e3,
      "max_ms": max(times) * 1e3,
      "mvalues_per_s": x.size / med / 1e6,
      "first_call_s": compile_s,
  }


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--presets", default=",".join(mxjax.schemes.names()))
  ap.add_argument("--out", default=str(RESULTS / "quantize_cpu"))
  args = ap.parse_args()
  x = jax.random.normal(jax.random.key(0), (4096, 4096), jnp.float32)
  rows = []
  for p in args.presets.split(","):
    rows.append(bench(p, x, args.repeats))
    r = rows[-1]
    print(f"{p:24s} {r['median_ms']:9.1f} ms  {r['mvalues_per_s']:8.1f} Mvalues/s", flush=True)
  meta = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "jax": jax.__version__,
      "device": f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()},"
      f" {os.cpu_count()} cores)",
      "values": int(x.size),
      "repeats": args.repeats,
      "load_average_1m": os.getloadavg()[0],
  }
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
  lines = [
      f"# quantize -> dequantize of {x.size:,} float32 values under jax.jit, CPU",
      "",
      ", ".join(f"{k}: {v}" for k, v in meta.items()),
      "",
      "| preset | median ms | min ms | max ms | Mvalues/s | first call s |",
      "|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['preset']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} |"
        f" {r['mvalues_per_s']:.1f} | {r['first_call_s']:.2f} |"
    )
  out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
  main()
