"""Hardware counters of one kernel launch, with Nsight Compute (ncu), on the GPU machine.

The benchmarks time kernels; this says why a kernel takes that time: DRAM and SM throughput as
a fraction of peak, warp stall reasons, issue-slot use, registers, occupancy. One case a run:

  PYTHONPATH=. python3 experiments/profile_kernels.py --case wo_int4_m1 --out $OUT

runs itself again under `ncu --clock-control none` (the device notes: leave the clocks alone),
captures the third launch of the case's Mosaic GPU kernel (two warm-up launches first), and
writes `profile_<case>.md` (every metric, by section; ncu's raw CSV, `profile_<case>.csv`,
only when it could not be parsed). `--case a,b` profiles several in turn (the device tool returns at most 8 files a
call: 4 cases). ncu replays the kernel once per counter pass, so a case takes seconds to a
minute.
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
# `wo_matmul_mosaic_gpu` / `wo_gemm_mosaic_gpu`; quant cases `quantize_mosaic_gpu` on (M, K).
CASES = {
    "wo_int4_m1": ("wo", "int4", 1, 8192, 28672),
    "wo_int4_m1_load_only": ("wo_load_only", "int4", 1, 8192, 28672),
    "wo_mxfp4_m1": ("wo", "mxfp4", 1, 8192, 28672),
    "wo_nf4_m1": ("wo", "nf4_g64", 1, 8192, 28672),
    "wo_mxfp4_m1024": ("wo", "mxfp4", 1024, 8192, 28672),
    "quant_mxfp8": ("quant", "mxfp8_e4m3", 8192, 8192, None),
    "quant_mxfp4": ("quant", "mxfp4", 8192, 8192, None),
    "quant_nvfp4": ("quant", "nvfp4", 8192, 8192, None),
    "quant_int4": ("quant", "int4_g128", 8192, 8192, None),
}


def run_case(case: str, launches: int = 3) -> None:
  """Runs the case's kernel `launches` times (under ncu, in the child process)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  what, spec, m, k, n = CASES[case]
  key = jax.random.key(0)
  if what == "quant":
    from pallas_kernels.quantize import mosaic_gpu as QG  # pylint: disable=g-import-not-at-top
    x = jax.random.normal(key, (m, k), jnp.float32).astype(jnp.bfloat16)
    fn, args = jax.jit(lambda x: QG.quantize_mosaic_gpu(x, spec)), (x,)
  else:
    import bench_kernels as B  # pylint: disable=g-import-not-at-top
    from pallas_kernels.wo_matmul import layout as L  # pylint: disable=g-import-not-at-top
    from pallas_kernels.wo_matmul import mosaic_gpu as WG  # pylint: disable=g-import-not-at-top
    from pallas_kernels.wo_matmul import mosaic_gpu_gemm as WGG  # pylint: disable=g-import-not-at-top
    fmt, grp = B.parse_format(spec)
    codes, scale, extra = B.make_int4(key, k, n, fmt, grp or k)
    pw = L.repack(codes, scale, fmt=fmt, group=grp or k, **B.repack_kw(fmt, extra))
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
      rows.append(dict(kernel=r.get("Kernel Name", ""), section=r.get("Section Name", ""),
                       metric=r["Metric Name"], unit=r.get("Metric Unit", ""),
                       value=r.get("Metric Value", "")))
  return rows


def to_markdown(case: str, rows: list[dict]) -> str:
  kernels = sorted({r["kernel"] for r in rows})
  out = [f"# ncu profile: {case} ({CASES[case]})", "", f"kernel: {', '.join(kernels)}", "",
         "| section | metric | value | unit |", "|---|---|---|---|"]
  out += [f"| {r['section']} | {r['metric']} | {r['value']} | {r['unit']} |" for r in rows]
  return "\n".join(out) + "\n"


def profile(case: str, out: str, ncu: str) -> None:
  cmd = [ncu, "--clock-control", "none", "--target-processes", "all", "-k", "regex:mosaic",
         "--launch-skip", "2", "--launch-count", "1", "--csv", "--page", "details"]
  for s in SECTIONS:
    cmd += ["--section", s]
  cmd += [sys.executable, os.path.abspath(__file__), "--child", case]
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  rows = parse_details(res.stdout)
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


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--case", default="wo_int4_m1", help=f"comma-separated, from {sorted(CASES)}")
  ap.add_argument("--out", default=os.environ.get("OUT", "."))
  ap.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    run_case(args.child)
    return
  ncu = next((p for p in NCU_PATHS if shutil.which(p) or os.path.exists(p)), None)
  if ncu is None:
    raise SystemExit(f"ncu not found (looked for {NCU_PATHS})")
  cases = args.case.split(",")
  unknown = [c for c in cases if c not in CASES]
  if unknown:
    raise SystemExit(f"unknown case(s) {unknown}: choose from {sorted(CASES)}")
  for c in cases:
    profile(c, args.out, ncu)


if __name__ == "__main__":
  main()
