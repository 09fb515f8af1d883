"""Every config a benchmark run timed, row by row, against the row's first config (`{}`, the
default, where the run lists it first): the table a gate is opened from.

`bench_kernels.py --configs '[{}, {"fused_sum": true}]'` keeps each config's time and check in
a row's `configs_timed` (and, for a run cut off mid-row, under `in_progress`), but its tables
show only the fastest. Whether an option is correct everywhere and faster where it should
become the default is read here:

  python experiments/bench_configs_table.py experiments/results/kernels_wo_s20_fused.json ...

One markdown table a file: case, config, us, time against the row's first config, the us of
XLA's kernels around the Mosaic one (from the config's own profile of one call, since session
24; - where none was recorded), the us of the config's pipeline with an empty body (runs with
`--load-split`; - elsewhere), the check (wo_matmul: relative error against the f32 reference,
wrong at 1e-2 or NaN; quantize: mismatches on the random / special / tie / NaN-Inf tensors),
or the error the config raised.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bench_kernels_standing import around_us


def _case(row: dict) -> str:
  if "fmt" in row:
    return f"{row['fmt']} {row['K']}x{row['N']} M={row['M']}"
  return f"{row['scheme']} {row['M']}x{row['K']}"


def _check(row: dict, entry: dict) -> str:
  """The config's correctness as its run recorded it."""
  if "rel_err" in entry and entry["rel_err"] is not None:
    err = entry["rel_err"]
    return f"rel err {err:.2g}" + ("" if err < 1e-2 else " WRONG")
  for c in row.get("mismatch_by_config", []):  # quantize: bit for bit, before the timing
    if c["config"] == entry["config"]:
      bad = sum(c["mismatches"])
      return "bit-exact" if bad == 0 else f"{c['mismatches']} mismatches WRONG"
  if "rel_err" in row:  # a one-config wo row: the row's own check
    return f"rel err {row['rel_err']:.2g} (row)"
  return "-"


def config_rows(res: dict) -> list[tuple[str, str, str, str, str, str, str]]:
  """(case, config, us, against the first config, XLA around us, load-only us, check) for
  every timed config of every row, the row in progress last (marked)."""
  rows = [r for key in ("wo_matmul", "fused_quantize") for r in res.get(key, [])]
  if "in_progress" in res:
    rows.append(dict(res["in_progress"], _partial=True))
  out = []
  for r in rows:
    case = _case(r) + (" (cut off)" if r.get("_partial") else "")
    one = dict(config=r.get("config"), time_s=r.get("kernel_s"), kernel_us=r.get("kernel_us"),
               load_only_s=r.get("load_only_s"))
    timed = r.get("configs_timed") or ([one] if "kernel_s" in r else [])
    first = next((t["time_s"] for t in timed[:1] if "time_s" in t), None)
    for t in timed:
      cfg = json.dumps(t["config"], sort_keys=True)
      if "time_s" not in t:
        out.append((case, cfg, "-", "-", "-", "-", f"error: {t.get('error', '?')[:80]}"))
        continue
      us = t["time_s"] * 1e6
      vs = "-" if not first else f"{t['time_s'] / first:.3f}x"
      # older runs profiled only the row's fastest config
      around = around_us(t if "kernel_us" in t or t["config"] != r.get("config") else r)
      # a timed config's pipeline alone is in its entry, the row's best config's in the row
      load = t.get("load_only_s") or (r.get("load_only_s") if t["config"] == r.get("config")
                                      else None)
      out.append((case, cfg, f"{us:.1f}", vs, "-" if around is None else f"{around:.1f}",
                  "-" if load is None else f"{load * 1e6:.1f}", _check(r, t)))
  return out


def markdown(path: str, res: dict) -> str:
  lines = [f"## {os.path.basename(path)}", "",
           f"{res.get('device', '?')}, {res.get('date', '?')[:19]}, jax {res.get('jax_version', '?')}",
           "", "| case | config | us | vs first | XLA around us | load-only us | check |",
           "|---|---|---|---|---|---|---|"]
  lines += [f"| {' | '.join(r)} |" for r in config_rows(res)]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("files", nargs="+", help="kernels_*.json written by bench_kernels.py")
  args = ap.parse_args(argv)
  for path in args.files:
    with open(path) as f:
      res = json.load(f)
    sys.stdout.write(markdown(path, res) + "\n")


if __name__ == "__main__":
  main()
