"""Builds the kernel benchmark report (markdown tables with targets, roofline PNG) from the JSON
that experiments/bench_kernels.py wrote on the GPU machine. Runs anywhere (no GPU).

  python experiments/bench_kernels_report.py   # reads/writes experiments/results/kernels_*

Sessions 1-5 (H100) are written here; each later session's section is a function in
`bench_kernels_sessions.py` (sessions 6-21), `bench_kernels_sessions_since22.py` (22-33) or
`bench_kernels_sessions_since34.py` (a new session adds one there and to its `SECTIONS`), most
of them built by `wo_section`.
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RES = os.path.join(HERE, "results")

# Targets of issue 8 (set on an H100).
QUANT_TBPS, QUANT_X_XLA = 2.8, 2.0
QUANT_COLUMNS_TBPS = 2.4  # column-wise (transposed) output: a bandwidth target only
WO_DECODE_TBPS = 2.6
WO_X_BF16 = {1: 3.2, 2: 3.2, 4: 3.2, 8: 3.2, 16: 3.2, 32: 2.5, 64: 2.2}


def _load(name):
  with open(os.path.join(RES, name)) as f:
    return json.load(f)


def worst_err(r) -> float:
  """The larger of the default config's and the timed config's relative error (NaN wins)."""
  errs = [r[k] for k in ("rel_err", "rel_err_best_config") if r.get(k) is not None]
  return float("nan") if any(e != e for e in errs) else max(errs)


def _errors(r) -> str:
  """The rel. err cell; with `bench_kernels.py --onehot`, also the dequantized weights' check:
  elements differing from `layout.dequantize` (worst |difference| / max |W|)."""
  text = f"{worst_err(r):.1e}"
  if "onehot_mismatches" in r:
    text += f"; one-hot: {r['onehot_mismatches']} off ({r['onehot_max_err']:.0e})"
  return text


def _mark(ok):
  return "met" if ok else "MISSED"


def quant_table(runs):
  lines = ["| scheme | M x K | kernel us | TB/s (read+write) | % copy BW | XLA mxjax.quantize TB/s "
           "| vs XLA | bit-exact vs mxjax.quantize (random / special / ties / NaN-Inf) | target "
           "(rows 2.8 TB/s & 2.0x, columns 2.4 TB/s) | run |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for tag, d in runs:
    for r in d["fused_quantize"]:
      if "kernel_s" not in r:
        lines.append(f"| {r['scheme']} | {r['M']}x{r['K']} | failed: {r.get('error', '')[:60]} "
                     "| | | | | | | {tag} |")
        continue
      columns = r.get("orientation") == "column-wise"
      tbps = QUANT_COLUMNS_TBPS if columns else QUANT_TBPS
      ok_bw = r["kernel_TBps"] >= tbps
      ratio = "" if columns else f", ratio {_mark(r['x_vs_xla'] >= QUANT_X_XLA)}"
      ties = r.get("mismatch_ties", "-")
      nonfinite = r.get("mismatch_nonfinite", "-")  # checked from session 7 on
      exact = (r["mismatch_random"] == 0 and r["mismatch_special"] == 0 and ties in (0, "-")
               and nonfinite in (0, "-"))
      lines.append(
          f"| {r['scheme']} | {r['M']}x{r['K']} | {r['kernel_s']*1e6:.1f} | {r['kernel_TBps']:.2f} "
          f"| {100*r['frac_copy_bw']:.0f}% | {r['xla_TBps']:.2f} | {r['x_vs_xla']:.2f}x | "
          f"{'yes' if exact else 'NO'} ({r['mismatch_random']} / {r['mismatch_special']} / {ties} / "
          f"{nonfinite} differ) | "
          f"BW {_mark(ok_bw)} ({r['kernel_TBps']/tbps:.0%}){ratio} | {tag} |")
  return "\n".join(lines)


def wo_targets(r) -> list[tuple[str, bool, float]]:
  """Issue 8's targets for one measured wo_matmul row: (target, met, achieved / target) each.

  Prefill (M >= 1024): 0.9x XLA's bf16 dot and never slower than XLA's dequantize-then-dot;
  8-bit weights at M <= 64: 2.7 TB/s and 1.8x XLA bf16; 4-bit decode: 2.6 TB/s at M <= 16 and
  the ratio to XLA bf16 of `WO_X_BF16` (3.2x at M <= 16, 2.5x at 32, 2.2x at 64).
  """
  m, tbps, x_bf16 = r["M"], r["kernel_TBps"], r["x_vs_xla_bf16"]
  if m >= 1024:
    return [("0.9x XLA bf16", x_bf16 >= 0.9, x_bf16 / 0.9),
            ("1x XLA dequant+dot", r["x_vs_xla_dequant_dot"] >= 1, r["x_vs_xla_dequant_dot"])]
  if r["fmt"].split("-")[0] in ("int8", "fp8_e4m3"):
    return [("2.7 TB/s", tbps >= 2.7, tbps / 2.7), ("1.8x XLA bf16", x_bf16 >= 1.8, x_bf16 / 1.8)]
  out = []
  if m <= 16:
    out.append((f"{WO_DECODE_TBPS} TB/s", tbps >= WO_DECODE_TBPS, tbps / WO_DECODE_TBPS))
  want = WO_X_BF16.get(m)
  if want:
    out.append((f"{want}x XLA bf16", x_bf16 >= want, x_bf16 / want))
  return out


def wo_table(runs, copy_bps):
  lines = ["| fmt | M | K x N | kernel us | TB/s (w+s) | % copy BW | XLA bf16 TB/s | vs XLA bf16 "
           "| vs XLA dequant+dot | rel err | target | config |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for tag, d in runs:
    for r in d["wo_matmul"]:
      shape = f"{r['K']}x{r['N']}"
      if "kernel_s" not in r:
        lines.append(
            f"| {r['fmt']} | {r['M']} | {shape} | no kernel ({r.get('error', '')[:40]}) | | | "
            f"XLA bf16 {r['xla_bf16_TFLOPs']:.0f} TFLOP/s | | XLA dequant+dot "
            f"{r['xla_dequant_dot_TFLOPs']:.0f} TFLOP/s | | prefill MISSED (no kernel) | |")
        continue
      m = r["M"]
      tgt = [f"{text} {_mark(ok)} ({frac:.0%})" for text, ok, frac in wo_targets(r)]
      lines.append(
          f"| {r['fmt']} | {m} | {shape} | {r['kernel_s']*1e6:.1f} | {r['kernel_TBps']:.2f} | "
          f"{100*r['kernel_TBps']*1e12/copy_bps:.0f}% | {r['xla_bf16_TBps']:.2f} | "
          f"{r['x_vs_xla_bf16']:.2f}x | {r['x_vs_xla_dequant_dot']:.1f}x | {_errors(r)} | "
          f"{'; '.join(tgt)} | {r['config']} |")
  return "\n".join(lines)


def roofline(wo_runs, quant_runs, copy_bps, gemm_flops, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  fig, (ax, bx) = plt.subplots(1, 2, figsize=(16, 5.5), gridspec_kw=dict(width_ratios=[1.3, 1]))
  ai = np.logspace(-1, 3.5, 200)
  ax.loglog(ai, np.minimum(ai * copy_bps, gemm_flops) / 1e12, "k-", lw=1,
            label=f"ceiling: copy {copy_bps/1e12:.2f} TB/s, bf16 GEMM {gemm_flops/1e12:.0f} TFLOP/s")
  marks = {(8192, 28672): "o", (4096, 4096): "s", (4096, 14336): "^"}
  fmts = sorted({r["fmt"] for _, d in wo_runs for r in d["wo_matmul"]})
  # Kernels in colour (tab10 without its grey, then tab20b); XLA baselines in black / grey.
  palette = [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]
  palette += [plt.get_cmap("tab20b")(i) for i in range(0, 20, 4)]
  colors = {f: palette[i % len(palette)] for i, f in enumerate(fmts)}
  for _, d in wo_runs:
    for r in d["wo_matmul"]:
      f = 2 * r["M"] * r["K"] * r["N"]
      mk = marks.get((r["K"], r["N"]), "x")
      if "kernel_s" in r:
        ax.loglog(f / r["weight_bytes"], f / r["kernel_s"] / 1e12, mk, color=colors[r["fmt"]])
      bb = r["K"] * r["N"] * 2 + 2 * r["M"] * (r["K"] + r["N"])
      ax.loglog(f / bb, f / r["xla_bf16_s"] / 1e12, mk, color="black", mfc="none")
      ax.loglog(f / r["weight_bytes"], f / r["xla_dequant_dot_s"] / 1e12, mk, color="grey",
                mfc="none")
  for c, lab in ([(c, f"Mosaic GPU kernel, {f}") for f, c in colors.items()]
                 + [("black", "XLA bf16 dot"), ("grey", "XLA dequant-then-dot")]):
    ax.plot([], [], "o", color=c, label=lab)
  for shape, mk in marks.items():
    ax.plot([], [], mk, color="gray", label=f"K x N = {shape[0]} x {shape[1]}")
  ax.set_xlabel("arithmetic intensity (FLOP / byte of the weight as stored)")
  ax.set_ylabel("TFLOP/s")
  ax.set_title("weight-only matmul: decode kernels M = 1..64, prefill M >= 1024")
  ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no hidden points
  latest = {}  # the last run of each (scheme, shape): later runs supersede earlier ones
  for _, d in quant_runs:
    for r in d["fused_quantize"]:
      if "kernel_s" in r:
        latest[f"{r['scheme']}\n{r['M']}x{r['K']}"] = (r["kernel_TBps"], r["xla_TBps"])
  names = list(latest)
  kern = [v[0] for v in latest.values()]
  xla = [v[1] for v in latest.values()]
  x = np.arange(len(names))
  bx.bar(x - 0.2, kern, 0.4, label="Mosaic GPU fused kernel")
  bx.bar(x + 0.2, xla, 0.4, label="XLA jit(mxjax.quantize)")
  bx.axhline(copy_bps / 1e12, color="k", lw=1, label="copy bandwidth (ceiling)")
  bx.axhline(QUANT_TBPS, color="r", ls="--", lw=1, label="target 2.8 TB/s")
  bx.set_xticks(x, names, fontsize=6, rotation=60)
  bx.set_ylabel("TB/s (bytes read + written)")
  bx.set_title("fused block quantization (memory-bound: intensity ~0)")
  bx.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def wo_section(session: int, names: tuple[str, ...], intro: str, device: str = "H200",
               quant_runs: list | None = None) -> list[str]:
  """A session's weight-only matmuls on one device: its `kernels_wo_s<session>_<name>.json` runs
  as one table and its roofline, with `quant_runs` (default: the H200's session 9 quantize run)
  in the roofline's right panel."""
  runs = [(f"s{session}", _load(f"kernels_wo_s{session}_{n}.json")) for n in names]
  head = runs[0][1]
  copy_bps, gemm = head["copy_Bps"], head["bf16_gemm_flops"]
  png = f"kernels_roofline_{device.lower()}_s{session}.png"
  quant_runs = quant_runs or [("s9 div.rn", _load("kernels_quant_s9_div_rn.json"))]
  roofline(runs, quant_runs, copy_bps, gemm, os.path.join(RES, png))
  return ["", f"# Session {session}: {device}", "", intro, "", "## Weight-only matmul", "",
          wo_table(runs, copy_bps), "", f"![roofline {device} s{session}]({png})"]


def quant_part(title: str, intro: str, runs: list) -> list[str]:
  """A session's fused-quantize runs under their own heading: `intro`, then one table."""
  return ["", f"## Fused block quantization{title}", "", intro, "", quant_table(runs)]


def session_sections() -> tuple:
  """Every later session's section function, sessions 6 on, in order."""
  # pylint: disable=g-import-not-at-top  (they import this module)
  import bench_kernels_sessions
  import bench_kernels_sessions_since22
  import bench_kernels_sessions_since34
  return (bench_kernels_sessions.SECTIONS + bench_kernels_sessions_since22.SECTIONS
          + bench_kernels_sessions_since34.SECTIONS)


def main():
  quant = [("final", _load("kernels_quant.json"))]
  recheck = [("recheck", _load("kernels_quant_recheck.json"))]
  wo = [("final", _load("kernels_wo.json")), ("final", _load("kernels_wo_uint4.json"))]
  quant2 = [("s2 exact", _load("kernels_quant_exact_cols.json")),
            ("s2 exact NVFP4", _load("kernels_quant_exact2.json")),
            ("s2 exact=False", _load("kernels_quant_inexact.json")),
            ("s2 one launch", _load("kernels_quant_waves.json")),
            ("s2 sweep", _load("kernels_quant_sweep2.json")),
            ("s2 column-wise", _load("kernels_quant_columns.json")),
            ("s2 column-wise MXFP4", _load("kernels_quant_columns2.json")),
            ("s2 defaults", _load("kernels_quant_defaults.json"))]
  wo2 = [("s2", _load(n)) for n in ("kernels_wo_formats.json", "kernels_wo_4096x14336.json",
                                     "kernels_wo_fp4_sweep.json", "kernels_wo_sweep2.json",
                                     "kernels_wo_prefill2.json", "kernels_wo_fp4_default.json",
                                     "kernels_wo_defaults.json",
                                     "kernels_wo_final_check.json",
                                     "kernels_wo_review_check.json")]
  wo3 = [("s3", _load(f"kernels_wo_s3_{n}.json")) for n in (
      "final", "defaults", "defaults_small", "m32", "prefill", "nf4_groups", "fp4_copies",
      "nf4_terms")]
  wo5 = [("s5", _load(f"kernels_wo_s5_{n}.json")) for n in (
      "defaults", "nf4_lut", "fp4_scale_bytes", "sweep_nf4_mxfp4", "load_split", "gemm_formats",
      "gemm_flags", "gemm_m4096", "gemm_4096x14336")]
  quant5 = [("s5 column-wise", _load("kernels_quant_s5_columns.json"))]
  head = quant[0][1]
  copy_bps, gemm = head["copy_Bps"], head["bf16_gemm_flops"]
  md = [
      "# Kernel benchmarks (issue 8), H100",
      "",
      f"Device {head['device']}, jax {head['jax_version']}; runs of {head['date'][:10]} "
      f"({', '.join(d['date'][11:19] + ' UTC' for _, d in quant + recheck + wo + quant2 + wo2 + wo3 + wo5 + quant5)}). "
      f"Ceilings measured in the same runs: copy {copy_bps/1e12:.2f} TB/s (read + write), "
      f"XLA bf16 GEMM 8192^3 {gemm/1e12:.0f} TFLOP/s. " + head["timing"] + ".",
      "",
      "## Fused block quantization (bf16 in, row-wise)",
      "",
      quant_table(quant),
      "",
      "Re-check after the per-block integer division and NVFP4 quotient table (default config, "
      "no sweep):",
      "",
      quant_table(recheck),
      "",
      "Session 2: the exact quotient test (FP8 1x128, INT4), exact NVFP4 block-scale division, "
      "and the `exact=False` variants (the random / special / tie tensors of the check):",
      "",
      quant_table(quant2),
      "",
      "## Weight-only matmul (INT4 / UINT4, group 128, bf16 activations)",
      "",
      wo_table(wo, copy_bps),
      "",
      "Session 2: groups 32 / 64, INT8 and FP8 per-channel, MXFP4, NVFP4, 4096 x 14336, swept "
      "configs, and prefill (M >= 1024: the `dequant_gemm` path; TB/s columns do not apply):",
      "",
      wo_table(wo2, copy_bps),
      "",
      "Session 3: the defaults after E2M1 as signed int4 (six bf16 ops), NF4 on the GPU, "
      "stream-K and warp-specialized schedules for M > 32; the FP4 x-copy and NF4 two-term "
      "variants; prefill with the arithmetic E2M1 decode (every config tried is listed in the "
      "JSON's `configs_timed`, `kernels_wo_s3_*.json`):",
      "",
      wo_table(wo3, copy_bps),
      "",
      "Session 5: the defaults with the NF4 byte-permute lookup and FP4 scale bytes, the "
      "load-only pipeline (`load_only_s` in the JSON), and the fused prefill GEMM "
      "(`mosaic_gpu_gemm`, M >= 1024; every config checked before it is timed):",
      "",
      wo_table(wo5, copy_bps),
      "",
      "Session 5: column-wise quantization of NVFP4, FP8 1x128 and INT4 g128:",
      "",
      quant_table(quant5),
      "",
      "![roofline](kernels_roofline.png)",
  ]
  for section in session_sections():
    md += section()
  with open(os.path.join(RES, "kernels_report.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  roofline(wo + wo2 + wo3 + wo5, quant2 + quant5, copy_bps, gemm, os.path.join(RES, "kernels_roofline.png"))
  print("\n".join(md))
  import bench_kernels_standing  # pylint: disable=g-import-not-at-top  (it imports this module)
  bench_kernels_standing.main()


if __name__ == "__main__":
  main()
