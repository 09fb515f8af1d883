"""The gate for encoders: sentence-embedding cosine similarity with the reference.

Each sentence is embedded by the reference and by each candidate (simulated numerics, as in
`mxjax.eval.simulate`; an encoder has no KV cache, so the KV knob does not apply); the metric is
the mean cosine similarity (higher is better, measured against the reference itself, so it is
gated against a stated budget on d = 1 - cosine). Units are sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from mxjax.analysis._progress import progress_iter
from mxjax.eval import gate_core as G
from mxjax.eval import lm_metrics as M
from mxjax.eval.simulate import Candidate, Simulator, candidate_from_recipe, single_axis_runs

COSINE = G.MetricSpec(name="cosine", direction="higher", scale="absolute", self_referential=True,
                      description="cosine similarity of sentence embeddings with the reference")


def _pool(hidden, mask):
  m = mask.astype(jnp.float32)[..., None]
  return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)


def run_embedding_gate(
    encoder: Any,
    encode: Callable[[str], list[int]],
    sentences: Sequence[str],
    recipes: Sequence[str],
    *,
    budget: str | float | None = None,
    single_axis: bool = True,
    bucket: int = 32,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[tuple[Candidate, G.Decision, np.ndarray]]:
  """Cosine similarity of each candidate's sentence embeddings with the reference's.

  Args:
    encoder: NNX module (ids [B, T], attention_mask [B, T]) -> hidden states [B, T, d].
    encode: text -> token ids (special tokens included as the encoder expects).
    sentences: the evaluation sentences.
    recipes: candidate recipe strings.
    budget: stated budget on d = 1 - cosine (None: reported, not gated).
    single_axis: add single-axis runs of multi-knob recipes.
    bucket: pad lengths to a multiple of this (one compile per bucket).
    n_resamples, seed: the paired bootstrap.

  Returns:
    [(candidate, decision, per-sentence cosine [N])].
  """
  ref = Candidate(name="BF16 reference")
  cands = []
  for r in recipes:
    c = candidate_from_recipe(r)
    if not c.is_reference:
      cands.append(c)
      cands += single_axis_runs(c) if single_axis else []
  sim = Simulator(encoder)
  emb: dict[str, list] = {c.name: [] for c in [ref] + cands}
  work = [(i, c) for i in range(len(sentences)) for c in [ref] + cands]
  for i, c in progress_iter(work, desc="embeddings"):
    ids = encode(sentences[i])
    n = -(-len(ids) // bucket) * bucket
    x = np.zeros((1, n), np.int32)
    x[0, :len(ids)] = ids
    mask = (np.arange(n) < len(ids)).astype(np.int32)[None]
    h = sim.apply(c, jnp.asarray(x), jnp.asarray(mask))
    emb[c.name].append(np.asarray(_pool(h, jnp.asarray(mask)))[0])
  r = np.stack(emb[ref.name])
  out = []
  for c in cands:
    cos = np.asarray(M.cosine_similarity(jnp.asarray(r), jnp.asarray(np.stack(emb[c.name]))),
                     np.float64)
    d = G.decide(COSINE, np.ones_like(cos), cos, noise=None, user_budget=budget,
                 n_resamples=n_resamples, seed=seed)
    out.append((c, d, cos))
  return out
