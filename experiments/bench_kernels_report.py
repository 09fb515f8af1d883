"""Builds the kernel benchmark report (markdown tables with targets, roofline PNG) from the JSON
that experiments/bench_kernels.py wrote on the GPU machine. Runs anywhere (no GPU).

  python experiments/bench_kernels_report.py   # reads/writes experiments/results/kernels_*
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RES = os.path.join(HERE, "results")

# Targets of issue 8 (H100).
QUANT_TBPS, QUANT_X_XLA = 2.8, 2.0
WO_DECODE_TBPS = 2.6
WO_X_BF16 = {1: 3.2, 2: 3.2, 4: 3.2, 8: 3.2, 16: 3.2, 32: 2.5, 64: 2.2}


def _load(name):
  with open(os.path.join(RES, name)) as f:
    return json.load(f)


def _mark(ok):
  return "met" if ok else "MISSED"


def quant_table(runs):
  lines = ["| scheme | M x K | kernel us | TB/s (read+write) | % copy BW | XLA mxjax.quantize TB/s "
           "| vs XLA | bit-exact vs mxjax.quantize (random / special) | target 2.8 TB/s & 2.0x | run |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for tag, d in runs:
    for r in d["fused_quantize"]:
      if "kernel_s" not in r:
        lines.append(f"| {r['scheme']} | {r['M']}x{r['K']} | failed: {r.get('error', '')[:60]} "
                     "| | | | | | | {tag} |")
        continue
      ok_bw = r["kernel_TBps"] >= QUANT_TBPS
      ok_x = r["x_vs_xla"] >= QUANT_X_XLA
      exact = r["mismatch_random"] == 0 and r["mismatch_special"] == 0
      lines.append(
          f"| {r['scheme']} | {r['M']}x{r['K']} | {r['kernel_s']*1e6:.1f} | {r['kernel_TBps']:.2f} "
          f"| {100*r['frac_copy_bw']:.0f}% | {r['xla_TBps']:.2f} | {r['x_vs_xla']:.2f}x | "
          f"{'yes' if exact else 'NO'} ({r['mismatch_random']} / {r['mismatch_special']} differ) | "
          f"BW {_mark(ok_bw)} ({r['kernel_TBps']/QUANT_TBPS:.0%}), ratio {_mark(ok_x)} | {tag} |")
  return "\n".join(lines)


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
      want_x = WO_X_BF16.get(m)
      tgt = []
      if m <= 16:
        tgt.append(f"BW {_mark(r['kernel_TBps'] >= WO_DECODE_TBPS)} "
                   f"({r['kernel_TBps']/WO_DECODE_TBPS:.0%} of 2.6)")
      if want_x:
        tgt.append(f"{want_x}x {_mark(r['x_vs_xla_bf16'] >= want_x)} "
                   f"({r['x_vs_xla_bf16']/want_x:.0%})")
      lines.append(
          f"| {r['fmt']} | {m} | {shape} | {r['kernel_s']*1e6:.1f} | {r['kernel_TBps']:.2f} | "
          f"{100*r['kernel_TBps']*1e12/copy_bps:.0f}% | {r['xla_bf16_TBps']:.2f} | "
          f"{r['x_vs_xla_bf16']:.2f}x | {r['x_vs_xla_dequant_dot']:.1f}x | {r['rel_err']:.1e} | "
          f"{'; '.join(tgt)} | {r['config']} |")
  return "\n".join(lines)


def roofline(wo_runs, quant_runs, copy_bps, gemm_flops, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5))
  ai = np.logspace(-1, 3.5, 200)
  ax.loglog(ai, np.minimum(ai * copy_bps, gemm_flops) / 1e12, "k-", lw=1,
            label=f"ceiling: copy {copy_bps/1e12:.2f} TB/s, bf16 GEMM {gemm_flops/1e12:.0f} TFLOP/s")
  marks = {(8192, 28672): "o", (4096, 4096): "s", (4096, 14336): "^"}
  for _, d in wo_runs:
    for r in d["wo_matmul"]:
      f = 2 * r["M"] * r["K"] * r["N"]
      mk = marks.get((r["K"], r["N"]), "x")
      if "kernel_s" in r:
        ax.loglog(f / r["weight_bytes"], f / r["kernel_s"] / 1e12, mk, color="C0" if r["fmt"] == "int4" else "C3")
      bb = r["K"] * r["N"] * 2 + 2 * r["M"] * (r["K"] + r["N"])
      ax.loglog(f / bb, f / r["xla_bf16_s"] / 1e12, mk, color="C1", mfc="none")
      ax.loglog(f / r["weight_bytes"], f / r["xla_dequant_dot_s"] / 1e12, mk, color="C2", mfc="none")
  for c, lab in (("C0", "Mosaic GPU INT4 g128 kernel"), ("C3", "Mosaic GPU UINT4 g128 kernel"),
                 ("C1", "XLA bf16 dot"), ("C2", "XLA int4 dequant-then-dot")):
    ax.plot([], [], "o", color=c, label=lab)
  for shape, mk in marks.items():
    ax.plot([], [], mk, color="gray", label=f"K x N = {shape[0]} x {shape[1]}")
  ax.set_xlabel("arithmetic intensity (FLOP / byte of the weight as stored)")
  ax.set_ylabel("TFLOP/s")
  ax.set_title("weight-only matmul, M = 1..64 (and XLA at M = 1024, 4096)")
  ax.legend(fontsize=7, loc="upper left")
  names, kern, xla = [], [], []
  for _, d in quant_runs:
    for r in d["fused_quantize"]:
      if "kernel_s" in r:
        names.append(f"{r['scheme']}\n{r['M']}x{r['K']}")
        kern.append(r["kernel_TBps"])
        xla.append(r["xla_TBps"])
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


def main():
  quant = [("final", _load("kernels_quant.json"))]
  recheck = [("recheck", _load("kernels_quant_recheck.json"))]
  wo = [("final", _load("kernels_wo.json")), ("final", _load("kernels_wo_uint4.json"))]
  head = quant[0][1]
  copy_bps, gemm = head["copy_Bps"], head["bf16_gemm_flops"]
  md = [
      "# Kernel benchmarks (issue 8), H100",
      "",
      f"Device {head['device']}, jax {head['jax_version']}; runs of {head['date'][:10]} "
      f"({', '.join(d['date'][11:19] + ' UTC' for _, d in quant + recheck + wo)}). "
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
      "## Weight-only matmul (INT4 / UINT4, group 128, bf16 activations)",
      "",
      wo_table(wo, copy_bps),
      "",
      "![roofline](kernels_roofline.png)",
  ]
  with open(os.path.join(RES, "kernels_report.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  roofline(wo, quant, copy_bps, gemm, os.path.join(RES, "kernels_roofline.png"))
  print("\n".join(md))


if __name__ == "__main__":
  main()
