"""The parity gate: run a reference and candidates on the same inputs and decide per metric.

This module is wiring: it feeds token windows, multiple-choice items and passkey trials through
`simulate.Simulator`, collects per-unit values with `lm_metrics`, and asks `gate_core` for the
verdicts. Models and data are passed in (`run_gate`), so the gate runs on any NNX causal LM;
`mxjax.eval.cli` binds it to the model zoo and data registry of `experiments/`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mxjax.analysis._progress import progress_iter
from mxjax.eval import gate_core as G
from mxjax.eval import lm_metrics as M
from mxjax.eval.simulate import Candidate, Simulator, candidate_from_recipe, single_axis_runs

DEFAULT_RECIPES: tuple[str, ...] = (
    "FP8 weights and activations",
    "W4A16 int4_g128",
    "NVFP4 W4A4",
    "MXFP4 W4A4",
    "FP8 KV",
)
METRICS = ("ppl", "kl", "top1", "mc", "passkey")

PPL = G.MetricSpec(name="ppl", direction="lower", scale="ratio", aggregate=G.agg_exp_ratio,
                   description="token perplexity; d = PPL_c / PPL_r - 1")
KL = G.MetricSpec(name="kl", direction="lower", scale="absolute", aggregate=G.agg_ratio,
                  self_referential=True,
                  description="mean per-token KL(P_ref || P_cand), nats")
TOP1 = G.MetricSpec(name="top1", direction="higher", scale="absolute", aggregate=G.agg_ratio,
                    self_referential=True,
                    description="fraction of tokens whose argmax matches the reference")
MC = G.MetricSpec(name="mc", direction="higher", scale="absolute",
                  description="BIG-bench multiple-choice accuracy by summed log-likelihood")
PASSKEY = G.MetricSpec(name="passkey", direction="higher", scale="absolute",
                       description="passkey retrieval accuracy (teacher-forced argmax)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GateConfig:
  """What the gate runs.

  Attributes:
    recipes: candidate recipe strings (`mxjax.nn` grammar); the reference is always BF16.
    metrics: subset of METRICS.
    window, stride, max_tokens: perplexity protocol (tokens per corpus: max_tokens).
    unit_tokens: tokens per bootstrap unit (chunks of scored tokens).
    k: budget multiple of the noise floor.
    budgets: {metric: the user's budget on d} (decimal text is exact: {"ppl": "0.02"}).
    noise_resamples, n_resamples, alpha, seed: the bootstrap.
    single_axis: add the single-axis runs of multi-knob recipes.
    mc_items: items per BIG-bench task; passkey_contexts, passkey_depths, passkey_trials:
      passkey grid (trials per (context, depth)).
    n_flips: flipped examples sampled per candidate.
  """

  recipes: tuple[str, ...] = DEFAULT_RECIPES
  metrics: tuple[str, ...] = ("ppl", "kl", "top1")
  window: int = 1024
  stride: int = 1024
  max_tokens: int | None = 8192
  unit_tokens: int = 32
  k: float = 3.0
  budgets: Mapping[str, str] = dataclasses.field(default_factory=dict)
  noise_resamples: int = 200
  n_resamples: int = 1000
  alpha: float = 0.05
  seed: int = 0
  single_axis: bool = True
  mc_items: int = 40
  passkey_contexts: tuple[int, ...] = (256, 512, 1024)
  passkey_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
  passkey_trials: int = 2
  n_flips: int = 5

  def __post_init__(self):
    bad = set(self.metrics) - set(METRICS)
    if bad:
      raise ValueError(f"unknown metrics {sorted(bad)}; known: {METRICS}")
    if self.k <= 0 or not 0 < self.alpha < 1:
      raise ValueError("k must be > 0 and alpha in (0, 1)")
    unknown = set(self.budgets) - set(METRICS)
    if unknown:
      raise ValueError(f"budgets for unknown metrics {sorted(unknown)}")


PRESETS: dict[str, dict[str, Any]] = {
    # Finishes on a shared 2-core CPU in minutes: one window of 256 tokens per corpus.
    "quick": dict(window=256, stride=256, max_tokens=256, unit_tokens=16,
                  metrics=("ppl", "kl", "top1")),
    "standard": dict(window=1024, stride=1024, max_tokens=8192, unit_tokens=32,
                     metrics=("ppl", "kl", "top1", "mc", "passkey")),
}


@dataclasses.dataclass
class CandidateResult:
  """Everything measured for one candidate."""

  candidate: Candidate
  decisions: list[G.Decision]
  flips: list[dict[str, Any]]
  seconds: float

  @property
  def passed(self) -> bool | None:
    return G.overall(self.decisions)


@dataclasses.dataclass
class GateResult:
  """The gate's output: the reference's protocol and noise, and one result per candidate."""

  model: str
  config: GateConfig
  protocols: list[M.PerplexityProtocol]
  noise: dict[str, float | None]
  reference: dict[str, float]
  candidates: list[CandidateResult]
  notes: list[str]
  seconds: float


def _compare_fn():
  @jax.jit
  def compare(ref_logits, cand_logits, targets):
    return (M.token_nll(cand_logits, targets), M.kl_per_token(ref_logits, cand_logits),
            M.top1_agreement(ref_logits, cand_logits))
  return compare


def _lm_pass(sim, cands, corpora, tok, cfg, notes):
  """Per (corpus, candidate): per-token nll, kl, agree arrays; and the scored target ids."""
  compare = _compare_fn()
  bos = getattr(tok, "bos_id", None) if getattr(tok, "add_bos", False) else None
  per: dict[tuple[str, str], dict[str, list]] = {}
  streams, protocols = {}, []
  work = []
  for corpus, (text, joiner) in corpora.items():
    ids = np.asarray(tok.encode(text, add_bos=False), np.int32)
    if cfg.max_tokens is not None:
      ids = ids[: cfg.max_tokens]
    plan = M.window_plan(len(ids), cfg.window, cfg.stride)
    streams[corpus] = ids
    protocols.append(M.PerplexityProtocol(corpus=corpus, joiner=joiner, window=cfg.window,
                                          stride=cfg.stride, bos=bos is not None,
                                          max_tokens=cfg.max_tokens))
    work += [(corpus, w) for w in plan]
  ref = cands[0]
  # Flat (window, candidate) steps so the bar moves per forward pass; the reference comes first
  # in each window and its logits are kept for the candidates of that window.
  steps = [(corpus, w, c) for corpus, w in work for c in cands]
  ref_logits = x = targets = sel = None
  for corpus, (b, e, first), c in progress_iter(steps, desc="gate forwards"):
    if c is ref:
      ids = streams[corpus][b:e]
      off = 0
      if bos is not None:
        ids, off = np.concatenate([[bos], ids]).astype(np.int32), 1
      x = jnp.asarray(ids[None])
      targets = x[0, 1:]
      sel = np.arange(first - b, e - b) + off - 1  # logit rows predicting the scored targets
      ref_logits = sim.logits(ref, x)[0, :-1]
    t0 = time.time()
    cl = ref_logits if c is ref else sim.logits(c, x)[0, :-1]
    nll, kl, agree = (np.asarray(a)[sel] for a in compare(ref_logits, cl, targets))
    d = per.setdefault((corpus, c.name), {"nll": [], "kl": [], "agree": [], "pos": [],
                                          "ref_top": [], "cand_top": [], "seconds": 0.0})
    d["seconds"] += time.time() - t0
    d["nll"].append(nll)
    d["kl"].append(kl)
    d["agree"].append(agree)
    d["pos"].append(np.arange(first, e))
    if c is not ref:
      d["ref_top"].append(np.asarray(jnp.argmax(ref_logits, -1))[sel])
      d["cand_top"].append(np.asarray(jnp.argmax(cl, -1))[sel])
  out = {k: {n: (v if n == "seconds" else np.concatenate(v) if v else np.zeros(0))
             for n, v in d.items()} for k, d in per.items()}
  return out, streams, protocols


def _token_flips(tok, stream, d, n, seed, corpus):
  bad = np.flatnonzero(~d["agree"].astype(bool))
  if not bad.size:
    return []
  rng = np.random.default_rng(seed)
  out = []
  for i in sorted(rng.choice(bad, size=min(n, bad.size), replace=False)):
    pos = int(d["pos"][i])
    ctx = tok.decode([int(t) for t in stream[max(0, pos - 12):pos]])
    out.append({"kind": "top-1 flip", "where": f"{corpus} token {pos}", "context": ctx,
                "reference": tok.decode([int(d["ref_top"][i])]),
                "candidate": tok.decode([int(d["cand_top"][i])]),
                "truth": tok.decode([int(stream[pos])])})
  return out


def _padded_logits(sim, c, ids, bucket=64):
  n = len(ids)
  L = -(-n // bucket) * bucket
  x = np.zeros((1, L), np.int32)
  x[0, :n] = ids
  return sim.logits(c, jnp.asarray(x))[0, :n]


def _mc_pass(sim, cands, tok, mc_tasks, cfg, notes):
  """{task: {candidate: correct[bool per item]}}, items per task, chance per task."""
  res, items_by_task = {}, {}
  for task, items in mc_tasks.items():
    items = items[: cfg.mc_items]
    items_by_task[task] = items
    work = [(i, c) for i in range(len(items)) for c in cands]
    correct = {c.name: np.zeros(len(items), bool) for c in cands}
    for i, c in progress_iter(work, desc=f"mc {task}"):
      it = items[i]
      q = tok.encode(it.question, add_bos=getattr(tok, "add_bos", False))
      scores = []
      for ch in it.choices:
        a = tok.encode(" " + ch, add_bos=False)
        ids = np.asarray(q + a, np.int32)
        lg = _padded_logits(sim, c, ids)
        scores.append(float(M.continuation_logprob(lg, jnp.asarray(ids), len(q))))
      correct[c.name][i] = M.mc_correct(np.array(scores), it.answer)
    res[task] = correct
  return res, items_by_task


def _passkey_pass(sim, cands, tok, filler, cfg):
  rng = np.random.default_rng(cfg.seed)
  trials = []
  for ctx in cfg.passkey_contexts:
    for depth in cfg.passkey_depths:
      for _ in range(cfg.passkey_trials):
        key = str(int(rng.integers(10000, 99999)))
        trials.append(M.passkey_trial(tok, filler, context=ctx, depth=depth, key=key))
  got = {c.name: np.zeros(len(trials), bool) for c in cands}
  work = [(i, c) for i in range(len(trials)) for c in cands]
  for i, c in progress_iter(work, desc="passkey"):
    t = trials[i]
    got[c.name][i] = M.passkey_retrieved(sim.logits(c, jnp.asarray(t.ids[None]))[0], t)
  return got, trials


def _above_chance(correct: np.ndarray, chance: float) -> bool:
  """One-sided binomial z-test at 5%: accuracy above chance."""
  n = correct.size
  se = math.sqrt(max(chance * (1 - chance), 1e-12) / n)
  return float(correct.mean()) - chance > 1.645 * se


def run_gate(
    model: Any,
    tokenizer: Any,
    corpora: Mapping[str, tuple[str, str]],
    config: GateConfig = GateConfig(),
    *,
    model_name: str = "",
    mc_tasks: Mapping[str, Sequence[Any]] | None = None,
    passkey_filler: str | None = None,
    notes: Sequence[str] = (),
) -> GateResult:
  """Runs the gate.

  Args:
    model: an NNX causal LM ([B, T] int32 -> [B, T, V] logits).
    tokenizer: `encode(text, add_bos=...)`, `decode(ids)`, `bos_id`, `add_bos`.
    corpora: {name: (text, joiner description)} for perplexity, KL and top-1.
    config: a GateConfig.
    model_name: for reports.
    mc_tasks: {task: [items with question, choices, answer]} (metric "mc").
    passkey_filler: long filler text (metric "passkey").
    notes: lines to carry into the report (model caveats).

  Returns:
    A GateResult.
  """
  t0 = time.time()
  cfg = config
  notes = list(notes) + ["numerics simulated: quantize-dequantize (fake quant) of weights, "
                         "linear inputs and K/V; fp32 compute (see mxjax.eval.simulate)"]
  ref = Candidate(name="BF16 reference")
  cands = [ref]
  for r in cfg.recipes:
    c = candidate_from_recipe(r)
    if c.is_reference:
      continue
    cands.append(c)
    if cfg.single_axis:
      cands += single_axis_runs(c)
  sim = Simulator(model)
  results = {c.name: [] for c in cands[1:]}
  flips = {c.name: [] for c in cands[1:]}
  timing = {c.name: 0.0 for c in cands[1:]}
  noise: dict[str, float | None] = {}
  reference: dict[str, float] = {}
  protocols: list[M.PerplexityProtocol] = []
  kw = dict(k=cfg.k, n_resamples=cfg.n_resamples, alpha=cfg.alpha, seed=cfg.seed)

  def gate(spec, cat, ru, cu, c, nz):
    results[c.name].append(G.decide(spec, ru, cu, noise=nz, category=cat,
                                    user_budget=cfg.budgets.get(spec.name), **kw))

  lm = {"ppl", "kl", "top1"} & set(cfg.metrics)
  if lm:
    per, streams, protocols = _lm_pass(sim, cands, corpora, tokenizer, cfg, notes)
    cats = list(corpora) + ([""] if len(corpora) > 1 else [])
    for cat in cats:
      names = list(corpora) if cat == "" else [cat]

      def units(cname, field, counts=None, names=names):
        parts = [M.chunk_units(per[(n, cname)][field], unit_tokens=cfg.unit_tokens)
                 for n in names]
        return np.concatenate(parts)

      ref_ppl = units(ref.name, "nll")
      label = cat or "all"
      reference[f"ppl/{label}"] = float(G.agg_exp_ratio(ref_ppl))
      nz = G.resample_noise_floor(PPL, ref_ppl, n_resamples=cfg.noise_resamples, seed=cfg.seed)
      noise[f"ppl/{label}"] = nz
      for c in cands[1:]:
        if "ppl" in cfg.metrics:
          gate(PPL, cat, ref_ppl, units(c.name, "nll"), c, nz)
        if "kl" in cfg.metrics:
          gate(KL, cat, units(ref.name, "kl"), units(c.name, "kl"), c, None)
        if "top1" in cfg.metrics:
          gate(TOP1, cat, units(ref.name, "agree"), units(c.name, "agree"), c, None)
    for c in cands[1:]:
      timing[c.name] += sum(per[(n, c.name)]["seconds"] for n in corpora)
      for corpus in corpora:
        flips[c.name] += _token_flips(tokenizer, streams[corpus], per[(corpus, c.name)],
                                      cfg.n_flips, cfg.seed, corpus)[: cfg.n_flips]
  if "mc" in cfg.metrics and mc_tasks:
    res, items = _mc_pass(sim, cands, tokenizer, mc_tasks, cfg, notes)
    kept = []
    for task, correct in res.items():
      chance = float(np.mean([1 / len(it.choices) for it in items[task]]))
      acc = float(correct[ref.name].mean())
      if not _above_chance(correct[ref.name], chance):
        notes.append(f"mc/{task}: reference accuracy {acc:.3f} is not above chance "
                     f"{chance:.3f}: not gated")
        continue
      kept.append(task)
      reference[f"mc/{task}"] = acc
      ru = correct[ref.name].astype(float)
      nz = G.resample_noise_floor(MC, ru, n_resamples=cfg.noise_resamples, seed=cfg.seed)
      noise[f"mc/{task}"] = nz
      for c in cands[1:]:
        gate(MC, task, ru, correct[c.name].astype(float), c, nz)
        f = G.flipped(correct[ref.name], correct[c.name], n=cfg.n_flips, seed=cfg.seed)
        for kind in ("lost", "gained"):
          for i in f[kind]:
            it = items[task][i]
            flips[c.name].append({"kind": f"mc {kind}", "where": f"{task} item {i}",
                                  "context": it.question[-200:],
                                  "reference": "right" if kind == "lost" else "wrong",
                                  "candidate": "wrong" if kind == "lost" else "right",
                                  "truth": it.choices[it.answer]})
    if len(kept) > 1:
      ru = np.concatenate([res[t][ref.name] for t in kept]).astype(float)
      nz = G.resample_noise_floor(MC, ru, n_resamples=cfg.noise_resamples, seed=cfg.seed)
      noise["mc/all"] = nz
      reference["mc/all"] = float(ru.mean())
      for c in cands[1:]:
        cu = np.concatenate([res[t][c.name] for t in kept]).astype(float)
        gate(MC, "", ru, cu, c, nz)
  if "passkey" in cfg.metrics and passkey_filler:
    got, trials = _passkey_pass(sim, cands, tokenizer, passkey_filler, cfg)
    ctxs = np.array([t.context for t in trials])
    for ctx in cfg.passkey_contexts:
      m = ctxs == ctx
      ru = got[ref.name][m].astype(float)
      reference[f"passkey/{ctx}"] = float(ru.mean())
      nz = G.resample_noise_floor(PASSKEY, ru, n_resamples=cfg.noise_resamples, seed=cfg.seed)
      noise[f"passkey/{ctx}"] = nz
      for c in cands[1:]:
        gate(PASSKEY, str(ctx), ru, got[c.name][m].astype(float), c, nz)
  out = [CandidateResult(candidate=c, decisions=results[c.name], flips=flips[c.name],
                         seconds=timing[c.name]) for c in cands[1:]]
  return GateResult(model=model_name, config=cfg, protocols=protocols, noise=noise,
                    reference=reference, candidates=out, notes=notes,
                    seconds=time.time() - t0)
