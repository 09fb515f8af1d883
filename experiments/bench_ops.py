"""Benchmark of the `xla` backend of `mxjax.einsum`: FP8 GEMMs against the bf16 dot, same run.

Cases: the compute-bound 8192^3 GEMM, and Llama-3-8B-shaped decode GEMMs (M = 1 and 16 tokens;
qkv 4096->6144, o 4096->4096, gate_up 4096->28672, down 14336->4096). Weights are stored N x K
(quantized along K, used as "mk,nk->mn"), the layout FP8 tensor cores want; one K x N row shows
the cost of the other layout.

Variants per shape:
  bf16          : lax.dot_general of bf16 operands, f32 accumulation, bf16 output (the baseline).
  fp8 tensor    : per-tensor E4M3 x and w, both pre-quantized (QArrays); scales applied to the
                  f32 output.
  fp8 row/col   : per-row x, per-column w scales (fp8_e4m3_rowwise), pre-quantized.
  fp8 tensor+qx : per-tensor, with x (bf16) quantized inside the timed call (the realistic
                  forward of a linear layer).
  fp8 block128  : DeepSeek 1x128 x / 128x128 w blocks (xla applies block scales per K-block:
                  a batched dot over the K blocks; decode shapes only, as it materialises
                  (K/128) x M x N float32 partials).

Timing: jitted, 3 warm-up calls, then the median of 30 timed calls (each synchronised); decode
shapes rotate 8 weight copies inside one call (so weights are read from HBM, not L2) and report
the time per GEMM. Correctness: the xla result against the reference backend and against the
bf16 dot, relative Frobenius error, on each shape.

Run on the GPU machine: PYTHONPATH=. python experiments/bench_ops.py --out DIR
Writes DIR/ops_bench.json and DIR/ops_bench.md (device, date, jax version).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import mxjax

LLAMA = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
ROTATE = 8


def _time(fn, *args, reps=30, warmup=3):
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def _rel(a, b) -> float:
  a = np.asarray(jnp.asarray(a, jnp.float32), np.float64)
  b = np.asarray(jnp.asarray(b, jnp.float32), np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def bench_shape(m, k, n, copies, variants, nk=True):
  key = jax.random.key(m * 7 + k * 3 + n)
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (m, k), jnp.bfloat16)
  ws = [jax.random.normal(jax.random.fold_in(kw, i), (n, k) if nk else (k, n), jnp.bfloat16)
        * 0.02 for i in range(copies)]  # fmt: skip
  spec = "mk,nk->mn" if nk else "mk,kn->mn"
  waxis = 1 if nk else 0
  flops = 2.0 * m * n * k
  out = {}

  bf16 = jax.jit(lambda x, ws: [jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)
                                .astype(jnp.bfloat16) for w in ws])  # fmt: skip
  t_bf16 = _time(bf16, x, ws) / copies
  ref_bf16 = bf16(x, ws[:1])[0]
  out["bf16"] = dict(us=t_bf16 * 1e6, tflops=flops / t_bf16 / 1e12,
                     weight_gbs=n * k * 2 / t_bf16 / 1e9, speedup=1.0)  # fmt: skip

  for name in variants:
    xs, wsch, quant_x = {
        "fp8 tensor": ("fp8_e4m3", "fp8_e4m3", False),
        "fp8 row/col": ("fp8_e4m3_rowwise", "fp8_e4m3_rowwise", False),
        "fp8 tensor+qx": ("fp8_e4m3", "fp8_e4m3", True),
        "fp8 block128": ("fp8_e4m3_block128", "fp8_e4m3_block128x128", False),
    }[name]
    wq = [mxjax.quantize(w, wsch, axis=waxis) for w in ws]
    if quant_x:
      f = jax.jit(lambda x, wq: [mxjax.einsum(spec, x, w, schemes=(xs, None), backend="xla")
                                 for w in wq])  # fmt: skip
      xin = x
    else:
      xin = mxjax.quantize(x, xs, axis=1)
      f = jax.jit(lambda x, wq: [mxjax.einsum(spec, x, w, backend="xla") for w in wq])
    t = _time(f, xin, wq) / copies
    sch = (xs, None) if quant_x else None
    got = mxjax.einsum(spec, xin, wq[0], schemes=sch, backend="xla",
                       preferred_element_type=jnp.float32)  # fmt: skip
    ref = mxjax.einsum(spec, xin, wq[0], schemes=sch, backend="reference",
                       preferred_element_type=jnp.float32)  # fmt: skip
    out[name] = dict(
        us=t * 1e6, tflops=flops / t / 1e12, weight_gbs=n * k * 1 / t / 1e9,
        speedup=t_bf16 / t, rel_err_vs_reference=_rel(got, ref), rel_err_vs_bf16=_rel(got, ref_bf16),
    )  # fmt: skip
    del wq
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", default="experiments/results")
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--probe", action="store_true", help="only the per-tensor FP8 pattern probe")
  args = ap.parse_args()
  dev = jax.devices()[0]
  meta = dict(
      device=f"{dev.platform}: {dev.device_kind}",
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      jax_version=jax.__version__,
      jaxlib_version=getattr(jax.lib, "__version__", None) or jax.__version__,
      method="median of 30 synchronised calls after 3 warm-ups; decode rows rotate 8 weight copies",
  )
  print(meta, flush=True)
  if args.probe:
    rows = probe_fp8_pattern(2048 if args.quick else 8192)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ops_bench_fp8_pattern.json"), "w") as f:
      json.dump(dict(meta=meta, rows=rows), f, indent=1)
    return
  rows = []
  big = 2048 if args.quick else 8192
  cases = [(f"{big}^3 (N x K weights)", big, big, big, 1, True,
            ["fp8 tensor", "fp8 row/col", "fp8 tensor+qx"]),
           (f"{big}^3 (K x N weights)", big, big, big, 1, False, ["fp8 tensor"])]  # fmt: skip
  for m in (1, 16):
    for lname, (k, n) in LLAMA.items():
      cases.append((f"llama3-8b {lname} M={m}", m, k, n, ROTATE, True,
                    ["fp8 tensor", "fp8 row/col", "fp8 tensor+qx", "fp8 block128"]))  # fmt: skip
  for label, m, k, n, copies, nk, variants in cases:
    t0 = time.time()
    try:
      res = bench_shape(m, k, n, copies, variants, nk)
    except Exception as e:  # record the failure, keep benchmarking the rest
      print(f"{label}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
      rows.append(dict(case=label, m=m, k=k, n=n, error=f"{type(e).__name__}: {str(e)[:300]}"))
      continue
    for variant, r in res.items():
      rows.append(dict(case=label, m=m, k=k, n=n, variant=variant, **r))
      print(f"{label:32s} {variant:14s} {r['us']:10.1f} us {r['tflops']:8.1f} TFLOP/s "
            f"{r['weight_gbs']:7.0f} GB/s(w) x{r['speedup']:.2f} "
            f"err_ref={r.get('rel_err_vs_reference', 0):.1e} err_bf16={r.get('rel_err_vs_bf16', 0):.1e}",
            flush=True)  # fmt: skip
    print(f"  ({time.time() - t0:.1f}s)", flush=True)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "ops_bench.json"), "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=1)
  with open(os.path.join(args.out, "ops_bench.md"), "w") as f:
    f.write(f"# xla backend FP8 GEMM vs bf16\n\n{meta['device']}, {meta['date']}, jax "
            f"{meta['jax_version']}. {meta['method']}.\n\n")  # fmt: skip
    f.write("| case | variant | time (us) | TFLOP/s | weight GB/s | speedup vs bf16 |"
            " rel err vs reference | rel err vs bf16 |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
      if "error" in r:
        f.write(f"| {r['case']} | FAILED | {r['error']} | | | | | |\n")
        continue
      f.write(f"| {r['case']} | {r['variant']} | {r['us']:.1f} | {r['tflops']:.1f} | "
              f"{r['weight_gbs']:.0f} | {r['speedup']:.2f} | "
              f"{r.get('rel_err_vs_reference', float('nan')):.1e} | "
              f"{r.get('rel_err_vs_bf16', float('nan')):.1e} |\n")  # fmt: skip
  print("done", flush=True)




def probe_fp8_pattern(n=8192):
  """Per-tensor FP8 at n^3: the two ways of writing the scaled dot (backends.FP8_TENSOR_PATTERN),
  a raw float8 dot with bf16 output (no scales: the ceiling) and bf16, same run."""
  from mxjax.ops import backends

  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (n, n), jnp.bfloat16)
  w = jax.random.normal(kw, (n, n), jnp.bfloat16) * 0.02
  xq, wq = mxjax.quantize(x, "fp8_e4m3", axis=1), mxjax.quantize(w, "fp8_e4m3", axis=1)
  flops = 2.0 * n**3
  ref = mxjax.einsum("mk,nk->mn", xq, wq, backend="reference", preferred_element_type=jnp.float32)
  rows = []
  bf16 = jax.jit(lambda a, b: jnp.einsum("mk,nk->mn", a, b, preferred_element_type=jnp.bfloat16))
  t = _time(bf16, x, w)
  rows.append(dict(variant="bf16 dot (bf16 out)", us=t * 1e6, tflops=flops / t / 1e12))
  t_bf16 = t
  raw = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())),
                                                 preferred_element_type=jnp.bfloat16))  # fmt: skip
  t = _time(raw, xq.codes, wq.codes)
  rows.append(dict(variant="raw fp8 dot, bf16 out, no scales", us=t * 1e6, tflops=flops / t / 1e12))
  for pattern in ("epilogue", "convert"):
    backends.FP8_TENSOR_PATTERN = pattern
    for out in (jnp.bfloat16, jnp.float32):
      f = jax.jit(lambda a, b, out=out: mxjax.einsum("mk,nk->mn", a, b, backend="xla",
                                                     preferred_element_type=out))  # fmt: skip
      t = _time(f, xq, wq)
      got = f(xq, wq)
      rows.append(dict(variant=f"xla fp8 tensor, pattern={pattern}, out={jnp.dtype(out).name}",
                       us=t * 1e6, tflops=flops / t / 1e12, speedup=t_bf16 / t,
                       rel_err_vs_reference=_rel(got, ref)))  # fmt: skip
  backends.FP8_TENSOR_PATTERN = "epilogue"
  for r in rows:
    print(f"{r['variant']:52s} {r['us']:9.1f} us {r['tflops']:7.1f} TFLOP/s "
          f"x{r.get('speedup', 1):.2f} err={r.get('rel_err_vs_reference', 0):.1e}", flush=True)
  return rows


if __name__ == "__main__":
  main()
