"""The precision ladder on the zoo's real weights and activations.

For each model: every linear kernel (blocks along its input axis) and the activations entering
every linear on a PTB test snippet; each scheme of the ladder pooled over a group. Writes
`results/ladder_<model>.{md,json,csv}` and `results/ladder_<model>.png` (SNR vs stored bits).

  python -m experiments.ladder_study --models smollm2-135m-instruct all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.data import corpora
from experiments.models import zoo
from mxjax import analysis
from mxjax.tree import path_str

RESULTS = pathlib.Path(__file__).parent / "results"


def groups_for(name: str, tokens: int):
  """{"weights": {...}, "activations": {...}} of zoo model `name`, and its caveat."""
  model, tok, _ = zoo.load(name)
  weights = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
    p = path_str(path).removesuffix("/value")
    if getattr(leaf, "ndim", 0) == 2 and p.endswith("kernel"):
      weights[p] = (leaf, 0)
  ids = np.asarray(tok.encode(corpora.ptb_text("test")[: tokens * 8], add_bos=False)[:tokens],
                   np.int32)
  with analysis.record_linear_inputs(model) as store:
    if zoo.MODELS[name].architecture == "bert":
      model(jnp.asarray(ids[None]), jnp.ones((1, len(ids)), jnp.int32))
    else:
      model(jnp.asarray(ids[None]))
  acts = {p: (np.concatenate(v), -1) for p, v in store.items()}
  return {"weights": weights, "activations": acts}, zoo.caveat(name)


def plot(rows, path: pathlib.Path, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for g, marker in (("weights", "o"), ("activations", "s")):
    rs = [r for r in rows if r.group == g and np.isfinite(r.stats.snr_db)]
    ax.scatter([r.stats.bits_per_value for r in rs], [r.stats.snr_db for r in rs],
               marker=marker, label=g)
    for r in rs:
      ax.annotate(r.stats.scheme, (r.stats.bits_per_value, r.stats.snr_db), fontsize=6,
                  xytext=(3, 2), textcoords="offset points")
  ax.set_xlabel("stored bits per value (scales and padding included)")
  ax.set_ylabel("SNR (dB)")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "all-minilm-l6-v2"])
  ap.add_argument("--tokens", type=int, default=128)
  ap.add_argument("--out", default=str(RESULTS))
  args = ap.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "jax": jax.__version__, "device": f"{jax.devices()[0].device_kind} ({platform.node()})",
          "tokens": args.tokens}
  for name in args.models:
    groups, caveat = groups_for(name, args.tokens)
    rows = analysis.precision_ladder(groups)
    md = (f"# Precision ladder: {name}\n\n{meta['date']}, jax {meta['jax']}, {meta['device']}."
          f" Weights: every linear kernel, blocks along its input axis. Activations: inputs of"
          f" every linear on the first {args.tokens} tokens of PTB test, blocks along the"
          f" feature axis. Pooled per group.\n\n" + analysis.ladder_markdown(rows))
    if caveat:
      md += (f"\nCaveat: {caveat} No row of this table uses the file's grid (block 32), so"
             " none is marked.\n")
    (out / f"ladder_{name}.md").write_text(md)
    (out / f"ladder_{name}.json").write_text(json.dumps(
        {**meta, "model": name, "caveat": caveat, "rows": [r.as_dict() for r in rows]},
        indent=1))
    with open(out / f"ladder_{name}.csv", "w", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(rows[0].as_dict()))
      w.writeheader()
      for r in rows:
        w.writerow(r.as_dict())
    plot(rows, out / f"ladder_{name}.png", f"{name}: SNR vs stored bits")
    print(md, flush=True)


if __name__ == "__main__":
  main()
