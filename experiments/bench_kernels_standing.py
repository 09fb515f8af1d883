"""Where each of issue 8's targets stands: the best checked measurement of every kernel case.

Reads every `experiments/results/kernels_*.json` that `bench_kernels.py` wrote on one device,
keeps for each case the fastest row that passed its check (quantize: bit-exact on every test
tensor; wo_matmul: `correct` against the f32 reference), and writes one table per kernel with
the targets met or missed and by how much. Runs anywhere (no GPU):

  python experiments/bench_kernels_standing.py   # writes experiments/results/kernels_standing.md

The best measurement is not always today's default: the config column says what ran, the run
column which result file holds it (its `configs_timed` has every config of that run).
"""

from __future__ import annotations

import glob
import json
import os

from bench_kernels_report import QUANT_COLUMNS_TBPS
from bench_kernels_report import QUANT_TBPS
from bench_kernels_report import QUANT_X_XLA
from bench_kernels_report import RES
from bench_kernels_report import wo_targets


def load_runs(device: str) -> list[tuple[str, dict]]:
  """(file name, JSON) of every kernel result file measured on `device` (a substring)."""
  runs = []
  for path in sorted(glob.glob(os.path.join(RES, "kernels_*.json"))):
    with open(path) as f:
      d = json.load(f)
    if isinstance(d, dict) and device in d.get("device", ""):
      runs.append((os.path.basename(path), d))
  return runs


def _quant_exact(r) -> bool:
  keys = ("mismatch_random", "mismatch_special", "mismatch_ties", "mismatch_nonfinite",
          "mismatch_random_best_config")
  return "kernel_s" in r and r.get("bit_exact", True) and all(r.get(k, 0) == 0 for k in keys)


def best_rows(runs, kernel: str) -> dict[tuple, tuple[dict, str]]:
  """The fastest checked row of each case: quantize by (scheme, orientation, M, K), wo_matmul
  by (format, K, N, M). NVFP4 given its tensor amax is a case of its own."""
  best = {}

  def offer(key, r, secs, name):
    if key not in best or secs < best[key][0]["kernel_s"]:
      best[key] = (dict(r, kernel_s=secs), name)

  for name, d in runs:
    for r in d.get(kernel, []):
      if kernel == "fused_quantize":
        if not _quant_exact(r):
          continue
        orient = r.get("orientation", "row-wise")
        key = (r["scheme"].removesuffix(f" ({orient})"), orient, r["M"], r["K"])
        offer(key, r, r["kernel_s"], name)
        if r.get("given_amax_s") and r.get("mismatch_given_amax") == 0:
          offer((r["scheme"] + " given amax",) + key[1:],
                dict(r, kernel_TBps=r["given_amax_TBps"],
                     x_vs_xla=r["xla_s"] / r["given_amax_s"]), r["given_amax_s"], name)
      elif "kernel_s" in r and r.get("correct"):
        offer((r["fmt"], r["K"], r["N"], r["M"]), r, r["kernel_s"], name)
  return best


def quant_targets(r, orientation: str) -> list[tuple[str, bool, float]]:
  """Row-wise: 2.8 TB/s and 2.0x XLA's jitted `mxjax.quantize`; column-wise: 2.4 TB/s."""
  tbps = r["kernel_TBps"]
  if orientation == "column-wise":
    return [(f"{QUANT_COLUMNS_TBPS} TB/s", tbps >= QUANT_COLUMNS_TBPS, tbps / QUANT_COLUMNS_TBPS)]
  return [(f"{QUANT_TBPS} TB/s", tbps >= QUANT_TBPS, tbps / QUANT_TBPS),
          (f"{QUANT_X_XLA}x XLA", r["x_vs_xla"] >= QUANT_X_XLA, r["x_vs_xla"] / QUANT_X_XLA)]


def _cell(targets) -> str:
  return "; ".join(f"{t} {'met' if ok else '**missed**'} ({frac:.0%})" for t, ok, frac in targets)


def _run(name: str) -> str:
  return name.removeprefix("kernels_").removesuffix(".json")


def quant_table(best) -> list[str]:
  lines = ["| scheme | orientation | M x K | us | TB/s | vs XLA | target (achieved / target) "
           "| config | run |", "|---|---|---|---|---|---|---|---|---|"]
  for (scheme, orient, m, k), (r, name) in sorted(best.items()):
    lines.append(f"| {scheme} | {orient} | {m}x{k} | {r['kernel_s'] * 1e6:.1f} | "
                 f"{r['kernel_TBps']:.2f} | {r['x_vs_xla']:.2f}x | "
                 f"{_cell(quant_targets(r, orient))} | {r.get('config', {})} | {_run(name)} |")
  return lines


def mma_rates(device: str) -> dict[int, float]:
  """TFLOP/s of the register-A wgmma by N with two 64-row warpgroups an SM (the decode kernel's
  MMA at M <= 64, N = M padded to 8), from `bench_wgmma_rate.py`'s results on `device`."""
  rates = {}
  for path in sorted(glob.glob(os.path.join(RES, "wgmma_rate_*.json"))):
    with open(path) as f:
      d = json.load(f)
    if device not in d.get("device", ""):
      continue
    for r in d.get("wgmma_rate", []):
      if r["rows"] == 64 and r["ctas_per_sm"] == r.get("resident") == 2 and r["correct"]:
        rates[r["n"]] = max(rates.get(r["n"], 0.0), r["tflops"])
  return rates


def wo_floors_us(r: dict, run: dict, rates: dict[int, float]) -> tuple[float, float | None]:
  """A weight-only matmul's two measured floors, us: its weight bytes at the run's copy
  bandwidth, and its MMA: at M <= 64 the decode's wgmma (N = M padded to 8) at the rate
  measured for that N (None where unmeasured), above it the GEMM's flops at the run's XLA bf16
  GEMM rate."""
  load = r["weight_bytes"] / run["copy_Bps"] * 1e6
  m = r["M"]
  if m > 64:
    return load, 2 * m * r["K"] * r["N"] / run["bf16_gemm_flops"] * 1e6
  mp = max(8, -(-m // 8) * 8)
  rate = rates.get(mp)
  return load, None if rate is None else 2 * mp * r["K"] * r["N"] / (rate * 1e12) * 1e6


def around_us(r: dict) -> float | None:
  """The call's time in XLA kernels around the Mosaic kernel (x splits, pads, the slots' sum
  and transpose), us, from the profile of one call (`kernel_us`); None where none was taken."""
  if not r.get("kernel_us"):
    return None
  return sum(t for name, t in r["kernel_us"].items() if "mosaic" not in name)


def wo_table(best, runs: dict[str, dict], rates: dict[int, float]) -> list[str]:
  lines = ["| format | K x N | M | us | TB/s | vs XLA bf16 | vs XLA dequant+dot | target "
           "(achieved / target) | floors us (load / MMA) | of the higher floor | XLA around us "
           "| config | run |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for (fmt, k, n, m), (r, name) in sorted(best.items(), key=lambda kv: (-kv[0][1] * kv[0][2],
                                                                         kv[0][0], kv[0][3])):
    load, mma = wo_floors_us(r, runs[name], rates)
    us = r["kernel_s"] * 1e6
    floors = f"{load:.1f} / {'-' if mma is None else f'{mma:.1f}'}"
    around = around_us(r)
    lines.append(f"| {fmt} | {k}x{n} | {m} | {us:.1f} | "
                 f"{r['kernel_TBps']:.2f} | {r['x_vs_xla_bf16']:.2f}x | "
                 f"{r['x_vs_xla_dequant_dot']:.1f}x | {_cell(wo_targets(r))} | {floors} | "
                 f"{max(load, mma or 0.0) / us:.0%} | {'-' if around is None else f'{around:.1f}'}"
                 f" | {r.get('config', {})} | {_run(name)} |")
  return lines


def time_split(device: str, k: int = 8192, n: int = 28672) -> list[dict]:
  """Where each decode case's time goes (its best checked run at K x N, M <= 64, with a
  profile of one call): us at the load floor, in the Mosaic kernel above that floor, and in
  XLA's kernels around it, and the time its XLA bf16 ratio target asks for."""
  runs = load_runs(device)
  out = []
  for (fmt, kk, nn, m), (r, name) in sorted(best_rows(runs, "wo_matmul").items()):
    around = around_us(r)
    if (kk, nn) != (k, n) or m > 64 or around is None:
      continue
    ratio = [frac for t, _, frac in wo_targets(r) if t.endswith("XLA bf16")]
    us = r["kernel_s"] * 1e6
    load, _ = wo_floors_us(r, dict(runs)[name], {})
    out.append(dict(case=f"{fmt} M={m}", us=us, load_us=min(load, us - around),
                    kernel_us=us - around, around_us=around,
                    target_us=us * ratio[0] if ratio else None))
  return out


def time_split_png(rows: list[dict], title: str, path: str) -> None:
  """`time_split`'s rows as stacked bars, the target a tick on each."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.4))
  y = range(len(rows))
  load = [r["load_us"] for r in rows]
  above = [r["kernel_us"] - r["load_us"] for r in rows]
  ax.barh(y, load, color="0.75", label="weight bytes at copy bandwidth")
  ax.barh(y, above, left=load, color="tab:blue", label="Mosaic kernel above that")
  ax.barh(y, [r["around_us"] for r in rows], left=[r["kernel_us"] for r in rows],
          color="tab:orange", label="XLA kernels around it")
  for i, r in enumerate(rows):
    if r["target_us"] is not None:
      ax.plot([r["target_us"]] * 2, [i - 0.45, i + 0.45], "k-", lw=2)
  ax.plot([], [], "k-", lw=2, label="target (its XLA bf16 ratio)")
  ax.set_yticks(list(y), [r["case"] for r in rows], fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel("us")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


TIME_SPLIT_PNG = "kernels_time_split_{}.png"  # by device


def standing(device: str) -> list[str]:
  """The markdown section of one device (a substring of the JSON's `device`): both tables."""
  runs = load_runs(device)
  dates = sorted(d["date"][:10] for _, d in runs)
  quant, wo = best_rows(runs, "fused_quantize"), best_rows(runs, "wo_matmul")
  met = sum(all(ok for _, ok, _ in quant_targets(r, key[1])) for key, (r, _) in quant.items())
  met_wo = sum(all(ok for _, ok, _ in wo_targets(r)) for r, _ in wo.values())
  md = [f"## {runs[-1][1]['device']}", "",
        f"{len(runs)} result files, {dates[0]} .. {dates[-1]}, jax {runs[-1][1]['jax_version']}.",
        "", f"### Fused block quantization ({met} of {len(quant)} cases meet every target)", ""]
  md += quant_table(quant)
  md += ["", f"### Weight-only matmul ({met_wo} of {len(wo)} cases meet every target)", "",
         "Floors: the weight's bytes at the run's copy bandwidth, and the MMA: at M <= 64 the "
         "decode's wgmma, whose N is M padded to 8, at the rate `bench_wgmma_rate.py` measured "
         "for that N with two warpgroups an SM (`wgmma_rate_*.json` of this device; - where "
         "none ran), above it the GEMM at XLA's bf16 GEMM rate. `of the higher floor`: that "
         "floor over the time (100% is at the floor). `XLA around us`: the call's time in XLA "
         "kernels before and after the Mosaic kernel (splitting x, padding, adding the stream-K "
         "slots and transposing y; from a profile of one call, - where none was taken): time "
         "no launch config of the kernel can win back.", ""]
  return md + wo_table(wo, dict(runs), mma_rates(device)) + [""]


# The first H100 run of today's kernels since session 5: older H100 rows timed other code.
H100_SINCE = "2026-12-05"


def bandwidth_share(t_slow: float, t_fast: float, bw_ratio: float) -> float:
  """The share of the fast device's time that scales with memory bandwidth, from one case timed
  on two devices with the same tensor cores and clocks whose copy bandwidths differ by
  `bw_ratio` (> 1): with t = m + o on the fast device and m bw_ratio + o on the slow one
  (m the part bound by the stream, o the rest: MMA, ALU, launch), m / t = (r - 1) /
  (bw_ratio - 1), r = t_slow / t_fast. Near 1: bound by the stream; near 0: by the rest."""
  return (t_slow / t_fast - 1.0) / (bw_ratio - 1.0)


def device_scaling(since: str = H100_SINCE) -> list[str]:
  """Each case timed on both the H100 (runs from `since`) and the H200: the time ratio and
  `bandwidth_share`, the two devices' copy bandwidths from their runs (median)."""
  slow = [(n, d) for n, d in load_runs("H100") if d["date"][:10] >= since]
  fast = load_runs("H200")
  if not slow:
    return []
  def copy(runs):  # the median copy bandwidth of the runs that measured it
    bps = sorted(d["copy_Bps"] for _, d in runs if "copy_Bps" in d)
    return bps[len(bps) // 2]
  bw = copy(slow) / copy(fast)
  md = ["## H100 against H200: what bounds each case", "",
        f"Each case's best checked time on the H100 (runs since {since}) over the H200's; the "
        f"H200's copy bandwidth is {1 / bw:.2f}x the H100's (medians of the runs), the tensor "
        "cores and clocks the same. `stream share`: the share of the H200's time that scales "
        "with bandwidth under t = stream + rest (`bandwidth_share`; near 100%: bound by the "
        "weight's or tensor's stream, near 0: by the MMA, the ALU work or fixed costs). Each "
        "device's best may be a different config (a share outside 0-100% says so), and fixed "
        "costs (launch, XLA kernels around the kernel) count as rest.", "",
        "| kernel | case | H100 us | H200 us | H100 / H200 | stream share |",
        "|---|---|---|---|---|---|"]
  for kernel in ("wo_matmul", "fused_quantize"):
    a, b = best_rows(slow, kernel), best_rows(fast, kernel)
    for key in sorted(set(a) & set(b), key=str):
      ta, tb = a[key][0]["kernel_s"] * 1e6, b[key][0]["kernel_s"] * 1e6
      case = " ".join(str(k) for k in key)
      md.append(f"| {kernel} | {case} | {ta:.1f} | {tb:.1f} | {ta / tb:.2f} | "
                f"{bandwidth_share(ta, tb, 1 / bw):.0%} |")
  return md + [""]


# The 4-bit decode's storages (label, mxjax preset, its overrides, the stored scales: "bf16"
# for FP4's bf16 multipliers / NF4's slot codes, "bytes" for FP4 scale bytes or the scheme's own,
# "zero_points" for UINT4's as bytes), for `stream_asks`
STREAM_STORAGES = [
    ("INT4 g128", "int4_g128", {}, "bytes"),
    ("INT4 g128, bf16 scales or amaxes", "int4_g128", {"scale": "bf16"}, "bytes"),
    ("INT4 g64", "int4_g128", {"block_size": 64}, "bytes"),
    ("INT4 g32", "int4_g128", {"block_size": 32}, "bytes"),
    ("INT4 g32, bf16 scales or amaxes", "int4_g128", {"block_size": 32, "scale": "bf16"},
     "bytes"),
    ("UINT4 g128 (f32 offsets)", "int4_g128_asym", {}, "bytes"),
    ("UINT4 g128 (zero point bytes)", "int4_g128_asym", {}, "zero_points"),
    ("NF4 g64 (slot codes, bf16 absmax)", "nf4_g64", {}, "bf16"),
    ("MXFP4 (bf16 multipliers)", "mxfp4", {}, "bf16"),
    ("MXFP4 (scale bytes)", "mxfp4", {}, "bytes"),
    ("NVFP4 (bf16 multipliers)", "nvfp4", {}, "bf16"),
    ("NVFP4 (scale bytes)", "nvfp4", {}, "bytes"),
]


def stored_bytes(preset: str, overrides: dict, storage: str, k: int, n: int) -> int:
  """Bytes the GPU decode reads for a (K, N) weight of `preset` stored as `storage`
  (`STREAM_STORAGES`): `PackedWeight.nbytes`, from shapes only."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import mxjax  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import layout  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import scales  # pylint: disable=g-import-not-at-top

  def build(w):
    q = mxjax.quantize(w, mxjax.schemes.get(preset, **overrides), axis=0)
    pw = layout.repack_qarray(q, wgmma_order=False, scale_bf16=storage == "bf16")
    return scales.uint4_zero_points(pw) if storage == "zero_points" else pw

  return jax.eval_shape(build, jax.ShapeDtypeStruct((k, n), jnp.float32)).nbytes


def stream_asks(device: str = "H100", since: str = H100_SINCE,
                want: float = 3.2) -> list[str]:
  """What the 4-bit decode's `want`x XLA bf16 at M = 1 asks of each storage's stream: its
  stored bytes at the median copy bandwidth of the device's runs (since `since`) against
  the median XLA bf16 GEMV time of those runs over `want`, at 8192 x 28672 and 4096 x 14336.
  A storage whose stream alone takes most of that time cannot meet the target at the
  bandwidth the decode reaches (80-85% of copy, the best 4-bit decodes)."""
  runs = [d for _, d in load_runs(device) if d["date"][:10] >= since]
  bps = sorted(d["copy_Bps"] for d in runs if "copy_Bps" in d)
  if not bps:
    return []
  copy = bps[len(bps) // 2]
  shapes = [(8192, 28672), (4096, 14336)]
  allowed = {}
  for k, n in shapes:
    xla = sorted(r["xla_bf16_s"] for d in runs for r in d.get("wo_matmul", [])
                 if (r["K"], r["N"], r["M"]) == (k, n, 1) and "xla_bf16_s" in r)
    if xla:
      allowed[(k, n)] = xla[len(xla) // 2] / want * 1e6
  md = [f"## What {want}x asks of the 4-bit decode's stream ({device}, M = 1)", "",
        f"Each storage's bytes (codes and what its scales take as the GPU decode reads them) "
        f"at the {device}'s copy bandwidth ({copy / 1e12:.2f} TB/s, the median of its runs "
        f"since {since}), against the time {want}x XLA's bf16 GEMV allows (its median there). "
        "`stream / allowed` near 100% means the target needs the whole copy bandwidth for "
        "the weight alone; the best 4-bit decodes reach 80-85% of it.", "",
        "| storage | " + " | ".join(f"{k} x {n}: MB, stream us / allowed us"
                                    for k, n in shapes if (k, n) in allowed) + " |",
        "|---|" + "---|" * len(allowed)]
  for label, preset, overrides, storage in STREAM_STORAGES:
    cells = []
    for k, n in shapes:
      if (k, n) not in allowed:
        continue
      b = stored_bytes(preset, overrides, storage, k, n)
      us = b / copy * 1e6
      cells.append(f"{b / 1e6:.1f}, {us:.1f} / {allowed[(k, n)]:.1f} "
                   f"({us / allowed[(k, n)]:.0%})")
    md.append(f"| {label} | " + " | ".join(cells) + " |")
  return md + [""]


def page() -> str:
  md = ["# Issue 8's targets: the best checked measurement of each case", "",
        "Generated by `experiments/bench_kernels_standing.py` from the result files. Each row "
        "is the fastest run of its case that passed its check (quantize bit-exact with "
        "`mxjax.quantize` on the random, special-value, tie and NaN/Inf tensors; wo_matmul "
        "correct against the f32 reference), not necessarily today's default config; "
        "(achieved / target) in parentheses. The targets were set on an H100. The H200 "
        "(sessions 6 on) has the H100's tensor cores and 1.4x its memory bandwidth, so its "
        "XLA bf16 GEMV is ~1.4x faster: where a decode kernel is bound by the MMA (M = 32, "
        "64) its ratio to XLA bf16 scores lower there (docs/kernels.md). Each device's "
        "section holds all of its runs (the H100's: sessions 1-5, and any later run on one; "
        "its dates line says which).", ""]
  for device in ("H200", "H100"):
    md += standing(device)
    md += [f"Where the time of each decode case at 8192 x 28672 goes on the {device} (its best "
           "checked run with a profile of one call; `time_split`): the weight's bytes at copy "
           "bandwidth, the Mosaic kernel above that, the XLA kernels around it, and the time its "
           "ratio to XLA bf16 asks for.", "",
           f"![where the time goes, {device}]({TIME_SPLIT_PNG.format(device.lower())})", ""]
  return "\n".join(md + device_scaling() + stream_asks())


def main():
  for device in ("H200", "H100"):
    time_split_png(time_split(device),
                   f"{device}, 8192 x 28672: where each decode case's time goes",
                   os.path.join(RES, TIME_SPLIT_PNG.format(device.lower())))
  text = page()
  with open(os.path.join(RES, "kernels_standing.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
