"""Gate reports: a CSV per candidate, one markdown summary, plots, and a JSON record.

matplotlib is imported only when plots are written (it is in the `report` extra).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import pathlib
import platform
import re
from collections.abc import Sequence

from mxjax.eval import gate_core as G
from mxjax.eval.gate import CandidateResult, GateResult

CSV_FIELDS = [f.name for f in dataclasses.fields(G.Decision)]


def slug(name: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "candidate"


def verdict(p: bool | None) -> str:
  return "—" if p is None else ("PASS" if p else "FAIL")


def _cell(d: G.Decision) -> str:
  """'+1.23% [+0.9, +1.6] PASS' (ratio metrics in %, absolute ones as they are)."""
  if d.scale == "ratio":
    body = f"{100 * d.delta:+.3g}% [{100 * d.ci_low:+.3g}, {100 * d.ci_high:+.3g}]"
  else:
    body = f"{d.delta:+.4g} [{d.ci_low:+.3g}, {d.ci_high:+.3g}]"
  return f"{body} {verdict(d.passed)}"


def _key(d: G.Decision) -> str:
  return f"{d.metric}/{d.category or 'all'}"


def summary_table(result: GateResult) -> str:
  """Markdown table: one row per candidate, one column per (metric, category)."""
  keys = []
  for c in result.candidates:
    for d in c.decisions:
      if _key(d) not in keys:
        keys.append(_key(d))
  lines = ["| candidate | knobs | overall | s | " + " | ".join(keys) + " |",
           "|" + "---|" * (4 + len(keys))]
  for c in result.candidates:
    by = {_key(d): d for d in c.decisions}
    cells = [_cell(by[k]) if k in by else "" for k in keys]
    lines.append(f"| {c.candidate.name} | {c.candidate.describe()} | {verdict(c.passed)} |"
                 f" {c.seconds:.0f} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_csv(c: CandidateResult, path: pathlib.Path) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["candidate", "knobs"] + CSV_FIELDS)
    w.writeheader()
    for d in c.decisions:
      w.writerow({"candidate": c.candidate.name, "knobs": c.candidate.describe(),
                  **dataclasses.asdict(d)})


def markdown(result: GateResult, plots: Sequence[str] = ()) -> str:
  cfg = result.config
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  try:
    import jax
    env = f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {platform.node()}"
  except Exception:  # pylint: disable=broad-except
    env = platform.node()
  out = [f"# Parity gate: {result.model}", "",
         f"{now}; {env}; {result.seconds:.0f} s.", "",
         "## Verdicts", "",
         f"Budget = {cfg.k:g} x noise floor (eval-set resamples of the reference, "
         f"{cfg.noise_resamples} bootstrap resamples)"
         + (f", intersected with stated budgets {dict(cfg.budgets)}" if cfg.budgets else "")
         + f". PASS iff the {int(100 * (1 - cfg.alpha))}% paired-bootstrap upper bound of the "
         "degradation d is within the budget (exact comparison). Cells: d [CI] verdict; "
         "perplexity d = PPL_c / PPL_r - 1 in %; KL in nats/token (lower is better); top-1 and "
         "accuracies as fractions (d = reference - candidate). '—': reported, not gated.", "",
         summary_table(result), "## Reference and noise floors", "",
         "| metric | reference | noise floor (scale of d) |", "|---|---|---|"]
  for k, v in result.reference.items():
    nz = result.noise.get(k)
    out.append(f"| {k} | {v:.6g} | {'—' if nz is None else f'{nz:.4g}'} |")
  out += ["", "## Protocol", ""]
  out += [f"- {p.describe()}" for p in result.protocols]
  out += [f"- bootstrap units: chunks of {cfg.unit_tokens} scored tokens; "
          f"{cfg.n_resamples} paired resamples; seed {cfg.seed}",
          "- one knob at a time: recipes that turn two or more knobs also run each knob alone "
          "(rows marked [... only])"]
  out += [f"- {n}" for n in result.notes]
  out += ["", "## Flipped examples (sampled)", ""]
  for c in result.candidates:
    if not c.flips:
      continue
    out.append(f"**{c.candidate.name}**")
    out.append("")
    for f in c.flips:
      ctx = f["context"].replace("\n", " ").replace("|", "/")
      out.append(f"- {f['kind']} at {f['where']}: …{ctx!r} → reference {f['reference']!r}, "
                 f"candidate {f['candidate']!r} (truth {f['truth']!r})")
    out.append("")
  if plots:
    out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
  return "\n".join(out) + "\n"


def plot_deltas(result: GateResult, path: pathlib.Path) -> list[str]:
  """One panel per (metric, category): d with its CI per candidate, and the budget."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = []
  for c in result.candidates:
    for d in c.decisions:
      if _key(d) not in keys:
        keys.append(_key(d))
  if not keys:
    return []
  n = len(keys)
  cols = min(3, n)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 0.45 * len(result.candidates) * rows
                                                + 1.5 * rows), squeeze=False)
  names = [c.candidate.name for c in result.candidates]
  for ax, key in zip(axes.ravel(), keys):
    for i, c in enumerate(result.candidates):
      d = next((d for d in c.decisions if _key(d) == key), None)
      if d is None:
        continue
      color = {True: "tab:green", False: "tab:red", None: "tab:gray"}[d.passed]
      ax.errorbar([d.delta], [i], xerr=[[d.delta - d.ci_low], [d.ci_high - d.delta]], fmt="o",
                  color=color, capsize=3)
      if d.budget is not None:
        ax.plot([d.budget], [i], "|", color="black", markersize=12)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_title(f"{key}: degradation d (| = budget)", fontsize=9)
    ax.invert_yaxis()
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return [path.name]


def to_json(result: GateResult) -> dict:
  return {
      "model": result.model,
      "config": {k: (dict(v) if k == "budgets" else v)
                 for k, v in dataclasses.asdict(result.config).items()},
      "protocols": [dataclasses.asdict(p) for p in result.protocols],
      "noise": result.noise, "reference": result.reference, "notes": result.notes,
      "seconds": result.seconds,
      "candidates": [{"name": c.candidate.name, "knobs": c.candidate.describe(),
                      "parent": c.candidate.parent, "knob": c.candidate.knob,
                      "passed": c.passed,
                      "decisions": [dataclasses.asdict(d) for d in c.decisions],
                      "flips": c.flips} for c in result.candidates],
  }


def write_reports(result: GateResult, out_dir: str | pathlib.Path, *, plots: bool = True
                  ) -> dict[str, list[str]]:
  """Writes `gate_<candidate>.csv` per candidate, `summary.md`, `result.json` and
  `deltas.png` (when matplotlib is installed and `plots`) into `out_dir`.

  Returns:
    {"csv": [...], "markdown": [...], "json": [...], "plots": [...]} file names written.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  written: dict[str, list[str]] = {"csv": [], "markdown": [], "json": [], "plots": []}
  for c in result.candidates:
    p = out / f"gate_{slug(c.candidate.name)}.csv"
    write_csv(c, p)
    written["csv"].append(p.name)
  if plots:
    try:
      written["plots"] = plot_deltas(result, out / "deltas.png")
    except ImportError:
      result.notes.append("plots skipped: matplotlib is not installed (pip install "
                          "'mxjax[report]')")
  (out / "summary.md").write_text(markdown(result, written["plots"]))
  written["markdown"].append("summary.md")
  (out / "result.json").write_text(json.dumps(to_json(result), indent=1, default=str) + "\n")
  written["json"].append("result.json")
  return written
