"""Where a decode config's time goes before its first result: lowering, compiling, running.

The benchmark (`bench_kernels.py`) compiles, checks and times each config in one step, so a config
that never finishes within its `timeout` leaves no trace of why: INT4 g128 with four compute
warpgroups was cut off after 90-190 s in sessions 21, 23 and 24, where two warpgroups take 5 s
to compile and check. Session 25's probe found it compiled in 6 s and never ran (H100,
`probe_int4_m64_s25_h100.jsonl`): its register split cannot fit (`decode_plan.register_split`;
refused since). This runs each config in a child process of its own,
cut off after `--limit-s`, and the child prints (and logs) each phase as it ends:

  PYTHONPATH=.:experiments python3 experiments/probe_config.py --format int4 --m 64 \
    --configs '[{"tile_n": 256, "gps": 1, "steps": 4, "compute_wgs": 2, "stream_k": 1}]' \
    --limit-s 60 --out $OUT

so that the last phase before a cut-off names the one that hung: `lowered` (Pallas / Mosaic
lowering, Python), `compiled` (Mosaic's passes and ptxas), `ran` (the kernel itself: a deadlock
never returns), then `checked` (the result against the reference). One JSON line a phase, in
`probe_<format>_m<M>.jsonl`, and a `cut_off` or `error` line naming the last phase reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def phases(fmt_spec: str, m: int, k: int, n: int, config: dict, log: str | None = None) -> None:
  """Builds the benchmark's weight for `fmt_spec` (K, N), stores it as `config` asks, and
  lowers, compiles, runs and checks `wo_matmul_mosaic_gpu` with the config's knobs, printing
  each phase's wall seconds (one JSON line a phase, appended to `log` too)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  import bench_kernels as B  # pylint: disable=g-import-not-at-top
  import bench_kernels_common as C  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import mosaic_gpu as WG  # pylint: disable=g-import-not-at-top
  from pallas_kernels.wo_matmul import reference as WR  # pylint: disable=g-import-not-at-top

  def say(what: str, t0: float, **extra) -> float:
    line = json.dumps(dict(phase=what, wall_s=round(time.perf_counter() - t0, 2), **extra))
    print(line, flush=True)
    if log:
      with open(log, "a") as f:
        f.write(line + "\n")
    return time.perf_counter()

  say("start", time.perf_counter(), format=fmt_spec, m=m, k=k, n=n, config=config,
      device=jax.devices()[0].device_kind, jax=jax.__version__)

  t = time.perf_counter()
  key = jax.random.key(0)
  *_, pw = B.k_order_weight(key, k, n, fmt_spec)
  x = jax.random.normal(jax.random.fold_in(key, 1), (m, k), jnp.bfloat16)
  x, stored = B._stored(config, (x, pw))  # pylint: disable=protected-access
  jax.block_until_ready((x, stored))
  t = say("inputs", t, plan=B.resolved_plan(config, (x, stored))["plan"])
  knobs = B._knobs(config)  # pylint: disable=protected-access
  # bf16 out, as the benchmark times it (the fused sum packs bf16 y tiles differently)
  fn = jax.jit(lambda x, p: WG.wo_matmul_mosaic_gpu(x, p, allow_unverified=True, **knobs))
  lowered = fn.lower(x, stored)
  t = say("lowered", t)
  compiled = lowered.compile()
  t = say("compiled", t)
  out = jax.block_until_ready(compiled(x, stored))
  t = say("ran", t)
  ref = WR.wo_matmul_reference(x, pw, out_dtype=jnp.float32)
  say("checked", t, rel_err=float(C.rel_err(out.astype(jnp.float32), ref)))


def probe(fmt_spec: str, m: int, shape: str, config: dict, limit_s: float, log: str) -> str:
  """Runs `phases` for one config in a child process cut off after `limit_s`; returns the
  last phase it reached (and logs a `cut_off` line when it was cut off)."""
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--format", fmt_spec,
         "--m", str(m), "--shape", shape, "--configs", json.dumps([config]), "--out", log]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, check=False)
    out, cut = proc.stdout, False
  except subprocess.TimeoutExpired as e:
    out, cut = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), True
  reached = [json.loads(ln)["phase"] for ln in out.splitlines() if ln.startswith("{")]
  print(out, end="", flush=True)
  last = reached[-1] if reached else "none"
  end = None
  if cut:
    end = dict(phase="cut_off", limit_s=limit_s, after=last, config=config)
  elif proc.returncode:  # the error's last line: which phase raised, and what
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception)\b", ln)]
    end = dict(phase="error", after=last, error=(raised or lines or [""])[-1], config=config)
    print("\n".join(lines[-25:]), flush=True)  # the traceback's end, for a lowering error
  if end:
    print(json.dumps(end), flush=True)
    with open(log, "a") as f:
      f.write(json.dumps(end) + "\n")
  return last


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--format", default="int4", help="a bench_kernels format, e.g. int4, mxfp4")
  ap.add_argument("--m", type=int, default=64)
  ap.add_argument("--shape", default="8192x28672", help="K x N")
  ap.add_argument("--configs", default="[{}]", help="bench_kernels --configs entries (JSON)")
  ap.add_argument("--limit-s", type=float, default=60.0, help="each config's cut-off")
  ap.add_argument("--out", default=".", help="folder for probe_<format>_m<M>.jsonl")
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args()
  k, n = map(int, args.shape.split("x"))
  configs = json.loads(args.configs)
  if args.child:  # --out is the log file itself here
    phases(args.format, args.m, k, n, configs[0], args.out)
    return
  os.makedirs(args.out, exist_ok=True)
  log = os.path.join(args.out, f"probe_{args.format}_m{args.m}.jsonl")
  for cfg in configs:
    probe(args.format, args.m, args.shape, cfg, args.limit_s, log)


if __name__ == "__main__":
  main()
