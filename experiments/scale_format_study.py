"""E4M3 vs E8M0 block scales for FP4 elements on real tensors, beside NVIDIA's 0.72 vs 0.08.

NVIDIA's NVFP4 introduction shows, for one illustrative block, MSE 0.72 with a power-of-two
(E8M0) scale against 0.08 with an E4M3 scale (-88%). Here the same comparison (E2M1 elements,
blocks of 16, amax scaling, RNE; only the scale format differs) runs over every linear weight
and every linear input of the zoo's models, grouped by projection, plus Gaussian and Student-t
controls. Writes `results/scale_format_<tag>.{md,json}`.

  python -m experiments.scale_format_study
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import re

import jax

from experiments.ladder_study import groups_for
from mxjax import analysis
from mxjax.analysis.scale_study import NVIDIA_PUBLISHED, NVIDIA_SOURCE

RESULTS = pathlib.Path(__file__).parent / "results"


def by_projection(tensors: dict) -> dict[str, dict]:
  """Groups {path: tensor} by the projection name in the path (q_proj, up_proj, query, ...)."""
  out: dict[str, dict] = {}
  for p, t in tensors.items():
    parts = [s for s in p.split("/") if not re.fullmatch(r"\d+|kernel|layers|layer", s)]
    key = parts[-1] if parts else p
    out.setdefault(key, {})[p] = t
  return out


def table(results) -> str:
  lines = ["| group | values | MSE E4M3 (NVFP4) | MSE E8M0 floor | MSE E8M0 rceil | NMSE E4M3 |"
           " NMSE E8M0 floor | reduction vs floor | vs rceil | MXFP4 (b32) MSE |",
           "|" + "---|" * 10]
  for r in results:
    m, n = r.mse, r.nmse
    lines.append(f"| {r.group} | {r.n} | {m['e4m3_b16']:.4g} | {m['e8m0_floor_b16']:.4g} |"
                 f" {m['e8m0_rceil_b16']:.4g} | {n['e4m3_b16']:.4g} | {n['e8m0_floor_b16']:.4g} |"
                 f" {100 * r.reduction_vs_floor:.1f}% | {100 * r.reduction_vs_rceil:.1f}% |"
                 f" {m['mxfp4_b32']:.4g} |")
  p = NVIDIA_PUBLISHED
  lines.append(f"| NVIDIA, published (one block) | 16 | {p['e4m3_mse']} | {p['e8m0_mse']} | | |"
               f" | {100 * p['reduction']:.1f}% | | |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "all-minilm-l6-v2"])
  ap.add_argument("--tokens", type=int, default=128)
  ap.add_argument("--out", default=str(RESULTS))
  args = ap.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  kg, kt = jax.random.split(jax.random.key(0))
  results = [analysis.scale_format_study("control: Gaussian", {"x": jax.random.normal(kg, (512, 1024))}),
             analysis.scale_format_study("control: Student-t (3 dof)",
                                         {"x": jax.random.t(kt, 3.0, (512, 1024))})]
  caveats = []
  for name in args.models:
    groups, caveat = groups_for(name, args.tokens)
    if caveat:
      caveats.append(caveat)
    for g, tensors in groups.items():
      results.append(analysis.scale_format_study(f"{name} {g} (all)", tensors))
      for proj, ts in by_projection(tensors).items():
        results.append(analysis.scale_format_study(f"{name} {g} {proj}", ts))
  md = (f"# E4M3 vs E8M0 block scales on real tensors\n\n{date}, jax {jax.__version__},"
        f" {jax.devices()[0].device_kind} ({platform.node()}). E2M1 elements, blocks of 16 along"
        f" the contraction axis, amax scaling, RNE: only the scale format differs (E4M3 under an"
        f" fp32 tensor scale = NVFP4; E8M0 with OCP `floor` or TE `rceil`). NMSE = MSE /"
        f" mean(x^2). Published: {NVIDIA_SOURCE}.\n\n" + table(results))
  md += "".join(f"\nCaveat: {c}\n" for c in caveats)
  (out / "scale_format_study.md").write_text(md)
  (out / "scale_format_study.json").write_text(json.dumps(
      {"date": date, "jax": jax.__version__, "published": NVIDIA_PUBLISHED,
       "source": NVIDIA_SOURCE, "caveats": caveats,
       "results": [r.__dict__ for r in results]}, indent=1))
  print(md)


if __name__ == "__main__":
  main()
