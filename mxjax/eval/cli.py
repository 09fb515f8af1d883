"""`mxjax gate`, `mxjax ladder` and `mxjax plan`: subcommands the `mxjax` CLI registers.

Each `add_*_parser(subparsers)` adds its subparser and sets `func` to a function of the parsed
arguments returning an exit status (0: ran and, for the gate, every candidate passed or was not
gated; 1: a candidate failed). The zoo and data registry of `experiments/` are imported only
when a command needs them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

DEFAULT_MODEL = "smollm2-135m-instruct"
MC_TASKS = ("hyperbaton", "causal_judgment", "navigate", "date_understanding")


def _budgets(items) -> dict[str, str]:
  out = {}
  for it in items or []:
    if "=" not in it:
      raise argparse.ArgumentTypeError(f"budget {it!r}: write metric=value, e.g. ppl=0.02")
    k, v = it.split("=", 1)
    out[k.strip()] = v.strip()
  return out


DEFAULT_CORPORA = ("ptb", "wikipedia")


def _corpora(names, max_tokens, required: bool = True):
  """({corpus: (text, how it was joined)}, notes) for the named corpora. A corpus whose source
  cannot be fetched (`registry.FetchError`) ends the run when `required` (the user named it);
  otherwise (the defaults) it is left out, and a note says so and why (it goes into the report);
  with none left the run ends."""
  from experiments.data import corpora
  from experiments.data.registry import FetchError

  # Enough text for max_tokens (about 4 characters a token in English, doubled for safety).
  cut = None if max_tokens is None else max_tokens * 8
  out, notes = {}, []
  for n in names:
    if n not in DEFAULT_CORPORA:
      raise SystemExit(f"unknown corpus {n!r}: choose {', '.join(DEFAULT_CORPORA)}")
    try:
      if n == "ptb":
        out["ptb/test"] = (corpora.ptb_text("test")[:cut],
                           "' ' (GPTQ protocol: stripped lines joined by single spaces)")
      else:
        paras = None if cut is None else max(4, cut // 400)
        out["wikipedia"] = (corpora.wikipedia_text(paras)[:cut],
                            "'\\n\\n' (SQuAD v1.1 dev paragraphs of 48 Wikipedia articles)")
    except FetchError as e:
      if required:
        raise
      lines = str(e).splitlines()  # pip's own last error line says why, where there is one
      why = next((ln for ln in reversed(lines) if ln.startswith("ERROR:")), lines[0])
      notes.append(f"corpus {n} left out: its source could not be fetched ({why}); name it "
                   "with --corpora to make that an error")
      print(f"mxjax gate: {notes[-1]}", file=sys.stderr, flush=True)
  if not out:
    raise SystemExit("mxjax gate: no corpus could be fetched:\n" + "\n".join(notes))
  return out, notes


def cmd_gate(args) -> int:
  from mxjax.eval import gate as gate_lib
  from mxjax.eval import report

  kw = dict(gate_lib.PRESETS[args.preset])
  for name in ("window", "stride", "max_tokens", "unit_tokens", "mc_items", "passkey_trials"):
    v = getattr(args, name)
    if v is not None:
      kw[name] = v
  if args.passkey_contexts:
    kw["passkey_contexts"] = tuple(args.passkey_contexts)
  if args.metrics:
    kw["metrics"] = tuple(args.metrics)
  kw.setdefault("stride", kw.get("window"))
  if args.window is not None and args.stride is None:
    kw["stride"] = args.window
  cfg = gate_lib.GateConfig(recipes=tuple(args.recipes), k=args.k, budgets=_budgets(args.budget),
                            single_axis=not args.no_single_axis, seed=args.seed, **kw)
  from experiments.data import corpora as data
  from experiments.models import zoo

  print(f"mxjax gate: loading {args.model} ...", file=sys.stderr, flush=True)
  model, tok, _ = zoo.load(args.model)
  notes = [n for n in [zoo.caveat(args.model)] if n]
  mc = None
  if "mc" in cfg.metrics:
    mc = {t: data.bigbench_task(t) for t in args.mc_tasks}
  filler = None
  if "passkey" in cfg.metrics:
    filler = "\n\n".join(data.paul_graham_essays().values())
  texts, left_out = _corpora(args.corpora or DEFAULT_CORPORA, cfg.max_tokens,
                             required=args.corpora is not None)
  res = gate_lib.run_gate(model, tok, texts, cfg, model_name=args.model, mc_tasks=mc,
                          passkey_filler=filler, notes=notes + left_out)
  if args.out:
    files = report.write_reports(res, args.out, plots=not args.no_plots)
    print(f"wrote {sum(len(v) for v in files.values())} files to {args.out}", file=sys.stderr)
  print(report.summary_table(res))
  for k, v in res.reference.items():
    nz = res.noise.get(k)
    print(f"reference {k} = {v:.4f}" + ("" if nz is None else f" (noise floor {nz:.4g})"))
  print(f"{res.seconds:.0f} s")
  return 0 if all(c.passed is not False for c in res.candidates) else 1


def add_gate_parser(subparsers) -> argparse.ArgumentParser:
  from mxjax.eval.gate import DEFAULT_RECIPES, METRICS, PRESETS

  p = subparsers.add_parser(
      "gate", help="parity gate: candidates vs a BF16 reference, per metric, with budgets",
      description="Runs a BF16 reference and each recipe (plus the single-axis runs of "
      "multi-knob recipes) on the same inputs; PASS/FAIL per metric with paired-bootstrap "
      "intervals against k x the reference's noise floor (and any stated budget).")
  p.add_argument("--model", default=DEFAULT_MODEL, help="zoo model (experiments.models.zoo)")
  p.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES),
                 help="recipe strings (mxjax.nn grammar), e.g. 'NVFP4 W4A4' 'FP8 KV'")
  p.add_argument("--metrics", nargs="+", choices=METRICS, help="default: the preset's")
  p.add_argument("--budget", nargs="*", metavar="METRIC=D",
                 help="stated budgets on the degradation d, e.g. ppl=0.02 kl=0.05 top1=0.05")
  p.add_argument("--k", type=float, default=3.0, help="budget = k x noise floor (default 3)")
  p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
  p.add_argument("--corpora", nargs="+", choices=DEFAULT_CORPORA,
                 help="default: both, leaving out (with a note) one whose source cannot be "
                 "fetched")
  p.add_argument("--window", type=int)
  p.add_argument("--stride", type=int)
  p.add_argument("--max-tokens", type=int, help="tokens per corpus")
  p.add_argument("--unit-tokens", type=int, help="tokens per bootstrap unit")
  p.add_argument("--mc-tasks", nargs="+", default=list(MC_TASKS))
  p.add_argument("--mc-items", type=int)
  p.add_argument("--passkey-contexts", type=int, nargs="+", help="context lengths (tokens)")
  p.add_argument("--passkey-trials", type=int, help="trials per (context, depth)")
  p.add_argument("--no-single-axis", action="store_true")
  p.add_argument("--no-plots", action="store_true")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", help="folder for the CSVs, summary.md, result.json and plots")
  p.set_defaults(func=cmd_gate)
  return p


def _ladder_groups(model_name: str, tokens: int, synthetic: bool):
  import jax
  import numpy as np

  if synthetic:
    kg, kt = jax.random.split(jax.random.key(0))
    return {"gaussian": {"x": jax.random.normal(kg, (256, 1024))},
            "student_t3": {"x": jax.random.t(kt, 3.0, (256, 1024))}}, []
  from flax import nnx

  from experiments.data import corpora
  from experiments.models import zoo
  from mxjax.analysis import record_linear_inputs
  from mxjax.tree import path_str

  model, tok, _ = zoo.load(model_name)
  weights = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
    p = path_str(path).removesuffix("/value")
    if getattr(leaf, "ndim", 0) == 2 and p.endswith("kernel"):
      weights[p] = (leaf, 0)  # (in, out): blocks along the input axis
  ids = tok.encode(corpora.ptb_text("test")[: tokens * 8], add_bos=False)[:tokens]
  with record_linear_inputs(model) as store:
    model(jax.numpy.asarray(np.asarray(ids, np.int32)[None]))
  acts = {p: (np.concatenate(v), -1) for p, v in store.items()}
  notes = [n for n in [zoo.caveat(model_name)] if n]
  return {"weights": weights, "activations": acts}, notes


def cmd_ladder(args) -> int:
  from mxjax import analysis

  groups, notes = _ladder_groups(args.model, args.tokens, args.synthetic)
  rows = analysis.precision_ladder(groups, args.schemes)
  md = analysis.ladder_markdown(rows)
  study = [analysis.scale_format_study(g, t) for g, t in groups.items()]
  lines = ["", "E4M3 vs E8M0 block scales (E2M1 elements, blocks of 16):", "",
           "| group | MSE e4m3 (NVFP4) | MSE e8m0 floor | MSE e8m0 rceil | MSE mxfp4 b32 |"
           " reduction vs floor | vs rceil |", "|---|---|---|---|---|---|---|"]
  for s in study:
    m = s.mse
    lines.append(f"| {s.group} | {m['e4m3_b16']:.4g} | {m['e8m0_floor_b16']:.4g} |"
                 f" {m['e8m0_rceil_b16']:.4g} | {m['mxfp4_b32']:.4g} |"
                 f" {100 * s.reduction_vs_floor:.1f}% | {100 * s.reduction_vs_rceil:.1f}% |")
  pub = analysis.NVIDIA_PUBLISHED
  lines.append(f"| NVIDIA (published, one block) | {pub['e4m3_mse']} | {pub['e8m0_mse']} | | |"
               f" {100 * pub['reduction']:.1f}% | |")
  text = md + "\n".join(lines) + "\n" + "".join(f"\nNote: {n}\n" for n in notes)
  print(text)
  if args.out:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder.md").write_text(text)
    (out / "ladder.json").write_text(json.dumps(
        {"rows": [r.as_dict() for r in rows],
         "scale_study": [s.__dict__ for s in study], "notes": notes}, indent=1, default=str))
  return 0


def add_ladder_parser(subparsers) -> argparse.ArgumentParser:
  from mxjax.analysis import DEFAULT_LADDER

  p = subparsers.add_parser(
      "ladder", help="precision ladder: every format's error on a model's weights/activations",
      description="Error metrics (SNR, ENOB, MSE, max errors, clipped and underflowed "
      "fractions, stored bits/value) of each scheme on the linear weights and the activations "
      "entering them, plus the E4M3-vs-E8M0 block-scale study.")
  p.add_argument("--model", default=DEFAULT_MODEL)
  p.add_argument("--schemes", nargs="+", default=list(DEFAULT_LADDER))
  p.add_argument("--tokens", type=int, default=128, help="PTB tokens run to capture activations")
  p.add_argument("--synthetic", action="store_true",
                 help="Gaussian and Student-t data instead of a model (no download)")
  p.add_argument("--out")
  p.set_defaults(func=cmd_ladder)
  return p


def cmd_plan(args) -> int:
  from mxjax.analysis import planner
  from mxjax.eval.simulate import candidate_from_recipe

  if args.model in planner.MODELS:
    shape = planner.get_model_shape(args.model)
  else:
    from experiments.models import zoo  # a zoo model: read its config

    _, _, cfg = zoo.load(args.model)
    shape = planner.ModelShape.from_llama_config(cfg, name=args.model)
  if args.recipes:
    recipes = []
    for r in args.recipes:
      c = candidate_from_recipe(r)
      recipes.append(planner.PlanRecipe(name=r, weights=c.weights, activations=c.activations,
                                        kv=c.kv))
  else:
    recipes = list(planner.DEFAULT_RECIPES)
  plans = planner.plan_table(shape, recipes, args.accelerators, context=args.context,
                             batch=args.batch, reserve_frac=args.reserve)
  md = planner.plans_markdown(plans)
  print(md)
  from mxjax.analysis import ACCELERATORS

  print("Sources:")
  for name in args.accelerators:
    a = ACCELERATORS[planner.get_accelerator(name).name]
    print(f"- {a.name}: {a.source} ({a.note})")
  if args.out:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.md").write_text(md)
  return 0


def add_plan_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "plan", help="memory and roofline planner per recipe and accelerator",
      description="Bytes of weights and KV per recipe, sequences that fit at a context length, "
      "and the arithmetic intensity and bound of prefill and decode on H100, H200, B200, "
      "MI355X and TPU v5p (published dense peak rates and bandwidths, sources printed).")
  p.add_argument("--model", default="llama-3.1-8b",
                 help="a planner shape (smollm2-135m, llama-3.1-8b, llama-3.1-70b) or zoo model")
  p.add_argument("--recipes", nargs="+", help="recipe strings; default: the planner's set")
  p.add_argument("--accelerators", nargs="+", default=["H100", "H200", "B200", "MI355X",
                                                        "TPUv5p"])
  p.add_argument("--context", type=int, default=8192)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--reserve", type=float, default=0.0, help="fraction of HBM held back")
  p.add_argument("--out")
  p.set_defaults(func=cmd_plan)
  return p


def main(argv=None) -> int:
  """Standalone entry (`python -m mxjax.eval.cli gate ...`) until `mxjax.cli` registers these."""
  ap = argparse.ArgumentParser(prog="mxjax")
  sub = ap.add_subparsers(dest="command", required=True)
  add_gate_parser(sub)
  add_ladder_parser(sub)
  add_plan_parser(sub)
  args = ap.parse_args(argv)
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
