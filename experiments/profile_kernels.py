"""Hardware counters of one kernel launch, with Nsight Compute (ncu), on the GPU machine.

The benchmarks time kernels; this says why a kernel takes that time: DRAM and SM throughput as
a fraction of peak, warp stall reasons, issue-slot use, registers, occupancy. One case a run:

  PYTHONPATH=. python3 experiments/profile_kernels.py --case wo_int4_m1 --out $OUT

runs itself again under `ncu --clock-control none` (the device notes: leave the clocks alone),
captures the third launch of the case's Mosaic GPU kernel (two warm-up launches first), and
writes `profile_<case>.md` (every metric, by section; ncu's raw CSV, `profile_<case>.csv`, only
when it could not be parsed). `--case a,b` profiles several in turn (the device tool returns at
most 8 files a call: 4 cases). `--sass` instead counts executed instructions and stall samples
by SASS opcode (`profile_<case>_sass.md`, with the raw per-instruction CSV). ncu replays the
kernel once per counter pass, so a case takes seconds to a minute.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SECTIONS = ("SpeedOfLight", "MemoryWorkloadAnalysis", "ComputeWorkloadAnalysis", "LaunchStats",
            "Occupancy", "SchedulerStats", "WarpStateStats", "InstructionStats")
NCU_PATHS = ("ncu", "/opt/nvidia/nsight-compute/2025.3.1/ncu")
# case: (what, format or scheme, M, K, N) -- wo_matmul cases run the default config of
# `wo_matmul_mosaic_gpu` / `wo_gemm_mosaic_gpu`; quant cases `quantize_mosaic_gpu` on (M, K),
# quant_t cases `quantize_columns_mosaic_gpu` (the column-wise kernel, its defaults);
# "xla" XLA's own bf16 dot of (M, K) x (K, N), the decode's baseline: its call is more than one
# kernel (session 24: the third launch was a 3.2 us `loop_reduce_fusion`), so several launches
# are captured and the longest reported (`longest_launch`).
CASES = {
    "wo_int4_m1": ("wo", "int4", 1, 8192, 28672),
    "wo_int4_m1_load_only": ("wo_load_only", "int4", 1, 8192, 28672),
    # the codes by plain loads (`code_order.thread_major`), beside the TMA pipeline's default
    "wo_int4_m1_plain": ("wo_plain", "int4", 1, 8192, 28672),
    # XLA's bf16 GEMV streams its 470 MB at ~4.2 TB/s where the decode's empty-body pipeline
    # reaches 3.55: their memory sections side by side say what the TMA boxes do differently
    "xla_bf16_m1": ("xla", "bf16", 1, 8192, 28672),
    "wo_mxfp4_m1": ("wo", "mxfp4", 1, 8192, 28672),
    "wo_nvfp4_m1": ("wo", "nvfp4", 1, 8192, 28672),
    "wo_nf4_m1": ("wo", "nf4_g64", 1, 8192, 28672),
    "wo_mxfp4_m1024": ("wo", "mxfp4", 1024, 8192, 28672),
    # the 8-bit decode at M = 64 misses 1.8x on the H100 (1.66x, session 30) where M = 1-32
    # meet it: the two side by side say what M = 64's MMA and decode add
    "wo_int8_m1": ("wo", "int8", 1, 8192, 28672),
    "wo_int8_m64": ("wo", "int8", 64, 8192, 28672),
    "quant_mxfp8": ("quant", "mxfp8_e4m3", 8192, 8192, None),
    "quant_mxfp4": ("quant", "mxfp4", 8192, 8192, None),
    "quant_nvfp4": ("quant", "nvfp4", 8192, 8192, None),
    "quant_int4": ("quant", "int4_g128", 8192, 8192, None),
    # the same time on the H100 and the H200 (session 22): bound by instructions, not HBM
    "quant_fp8_1x128": ("quant", "fp8_e4m3_block128", 8192, 8192, None),
    # the column-wise kernels below 2.4 TB/s on the H100 (session 33: MXFP4 1.88, INT4 1.97)
    # beside MXFP8's, which meets it (2.47)
    "quant_t_mxfp8": ("quant_t", "mxfp8_e4m3", 8192, 8192, None),
    "quant_t_mxfp4": ("quant_t", "mxfp4", 8192, 8192, None),
    "quant_t_int4": ("quant_t", "int4_g128", 8192, 8192, None),
    "quant_t_nvfp4": ("quant_t", "nvfp4", 8192, 8192, None),
}


def run_case(case: str, launches: int = 3) -> None:
  """Runs the case's kernel `launches` times (under ncu, in the child process)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  what, spec, m, k, n = CASES[case]
  key = jax.random.key(0)
  if what in ("quant", "quant_t"):
    # pylint: disable=g-import-not-at-top
    from pallas_kernels.quantize import mosaic_gpu as QG
    from pallas_kernels.quantize import mosaic_gpu_columns as QC
    # pylint: enable=g-import-not-at-top
    kern = QG.quantize_mosaic_gpu if what == "quant" else QC.quantize_columns_mosaic_gpu
    x = jax.random.normal(key, (m, k), jnp.float32).astype(jnp.bfloat16)
    fn, args = jax.jit(lambda x: kern(x, spec)), (x,)
  elif what == "xla":  # inputs made on the host: ncu counts (and skips) every kernel here
    rng = np.random.default_rng(0)
    x, w = (jnp.asarray(rng.standard_normal(s, np.float32).astype(jnp.bfloat16))
            for s in ((m, k), (k, n)))
    fn, args = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.bfloat16)), (x, w)
  else:
    import bench_kernels as B  # pylint: disable=g-import-not-at-top
    from pallas_kernels.wo_matmul import code_order as CO  # pylint: disable=g-import-not-at-top
    from pallas_kernels.wo_matmul import layout as L  # pylint: disable=g-import-not-at-top
    from pallas_kernels.wo_matmul import mosaic_gpu as WG  # pylint: disable=g-import-not-at-top
    from pallas_kernels.wo_matmul import mosaic_gpu_gemm as WGG  # pylint: disable=g-import-not-at-top
    fmt, grp = B.parse_format(spec)
    codes, scale, extra = B.make_int4(key, k, n, fmt, grp or k)
    pw = L.repack(codes, scale, fmt=fmt, group=grp or k, **B.repack_kw(fmt, extra))
    if what == "wo_plain":
      pw = CO.thread_major(pw)
    x = jax.random.normal(jax.random.fold_in(key, 1), (m, k), jnp.bfloat16)
    kw = dict(allow_unverified=True, load_only=True) if what == "wo_load_only" else dict(
        allow_unverified=True)
    kern = WGG.wo_gemm_mosaic_gpu if m > 64 else WG.wo_matmul_mosaic_gpu
    fn, args = jax.jit(lambda x, p: kern(x, p, **kw)), (x, pw)
  for _ in range(launches):
    jax.block_until_ready(fn(*args))


def parse_details(text: str) -> list[dict]:
  """ncu's `--csv --page details` output -> rows of {section, metric, unit, value, kernel}."""
  start = text.find('"ID"')
  if start < 0:
    return []
  rows = []
  for r in csv.DictReader(io.StringIO(text[start:])):
    if r.get("Metric Name"):
      rows.append(dict(id=r.get("ID", ""), kernel=r.get("Kernel Name", ""),
                       section=r.get("Section Name", ""),
                       metric=r["Metric Name"], unit=r.get("Metric Unit", ""),
                       value=r.get("Metric Value", "")))
  return rows


def longest_launch(rows: list[dict]) -> list[dict]:
  """The rows of the one captured launch with the longest "Duration" (ncu's ID column tells
  launches apart); rows without a duration (one launch captured, no SpeedOfLight) unchanged."""
  dur = {r["id"]: float(r["value"].replace(",", "")) for r in rows
         if r["metric"] == "Duration" and r["value"].replace(",", "").replace(".", "").isdigit()}
  if len(dur) < 2:
    return rows
  best = max(dur, key=dur.get)
  return [r for r in rows if r["id"] == best]


def to_markdown(case: str, rows: list[dict]) -> str:
  kernels = sorted({r["kernel"] for r in rows})
  out = [f"# ncu profile: {case} ({CASES[case]})", "", f"kernel: {', '.join(kernels)}", "",
         "| section | metric | value | unit |", "|---|---|---|---|"]
  out += [f"| {r['section']} | {r['metric']} | {r['value']} | {r['unit']} |" for r in rows]
  return "\n".join(out) + "\n"


def run_ncu(ncu: str, case: str, args: list[str]) -> subprocess.CompletedProcess:
  """ncu (clocks left alone) over the third launch of the case's Mosaic kernel (for an "xla"
  case, over six launches of any kernel from the third on: its inputs come from the host and
  its call is several kernels, the longest kept by `longest_launch`), run in a child of this
  script; `args` say what to collect and print."""
  xla = CASES[case][0] == "xla"
  cmd = [ncu, "--clock-control", "none", "--target-processes", "all",
         "-k", "regex:." if xla else "regex:mosaic",
         "--launch-skip", "2", "--launch-count", "6" if xla else "1", *args,
         sys.executable, os.path.abspath(__file__), "--child", case]
  return subprocess.run(cmd, capture_output=True, text=True, check=False)


def profile(case: str, out: str, ncu: str) -> None:
  sections = [a for s in SECTIONS for a in ("--section", s)]
  res = run_ncu(ncu, case, ["--csv", "--page", "details", *sections])
  rows = longest_launch(parse_details(res.stdout))
  if not rows:  # keep ncu's raw output only when it could not be read (the device returns 8 files)
    with open(os.path.join(out, f"profile_{case}.csv"), "w") as f:
      f.write(res.stdout)
    print(f"{case}: ncu returned {res.returncode} and no metrics:\n{res.stderr[-2000:]}")
    return
  with open(os.path.join(out, f"profile_{case}.md"), "w") as f:
    f.write(to_markdown(case, rows))
  keep = ("Duration", "DRAM Throughput", "Memory Throughput", "Compute (SM) Throughput",
          "Registers Per Thread", "Achieved Occupancy", "Issue Slots Busy", "No Eligible")
  for r in rows:
    if r["metric"].startswith(keep):
      print(f"{case}: {r['metric']} = {r['value']} {r['unit']}")


def sass_rows(text: str) -> list[tuple[str, float, float, float]]:
  """ncu's `--page source --print-source sass --csv` -> [(SASS instruction, executed warp
  instructions, stall samples, not-issued stall samples)], in program order; [] without the
  table (its header names a "Source" column; what precedes it is ncu's log)."""
  header = next((i for i, line in enumerate(text.splitlines()) if '"Source"' in line), None)
  if header is None:
    return []
  reader = csv.DictReader(io.StringIO("\n".join(text.splitlines()[header:])))
  cols = reader.fieldnames or []
  ex = next((c for c in cols if c.startswith("Instructions Executed")), None)
  st = next((c for c in cols if c.startswith("Warp Stall Sampling (All")), None)
  ni = next((c for c in cols if c.startswith("Warp Stall Sampling (Not-issued")), None)
  if ex is None or "Source" not in cols:
    return []
  num = lambda r, c: float((r.get(c) or "0").replace(",", "") or 0) if c else 0.0
  return [(" ".join((r.get("Source") or "").split()), num(r, ex), num(r, st), num(r, ni))
          for r in reader if (r.get("Source") or "").strip()]


def opcode_table(text: str) -> tuple[list[tuple[str, float, float]], int]:
  """ncu's SASS source CSV (`sass_rows`) -> ([(opcode, executed warp instructions, stall
  samples)], number of SASS lines), sorted by executed instructions. The opcode is the SASS
  mnemonic without its modifiers and predicate (`@P0 IADD3.X` -> `IADD3`)."""
  rows = sass_rows(text)
  agg = {}
  for src, e, s, _ in rows:
    op = next(w for w in src.split() if not w.startswith("@")).split(".")[0]
    e0, s0 = agg.get(op, (0.0, 0.0))
    agg[op] = (e0 + e, s0 + s)
  return sorted(((k, *v) for k, v in agg.items()), key=lambda t: -t[1]), len(rows)


def stall_table(text: str, top: int = 20) -> list[str]:
  """The `top` SASS instructions by stall samples as markdown rows (instruction, share of all
  stall samples, share not issued, executed): where the warps wait, one instruction at a
  time (a wgmma wait, a barrier, the first use of a load), which the opcode totals blur."""
  rows = sass_rows(text)
  total = sum(s for _, _, s, _ in rows) or 1.0
  md = ["| instruction | stall samples | not issued | executed |", "|---|---|---|---|"]
  for src, e, s, n in sorted(rows, key=lambda r: -r[2])[:top]:
    md.append(f"| `{src}` | {100 * s / total:.1f}% | {100 * n / total:.1f}% | {e:,.0f} |")
  return md


def profile_sass(case: str, out: str, ncu: str) -> None:
  """Per-instruction counters of the case's kernel: `profile_<case>_sass.md` (executed warp
  instructions and stall samples by SASS opcode) and the raw per-instruction CSV."""
  res = run_ncu(ncu, case, ["--section", "SourceCounters", "--page", "source",
                            "--print-source", "sass", "--csv"])
  with open(os.path.join(out, f"profile_{case}_sass.csv"), "w") as f:
    f.write(res.stdout)
  md = sass_markdown(case, res.stdout)
  if not md:
    print(f"{case}: no SASS table (ncu returned {res.returncode}):\n{res.stderr[-2000:]}")
    return
  with open(os.path.join(out, f"profile_{case}_sass.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  print("\n".join(md[:24]))


def sass_markdown(case: str, text: str) -> list[str]:
  """`profile_<case>_sass.md`'s lines from ncu's SASS source CSV (also a saved
  `profile_<case>_sass.csv`): opcode totals, then the most stalled instructions; [] without
  the table."""
  table, lines = opcode_table(text)
  if not table:
    return []
  total = sum(e for _, e, _ in table) or 1.0
  stalls = sum(s for *_, s in table) or 1.0
  md = [f"# SASS opcodes: {case} ({CASES[case]})", "",
        f"{lines} SASS lines; {total:,.0f} warp instructions executed", "",
        "| opcode | executed | share | stall samples share |", "|---|---|---|---|"]
  md += [f"| {op} | {e:,.0f} | {100 * e / total:.1f}% | {100 * s / stalls:.1f}% |"
         for op, e, s in table]
  return md + ["", "Instructions with the most stall samples:", "", *stall_table(text)]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--case", default="wo_int4_m1", help=f"comma-separated, from {sorted(CASES)}")
  ap.add_argument("--out", default=os.environ.get("OUT", "."))
  ap.add_argument("--sass", action="store_true",
                  help="per-instruction counters by SASS opcode instead of the sections")
  ap.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    run_case(args.child, launches=6 if CASES[args.child][0] == "xla" else 3)
    return
  ncu = next((p for p in NCU_PATHS if shutil.which(p) or os.path.exists(p)), None)
  if ncu is None:
    raise SystemExit(f"ncu not found (looked for {NCU_PATHS})")
  cases = args.case.split(",")
  unknown = [c for c in cases if c not in CASES]
  if unknown:
    raise SystemExit(f"unknown case(s) {unknown}: choose from {sorted(CASES)}")
  for c in cases:
    (profile_sass if args.sass else profile)(c, args.out, ncu)


if __name__ == "__main__":
  main()
